"""Features -> metric values: every requested metric from ONE feature pass per image set.

This module wires the stages (features, statistics, metrics); the maths stays in `ganbench.metrics`.
Each value carries the options that produced it (KID subset size, k for the k-NN metrics, IS splits),
so a stored number always says how it was computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ganbench.errors import ConfigError, MetricError
from ganbench.features.extract import FeatureSet
from ganbench.metrics.registry import METRICS

if TYPE_CHECKING:
    import torch

# Extractors whose logits are the dataset's own classes, so predicted classes mean something.
CLASSIFIER_EXTRACTORS = ("lenet-fashion-mnist", "lenet-mnist")
KID_SUBSET_SIZE = 1000
KID_SUBSETS = 100
PR_K = 3  # Kynkaanniemi et al. 2019 (and torch-fidelity's prc)
DC_K = 5  # Naeem et al. 2020 (and prdc's default)
IS_SPLITS = 10
CMMD_ESTIMATOR = "unbiased"  # the paper's U-statistic; "biased" is the official code's V-statistic
FD_INFINITY_POINTS, FD_INFINITY_MIN_N = 15, 5000  # Chong & Forsyth's defaults: 15 values of N from 5000 to all
METRIC_SEED = 2020  # IS shuffling, KID subsets, bootstrap; torch-fidelity's default, so defaults give its numbers
MIFID_EPS = 0.1  # torchmetrics' and the Kaggle competition's cosine-distance threshold
CT_CELLS, CT_MIN_GENERATED, CT_SEED = 50, 20, 0  # C_T: k-means cells of the training set, tau * m, k-means seed


@dataclass(frozen=True)
class MetricValue:
    """A metric's value with its spread: std over splits/subsets (IS, KID) and/or a bootstrap interval."""

    value: float
    std: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    options: dict = field(default_factory=dict)


def metric_options(name: str, n_real: int, n_fake: int, *, seed: int = METRIC_SEED, kid_subset_size: int | None = None,
                   bootstrap: int = 0, heldout: str | None = None, cmmd_estimator: str = CMMD_ESTIMATOR) -> dict:
    """The options a metric is computed with: part of its protocol, known before computing it.

    heldout: the name of the held-out reference C_T compares with (a different held-out set is another protocol)."""
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
    elif name == "cmmd":
        options = {"estimator": cmmd_estimator, "sigma": 10.0, "scale": 1000.0}
    elif name == "fd_infinity":  # fewer than 5000 generated samples: from half of them (the reference needs more)
        min_n = FD_INFINITY_MIN_N if n_fake > FD_INFINITY_MIN_N else n_fake // 2
        options = {"points": FD_INFINITY_POINTS, "min_n": min_n, "seed": seed}
    elif name == "mifid":
        options = {"cosine_eps": MIFID_EPS}
    elif name == "data_copying_ct":
        options = {"cells": CT_CELLS, "min_generated": CT_MIN_GENERATED, "kmeans_seed": CT_SEED, "heldout": heldout}
    if bootstrap and name in ("fid", "precision", "recall", "density", "coverage"):
        options = {**options, "bootstrap": bootstrap, "seed": seed}
    return options


def applicable_metrics(fake: FeatureSet, *, training: bool = False, heldout: bool = False, by_name: bool = False
                       ) -> tuple[str, ...]:
    """Every registered metric the fake set's extractor output supports; the memorization metrics only against a
    training-split reference (`training`), and C_T only with a held-out set beside it (`heldout`). Unless asked for
    `by_name`, without the costly metrics (cmmd, fd_infinity), and on an extractor made for one metric (wavelet: fwd)
    only that metric."""
    extractor = fake.protocol.get("extractor")
    own_metric_spaces = {spec.feature_space for spec in METRICS.values()}
    names = []
    for name, spec in METRICS.items():
        if spec.feature_space not in (None, extractor):
            continue
        if not by_name and (not spec.default or (extractor in own_metric_spaces and spec.feature_space != extractor)):
            continue
        if (spec.reference != "any" and not training) or (spec.reference == "training+heldout" and not heldout):
            continue
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
    # asked for by name: any reference may be the training set, and the costly metrics are computed too
    possible = applicable_metrics(fake, training=True, heldout=True, by_name=True)
    impossible = [m for m in requested if m not in possible]
    if impossible:
        raise ConfigError(
            f"metric {', '.join(impossible)} does not apply to extractor {fake.protocol.get('extractor')!r} "
            f"(it supports {', '.join(possible)}); change --metrics or --extractor"
        )
    return tuple(requested)


def kid_spread_measured(options: dict, n_real: int, n_fake: int) -> bool:
    """Whether KID's std over subsets measures anything: with subsets as large as both sets, every subset is both
    whole sets reordered, and the spread is 0 by construction (rounding noise, ~1e-15), so none is reported."""
    return not options["subset_size"] == n_real == n_fake


def metrics_from_features(
    real: FeatureSet,
    fake: FeatureSet,
    metrics: Sequence[str] | None = None,
    *,
    seed: int = METRIC_SEED,
    kid_subset_size: int | None = None,
    bootstrap: int = 0,
    device: str | torch.device | None = None,
    heldout: FeatureSet | None = None,
    cmmd_estimator: str = CMMD_ESTIMATOR,
) -> dict[str, MetricValue]:
    """metric name -> MetricValue for `fake` against `real`, both from the same extractor protocol.

    seed: the metrics' own randomness (IS shuffle, KID subsets, bootstrap resamples), recorded in the options.
    kid_subset_size: None uses 1000, or the smaller set's size when either has fewer samples (recorded). When the
        subsets are as large as both sets, KID's std is None: every subset would be the same data.
    bootstrap: K > 0 adds bootstrap 95% intervals (K resamples of both sets) to FID and the PRDC metrics.
    device: where the feature maths runs (FID statistics, KID kernels, k-NN balls, bootstrap); the features
        are moved there once. None computes on the CPU. The values do not depend on it (k-NN counts are
        equal, FID and KID agree to float64 round-off).
    heldout: held-out data of the training distribution (the test split) when `real` is the model's training data:
        adds C_T (data_copying_ct). By default authenticity and mifid are computed when `real` comes from a
        training split (its source says split 'train'); asked for by name, against any reference.
    cmmd_estimator: "unbiased" (the paper's U-statistic) or "biased" (the official code's V-statistic), recorded.
    """
    import torch

    from ganbench.metrics.bootstrap import bootstrap_intervals
    from ganbench.metrics.classes import class_kl_from_uniform, classes_covered
    from ganbench.metrics.fid import fid_from_features
    from ganbench.metrics.isc import inception_score
    from ganbench.metrics.kid import kernel_inception_distance
    from ganbench.metrics.manifold import knn_metrics

    if real.protocol != fake.protocol:
        raise MetricError(f"real and fake features come from different protocols: {real.protocol} vs {fake.protocol}")
    training = real.source.get("split") == "train"
    names = (check_metrics(metrics, fake) if metrics is not None
             else applicable_metrics(fake, training=training, heldout=heldout is not None))
    if "data_copying_ct" in names and heldout is None:
        raise ConfigError("data_copying_ct needs held-out data beside the training reference; pass a training-split "
                          "reference and the test split of the same dataset (--reference DATASET:train[:N] --reference "
                          "DATASET:test), or leave it out of --metrics")
    if heldout is not None and heldout.protocol != real.protocol:
        raise MetricError(f"held-out and real features come from different protocols: {heldout.protocol} vs {real.protocol}")
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
        return metric_options(name, len(real), len(fake), seed=seed, kid_subset_size=kid_subset_size, bootstrap=bootstrap,
                              cmmd_estimator=cmmd_estimator)

    # moved once; without a device, numpy features stay numpy (the metric functions view them without copying)
    real_x, fake_x = (torch.as_tensor(x, device=device) if device is not None else x for x in (real.features, fake.features))
    out: dict[str, MetricValue] = {}
    if "fid" in names:
        out["fid"] = MetricValue(fid_from_features(real_x, fake_x), options=options("fid"))
    if "is" in names:
        mean, std = inception_score(fake.logits, splits=IS_SPLITS, seed=seed)
        out["is"] = MetricValue(mean, std, options=options("is"))
    if "kid" in names:
        kid = options("kid")
        mean, std = kernel_inception_distance(real_x, fake_x, kid["subsets"], kid["subset_size"], seed=seed)
        if not kid_spread_measured(kid, len(real), len(fake)):
            std = None
        out["kid"] = MetricValue(mean, std, options=kid)
    # one neighbour pass per set and one pass over the real-fake pairs serve all four k-NN metrics
    pr_k = PR_K if {"precision", "recall"} & set(names) else None
    dc_k = DC_K if {"density", "coverage"} & set(names) else None
    if pr_k or dc_k:
        scores = knn_metrics(real_x, fake_x, pr_k=pr_k, dc_k=dc_k)
        for name in ("precision", "recall", "density", "coverage"):
            if name in names:
                out[name] = MetricValue(scores[name], options=options(name))
    if {"authenticity", "mifid", "data_copying_ct"} & set(names):
        from ganbench.metrics.memorization import authenticity, data_copying_ct, mifid

        if "authenticity" in names:
            out["authenticity"] = MetricValue(authenticity(real_x, fake_x), options=options("authenticity"))
        if "mifid" in names:
            out["mifid"] = MetricValue(mifid(real_x, fake_x, MIFID_EPS)["mifid"], options=options("mifid"))
        if "data_copying_ct" in names:
            held = torch.as_tensor(heldout.features, device=device) if device is not None else heldout.features
            ct = data_copying_ct(real_x, held, fake_x, cells=CT_CELLS, min_generated=CT_MIN_GENERATED, seed=CT_SEED)
            out["data_copying_ct"] = MetricValue(ct["data_copying_ct"], options={**options("data_copying_ct"),
                                                                                 "heldout": _describe(heldout.source)})
    if {"cmmd", "fd_infinity", "fwd"} & set(names):
        from ganbench.features.wavelet import PACKETS
        from ganbench.metrics.cmmd import cmmd_from_features
        from ganbench.metrics.fd_infinity import fd_infinity_from_features
        from ganbench.metrics.fwd import frechet_wavelet_distance

        if "cmmd" in names:
            out["cmmd"] = MetricValue(cmmd_from_features(real_x, fake_x, estimator=cmmd_estimator), options=options("cmmd"))
        if "fd_infinity" in names:
            fdi = options("fd_infinity")
            value = fd_infinity_from_features(real_x, fake_x, points=fdi["points"], min_n=fdi["min_n"], seed=fdi["seed"])
            out["fd_infinity"] = MetricValue(value, options=fdi)
        if "fwd" in names:
            out["fwd"] = MetricValue(frechet_wavelet_distance(real_x, fake_x, PACKETS), options=options("fwd"))
    if {"classes_covered", "class_kl"} & set(names):
        predicted, num_classes = fake.predicted_classes, fake.logits.shape[1]
        if "classes_covered" in names:
            out["classes_covered"] = MetricValue(float(classes_covered(predicted, num_classes)))
        if "class_kl" in names:
            out["class_kl"] = MetricValue(class_kl_from_uniform(predicted, num_classes))

    wanted = tuple(m for m in ("fid", "precision", "recall", "density", "coverage") if m in out)
    if bootstrap and wanted:
        # every metric on the same resamples; precision/recall and density/coverage each with their own k
        intervals = bootstrap_intervals(real_x, fake_x, wanted, resamples=bootstrap, seed=seed, pr_k=PR_K, dc_k=DC_K,
                                        estimates={name: out[name].value for name in wanted})
        for name, interval in intervals.items():
            base = out[name]
            out[name] = MetricValue(base.value, base.std, interval.low, interval.high, base.options)
    return {name: out[name] for name in names}


def _describe(source: dict) -> str | None:
    """A held-out set's name from its FeatureSet source ('fashion-mnist:test'), or None when it has none."""
    if source.get("dataset") and source.get("split"):
        return f"{source['dataset']}:{source['split']}"
    return None
