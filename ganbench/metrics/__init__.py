"""Metric maths: pure functions from features, logits or predicted classes to numbers.

One module per metric (fid, inception_score, kid, prdc, classes), bootstrap intervals, and the
registry of names and directions. Names are resolved lazily so that importing the registry (for
`--help`) does not import scipy. `inception_score` and `prdc` share their module's name, so import
them from their modules: `from ganbench.metrics.prdc import prdc` (a package attribute with that name
would be the module once it is imported).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "feature_statistics": "fid",
    "StreamingStatistics": "fid",
    "frechet_distance": "fid",
    "fid_from_features": "fid",
    "kernel_inception_distance": "kid",
    "precision_recall": "prdc",
    "density_coverage": "prdc",
    "classes_covered": "classes",
    "classes_covered_fraction": "classes",
    "class_kl_from_uniform": "classes",
    "bootstrap_intervals": "bootstrap",
    "Interval": "bootstrap",
    "METRICS": "registry",
    "MetricSpec": "registry",
    "metric_names": "registry",
    "get_metric": "registry",
    "direction": "registry",
    "metric_function": "registry",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"ganbench.metrics.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'ganbench.metrics' has no attribute {name!r}")
