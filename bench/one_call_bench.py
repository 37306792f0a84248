"""All metrics from one ganbench call vs torch-fidelity (isc + fid + kid + prc) plus prdc, on the same images.

The peer is what a researcher without ganbench runs for the same seven numbers: torch-fidelity's
`calculate_metrics` for IS, FID, KID and precision/recall, then prdc for density and coverage, which
needs features, extracted with torch-fidelity's Inception once more. ganbench extracts each image set
once and computes every metric from that pass; with the reference features cached ("warm"), only
the generated set is extracted. Both sides use the same Inception weights file (random weights by
default: timing does not depend on the values) and one CPU thread each by default.

    python bench/one_call_bench.py [--n 64] [--threads 1] [--weights PATH]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from features_bench import TorchFidelityImages as _Images  # noqa: E402
from features_bench import write_random_weights  # noqa: E402

from ganbench.data import load_dataset  # noqa: E402


def peer(real: torch.Tensor, fake: torch.Tensor, weights: Path, kid_subset: int) -> tuple[float, dict]:
    import prdc
    import torch_fidelity
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    started = time.perf_counter()
    values = torch_fidelity.calculate_metrics(
        input1=_Images(fake), input2=_Images(real), cuda=False, isc=True, fid=True, kid=True, prc=True,
        kid_subset_size=kid_subset, feature_extractor="inception-v3-compat", feature_extractor_weights_path=str(weights),
        verbose=False, cache=False,
        batch_size=32,
    )
    extractor = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights))
    extractor.eval()

    def features(images: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return torch.cat([extractor(b)[0] for b in _Images(images).images.split(32)]).numpy()

    dc = prdc.compute_prdc(features(real), features(fake), nearest_k=5)
    seconds = time.perf_counter() - started
    return seconds, {
        "fid": values["frechet_inception_distance"], "is": values["inception_score_mean"],
        "kid": values["kernel_inception_distance_mean"], "precision": values["precision"], "recall": values["recall"],
        "density": dc["density"], "coverage": dc["coverage"],
    }


def ours(real: torch.Tensor, fake: torch.Tensor, weights: Path, kid_subset: int, cached_real=None) -> tuple[float, dict, object]:
    from ganbench.features.extract import extract_features
    from ganbench.features.inception import build_inception
    from ganbench.metric_values import metrics_from_features

    started = time.perf_counter()
    extractor = build_inception(weights)
    real_set = cached_real if cached_real is not None else extract_features(extractor, real, batch_size=32)
    fake_set = extract_features(extractor, fake, batch_size=32)
    names = ["fid", "is", "kid", "precision", "recall", "density", "coverage"]
    values = metrics_from_features(real_set, fake_set, names, kid_subset_size=kid_subset)
    seconds = time.perf_counter() - started
    return seconds, {k: v.value for k, v in values.items()}, real_set


def run(n: int, threads: int, weights: Path | None) -> list[str]:
    torch.set_num_threads(threads)
    test = load_dataset("fashion-mnist", "test", log=False).images
    real, fake = test[:n], test[n : 2 * n]  # two disjoint image sets of the same kind
    kid_subset = min(1000, n)
    with tempfile.TemporaryDirectory() as tmp:
        weights = weights or write_random_weights(Path(tmp) / "random-inception.pth")
        peer_s, peer_v = peer(real, fake, weights, kid_subset)
        cold_s, ours_v, real_set = ours(real, fake, weights, kid_subset)
        warm_s, _, _ = ours(real, fake, weights, kid_subset, cached_real=real_set)
    lines = [
        f"all seven metrics, {n} real vs {n} generated 28x28 images, Inception on CPU, {threads} thread(s)",
        f"{'pipeline':58} {'seconds':>8} {'speed-up':>9}",
        f"{'torch-fidelity (isc+fid+kid+prc) + prdc (features again)':58} {peer_s:8.1f} {1.0:8.2f}x",
        f"{'ganbench, one pass per set (reference extracted)':58} {cold_s:8.1f} {peer_s / cold_s:8.2f}x",
        f"{'ganbench, one pass (reference features cached)':58} {warm_s:8.1f} {peer_s / warm_s:8.2f}x",
        "",
        f"{'metric':10} {'torch-fidelity/prdc':>20} {'ganbench':>20} {'rel. diff':>10}",
    ]
    for name, theirs in peer_v.items():
        mine = ours_v[name]
        rel = abs(mine - theirs) / max(abs(theirs), 1e-12)
        lines.append(f"{name:10} {theirs:20.8g} {mine:20.8g} {rel:10.1e}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="images per set (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--weights", type=Path, help="real FID Inception weights; default: a random weights file")
    args = parser.parse_args()
    print("\n".join(run(args.n, args.threads, args.weights)))


if __name__ == "__main__":
    main()
