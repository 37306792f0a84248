"""Is model A really better than model B? The statistics behind `ganbench compare`, on plain arrays of numbers.

Pure functions: one value per training seed in, test results out; no store, no printing, randomness only from an
explicit `numpy.random.Generator`. The definitions follow the references the tests compare against:

- `welch`: the difference of means with a Welch t interval and p-value (`scipy.stats.ttest_ind(equal_var=False)`).
- `permutation_test`: the difference of means over every relabelling of the seeds when there are at most
  `max_exact` of them (C(6, 3) = 20 for 3 seeds against 3), else over random relabellings; the two-sided p-value is
  twice the smaller one-sided one, as `scipy.stats.permutation_test(permutation_type='independent')` defines it.
  With 3 seeds against 3 it can never fall below 2/20 = 0.1: few seeds cannot show a difference this way
  (`smallest_permutation_p`; `permutation_seeds_for` the seeds it needs under Holm's correction).
- `probability_of_improvement`: P(a random run of A is better than a random run of B), ties counting 1/2 (the
  Mann-Whitney U statistic over n_A n_B; Agarwal et al. 2021, rliable's `probability_of_improvement`), with a
  stratified bootstrap interval (A's and B's runs resampled separately).
- `variance_components`: one-way random-effects ANOVA splitting the spread into training seeds (between
  checkpoints) and sampling (one checkpoint scored under several sampling seeds).
- `holm` and `corrected_ranks`: Holm's step-down adjustment over a leaderboard's pairwise tests, and ranks that
  claim only what the adjusted tests support.
- `seeds_needed`: seeds per model for a two-sided two-sample t test to reach the requested power at the observed
  difference and spread, by the exact power of the t test (scipy's noncentral t), not the normal approximation.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DIRECTIONS = ("lower", "higher")
MAX_EXACT = 100_000  # relabellings enumerated exactly: C(20, 10) = 184,756 is the first balanced count above it
N_RANDOM = 99_999  # random relabellings beyond it
N_BOOTSTRAP = 2_000
MAX_SEEDS = 100_000  # seeds_needed gives up here (an effect this small is no effect at this spread)


def _values(name: str, values: Sequence[float], minimum: int = 2) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or len(x) < minimum or not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must be a 1-d sequence of at least {minimum} finite numbers, got {values!r}")
    return x


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'lower' or 'higher', got {direction!r}")


@dataclass(frozen=True)
class Welch:
    """Mean of A minus mean of B with its Welch t interval and two-sided p-value (NaN when neither side varies)."""

    diff: float
    ci_low: float
    ci_high: float
    t: float
    df: float
    p: float


def welch(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Welch:
    """Welch's unequal-variance t test of mean(a) - mean(b), and its `confidence` interval (Welch-Satterthwaite df)."""
    from scipy import stats

    x, y = _values("a", a), _values("b", b)
    va, vb = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    diff = float(x.mean() - y.mean())
    se = math.sqrt(va + vb)
    if se == 0.0:  # every seed of both models gave the same number: no spread to test against
        return Welch(diff, diff, diff, math.nan, math.nan, math.nan)
    df = (va + vb) ** 2 / (va**2 / (len(x) - 1) + vb**2 / (len(y) - 1))
    t = diff / se
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    return Welch(diff, diff - half, diff + half, t, df, float(2 * stats.t.sf(abs(t), df)))


@dataclass(frozen=True)
class Permutation:
    """Two-sided permutation p-value of mean(a) - mean(b); `exact` when every relabelling was counted."""

    p: float
    n_relabellings: int
    exact: bool

    @property
    def smallest_p(self) -> float:
        """The smallest p-value this test can give with these sample sizes (2 / count when exact)."""
        return min(1.0, 2 / self.n_relabellings) if self.exact else 2 / (self.n_relabellings + 1)


def permutation_test(a: Sequence[float], b: Sequence[float], *, rng: np.random.Generator | None = None,
                     max_exact: int = MAX_EXACT, n_random: int = N_RANDOM) -> Permutation:
    """Permutation test of the difference of means; exact up to `max_exact` relabellings, else `n_random` of them."""
    x, y = _values("a", a, 1), _values("b", b, 1)
    pooled = np.concatenate([x, y])
    n, k = len(pooled), len(x)
    total = math.comb(n, k)
    if total <= max_exact:
        members = _relabellings(n, k)  # row 0 is the observed labelling: A's values first
        adjustment = 0
    else:
        if rng is None:
            raise ValueError(f"{total} relabellings are too many to enumerate; pass rng= to sample {n_random} of them")
        order = np.argsort(rng.random((n_random, n)), axis=1)
        members = np.zeros((n_random + 1, n))
        members[0, :k] = 1.0  # the observed labelling, computed as the relabellings are
        np.put_along_axis(members[1:], order[:, :k], 1.0, axis=1)
        adjustment = 1  # the observed labelling counts as one of the random ones (scipy's convention)
    sums = members @ pooled
    differences = sums / k - (pooled.sum() - sums) / (n - k)
    # The observed difference by the same arithmetic as every relabelling's (mean(x) - mean(y) rounds otherwise,
    # and its own relabelling could fall outside its tail: p = 0); equal up to rounding counts as equal, at the
    # scale of the values (a difference of 0.1 between values near 300 carries their rounding).
    observed = float(differences[0])
    null = differences if adjustment == 0 else differences[1:]
    gamma = max(abs(observed), float(np.abs(pooled).max())) * np.finfo(np.float64).eps * 100
    count = len(null) + adjustment
    less = (np.count_nonzero(null <= observed + gamma) + adjustment) / count
    greater = (np.count_nonzero(null >= observed - gamma) + adjustment) / count
    return Permutation(float(min(1.0, 2 * min(less, greater))), len(null), adjustment == 0)


@functools.lru_cache(maxsize=4)
def _relabellings(n: int, k: int) -> np.ndarray:
    """Every way to choose which k of n pooled values are A's, one 0/1 row each (a leaderboard asks for the same
    n, k for every pair, so they are enumerated once; at most 100,000 x n float64, 16 MB at n = 20)."""
    members = np.zeros((math.comb(n, k), n))
    for i, chosen in enumerate(itertools.combinations(range(n), k)):
        members[i, list(chosen)] = 1.0
    members.flags.writeable = False
    return members


def smallest_permutation_p(n_a: int, n_b: int, *, max_exact: int = MAX_EXACT, n_random: int = N_RANDOM) -> float:
    """The smallest two-sided p `permutation_test` can give for n_a seeds against n_b, whatever the values: the
    observed labelling alone in its tail (2 / C(n_a + n_b, n_a) when exact)."""
    total = math.comb(n_a + n_b, n_a)
    return min(1.0, 2 / total) if total <= max_exact else 2 / (n_random + 1)


def permutation_seeds_for(pairs: int, *, alpha: float = 0.05) -> int | None:
    """The fewest seeds per model (the same for every model) at which the permutation test, Holm-corrected over
    `pairs` tests, can reach `alpha` at all: Holm's first step multiplies the smallest p by `pairs`. None when even
    the random test's floor is too coarse."""
    if pairs * 2 / (N_RANDOM + 1) > alpha:  # many seeds: the random test's floor
        return None
    n = 2
    while pairs * smallest_permutation_p(n, n) > alpha:
        n += 1
    return n


@dataclass(frozen=True)
class Improvement:
    """P(a random run of A is better than a random run of B) with a stratified bootstrap interval."""

    p: float
    ci_low: float
    ci_high: float


def probability_of_improvement(a: Sequence[float], b: Sequence[float], direction: str, *, rng: np.random.Generator,
                               n_bootstrap: int = N_BOOTSTRAP, confidence: float = 0.95) -> Improvement:
    """Mean over all (run of A, run of B) pairs of 1 when A's run is better, 1/2 on a tie, 0 otherwise.

    The interval resamples A's runs and B's runs separately (rliable's stratified bootstrap, one task) and takes
    the percentile interval."""
    _check_direction(direction)
    x, y = _values("a", a, 1), _values("b", b, 1)
    sign = -1.0 if direction == "lower" else 1.0
    wins = np.sign(sign * (x[:, None] - y[None, :])) * 0.5 + 0.5  # 1 better, 1/2 tie, 0 worse
    ia = rng.integers(0, len(x), size=(n_bootstrap, len(x)))
    ib = rng.integers(0, len(y), size=(n_bootstrap, len(y)))
    # how often each run was drawn, so memory stays n_bootstrap x runs rather than n_bootstrap x n_A x n_B
    ca, cb = np.zeros((n_bootstrap, len(x))), np.zeros((n_bootstrap, len(y)))
    np.add.at(ca, (np.arange(n_bootstrap)[:, None], ia), 1)
    np.add.at(cb, (np.arange(n_bootstrap)[:, None], ib), 1)
    boot = np.einsum("ki,ij,kj->k", ca, wins, cb) / (len(x) * len(y))
    tail = (1 - confidence) / 2
    low, high = np.quantile(boot, [tail, 1 - tail])
    return Improvement(float(wins.mean()), float(low), float(high))


@dataclass(frozen=True)
class Components:
    """One-way random-effects split of the variance: between checkpoints (training seeds) and within (sampling)."""

    n_checkpoints: int
    n_values: int
    between: float  # training-seed variance (method of moments, floored at 0)
    within: float  # sampling variance: one checkpoint scored under different sampling seeds
    f: float
    p: float  # F test of "no training-seed variance"

    @property
    def share_between(self) -> float:
        total = self.between + self.within
        return self.between / total if total > 0 else math.nan

    @property
    def dominant(self) -> str:
        return "training seeds" if self.between > self.within else "sampling" if self.within > self.between else "neither"


def variance_components(groups: Sequence[Sequence[float]]) -> Components:
    """The ANOVA estimates for unbalanced groups: `groups[i]` holds checkpoint i's values under its sampling seeds.

    between = (MSB - MSW) / n0 with n0 = (N - sum n_i^2 / N) / (a - 1), within = MSW (Searle, Casella and
    McCulloch 1992, ch. 3); needs 2+ checkpoints and at least one scored more than once."""
    from scipy import stats

    xs = [_values(f"groups[{i}]", g, 1) for i, g in enumerate(groups)]
    a, total = len(xs), sum(len(x) for x in xs)
    if a < 2 or total - a < 1:
        raise ValueError(f"need 2+ checkpoints and one scored under 2+ sampling seeds, got sizes {[len(x) for x in xs]}")
    grand = np.concatenate(xs).mean()
    msb = sum(len(x) * (x.mean() - grand) ** 2 for x in xs) / (a - 1)
    msw = sum(((x - x.mean()) ** 2).sum() for x in xs) / (total - a)
    n0 = (total - sum(len(x) ** 2 for x in xs) / total) / (a - 1)
    f = msb / msw if msw > 0 else math.inf if msb > 0 else math.nan
    p = float(stats.f.sf(f, a - 1, total - a)) if math.isfinite(f) else (0.0 if f == math.inf else math.nan)
    return Components(a, total, float(max(0.0, (msb - msw) / n0)), float(msw), float(f), p)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order; NaN (no test) stays NaN and does not count."""
    p = np.asarray(pvalues, dtype=np.float64)
    tested = np.flatnonzero(~np.isnan(p))
    out = np.full(len(p), math.nan)
    m = len(tested)
    order = tested[np.argsort(p[tested], kind="stable")]
    running = 0.0
    for i, idx in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[idx]))
        out[idx] = running
    return out.tolist()


def corrected_ranks(n: int, better: Sequence[tuple[int, int]]) -> list[int]:
    """Rank of each of `n` models: 1 + the number of models significantly better than it.

    `better` lists (winner, loser) index pairs whose adjusted test rejected equality."""
    ranks = [1] * n
    for _, loser in set(better):
        ranks[loser] += 1
    return ranks


def seeds_needed(diff: float, sd_a: float, sd_b: float, *, alpha: float = 0.05, power: float = 0.8,
                 max_seeds: int = MAX_SEEDS) -> int | None:
    """Seeds per model for a two-sided two-sample t test at level `alpha` to detect `diff` with `power`.

    Exact power of the pooled t test with equal n at effect size d = |diff| / sqrt((sd_a^2 + sd_b^2) / 2):
    P(|T| > t_(1-alpha/2, 2n-2)) with T noncentral t (df 2n - 2, noncentrality d sqrt(n / 2)); the smallest
    n >= 2 that reaches `power` (d = 0.5 gives 64, Cohen 1988). None when no n up to `max_seeds` does."""
    from scipy import stats

    spread = math.sqrt((sd_a**2 + sd_b**2) / 2)
    if not (math.isfinite(diff) and math.isfinite(spread)):
        raise ValueError(f"diff and spreads must be finite, got {diff!r}, {sd_a!r}, {sd_b!r}")
    if spread == 0:
        return 2 if diff != 0 else None
    d = abs(diff) / spread

    def achieved(n: int) -> float:
        df = 2 * n - 2
        crit = stats.t.ppf(1 - alpha / 2, df)
        nc = d * math.sqrt(n / 2)
        return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))

    if d == 0:
        return None
    # Double, then bisect: the noncentral t stays near the noncentrality that gives `power` (about 2.8), where
    # scipy's nct is accurate; at the noncentrality of a huge n (hundreds) it returns NaN.
    high = 2
    while achieved(high) < power:
        if high >= max_seeds:
            return None
        high = min(2 * high, max_seeds)
    low = max(2, high // 2)
    while low < high:
        mid = (low + high) // 2
        if achieved(mid) >= power:
            high = mid
        else:
            low = mid + 1
    return low
