"""Inception Score from classifier logits.

Paper: Salimans et al. 2016, "Improved Techniques for Training GANs". Reference implementation
matched: torch-fidelity's `metric_isc.isc_features_to_metric` (softmax in float64, samples shuffled
by `np.random.RandomState(seed).permutation`, split i covering rows [i N // splits, (i + 1) N // splits),
score exp(mean KL(p(y|x) || p(y))) per split, population std over splits).
"""

from __future__ import annotations

import numpy as np
import torch

from ganbench.errors import MetricError
from ganbench.metrics._checks import TORCH_FIDELITY_SEED, as_numpy, check_positive_int, check_seed

DEFAULT_SEED = TORCH_FIDELITY_SEED  # so defaults give torch-fidelity's number


def inception_score(logits, splits: int = 10, seed: int = DEFAULT_SEED, shuffle: bool = True) -> tuple[float, float]:
    """(mean, std) of the Inception Score over `splits` equal parts of the samples.

    logits: (N, C) numpy array or tensor of unnormalised class scores (softmax is applied here),
    N >= splits. With splits=1 the result does not depend on the seed. The std is the population std
    (ddof 0) over splits, as torch-fidelity reports it.
    """
    splits = check_positive_int(splits, "splits")
    seed = check_seed(seed)
    x = as_numpy(logits, "logits", min_samples=max(splits, 1))
    n = x.shape[0]
    if shuffle and splits > 1:
        x = x[np.random.RandomState(seed).permutation(n)]
    # log-softmax through torch keeps exp/log stable for large logits; float64 throughout
    log_p = torch.from_numpy(x).log_softmax(dim=1).numpy()
    p = np.exp(log_p)
    scores = []
    for i in range(splits):
        part = slice(i * n // splits, (i + 1) * n // splits)
        p_part, log_p_part = p[part], log_p[part]
        marginal = p_part.mean(axis=0)
        # A class whose probability underflows to 0 in every row of the split contributes 0 * (...) = 0 to the KL
        # whatever its log marginal is, so 0 stands in for log(0) (torch-fidelity gets 0 * inf = NaN there);
        # log_p (log_softmax of finite logits) is finite, so every other term is the same as torch-fidelity's.
        log_marginal = np.log(marginal, out=np.zeros_like(marginal), where=marginal > 0)
        kl = (p_part * (log_p_part - log_marginal)).sum(axis=1)
        scores.append(float(np.exp(kl.mean())))
    if not np.isfinite(scores).all():
        raise MetricError(f"inception_score: a split score is not finite ({scores}); logits may be extreme")
    return float(np.mean(scores)), float(np.std(scores))
