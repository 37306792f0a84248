"""Inception feature throughput (images/s): ganbench's extractor vs torch-fidelity's FeatureExtractorInceptionV3.

All variants run the same network on the same uint8 images in one process, alternating within each round so that
load on the machine affects them alike; the table shows the median over rounds. The peer is torch-fidelity's class
called directly on batches (grayscale repeated to RGB, which it requires). Also measured: the pytorch-fid protocol,
channels_last weights, and one pass over all images instead of batches. Without --weights, a randomly initialised
weights file is written (throughput does not depend on the weight values).

    python bench/features_bench.py [--images 64] [--size 28] [--channels 1] [--batch 32] [--rounds 3] [--threads N]
                                   [--weights PATH]

On cores shared with other busy processes, compare --threads 1 with the default: OpenMP threads that wait for a
descheduled sibling at every op can make the default several times slower.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from ganbench.features.inception import build_inception


class TorchFidelityImages(torch.utils.data.Dataset):
    """uint8 CHW tensors, the input torch-fidelity takes from a Dataset (grayscale repeated to RGB)."""

    def __init__(self, images: torch.Tensor):
        self.images = images.repeat(1, 3, 1, 1) if images.shape[1] == 1 else images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def write_random_weights(path: Path, seed: int = 0) -> Path:
    """FID-Inception-shaped state dict (torchvision's Inception v3 names, 1008 classes) with He-scaled random values."""
    import torchvision

    generator = torch.Generator().manual_seed(seed)
    model = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2 / module.weight[0].numel()) ** 0.5)
    torch.save(model.state_dict(), path)
    return path


def time_call(fn, images: torch.Tensor) -> float:
    started = time.perf_counter()
    fn(images)
    return len(images) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=28, help="image height and width")
    parser.add_argument("--channels", type=int, default=1, choices=(1, 3))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--weights", type=Path, help="real FID Inception weights; default: a random weights file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, args.channels, args.size, args.size), dtype=torch.uint8, generator=generator)
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights or write_random_weights(Path(tmp) / "random-inception.pth")
        peer = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(weights)
        )
        tf1 = build_inception(weights, batch_size=args.batch)
        pytorch_fid = build_inception(weights, preprocessing="pytorch-fid", batch_size=args.batch)
        tf1_channels_last = build_inception(weights, batch_size=args.batch, channels_last=True)
        tf1_one_pass = build_inception(weights, batch_size=None)

    @torch.inference_mode()
    def torch_fidelity_batches(x: torch.Tensor) -> None:
        for chunk in x.split(args.batch):
            peer(chunk.expand(-1, 3, -1, -1))

    variants = {
        f"torch-fidelity FeatureExtractorInceptionV3, batch {args.batch}": torch_fidelity_batches,
        f"ganbench inception tf1, batch {args.batch}": tf1,
        f"ganbench inception pytorch-fid, batch {args.batch}": pytorch_fid,
        f"ganbench inception tf1, channels_last, batch {args.batch}": tf1_channels_last,
        f"ganbench inception tf1, one pass of {args.images}": tf1_one_pass,
    }
    for fn in variants.values():  # warm-up: oneDNN builds its kernels on the first call per shape
        fn(images[: min(args.batch, 4)])
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            rates[name].append(time_call(fn, images))

    peer_rate = statistics.median(rates[next(iter(variants))])
    print(f"{args.images} images {args.channels}x{args.size}x{args.size} uint8, CPU threads {torch.get_num_threads()}, "
          f"torch {torch.__version__}, median of {args.rounds} rounds")  # fmt: skip
    print(f"| {'variant':<58} | images/s | vs torch-fidelity | rounds (images/s) |")
    print(f"| {'-' * 58} | -------: | ----------------: | ----------------- |")
    for name, values in rates.items():
        median = statistics.median(values)
        rounds = ", ".join(f"{value:.2f}" for value in values)
        print(f"| {name:<58} | {median:8.2f} | {median / peer_rate:16.2f}x | {rounds} |")


if __name__ == "__main__":
    main()
