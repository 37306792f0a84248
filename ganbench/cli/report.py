"""`ganbench report`: leaderboards, curves and an HTML page from the results store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ganbench.cli.options import filter_names
from ganbench.metrics.registry import METRICS

REPORT_FORMATS = ("table", "csv", "markdown")

EPILOG = """\
examples:
  ganbench report                                   # results/ganbench.sqlite -> reports/
  ganbench report --results runs.sqlite --out reports/ --format markdown
  ganbench report --dataset fashion-mnist --metric fid,kid --protocol lenet-fashion-mnist

writes into --out (built in a temporary folder, then moved into place, replacing the old --out as a whole):
  results.csv       every stored result, long format: one row per (source, protocol, metric) with value,
                    spread, status and every protocol column; its columns never depend on which metrics exist
  leaderboard.csv   one row per (protocol, checkpoint rule, model group): per metric mean, std over seeds,
                    95% t interval, rank (rows whose intervals overlap share a rank)
  leaderboard.md    the same as Markdown tables, each headed by its protocol and checkpoint rule
  <group>/          metric-versus-epoch curves (mean over seeds, min-max band, selected checkpoints marked)
                    and the latest sample grids
  index.html        one static page with all of the above
  .ganbench-report  the marker that makes the folder a report: its format version and the files above

--out is replaced only when it is new, empty, or a previous report whose marker lists every file in it
(reports written before the marker: the four files above and group folders of PNGs, nothing else).
Anything else is refused (exit 2), never deleted: a folder without the marker, a report holding a file
of yours (notes.txt), the current folder or one above it, a mount point, the folder of the results store.

checkpoint rules: 'final' is each seed's last evaluated checkpoint; 'best' is each seed's checkpoint with
the best --select-metric on the selection reference (default DATASET:train:10000, which `ganbench eval`
scores by default), reported with its numbers on the reporting reference (DATASET:test). When a group has
no selection results, the best checkpoint is chosen on the reported data and the table says so.
"""


def add_parser(subparsers) -> None:
    from ganbench.results.report import ReportConfig

    defaults = ReportConfig()
    p = subparsers.add_parser(
        "report", help="leaderboards, curves and an HTML page from the results store",
        description="Aggregate the results store into CSV and Markdown leaderboards (mean, std and 95% intervals "
        "over seeds, ranks that tie when intervals overlap), curves and index.html.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
    )
    p.add_argument("--results", default=defaults.results, metavar="PATH", help="results store (default: %(default)s)")
    p.add_argument("--out", default=defaults.out, metavar="DIR",
                   help="report folder, replaced as a whole, and only when it is new, empty or a previous report "
                   "(a .ganbench-report marker and only its files; see below) (default: %(default)s)")
    p.add_argument("--dataset", metavar="NAME[,NAME]", help="only runs trained on these datasets")
    p.add_argument("--metric", metavar="M[,M]", help=f"only these metrics, of {', '.join(METRICS)}")
    p.add_argument("--protocol", metavar="ID|EXTRACTOR[,...]",
                   help="only these protocols: a protocol id (or its prefix) from a table header, or an extractor name")
    p.add_argument("--select-metric", choices=tuple(METRICS),
                   help="metric that picks the best checkpoint (default: fid)")
    p.add_argument("--select-on", metavar="REFERENCE",
                   help="reference the best checkpoint is chosen on (default: DATASET:train:10000 of each run)")
    p.add_argument("--format", choices=REPORT_FORMATS, default="table",
                   help="what goes to stdout (default: %(default)s)")
    p.add_argument("--no-plots", action="store_true", help="skip the curves and sample grids (faster)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ganbench.results.report import ReportConfig, leaderboard_frame, markdown, plain_text, write_report

    cfg = ReportConfig(results=args.results, out=args.out, datasets=filter_names(args.dataset, "--dataset"),
                       metrics=filter_names(args.metric, "--metric"), protocols=filter_names(args.protocol, "--protocol"),
                       select_metric=args.select_metric, select_on=args.select_on, plots=not args.no_plots)
    out, tables, configs = write_report(cfg)
    if args.format == "csv":
        leaderboard_frame(tables, configs).to_csv(sys.stdout, index=False)
    elif args.format == "markdown":
        print(markdown(tables, configs))
    else:
        print(plain_text(tables, configs))
    files = sorted(p.name for p in Path(out).iterdir() if p.is_file() and not p.name.startswith("."))
    plural = "s" if len(tables) != 1 else ""
    print(f"ganbench: wrote {len(tables)} table{plural} to {out}/ ({', '.join(files)})", file=sys.stderr)
    return 0
