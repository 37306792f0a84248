"""Frechet Wavelet Distance: the mean over wavelet packets of the Frechet distance between packet coefficients.

Paper: Veeramacheneni et al., ICLR 2025, "Frechet Wavelet Distance: A Domain-Agnostic Metric for Image
Generation". Reference implementation matched: pytorchfwd 1.0.1 (`compute_packet_statistics`, then
`_compute_avg_frechet_distance`): per packet p, the coefficients of every channel and position form one
vector per image; a Gaussian (mean, N - 1 covariance) is fitted per packet and set, and

    FWD = mean over p of FD(N(mu_p, S_p), N(mu'_p, S'_p)).

The input is the `wavelet` extractor's features: per image, the P packets' coefficients flattened packet by
packet, (N, P * K). Statistics and distances are ganbench's float64 `fid` functions; pytorchfwd fits its
statistics in float32, so the two agree to float32 round-off.
"""

from __future__ import annotations

import numpy as np
import torch

from ganbench.errors import MetricError
from ganbench.metrics._checks import as_tensor, check_positive_int, check_same_device, check_same_dim
from ganbench.metrics.fid import feature_statistics, frechet_distance


def packet_distances(real, fake, packets: int) -> np.ndarray:
    """(P,) float64 Frechet distances, one per packet, of (N, P * K) packet features (numpy or tensors, N >= 2)."""
    packets = check_positive_int(packets, "packets")
    real = as_tensor(real, "real features", widen=torch.float64)
    fake = as_tensor(fake, "fake features", widen=torch.float64)
    check_same_dim(real, fake)
    check_same_device(real, fake)
    if real.shape[1] % packets:
        raise MetricError(
            f"wavelet features: received D={real.shape[1]}, which is not a multiple of {packets} packets; "
            "expected features of the wavelet extractor (--extractor wavelet)"
        )
    real, fake = (x.reshape(x.shape[0], packets, -1) for x in (real, fake))
    return np.array([frechet_distance(*feature_statistics(real[:, p]), *feature_statistics(fake[:, p]))
                     for p in range(packets)])


def frechet_wavelet_distance(real, fake, packets: int) -> float:
    """FWD of (N, P * K) wavelet-packet features with P = `packets`: the mean of `packet_distances`."""
    return float(packet_distances(real, fake, packets).mean())
