"""Metric maths vs the reference implementations, measured in the same run.

Sections (each a function returning table rows; add more to SECTIONS):
  frechet  ganbench `frechet_distance` vs pytorch-fid `calculate_frechet_distance` on D-dim statistics
  prdc     ganbench `prdc` vs `prdc.compute_prdc` (nearest_k=5) on N x D float32 features: seconds and
           the peak resident memory the call adds, each measurement in its own subprocess
  concentrated  the same on the k-NN metrics' hardest input: iid Gaussian vectors (fake set scaled by 0.9),
           whose distances all lie within a few percent of each other, so the float32 bound leaves the most
           pairs to decide exactly (10,000 x 2048 by default)
  checkpoint  every metric of one checkpoint (`metrics_from_features`, 10,000 vs 10,000 LeNet-sized
           features, D=128) against another checkout of ganbench (--baseline, e.g. a worktree of the
           previous commit) run the same way in a subprocess: seconds per metric group, values compared
  inception  Inception feature throughput vs torch-fidelity on the same images (bench/features_bench.py)
  one-call   all seven metrics from one ganbench call vs torch-fidelity (isc+fid+kid+prc) + prdc
             (bench/one_call_bench.py)

Ours and the peer alternate round by round, so load from other jobs on the machine hits both alike;
medians are reported.

    python bench/metrics_bench.py [--sections frechet,prdc,concentrated,checkpoint,inception,one-call]
        [--prdc-sizes 5000,10000,20000] [--rounds 3] [--baseline PATH] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np

FEATURE_SEED = 0


def synthetic_features(n: int, dim: int, seed: int, spread: float = 1.0, shift: float = 0.0) -> np.ndarray:
    """Inception-like float32 features: non-negative, correlated, low intrinsic dimension (ReLU of a
    32-d latent through a fixed random map, plus noise)."""
    mapping = np.random.default_rng(FEATURE_SEED).standard_normal((32, dim)) / np.sqrt(32)
    rng = np.random.default_rng(seed)
    latent = spread * rng.standard_normal((n, 32)) + shift
    return np.maximum(latent @ mapping + 0.3 * rng.standard_normal((n, dim)), 0).astype(np.float32)


def _median(values: list[float]) -> float:
    return statistics.median(values)


# ---- Frechet distance -------------------------------------------------------------------------


def bench_frechet(dim: int = 2048, samples: int = 5000, rounds: int = 3) -> list[dict]:
    from pytorch_fid.fid_score import calculate_frechet_distance

    from ganbench.metrics.fid import feature_statistics, frechet_distance

    stats1 = feature_statistics(synthetic_features(samples, dim, seed=1))
    stats2 = feature_statistics(synthetic_features(samples, dim, seed=2, spread=1.1, shift=0.05))
    ours_s, peer_s = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        ours = frechet_distance(*stats1, *stats2)
        ours_s.append(time.perf_counter() - started)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # its sqrtm(disp=False)
            started = time.perf_counter()
            peer = float(calculate_frechet_distance(*stats1, *stats2))
            peer_s.append(time.perf_counter() - started)
    return [
        {
            "case": f"Frechet distance, D={dim} (stats of {samples} samples)",
            "ours_s": _median(ours_s),
            "peer_s": _median(peer_s),
            "speedup": _median(peer_s) / _median(ours_s),
            "ours_mb": None,
            "peer_mb": None,
            "check": f"value {ours:.6f} vs {peer:.6f}, rel diff {abs(ours - peer) / abs(peer):.1e}",
        }
    ]


# ---- PRDC ---------------------------------------------------------------------------------------


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


class PeakMemory:
    """Peak resident memory added while inside the block, in MB (VmHWM reset via clear_refs, with a
    5 ms RSS sampler as fallback where the reset is not permitted)."""

    def __enter__(self):
        self.before = _status_kb("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.sampler = None
        except OSError:
            self.peak, self.stop = self.before, threading.Event()
            self.sampler = threading.Thread(target=self._sample, daemon=True)
            self.sampler.start()
        return self

    def _sample(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, _status_kb("VmRSS"))
            time.sleep(0.005)

    def __exit__(self, *exc):
        if self.sampler is None:
            self.peak = _status_kb("VmHWM")
        else:
            self.stop.set()
            self.sampler.join()
        self.added_mb = (self.peak - self.before) / 1024


def concentrated_features(n: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """iid standard Gaussian real vectors and 0.9 times iid Gaussian fake ones, float32."""
    rng = np.random.default_rng(FEATURE_SEED)
    return rng.standard_normal((n, dim), dtype=np.float32), 0.9 * rng.standard_normal((n, dim), dtype=np.float32)


def prdc_child(which: str, n: int, dim: int, k: int, kind: str = "synthetic", device: str = "none") -> dict:
    """One measurement, run in a fresh process: seconds, added peak MB (of host memory) and the four values."""
    import torch

    from ganbench.metrics.manifold import prdc

    if kind == "concentrated":
        real, fake = concentrated_features(n, dim)
    else:
        real = synthetic_features(n, dim, seed=1)
        fake = synthetic_features(n, dim, seed=2, spread=1.1, shift=0.05)
    if which == "ours" and device != "none":  # on the device before timing, as metrics_from_features moves them
        real, fake = torch.from_numpy(real).to(device), torch.from_numpy(fake).to(device)
        prdc(real[:64], fake[:64], k)  # the device's first use (context, kernels) is not the metric's time
    with PeakMemory() as memory:
        started = time.perf_counter()
        if which == "ours":
            values = prdc(real, fake, k)
        else:
            import prdc as prdc_lib

            with contextlib.redirect_stdout(io.StringIO()):  # it prints the sample counts
                values = {name: float(v) for name, v in prdc_lib.compute_prdc(real, fake, k).items()}
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "added_mb": memory.added_mb, "values": values}


def _run_child(*child_args, env: dict | None = None) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", *map(str, child_args)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_prdc(sizes: list[int], dim: int = 2048, k: int = 5, rounds: int = 1, kind: str = "synthetic",
               device: str = "none") -> list[dict]:
    rows = []
    for n in sizes:
        runs: dict[str, list[dict]] = {"ours": [], "peer": []}
        for r in range(rounds):
            for which in ("ours", "peer") if r % 2 == 0 else ("peer", "ours"):
                runs[which].append(_run_child("prdc", which, n, dim, k, kind, device))
        ours_values = [run["values"] for run in runs["ours"]]
        peer_values = runs["peer"][0]["values"]
        equal = all(v == peer_values for v in ours_values)
        ours_s = _median([run["seconds"] for run in runs["ours"]])
        peer_s = _median([run["seconds"] for run in runs["peer"]])
        shown = ", ".join(f"{name[0]}={value:.4f}" for name, value in peer_values.items())
        rows.append(
            {
                "case": f"PRDC k={k}, N={n}, D={dim}{', concentrated' if kind == 'concentrated' else ''}"
                        f"{'' if device == 'none' else ', ours on ' + device}",
                "ours_s": ours_s,
                "peer_s": peer_s,
                "speedup": peer_s / ours_s,
                "ours_mb": _median([run["added_mb"] for run in runs["ours"]]),
                "peer_mb": _median([run["added_mb"] for run in runs["peer"]]),
                "check": f"{'equal' if equal else 'DIFFERENT'} ({shown})",
            }
        )
    return rows


# ---- every metric of one checkpoint, against another checkout --------------------------------------

CHECKPOINT_GROUPS = {
    "fid": ["fid"],
    "kid": ["kid"],
    "precision+recall+density+coverage": ["precision", "recall", "density", "coverage"],
    "all metrics": None,
}


def checkpoint_child(n: int, dim: int, device: str) -> dict:
    """metrics_from_features per group on one checkpoint's features, with whichever ganbench is importable."""
    import torch

    from ganbench.features.extract import FeatureSet
    from ganbench.metric_values import metrics_from_features

    protocol = {"extractor": "lenet-fashion-mnist", "preprocessing": "lenet-28-gray-unit", "weights_sha256": "bench"}
    logits = np.random.default_rng(3).standard_normal((2, n, 10)).astype(np.float32)
    real = FeatureSet(synthetic_features(n, dim, seed=1), logits[0], protocol)
    fake = FeatureSet(synthetic_features(n, dim, seed=2, spread=1.1, shift=0.05), logits[1], protocol)
    kwargs = {} if device == "none" else {"device": device}
    if device.startswith("cuda"):  # the context and cuBLAS handles, made on first use, are not the metrics' time
        for dtype in (torch.float32, torch.float64):
            torch.ones(8, 8, dtype=dtype, device=device).mm(torch.ones(8, 8, dtype=dtype, device=device))
    seconds, values = {}, {}
    for group, names in CHECKPOINT_GROUPS.items():
        started = time.perf_counter()
        out = metrics_from_features(real, fake, names, **kwargs)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds[group] = time.perf_counter() - started
        values.update({name: value.value for name, value in out.items()})
    return {"seconds": seconds, "values": values}


def bench_checkpoint(baseline: str | None, n: int = 10000, dim: int = 128, rounds: int = 1, device: str = "none"
                     ) -> list[dict]:
    if baseline is None:
        print("checkpoint: skipped (needs --baseline PATH, a checkout of the ganbench to compare against)")
        return []
    repo = str(Path(__file__).resolve().parent.parent)
    envs = {"ours": {**os.environ, "PYTHONPATH": repo}, "peer": {**os.environ, "PYTHONPATH": str(Path(baseline).resolve())}}
    runs: dict[str, list[dict]] = {"ours": [], "peer": []}
    for r in range(rounds):
        for which in ("ours", "peer") if r % 2 == 0 else ("peer", "ours"):
            # the baseline computes on the CPU as it always has; ours on --device
            runs[which].append(_run_child("checkpoint", n, dim, device if which == "ours" else "none", env=envs[which]))
    ours_v, peer_v = runs["ours"][0]["values"], runs["peer"][0]["values"]
    rel = {name: abs(ours_v[name] - v) / max(abs(v), 1e-300) for name, v in peer_v.items()}
    rows = []
    for group, names in CHECKPOINT_GROUPS.items():
        ours_s = _median([run["seconds"][group] for run in runs["ours"]])
        peer_s = _median([run["seconds"][group] for run in runs["peer"]])
        names = names or list(peer_v)
        worst = max(rel[name] for name in names)
        check = "equal" if worst == 0 else f"max rel diff {worst:.1e}"
        rows.append({"case": f"{group}, N={n}, D={dim}, {'cpu' if device == 'none' else device}", "ours_s": ours_s,
                     "peer_s": peer_s, "speedup": peer_s / ours_s, "ours_mb": None, "peer_mb": None, "check": check})
    return rows


# ---- table and CLI ------------------------------------------------------------------------------


def print_table(rows: list[dict], peer_names: str) -> None:
    print(f"peers: {peer_names}")
    header = f"| {'case':44s} | {'ours s':>8s} | {'peer s':>8s} | {'speed-up':>8s} | {'ours +MB':>8s} | {'peer +MB':>8s} | check"
    print(header)
    print("|" + "|".join("-" * (len(cell) + 0) for cell in header.split("|")[1:-1]) + "|-------")
    for row in rows:
        mb = [f"{row[key]:8.0f}" if row[key] is not None else f"{'-':>8s}" for key in ("ours_mb", "peer_mb")]
        print(
            f"| {row['case']:44s} | {row['ours_s']:8.2f} | {row['peer_s']:8.2f} | {row['speedup']:7.1f}x | "
            f"{mb[0]} | {mb[1]} | {row['check']}"
        )


SECTIONS = {
    "frechet": lambda args: bench_frechet(rounds=args.rounds),
    "prdc": lambda args: bench_prdc([int(s) for s in args.prdc_sizes.split(",")], rounds=args.prdc_rounds,
                                    device=args.device),
    "concentrated": lambda args: bench_prdc([args.concentrated_n], dim=args.concentrated_dim, rounds=args.prdc_rounds,
                                            kind="concentrated", device=args.device),
    "checkpoint": lambda args: bench_checkpoint(args.baseline, args.checkpoint_n, rounds=args.rounds, device=args.device),
}


def _script(name: str, *script_args: str) -> None:
    """A section that is its own script (it prints its own table)."""
    subprocess.run([sys.executable, str(Path(__file__).resolve().parent / name), *script_args], check=True)


SCRIPT_SECTIONS = {
    "inception": lambda args: _script("features_bench.py", "--threads", str(args.threads), "--rounds", str(args.rounds)),
    "one-call": lambda args: _script("one_call_bench.py", "--n", str(args.one_call_n), "--threads", str(args.threads)),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    every = [*SECTIONS, *SCRIPT_SECTIONS]
    parser.add_argument("--sections", default=",".join(every), help=f"comma-separated subset of {', '.join(every)}")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for the Inception sections (default: %(default)s)")
    parser.add_argument("--one-call-n", type=int, default=64, help="images per set in the one-call section")
    parser.add_argument("--prdc-sizes", default="5000,10000,20000", help="comma-separated N per side")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds for in-process timings")
    parser.add_argument("--prdc-rounds", type=int, default=1, help="alternating subprocess rounds per PRDC size")
    parser.add_argument("--concentrated-n", type=int, default=10000, help="N per side in the concentrated section")
    parser.add_argument("--concentrated-dim", type=int, default=2048, help="D in the concentrated section")
    parser.add_argument("--checkpoint-n", type=int, default=10000, help="N per side in the checkpoint section")
    parser.add_argument("--baseline", help="checkout of the ganbench to compare against in the checkpoint section")
    parser.add_argument("--device", default="none",
                        help="device for our side of the prdc, concentrated and checkpoint sections (default: CPU)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        if kind == "prdc":
            which, n, dim, k, data, device = rest
            print(json.dumps(prdc_child(which, int(n), int(dim), int(k), data, device)))
        else:
            n, dim, device = rest
            print(json.dumps(checkpoint_child(int(n), int(dim), device)))
        return 0
    rows = []
    for name in args.sections.split(","):
        if name in SCRIPT_SECTIONS:
            print(f"\n## {name}", flush=True)
            SCRIPT_SECTIONS[name](args)
        else:
            rows += SECTIONS[name](args)
    if rows:
        print_table(rows, "pytorch-fid calculate_frechet_distance (scipy sqrtm); prdc.compute_prdc (scikit-learn distances); "
                    "checkpoint rows: the --baseline checkout")
    return 0


if __name__ == "__main__":
    sys.exit(main())
