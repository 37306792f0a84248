"""New feature spaces and metrics: throughput against their reference implementations, and the cost of the metrics.

Sections (`--sections`, default all; each a function in SECTIONS returning table rows):
- vgg16: images/s of ganbench's vgg16 extractor vs torch-fidelity's FeatureExtractorVGG16 (prc), same random weights
  file, same uint8 images, alternating within each round (median over rounds);
- wavelet: images/s of ganbench's wavelet extractor vs pytorchfwd's `forward_wavelet_packet_transform` (if installed),
  and FWD from features (ganbench) vs pytorchfwd's statistics + per-packet distances;
- cmmd: seconds for CMMD of N x N embeddings (dimension 768, CLIP ViT-L/14's);
- fd_infinity: seconds for FD-infinity of N x N features (dimension 2048, Inception's), against one FID.

    python bench/extractors_bench.py [--images 16] [--size 28] [--rounds 3] [--n 10000] [--threads 1] [--sections a,b]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _rate(fn, images: torch.Tensor) -> float:
    started = time.perf_counter()
    with torch.no_grad():
        fn(images)
    return len(images) / (time.perf_counter() - started)


def _seconds(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _images(args, channels: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (args.images, channels, args.size, args.size), dtype=torch.uint8, generator=generator)


def _median_rates(variants: dict, images: torch.Tensor, rounds: int) -> dict[str, float]:
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):  # alternating, so load on the machine hits every variant alike
        for name, fn in variants.items():
            rates[name].append(_rate(fn, images))
    return {name: statistics.median(values) for name, values in rates.items()}


def vgg16_section(args) -> list[tuple[str, str, str]]:
    import torchvision
    from torch_fidelity.feature_extractor_vgg16 import FeatureExtractorVGG16

    from ganbench.features.vgg16 import build_vgg16

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "random-vgg16.pth"
        torch.save(torchvision.models.vgg16(weights=None).state_dict(), path)  # speed does not depend on the values
        ours = build_vgg16(path)
        peer = FeatureExtractorVGG16("vgg16", ["fc2_relu"], feature_extractor_weights_path=str(path))
    images = _images(args, 3)
    rates = _median_rates({"torch-fidelity": peer, "ganbench": ours}, images, args.rounds)
    base = rates["torch-fidelity"]
    return [(f"vgg16 images/s, {name} ({args.size}px RGB -> 224)", f"{rate:.2f}", f"{rate / base:.2f}x")
            for name, rate in rates.items()]


def wavelet_section(args) -> list[tuple[str, str, str]]:
    from ganbench.features.wavelet import PACKETS, build_wavelet
    from ganbench.metrics.fwd import frechet_wavelet_distance

    ours = build_wavelet(args.size)
    gray = _images(args, 1)
    variants = {"ganbench": ours}
    try:
        dtype = torch.get_default_dtype()
        from pytorchfwd.freq_math import forward_wavelet_packet_transform

        torch.set_default_dtype(dtype)  # importing pytorchfwd makes float64 the default
        variants = {"pytorchfwd": lambda x: forward_wavelet_packet_transform(x.expand(-1, 3, -1, -1).float() / 255,
                                                                             "Haar", 4, False), **variants}
    except ImportError:
        pass
    rates = _median_rates(variants, gray, args.rounds)
    base = rates.get("pytorchfwd", rates["ganbench"])
    rows = [(f"wavelet images/s, {name} ({args.size}px gray)", f"{rate:.0f}", f"{rate / base:.2f}x")
            for name, rate in rates.items()]
    real, fake = (ours(_images(args, 3)).features for _ in range(2))
    seconds = _seconds(lambda: frechet_wavelet_distance(real, fake, PACKETS))
    rows.append((f"FWD from features, {len(real)} vs {len(fake)} ({ours.feature_dim}-d), s", f"{seconds:.2f}", ""))
    return rows


def cmmd_section(args) -> list[tuple[str, str, str]]:
    from ganbench.metrics.cmmd import cmmd_from_features

    rng = np.random.default_rng(0)
    x, y = (rng.normal(size=(args.n, 768)).astype(np.float32) for _ in range(2))
    seconds = _seconds(lambda: cmmd_from_features(x, y))
    return [(f"CMMD (unbiased), {args.n} x {args.n}, 768-d, s", f"{seconds:.2f}", "")]


def fd_infinity_section(args) -> list[tuple[str, str, str]]:
    from ganbench.metrics.fd_infinity import fd_infinity_from_features
    from ganbench.metrics.fid import fid_from_features

    rng = np.random.default_rng(0)
    x, y = (rng.normal(size=(args.n, 2048)).astype(np.float32) for _ in range(2))
    fid = _seconds(lambda: fid_from_features(x, y))
    fdi = _seconds(lambda: fd_infinity_from_features(x, y, min_n=min(5000, args.n // 2)))
    return [(f"FID, {args.n} x {args.n}, 2048-d, s", f"{fid:.2f}", "1.00x"),
            (f"FD-infinity (15 points), {args.n} x {args.n}, 2048-d, s", f"{fdi:.2f}", f"{fdi / fid:.1f}x")]


# name -> function(args) returning (measurement, value, vs peer) rows; other helpers add their sections here
SECTIONS = {
    "vgg16": vgg16_section,
    "wavelet": wavelet_section,
    "cmmd": cmmd_section,
    "fd_infinity": fd_infinity_section,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16, help="images per extractor pass")
    parser.add_argument("--size", type=int, default=28, help="image side")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=10_000, help="samples per set for the metric costs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"some of {', '.join(SECTIONS)}")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.sections.split(","):
        rows += SECTIONS[name](args)
    print(f"torch {torch.__version__}, {args.threads} thread(s)\n")
    print("| measurement | value | vs peer |\n| --- | ---: | ---: |")
    for measurement, value, ratio in rows:
        print(f"| {measurement} | {value} | {ratio} |")


if __name__ == "__main__":
    main()
