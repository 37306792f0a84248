"""FID drift of reduced-precision features (`--precision bf16`, and `tf32` on CUDA) against fp32 on the same images.

Rows, each FID computed from fp32 features and from reduced-precision features of the same two image sets:
- lenet-fashion-mnist (shipped weights) on real Fashion-MNIST: N test images vs N training images (a small FID),
  and N training images vs a "generator-like" set: other training images blurred and with Gaussian noise (a large
  FID, the regime of early checkpoints);
- inception with random FID-Inception-shaped weights (real weights are not needed to see the rounding: the network,
  resize and layer sizes are those of the real one) on M test vs M training images (few on a CPU, thousands on a GPU).
Also printed: the largest relative feature error, |f_low - f_fp32| / max|f_fp32| per set, and extraction seconds.

    python bench/bf16_drift.py [--n 2000] [--inception-images 8] [--threads 1] [--inception-weights PATH]
                               [--device cpu|cuda] [--data-root DIR]

bf16 autocast runs on any CPU; on CPUs without native bf16 (no AVX512-BF16 / AMX) it is emulated and slower than
fp32, so on a CPU this measures drift, not speed (bench/gpu.py measures speed).
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
from ganbench.protocol import precisions_on

REDUCED = {device: tuple(p for p in precisions_on(device) if p != "fp32") for device in ("cpu", "cuda")}


def generator_like(images: torch.Tensor, seed: int) -> torch.Tensor:
    """Blurred (3x3 box) images with N(0, 20^2) pixel noise: what an early GAN checkpoint's samples look like to FID."""
    x = images.float()
    x = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    x = x + 20.0 * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    return x.round().clamp(0, 255).to(torch.uint8)


def features(name: str, precision: str, images: torch.Tensor, batch: int, device: str, **options):
    extractor = build_extractor(name, precision=precision, device=device, **options)
    extract_features(extractor, images[:batch], batch, device)  # warm-up (cuDNN picks kernels on first use)
    started = time.perf_counter()
    out = extract_features(extractor, images, batch, device)
    return out.features.astype(np.float64), time.perf_counter() - started


def rows(label: str, name: str, a: torch.Tensor, b: torch.Tensor, batch: int, device: str, **options) -> list[dict]:
    """One row per reduced precision: the FID of the sets from its features vs from fp32 features."""
    fp32_a, t32a = features(name, "fp32", a, batch, device, **options)
    fp32_b, t32b = features(name, "fp32", b, batch, device, **options)
    fid32 = fid_from_features(fp32_a, fp32_b)
    out = []
    for precision in REDUCED[device]:
        low_a, ta = features(name, precision, a, batch, device, **options)
        low_b, tb = features(name, precision, b, batch, device, **options)
        fid = fid_from_features(low_a, low_b)
        error = max(np.abs(x - y).max() / np.abs(x).max() for x, y in ((fp32_a, low_a), (fp32_b, low_b)))
        out.append({"set": label, "extractor": name, "precision": precision, "n": len(a), "fid_fp32": fid32,
                    "fid": fid, "abs": abs(fid - fid32), "rel": abs(fid - fid32) / abs(fid32), "feature": error,
                    "s_fp32": t32a + t32b, "s": ta + tb})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="images per set for lenet-fashion-mnist")
    parser.add_argument("--inception-images", type=int, default=8, help="images per set for inception")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    parser.add_argument("--inception-weights", type=Path, help="real FID Inception weights; default: random weights")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cuda adds the tf32 precision (default: %(default)s)")
    parser.add_argument("--data-root", help="a folder holding Fashion-MNIST's IDX files")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    test = load_dataset("fashion-mnist", "test", args.data_root).images
    train = load_dataset("fashion-mnist", "train", args.data_root).images
    n, m, device = args.n, args.inception_images, args.device
    table = [
        *rows("test vs train", "lenet-fashion-mnist", test[:n], train[:n], 500, device),
        *rows("train vs blur+noise", "lenet-fashion-mnist", train[:n], generator_like(train[n : 2 * n], seed=0), 500, device),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.inception_weights
        if weights is None:
            from features_bench import write_random_weights  # bench/ is on sys.path when run as a script

            weights = write_random_weights(Path(tmp) / "random-inception.pth")
        label = "test vs train" + ("" if args.inception_weights else " (random weights)")
        table += rows(label, "inception", test[:m], train[:m], min(m, 250), device, weights=str(weights))

    where = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {args.threads} thread(s)"
    print(f"torch {torch.__version__}, {where}; FID of the same image sets from fp32 and reduced-precision features")
    print(f"{'extractor':20} {'sets':30} {'n':>5} {'prec':>5} {'FID fp32':>11} {'FID':>11} {'|drift|':>9} {'rel':>8} "
          f"{'max feat err':>12} {'s fp32':>7} {'s':>7}")
    for r in table:
        print(f"{r['extractor']:20} {r['set']:30} {r['n']:>5} {r['precision']:>5} {r['fid_fp32']:>11.4f} {r['fid']:>11.4f} "
              f"{r['abs']:>9.4f} {r['rel']:>8.2%} {r['feature']:>12.2e} {r['s_fp32']:>7.3f} {r['s']:>7.3f}")


if __name__ == "__main__":
    main()
