"""FD-infinity: the Frechet distance extrapolated to infinitely many generated samples.

Paper: Chong & Forsyth, CVPR 2020, "Effectively Unbiased FID and Inception Score and Where to Find Them".
Reference implementation matched: mchong6/FID_IS_infinity `calculate_FID_infinity_path`:

- the real statistics come from the whole real set, once;
- N takes `points` values `np.linspace(min_n, n_fake, points).astype(int32)` (their defaults: 15 points from
  5000 to the number of generated samples);
- for each N, in that order, the generated features are shuffled (a fresh uniform permutation, `np.random.shuffle`
  of the already shuffled array) and the first N are fitted with a Gaussian and scored against the real one;
- an ordinary least-squares line of FD_N against 1/N; FD-infinity is its intercept (1/N = 0).

FD_N is biased upwards by a term that is linear in 1/N to first order, which is why the intercept is the
"effectively unbiased" value. The permutations come from `np.random.RandomState(seed)` shuffling an index
array cumulatively, exactly as the reference shuffles its activations after `np.random.seed(seed)` (the
legacy shuffle draws the same swaps for any array length-N first axis), so the subsets are the reference's;
the global RNG is never touched. Statistics and distances are ganbench's float64 `fid` functions.
"""

from __future__ import annotations

import numpy as np
import torch

from ganbench.errors import MetricError
from ganbench.metrics._checks import as_tensor, check_positive_int, check_same_device, check_same_dim, check_seed
from ganbench.metrics.fid import feature_statistics, frechet_distance

POINTS = 15  # the reference's num_points
MIN_N = 5000  # the reference's min_fake


def subset_sizes(n_fake: int, points: int = POINTS, min_n: int = MIN_N) -> np.ndarray:
    """The N values FD is evaluated at: the reference's `np.linspace(min_n, n_fake, points).astype('int32')`."""
    return np.linspace(min_n, n_fake, points).astype(np.int32)


def fd_infinity_fit(sizes, distances) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line distances = intercept + slope / sizes; the intercept is FD-infinity."""
    inverse = 1.0 / np.asarray(sizes, dtype=np.float64)
    slope, intercept = np.polyfit(inverse, np.asarray(distances, dtype=np.float64), 1)
    return float(intercept), float(slope)


def fd_infinity_from_features(real, fake, *, points: int = POINTS, min_n: int = MIN_N, seed: int = 0) -> float:
    """FD-infinity of (n_fake, D) generated features against (n_real, D) real ones (numpy or tensors on one device).

    min_n: the smallest N (2 <= min_n < n_fake); points: how many N values (>= 2). seed: the permutations' RandomState.
    """
    points = check_positive_int(points, "points")
    min_n = check_positive_int(min_n, "min_n")
    seed = check_seed(seed)
    real = as_tensor(real, "real features", widen=torch.float64)
    fake = as_tensor(fake, "fake features", widen=torch.float64)
    check_same_dim(real, fake)
    check_same_device(real, fake)
    n_fake = fake.shape[0]
    if points < 2 or not 2 <= min_n < n_fake:
        raise MetricError(
            f"FD-infinity: received {n_fake} generated samples, min_n={min_n}, points={points}; expected "
            "2 <= min_n < the number of generated samples and points >= 2, so a line can be fitted"
        )
    real_statistics = feature_statistics(real)
    sizes = subset_sizes(n_fake, points, min_n)
    rng = np.random.RandomState(seed)
    order = np.arange(n_fake)
    distances = []
    for size in sizes:
        rng.shuffle(order)  # in place and cumulative, as the reference shuffles its activations
        subset = fake[torch.from_numpy(order[:size]).to(fake.device)]
        distances.append(frechet_distance(*feature_statistics(subset), *real_statistics))
    return fd_infinity_fit(sizes, distances)[0]
