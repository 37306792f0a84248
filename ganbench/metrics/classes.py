"""Class-balance metrics from the predicted classes of generated samples (mode coverage / collapse).

`classes_covered` counts the classes predicted at least once (as in mode-counting evaluations such as
Srivastava et al. 2017, "VEEGAN", on stacked MNIST); `class_kl_from_uniform` is KL(p_hat || uniform)
of the predicted-class histogram in nats: 0 for perfectly balanced predictions, log(C) when every
sample falls in one class.
"""

from __future__ import annotations

import numpy as np
import torch

from ganbench.errors import MetricError
from ganbench.metrics._checks import check_positive_int


def class_histogram(pred, num_classes: int) -> np.ndarray:
    """Counts (C,) int64 of predicted class indices pred: (N,) integers in [0, num_classes), N >= 1."""
    num_classes = check_positive_int(num_classes, "num_classes")
    if isinstance(pred, torch.Tensor):
        pred = pred.detach().cpu().numpy()
    pred = np.asarray(pred)
    if pred.ndim != 1 or pred.size == 0:
        raise MetricError(f"pred: expected a non-empty 1-D array of class indices, received shape {pred.shape}")
    if not np.issubdtype(pred.dtype, np.integer):
        raise MetricError(f"pred: expected integer class indices, received dtype {pred.dtype} (take argmax of logits first)")
    if pred.min() < 0 or pred.max() >= num_classes:
        raise MetricError(
            f"pred: class indices range over [{pred.min()}, {pred.max()}]; expected values in [0, {num_classes - 1}]"
        )
    return np.bincount(pred, minlength=num_classes).astype(np.int64)


def classes_covered(pred, num_classes: int) -> int:
    """Number of classes predicted at least once (0..num_classes)."""
    return int(np.count_nonzero(class_histogram(pred, num_classes)))


def classes_covered_fraction(pred, num_classes: int) -> float:
    """`classes_covered` divided by num_classes (0..1)."""
    return classes_covered(pred, num_classes) / num_classes


def class_kl_from_uniform(pred, num_classes: int) -> float:
    """KL(p_hat || U) in nats, p_hat the predicted-class frequencies: 0 balanced, log(C) total collapse."""
    counts = class_histogram(pred, num_classes)
    p = counts[counts > 0] / counts.sum()  # 0 log 0 = 0
    return float(np.sum(p * np.log(p * num_classes)))
