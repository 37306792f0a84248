"""Precision/recall/density/coverage: exact equality with prdc (counts, so values to the last bit),
with torch-fidelity's PRC, chunking invariance, near-ties that float32 distances would get wrong,
and pinned error messages."""

import contextlib
import io

import numpy as np
import prdc as prdc_lib
import pytest
import torch
from torch_fidelity.metric_prc import prc_features_to_metric

from ganbench.errors import MetricError
from ganbench.metrics.manifold import density_coverage, knn_metrics, prdc, precision_recall


def _reference(real, fake, k):
    with contextlib.redirect_stdout(io.StringIO()):  # prdc prints the sample counts
        return {name: float(v) for name, v in prdc_lib.compute_prdc(real, fake, k).items()}


def _sets(n_real=200, n_fake=230, d=64, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    real = rng.standard_normal((n_real, d)).astype(dtype)
    fake = (1.1 * rng.standard_normal((n_fake, d)) + 0.15).astype(dtype)
    return real, fake


@pytest.mark.parametrize("k", [1, 3, 5])
def test_prdc_equals_reference_exactly(k):
    real, fake = _sets(seed=k)
    ref = _reference(real, fake, k)
    assert 0.0 < ref["precision"] < 1.0 and 0.0 < ref["coverage"] < 1.0  # not a degenerate case
    assert prdc(real, fake, k) == ref


@pytest.mark.parametrize("chunk_size", [1, 17, 64, 199, 4096])
def test_chunk_size_does_not_change_any_count(chunk_size):
    real, fake = _sets(n_real=150, n_fake=170, d=16, seed=3)
    assert prdc(real, fake, 4, chunk_size=chunk_size) == _reference(real, fake, 4)


def test_float64_and_tensor_inputs_equal_reference():
    real, fake = _sets(seed=4, dtype=np.float64)
    assert prdc(torch.from_numpy(real), torch.from_numpy(fake), 5) == _reference(real, fake, 5)


def test_precision_recall_and_density_coverage_equal_reference():
    real, fake = _sets(seed=5)
    ref3, ref5 = _reference(real, fake, 3), _reference(real, fake, 5)
    assert precision_recall(real, fake, k=3) == {"precision": ref3["precision"], "recall": ref3["recall"]}
    assert density_coverage(real, fake, k=5) == {"density": ref5["density"], "coverage": ref5["coverage"]}


def test_precision_recall_equal_torch_fidelity_prc():
    real, fake = _sets(seed=6)
    # torch-fidelity: features_1 is the generated set, features_2 the real one; balls are closed (<=)
    ref = prc_features_to_metric(
        torch.from_numpy(fake), torch.from_numpy(real), prc_neighborhood=3, prc_batch_size=64, save_cpu_ram=False,
        verbose=False,
    )
    ours = precision_recall(real, fake, k=3)
    # torch-fidelity averages in float32, so compare the counts behind the fractions
    assert round(ours["precision"] * len(fake)) == round(ref["precision"] * len(fake))
    assert round(ours["recall"] * len(real)) == round(ref["recall"] * len(real))
    assert ours["precision"] == pytest.approx(ref["precision"], abs=1e-6) and 0.0 < ours["recall"] < 1.0


def test_near_ties_that_float32_distances_flip_still_match_reference():
    rng = np.random.default_rng(7)
    n, d, k = 120, 32, 3
    # a large common offset: |x|^2 is ~2500 times d^2, so float32 |x|^2 + |y|^2 - 2 x.y loses ~3 digits
    real = (300.0 + rng.standard_normal((n, d))).astype(np.float32)
    dist = np.linalg.norm(real[:, None].astype(np.float64) - real[None].astype(np.float64), axis=2)
    kth = np.argsort(dist, axis=1)[:, k]  # each point's k-th nearest neighbour (column 0 is itself)
    # fake points at the radius of real point i, give or take one part in 10^6: a near-tie for the
    # decision d(real_i, fake) < radius_i (prdc's float32 distances resolve 1 part in ~10^7)
    step = rng.choice([-1.0, 1.0], size=(n, 1)) * 1e-6
    fake = (real[kth] + step * (real[kth] - real)).astype(np.float32)
    ref = _reference(real, fake, k)
    assert prdc(real, fake, k) == ref
    assert prdc(real, fake, k, worst_case_bound=True, chunk_size=50) == ref

    # the trap this test sets: plain float32 distances decide some of these pairs differently from prdc
    def f32_dist(a, b):
        a, b = torch.from_numpy(a), torch.from_numpy(b)
        d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
        return d2.clamp(min=0).sqrt()

    radii_f32 = f32_dist(real, real).kthvalue(k + 1, dim=1).values
    naive_precision = (f32_dist(real, fake) < radii_f32[:, None]).any(dim=0).double().mean().item()
    naive_density = (f32_dist(real, fake) < radii_f32[:, None]).sum(dim=0).double().mean().item() / k
    assert (naive_precision, naive_density) != (ref["precision"], ref["density"])


def test_duplicates_give_zero_radius_and_strict_balls_exclude_ties():
    # every real point appears twice: with k = 1 its ball has radius exactly 0, and `d < 0` never holds
    rng = np.random.default_rng(8)
    base = rng.standard_normal((50, 8)).astype(np.float32)
    real = np.concatenate([base, base])
    fake = rng.standard_normal((60, 8)).astype(np.float32)
    scores = prdc(real, fake, 1)
    assert scores["precision"] == 0.0 and scores["density"] == 0.0 and scores["coverage"] == 0.0
    assert scores["recall"] > 0.0


def test_bad_inputs_raise_metric_error_with_pinned_messages():
    real, fake = _sets()
    with pytest.raises(MetricError, match=r"nearest_k=200 but real features have only N=200 samples; expected nearest_k < N"):
        prdc(real, fake, 200)
    with pytest.raises(MetricError, match=r"nearest_k=230 but fake features have only N=230"):
        prdc(np.concatenate([real, real]), fake, 230)
    with pytest.raises(MetricError, match="feature dimensions differ: real has D=64, fake has D=63"):
        prdc(real, fake[:, :63])
    with pytest.raises(MetricError, match=r"fake features: received 1 sample\(s\), fewer than the 2 needed"):
        prdc(real, fake[:1], 1)
    bad = real.copy()
    bad[1, 1] = np.nan
    with pytest.raises(MetricError, match=r"real features: 1 value\(s\) are NaN or inf"):
        precision_recall(bad, fake)
    with pytest.raises(MetricError, match="nearest_k: expected a positive integer, received 0"):
        density_coverage(real, fake, k=0)


@pytest.mark.parametrize(("pr_k", "dc_k"), [(3, 5), (5, 3), (4, 4)])
def test_knn_metrics_shared_pass_equals_separate_computations_and_reference(pr_k, dc_k):
    real, fake = _sets(seed=10 + pr_k)
    shared = knn_metrics(real, fake, pr_k=pr_k, dc_k=dc_k, chunk_size=64)
    assert shared == {**precision_recall(real, fake, k=pr_k), **density_coverage(real, fake, k=dc_k)}
    ref_pr, ref_dc = _reference(real, fake, pr_k), _reference(real, fake, dc_k)
    assert shared == {"precision": ref_pr["precision"], "recall": ref_pr["recall"],
                      "density": ref_dc["density"], "coverage": ref_dc["coverage"]}
    assert knn_metrics(real, fake, pr_k=None, dc_k=dc_k) == density_coverage(real, fake, k=dc_k)
    assert knn_metrics(real, fake, pr_k=pr_k, dc_k=None) == precision_recall(real, fake, k=pr_k)


def test_blocks_recomputed_with_float64_products_give_the_same_counts(monkeypatch):
    # every block with an uncertain pair takes the float64-product route (normally only blocks where the
    # float32 bound marks more than 1/16 of the pairs: concentrated high-dimensional features)
    from ganbench.metrics import _knn

    real, fake = _sets(n_real=150, n_fake=170, d=16, seed=11)
    ref = _reference(real, fake, 3)
    monkeypatch.setattr(_knn, "_FLOAT64_BLOCK", 0.0)
    calls, original = [], _knn._float64_d2
    monkeypatch.setattr(_knn, "_float64_d2", lambda *a: calls.append(1) or original(*a))
    assert prdc(real, fake, 3, chunk_size=40) == ref
    assert calls  # the route was taken
    # with near-ties too (the trap of test_near_ties_that_float32_distances_flip_still_match_reference)
    rng = np.random.default_rng(7)
    real = (300.0 + rng.standard_normal((120, 32))).astype(np.float32)
    dist = np.linalg.norm(real[:, None].astype(np.float64) - real[None].astype(np.float64), axis=2)
    kth = np.argsort(dist, axis=1)[:, 3]
    fake = (real[kth] + rng.choice([-1.0, 1.0], size=(120, 1)) * 1e-6 * (real[kth] - real)).astype(np.float32)
    assert prdc(real, fake, 3, chunk_size=50) == _reference(real, fake, 3)


def test_knn_metrics_bad_inputs_name_their_argument():
    real, fake = _sets()
    with pytest.raises(MetricError, match="pr_k, dc_k: received None for both; expected at least one neighbour count"):
        knn_metrics(real, fake, pr_k=None, dc_k=None)
    with pytest.raises(MetricError, match="pr_k: expected a positive integer, received 0"):
        knn_metrics(real, fake, pr_k=0)
    with pytest.raises(MetricError, match=r"dc_k=200 but real features have only N=200 samples; expected dc_k < N"):
        knn_metrics(real, fake, dc_k=200)


def _merged_root_sets(groups=40, seed=12):
    """Sets where each fake point's float32 squared distance to a real point is below that point's float32
    squared radius (k = 1) but has the same correctly rounded float32 root: d == radius.

    Group g: real r0 = 4 e_(3g), r1 = r0 + delta and fake f = r0 - phi, delta and phi in the axes 3g+1, 3g+2;
    distances are exact in float64 (float32 coordinates, two squares), groups 4 sqrt(2) apart."""
    rng = np.random.default_rng(seed)
    real = np.zeros((2 * groups, 3 * groups), np.float32)
    fake = np.zeros((groups, 3 * groups), np.float32)
    steps = np.arange(-24, 25, dtype=np.float32)
    g = 0
    while g < groups:
        delta = rng.uniform(0.5, 1.0, 2).astype(np.float32)
        sq_r = np.float32(np.sum(delta.astype(np.float64) ** 2))
        # phi: delta moved by a few ulps per axis; many combinations give squared distances just below sq_r
        p1 = delta[0] + steps * np.spacing(delta[0])
        p2 = delta[1] + steps * np.spacing(delta[1])
        sq_f = (p1.astype(np.float64)[:, None] ** 2 + p2.astype(np.float64)[None, :] ** 2).astype(np.float32)
        good = np.argwhere((sq_f < sq_r) & (np.sqrt(sq_f) == np.sqrt(sq_r)))
        if not len(good):
            continue
        i, j = good[0]
        real[2 * g : 2 * g + 2, 3 * g] = 4.0
        real[2 * g + 1, 3 * g + 1 : 3 * g + 3] = delta
        fake[g, 3 * g] = 4.0
        fake[g, 3 * g + 1 : 3 * g + 3] = -p1[i], -p2[j]
        g += 1
    return real, fake


def test_distances_are_rounded_as_numpy_rounds_them_where_two_squares_share_a_root():
    # prdc's distances are numpy's float32 sqrt, which is correctly rounded: two adjacent float32 squared
    # distances can share one root, and then d == radius puts the point outside the (strict) ball. Some torch
    # sqrt kernels are not correctly rounded (this CPU's, and torch 2.11's AVX-512 one) and round such roots apart.
    real, fake = _merged_root_sets()
    ref = _reference(real, fake, 1)
    assert ref["density"] == 0.0 and ref["precision"] == 0.0  # every fake point sits exactly on a radius
    assert knn_metrics(real, fake, 1, 1) == ref


def _count_exact_pairs(monkeypatch) -> list[int]:
    from ganbench.metrics import _knn

    counted, real_exact = [], _knn.exact_distances

    def counting(a, ia, b, ib):
        counted.append(ia.numel())
        return real_exact(a, ia, b, ib)

    monkeypatch.setattr(_knn, "exact_distances", counting)
    return counted


def test_a_collapsed_generator_gets_exact_radii_without_all_pairs(monkeypatch):
    """Samples of a collapsed generator lie within ~0.01 of one point far from the real mean. About the real mean
    their norms dwarf their distances, so every neighbour order looked uncertain and each row was settled on exact
    distances to all N points (N^2 pairs: 714 s for one 10,000-sample checkpoint). About their own mean they are not."""
    rng = np.random.default_rng(7)
    real = rng.standard_normal((600, 32)).astype(np.float32)
    fake = (5.0 + 0.01 * rng.standard_normal((600, 32))).astype(np.float32)
    counted = _count_exact_pairs(monkeypatch)
    assert prdc(real, fake, 5) == _reference(real, fake, 5)
    assert sum(counted) < 20 * 600  # a band of a few pairs per row, not 600 x 600


def test_a_generator_collapsed_to_one_image_ties_without_all_pairs(monkeypatch):
    """Many exactly equal samples (more than the tracked neighbours): every radius is 0, settled by the tie bound."""
    rng = np.random.default_rng(8)
    real = rng.standard_normal((300, 16)).astype(np.float32)
    fake = np.concatenate([np.repeat(rng.standard_normal((1, 16)), 250, axis=0),
                           rng.standard_normal((50, 16))]).astype(np.float32)
    counted = _count_exact_pairs(monkeypatch)
    assert prdc(real, fake, 3) == _reference(real, fake, 3)
    assert sum(counted) < 300 * 300 // 4
