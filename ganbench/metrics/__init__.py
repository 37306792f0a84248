"""Metric maths: pure functions from features, logits or predicted classes to numbers.

One module per metric family (fid, isc, kid, manifold: the k-NN precision/recall/density/coverage, classes,
memorization, cmmd, fd_infinity, fwd), bootstrap intervals, and the registry of names and directions. No module is
named after a function it holds, so every name below imports as documented: `from ganbench.metrics import prdc`
and `ganbench.metrics.inception_score(...)` are the functions (a package attribute named like a submodule would
become the module once that is imported). Names are resolved lazily so that importing the registry (for `--help`)
does not import scipy.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "feature_statistics": "fid",
    "StreamingStatistics": "fid",
    "frechet_distance": "fid",
    "fid_from_features": "fid",
    "inception_score": "isc",
    "kernel_inception_distance": "kid",
    "precision_recall": "manifold",
    "density_coverage": "manifold",
    "prdc": "manifold",
    "knn_metrics": "manifold",
    "classes_covered": "classes",
    "classes_covered_fraction": "classes",
    "class_kl_from_uniform": "classes",
    "authenticity": "memorization",
    "data_copying_ct": "memorization",
    "mifid": "memorization",
    "nearest_neighbours": "memorization",
    "cmmd_from_features": "cmmd",
    "fd_infinity_from_features": "fd_infinity",
    "frechet_wavelet_distance": "fwd",
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
