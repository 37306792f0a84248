"""Frechet distance between Gaussians fitted to feature sets (FID).

Paper: Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium". Reference implementation matched: pytorch-fid's `calculate_frechet_distance`
(mu/sigma from `np.cov(rowvar=False)`, i.e. N - 1 normalisation), also torchmetrics' `_compute_fid`.

    d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2)

pytorch-fid takes a general (non-symmetric) `scipy.linalg.sqrtm` of S1 S2 and drops a small
imaginary part. For PSD S1 = L L^T, S1 S2 is similar to the symmetric PSD matrix L^T S2 L, so
tr sqrt(S1 S2) is the sum of the square roots of the eigenvalues of L^T S2 L: one Cholesky (an
eigendecomposition when S1 is singular), two triangular products and one symmetric eigenvalue
solve, several times faster than sqrtm and at least as accurate. Negative eigenvalues beyond
round-off are the symmetric route's "imaginary component": they mean a covariance is not PSD, and
raise `MetricError` instead of being dropped.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch

from ganbench.errors import MetricError
from ganbench.metrics._checks import as_numpy, as_tensor, check_same_device, check_same_dim, real_array

# Eigenvalues below -NEG_TOL * (largest eigenvalue) are not round-off: float64 round-off is ~1e-13
# relative at D = 2048, and float32-stored statistics reach ~1e-7; 1e-6 leaves room for both.
NEG_TOL = 1e-6
_CHUNK = 4096  # rows converted to float64 at a time, so statistics of 50k x 2048 float32 need no full copy


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (N - 1 normalisation, as `np.cov(rowvar=False)`) of features.

    features: (N, D) numpy array or tensor on any device, any real dtype, N >= 2. Returns mu (D,) and
    sigma (D, D), both float64 numpy. Computed on the features' device, see `_statistics`.
    """
    mu, sigma = _statistics(as_tensor(features, "features", widen=torch.float64))
    return mu.cpu().numpy(), sigma.cpu().numpy()


def _statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 mu (D,) and sigma (D, D) of (N, D) x, on x's device. Accumulates in float64 chunk by chunk
    around the mean (two passes), so float32 input is never copied whole and there is no cancellation
    from raw second moments."""
    n, d = x.shape
    mu = sum(c.sum(dim=0, dtype=torch.float64) for c in x.split(_CHUNK)) / n
    sigma = torch.zeros((d, d), dtype=torch.float64, device=x.device)
    for c in x.split(_CHUNK):
        centred = c.to(torch.float64) - mu
        sigma.addmm_(centred.T, centred)
    return mu, sigma.div_(n - 1)


class StreamingStatistics:
    """Mean and covariance accumulated batch by batch; `compute()` equals `feature_statistics` of all
    batches concatenated (to float64 round-off).

    Keeps float64 sums of x - c and (x - c)(x - c)^T, where the shift c is the first batch's mean:
    raw moments of features with a large mean lose digits in `sum(x x^T) - n mu mu^T`, shifted ones do not.
    """

    def __init__(self) -> None:
        self.num_samples = 0
        self._shift: np.ndarray | None = None
        self._sum: np.ndarray | None = None
        self._outer: np.ndarray | None = None

    def update(self, batch) -> None:
        """Add a (B, D) batch (numpy or tensor, B >= 1)."""
        x = as_numpy(batch, "batch", min_samples=1)
        if self._shift is None:
            d = x.shape[1]
            self._shift = x.mean(axis=0)
            self._sum, self._outer = np.zeros(d), np.zeros((d, d))
        elif x.shape[1] != self._shift.shape[0]:
            raise MetricError(
                f"batch: received D={x.shape[1]} features per sample; earlier batches had D={self._shift.shape[0]}"
            )
        centred = x - self._shift
        self._sum += centred.sum(axis=0)
        self._outer += centred.T @ centred
        self.num_samples += x.shape[0]

    def compute(self) -> tuple[np.ndarray, np.ndarray]:
        """Returns mu (D,) and sigma (D, D), float64; needs at least 2 samples in total."""
        if self.num_samples < 2:
            raise MetricError(f"StreamingStatistics: received {self.num_samples} sample(s), fewer than the 2 needed")
        n = self.num_samples
        mean_shifted = self._sum / n
        sigma = (self._outer - n * np.outer(mean_shifted, mean_shifted)) / (n - 1)
        return self._shift + mean_shifted, sigma


def _as_statistics(mu, sigma, which: str) -> tuple[np.ndarray, np.ndarray]:
    mu = np.atleast_1d(real_array(mu, f"mu{which}"))
    sigma = np.atleast_2d(real_array(sigma, f"sigma{which}"))
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise MetricError(
            f"mu{which}, sigma{which}: expected shapes (D,) and (D, D), received {mu.shape} and {sigma.shape}"
        )
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise MetricError(f"mu{which}, sigma{which}: contain NaN or inf; expected finite statistics")
    scale = np.abs(sigma).max()
    if np.abs(sigma - sigma.T).max() > 1e-6 * scale:
        raise MetricError(f"sigma{which}: not symmetric (max |S - S^T| = {np.abs(sigma - sigma.T).max():.3g}); "
                          "expected a covariance matrix")
    return mu, (sigma + sigma.T) / 2


def _psd_factor(sigma: np.ndarray, which: str, neg_tol: float) -> tuple[np.ndarray, bool]:
    """F with sigma = F F^T, and whether F is lower triangular."""
    try:
        return scipy.linalg.cholesky(sigma, lower=True, check_finite=False), True
    except np.linalg.LinAlgError:
        pass
    # singular (fewer samples than dimensions, duplicates) or indefinite: fall back to eigenvectors
    w, v = scipy.linalg.eigh(sigma, check_finite=False)
    _check_negative(w, f"sigma{which}", neg_tol)
    return v * np.sqrt(np.clip(w, 0, None)), False


def _check_negative(eigenvalues: np.ndarray, what: str, neg_tol: float) -> None:
    largest = max(float(np.abs(eigenvalues).max()), np.finfo(np.float64).tiny)
    if eigenvalues.min() < -neg_tol * largest:
        raise MetricError(
            f"{what}: eigenvalue {eigenvalues.min():.4g} is negative beyond round-off "
            f"(largest {largest:.4g}, tolerance {neg_tol:g} relative); the square root would have a large "
            "imaginary part, so a covariance is not positive semi-definite"
        )


def trace_sqrt_product(sigma1, sigma2, *, neg_tol: float = NEG_TOL) -> float:
    """tr sqrt(sigma1 sigma2) for symmetric PSD (D, D) float64 matrices, via eigenvalues of F^T sigma2 F."""
    factor, triangular = _psd_factor(sigma1, "1", neg_tol)
    if triangular:
        blas = scipy.linalg.blas
        right = blas.dtrmm(1.0, factor, sigma2, side=1, lower=1)  # sigma2 @ L
        product = blas.dtrmm(1.0, factor, right, side=0, lower=1, trans_a=1)  # L^T @ (sigma2 @ L)
    else:
        product = factor.T @ sigma2 @ factor
    eigenvalues = scipy.linalg.eigvalsh(product, check_finite=False, overwrite_a=True)
    _check_negative(eigenvalues, "sigma1 sigma2", neg_tol)
    return float(np.sqrt(np.clip(eigenvalues, 0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2, *, neg_tol: float = NEG_TOL) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    mu: (D,), sigma: (D, D) symmetric PSD; numpy or tensors, any float dtype (computed in float64).
    Singular covariances are fine (the result stays finite). Raises MetricError on mismatched shapes,
    non-finite or non-symmetric input, or eigenvalues negative beyond `neg_tol` (relative to the largest).
    """
    mu1, sigma1 = _as_statistics(mu1, sigma1, "1")
    mu2, sigma2 = _as_statistics(mu2, sigma2, "2")
    if mu1.shape != mu2.shape:
        raise MetricError(f"statistics dimensions differ: mu1 has D={mu1.shape[0]}, mu2 has D={mu2.shape[0]}")
    diff = mu1 - mu2
    tr_covmean = trace_sqrt_product(sigma1, sigma2, neg_tol=neg_tol)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def fid_from_features(real, fake) -> float:
    """FID between two (N, D) feature sets (numpy or tensors, N >= 2 each, same D).

    Mean and covariance are computed on the tensors' device (float64); the D x D trace term on the CPU
    (float64 LAPACK). Measured on an H200 machine at N = 10,000, D = 2048: statistics 5 ms on the GPU, trace
    term 0.8 s on 16 CPU cores; at D = 128 both are milliseconds.
    """
    real = as_tensor(real, "real features", widen=torch.float64)
    fake = as_tensor(fake, "fake features", widen=torch.float64)
    check_same_dim(real, fake)
    check_same_device(real, fake)
    return frechet_distance(*_statistics(real), *_statistics(fake))
