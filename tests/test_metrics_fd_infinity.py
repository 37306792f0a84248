"""FD-infinity: the reference procedure on the same features and subsets, the analytic FD on Gaussians, options, errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from ganbench.errors import MetricError
from ganbench.features.extract import FeatureSet
from ganbench.metric_values import applicable_metrics, check_metrics, metric_options, metrics_from_features
from ganbench.metrics import fd_infinity_from_features
from ganbench.metrics.fd_infinity import subset_sizes
from ganbench.metrics.fid import fid_from_features


def reference_fd_infinity(real: np.ndarray, fake: np.ndarray, seed: int, min_fake: int, num_points: int) -> float:
    """mchong6/FID_IS_infinity `calculate_FID_infinity_path` after its feature pass, with `np.random.seed(seed)` made an
    explicit RandomState: real statistics once; per N, shuffle the activations in place, FD of the first N (pytorch-fid's
    sqrtm formula); LinearRegression of FD on 1/N (ordinary least squares, here lstsq), predicted at 1/N = 0."""
    rng = np.random.RandomState(seed)
    fake = fake.copy()
    real_m, real_s = np.mean(real, axis=0), np.cov(real, rowvar=False)
    batches = np.linspace(min_fake, len(fake), num_points).astype("int32")
    fids = []
    for size in batches:
        rng.shuffle(fake)
        m, s = np.mean(fake[:size], axis=0), np.cov(fake[:size], rowvar=False)
        covmean = scipy.linalg.sqrtm(s @ real_s).real
        fids.append((m - real_m) @ (m - real_m) + np.trace(s) + np.trace(real_s) - 2 * np.trace(covmean))
    design = np.stack([np.ones(num_points), 1 / batches], axis=1)
    intercept, _ = np.linalg.lstsq(design, np.array(fids), rcond=None)[0]
    return float(intercept)


def test_equals_the_reference_procedure_on_the_same_features_and_subsets():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(400, 6))
    fake = rng.normal(size=(300, 6)) * 1.3 + 0.4
    ours = fd_infinity_from_features(real, fake, points=7, min_n=50, seed=3)
    assert ours == pytest.approx(reference_fd_infinity(real, fake, seed=3, min_fake=50, num_points=7), rel=1e-9)
    # other seeds draw other subsets, so another value: the seed is really used
    assert ours != pytest.approx(fd_infinity_from_features(real, fake, points=7, min_n=50, seed=4), rel=1e-9)


def test_intercept_recovers_the_analytic_fd_on_gaussian_features():
    """Real N(0, I) (fitted from many samples) and generated N(0, diag(s^2)): FD = sum (s - 1)^2. FD_N is biased upwards
    by terms ~ d/N (+23% here at N = 400, +3% at all 4000); the 1/N extrapolation removes them (measured: within 1.3%
    over three seeds)."""
    d = 32
    rng = np.random.default_rng(1)
    scales = np.linspace(0.5, 1.5, d)
    analytic = ((scales - 1) ** 2).sum()
    real = rng.normal(size=(100_000, d))
    fake = rng.normal(size=(4000, d)) * scales
    value = fd_infinity_from_features(real, fake, points=15, min_n=400, seed=0)
    assert value == pytest.approx(analytic, rel=0.03)
    assert fid_from_features(real, fake[:400]) > 1.15 * analytic  # what the extrapolation corrects


def test_subset_sizes_are_the_references_and_options_recorded():
    np.testing.assert_array_equal(subset_sizes(10_000), np.linspace(5000, 10_000, 15).astype(np.int32))
    assert metric_options("fd_infinity", 10_000, 10_000, seed=7) == {"points": 15, "min_n": 5000, "seed": 7}
    assert metric_options("fd_infinity", 10_000, 2000)["min_n"] == 1000  # fewer than 5000 generated: from half
    rng = np.random.default_rng(2)
    protocol = {"extractor": "inception", "preprocessing": "tf1", "weights_sha256": "x"}
    real, fake = FeatureSet(rng.normal(size=(60, 3)), None, protocol), FeatureSet(rng.normal(size=(40, 3)), None, protocol)
    assert "fd_infinity" not in applicable_metrics(fake)  # 15 Frechet distances: asked for, never by default
    assert check_metrics(["fd_infinity"], fake) == ("fd_infinity",)
    value = metrics_from_features(real, fake, ["fd_infinity"], seed=5)["fd_infinity"]
    assert value.options == {"points": 15, "min_n": 20, "seed": 5}
    assert value.value == pytest.approx(fd_infinity_from_features(real.features, fake.features, min_n=20, seed=5))


def test_bad_input_is_one_line():
    x = np.random.default_rng(3).normal(size=(10, 2))
    with pytest.raises(MetricError, match=r"FD-infinity: received 10 generated samples, min_n=10, points=15; expected "
                       r"2 <= min_n < the number of generated samples"):
        fd_infinity_from_features(x, x, min_n=10)
    with pytest.raises(MetricError, match=r"feature dimensions differ: real has D=2, fake has D=3"):
        fd_infinity_from_features(x, np.zeros((10, 3)), min_n=4)
