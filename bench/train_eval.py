"""What `ganbench train --eval-every N` costs per evaluation, against `ganbench eval` of the saved checkpoint.

One epoch of the baseline is trained on the first --train-images Fashion-MNIST images (the weights only need to be a
GAN's), then the same epoch is scored three ways, each into a fresh results store:
  - in training: `EpochScorer`, as `--eval-every` calls it after an epoch (references resolved once per process,
    before the first epoch; their features come from the cache);
  - `ganbench eval` of the saved checkpoint, in a new process, with the same protocol (the peer a user would run
    between epochs instead);
  - one training epoch of the full 60,000 images on this machine (from the run's history), to put the cost in scale.
Both scorings give the same rows (asserted); the table gives seconds and their ratio.

    python bench/train_eval.py [--data-root /usr/share/datasets/fashion-mnist] [--num-samples 10000] [--threads 2]
"""

from __future__ import annotations

import argparse
import csv
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ganbench.cli import main
from ganbench.config import EvalConfig
from ganbench.samples import load_baseline_generator
from ganbench.train import checkpoint as ckpt
from ganbench.train_eval import EvalEvery


def stored(results: Path) -> dict:
    with sqlite3.connect(results) as db:
        return {(r[0], r[1], r[2]): r[3] for r in db.execute("SELECT source_sha256, protocol_key, metric, value FROM results")}


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--num-samples", type=int, default=10_000)
    parser.add_argument("--train-images", type=int, default=6400, help="images of the one training epoch")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--checkpoint", type=Path,
                        help="score this Fashion-MNIST checkpoint instead of training one epoch (one epoch on a few "
                        "thousand images gives a collapsed generator, which is not the typical case)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="ganbench-train-eval-"))
    out = work / "runs"
    if args.checkpoint is None:
        assert main(["train", "baseline", "--dataset", "fashion-mnist", "--data-root", args.data_root, "--out",
                     str(out), "--epochs", "1", "--max-train-images", str(args.train_images), "--device", "cpu",
                     "--quiet"]) == 0
        path = out / "baseline" / "fashion-mnist" / "seed0" / "epoch_0001.pt"
        history = list(csv.DictReader(open(path.parent / "history.csv")))
        epoch_s = float(history[0]["seconds"]) * 60_000 / args.train_images
    else:
        path, epoch_s = args.checkpoint, None

    def plan(results: Path) -> EvalEvery:
        return EvalEvery(1, EvalConfig(paths=(str(out),), num_samples=args.num_samples,
                                       extractors=("lenet-fashion-mnist",), device="cpu", results=str(results),
                                       data_root=args.data_root, quiet=True))

    started = time.perf_counter()
    scorer = plan(work / "warm.sqlite").start(torch.device("cpu"), "fashion-mnist")
    start_s = time.perf_counter() - started
    generator, latent_dim, _ = load_baseline_generator(path)
    state = ckpt.load_checkpoint(path)
    in_training = []
    for repeat in range(args.repeats):
        scorer.cfg = plan(work / f"in{repeat}.sqlite").eval
        started = time.perf_counter()
        scorer(generator.train(), latent_dim, state, path)
        in_training.append(time.perf_counter() - started)

    cli = []
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    for repeat in range(args.repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ganbench", "eval", str(path), "--extractor", "lenet-fashion-mnist",
                        "--num-samples", str(args.num_samples), "--data-root", args.data_root, "--results",
                        str(work / f"cli{repeat}.sqlite"), "--device", "cpu", "--quiet", "--format", "json"],
                       check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cli.append(time.perf_counter() - started)

    # in_training's rows are keyed by the checkpoint dict's bytes, which a loaded-and-resaved dict need not reproduce;
    # compare by protocol and metric
    ours = {k[1:]: v for k, v in stored(work / "in0.sqlite").items()}
    theirs = {k[1:]: v for k, v in stored(work / "cli0.sqlite").items()}
    assert ours == theirs, "in-training scoring and ganbench eval disagree"

    best_in, best_cli = min(in_training), min(cli)
    print(f"\nbench/train_eval.py: {path.name} of {path.parent}, lenet-fashion-mnist, N={args.num_samples}, "
          "both default references, "
          f"{len(ours)} values equal, {args.threads} CPU thread(s)\n")
    print(f"| {'what':58} | {'seconds':>8} | {'vs eval':>8} |")
    print(f"|{'-' * 60}|{'-' * 10}|{'-' * 10}|")
    print(f"| {'--eval-every: one evaluation in the training process':58} | {best_in:8.2f} | {best_in / best_cli:7.2f}x |")
    print(f"| {'ganbench eval of the saved checkpoint (new process)':58} | {best_cli:8.2f} | {1:7.2f}x |")
    print(f"| {'--eval-every: once per process (extractor, references)':58} | {start_s:8.2f} | {'':>8} |")
    if epoch_s is not None:
        print(f"| {'one training epoch, 60,000 images (from history.csv)':58} | {epoch_s:8.2f} | {'':>8} |")
    print(f"\nall runs: in training {', '.join(f'{t:.2f}' for t in in_training)} s; "
          f"ganbench eval {', '.join(f'{t:.2f}' for t in cli)} s; work folder {work}")


if __name__ == "__main__":
    main_bench()
