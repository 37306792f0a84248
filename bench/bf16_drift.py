"""FID drift of `--precision bf16` against fp32: the same images through the same extractor, features in both precisions.

Rows, each FID computed from fp32 features and from bf16-autocast features of the same two image sets:
- lenet-fashion-mnist (shipped weights) on real Fashion-MNIST: N test images vs N training images (a small FID),
  and N training images vs a "generator-like" set: other training images blurred and with Gaussian noise (a large
  FID, the regime of early checkpoints);
- inception with random FID-Inception-shaped weights (real weights are not needed to see the rounding: the network,
  resize and layer sizes are those of the real one) on a handful of images: M test vs M training images.
Also printed: the largest relative feature error, |f_bf16 - f_fp32| / max|f_fp32| per set.

    python bench/bf16_drift.py [--n 2000] [--inception-images 8] [--threads 1] [--inception-weights PATH]

bf16 autocast runs on any CPU; on CPUs without native bf16 (no AVX512-BF16 / AMX) it is emulated and slower than
fp32, so this measures drift, not speed (bench/gpu.py measures speed).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ganbench.data import load_dataset
from ganbench.features.extract import extract_features
from ganbench.features.registry import build_extractor
from ganbench.metrics.fid import fid_from_features


def generator_like(images: torch.Tensor, seed: int) -> torch.Tensor:
    """Blurred (3x3 box) images with N(0, 20^2) pixel noise: what an early GAN checkpoint's samples look like to FID."""
    x = images.float()
    x = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    x = x + 20.0 * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    return x.round().clamp(0, 255).to(torch.uint8)


def features(name: str, precision: str, images: torch.Tensor, batch: int, **options):
    extractor = build_extractor(name, precision=precision, device="cpu", **options)
    started = time.perf_counter()
    out = extract_features(extractor, images, batch)
    return out.features.astype(np.float64), time.perf_counter() - started


def row(label: str, name: str, a: torch.Tensor, b: torch.Tensor, batch: int, **options) -> dict:
    fp32_a, t32a = features(name, "fp32", a, batch, **options)
    fp32_b, t32b = features(name, "fp32", b, batch, **options)
    bf16_a, t16a = features(name, "bf16", a, batch, **options)
    bf16_b, t16b = features(name, "bf16", b, batch, **options)
    fid32, fid16 = fid_from_features(fp32_a, fp32_b), fid_from_features(bf16_a, bf16_b)
    feature_error = max(np.abs(x - y).max() / np.abs(x).max() for x, y in ((fp32_a, bf16_a), (fp32_b, bf16_b)))
    return {"set": label, "extractor": name, "n": len(a), "fid_fp32": fid32, "fid_bf16": fid16,
            "abs": abs(fid16 - fid32), "rel": abs(fid16 - fid32) / abs(fid32), "feature": feature_error,
            "s_fp32": t32a + t32b, "s_bf16": t16a + t16b}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="images per set for lenet-fashion-mnist")
    parser.add_argument("--inception-images", type=int, default=8, help="images per set for inception")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    parser.add_argument("--inception-weights", type=Path, help="real FID Inception weights; default: random weights")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    test = load_dataset("fashion-mnist", "test").images
    train = load_dataset("fashion-mnist", "train").images
    n, m = args.n, args.inception_images
    rows = [
        row("test vs train", "lenet-fashion-mnist", test[:n], train[:n], 500),
        row("train vs blur+noise", "lenet-fashion-mnist", train[:n], generator_like(train[n : 2 * n], seed=0), 500),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.inception_weights
        if weights is None:
            from features_bench import write_random_weights  # bench/ is on sys.path when run as a script

            weights = write_random_weights(Path(tmp) / "random-inception.pth")
        label = "test vs train" + ("" if args.inception_weights else " (random weights)")
        rows.append(row(label, "inception", test[:m], train[:m], 16, weights=str(weights)))

    print(f"torch {torch.__version__}, CPU, {args.threads} thread(s); FID of the same image sets from fp32 and bf16 features")
    print(f"{'extractor':20} {'sets':30} {'n':>5} {'FID fp32':>11} {'FID bf16':>11} {'|drift|':>9} {'rel':>8} "
          f"{'max feat err':>12} {'s fp32':>7} {'s bf16':>7}")
    for r in rows:
        print(f"{r['extractor']:20} {r['set']:30} {r['n']:>5} {r['fid_fp32']:>11.4f} {r['fid_bf16']:>11.4f} "
              f"{r['abs']:>9.4f} {r['rel']:>8.2%} {r['feature']:>12.2e} {r['s_fp32']:>7.1f} {r['s_bf16']:>7.1f}")


if __name__ == "__main__":
    main()
