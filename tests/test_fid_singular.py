"""FID on singular covariances (fewer samples than dimensions), pinned against an exact identity.

For centred data X1 (N1 x D) and X2 (N2 x D) with S_i = X_i^T X_i / (N_i - 1), the non-zero eigenvalues of S1 S2 are
the squared singular values of X1 X2^T / sqrt((N1 - 1)(N2 - 1)), so

    tr sqrt(S1 S2) = || X1 X2^T ||_* / sqrt((N1 - 1)(N2 - 1)),

a nuclear norm of a small N1 x N2 matrix that an SVD computes to float64 round-off. ganbench's symmetric route must
stay on it when N < D; pytorch-fid's general sqrtm is measured beside it (the README quotes both errors).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from ganbench.metrics.fid import frechet_distance, trace_sqrt_product


def _case(n1: int, n2: int, d: int, seed: int):
    rng = np.random.default_rng(seed)
    x1 = rng.standard_normal((n1, d)) @ rng.standard_normal((d, d)) / np.sqrt(d)
    x2 = rng.standard_normal((n2, d)) * 0.8 + 0.1
    c1, c2 = x1 - x1.mean(0), x2 - x2.mean(0)
    s1, s2 = c1.T @ c1 / (n1 - 1), c2.T @ c2 / (n2 - 1)
    exact = np.linalg.svd(c1 @ c2.T, compute_uv=False).sum() / np.sqrt((n1 - 1) * (n2 - 1))
    return x1.mean(0), s1, x2.mean(0), s2, exact


@pytest.mark.parametrize(("n1", "n2", "d"), [(20, 20, 64), (50, 40, 256), (100, 100, 300)])
def test_trace_sqrt_product_equals_the_nuclear_norm_identity_when_n_is_below_d(n1, n2, d):
    _, s1, _, s2, exact = _case(n1, n2, d, seed=n1 + d)
    # the D - N zero eigenvalues come back as round-off (~1e-16 of the largest); their square roots leave ~1e-8
    assert trace_sqrt_product(s1, s2) == pytest.approx(exact, rel=1e-7)


def test_fid_on_singular_covariances_is_closer_to_the_exact_value_than_pytorch_fids_sqrtm():
    from pytorch_fid.fid_score import calculate_frechet_distance

    ours, theirs = [], []
    for seed in range(3):
        mu1, s1, mu2, s2, exact_trace = _case(50, 50, 256, seed)
        diff = mu1 - mu2
        exact = diff @ diff + np.trace(s1) + np.trace(s2) - 2 * exact_trace
        with warnings.catch_warnings():  # sqrtm warns that the product is singular
            warnings.simplefilter("ignore")
            theirs.append(abs(calculate_frechet_distance(mu1, s1, mu2, s2) - exact) / exact)
        ours.append(abs(frechet_distance(mu1, s1, mu2, s2) - exact) / exact)
    assert max(ours) < 2e-8
    assert max(ours) < min(theirs)
