"""All metrics from one feature pass: the same numbers as each metric function and each reference library."""

from __future__ import annotations

import numpy as np
import pytest

from ganbench.errors import ConfigError, MetricError
from ganbench.features.extract import FeatureSet
from ganbench.metric_values import applicable_metrics, metrics_from_features

LENET = {"extractor": "lenet-fashion-mnist", "preprocessing": "lenet-28-gray-unit", "weights_sha256": "x"}
INCEPTION = {"extractor": "inception", "preprocessing": "tf1", "weights_sha256": "y"}


def _sets(protocol, n_real=60, n_fake=50, dim=16, classes=10, seed=0):
    rng = np.random.default_rng(seed)

    def draw(n, shift, scale):
        features = (rng.normal(size=(n, dim)) + shift).astype(np.float32)
        return FeatureSet(features, (rng.normal(size=(n, classes)) * scale).astype(np.float32), protocol)

    return draw(n_real, 0.0, 1.0), draw(n_fake, 0.3, 3.0)


def test_every_applicable_metric_equals_the_reference_libraries():
    import prdc as prdc_package
    import torch
    from pytorch_fid.fid_score import calculate_frechet_distance
    from torch_fidelity.metric_isc import isc_features_to_metric

    real, fake = _sets(LENET)
    values = metrics_from_features(real, fake)  # default metric seed: torch-fidelity's 2020
    assert list(values) == ["fid", "is", "kid", "precision", "recall", "density", "coverage", "classes_covered", "class_kl"]

    r64, f64 = real.features.astype(np.float64), fake.features.astype(np.float64)
    expected_fid = calculate_frechet_distance(r64.mean(0), np.cov(r64, rowvar=False), f64.mean(0), np.cov(f64, rowvar=False))
    assert values["fid"].value == pytest.approx(expected_fid, rel=1e-6)

    isc = isc_features_to_metric(torch.from_numpy(fake.logits), splits=10, shuffle=True, rng_seed=2020)
    assert values["is"].value == pytest.approx(isc["inception_score_mean"], rel=1e-5)
    assert values["is"].std == pytest.approx(isc["inception_score_std"], rel=1e-4, abs=1e-6)

    dc = prdc_package.compute_prdc(real.features, fake.features, nearest_k=5)
    assert values["density"].value == dc["density"] and values["coverage"].value == dc["coverage"]
    pr = prdc_package.compute_prdc(real.features, fake.features, nearest_k=3)
    assert values["precision"].value == pr["precision"] and values["recall"].value == pr["recall"]
    assert values["precision"].options == {"k": 3} and values["density"].options == {"k": 5}
    assert values["kid"].options["subset_size"] == 50  # min(1000, 60, 50), recorded

    counts = np.bincount(fake.logits.argmax(1), minlength=10)
    assert values["classes_covered"].value == np.count_nonzero(counts)
    p = counts[counts > 0] / counts.sum()
    assert values["class_kl"].value == pytest.approx(float(np.sum(p * np.log(p * 10))))


def test_kid_stores_no_std_when_every_subset_is_both_whole_sets():
    from ganbench.metrics.kid import kernel_inception_distance

    real, fake = _sets(LENET, n_real=40, n_fake=40)
    kid = metrics_from_features(real, fake, ["kid"])["kid"]
    assert kid.options["subset_size"] == 40 and kid.std is None
    # The metric function still gives torch-fidelity's numbers: a spread of rounding noise only.
    mean, spread = kernel_inception_distance(real.features, fake.features, 100, 40, seed=2020)
    assert kid.value == mean and spread < 1e-9 * abs(mean)
    # One set larger than the subsets: real subsets differ, so the spread is measured and kept.
    real, fake = _sets(LENET, n_real=60, n_fake=40)
    kid = metrics_from_features(real, fake, ["kid"])["kid"]
    assert kid.options["subset_size"] == 40 and kid.std > 1e-6 * abs(kid.value)


def test_class_metrics_apply_only_to_the_dataset_classifiers():
    real, fake = _sets(INCEPTION, classes=1008)
    assert "classes_covered" not in applicable_metrics(fake) and "is" in applicable_metrics(fake)
    with pytest.raises(ConfigError, match="metric class_kl does not apply to extractor 'inception'"):
        metrics_from_features(real, fake, ["fid", "class_kl"])


def test_bootstrap_intervals_bracket_each_estimate_with_its_own_k():
    real, fake = _sets(LENET, n_real=80, n_fake=80)
    values = metrics_from_features(real, fake, ["fid", "precision", "coverage"], bootstrap=20, seed=3)
    for name in ("fid", "precision", "coverage"):
        assert values[name].ci_low is not None and values[name].ci_low <= values[name].ci_high
        assert values[name].options["bootstrap"] == 20
    assert values["fid"].ci_low <= values["fid"].value * 1.5  # FID's bootstrap sits around its estimate


def test_bad_requests():
    real, fake = _sets(LENET, n_real=8, n_fake=8)
    with pytest.raises(ConfigError, match="unknown metric fidd"):
        metrics_from_features(real, fake, ["fidd"])
    with pytest.raises(ConfigError, match="is needs at least 10 samples per set, got 8 real and 8 generated"):
        metrics_from_features(real, fake, ["is"])
    other = FeatureSet(fake.features, fake.logits, INCEPTION)
    with pytest.raises(MetricError, match="different protocols"):
        metrics_from_features(real, other, ["fid"])


def test_kid_equals_torch_fidelity_with_the_roles_of_its_command_line():
    # fidelity --kid --input1 FAKE --input2 REAL, subsets (40) smaller than both sets (120 real, 90 generated)
    import torch
    from torch_fidelity.metric_kid import kid_features_to_metric

    real, fake = _sets(INCEPTION, n_real=120, n_fake=90, seed=3)
    values = metrics_from_features(real, fake, ["kid"], kid_subset_size=40)
    ref = kid_features_to_metric(torch.from_numpy(fake.features), torch.from_numpy(real.features), kid_subsets=100,
                                 kid_subset_size=40, rng_seed=2020, verbose=False)
    assert values["kid"].value == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-6)
    assert values["kid"].std == pytest.approx(ref["kernel_inception_distance_std"], rel=1e-6)


def test_one_bootstrap_pass_equals_each_group_resampled_on_its_own():
    # precision/recall (k = 3), density/coverage (k = 5) and FID share one set of resamples; each equals what
    # the group's own bootstrap (same seed, so the same resamples) gives
    from ganbench.metrics.bootstrap import bootstrap_intervals

    real, fake = _sets(LENET, n_real=70, n_fake=70, seed=5)
    values = metrics_from_features(real, fake, ["fid", "precision", "recall", "density", "coverage"], bootstrap=5, seed=4)
    for group, k in ((("fid",), 5), (("precision", "recall"), 3), (("density", "coverage"), 5)):
        alone = bootstrap_intervals(real.features, fake.features, group, resamples=5, seed=4, nearest_k=k)
        for name in group:
            assert (values[name].ci_low, values[name].ci_high) == (alone[name].low, alone[name].high), name
