"""Memorization metrics at full size: 10,000 "generated" images against the 60,000-image Fashion-MNIST training split.

The test split (10,000 images) stands in for the generated set: the same size and distribution as a good generator's
samples, and the answer is known (C_T near 0, AuthPct about 0.6). C_T holds the last 10,000 training images out.
Each (space, metric) runs in its own subprocess, so its time and added memory (the peak resident size, polled every
10 ms, minus the resident size after loading its inputs) are its own.

    python bench/memorization_bench.py [--spaces lenet,pixel] [--metrics authenticity,data_copying_ct,mifid,nn]
        [--threads 2] [--device cpu|cuda] [--data-root /usr/share/datasets/fashion-mnist]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

METRICS = ("authenticity", "data_copying_ct", "mifid", "nn")


def prepare(space: str, data_root: str, folder: Path) -> tuple[Path, Path]:
    """train / 'generated' (the test split) matrices as .npy: LeNet features or flattened [0, 1] pixels."""
    import numpy as np

    from ganbench.data import load_dataset

    train = load_dataset("fashion-mnist", "train", data_root, log=False)
    test = load_dataset("fashion-mnist", "test", data_root, log=False)
    if space == "pixel":
        arrays = [x.images.flatten(1).float().numpy() / 255 for x in (train, test)]
    else:
        from ganbench.features.extract import extract_features
        from ganbench.features.registry import build_extractor

        extractor = build_extractor("lenet-fashion-mnist")
        arrays = [extract_features(extractor, x.images, batch_size=500).features for x in (train, test)]
    paths = [folder / f"{space}_{n}.npy" for n in ("train", "generated")]
    for path, array in zip(paths, arrays, strict=True):
        np.save(path, array.astype(np.float32))
    return tuple(paths)


def child(metric: str, paths: list[str], device: str, threads: int) -> None:
    import numpy as np
    import torch

    from ganbench.metrics import memorization

    torch.set_num_threads(threads)
    train, fake = (torch.as_tensor(np.load(p)).to(device) for p in paths)
    before, peak, done = _rss_mib(), [0.0], threading.Event()

    def watch() -> None:  # ru_maxrss would include the imports' own peak: poll the resident size instead
        while not done.wait(0.01):
            peak[0] = max(peak[0], _rss_mib())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    start = time.perf_counter()
    if metric == "authenticity":
        value = memorization.authenticity(train, fake)
    elif metric == "data_copying_ct":
        # C_T needs held-out data distinct from the generated set: the last 10,000 training images are held out
        value = memorization.data_copying_ct(train[:50_000], train[50_000:], fake)["data_copying_ct"]
    elif metric == "mifid":
        value = memorization.mifid(train, fake)["mifid"]
    else:
        value = float(memorization.nearest_neighbours(fake, train)[0].median())
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    done.set()
    watcher.join()
    gpu = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    print(json.dumps({"value": value, "seconds": seconds, "added_mib": max(peak[0], _rss_mib()) - before, "gpu_mib": gpu}))


def _rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spaces", default="lenet,pixel")
    parser.add_argument("--metrics", default=",".join(METRICS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-root", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1:], args.device, args.threads)
        return
    print("| space | metric | train | generated | device, threads | value | seconds | added RSS MiB | GPU MiB |")
    print("| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for space in args.spaces.split(","):
            paths = prepare(space, args.data_root, Path(tmp))
            for metric in args.metrics.split(","):
                command = [sys.executable, __file__, "--device", args.device, "--threads", str(args.threads),
                           "--child", metric, *map(str, paths)]
                done = subprocess.run(command, capture_output=True, text=True, check=True)
                r = json.loads(done.stdout.strip().splitlines()[-1])
                gpu = "" if r["gpu_mib"] is None else f"{r['gpu_mib']:.0f}"
                train = "50,000 + 10,000 held out" if metric == "data_copying_ct" else "60,000"
                print(f"| {space} | {metric} | {train} | 10,000 | {args.device}, {args.threads} | {r['value']:.4g} | "
                      f"{r['seconds']:.1f} | {r['added_mib']:.0f} | {gpu} |", flush=True)


if __name__ == "__main__":
    main()
