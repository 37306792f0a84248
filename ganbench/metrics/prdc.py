"""Precision and recall (Kynkaanniemi et al. 2019, "Improved Precision and Recall Metric for Assessing
Generative Models") and density and coverage (Naeem et al. 2020, "Reliable Fidelity and Diversity
Metrics for Generative Models"), from k-nearest-neighbour balls around feature vectors.

Reference implementation matched exactly: `prdc.compute_prdc` (strict `d < radius`, radius = distance
to the k-th nearest other sample, distances as scikit-learn computes them). Counts, not just values
within a tolerance, are equal: see `_knn.py` for how decisions are made exact without an N x N matrix.
Duplicated samples are the one exception we know of: prdc's distance between two identical vectors
is float64 round-off (not always 0); ours is exactly 0.

torch-fidelity's `prc` metric defines precision and recall the same way but with `d <= radius` and
float32 `torch.cdist` distances, so it can differ from prdc (and from us) only on exact ties, e.g.
duplicated samples.

Inputs: (N, D) numpy arrays or tensors; computed on the tensors' device (CUDA tensors stay there).
`chunk_size` sets the block size (memory ~ a few chunk_size^2 floats); `worst_case_bound=True` uses
the rigorous float32 error bound instead of the probabilistic one (see `_knn.py`): same results,
more pairs re-checked in float64.
"""

from __future__ import annotations

import torch

from ganbench.errors import MetricError
from ganbench.metrics import _knn
from ganbench.metrics._checks import as_tensor, check_positive_int, check_same_dim

DEFAULT_CHUNK = 2048  # rows and columns per block: memory ~ a few chunk^2 floats; 1024 ran 2x slower on CPU


def _prepare(real, fake, k: int, chunk: int, worst_case: bool):
    k = check_positive_int(k, "nearest_k")
    chunk = check_positive_int(chunk, "chunk_size")
    real = as_tensor(real, "real features")
    fake = as_tensor(fake, "fake features")
    check_same_dim(real, fake)
    if real.device != fake.device:
        raise MetricError(f"real features are on {real.device}, fake features on {fake.device}; expected one device")
    for name, x in (("real", real), ("fake", fake)):
        if k >= x.shape[0]:
            raise MetricError(
                f"nearest_k={k} but {name} features have only N={x.shape[0]} samples; expected nearest_k < N"
            )
    # like scikit-learn: mixed float32/float64 inputs are compared in float64
    dtype = torch.promote_types(real.dtype, fake.dtype)
    return *_knn.prepare(real.to(dtype), fake.to(dtype), chunk, worst_case), k, chunk


def prdc(real, fake, nearest_k: int = 5, *, chunk_size: int = DEFAULT_CHUNK, worst_case_bound: bool = False
) -> dict[str, float]:
    """{'precision', 'recall', 'density', 'coverage'} for (N, D) real and (M, D) fake features, as
    `prdc.compute_prdc(real, fake, nearest_k)`. Needs nearest_k < N and nearest_k < M."""
    r, f, k, chunk = _prepare(real, fake, nearest_k, chunk_size, worst_case_bound)
    real_radii = _knn.kth_neighbour_radii(r, k, chunk)
    fake_radii = _knn.kth_neighbour_radii(f, k, chunk)
    counts = _knn.ball_counts(r, f, real_radii, fake_radii, chunk)
    return {**_precision_recall(counts), **_density_coverage(counts, k)}


def _fraction(flags: torch.Tensor) -> float:
    return int(flags.sum()) / flags.numel()


def _precision_recall(counts: _knn.BallCounts) -> dict[str, float]:
    return {"precision": _fraction(counts.fake_in_real_balls > 0), "recall": _fraction(counts.real_in_fake_balls)}


def _density_coverage(counts: _knn.BallCounts, k: int) -> dict[str, float]:
    # (1 / k) * mean, in this order, to give prdc's float64 value to the last bit
    density = (1.0 / k) * (int(counts.fake_in_real_balls.sum()) / counts.fake_in_real_balls.numel())
    return {"density": density, "coverage": _fraction(counts.real_has_fake_inside)}


def precision_recall(real, fake, k: int = 3, *, chunk_size: int = DEFAULT_CHUNK, worst_case_bound: bool = False
) -> dict[str, float]:
    """{'precision', 'recall'} with k-th-neighbour balls (Kynkaanniemi et al. use k = 3).

    precision: fraction of fake samples inside some real sample's ball; recall: fraction of real
    samples inside some fake sample's ball."""
    r, f, k, chunk = _prepare(real, fake, k, chunk_size, worst_case_bound)
    counts = _knn.ball_counts(r, f, _knn.kth_neighbour_radii(r, k, chunk), _knn.kth_neighbour_radii(f, k, chunk), chunk)
    return _precision_recall(counts)


def density_coverage(real, fake, k: int = 5, *, chunk_size: int = DEFAULT_CHUNK, worst_case_bound: bool = False
) -> dict[str, float]:
    """{'density', 'coverage'} (Naeem et al. use k = 5); needs only the real samples' balls.

    density: mean number of real balls containing a fake sample, divided by k (can exceed 1);
    coverage: fraction of real samples whose ball contains at least one fake sample."""
    r, f, k, chunk = _prepare(real, fake, k, chunk_size, worst_case_bound)
    counts = _knn.ball_counts(r, f, _knn.kth_neighbour_radii(r, k, chunk), None, chunk)
    return _density_coverage(counts, k)
