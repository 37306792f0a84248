"""FID: equality with pytorch-fid and torchmetrics, closed forms, streaming statistics, singular
covariances, and pinned error messages."""

import contextlib
import io
import warnings

import numpy as np
import pytest
import torch
from pytorch_fid.fid_score import calculate_frechet_distance
from torchmetrics.image.fid import _compute_fid

from ganbench.errors import MetricError
from ganbench.metrics.fid import StreamingStatistics, feature_statistics, fid_from_features, frechet_distance

U64 = np.finfo(np.float64).eps / 2


def _pytorch_fid(mu1, s1, mu2, s2):
    # it prints when it regularises; and `pytest -W error` overrides pyproject's filter for its
    # deprecated sqrtm(disp=False) call, so ignore exactly that warning here
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*disp.*", category=DeprecationWarning)
        return float(calculate_frechet_distance(mu1, s1, mu2, s2))


def _sets(n1=200, n2=220, d=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n1, d))
    y = rng.standard_normal((n2, d)) @ (np.eye(d) + 0.1 * rng.standard_normal((d, d))) + 0.3
    return x, y


def test_matches_pytorch_fid_on_well_conditioned_statistics():
    x, y = _sets()
    s1, s2 = feature_statistics(x), feature_statistics(y)
    ours, ref = frechet_distance(*s1, *s2), _pytorch_fid(*s1, *s2)
    assert ref > 1.0
    assert ours == pytest.approx(ref, rel=1e-6)


def test_matches_torchmetrics_compute_fid():
    x, y = _sets(seed=1)
    (mu1, s1), (mu2, s2) = feature_statistics(x), feature_statistics(y)
    ref = float(_compute_fid(*(torch.from_numpy(a) for a in (mu1, s1, mu2, s2))))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-6)


def test_feature_statistics_equal_numpy_mean_and_cov():
    x, _ = _sets()
    mu, sigma = feature_statistics(x.astype(np.float32))
    assert mu.dtype == sigma.dtype == np.float64
    np.testing.assert_allclose(mu, x.astype(np.float32).astype(np.float64).mean(axis=0), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(sigma, np.cov(x.astype(np.float32), rowvar=False), rtol=1e-10, atol=1e-13)


def test_fid_of_a_set_with_itself_is_zero_and_fid_is_symmetric():
    x, y = _sets()
    mu, sigma = feature_statistics(x)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-10 * np.trace(sigma)
    assert fid_from_features(x, y) == pytest.approx(fid_from_features(y, x), rel=1e-10)


def test_fid_from_features_accepts_tensors_and_equals_numpy():
    x, y = _sets()
    assert fid_from_features(torch.from_numpy(x), torch.from_numpy(y).float()) == pytest.approx(
        fid_from_features(x, y.astype(np.float32)), rel=1e-12
    )


def test_streaming_statistics_equal_one_shot():
    rng = np.random.default_rng(3)
    # a large mean: raw second moments would lose digits to cancellation, shifted sums do not
    x = 1000.0 + rng.standard_normal((301, 16))
    acc = StreamingStatistics()
    for batch in (x[:1], x[1:100], torch.from_numpy(x[100:250]), x[250:]):
        acc.update(batch)
    mu, sigma = acc.compute()
    assert acc.num_samples == 301
    np.testing.assert_allclose(mu, x.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-11)


def _roundoff_tolerance(s1, s2):
    # pytorch-fid's sqrtm of a singular product S1 S2 is backward-stable: it is exact for a product
    # perturbed by ~D u |S1| |S2|. Each (near-)zero eigenvalue perturbed by delta moves the trace of
    # the square root by up to sqrt(delta); there are at most D of them, and FID counts the trace twice.
    d = s1.shape[0]
    return 2 * d * np.sqrt(d * U64 * np.linalg.norm(s1, 2) * np.linalg.norm(s2, 2))


@pytest.mark.parametrize(
    "case",
    ["fewer samples than dimensions", "duplicated samples", "identical tiny sets"],
)
def test_singular_covariances_are_finite_and_match_pytorch_fid(case):
    rng = np.random.default_rng(4)
    d = 64
    if case == "fewer samples than dimensions":
        x, y = rng.standard_normal((30, d)), 0.2 + rng.standard_normal((40, d))
    elif case == "duplicated samples":
        x, y = np.repeat(rng.standard_normal((20, d)), 5, axis=0), rng.standard_normal((200, d))
    else:
        x = rng.standard_normal((3, d))
        y = x[::-1].copy()
    s1, s2 = feature_statistics(x), feature_statistics(y)
    ours, ref = frechet_distance(*s1, *s2), _pytorch_fid(*s1, *s2)
    assert np.isfinite(ours)
    assert abs(ours - ref) <= 1e-6 * abs(ref) + _roundoff_tolerance(s1[1], s2[1])


def test_singular_covariances_match_pytorch_fid_regularised_answer():
    # pytorch-fid's fallback replaces S by S + eps I. Since sqrt(a + eps) <= sqrt(a) + sqrt(eps),
    # |FID_eps - FID| <= 2 D eps + 2 sqrt(eps) (tr sqrt(S1) + tr sqrt(S2 + eps I)): the tolerance below.
    rng = np.random.default_rng(5)
    d, eps = 64, 1e-6
    (mu1, s1), (mu2, s2) = feature_statistics(rng.standard_normal((30, d))), feature_statistics(rng.standard_normal((25, d)))
    eye = np.eye(d)
    ref = _pytorch_fid(mu1, s1 + eps * eye, mu2, s2 + eps * eye)
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(s1), 0, None)).sum() + np.sqrt(np.linalg.eigvalsh(s2 + eps * eye)).sum()
    assert abs(frechet_distance(mu1, s1, mu2, s2) - ref) <= 2 * d * eps + 2 * np.sqrt(eps) * tr_sqrt
    # and on the regularised statistics themselves both agree to round-off
    assert frechet_distance(mu1, s1 + eps * eye, mu2, s2 + eps * eye) == pytest.approx(ref, rel=1e-6)


def test_float32_stored_singular_covariance_is_round_off_not_an_error():
    rng = np.random.default_rng(6)
    mu, sigma = feature_statistics(rng.standard_normal((30, 64)))
    mu2, sigma2 = feature_statistics(rng.standard_normal((300, 64)))
    value = frechet_distance(mu.astype(np.float32), sigma.astype(np.float32), mu2, sigma2)
    # float32 storage perturbs sigma by ~u32 |sigma|; as in _roundoff_tolerance, each null direction
    # then moves tr sqrt by up to the square root of that
    d, u32 = 64, np.finfo(np.float32).eps / 2
    tol = 2 * d * np.sqrt(d * u32 * np.linalg.norm(sigma, 2) * np.linalg.norm(sigma2, 2))
    assert abs(value - frechet_distance(mu, sigma, mu2, sigma2)) <= tol


def test_large_imaginary_part_raises_like_pytorch_fid():
    d = 8
    mu = np.zeros(d)
    bad = np.diag([1.0] * (d - 1) + [-0.5])  # not a covariance: one clearly negative eigenvalue
    with pytest.raises(ValueError, match="Imaginary component"):
        _pytorch_fid(mu, np.eye(d), mu, bad)
    with pytest.raises(MetricError, match="negative beyond round-off"):
        frechet_distance(mu, np.eye(d), mu, bad)
    with pytest.raises(MetricError, match="sigma1: eigenvalue -0.5 is negative beyond round-off"):
        frechet_distance(mu, bad, mu, np.eye(d))


def test_bad_inputs_raise_metric_error_with_pinned_messages():
    x, y = _sets()
    with pytest.raises(MetricError, match=r"feature dimensions differ: real has D=64, fake has D=32"):
        fid_from_features(x, y[:, :32])
    with pytest.raises(MetricError, match=r"real features: received 1 sample\(s\), fewer than the 2 needed"):
        fid_from_features(x[:1], y)
    bad = y.copy()
    bad[3, 5] = np.nan
    bad[7, 1] = np.inf
    with pytest.raises(MetricError, match=r"fake features: 2 value\(s\) are NaN or inf"):
        fid_from_features(x, bad)
    with pytest.raises(MetricError, match=r"expected a 2-D array of shape \(N, D\), received shape \(64,\)"):
        fid_from_features(x[0], y)
    mu, sigma = feature_statistics(x)
    with pytest.raises(MetricError, match=r"statistics dimensions differ: mu1 has D=64, mu2 has D=63"):
        frechet_distance(mu, sigma, mu[:63], sigma[:63, :63])
    with pytest.raises(MetricError, match=r"mu1: expected real numbers, received dtype <U1"):
        frechet_distance("a", "b", "c", "d")  # was a raw numpy error
    with pytest.raises(MetricError, match=r"expected shapes \(D,\) and \(D, D\), received \(64,\) and \(64, 63\)"):
        frechet_distance(mu, sigma[:, :63], mu, sigma)
    skew = sigma.copy()
    skew[0, 1] += 1.0
    with pytest.raises(MetricError, match="sigma2: not symmetric"):
        frechet_distance(mu, sigma, mu, skew)
    acc = StreamingStatistics()
    acc.update(x[:1])
    with pytest.raises(MetricError, match="StreamingStatistics: received 1 sample"):
        acc.compute()
    with pytest.raises(MetricError, match="batch: received D=32 features per sample; earlier batches had D=64"):
        acc.update(y[:, :32])
