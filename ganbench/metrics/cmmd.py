"""CMMD: squared maximum mean discrepancy with a Gaussian kernel on (CLIP) embeddings.

Paper: Jayasumana et al., CVPR 2024, "Rethinking FID: Towards a Better Evaluation Metric for Image Generation".
Reference implementation matched: google-research/cmmd `distance.mmd` (kernel exp(-|x - y|^2 / (2 sigma^2)) with
sigma = 10, result scaled by 1000):

    MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y)

Two estimators, named in the metric options:
- "unbiased" (the default, as the paper states it): the U-statistic, the within-set means leave out i == j;
  its expectation is the population MMD^2, so two samples of one distribution average to 0.
- "biased" (what the official code computes): the V-statistic, means over all pairs including i == j; it
  exceeds the U-statistic by about (1 - E k(x, x')) (1/m + 1/n), so it stays positive on equal distributions.

The paper's embeddings are CLIP ViT-L/14@336 image embeddings normalised to unit length; this function takes
any (N, D) features as given and normalises nothing. Kernels are summed in float64 on the features' device,
`_CHUNK` rows at a time, so memory stays ~ `_CHUNK` x N float64 whatever N (10k x 10k never materialises).
"""

from __future__ import annotations

import torch

from ganbench.errors import MetricError
from ganbench.metrics._checks import as_tensor, check_finite_number, check_same_device, check_same_dim

SIGMA = 10.0  # the official code's _SIGMA
SCALE = 1000.0  # the official code's _SCALE: the value is reported x1000
ESTIMATORS = ("unbiased", "biased")
_CHUNK = 2048


def _gaussian_kernel_sum(a: torch.Tensor, b: torch.Tensor, gamma: float, off_diagonal: bool) -> torch.Tensor:
    """sum over (i, j) of exp(-gamma |a_i - b_j|^2), or over i != j when a is b; a 0-d float64 tensor."""
    a_norms, b_norms = (a * a).sum(dim=1), (b * b).sum(dim=1)
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    for start in range(0, a.shape[0], _CHUNK):
        rows = a[start : start + _CHUNK]
        squared = torch.addmm(b_norms[None, :], rows, b.T, alpha=-2.0).add_(a_norms[start : start + _CHUNK, None])
        # |a|^2 + |b|^2 - 2 a.b can round below 0 for near-equal rows; a distance is never negative
        kernel = squared.clamp_(min=0).mul_(-gamma).exp_()
        total += kernel.sum()
        if off_diagonal:
            total -= kernel.diagonal(offset=start).sum()
    return total


def cmmd_from_features(real, fake, *, estimator: str = "unbiased", sigma: float = SIGMA, scale: float = SCALE) -> float:
    """scale x MMD^2 between (m, D) real and (n, D) fake embeddings, Gaussian kernel of bandwidth `sigma`.

    real, fake: numpy arrays or tensors on one device, same D, m, n >= 2 (computed in float64 there).
    estimator: "unbiased" (U-statistic, default) or "biased" (V-statistic, the official code's); module docstring.
    """
    if estimator not in ESTIMATORS:
        raise MetricError(f"CMMD estimator: received {estimator!r}; expected one of {', '.join(ESTIMATORS)}")
    sigma = check_finite_number(sigma, "CMMD sigma", positive=True)
    scale = check_finite_number(scale, "CMMD scale", positive=True)
    x = as_tensor(real, "real features", widen=torch.float64).to(torch.float64)
    y = as_tensor(fake, "fake features", widen=torch.float64).to(torch.float64)
    check_same_dim(x, y)
    check_same_device(x, y)
    gamma = 1.0 / (2.0 * sigma**2)
    m, n = x.shape[0], y.shape[0]
    unbiased = estimator == "unbiased"
    k_xx = _gaussian_kernel_sum(x, x, gamma, unbiased) / (m * (m - 1) if unbiased else m * m)
    k_yy = _gaussian_kernel_sum(y, y, gamma, unbiased) / (n * (n - 1) if unbiased else n * n)
    k_xy = _gaussian_kernel_sum(x, y, gamma, False) / (m * n)
    return float(scale * (k_xx + k_yy - 2.0 * k_xy))
