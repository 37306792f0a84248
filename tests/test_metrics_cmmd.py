"""CMMD: the official formula on the same embeddings, both estimators' closed forms on Gaussians, options, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ganbench.errors import MetricError
from ganbench.features.extract import FeatureSet
from ganbench.metric_values import applicable_metrics, metric_options, metrics_from_features
from ganbench.metrics import cmmd_from_features


def official_cmmd(x: np.ndarray, y: np.ndarray) -> float:
    """google-research/cmmd `distance.mmd`, written out in numpy float64: sigma 10, scale 1000, all pairs (V-statistic)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    x_sqnorms, y_sqnorms = np.diag(x @ x.T), np.diag(y @ y.T)
    gamma = 1 / (2 * 10**2)
    k_xx = np.mean(np.exp(-gamma * (-2 * x @ x.T + x_sqnorms[:, None] + x_sqnorms[None, :])))
    k_xy = np.mean(np.exp(-gamma * (-2 * x @ y.T + x_sqnorms[:, None] + y_sqnorms[None, :])))
    k_yy = np.mean(np.exp(-gamma * (-2 * y @ y.T + y_sqnorms[:, None] + y_sqnorms[None, :])))
    return 1000 * (k_xx + k_yy - 2 * k_xy)


def unbiased_cmmd(x: np.ndarray, y: np.ndarray) -> float:
    """The paper's U-statistic: the same kernel means without the i == j terms of the within-set sums."""
    def kernel(a, b):
        return np.exp(-((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / 200)

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m, n = len(x), len(y)
    k_xx = (kernel(x, x).sum() - m) / (m * (m - 1))
    k_yy = (kernel(y, y).sum() - n) / (n * (n - 1))
    return 1000 * (k_xx + k_yy - 2 * kernel(x, y).mean())


def _embeddings(n: int, seed: int, shift: float = 0.0, d: int = 16) -> np.ndarray:
    """Unit-norm rows, as CLIP's embeddings are, with a shift along the first axis before normalising."""
    x = np.random.default_rng(seed).normal(size=(n, d))
    x[:, 0] += shift
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_biased_estimator_equals_the_official_formula():
    x, y = _embeddings(300, 0), _embeddings(250, 1, shift=1.0)
    assert cmmd_from_features(x, y, estimator="biased") == pytest.approx(official_cmmd(x, y), rel=1e-10)
    # rows beyond one chunk of the kernel sums
    big_x = np.random.default_rng(2).normal(size=(2100, 3))
    big_y = np.random.default_rng(3).normal(size=(2050, 3)) + 0.5
    assert cmmd_from_features(big_x, big_y, estimator="biased") == pytest.approx(official_cmmd(big_x, big_y), rel=1e-10)


def test_unbiased_estimator_is_the_u_statistic_and_the_default():
    x, y = _embeddings(120, 4), _embeddings(90, 5, shift=0.5)
    assert cmmd_from_features(x, y) == pytest.approx(unbiased_cmmd(x, y), rel=1e-10)
    assert cmmd_from_features(torch.from_numpy(x), torch.from_numpy(y)) == cmmd_from_features(x, y)
    # a set against itself: the V-statistic is exactly 0, the U-statistic -2 (1 - mean off-diagonal kernel) / m < 0
    assert cmmd_from_features(x, x, estimator="biased") == pytest.approx(0, abs=1e-12)
    assert cmmd_from_features(x, x) < 0


def gaussian_mmd2(mean_difference: np.ndarray, variance: float, sigma: float = 10.0) -> float:
    """Population MMD^2 between N(a, v I) and N(b, v I) for the kernel exp(-|x - y|^2 / (2 sigma^2)).

    E exp(-|z|^2 / (2 s^2)) for z ~ N(mu, t I) in d dimensions is (s^2 / (s^2 + t))^(d/2) exp(-|mu|^2 / (2 (s^2 + t))),
    and x - x' ~ N(0, 2v I), x - y ~ N(a - b, 2v I)."""
    d, s2, t = mean_difference.size, sigma**2, 2 * variance
    scale = (s2 / (s2 + t)) ** (d / 2)
    return 2 * scale - 2 * scale * np.exp(-(mean_difference @ mean_difference) / (2 * (s2 + t)))


def test_expectations_on_gaussians_match_the_closed_form():
    """Two samples of one Gaussian: the unbiased estimator averages to 0, the biased one to (1 - E k(x, x')) (1/m + 1/n)
    above it; two Gaussians apart: the unbiased one averages to the population MMD^2."""
    d, m, repeats, variance = 8, 60, 300, 4.0
    rng = np.random.default_rng(6)
    same_u, same_v, apart_u = [], [], []
    shift = np.full(d, 1.5)
    for _ in range(repeats):
        x, y, z = (rng.normal(scale=variance**0.5, size=(m, d)) for _ in range(3))
        same_u.append(cmmd_from_features(x, y))
        same_v.append(cmmd_from_features(x, y, estimator="biased"))
        apart_u.append(cmmd_from_features(x, z + shift))
    scale = (100 / (100 + 2 * variance)) ** (d / 2)  # E k(x, x') for x, x' ~ N(0, v I)
    standard_error = np.std(same_u) / repeats**0.5
    assert abs(np.mean(same_u)) < 4 * standard_error
    assert np.mean(same_v) == pytest.approx(1000 * (1 - scale) * 2 / m, rel=0.05)
    expected = 1000 * gaussian_mmd2(shift, variance)
    assert np.mean(apart_u) == pytest.approx(expected, abs=4 * np.std(apart_u) / repeats**0.5)
    assert expected > 10 * np.std(apart_u) / repeats**0.5  # the check is not vacuous


def test_options_are_recorded_and_cmmd_is_computed_only_when_asked():
    x, y = _embeddings(20, 7), _embeddings(20, 8, shift=1.0)
    protocol = {"extractor": "clip-vit-l14-336", "preprocessing": "cmmd", "weights_sha256": "x"}
    real, fake = FeatureSet(x, None, protocol), FeatureSet(y, None, protocol)
    assert "cmmd" not in applicable_metrics(fake)  # three N x N kernel matrices: not in every default run
    values = metrics_from_features(real, fake, ["cmmd"], cmmd_estimator="biased")
    assert values["cmmd"].value == pytest.approx(official_cmmd(x, y), rel=1e-10)
    assert values["cmmd"].options == {"estimator": "biased", "sigma": 10.0, "scale": 1000.0}
    assert metric_options("cmmd", 20, 20) == {"estimator": "unbiased", "sigma": 10.0, "scale": 1000.0}


def test_bad_input_is_one_line():
    x = _embeddings(5, 9)
    with pytest.raises(MetricError, match=r"CMMD estimator: received 'v'; expected one of unbiased, biased"):
        cmmd_from_features(x, x, estimator="v")
    with pytest.raises(MetricError, match=r"feature dimensions differ: real has D=16, fake has D=3"):
        cmmd_from_features(x, np.zeros((5, 3)))
    with pytest.raises(MetricError, match=r"fake features: received 1 sample\(s\), fewer than the 2 needed"):
        cmmd_from_features(x, x[:1])
    for bad in (float("nan"), -1.0, "10", None):  # a NaN scale gave NaN; a string sigma a raw TypeError
        with pytest.raises(MetricError, match=r"CMMD sigma: expected a positive finite number, received "):
            cmmd_from_features(x, x, sigma=bad)
        with pytest.raises(MetricError, match=r"CMMD scale: expected a positive finite number, received "):
            cmmd_from_features(x, x, scale=bad)
