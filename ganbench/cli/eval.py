"""`ganbench eval`: every metric for every checkpoint (or image folder, .npz, user generator) into the results store."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys

from ganbench.cli import silence_stdout
from ganbench.cli.options import add_extractor_flags, parse_extractors
from ganbench.config import DISTRIBUTE, FORMATS, EvalConfig
from ganbench.errors import ConfigError
from ganbench.metrics.registry import METRICS

EPILOG = """\
examples:
  ganbench eval checkpoints/ --extractor lenet-fashion-mnist --num-samples 10000
  ganbench eval checkpoints/baseline/fashion-mnist/seed0/epoch_0100.pt --inception-weights pt_inception.pth
  ganbench eval samples/ --reference fashion-mnist:test --extractor lenet-fashion-mnist   # a folder of PNGs
  ganbench eval my_g.pt --generator mypkg.models:make_generator --reference fashion-mnist:test
  ganbench eval checkpoints/ --format json --quiet | jq .
  torchrun --nproc-per-node 4 -m ganbench eval checkpoints/ --extractor inception   # 4 GPUs share each checkpoint
  torchrun --nproc-per-node 4 -m ganbench eval checkpoints/ --distribute sources     # 4 ranks share the checkpoints

Results go to a SQLite store (--results), one row per (source, protocol, metric) with the protocol
(extractor, weights hash, preprocessing, sample counts, reference, seed) beside every number.
Sources already evaluated under the same protocol are skipped (--force recomputes them); an
interrupted sweep keeps every completed source and the next run does the rest. A source that fails
is reported and recorded as failed; the exit code is then 1.

default references: two, from the checkpoint's training dataset.
  DATASET:test          the reporting reference: held out from training, so a generator that memorises
                        its training images gains nothing; 10,000 images, as the default --num-samples.
  DATASET:train:10000   the selection reference: a fixed subset of the training split (seed 0), on which
                        `ganbench report` chooses each run's best checkpoint, so the number it publishes
                        (on the test split) is not the number the choice was made on.
--reference DATASET:SPLIT:N names such a seeded N-image subset of any split.

distributed (torchrun, one node or several; gloo on CPU, nccl with one GPU per local rank):
  --distribute samples  each source's samples are split across the ranks in whole batches, the features gathered
                        in order; one rank computes the metrics, writes the store and prints. The numbers equal
                        a single-process run's.
  --distribute sources  whole sources are dealt round-robin; each rank evaluates and stores its own.
The exit code is 1 on every rank if a source failed on any rank.
"""


def add_parser(subparsers) -> None:
    defaults = EvalConfig(paths=("x",))
    p = subparsers.add_parser(
        "eval", help="evaluate checkpoints, image folders, .npz files or your own generator",
        description="Evaluate every checkpoint under PATH (and image folders, .npz files, user generators) "
        "with one generation and one feature pass each, into the results store.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
    )
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="checkpoint files or folders (searched recursively), image folders, .npz")
    p.add_argument("--generator", metavar="MODULE:CALLABLE",
                   help="your generator: a callable returning (nn.Module, latent_dim); PATHs are then its state-dict "
                   "files. The module maps z ~ N(0, I), shape (B, latent_dim), to images in [-1, 1] (tanh)")
    p.add_argument("--reference", action="append", metavar="DATASET:SPLIT|FOLDER|NPZ",
                   help="what to compare with (repeatable; default: the checkpoint's dataset, DATASET:train:10000 for "
                   "selection and DATASET:test for reporting)")
    p.add_argument("--num-samples", type=int, default=defaults.num_samples,
                   help="generated images per source (default: %(default)s)")
    p.add_argument("--metrics", metavar="M[,M]",
                   help=f"subset of {', '.join(METRICS)} (default: all that apply to the extractor)")
    p.add_argument("--cmmd-estimator", choices=("unbiased", "biased"), default=defaults.cmmd_estimator,
                   help="CMMD's estimator: unbiased (the paper's U-statistic) or biased (the official code's "
                   "V-statistic) (default: %(default)s)")
    p.add_argument("--seed", type=int, default=defaults.seed, help="seed of the sampling noise (default: %(default)s)")
    p.add_argument("--bootstrap", type=int, default=0, metavar="K",
                   help="K bootstrap resamples for FID and PRDC intervals (default: off)")
    p.add_argument("--results", default=defaults.results, metavar="PATH", help="results store (default: %(default)s)")
    p.add_argument("--format", choices=FORMATS, default="table", help="what goes to stdout (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="recompute results that are already stored")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--data-root", metavar="DIR", help="a folder holding the reference dataset's IDX files")
    p.add_argument("--distribute", choices=DISTRIBUTE, default=defaults.distribute,
                   help="under torchrun: split every source's samples, or deal whole sources to the ranks "
                   "(default: %(default)s; ignored in a single process)")
    add_extractor_flags(p, multiple=True)
    p.set_defaults(run=run, batch_size=defaults.batch_size)


def config_from_args(args) -> EvalConfig:
    metrics = None if args.metrics is None else tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    if metrics == ():
        raise ConfigError(f"--metrics {args.metrics!r}: name at least one metric, e.g. fid,kid (leave --metrics out "
                          "for every metric that applies)")
    return EvalConfig(
        paths=tuple(args.paths), generator=args.generator, references=tuple(args.reference or ()),
        num_samples=args.num_samples, extractors=tuple(parse_extractors(args.extractor, metrics)),
        inception_weights=args.inception_weights, preprocessing=args.preprocessing, vgg16_weights=args.vgg16_weights,
        wavelet_size=args.wavelet_size, dinov2_weights=args.dinov2_weights, dinov2_preprocessing=args.dinov2_preprocessing,
        clip_weights=args.clip_weights, clip_preprocessing=args.clip_preprocessing, cmmd_estimator=args.cmmd_estimator,
        metrics=metrics,
        batch_size=args.batch_size, device=args.device, seed=args.seed, bootstrap=args.bootstrap, results=args.results,
        format=args.format, force=args.force, quiet=args.quiet, cache_dir=args.cache_dir, data_root=args.data_root,
        precision=args.precision, distribute=args.distribute,
    )


COLUMNS = ("source", "metric", "value", "std", "ci_low", "ci_high", "extractor", "preprocessing", "reference",
           "num_samples", "num_reference", "epoch", "seed", "status", "error")


def run(args) -> int:
    from ganbench.devices import resolve_device
    from ganbench.distributed import launch

    cfg = config_from_args(args)
    with launch(resolve_device(cfg.device)) as group:  # a no-op outside torchrun
        return _sweep(cfg, group)


def _sweep(cfg: EvalConfig, group) -> int:
    from ganbench.sweep import Sweep

    printed: list[dict] = []

    def write(text: str) -> None:
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError:  # the reader left (`| head`); the store is the product: every source is still scored
            silence_stdout()

    if cfg.format == "csv" and group.is_main:  # only the main rank prints results
        write(",".join(COLUMNS) + "\n")

    def emit(result: dict) -> None:
        if cfg.format == "table":
            printed.append(result)
        elif cfg.format == "csv":
            line = io.StringIO()
            csv.DictWriter(line, fieldnames=COLUMNS, lineterminator="\n").writerow(result)
            write(line.getvalue())
        else:
            write(json.dumps(result) + "\n")

    failed = Sweep(cfg, emit, group=group).run()
    if cfg.format == "table" and printed:
        print(_table(printed))
    return 1 if failed else 0


def _table(results: list[dict]) -> str:
    """The rows as a plain table; a '95% interval' column when some row has one (--bootstrap)."""
    intervals = any(r["ci_low"] is not None for r in results)
    ci_head = f" {'95% interval':>22}" if intervals else ""
    lines = [f"{'source':48} {'metric':16} {'value':>12} {'std':>10}{ci_head} {'reference':22} {'n':>6} status"]
    for r in results:
        value = "-" if r["value"] is None else f"{r['value']:.6g}"
        std = "" if r["std"] is None else f"{r['std']:.3g}"
        ci = "" if r["ci_low"] is None else f"[{r['ci_low']:.4g}, {r['ci_high']:.4g}]"
        ci = f" {ci:>22}" if intervals else ""
        source = r["source"] if len(r["source"]) <= 48 else "..." + r["source"][-45:]
        reference, n = r["reference"], r["num_samples"]
        lines.append(f"{source:48} {r['metric']:16} {value:>12} {std:>10}{ci} {reference:22} {n:>6} {r['status']}")
    return "\n".join(lines)
