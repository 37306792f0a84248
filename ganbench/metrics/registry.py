"""Metric registry: names, better direction, inputs and minimum sample counts.

Its keys feed the CLI's `--metrics` choices and the leaderboard's ranking directions. Functions are
referenced as "module:function" strings and imported on first use, so listing names imports nothing
heavy.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Literal

from ganbench.errors import ConfigError


@dataclass(frozen=True)
class MetricSpec:
    name: str
    direction: Literal["lower", "higher"]  # which values are better
    needs: Literal["features", "logits", "classes"]  # extractor output the metric consumes
    min_samples: int  # per set, with the function's default options
    function: str  # "module:function" computing it; the function's result holds the value under `key`
    key: str | int  # key (dict result) or index (tuple result) of this metric's value
    description: str
    # What the reference must be: "any"; "training" for the memorization metrics (they compare with the data the
    # model saw); "training+heldout" when they also need held-out data of the same distribution (C_T).
    reference: Literal["any", "training", "training+heldout"] = "any"
    # Computed when --metrics names none: off for the costly ones (FD-infinity: 15 Frechet distances; CMMD: three
    # N x N kernel matrices), which are computed when asked for.
    default: bool = True
    feature_space: str | None = None  # the only extractor whose features the metric is defined on (None: any)


_SPECS = (
    MetricSpec("fid", "lower", "features", 2, "ganbench.metrics.fid:fid_from_features", -1,
               "Frechet distance between Gaussians fitted to real and generated features (Heusel et al. 2017)"),
    MetricSpec("is", "higher", "logits", 10, "ganbench.metrics.isc:inception_score", 0,
               "Inception Score, exp E KL(p(y|x) || p(y)) over 10 splits of the generated logits (Salimans et al. 2016)"),
    MetricSpec("kid", "lower", "features", 1000, "ganbench.metrics.kid:kernel_inception_distance", 0,
               "Kernel Inception Distance, unbiased polynomial-kernel MMD^2 over 100 subsets of 1000 (Binkowski et al. 2018)"),
    MetricSpec("precision", "higher", "features", 4, "ganbench.metrics.manifold:precision_recall", "precision",
               "fraction of generated samples inside some real sample's 3-NN ball (Kynkaanniemi et al. 2019)"),
    MetricSpec("recall", "higher", "features", 4, "ganbench.metrics.manifold:precision_recall", "recall",
               "fraction of real samples inside some generated sample's 3-NN ball (Kynkaanniemi et al. 2019)"),
    MetricSpec("density", "higher", "features", 6, "ganbench.metrics.manifold:density_coverage", "density",
               "mean number of real 5-NN balls holding a generated sample, over 5 (Naeem et al. 2020)"),
    MetricSpec("coverage", "higher", "features", 6, "ganbench.metrics.manifold:density_coverage", "coverage",
               "fraction of real samples whose 5-NN ball holds a generated sample (Naeem et al. 2020)"),
    MetricSpec("classes_covered", "higher", "classes", 1, "ganbench.metrics.classes:classes_covered", -1,
               "number of classes predicted at least once among generated samples"),
    MetricSpec("class_kl", "lower", "classes", 1, "ganbench.metrics.classes:class_kl_from_uniform", -1,
               "KL divergence (nats) of the predicted-class histogram from uniform: 0 balanced, log C collapsed"),
    MetricSpec("authenticity", "higher", "features", 2, "ganbench.metrics.memorization:authenticity", -1,
               "AuthPct/100: share of generated samples farther from their nearest training sample than it is from its "
               "own (Alaa et al. 2022); 0 for copies", "training"),
    MetricSpec("mifid", "lower", "features", 2, "ganbench.metrics.memorization:mifid", "mifid",
               "FID divided by the memorization penalty, the mean cosine distance to the nearest training sample when "
               "below 0.1 (Bai et al. 2021)", "training"),
    MetricSpec("data_copying_ct", "higher", "features", 20, "ganbench.metrics.memorization:data_copying_ct",
               "data_copying_ct", "C_T: Mann-Whitney z of generated vs held-out distances to the training set in k-means "
               "cells (Meehan et al. 2020); << 0 copying, > 0 underfitting", "training+heldout",
               default=False),  # asked for by name: its k-means costs ~10x a checkpoint's other metrics on a CPU
    MetricSpec("cmmd", "lower", "features", 2, "ganbench.metrics.cmmd:cmmd_from_features", -1,
               "1000 x MMD^2, Gaussian kernel (sigma 10) on embeddings, normally CLIP's; unbiased unless the options say "
               "biased (Jayasumana et al. 2024)", default=False),
    MetricSpec("fd_infinity", "lower", "features", 4, "ganbench.metrics.fd_infinity:fd_infinity_from_features", -1,
               "Frechet distance extrapolated to infinitely many generated samples: intercept of FD_N against 1/N "
               "(Chong & Forsyth 2020)", default=False),
    MetricSpec("fwd", "lower", "features", 2, "ganbench.metrics.fwd:frechet_wavelet_distance", -1,
               "Frechet Wavelet Distance: mean over haar level-4 wavelet packets of the packets' Frechet distance "
               "(Veeramacheneni et al. 2025)", feature_space="wavelet"),
)
METRICS: dict[str, MetricSpec] = {spec.name: spec for spec in _SPECS}


def metric_names() -> tuple[str, ...]:
    return tuple(METRICS)


def get_metric(name: str) -> MetricSpec:
    if name not in METRICS:
        raise ConfigError(f"unknown metric {name!r}; expected one of {', '.join(METRICS)} (--metrics)")
    return METRICS[name]


def direction(name: str) -> str:
    """'lower' or 'higher': which values of the metric are better."""
    return get_metric(name).direction


def metric_function(name: str):
    """The callable computing the metric (imported on first use)."""
    module_name, function_name = get_metric(name).function.split(":")
    return getattr(importlib.import_module(module_name), function_name)
