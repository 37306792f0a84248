"""The GPU fast path in one run: training s/epoch, Inception extraction images/s, and an end-to-end checkpoint sweep.

Three measurements on one CUDA device, each with its peer measured in the same run:
1. training: seconds per Fashion-MNIST epoch (60,000 images, batch 64) of `ganbench train baseline`, plain vs
   `--compile`; epoch 1 of the compiled run includes compilation, so the steady epochs are reported apart;
2. extraction: Inception (tf1) images/s on 28x28 grayscale images, ganbench fp32 and bf16 (`--precision`) vs
   torch-fidelity's FeatureExtractorInceptionV3 in fp32 on the same device and batches;
3. sweep: every checkpoint of the plain training run against one reference, 7 metrics: `ganbench eval` (fp32
   and bf16, cold cache) vs torch-fidelity `calculate_metrics(isc, fid, kid, prc, cuda=True)` + prdc per
   checkpoint, in this process after a warm-up, with the FID agreement of fp32 and the drift of bf16.

Without --weights a random FID-Inception-shaped weights file is used (speed does not depend on the values).
Without Fashion-MNIST on the machine (--data-root, /usr/share/datasets/fashion-mnist, the ganbench cache) random
IDX files of the same size stand in; the timings do not depend on the pixels either.

    python bench/gpu.py [--epochs 3] [--images 10000] [--batch 500] [--num-samples 10000] [--reference-size 10000]
                        [--rounds 3] [--weights PATH] [--data-root DIR]
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

METRICS = ("fid", "is", "kid", "precision", "recall", "density", "coverage")


def require_cuda() -> None:
    if not torch.cuda.is_available():
        raise SystemExit(
            "bench/gpu.py measures the GPU fast path and needs a CUDA device, but torch.cuda.is_available() is False "
            f"here (torch {torch.__version__}). Run it on a machine with an NVIDIA GPU; for CPU numbers see "
            "bench/train_throughput.py, bench/features_bench.py and bench/eval_sweep.py."
        )


# -- data --------------------------------------------------------------------------------------------------------


def data_root(args, tmp: Path) -> str | None:
    """--data-root or the installed Fashion-MNIST; else random IDX files of the real sizes (timing only)."""
    from ganbench.data import load_dataset
    from ganbench.errors import DataUnavailableError

    try:
        load_dataset("fashion-mnist", "train", args.data_root, log=False)
        return args.data_root
    except DataUnavailableError:
        root = tmp / "random-fashion-mnist"
        root.mkdir()
        rng = np.random.default_rng(0)
        for prefix, n in (("train", 60_000), ("t10k", 10_000)):
            _write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
            _write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n, dtype=np.uint8))
        print("(no Fashion-MNIST here: random images of the same sizes stand in)", file=sys.stderr)
        return str(root)


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.tobytes(), compresslevel=1))


# -- 1. training -------------------------------------------------------------------------------------------------


def train(root: str | None, out: Path, epochs: int, compile: bool) -> tuple[float, float]:
    """(seconds of epoch 1, median seconds of the later epochs) of a fresh run; epoch timings exclude checkpoint writes."""
    from ganbench.config import BaselineConfig
    from ganbench.train.loop import train_baseline

    cfg = BaselineConfig(dataset="fashion-mnist", epochs=epochs, device="cuda", out=str(out), data_root=root,
                         checkpoint_every=1, compile=compile)
    run_dir = train_baseline(cfg, progress=False)
    seconds = [float(line.split(",")[6]) for line in (run_dir / "history.csv").read_text().splitlines()[1:]]
    return seconds[0], statistics.median(seconds[1:]) if len(seconds) > 1 else float("nan")


# -- 2. extraction -----------------------------------------------------------------------------------------------


def extraction_rates(images: torch.Tensor, weights: Path, batch: int, rounds: int) -> dict[str, float]:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    from ganbench.features.extract import extract_features
    from ganbench.features.registry import build_extractor

    peer = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                       feature_extractor_weights_path=str(weights)).cuda().eval()

    @torch.inference_mode()
    def torch_fidelity_fp32(x: torch.Tensor) -> None:
        for chunk in x.split(batch):
            peer(chunk.cuda().expand(-1, 3, -1, -1))
        torch.cuda.synchronize()

    variants = {"torch-fidelity FeatureExtractorInceptionV3 fp32": torch_fidelity_fp32}
    for precision in ("fp32", "bf16"):
        extractor = build_extractor("inception", weights=str(weights), device="cuda", precision=precision)
        variants[f"ganbench inception {precision} (channels_last)"] = (
            lambda x, e=extractor: extract_features(e, x, batch, "cuda"))  # returns host arrays: synchronised
    for fn in variants.values():  # warm-up: cuDNN picks its kernels on the first call per shape
        fn(images[: 2 * batch])
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):  # alternate, so clocks and other load affect every variant alike
        for name, fn in variants.items():
            started = time.perf_counter()
            fn(images)
            rates[name].append(len(images) / (time.perf_counter() - started))
    return {name: statistics.median(values) for name, values in rates.items()}


# -- 3. the sweep ------------------------------------------------------------------------------------------------


class _Images(torch.utils.data.Dataset):
    """uint8 CHW tensors, grayscale repeated to RGB: the input torch-fidelity takes from a Dataset."""

    def __init__(self, images: torch.Tensor):
        self.images = images.repeat(1, 3, 1, 1)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def peer_sweep(checkpoints: list[Path], real: torch.Tensor, weights: Path, n: int, batch: int) -> tuple[float, dict]:
    import prdc
    import torch_fidelity
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    from ganbench.samples import generate, load_baseline_generator

    started = time.perf_counter()
    extractor = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                            feature_extractor_weights_path=str(weights)).cuda().eval()

    def features(images: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return torch.cat([extractor(b.cuda())[0].cpu() for b in _Images(images).images.split(batch)]).numpy()

    values = {}
    for path in checkpoints:
        module, latent_dim, _ = load_baseline_generator(path)
        fake = generate(module, latent_dim, n, 0, batch, "cuda")  # ganbench eval's samples: same seed and batches
        out = torch_fidelity.calculate_metrics(
            input1=_Images(fake), input2=_Images(real), cuda=True, isc=True, fid=True, kid=True, prc=True,
            kid_subset_size=min(1000, n, len(real)), feature_extractor="inception-v3-compat",
            feature_extractor_weights_path=str(weights), verbose=False, cache=False, batch_size=batch,
        )
        dc = prdc.compute_prdc(features(real), features(fake), nearest_k=5)
        values[path.name] = {"fid": out["frechet_inception_distance"], "density": float(dc["density"])}
    return time.perf_counter() - started, values


def ganbench_sweep(run_dir: Path, reference: Path, weights: Path, tmp: Path, args, precision: str) -> tuple[float, dict]:
    import contextlib
    import io
    import json

    from ganbench.cli import main

    stdout = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(stdout):
        code = main(["eval", str(run_dir), "--extractor", "inception", "--inception-weights", str(weights),
                     "--reference", str(reference), "--num-samples", str(args.num_samples), "--device", "cuda",
                     "--batch-size", str(args.batch), "--precision", precision, "--metrics", ",".join(METRICS),
                     "--results", str(tmp / f"{precision}.sqlite"), "--cache-dir", str(tmp / f"cache-{precision}"),
                     "--quiet", "--format", "json"])
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"ganbench eval --precision {precision} failed (exit {code})")
    values: dict = {}
    for line in stdout.getvalue().splitlines():
        row = json.loads(line)
        values.setdefault(Path(row["source"]).name, {})[row["metric"]] = row["value"]
    return seconds, values


# -- the table ---------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="training epochs per variant, >= 2 (default: %(default)s)")
    parser.add_argument("--images", type=int, default=10_000, help="images for the extraction rate (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=500, help="generation and extraction batch (default: %(default)s)")
    parser.add_argument("--num-samples", type=int, default=10_000, help="generated images per checkpoint (default: %(default)s)")
    parser.add_argument("--reference-size", type=int, default=10_000, help="reference images (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="extraction rounds, median reported (default: %(default)s)")
    parser.add_argument("--weights", type=Path, help="real FID Inception weights; default: a random weights file")
    parser.add_argument("--data-root", help="a folder holding Fashion-MNIST's IDX files")
    args = parser.parse_args()
    require_cuda()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first compiled epoch includes compilation")
    torch.backends.cudnn.benchmark = True

    from features_bench import write_random_weights

    from ganbench.data import load_dataset

    with tempfile.TemporaryDirectory(prefix="ganbench-gpu-") as name:
        tmp = Path(name)
        root = data_root(args, tmp)
        weights = args.weights or write_random_weights(tmp / "random-inception.pth")
        plain = train(root, tmp / "plain", args.epochs, compile=False)
        compiled = train(root, tmp / "compiled", args.epochs, compile=True)

        test = load_dataset("fashion-mnist", "test", root, log=False).images
        rates = extraction_rates(test[: args.images], weights, args.batch, args.rounds)

        run_dir = tmp / "plain" / "baseline" / "fashion-mnist" / "seed0"
        checkpoints = sorted(run_dir.glob("epoch_[0-9][0-9][0-9][0-9].pt"))
        real = test[: args.reference_size]
        reference = tmp / "reference.npz"
        np.savez(reference, images=real[:, 0].numpy())
        peer_s, peer_v = peer_sweep(checkpoints, real, weights, args.num_samples, args.batch)
        ours = {p: ganbench_sweep(run_dir, reference, weights, tmp, args, p) for p in ("fp32", "bf16")}

    k, last = len(checkpoints), checkpoints[-1].name
    peer_rate = rates["torch-fidelity FeatureExtractorInceptionV3 fp32"]
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, batch {args.batch}")
    print(f"| {'measurement':64} | {'value':>12} | vs peer |")
    print(f"| {'-' * 64} | {'-' * 11}: | ------: |")
    print(f"| {'train s/epoch, plain (steady epochs)':64} | {plain[1]:12.2f} | {1.0:6.2f}x |")
    print(f"| {'train s/epoch, --compile (steady epochs)':64} | {compiled[1]:12.2f} | {plain[1] / compiled[1]:6.2f}x |")
    print(f"| {'train s, epoch 1: plain / --compile (incl. compilation)':64} | {plain[0]:5.1f} /{compiled[0]:5.1f} | {'':>7} |")
    for name, rate in rates.items():
        print(f"| {'extract images/s, ' + name:64} | {rate:12.0f} | {rate / peer_rate:6.2f}x |")
    sweep = f"sweep of {k} ckpts, {args.num_samples} vs {args.reference_size} images, 7 metrics, s"
    print(f"| {sweep + ': torch-fidelity + prdc fp32':64} | {peer_s:12.1f} | {1.0:6.2f}x |")
    for precision, (seconds, _) in ours.items():
        print(f"| {sweep + f': ganbench eval {precision}':64} | {seconds:12.1f} | {peer_s / seconds:6.2f}x |")
    fid_peer, fid32, fid16 = peer_v[last]["fid"], ours["fp32"][1][last]["fid"], ours["bf16"][1][last]["fid"]
    print(f"\nFID of {last}: torch-fidelity {fid_peer:.6g}, ganbench fp32 {fid32:.6g} "
          f"(rel. diff {abs(fid32 - fid_peer) / abs(fid_peer):.1e}), ganbench bf16 {fid16:.6g} "
          f"(drift vs fp32 {abs(fid16 - fid32) / abs(fid32):.2%})")


if __name__ == "__main__":
    main()
