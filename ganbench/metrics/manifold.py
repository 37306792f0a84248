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
`knn_metrics` gives all four from one pass: each set's neighbours are found once for both k, and the
real-fake pairs are visited once for every ball; `precision_recall`, `density_coverage` and `prdc` are
that pass with some metrics left out (same counts). `chunk_size` sets the block size (memory ~ a few
chunk_size^2 floats); `worst_case_bound=True` uses the rigorous float32 error bound instead of the
probabilistic one (see `_knn.py`): same results, more pairs re-checked in float64.
"""

from __future__ import annotations

import torch

from ganbench.errors import MetricError
from ganbench.metrics import _knn
from ganbench.metrics._checks import as_tensor, check_positive_int, check_same_device, check_same_dim

DEFAULT_CHUNK = 2048  # rows and columns per block: memory ~ a few chunk^2 floats; 1024 ran 2x slower on CPU


def _compute(real, fake, pr: tuple[str, int] | None, dc: tuple[str, int] | None, chunk_size: int, worst_case: bool
             ) -> dict[str, float]:
    """pr, dc: (argument name, k) for precision/recall and density/coverage, or None to leave them out."""
    given = [spec for spec in (pr, dc) if spec is not None]
    pr_k, dc_k = (spec and check_positive_int(spec[1], spec[0]) for spec in (pr, dc))
    chunk = check_positive_int(chunk_size, "chunk_size")
    real = as_tensor(real, "real features")
    fake = as_tensor(fake, "fake features")
    check_same_dim(real, fake)
    check_same_device(real, fake)
    for which, x in (("real", real), ("fake", fake)):
        for name, k in given:
            if k >= x.shape[0]:
                raise MetricError(f"{name}={k} but {which} features have only N={x.shape[0]} samples; expected {name} < N")
    # like scikit-learn: mixed float32/float64 inputs are compared in float64
    dtype = torch.promote_types(real.dtype, fake.dtype)
    r, f = _knn.prepare(real.to(dtype), fake.to(dtype), chunk, worst_case)
    real_radii = _knn.neighbour_radii(r, [k for k in (pr_k, dc_k) if k], chunk)
    counts = _knn.cross_counts(
        r, f,
        precision=real_radii[pr_k] if pr_k and pr_k != dc_k else None,  # with one k, density's counts say it
        recall=_knn.neighbour_radii(f, [pr_k], chunk)[pr_k] if pr_k else None,
        density=real_radii[dc_k] if dc_k else None,
        chunk=chunk,
    )
    out = {}
    if pr_k:
        in_real_ball = counts.in_real_ball if counts.in_real_ball is not None else counts.real_balls_per_fake > 0
        out["precision"], out["recall"] = _fraction(in_real_ball), _fraction(counts.in_fake_ball)
    if dc_k:
        per_fake = counts.real_balls_per_fake
        # (1 / k) * mean, in this order, to give prdc's float64 value to the last bit
        out["density"] = (1.0 / dc_k) * (int(per_fake.sum()) / per_fake.numel())
        out["coverage"] = _fraction(counts.real_ball_has_fake)
    return out


def _fraction(flags: torch.Tensor) -> float:
    return int(flags.sum()) / flags.numel()


def knn_metrics(real, fake, pr_k: int | None = 3, dc_k: int | None = 5, *, chunk_size: int = DEFAULT_CHUNK,
                worst_case_bound: bool = False) -> dict[str, float]:
    """{'precision', 'recall'} with pr_k-NN balls and {'density', 'coverage'} with dc_k-NN balls, from one
    neighbour pass per set and one pass over the real-fake pairs; None leaves that pair of metrics out.

    real (N, D), fake (M, D): numpy arrays or tensors on one device. Needs each k < N and < M. The values
    equal `precision_recall(real, fake, pr_k)` and `density_coverage(real, fake, dc_k)` exactly."""
    if pr_k is None and dc_k is None:
        raise MetricError("pr_k, dc_k: received None for both; expected at least one neighbour count")
    pr = ("pr_k", pr_k) if pr_k is not None else None
    dc = ("dc_k", dc_k) if dc_k is not None else None
    return _compute(real, fake, pr, dc, chunk_size, worst_case_bound)


def prdc(real, fake, nearest_k: int = 5, *, chunk_size: int = DEFAULT_CHUNK, worst_case_bound: bool = False
) -> dict[str, float]:
    """{'precision', 'recall', 'density', 'coverage'} for (N, D) real and (M, D) fake features, as
    `prdc.compute_prdc(real, fake, nearest_k)`. Needs nearest_k < N and nearest_k < M."""
    k = ("nearest_k", nearest_k)
    return _compute(real, fake, k, k, chunk_size, worst_case_bound)


def precision_recall(real, fake, k: int = 3, *, chunk_size: int = DEFAULT_CHUNK, worst_case_bound: bool = False
) -> dict[str, float]:
    """{'precision', 'recall'} with k-th-neighbour balls (Kynkaanniemi et al. use k = 3).

    precision: fraction of fake samples inside some real sample's ball; recall: fraction of real
    samples inside some fake sample's ball."""
    return _compute(real, fake, ("nearest_k", k), None, chunk_size, worst_case_bound)


def density_coverage(real, fake, k: int = 5, *, chunk_size: int = DEFAULT_CHUNK, worst_case_bound: bool = False
) -> dict[str, float]:
    """{'density', 'coverage'} (Naeem et al. use k = 5); needs only the real samples' balls.

    density: mean number of real balls containing a fake sample, divided by k (can exceed 1);
    coverage: fraction of real samples whose ball contains at least one fake sample."""
    return _compute(real, fake, None, ("nearest_k", k), chunk_size, worst_case_bound)
