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


_SPECS = (
    MetricSpec("fid", "lower", "features", 2, "ganbench.metrics.fid:fid_from_features", -1,
               "Frechet distance between Gaussians fitted to real and generated features (Heusel et al. 2017)"),
    MetricSpec("is", "higher", "logits", 10, "ganbench.metrics.inception_score:inception_score", 0,
               "Inception Score, exp E KL(p(y|x) || p(y)) over 10 splits of the generated logits (Salimans et al. 2016)"),
    MetricSpec("kid", "lower", "features", 1000, "ganbench.metrics.kid:kernel_inception_distance", 0,
               "Kernel Inception Distance, unbiased polynomial-kernel MMD^2 over 100 subsets of 1000 (Binkowski et al. 2018)"),
    MetricSpec("precision", "higher", "features", 4, "ganbench.metrics.prdc:precision_recall", "precision",
               "fraction of generated samples inside some real sample's 3-NN ball (Kynkaanniemi et al. 2019)"),
    MetricSpec("recall", "higher", "features", 4, "ganbench.metrics.prdc:precision_recall", "recall",
               "fraction of real samples inside some generated sample's 3-NN ball (Kynkaanniemi et al. 2019)"),
    MetricSpec("density", "higher", "features", 6, "ganbench.metrics.prdc:density_coverage", "density",
               "mean number of real 5-NN balls holding a generated sample, over 5 (Naeem et al. 2020)"),
    MetricSpec("coverage", "higher", "features", 6, "ganbench.metrics.prdc:density_coverage", "coverage",
               "fraction of real samples whose 5-NN ball holds a generated sample (Naeem et al. 2020)"),
    MetricSpec("classes_covered", "higher", "classes", 1, "ganbench.metrics.classes:classes_covered", -1,
               "number of classes predicted at least once among generated samples"),
    MetricSpec("class_kl", "lower", "classes", 1, "ganbench.metrics.classes:class_kl_from_uniform", -1,
               "KL divergence (nats) of the predicted-class histogram from uniform: 0 balanced, log C collapsed"),
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
