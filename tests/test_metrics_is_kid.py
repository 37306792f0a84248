"""Inception Score and KID: equality with torch-fidelity (and torchmetrics' estimator), closed forms,
RNG hygiene, and pinned error messages."""

import numpy as np
import pytest
import torch
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torchmetrics.image.kid import poly_mmd

from ganbench.errors import MetricError
from ganbench.metrics.isc import inception_score
from ganbench.metrics.kid import kernel_inception_distance


def _logits(n=500, c=20, seed=0):
    return 3.0 * np.random.default_rng(seed).standard_normal((n, c))


@pytest.mark.parametrize("seed", [0, 2020])
@pytest.mark.parametrize("splits", [1, 10])
def test_inception_score_equals_torch_fidelity(seed, splits):
    logits = _logits().astype(np.float32)
    ref = isc_features_to_metric(torch.from_numpy(logits), splits=splits, shuffle=True, rng_seed=seed)
    mean, std = inception_score(logits, splits=splits, seed=seed)
    assert mean == pytest.approx(ref["inception_score_mean"], rel=1e-12)
    assert std == pytest.approx(ref["inception_score_std"], rel=1e-9, abs=1e-12)


def test_inception_score_shuffle_depends_on_seed_but_one_split_does_not():
    logits = _logits()
    assert inception_score(logits, splits=10, seed=0) != inception_score(logits, splits=10, seed=1)
    one = inception_score(logits, splits=1, seed=0)
    assert one == inception_score(logits, splits=1, seed=1)
    assert one[1] == 0.0


def test_inception_score_of_confident_uniform_predictions_is_the_number_of_classes():
    c = 10
    logits = 50.0 * np.eye(c)[np.arange(1000) % c]  # confident, each class equally often
    assert inception_score(logits, splits=1) == pytest.approx((c, 0.0), abs=1e-9)
    # unshuffled splits of 100 consecutive rows are balanced too
    mean, std = inception_score(logits, splits=10, shuffle=False)
    assert mean == pytest.approx(c, abs=1e-9) and std == pytest.approx(0.0, abs=1e-9)
    # one predicted class: p(y|x) = p(y), KL 0, score 1
    assert inception_score(50.0 * np.eye(c)[np.zeros(100, dtype=int)], splits=1)[0] == pytest.approx(1.0, abs=1e-12)


def test_inception_score_bad_inputs():
    with pytest.raises(MetricError, match=r"logits: received 5 sample\(s\), fewer than the 10 needed"):
        inception_score(_logits(n=5), splits=10)
    with pytest.raises(MetricError, match="splits: expected a positive integer, received 0"):
        inception_score(_logits(), splits=0)
    bad = _logits()
    bad[0, 0] = np.nan
    with pytest.raises(MetricError, match=r"logits: 1 value\(s\) are NaN or inf"):
        inception_score(bad)


def _features(n=200, d=64, shift=0.0, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)) + shift


def test_kid_equals_torch_fidelity_for_the_same_seed():
    x, y = _features(seed=1), _features(n=180, shift=0.3, seed=2)
    ref = kid_features_to_metric(  # input1 is the generated set
        torch.from_numpy(y), torch.from_numpy(x), kid_subsets=10, kid_subset_size=100, rng_seed=3, verbose=False
    )
    mean, std = kernel_inception_distance(x, y, subsets=10, subset_size=100, seed=3)
    assert mean == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-9)
    assert std == pytest.approx(ref["kernel_inception_distance_std"], rel=1e-9)
    # a different seed draws different subsets
    assert kernel_inception_distance(x, y, subsets=10, subset_size=100, seed=4)[0] != mean


def test_kid_equals_torch_fidelity_with_custom_kernel():
    x, y = _features(seed=5), _features(shift=0.1, seed=6)
    ref = kid_features_to_metric(
        torch.from_numpy(y), torch.from_numpy(x), kid_subsets=5, kid_subset_size=50, rng_seed=0, verbose=False,
        kid_kernel_poly_degree=2, kid_kernel_poly_gamma=0.5, kid_kernel_poly_coef0=0.25,
    )
    mean, _ = kernel_inception_distance(x, y, subsets=5, subset_size=50, degree=2, gamma=0.5, coef0=0.25, seed=0)
    assert mean == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-9)


def test_kid_is_torchmetrics_estimator():
    x, y = _features(seed=7), _features(shift=0.3, seed=8)
    # subset_size = N: every subset is the whole set, whatever RNG draws it, so torchmetrics'
    # global-RNG subsets and ours coincide
    whole = float(poly_mmd(torch.from_numpy(x), torch.from_numpy(y)))
    assert kernel_inception_distance(x, y, subsets=3, subset_size=200) == pytest.approx((whole, 0.0), rel=1e-10, abs=1e-12)
    # on the subsets our seed draws, torchmetrics' estimator gives our mean
    rng = np.random.RandomState(11)
    per_subset = []
    for _ in range(5):
        yi = y[rng.choice(200, 50, replace=False)]  # the generated subset is drawn first
        xi = x[rng.choice(200, 50, replace=False)]
        per_subset.append(float(poly_mmd(torch.from_numpy(xi), torch.from_numpy(yi))))
    mean, std = kernel_inception_distance(x, y, subsets=5, subset_size=50, seed=11)
    assert mean == pytest.approx(np.mean(per_subset), rel=1e-10)
    assert std == pytest.approx(np.std(per_subset), rel=1e-9)


def test_kid_of_same_distribution_is_near_zero_and_of_shifted_is_not():
    x, x2 = _features(n=400, seed=9), _features(n=400, seed=10)
    same, same_std = kernel_inception_distance(x, x2, subsets=20, subset_size=200)
    shifted, _ = kernel_inception_distance(x, x2 + 0.5, subsets=20, subset_size=200)
    assert abs(same) < 3 * same_std + 1e-3
    assert shifted > 20 * abs(same)


def test_kid_never_touches_global_rng():
    np.random.seed(123)
    torch.manual_seed(123)
    np_state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    kernel_inception_distance(_features(), _features(seed=1), subsets=3, subset_size=50)
    inception_score(_logits(), splits=10)
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_kid_bad_inputs():
    x, y = _features(), _features(n=150)
    with pytest.raises(MetricError, match=r"subset_size 300 is larger than the number of samples \(real 200, fake 150\)"):
        kernel_inception_distance(x, y, subset_size=300)
    with pytest.raises(MetricError, match="feature dimensions differ: real has D=64, fake has D=10"):
        kernel_inception_distance(x, y[:, :10], subset_size=100)
    with pytest.raises(MetricError, match="the unbiased estimator needs at least 2"):
        kernel_inception_distance(x, y, subset_size=1)
    with pytest.raises(MetricError, match="seed: expected a non-negative integer, received -1"):
        kernel_inception_distance(x, y, subset_size=100, seed=-1)
    bad = y.copy()
    bad[0, 0] = np.inf
    with pytest.raises(MetricError, match=r"fake features: 1 value\(s\) are NaN or inf"):
        kernel_inception_distance(x, bad, subset_size=100)
    # kernel options: a NaN or negative gamma gave NaN or a negative "distance"; a string was a raw TypeError
    for gamma in (float("nan"), -1.0, 0.0, "0.1", True):
        with pytest.raises(MetricError, match=r"gamma: expected a positive finite number or None \(1 / D\), received "):
            kernel_inception_distance(x, y, subset_size=100, gamma=gamma)
    for coef0 in (float("inf"), "a", None):
        with pytest.raises(MetricError, match=r"coef0: expected a finite number, received "):
            kernel_inception_distance(x, y, subset_size=100, coef0=coef0)


def test_kid_draws_subsets_in_the_order_of_torch_fidelitys_command_line():
    # `fidelity --kid --input1 FAKE --input2 REAL` draws input1's (the generated) subset first in every round.
    # ganbench takes (real, fake); with subsets smaller than both sets, a different order gives other subsets
    # (KID off by ~1%, its std by ~10%), so the roles must line up, std included.
    real, fake = _features(n=150, seed=21), _features(n=100, shift=0.2, seed=22)
    ref = kid_features_to_metric(
        torch.from_numpy(fake), torch.from_numpy(real), kid_subsets=20, kid_subset_size=50, rng_seed=2020, verbose=False
    )
    mean, std = kernel_inception_distance(real, fake, subsets=20, subset_size=50, seed=2020)
    assert mean == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-9)
    assert std == pytest.approx(ref["kernel_inception_distance_std"], rel=1e-9)


def test_inception_score_of_classes_whose_probability_underflows_is_finite_and_warns_nothing():
    """Logits 1000 apart make exp underflow to exactly 0; classes 5..9 are never predicted, so their marginal is 0.
    Under warnings-as-errors this must not warn, and equal the score without those classes (torch-fidelity gets
    0 * inf = NaN on the full logits, and its number on the reduced ones)."""
    logits = 1000.0 * np.eye(10)[np.arange(400) % 5] + np.random.default_rng(0).standard_normal((400, 10))
    assert not np.exp(torch.from_numpy(logits).log_softmax(dim=1).numpy())[:, 5:].any()
    mean, std = inception_score(logits, splits=4)
    ref = isc_features_to_metric(torch.from_numpy(logits[:, :5]), splits=4, shuffle=True, rng_seed=2020)
    assert mean == pytest.approx(ref["inception_score_mean"], rel=1e-12) and mean == pytest.approx(5.0, abs=0.05)
    assert std == pytest.approx(ref["inception_score_std"], rel=1e-9, abs=1e-12)


def test_kid_kernel_sums_by_row_chunks_equal_the_whole_matrices(monkeypatch):
    # the kernel matrices are summed chunk by chunk (memory ~ chunk x subset size); a chunk that does not divide
    # the subset must still drop exactly the diagonal of each within-set matrix
    from ganbench.metrics import kid

    x, y = _features(seed=31), _features(n=150, shift=0.2, seed=32)
    whole = kernel_inception_distance(x, y, subsets=4, subset_size=90, seed=5)
    monkeypatch.setattr(kid, "_CHUNK", 7)
    chunked = kernel_inception_distance(x, y, subsets=4, subset_size=90, seed=5)
    assert chunked == pytest.approx(whole, rel=1e-12)
    ref = kid_features_to_metric(torch.from_numpy(y), torch.from_numpy(x), kid_subsets=4, kid_subset_size=90, rng_seed=5,
                                 verbose=False)
    assert chunked[0] == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-9)


def test_kid_with_its_defaults_equals_torch_fidelitys_with_its_defaults():
    # the function's seed defaulted to 0 where torch-fidelity's (and ganbench eval's, and inception_score's) is 2020:
    # called as documented, it gave another number than the reference called as documented (0.11306 vs 0.11332)
    real, fake = _features(n=1200, seed=31), _features(n=1100, shift=0.2, seed=32)
    ref = kid_features_to_metric(torch.from_numpy(fake), torch.from_numpy(real), verbose=False)
    mean, std = kernel_inception_distance(real, fake)
    assert mean == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-6)
    assert std == pytest.approx(ref["kernel_inception_distance_std"], rel=1e-4)
