"""`ganbench reference`: extract (or find in the cache) the reference features of a dataset split."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ganbench.cli.options import add_extractor_flags, extractor_options, parse_extractors
from ganbench.config import check_writable_dir
from ganbench.errors import ConfigError
from ganbench.protocol import DATASETS, SPLITS

EPILOG = """\
examples:
  ganbench reference --dataset fashion-mnist --split test --extractor lenet-fashion-mnist
  ganbench reference --dataset fashion-mnist --split train --count 10000 --inception-weights pt_inception.pth
  ganbench reference --dataset fashion-mnist --split test --extractor lenet-fashion-mnist --stats-out fmnist_test.npz

Features are cached under --cache-dir keyed by a hash of the data, count, extractor, weights hash,
preprocessing and ganbench's metric-protocol version; a second call reads them back.
--stats-out writes mu and sigma (float64) in the pytorch-fid / TTUR .npz format.
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "reference", help="cache the reference features of a dataset split",
        description="Extract the reference features of a dataset split once and cache them.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
    )
    p.add_argument("--dataset", choices=DATASETS, required=True)
    p.add_argument("--split", choices=SPLITS, default="test", help="default: %(default)s")
    p.add_argument("--count", type=int, metavar="N", help="the first N images of the split (default: all)")
    p.add_argument("--data-root", metavar="DIR", help="a folder holding the dataset's IDX files")
    p.add_argument("--stats-out", metavar="FILE.npz", help="also write mu and sigma of the features")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_extractor_flags(p, multiple=True, metrics=False)
    p.set_defaults(run=run)


def run(args) -> int:
    from ganbench.atomic import atomic_write_bytes
    from ganbench.devices import resolve_device
    from ganbench.features.registry import build_extractor
    from ganbench.metrics import feature_statistics
    from ganbench.reference import reference_features

    if args.count is not None and args.count < 2:
        raise ConfigError(f"--count must be at least 2 (statistics need two samples), got {args.count}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    names = parse_extractors(args.extractor)
    if args.stats_out and len(names) > 1:
        raise ConfigError("--stats-out writes one extractor's statistics; pass a single --extractor")
    if args.stats_out:  # checked before the extraction, which can take minutes
        check_stats_out(Path(args.stats_out))
    device = str(resolve_device(args.device))
    for name in names:
        extractor = build_extractor(name, **extractor_options(name, args, device))
        features = reference_features(
            extractor, args.dataset, args.split, args.count, data_root=args.data_root, cache_dir=args.cache_dir,
            batch_size=args.batch_size, device=device, progress=not args.quiet,
        )
        protocol = ", ".join(f"{k}={v}" for k, v in features.protocol.items())
        print(f"{args.dataset}:{args.split} n={len(features)} dim={features.features.shape[1]} [{protocol}]")
        if args.stats_out:
            import numpy as np

            mu, sigma = feature_statistics(features.features)
            atomic_write_bytes(args.stats_out, lambda f: np.savez(f, mu=mu, sigma=sigma))  # noqa: B023 (called at once)
            print(f"ganbench: wrote mu and sigma to {args.stats_out}", file=sys.stderr)
    return 0


def check_stats_out(path: Path) -> None:
    """--stats-out must name a file in a folder we can write; a folder there is refused rather than replaced."""
    if path.is_dir():
        raise ConfigError(f"--stats-out {path} is a folder; pass a file path such as {path / 'stats.npz'}")
    check_writable_dir(path.parent, "--stats-out")
