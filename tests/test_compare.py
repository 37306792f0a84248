"""`ganbench.compare`, the statistics of `ganbench compare`: equal to scipy's and rliable's reference computations on
the same numbers, closed-form values (Cohen's sample sizes, Holm by hand), and the calibration that makes a test
honest: identical models give p-values spread evenly over [0, 1], shifted ones are found."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from ganbench import compare


def _mean_diff(x, y, axis):
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def scipy_permutation(a, b, **kwargs):
    return stats.permutation_test((a, b), _mean_diff, permutation_type="independent", vectorized=True, **kwargs)


SIZES = [(3, 3), (2, 5), (4, 4), (5, 3), (6, 6)]


@pytest.mark.parametrize(("na", "nb"), SIZES)
def test_welch_equals_scipy_ttest_ind_with_unequal_variances(na, nb):
    rng = np.random.default_rng(na * 10 + nb)
    a, b = rng.normal(20, 1, na), rng.normal(21, 3, nb)
    ours = compare.welch(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert ours.p == pytest.approx(ref.pvalue, rel=1e-10) and ours.t == pytest.approx(ref.statistic, rel=1e-10)
    assert ours.df == pytest.approx(ref.df, rel=1e-10)
    assert (ours.ci_low, ours.ci_high) == (pytest.approx(ci.low, rel=1e-10), pytest.approx(ci.high, rel=1e-10))
    assert ours.diff == pytest.approx(a.mean() - b.mean())


def test_welch_without_any_spread_has_no_p_value():
    w = compare.welch([3.0, 3.0], [4.0, 4.0, 4.0])
    assert w.diff == -1.0 and math.isnan(w.p) and (w.ci_low, w.ci_high) == (-1.0, -1.0)
    with pytest.raises(ValueError, match="at least 2 finite numbers"):
        compare.welch([1.0], [2.0, 3.0])


@pytest.mark.parametrize(("na", "nb"), SIZES)
def test_exact_permutation_test_equals_scipy_over_every_relabelling(na, nb):
    rng = np.random.default_rng(100 + na * 10 + nb)
    a, b = rng.normal(10, 1, na), rng.normal(11, 2, nb)
    ours = compare.permutation_test(a, b)
    ref = scipy_permutation(a, b, n_resamples=np.inf)
    assert ours.exact and ours.n_relabellings == math.comb(na + nb, na)
    assert ours.p == pytest.approx(ref.pvalue, rel=1e-12)


def test_three_seeds_against_three_cannot_reach_p_below_a_tenth():
    # 20 relabellings; the observed one is the most extreme in its tail, so the two-sided p is 2/20
    ours = compare.permutation_test([1.0, 2.0, 3.0], [10.0, 11.0, 12.0])
    assert (ours.p, ours.n_relabellings, ours.smallest_p) == (0.1, 20, 0.1)
    assert ours.p == pytest.approx(scipy_permutation([1.0, 2.0, 3.0], [10.0, 11.0, 12.0], n_resamples=np.inf).pvalue)


def test_random_permutation_test_approximates_the_exact_one_and_needs_a_generator():
    rng = np.random.default_rng(7)
    a, b = rng.normal(0, 1, 8), rng.normal(0.8, 1, 8)  # C(16, 8) = 12,870 relabellings
    exact = compare.permutation_test(a, b)
    sampled = compare.permutation_test(a, b, rng=np.random.default_rng(1), max_exact=1000, n_random=20_000)
    assert not sampled.exact and sampled.p == pytest.approx(exact.p, abs=0.02)
    with pytest.raises(ValueError, match="too many to enumerate; pass rng="):
        compare.permutation_test(a, b, max_exact=1000)


def test_probability_of_improvement_equals_rliable_and_counts_ties_as_half():
    from rliable import metrics

    rng = np.random.default_rng(3)
    for na, nb in [(3, 3), (5, 4), (10, 7)]:
        a, b = np.round(rng.normal(0, 1, na), 1), np.round(rng.normal(0.3, 1, nb), 1)  # rounding makes ties
        ref = metrics.probability_of_improvement(a[:, None], b[:, None])  # rliable: higher scores are better
        assert compare.probability_of_improvement(a, b, "higher", rng=rng).p == pytest.approx(ref, rel=1e-12)
        # lower is better (FID): the same as rliable on negated scores
        ref_lower = metrics.probability_of_improvement(-a[:, None], -b[:, None])
        assert compare.probability_of_improvement(a, b, "lower", rng=rng).p == pytest.approx(ref_lower, rel=1e-12)
    assert compare.probability_of_improvement([1.0, 2.0], [2.0, 1.0], "lower", rng=rng).p == 0.5
    with pytest.raises(ValueError, match="direction must be"):
        compare.probability_of_improvement([1.0], [2.0], "up", rng=rng)


def test_probability_of_improvement_interval_is_a_reproducible_stratified_bootstrap():
    a, b = [10.0, 11.0, 12.5, 9.0], [12.0, 13.0, 11.5]
    first = compare.probability_of_improvement(a, b, "lower", rng=np.random.default_rng(5))
    again = compare.probability_of_improvement(a, b, "lower", rng=np.random.default_rng(5))
    assert first == again and 0.0 <= first.ci_low <= first.p <= first.ci_high <= 1.0
    # brute force on the same draws: resample each model's runs separately, average the pairwise wins
    rng = np.random.default_rng(5)
    ia, ib = rng.integers(0, 4, (compare.N_BOOTSTRAP, 4)), rng.integers(0, 3, (compare.N_BOOTSTRAP, 3))
    x, y = np.array(a), np.array(b)
    boot = [np.mean([(1.0 if u < v else 0.5 if u == v else 0.0) for u in x[i] for v in y[j]])
            for i, j in zip(ia, ib, strict=True)]
    assert (first.ci_low, first.ci_high) == pytest.approx(tuple(np.quantile(boot, [0.025, 0.975])))
    # separated models: every bootstrap sample agrees
    sure = compare.probability_of_improvement([1.0, 2.0, 3.0], [10.0, 11.0], "lower", rng=np.random.default_rng(0))
    assert (sure.p, sure.ci_low, sure.ci_high) == (1.0, 1.0, 1.0)


def test_variance_components_equal_the_one_way_anova_and_name_the_larger_part():
    groups = [[10.0, 10.4, 9.9], [12.0, 12.3], [15.1, 14.8, 15.0, 15.3]]  # unbalanced on purpose
    c = compare.variance_components(groups)
    ref = stats.f_oneway(*groups)
    assert c.f == pytest.approx(ref.statistic, rel=1e-10) and c.p == pytest.approx(ref.pvalue, rel=1e-8)
    # by hand: within = pooled within-group variance; between = (MSB - MSW) / n0
    x = [np.array(g) for g in groups]
    n, a = sum(map(len, x)), len(x)
    msw = sum(((g - g.mean()) ** 2).sum() for g in x) / (n - a)
    grand = np.concatenate(x).mean()
    msb = sum(len(g) * (g.mean() - grand) ** 2 for g in x) / (a - 1)
    n0 = (n - sum(len(g) ** 2 for g in x) / n) / (a - 1)
    assert (c.within, c.between) == (pytest.approx(msw), pytest.approx((msb - msw) / n0))
    assert c.dominant == "training seeds" and c.share_between > 0.9
    noisy = compare.variance_components([[10.0, 14.0], [11.0, 15.0], [12.0, 9.0]])
    assert noisy.dominant == "sampling" and noisy.between == 0.0  # MSB < MSW: the estimate is floored at zero
    with pytest.raises(ValueError, match="need 2\\+ checkpoints and one scored under 2\\+ sampling seeds"):
        compare.variance_components([[1.0], [2.0], [3.0]])


def test_variance_components_recover_known_components_on_a_large_simulation():
    rng = np.random.default_rng(11)
    seeds = rng.normal(0, 2.0, 400)  # training-seed sd 2 -> variance 4
    groups = [s + rng.normal(0, 0.5, 3) for s in seeds]  # sampling sd 0.5 -> variance 0.25
    c = compare.variance_components(groups)
    assert c.between == pytest.approx(4.0, rel=0.15) and c.within == pytest.approx(0.25, rel=0.1)


def test_holm_matches_the_step_down_rule_by_hand_and_leaves_untested_pairs_out():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> max with the previous: 0.06
    assert compare.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = compare.holm([0.01, math.nan, 0.04])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)
    assert compare.holm([0.6, 0.9]) == [1.0, 1.0]  # 0.6 * 2 capped at 1, and never below an earlier step
    assert compare.holm([]) == []


def test_corrected_ranks_count_the_models_significantly_better():
    # 0 beats 1 and 2; 1 and 2 are not separated; 3 beaten by all of them
    assert compare.corrected_ranks(4, [(0, 1), (0, 2), (0, 3), (1, 3), (2, 3), (2, 3)]) == [1, 2, 2, 4]
    assert compare.corrected_ranks(3, []) == [1, 1, 1]


def test_seeds_needed_matches_cohens_table_and_the_normal_approximation_from_above():
    # Cohen (1988), two-sided alpha 0.05, power 0.8: d = 0.5 -> 64, 0.8 -> 26, 1.0 -> 17 per group
    assert [compare.seeds_needed(d, 1.0, 1.0) for d in (0.5, 0.8, 1.0)] == [64, 26, 17]
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    for d in (0.3, 0.7, 1.5):  # the t test needs a little more than the normal approximation 2 z^2 / d^2
        n = compare.seeds_needed(-d, 1.0, 1.0)
        assert math.ceil(2 * z**2 / d**2) <= n <= math.ceil(2 * z**2 / d**2) + 3
    assert compare.seeds_needed(2.0, 1.0, 3.0) == compare.seeds_needed(2.0 / math.sqrt(5.0), 1.0, 1.0)  # pooled spread
    assert compare.seeds_needed(0.0, 1.0, 1.0) is None and compare.seeds_needed(1e-3, 1.0, 1.0) is None
    # the power the answer claims, checked by simulation of the t test itself
    rng = np.random.default_rng(2)
    n = compare.seeds_needed(1.0, 1.0, 1.0)
    a, b = rng.normal(0, 1, (4000, n)), rng.normal(1, 1, (4000, n))
    power = np.mean(stats.ttest_ind(a, b, axis=1).pvalue < 0.05)
    assert 0.78 <= power <= 0.86


def test_identical_models_give_uniform_p_values_and_shifted_ones_are_detected():
    rng = np.random.default_rng(2024)
    reps, n = 200, 5
    same = [(rng.normal(30, 2, n), rng.normal(30, 2, n)) for _ in range(reps)]
    welch_p = np.array([compare.welch(a, b).p for a, b in same])
    perm_p = np.array([compare.permutation_test(a, b).p for a, b in same])
    high = stats.binom.ppf(0.999, reps, 0.05)  # at most this many false alarms in 999 of 1000 honest runs
    assert np.count_nonzero(welch_p < 0.05) <= high and np.count_nonzero(perm_p < 0.05) <= high
    assert stats.kstest(welch_p, "uniform").pvalue > 0.001  # spread over [0, 1], not just rarely small
    assert np.count_nonzero(welch_p < 0.5) == pytest.approx(reps / 2, abs=3 * math.sqrt(reps) / 2)
    shifted = [compare.welch(rng.normal(30, 2, n), rng.normal(36, 2, n)).p for _ in range(reps)]
    # a 3-sd shift with 5 seeds each: power about 0.99 (seeds_needed says 4 suffice for 0.8)
    assert np.mean(np.array(shifted) < 0.05) > 0.9 and compare.seeds_needed(6.0, 2.0, 2.0) <= 5


@pytest.mark.parametrize("na,nb", [(3, 3), (4, 5), (5, 5), (2, 6)])
def test_smallest_permutation_p_is_what_perfectly_separated_seeds_reach(na, nb):
    a, b = np.arange(na, dtype=float), 100.0 + np.arange(nb)  # every run of A below every run of B: the extreme
    assert compare.smallest_permutation_p(na, nb) == pytest.approx(compare.permutation_test(a, b).p, rel=1e-12)
    assert compare.smallest_permutation_p(na, nb) == pytest.approx(2 / math.comb(na + nb, na))


def test_permutation_seeds_for_holm_is_the_fewest_balanced_seeds_whose_corrected_p_can_reach_alpha():
    # 15 pairs (six models): 15 x 2/C(10, 5) = 0.119 > 0.05 at 5 seeds; 15 x 2/C(12, 6) = 0.032 at 6
    assert compare.permutation_seeds_for(15, alpha=0.05) == 6
    assert compare.permutation_seeds_for(1, alpha=0.05) == 4  # 2/C(6, 3) = 0.1, 2/C(8, 4) = 0.029
    for m in (1, 3, 15, 45):
        n = compare.permutation_seeds_for(m, alpha=0.05)
        assert m * compare.smallest_permutation_p(n, n) <= 0.05 < m * compare.smallest_permutation_p(n - 1, n - 1)
    assert compare.permutation_seeds_for(10_000, alpha=0.05) is None  # past the random test's floor, 2 / 100,000


@pytest.mark.parametrize(("a", "b"), [
    ([299.76, 299.6, 299.93], [300.43, 300.64, 300.33]),  # a helper's case: p = 0, below the floor of 0.1
    ([1e6 + 0.1, 1e6 + 0.2, 1e6 + 0.3, 1e6 + 0.25], [1e6 + 0.9, 1e6 + 0.8, 1e6 + 1.0, 1e6 + 0.7]),
    ([0.701, 0.702, 0.699, 0.705, 0.703], [0.711, 0.712, 0.709, 0.704, 0.708]),
])
def test_the_exact_permutation_p_equals_scipys_where_values_are_large_next_to_their_differences(a, b):
    # The observed difference was computed as mean(a) - mean(b), each relabelling's from sums: rounded differently,
    # the relabelling equal to the observed one could fall outside its own tail (p = 0 for 3 seeds against 3)
    ours = compare.permutation_test(a, b)
    ref = stats.permutation_test((np.array(a), np.array(b)), lambda x, y, axis: x.mean(axis=axis) - y.mean(axis=axis),
                                 vectorized=True, permutation_type="independent", n_resamples=np.inf)
    assert ours.exact and ours.p == pytest.approx(ref.pvalue, rel=1e-12)
    assert ours.p >= ours.smallest_p
    random = compare.permutation_test(a, b, max_exact=10, rng=np.random.default_rng(0))
    assert random.p >= random.smallest_p
