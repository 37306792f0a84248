"""`ganbench compare`: is model A really better than model B? Tests over training seeds from the results store."""

from __future__ import annotations

import argparse
import json
import sys

from ganbench.cli.options import filter_names
from ganbench.metrics.registry import METRICS

FORMATS = ("table", "csv", "json", "markdown")

EPILOG = """\
examples:
  ganbench compare                                  # every pair of models in each fid table, Holm-corrected
  ganbench compare runs/lsgan/fashion-mnist runs/baseline/fashion-mnist
  ganbench compare A B --metric kid --rule best --protocol lenet-fashion-mnist
  ganbench compare --results runs.sqlite --format csv > comparison.csv

a model group is a run folder OUT/<model>/<dataset> whose seed<k> folders are its training seeds (or one source);
name it by its path or its last parts, as the leaderboard shows it. The values compared are exactly the per-seed
values a leaderboard row aggregates: one checkpoint per training seed, chosen by --rule, under one protocol.

what it reports, per pair (diff = mean A - mean B):
  Welch t        difference of means with its interval and p-value (unequal variances)
  permutation    exact over all relabellings of the seeds (C(6,3) = 20 for 3 seeds against 3, so p >= 0.1 there)
  P(A>B)         probability that a run of A beats a run of B, ties 1/2 (rliable), 95% stratified bootstrap
  Holm           p-values corrected over every tested pair of the table; ranks = 1 + models significantly better
  seeds needed   per model for a two-sided t test at --alpha with power 0.8 (exact, noncentral t)
  variance split training seeds against sampling, when checkpoints were scored under 2+ `ganbench eval --seed S`

refused (exit 2): two groups with no protocol in common, or whose --rule best checkpoints were chosen on
different references. A group with one seed gets no test, and the table says why.
"""


# CompareConfig's defaults and choices, written here so that `ganbench --help` does not import numpy and scipy
# (test_cli_compare checks that the two agree).
DEFAULTS = {"metric": "fid", "rule": "final", "test": "welch", "alpha": 0.05}
TESTS = ("welch", "permutation")


def add_parser(subparsers) -> None:
    from ganbench.results import DEFAULT_RESULTS_PATH
    from ganbench.results.leaderboard import RULES

    p = subparsers.add_parser(
        "compare", help="is model A really better than model B? tests over training seeds",
        description="Compare model groups in the results store over their training seeds: difference of means "
        "(Welch t), exact permutation test, probability of improvement, Holm-corrected ranks, the seeds needed to "
        "tell them apart, and the split of variance into training seeds and sampling.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
    )
    p.add_argument("groups", nargs="*", metavar="GROUP", help="two model groups (A B); none compares every pair")
    p.add_argument("--results", default=str(DEFAULT_RESULTS_PATH), metavar="PATH", help="results store (default: %(default)s)")
    p.add_argument("--metric", default=DEFAULTS["metric"], choices=tuple(METRICS), metavar="METRIC",
                   help=f"metric compared, one of {', '.join(METRICS)} (default: %(default)s)")
    p.add_argument("--rule", default=DEFAULTS["rule"], choices=RULES,
                   help="checkpoint per seed: its last, or its best on the selection reference (default: %(default)s)")
    p.add_argument("--protocol", metavar="ID|EXTRACTOR[,...]",
                   help="only these protocols: a protocol id (or its prefix) from a table header, or an extractor name")
    p.add_argument("--dataset", metavar="NAME[,NAME]", help="only runs trained on these datasets")
    p.add_argument("--test", default=DEFAULTS["test"], choices=TESTS,
                   help="the test behind verdicts and ranks (default: %(default)s; both are always shown)")
    p.add_argument("--alpha", type=float, default=DEFAULTS["alpha"], help="significance level (default: %(default)s)")
    p.add_argument("--select-metric", choices=tuple(METRICS), metavar="METRIC",
                   help="metric that picks the best checkpoint for --rule best (default: fid)")
    p.add_argument("--select-on", metavar="REFERENCE",
                   help="reference the best checkpoint is chosen on (default: DATASET:train:10000 of each run)")
    p.add_argument("--format", choices=FORMATS, default="table", help="output format (default: %(default)s)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ganbench.results import comparison
    from ganbench.results.report import ReportConfig, display_names, filter_results, load_results

    cfg = comparison.CompareConfig(groups=tuple(args.groups), metric=args.metric, rule=args.rule, alpha=args.alpha,
                                   test=args.test, select_metric=args.select_metric or "fid", select_on=args.select_on)
    frame = filter_results(load_results(args.results), ReportConfig(
        results=args.results, datasets=filter_names(args.dataset, "--dataset"), metrics=(cfg.metric,),
        protocols=filter_names(args.protocol, "--protocol"), select_metric=args.select_metric, select_on=cfg.select_on))
    found = comparison.build_comparisons(frame, cfg)
    names = display_names([c.table for c in found])
    if args.format == "csv":
        comparison.pairs_frame(found).to_csv(sys.stdout, index=False)
    elif args.format == "json":
        print(json.dumps(comparison.records(found), indent=1, allow_nan=False))
    elif args.format == "markdown":
        print(comparison.markdown(found, names))
    elif cfg.groups:
        print("\n\n".join(comparison.detail_text(c, names) for c in found))
    else:
        print(comparison.plain_text(found, names))
    return 0
