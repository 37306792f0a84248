"""Features -> metric values: every requested metric from ONE feature pass per image set.

This module wires the stages (features, statistics, metrics); the maths stays in `ganbench.metrics`.
Each value carries the options that produced it (KID subset size, k for the k-NN metrics, IS splits),
so a stored number always says how it was computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ganbench.errors import ConfigError, MetricError
from ganbench.features.extract import FeatureSet
from ganbench.metrics.registry import METRICS

# Extractors whose logits are the dataset's own classes, so predicted classes mean something.
CLASSIFIER_EXTRACTORS = ("lenet-fashion-mnist", "lenet-mnist")
KID_SUBSET_SIZE = 1000
KID_SUBSETS = 100
PR_K = 3  # Kynkaanniemi et al. 2019 (and torch-fidelity's prc)
DC_K = 5  # Naeem et al. 2020 (and prdc's default)
IS_SPLITS = 10
METRIC_SEED = 2020  # IS shuffling, KID subsets, bootstrap; torch-fidelity's default, so defaults give its numbers


@dataclass(frozen=True)
class MetricValue:
    """A metric's value with its spread: std over splits/subsets (IS, KID) and/or a bootstrap interval."""

    value: float
    std: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    options: dict = field(default_factory=dict)


def metric_options(name: str, n_real: int, n_fake: int, *, seed: int = METRIC_SEED, kid_subset_size: int | None = None,
                   bootstrap: int = 0) -> dict:
    """The options a metric is computed with: part of its protocol, known before computing it."""
    options: dict = {}
    if name == "is":
        options = {"splits": IS_SPLITS, "seed": seed}
    elif name == "kid":
        size = kid_subset_size or min(KID_SUBSET_SIZE, n_real, n_fake)
        # "draw": which set's subset is drawn first in each round. Results stored before it was recorded drew the
        # real subset first (other subsets than torch-fidelity's); naming it gives them another protocol key, so
        # they are recomputed instead of being mistaken for these.
        options = {"subsets": KID_SUBSETS, "subset_size": size, "degree": 3, "seed": seed, "draw": "generated-first"}
    elif name in ("precision", "recall"):
        options = {"k": PR_K}
    elif name in ("density", "coverage"):
        options = {"k": DC_K}
    if bootstrap and name in ("fid", "precision", "recall", "density", "coverage"):
        options = {**options, "bootstrap": bootstrap, "seed": seed}
    return options


def applicable_metrics(fake: FeatureSet) -> tuple[str, ...]:
    """Every registered metric the fake set's extractor output supports."""
    names = []
    for name, spec in METRICS.items():
        if spec.needs == "logits" and fake.logits is None:
            continue
        if spec.needs == "classes" and fake.protocol.get("extractor") not in CLASSIFIER_EXTRACTORS:
            continue
        names.append(name)
    return tuple(names)


def check_metrics(requested: Sequence[str], fake: FeatureSet) -> tuple[str, ...]:
    unknown = [m for m in requested if m not in METRICS]
    if unknown:
        raise ConfigError(f"unknown metric {', '.join(unknown)}; expected some of {', '.join(METRICS)} (--metrics)")
    possible = applicable_metrics(fake)
    impossible = [m for m in requested if m not in possible]
    if impossible:
        raise ConfigError(
            f"metric {', '.join(impossible)} does not apply to extractor {fake.protocol.get('extractor')!r} "
            f"(it supports {', '.join(possible)}); change --metrics or --extractor"
        )
    return tuple(requested)


def metrics_from_features(
    real: FeatureSet,
    fake: FeatureSet,
    metrics: Sequence[str] | None = None,
    *,
    seed: int = METRIC_SEED,
    kid_subset_size: int | None = None,
    bootstrap: int = 0,
) -> dict[str, MetricValue]:
    """metric name -> MetricValue for `fake` against `real`, both from the same extractor protocol.

    seed: the metrics' own randomness (IS shuffle, KID subsets, bootstrap resamples), recorded in the options.
    kid_subset_size: None uses 1000, or the smaller set's size when either has fewer samples (recorded). When the
        subsets are as large as both sets, KID's std is None: every subset would be the same data.
    bootstrap: K > 0 adds bootstrap 95% intervals (K resamples of both sets) to FID and the PRDC metrics.
    """
    from ganbench.metrics.bootstrap import bootstrap_intervals
    from ganbench.metrics.classes import class_kl_from_uniform, classes_covered
    from ganbench.metrics.fid import fid_from_features
    from ganbench.metrics.inception_score import inception_score
    from ganbench.metrics.kid import kernel_inception_distance
    from ganbench.metrics.prdc import density_coverage, precision_recall

    if real.protocol != fake.protocol:
        raise MetricError(f"real and fake features come from different protocols: {real.protocol} vs {fake.protocol}")
    names = check_metrics(metrics, fake) if metrics is not None else applicable_metrics(fake)
    for name in names:
        need = METRICS[name].min_samples
        if name == "kid":  # KID shrinks its subsets to the data unless a subset size is asked for
            need = kid_subset_size or 2
        if min(len(real), len(fake)) < need:
            raise ConfigError(
                f"{name} needs at least {need} samples per set, got {len(real)} real and {len(fake)} generated; "
                "raise --num-samples or leave that metric out of --metrics"
            )

    def options(name: str) -> dict:
        return metric_options(name, len(real), len(fake), seed=seed, kid_subset_size=kid_subset_size, bootstrap=bootstrap)

    out: dict[str, MetricValue] = {}
    if "fid" in names:
        out["fid"] = MetricValue(fid_from_features(real.features, fake.features), options=options("fid"))
    if "is" in names:
        mean, std = inception_score(fake.logits, splits=IS_SPLITS, seed=seed)
        out["is"] = MetricValue(mean, std, options=options("is"))
    if "kid" in names:
        kid = options("kid")
        mean, std = kernel_inception_distance(real.features, fake.features, kid["subsets"], kid["subset_size"], seed=seed)
        if kid["subset_size"] == len(real) == len(fake):
            # Every subset is then both whole sets reordered: the spread over subsets is 0 by construction
            # (rounding noise, ~1e-15), not a measured uncertainty, so none is stored.
            std = None
        out["kid"] = MetricValue(mean, std, options=kid)
    if {"precision", "recall"} & set(names):
        scores = precision_recall(real.features, fake.features, k=PR_K)
        for name in ("precision", "recall"):
            if name in names:
                out[name] = MetricValue(scores[name], options=options(name))
    if {"density", "coverage"} & set(names):
        scores = density_coverage(real.features, fake.features, k=DC_K)
        for name in ("density", "coverage"):
            if name in names:
                out[name] = MetricValue(scores[name], options=options(name))
    if {"classes_covered", "class_kl"} & set(names):
        predicted, num_classes = fake.predicted_classes, fake.logits.shape[1]
        if "classes_covered" in names:
            out["classes_covered"] = MetricValue(float(classes_covered(predicted, num_classes)))
        if "class_kl" in names:
            out["class_kl"] = MetricValue(class_kl_from_uniform(predicted, num_classes))

    if bootstrap:
        # Each group is resampled with its own k; the same seed gives every group the same resamples.
        for group, k in ((("fid",), DC_K), (("precision", "recall"), PR_K), (("density", "coverage"), DC_K)):
            wanted = tuple(m for m in group if m in out)
            if not wanted:
                continue
            intervals = bootstrap_intervals(real.features, fake.features, wanted, resamples=bootstrap, seed=seed, nearest_k=k)
            for name, interval in intervals.items():
                base = out[name]
                out[name] = MetricValue(base.value, base.std, interval.low, interval.high, base.options)
    return {name: out[name] for name in names}
