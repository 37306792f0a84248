"""A sweep of checkpoints against one reference: `ganbench eval` vs torch-fidelity `calculate_metrics` + prdc per checkpoint.

The question a user asks after training: IS, FID, KID, precision, recall, density and coverage for every checkpoint
of a run against one reference set. Without ganbench that is, per checkpoint: generate N samples, call
torch-fidelity's `calculate_metrics(isc, fid, kid, prc)` (which extracts the generated AND the reference set with
its Inception, `cache=False`), then extract both sets once more with torch-fidelity's FeatureExtractorInceptionV3
(built once per sweep) for `prdc.compute_prdc`. ganbench extracts the reference once for the whole sweep and each
checkpoint's samples once, and computes every metric from that pass.

Both sides run as subprocesses timed end to end (Python start-up, imports, weight loading, checkpoint loading,
generation, extraction, metrics; ganbench also hashes checkpoints and weights and writes its results store), in the
same run, with the same OMP_NUM_THREADS / MKL_NUM_THREADS (--threads), the same samples (seed 0, the same generation
batch), the same extractor weights file (random FID-Inception weights by default: timing does not depend on the
values), the same batch size and the same KID subset size (N). ganbench starts with a cold cache (a fresh cache
dir and results store), so its time includes extracting the reference. torch-fidelity keeps its defaults
otherwise: its DataLoader uses min(4, 2 x cpu_count) worker processes per input per call.

Without --checkpoints, a tiny baseline run is trained first (not timed):
`ganbench train baseline --dataset fashion-mnist --epochs E --checkpoint-every 1 --max-train-images 2048`.

    python bench/eval_sweep.py [--checkpoints DIR] [--num-samples 50] [--reference-size 50] [--threads 1]
                               [--batch 64] [--epochs 10] [--weights PATH] [--order ganbench-first|peer-first]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from features_bench import TorchFidelityImages as _Images  # noqa: E402
from features_bench import write_random_weights  # noqa: E402

METRICS = ("fid", "is", "kid", "precision", "recall", "density", "coverage")
AGREEMENT = ("fid", "precision", "density")
CHECKPOINT_GLOB = "epoch_[0-9][0-9][0-9][0-9].pt"  # what `ganbench eval DIR` finds


# -- the peer: what a user without ganbench runs, in its own process ----------------------------------------------


def peer_sweep(spec: dict) -> dict:
    """torch-fidelity calculate_metrics(isc, fid, kid, prc) + prdc per checkpoint; values and seconds per checkpoint."""
    import prdc
    import torch_fidelity
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    from ganbench.samples import generate, load_baseline_generator

    weights, n, batch = spec["weights"], spec["num_samples"], spec["batch"]
    with np.load(spec["reference"]) as npz:
        real = torch.from_numpy(npz[npz.files[0]])[:, None]  # (R, 1, 28, 28) uint8
    extractor = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=weights)
    extractor.eval()

    def features(images: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return torch.cat([extractor(b)[0] for b in _Images(images).images.split(batch)]).numpy()

    out: dict = {"values": {}, "seconds": {}}
    for path in spec["checkpoints"]:
        started = time.perf_counter()
        module, latent_dim, _ = load_baseline_generator(Path(path))
        fake = generate(module, latent_dim, n, spec["seed"], batch)  # ganbench eval's samples: same seed, same batches
        values = torch_fidelity.calculate_metrics(
            input1=_Images(fake), input2=_Images(real), cuda=False, isc=True, fid=True, kid=True, prc=True,
            kid_subset_size=n, feature_extractor="inception-v3-compat", feature_extractor_weights_path=weights,
            verbose=False, cache=False, batch_size=batch,
        )
        dc = prdc.compute_prdc(features(real), features(fake), nearest_k=5)
        out["seconds"][Path(path).name] = time.perf_counter() - started
        out["values"][Path(path).name] = {
            "fid": values["frechet_inception_distance"], "is": values["inception_score_mean"],
            "kid": values["kernel_inception_distance_mean"], "precision": values["precision"], "recall": values["recall"],
            "density": float(dc["density"]), "coverage": float(dc["coverage"]),
        }
    return out


# -- the driver --------------------------------------------------------------------------------------------------


def _env(threads: int) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}


def _timed(command: list[str], threads: int) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, env=_env(threads), capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return seconds, done.stdout


def train_checkpoints(root: Path, epochs: int, threads: int) -> Path:
    command = [sys.executable, "-m", "ganbench", "train", "baseline", "--dataset", "fashion-mnist", "--epochs", str(epochs),
               "--checkpoint-every", "1", "--max-train-images", "2048", "--out", str(root), "--quiet", "--device", "cpu"]
    seconds, _ = _timed(command, threads)
    print(f"(trained {epochs} epochs of baseline on 2048 Fashion-MNIST images in {seconds:.1f} s, not timed below)",
          file=sys.stderr)
    return root / "baseline" / "fashion-mnist" / "seed0"


def run_ganbench(ckpt_dir: Path, ref: Path, weights: Path, tmp: Path, args) -> tuple[float, dict]:
    command = [
        sys.executable, "-m", "ganbench", "eval", str(ckpt_dir), "--extractor", "inception", "--inception-weights",
        str(weights), "--reference", str(ref), "--num-samples", str(args.num_samples), "--results", str(tmp / "r.sqlite"),
        "--cache-dir", str(tmp / "cache"), "--quiet", "--device", "cpu", "--batch-size", str(args.batch),
        "--metrics", ",".join(METRICS), "--format", "json",
    ]
    seconds, stdout = _timed(command, args.threads)
    values: dict = {}
    for line in stdout.splitlines():
        row = json.loads(line)
        if row["status"] != "ok":
            raise SystemExit(f"ganbench eval: {row['source']} {row['metric']}: {row['status']} {row['error']}")
        values.setdefault(Path(row["source"]).name, {})[row["metric"]] = row["value"]
    return seconds, values


def run_peer(checkpoints: list[Path], ref: Path, weights: Path, tmp: Path, args) -> tuple[float, dict]:
    spec = {"checkpoints": [str(p) for p in checkpoints], "reference": str(ref), "weights": str(weights),
            "num_samples": args.num_samples, "batch": args.batch, "seed": 0}
    spec_path, out_path = tmp / "peer.json", tmp / "peer-out.json"
    spec_path.write_text(json.dumps(spec))
    seconds, _ = _timed([sys.executable, str(Path(__file__).resolve()), "--peer-worker", str(spec_path), str(out_path)],
                        args.threads)
    return seconds, json.loads(out_path.read_text())


def run(args) -> list[str]:
    from ganbench.data import load_dataset

    with tempfile.TemporaryDirectory(prefix="eval-sweep-") as name:
        tmp = Path(name)
        ckpt_dir = args.checkpoints or train_checkpoints(tmp / "run", args.epochs, args.threads)
        checkpoints = sorted(p for p in Path(ckpt_dir).rglob(CHECKPOINT_GLOB) if p.is_file())
        if not checkpoints:
            raise SystemExit(f"no {CHECKPOINT_GLOB} files under {ckpt_dir}")
        test = load_dataset("fashion-mnist", "test", log=False).images
        if args.reference_size > len(test):
            raise SystemExit(f"--reference-size {args.reference_size}: the test split holds {len(test)} images")
        ref = tmp / "ref.npz"
        np.savez(ref, images=test[: args.reference_size, 0].numpy())  # uint8 (R, 28, 28)
        weights = args.weights or write_random_weights(tmp / "random-inception.pth")

        sides = {"ganbench": lambda: run_ganbench(ckpt_dir, ref, weights, tmp / "ganbench", args),
                 "peer": lambda: run_peer(checkpoints, ref, weights, tmp, args)}
        (tmp / "ganbench").mkdir()
        measured = {}
        for side in (("ganbench", "peer") if args.order == "ganbench-first" else ("peer", "ganbench")):
            measured[side] = sides[side]()
    ours_s, ours_v = measured["ganbench"]
    peer_s, peer_out = measured["peer"]
    peer_v, peer_each = peer_out["values"], peer_out["seconds"]
    k = len(checkpoints)
    in_loop = sum(peer_each.values())

    lines = [
        f"sweep of {k} checkpoints vs one reference: {args.num_samples} generated vs {args.reference_size} reference "
        f"28x28 images per checkpoint, 7 metrics, Inception (tf1) on CPU, OMP_NUM_THREADS={args.threads}, "
        f"batch {args.batch}, torch {torch.__version__}; both sides timed end to end in a subprocess, {args.order}",
        "",
        f"| {'pipeline':66} | seconds | s / checkpoint | speed-up |",
        f"| {'-' * 66} | ------: | -------------: | -------: |",
        f"| {'torch-fidelity calculate_metrics(isc,fid,kid,prc) + prdc, per ckpt':66} | {peer_s:7.1f} | {peer_s / k:14.2f} | "
        f"{1.0:7.2f}x |",
        f"| {'ganbench eval (cold cache: reference extracted once)':66} | {ours_s:7.1f} | {ours_s / k:14.2f} | "
        f"{peer_s / ours_s:7.2f}x |",
        "",
        f"peer: {in_loop:.1f} s inside its checkpoint loop ({min(peer_each.values()):.2f}-{max(peer_each.values()):.2f} s "
        f"per checkpoint), {peer_s - in_loop:.1f} s start-up (imports, reference, extractor); per checkpoint it extracts "
        f"{2 * (args.num_samples + args.reference_size)} images, ganbench {args.num_samples} (+{args.reference_size} once)",
        f"target >= 1.8x: {'met' if peer_s / ours_s >= 1.8 else 'NOT met'} ({peer_s / ours_s:.2f}x)",
    ]
    for name in ([checkpoints[-1].name] if args.agree_all is False else [p.name for p in checkpoints]):
        lines += ["", f"agreement, {name}:", f"| {'metric':9} | {'torch-fidelity / prdc':>22} | {'ganbench':>22} | rel. diff |",
                  f"| {'-' * 9} | {'-' * 21}: | {'-' * 21}: | --------: |"]
        for metric in (METRICS if args.agree_all else AGREEMENT):
            theirs, mine = peer_v[name][metric], ours_v[name][metric]
            rel = abs(mine - theirs) / max(abs(theirs), 1e-12)
            lines.append(f"| {metric:9} | {theirs:22.10g} | {mine:22.10g} | {rel:9.1e} |")
    return lines


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--peer-worker":
        result = peer_sweep(json.loads(Path(sys.argv[2]).read_text()))
        Path(sys.argv[3]).write_text(json.dumps(result))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=Path, metavar="DIR", help="a run's checkpoint folder; default: train one")
    parser.add_argument("--num-samples", type=int, default=50, help="generated images per checkpoint (default: %(default)s)")
    parser.add_argument("--reference-size", type=int, default=50,
                        help="the first R Fashion-MNIST test images are the reference (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="OMP/MKL threads of both sides (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=64, help="generation and extraction batch size (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs to train without --checkpoints (default: %(default)s)")
    parser.add_argument("--weights", type=Path, help="real FID Inception weights; default: a random weights file")
    parser.add_argument("--order", choices=("ganbench-first", "peer-first"), default="ganbench-first")
    parser.add_argument("--agree-all", action="store_true", help="agreement of all 7 metrics for every checkpoint")
    args = parser.parse_args()
    if args.num_samples < 2 or args.reference_size < 6:
        parser.error("need --num-samples >= 2 and --reference-size >= 6 (k-NN metrics with k=5)")
    print("\n".join(run(args)))


if __name__ == "__main__":
    main()
