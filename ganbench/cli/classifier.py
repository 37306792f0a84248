"""`ganbench train classifier`: the small domain classifier behind the lenet-* extractors."""

from __future__ import annotations

import argparse

from ganbench.protocol import DATASETS

EPILOG = """\
examples:
  ganbench train classifier --dataset fashion-mnist          # into the user cache (lenet-fashion-mnist.pt)
  ganbench train classifier --dataset fashion-mnist --out ganbench/features/weights/lenet-fashion-mnist.pt
                                                             # the weights that ship with ganbench
  ganbench train classifier --dataset mnist --data-root ~/data/mnist   # cache lenet-mnist weights offline
  ganbench train classifier --dataset fashion-mnist --epochs 1 --max-train-images 512 --out /tmp/smoke.pt

outputs:
  OUT        plain dict of tensors + metadata (load with torch.load(..., weights_only=True));
             pass it to the lenet-<dataset> extractor as weights=
  OUT.json   sidecar: the command that reproduces OUT, test accuracy, sha256, seed, epochs, torch
             version, date, wall time. The same seed, torch version, device and thread count give a
             bit-identical OUT.
default OUT: $GANBENCH_CACHE/weights/lenet-<dataset>.pt ($XDG_CACHE_HOME or ~/.cache, then ganbench/weights),
             where the lenet-mnist extractor looks for its weights.
"""


def add_parser(kinds) -> None:
    """Register `train classifier` under `ganbench train`."""
    from ganbench.config import ClassifierConfig

    defaults = ClassifierConfig()
    p = kinds.add_parser(
        "classifier",
        help="the small CNN classifier behind the lenet-* feature extractors",
        description="Train the LeNet-style classifier (conv 5x5 16, conv 5x5 32, fc 256, fc 128 = features, fc 10) "
        "on a dataset's train split, report its test accuracy, and write its weights with a JSON sidecar.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    p.add_argument("--dataset", choices=DATASETS, default=defaults.dataset, help="training data (default: %(default)s)")
    p.add_argument("--data-root", metavar="DIR", help="a folder holding the dataset's IDX files (.gz or raw)")
    p.add_argument("--epochs", type=int, default=defaults.epochs, help="epochs to train (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="images per step (default: %(default)s)")
    p.add_argument("--lr", type=float, default=defaults.lr,
                   help="peak Adam learning rate of the one-cycle schedule (default: %(default)s)")
    p.add_argument("--seed", type=int, default=defaults.seed,
                   help="random seed: init, dropout, shuffling (default: %(default)s)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=defaults.device,
                   help="auto picks cuda when available (default: %(default)s)")
    p.add_argument("--out", metavar="FILE.pt",
                   help="weights file to write; FILE.json is written beside it (default: the user cache, see below)")
    p.add_argument("--max-train-images", type=int, metavar="N", help="train on the first N images only (smoke tests)")
    p.add_argument("--max-test-images", type=int, metavar="N",
                   help="measure accuracy on the first N test images only (smoke tests)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run_classifier)


def config_from_args(args):
    from ganbench.config import ClassifierConfig

    return ClassifierConfig(
        dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, lr=args.lr,
        max_train_images=args.max_train_images, max_test_images=args.max_test_images, device=args.device,
        out=args.out, data_root=args.data_root,
    )


def run_classifier(args) -> int:
    from ganbench.train.classifier import train_classifier

    cfg = config_from_args(args)  # validates before any data is loaded
    result = train_classifier(cfg, progress=not args.quiet)
    s = result.sidecar
    print(
        f"lenet-{cfg.dataset}: test accuracy {s['test_accuracy']:.4f} on {s['test_images']} test images "
        f"after {s['epochs']} epochs ({s['train_seconds']:.0f} s); wrote {result.path} (sha256 {s['sha256'][:12]}...) "
        f"and {cfg.sidecar_path.name}"
    )
    return 0
