"""Class metrics on hand-made predictions, the metric registry, and bootstrap intervals."""

import math

import numpy as np
import pytest
import scipy.stats
import torch

from ganbench.errors import ConfigError, MetricError
from ganbench.metrics import registry
from ganbench.metrics.bootstrap import bootstrap_intervals
from ganbench.metrics.classes import class_kl_from_uniform, classes_covered, classes_covered_fraction
from ganbench.metrics.fid import fid_from_features
from ganbench.metrics.manifold import prdc


def test_classes_covered_counts_classes_predicted_at_least_once():
    assert classes_covered([0, 0, 1, 3], 5) == 3
    assert classes_covered_fraction([0, 0, 1, 3], 5) == pytest.approx(0.6)
    assert classes_covered(torch.tensor([4, 4, 4]), 5) == 1
    assert classes_covered(np.arange(10), 10) == 10


def test_class_kl_from_uniform_closed_forms():
    c = 5
    assert class_kl_from_uniform(np.repeat(np.arange(c), 7), c) == pytest.approx(0.0, abs=1e-15)
    assert class_kl_from_uniform(np.full(40, 2), c) == pytest.approx(math.log(c), rel=1e-15)
    # 3 of class 0, 1 of class 1, none of the other 2: KL(p || U) against scipy's definition
    expected = scipy.stats.entropy([0.75, 0.25, 0.0, 0.0], np.full(4, 0.25))
    assert class_kl_from_uniform([0, 0, 0, 1], 4) == pytest.approx(expected, rel=1e-14)


def test_class_metrics_bad_inputs():
    with pytest.raises(MetricError, match=r"pred: class indices range over \[0, 5\]; expected values in \[0, 4\]"):
        classes_covered([0, 5], 5)
    with pytest.raises(MetricError, match="pred: expected integer class indices, received dtype float64"):
        class_kl_from_uniform(np.array([0.0, 1.0]), 2)
    with pytest.raises(MetricError, match=r"expected a non-empty 1-D array of class indices, received shape \(0,\)"):
        classes_covered(np.array([], dtype=int), 3)
    with pytest.raises(MetricError, match="num_classes: expected a positive integer, received 0"):
        classes_covered([0], 0)


def test_registry_names_directions_and_needs():
    assert registry.metric_names() == (
        "fid", "is", "kid", "precision", "recall", "density", "coverage", "classes_covered", "class_kl",
        "authenticity", "mifid", "data_copying_ct", "cmmd", "fd_infinity", "fwd",
    )
    lower = {name for name in registry.metric_names() if registry.direction(name) == "lower"}
    assert lower == {"fid", "kid", "class_kl", "mifid", "cmmd", "fd_infinity", "fwd"}
    # the memorization metrics need a training-split reference; fwd lives in the wavelet feature space alone
    assert {n for n, s in registry.METRICS.items() if s.reference != "any"} == {"authenticity", "mifid", "data_copying_ct"}
    assert registry.get_metric("fwd").feature_space == "wavelet"
    assert registry.get_metric("is").needs == "logits"
    assert registry.get_metric("classes_covered").needs == "classes"
    assert all(spec.description and spec.min_samples >= 1 for spec in registry.METRICS.values())
    with pytest.raises(ConfigError, match=r"unknown metric 'fld'; expected one of fid, is, .* \(--metrics\)"):
        registry.get_metric("fld")


def test_registry_functions_compute_their_metric():
    rng = np.random.default_rng(0)
    real, fake = rng.standard_normal((60, 8)), rng.standard_normal((70, 8)) + 0.2
    assert registry.metric_function("fid")(real, fake) == fid_from_features(real, fake)
    for name in ("density", "coverage"):
        spec = registry.get_metric(name)
        assert registry.metric_function(name)(real, fake)[spec.key] == prdc(real, fake, 5)[name]
    assert registry.metric_function("precision")(real, fake)["precision"] == prdc(real, fake, 3)["precision"]
    spec = registry.get_metric("is")
    assert registry.metric_function("is")(rng.standard_normal((20, 4)), splits=1)[spec.key] > 1.0


def test_bootstrap_intervals_resample_both_sets_reproducibly():
    rng = np.random.default_rng(1)
    real, fake = rng.standard_normal((80, 6)), rng.standard_normal((90, 6)) + 0.5
    out = bootstrap_intervals(real, fake, resamples=20, seed=3)
    assert set(out) == {"fid", "precision", "recall", "density", "coverage"}
    assert out == bootstrap_intervals(real, fake, resamples=20, seed=3)
    assert out != bootstrap_intervals(real, fake, resamples=20, seed=4)
    for interval in out.values():
        assert interval.low <= interval.high and interval.std > 0
    # the documented draws: default_rng(seed).integers, real then fake, per resample
    draws = np.random.default_rng(3)
    fids = []
    for _ in range(20):
        r = real[draws.integers(0, 80, 80)]
        fids.append(fid_from_features(r, fake[draws.integers(0, 90, 90)]))
    # the percentile interval moved by the bootstrap's estimate of bias (mean of the resamples - the estimate)
    bias = np.mean(fids) - fid_from_features(real, fake)
    assert out["fid"].low == pytest.approx(max(np.percentile(fids, 2.5) - bias, 0.0), rel=1e-12)
    assert out["fid"].high == pytest.approx(np.percentile(fids, 97.5) - bias, rel=1e-12)
    assert out["fid"].std == pytest.approx(np.std(fids, ddof=1), rel=1e-12)


def test_bootstrap_intervals_hold_their_own_estimate():
    # a resample repeats points: FID rises (fewer distinct samples) and the k-NN balls shrink, so the plain percentile
    # intervals missed the estimate they were printed beside (FID 4.05 in [6.37, 7.61], coverage 0.785 in [0.455,
    # 0.688] here)
    from ganbench.metrics.manifold import knn_metrics

    rng = np.random.default_rng(0)
    real, fake = rng.standard_normal((200, 32)), rng.standard_normal((200, 32)) * 1.1 + 0.1
    out = bootstrap_intervals(real, fake, resamples=50, seed=0)
    estimates = {"fid": fid_from_features(real, fake), **knn_metrics(torch.from_numpy(real), torch.from_numpy(fake), 5, 5)}
    for name, interval in out.items():
        assert interval.low <= estimates[name] <= interval.high, (name, estimates[name], interval)
    assert 0.0 <= out["coverage"].low and out["coverage"].high <= 1.0  # clamped to each metric's range


def test_bootstrap_bad_inputs():
    real = np.random.default_rng(2).standard_normal((30, 4))
    with pytest.raises(MetricError, match=r"metrics: received \['fid', 'kid'\]; expected a non-empty subset of"):
        bootstrap_intervals(real, real, metrics=("fid", "kid"))
    with pytest.raises(MetricError, match="resamples: received 1; an interval needs at least 2"):
        bootstrap_intervals(real, real, resamples=1)
    with pytest.raises(MetricError, match="level: received 1.5"):
        bootstrap_intervals(real, real, level=1.5)


def test_public_names_import_as_the_readme_writes_them():
    # A module named after its own function used to hide it: `from ganbench.metrics import prdc` gave the module.
    import ganbench.metrics as M
    from ganbench.metrics import inception_score, prdc
    from ganbench.metrics.isc import inception_score as isc_function
    from ganbench.metrics.manifold import prdc as prdc_function

    assert prdc is prdc_function and callable(prdc)
    assert inception_score is isc_function and M.inception_score is isc_function and M.prdc is prdc_function
    import ganbench
    import ganbench.scoring  # noqa: F401  (imports the metric-values module; the package attribute stays the function)

    assert callable(ganbench.evaluate) and ganbench.evaluate.__module__ == "ganbench.api"
