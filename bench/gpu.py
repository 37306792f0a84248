"""The GPU fast path in one run: training s/epoch, Inception extraction images/s, and an end-to-end checkpoint sweep.

Three measurements on one CUDA device, each with its peer measured in the same run:
1. training: seconds per Fashion-MNIST epoch (60,000 images, batch 64) of `ganbench train baseline`, plain vs
   `--compile` vs `--cuda-graphs`; epoch 1 of the compiled run includes compilation, so the steady epochs are
   reported apart; then the step alone: plain at batch 64 and at larger batches (a what-if: larger batches change
   the maths), and the same step captured once as a CUDA graph and replayed;
2. extraction: Inception (tf1) images/s on 28x28 grayscale images, ganbench in each `--precision` (fp32: TF32
   off; tf32; bf16) vs torch-fidelity's FeatureExtractorInceptionV3 on the same device and batches, run with
   PyTorch's defaults (float32 tensors, cuDNN convolutions in TF32 on Ampere and newer GPUs);
3. sweep: every checkpoint of the plain training run against one reference, 7 metrics: `ganbench eval` in each
   precision (cold cache) vs torch-fidelity `calculate_metrics(isc, fid, kid, prc, cuda=True)` + prdc per
   checkpoint, with the last checkpoint's FID in each precision against torch-fidelity's and ganbench fp32's.

Without --weights a random FID-Inception-shaped weights file is used (speed does not depend on the values).
`--device cpu` runs every code path on tiny sizes (a smoke test of this script; not a measurement; no graphs).
Without Fashion-MNIST on the machine (--data-root, /usr/share/datasets/fashion-mnist, the ganbench cache) random
IDX files of the same size stand in; the timings do not depend on the pixels either.

    python bench/gpu.py [--epochs 3] [--images 10000] [--batch 500] [--num-samples 10000] [--reference-size 10000]
                        [--rounds 3] [--weights PATH] [--data-root DIR] [--device cuda|cpu]
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

from ganbench.protocol import precisions_on

sys.path.insert(0, str(Path(__file__).resolve().parent))
from features_bench import TorchFidelityImages, write_random_weights  # noqa: E402

METRICS = ("fid", "is", "kid", "precision", "recall", "density", "coverage")
PRECISIONS = {device: precisions_on(device) for device in ("cuda", "cpu")}
# --device cpu: every code path on sizes that run in a few minutes on 2 cores (--compile's compilation dominates).
SMOKE_SIZES = {"epochs": 2, "train_images": 1024, "steps": 20, "images": 8, "batch": 10, "num_samples": 20,
               "reference_size": 20, "rounds": 1}
# torch-fidelity runs with PyTorch's defaults, under which cuDNN convolutions use TF32 on Ampere and newer GPUs.
PEER_EXTRACTOR = "torch-fidelity FeatureExtractorInceptionV3 float32 (PyTorch defaults)"


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


def train(root: str | None, out: Path, epochs: int, compile: bool, device: str, max_images: int | None,
          cuda_graphs: bool = False) -> tuple[float, float]:
    """(seconds of epoch 1, median seconds of the later epochs) of a fresh run; epoch timings exclude checkpoint writes."""
    from ganbench.config import BaselineConfig
    from ganbench.train.loop import train_baseline

    cfg = BaselineConfig(dataset="fashion-mnist", epochs=epochs, device=device, out=str(out), data_root=root,
                         checkpoint_every=1, compile=compile, max_train_images=max_images, cuda_graphs=cuda_graphs)
    run_dir = train_baseline(cfg, progress=False)
    seconds = [float(line.split(",")[6]) for line in (run_dir / "history.csv").read_text().splitlines()[1:]]
    return seconds[0], statistics.median(seconds[1:]) if len(seconds) > 1 else float("nan")


def step_rates(flat: torch.Tensor, device: str, steps: int, batches: tuple[int, ...]) -> dict[str, float]:
    """Training images/s of the trainer's step (plain, per batch size) and of the same step as one CUDA graph.

    The step is the loop's: D on the real and detached fake batch in one pass, fused Adam on D, G's
    non-saturating loss through D with D's weights frozen, fused Adam on G. The graph variant captures all of
    it (noise, dropout masks and Adam included, with capturable Adam state on the device) once and replays it
    per batch after copying the batch's indices into a static buffer: one launch instead of ~100.
    Larger batches change the maths (fewer, larger steps per epoch), so they are a what-if, not the spec.
    """
    from torch import nn

    from ganbench.train.models import make_discriminator, make_generator

    def build(capturable: bool):
        torch.manual_seed(0)
        G, D = make_generator().to(device), make_discriminator().to(device)
        opts = [torch.optim.Adam(m.parameters(), lr=2e-4, fused=True, capturable=capturable) for m in (G, D)]
        return G, D, *opts

    bce = nn.BCELoss()

    def step(G, D, opt_g, opt_d, idx: torch.Tensor) -> None:
        real = flat[idx]
        m = real.shape[0]
        fake = G(torch.randn(m, 100, device=device))
        d_out = D(torch.cat([real, fake.detach()]))
        d_loss = bce(d_out[:m], torch.ones(m, 1, device=device)) + bce(d_out[m:], torch.zeros(m, 1, device=device))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        D.requires_grad_(False)
        g_loss = bce(D(fake), torch.ones(m, 1, device=device))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        D.requires_grad_(True)

    def timed(run_one, batch: int) -> float:
        order = torch.randint(0, flat.shape[0], (steps + 5, batch), device=device)
        for i in range(5):  # warm-up
            run_one(order[i])
        synchronize(device)
        started = time.perf_counter()
        for i in range(5, steps + 5):
            run_one(order[i])
        synchronize(device)
        return steps * batch / (time.perf_counter() - started)

    rates = {}
    for batch in batches:
        nets = build(capturable=False)
        rates[f"plain step, batch {batch}"] = timed(lambda idx, nets=nets: step(*nets, idx), batch)
    if device == "cuda":
        batch = batches[0]
        G, D, opt_g, opt_d = build(capturable=True)
        static_idx = torch.randint(0, flat.shape[0], (batch,), device=device)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # capture needs warmed-up kernels and allocated Adam state
            for _ in range(3):
                step(G, D, opt_g, opt_d, static_idx)
        torch.cuda.current_stream().wait_stream(side)
        opt_g.zero_grad(set_to_none=True)
        opt_d.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step(G, D, opt_g, opt_d, static_idx)

        def replay(idx: torch.Tensor) -> None:
            static_idx.copy_(idx)
            graph.replay()

        rates[f"whole step as one CUDA graph, batch {batch}"] = timed(replay, batch)
    return rates


# -- 2. extraction -----------------------------------------------------------------------------------------------


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def extraction_rates(images: torch.Tensor, weights: Path, batch: int, rounds: int, device: str) -> dict[str, float]:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    from ganbench.features.extract import extract_features
    from ganbench.features.registry import build_extractor

    peer = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                       feature_extractor_weights_path=str(weights)).to(device).eval()

    @torch.inference_mode()
    def torch_fidelity_fp32(x: torch.Tensor) -> None:
        for chunk in x.split(batch):
            peer(chunk.to(device).expand(-1, 3, -1, -1))
        synchronize(device)

    variants = {PEER_EXTRACTOR: torch_fidelity_fp32}
    for precision in PRECISIONS[device]:
        extractor = build_extractor("inception", weights=str(weights), device=device, precision=precision)
        variants[f"ganbench inception {precision} (channels_last)"] = (
            lambda x, e=extractor: extract_features(e, x, batch, device))  # returns host arrays: synchronised
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


def peer_sweep(checkpoints: list[Path], real: torch.Tensor, weights: Path, n: int, batch: int, device: str) -> tuple[float, dict]:
    import prdc
    import torch_fidelity
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    from ganbench.samples import generate, load_baseline_generator

    started = time.perf_counter()
    extractor = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                            feature_extractor_weights_path=str(weights)).to(device).eval()

    def features(images: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return torch.cat([extractor(b.to(device))[0].cpu() for b in TorchFidelityImages(images).images.split(batch)]).numpy()

    values = {}
    for path in checkpoints:
        module, latent_dim, _ = load_baseline_generator(path)
        fake = generate(module, latent_dim, n, 0, batch, device)  # ganbench eval's samples: same seed and batches
        out = torch_fidelity.calculate_metrics(
            input1=TorchFidelityImages(fake), input2=TorchFidelityImages(real), cuda=device == "cuda",
            isc=True, fid=True, kid=True, prc=True,
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
                     "--reference", str(reference), "--num-samples", str(args.num_samples), "--device", args.device,
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
    parser.add_argument("--train-images", type=int, help="train on the first N images only (default: all 60,000)")
    parser.add_argument("--steps", type=int, default=500, help="timed steps per training what-if (default: %(default)s)")
    parser.add_argument("--images", type=int, default=10_000, help="images for the extraction rate (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=500, help="generation and extraction batch (default: %(default)s)")
    parser.add_argument("--num-samples", type=int, default=10_000, help="generated images per checkpoint (default: %(default)s)")
    parser.add_argument("--reference-size", type=int, default=10_000, help="reference images (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="extraction rounds, median reported (default: %(default)s)")
    parser.add_argument("--weights", type=Path, help="real FID Inception weights; default: a random weights file")
    parser.add_argument("--data-root", help="a folder holding Fashion-MNIST's IDX files")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: a smoke test of this script on tiny sizes, not a measurement (default: %(default)s)")
    parser.add_argument("--sweep-only", action="store_true",
                        help="only the sweep rows (section 3), after the plain training run that makes its checkpoints")
    parser.add_argument("--precisions", help="comma-separated precisions of ganbench's sweep (default: all the device has)")
    args = parser.parse_args()
    if args.device == "cpu":  # the sizes the user did not set shrink to a smoke test's
        for name, value in SMOKE_SIZES.items():
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
    if args.device == "cuda":
        require_cuda()
        torch.backends.cudnn.benchmark = True
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first compiled epoch includes compilation")

    from ganbench.data import load_dataset
    from ganbench.train.models import images_to_model

    with tempfile.TemporaryDirectory(prefix="ganbench-gpu-") as name:
        tmp = Path(name)
        root = data_root(args, tmp)
        weights = args.weights or write_random_weights(tmp / "random-inception.pth")
        plain = train(root, tmp / "plain", args.epochs, False, args.device, args.train_images)
        train_set = load_dataset("fashion-mnist", "train", root, log=False)
        n_train = len(train_set.head(args.train_images))
        test = load_dataset("fashion-mnist", "test", root, log=False).images
        if not args.sweep_only:
            compiled = train(root, tmp / "compiled", args.epochs, True, args.device, args.train_images)
            graphed = (train(root, tmp / "graphs", args.epochs, False, args.device, args.train_images, cuda_graphs=True)
                       if args.device == "cuda" else (float("nan"), float("nan")))
            steps = step_rates(images_to_model(train_set.images).to(args.device), args.device, args.steps, (64, 256, 1024))
            rates = extraction_rates(test[: args.images], weights, args.batch, args.rounds, args.device)

        run_dir = tmp / "plain" / "baseline" / "fashion-mnist" / "seed0"
        checkpoints = sorted(run_dir.glob("epoch_[0-9][0-9][0-9][0-9].pt"))
        real = test[: args.reference_size]
        reference = tmp / "reference.npz"
        np.savez(reference, images=real[:, 0].numpy())
        peer_s, peer_v = peer_sweep(checkpoints, real, weights, args.num_samples, args.batch, args.device)
        precisions = args.precisions.split(",") if args.precisions else PRECISIONS[args.device]
        ours = {p: ganbench_sweep(run_dir, reference, weights, tmp, args, p) for p in precisions}

    k, last = len(checkpoints), checkpoints[-1].name
    device = torch.cuda.get_device_name() if args.device == "cuda" else "CPU (smoke test, not a measurement)"
    print(f"{device}, torch {torch.__version__}, batch {args.batch}, {n_train} training images")
    print(f"| {'measurement':76} | {'value':>12} | vs peer |")
    print(f"| {'-' * 76} | {'-' * 11}: | ------: |")
    if not args.sweep_only:
        print_training_and_extraction(args, plain, compiled, graphed, steps, rates, n_train)
    sweep = f"sweep of {k} ckpts, {args.num_samples} vs {args.reference_size} images, 7 metrics, s"
    print(f"| {sweep + ': torch-fidelity + prdc':76} | {peer_s:12.1f} | {1.0:6.2f}x |")
    for precision, (seconds, _) in ours.items():
        print(f"| {sweep + f': ganbench eval {precision}':76} | {seconds:12.1f} | {peer_s / seconds:6.2f}x |")
    fid_peer, fid32 = peer_v[last]["fid"], ours[precisions[0]][1][last]["fid"]
    print(f"\nFID of {last}: torch-fidelity {fid_peer:.6g}")
    for precision, (_, values) in ours.items():
        fid = values[last]["fid"]
        print(f"  ganbench {precision}: {fid:.6g} (rel. diff vs torch-fidelity {abs(fid - fid_peer) / abs(fid_peer):.1e}, "
              f"vs ganbench {precisions[0]} {abs(fid - fid32) / abs(fid32):.1e})")


def print_training_and_extraction(args, plain, compiled, graphed, steps, rates, n_train) -> None:
    peer_rate = rates[PEER_EXTRACTOR]
    print(f"| {'train s/epoch, plain (steady epochs)':76} | {plain[1]:12.2f} | {1.0:6.2f}x |")
    print(f"| {'train s/epoch, --compile (steady epochs)':76} | {compiled[1]:12.2f} | {plain[1] / compiled[1]:6.2f}x |")
    if args.device == "cuda":
        print(f"| {'train s/epoch, --cuda-graphs (steady epochs)':76} | {graphed[1]:12.2f} | {plain[1] / graphed[1]:6.2f}x |")
    print(f"| {'train s, epoch 1: plain / --compile (incl. compilation)':76} | {plain[0]:5.1f} /{compiled[0]:5.1f} | {'':>7} |")
    base_rate = steps["plain step, batch 64"]
    for name, rate in steps.items():
        label = f"what-if images/s, {name} (100 epochs: {100 * n_train / rate:.0f} s)"
        print(f"| {label:76} | {rate:12.0f} | {rate / base_rate:6.2f}x |")
    for name, rate in rates.items():
        print(f"| {'extract images/s, ' + name:76} | {rate:12.0f} | {rate / peer_rate:6.2f}x |")


if __name__ == "__main__":
    main()
