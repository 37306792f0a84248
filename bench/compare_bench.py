"""`ganbench compare`'s tests vs scipy's on the same numbers, measured in the same run.

A leaderboard of M models asks for M(M-1)/2 pairwise comparisons at one seed count, so what matters is the cost of
one more pair. Rows, per seed count n (n seeds for A and n for B, exact permutation test up to C(2n, n) = 100,000
relabellings):
  permutation  ganbench `permutation_test` vs `scipy.stats.permutation_test` (two-sided, difference of means,
               permutation_type='independent', every relabelling when their count is at most 100,000): seconds per
               pair, the p-values compared
  improvement  ganbench `probability_of_improvement` (2,000 stratified bootstrap draws) vs rliable's
               `probability_of_improvement` point estimate where rliable is installed, else the value only
  seeds        ganbench `seeds_needed` vs `statsmodels`' `TTestIndPower.solve_power` where statsmodels is installed

Ours and the peer alternate pair by pair, so load from other jobs hits both alike; medians are reported.

    python bench/compare_bench.py [--seeds 3,6,8,9] [--pairs 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from ganbench.compare import permutation_test, probability_of_improvement, seeds_needed


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _pairs(n: int, count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield rng.normal(100, 10, n), rng.normal(110, 10, n)


def permutation_rows(seeds: list[int], pairs: int) -> list[tuple]:
    from scipy import stats

    rows = []
    for n in seeds:
        ours, theirs, worst = [], [], 0.0
        for a, b in _pairs(n, pairs):
            t, mine = _timed(lambda a=a, b=b: permutation_test(a, b))
            ours.append(t)
            t, ref = _timed(lambda a=a, b=b: stats.permutation_test(
                (a, b), lambda x, y, axis: x.mean(axis=axis) - y.mean(axis=axis), vectorized=True,
                permutation_type="independent", n_resamples=100_000, alternative="two-sided"))
            theirs.append(t)
            worst = max(worst, abs(mine.p - ref.pvalue))
        rows.append((f"permutation n={n}", statistics.median(ours), "scipy.stats.permutation_test",
                     statistics.median(theirs), f"max |p - p_scipy| = {worst:.1e}"))
    return rows


def improvement_rows(seeds: list[int], pairs: int) -> list[tuple]:
    try:
        from rliable import metrics as rly
    except ImportError:
        rly = None
    rows = []
    for n in seeds:
        ours, theirs, worst = [], [], 0.0
        for a, b in _pairs(n, pairs):
            t, mine = _timed(lambda a=a, b=b: probability_of_improvement(a, b, "lower", rng=np.random.default_rng(0)))
            ours.append(t)
            if rly is not None:  # rliable: higher is better, scores (runs, tasks)
                t, ref = _timed(lambda a=a, b=b: rly.probability_of_improvement(-a[:, None], -b[:, None]))
                theirs.append(t)
                worst = max(worst, abs(mine.p - float(ref)))
        rows.append((f"improvement n={n}", statistics.median(ours), "rliable point estimate" if rly else "(rliable absent)",
                     statistics.median(theirs) if theirs else float("nan"),
                     f"max |P - P_rliable| = {worst:.1e}" if rly else "bootstrap interval included"))
    return rows


def seeds_rows(pairs: int) -> list[tuple]:
    try:
        from statsmodels.stats.power import TTestIndPower
    except ImportError:
        TTestIndPower = None
    ours, theirs, notes = [], [], []
    for d in np.linspace(0.3, 3.0, pairs):
        t, mine = _timed(lambda d=d: seeds_needed(d, 1.0, 1.0))
        ours.append(t)
        if TTestIndPower is not None:
            t, ref = _timed(lambda d=d: TTestIndPower().solve_power(effect_size=d, alpha=0.05, power=0.8))
            theirs.append(t)
            notes.append(mine == max(2, int(np.ceil(ref))))
    return [("seeds_needed", statistics.median(ours), "statsmodels solve_power" if theirs else "(statsmodels absent)",
             statistics.median(theirs) if theirs else float("nan"),
             f"{sum(notes)}/{len(notes)} equal to ceil(statsmodels)" if notes else "")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="3,6,8,9", help="seed counts per model")
    parser.add_argument("--pairs", type=int, default=15, help="pairs per seed count (a 6-model leaderboard: 15)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = permutation_rows(seeds, args.pairs) + improvement_rows(seeds, args.pairs) + seeds_rows(args.pairs)
    print("| test | ganbench s/pair | peer | peer s/pair | ratio | agreement |")
    print("| --- | ---: | --- | ---: | ---: | --- |")
    for name, ours, peer, theirs, note in rows:
        ratio = theirs / ours if ours > 0 and theirs == theirs else float("nan")
        print(f"| {name} | {ours:.2e} | {peer} | {theirs:.2e} | {ratio:.1f}x | {note} |")


if __name__ == "__main__":
    main()
