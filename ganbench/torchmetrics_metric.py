"""`GanbenchMetric`: FID, KID and precision/recall/density/coverage as a torchmetrics `Metric`, for training loops.

`update(images, real)` runs a ganbench extractor (a registered name, or a `FeatureExtractor`) on uint8 NCHW images
and accumulates state that fits the maths; `compute()` calls ganbench's pure functions on it, so its values equal
`frechet_distance` (of the sets' statistics), `kernel_inception_distance`, `precision_recall` and
`density_coverage` on the same features, with `ganbench eval`'s options (KID: 100 subsets of min(1000, N) drawn
with seed 2020; k = 3 for precision/recall, 5 for density/coverage).

The state, registered with `add_state` so that `.to(device)` moves it with the extractor (a submodule) and
torchmetrics' own sync reduces it across processes:
- FID: float64 sums per set (count, sum of x, sum of x x^T), as torchmetrics' FrechetInceptionDistance keeps:
  D^2 + D + 1 numbers per set however many images pass through update(). The covariance from these raw moments
  agrees with ganbench's two-pass statistics to ~1e-9 relative in FID (lenet features), and the order of the sums
  (batches, ranks) moves the last digits, as it does in torchmetrics.
- KID and the k-NN metrics need every feature, so asking for any of them keeps all features (float32, N x D per
  set; concatenated across processes). `max_samples` caps each set in each process: the images of a set beyond it
  are not added, to any metric, so every metric sees the same images.
With `reset_real_features=False`, `reset()` keeps the real set, so a training loop extracts it once. Calling the
metric adds a batch and returns None (no per-batch value); dtype conversions leave it in its defined precision.
Features whose mean is far larger than their spread lose digits in the raw moments (about 1e-3 relative in FID
at a mean 1,000 times the spread, as in torchmetrics); lenet, Inception and the other extractors here are near 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from ganbench.errors import ConfigError, MetricError, one_line
from ganbench.features.base import FeatureExtractor

METRICS = ("fid", "kid", "precision", "recall", "density", "coverage")
_SETS = ("real", "fake")


_ROUND_OFF = 1e-12  # float64 sums of D x D products: cancellation leaves ~1e-16 relative, far below this


class GanbenchMetric(Metric):
    """FID / KID / PRDC of generated against real images through one ganbench extractor; compute() -> {name: value}.

    extractor: a registered name (`ganbench.features.registry`) built with `extractor_options` (weights=, ...),
        or a FeatureExtractor. It runs in eval mode whatever the training mode of the module holding this metric.
    metrics: some of METRICS. compute() returns each as a 0-d float64 tensor, plus 'kid_std' with 'kid' (NaN when
        every KID subset is both whole sets, equal counts under 1,000: no spread is measured, as eval stores none).
    """

    is_differentiable = False
    higher_is_better = None  # FID and KID lower, the k-NN metrics higher
    full_state_update = False

    def __init__(self, extractor: str | FeatureExtractor = "inception", metrics: Sequence[str] = ("fid",), *,
                 max_samples: int | None = None, reset_real_features: bool = True, extractor_options: dict | None = None,
                 **kwargs) -> None:
        try:
            super().__init__(**kwargs)
        except (ValueError, TypeError) as exc:  # torchmetrics' keywords (sync_on_compute=, ...) checked there
            raise ConfigError(f"GanbenchMetric: {one_line(exc)}") from exc
        if not isinstance(metrics, str | Sequence) or not all(isinstance(m, str) for m in metrics):
            raise ConfigError(f"metrics must be a metric name or a sequence of them, got {type(metrics).__name__}")
        metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
        unknown = [m for m in metrics if m not in METRICS]
        if unknown or not metrics:
            raise ConfigError(f"unknown metric {', '.join(unknown) or '(none)'}; GanbenchMetric computes some of "
                              f"{', '.join(METRICS)} (metrics=)")
        if max_samples is not None and (isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 2):
            raise ConfigError(f"max_samples must be an integer >= 2 or None, got {max_samples!r}")
        if isinstance(extractor, str):
            from ganbench.features.registry import build_extractor

            try:
                extractor = build_extractor(extractor, **{"device": "cpu", **(extractor_options or {})})
            except TypeError as exc:  # an option the builder does not take
                raise ConfigError(f"extractor_options for {extractor}: {one_line(exc)}") from exc
        elif not isinstance(extractor, FeatureExtractor):
            raise ConfigError(f"extractor must be a registered name or a ganbench FeatureExtractor, "
                              f"got {type(extractor).__name__}")
        self.extractor = extractor.eval().requires_grad_(False)
        self.metrics, self.max_samples, self.reset_real_features = metrics, max_samples, reset_real_features
        self.keeps_features = any(m != "fid" for m in metrics)
        d = extractor.feature_dim
        for name in _SETS:
            self.add_state(f"{name}_count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
            if "fid" in metrics:
                self.add_state(f"{name}_sum", torch.zeros(d, dtype=torch.float64), dist_reduce_fx="sum")
                self.add_state(f"{name}_outer", torch.zeros(d, d, dtype=torch.float64), dist_reduce_fx="sum")
            if self.keeps_features:
                self.add_state(f"{name}_features", [], dist_reduce_fx="cat")

    @property
    def protocol(self) -> dict:
        """The extractor's protocol (name, preprocessing, weights sha256): what the values depend on besides the images."""
        return dict(self.extractor.protocol)

    def train(self, mode: bool = True) -> GanbenchMetric:
        super().train(mode)
        self.extractor.eval()  # BatchNorm and dropout in eval mode: features must not depend on the loop's phase
        return self

    def forward(self, images: torch.Tensor, real: bool) -> None:
        """`metric(images, real=...)` adds the batch, as update() does, and returns None: a set metric has no value
        for one batch (torchmetrics' forward would reset, update and merge, adding a kept real set again)."""
        self.update(images, real)

    def _apply(self, fn, exclude_state=""):
        """Moves keep working (`.to(device)`, `.cuda()`); dtype conversions (`.to(dtype)`, `set_dtype`) leave the
        extractor's float32 weights and the float64 sums as they are, as torchmetrics' `.double()` leaves a metric:
        the values are defined in that precision (choose a reduced one with the extractor's `precision=`)."""
        probes = {dtype: fn(torch.zeros((), dtype=dtype, device=self.device)) for dtype in (torch.float32, torch.float64)}
        if any(probe.dtype != dtype for dtype, probe in probes.items()):
            device = probes[torch.float32].device
            return super()._apply(lambda t: t.to(device), exclude_state)
        return super()._apply(fn, exclude_state)

    def update(self, images: torch.Tensor, real: bool) -> None:
        """Add a batch of uint8 NCHW images (0..255) to the real or the generated set."""
        if not isinstance(images, torch.Tensor):
            raise ConfigError(f"images must be a torch.Tensor of uint8 NCHW images, got {type(images).__name__}")
        if not isinstance(real, bool):
            raise ConfigError(f"real must be True or False, got {real!r}")
        name = "real" if real else "fake"
        features = self.extractor(images.to(self.device)).features.float()
        if self.max_samples is not None:
            room = max(self.max_samples - int(getattr(self, f"{name}_count")), 0)
            features = features[:room]
        if features.shape[0] == 0:
            return
        features = features.clone()  # out of inference mode, so it can be kept and synced
        setattr(self, f"{name}_count", getattr(self, f"{name}_count") + features.shape[0])
        if "fid" in self.metrics:
            wide = features.double()
            getattr(self, f"{name}_sum").add_(wide.sum(dim=0))
            getattr(self, f"{name}_outer").addmm_(wide.T, wide)
        if self.keeps_features:
            getattr(self, f"{name}_features").append(features)

    def compute(self) -> dict[str, torch.Tensor]:
        from ganbench.metric_values import DC_K, PR_K, kid_spread_measured, metric_options
        from ganbench.metrics.fid import frechet_distance
        from ganbench.metrics.kid import kernel_inception_distance
        from ganbench.metrics.manifold import knn_metrics

        n_real, n_fake = int(self.real_count), int(self.fake_count)
        if min(n_real, n_fake) < 2:
            raise MetricError(f"GanbenchMetric: received {n_real} real and {n_fake} generated images; each set needs at "
                              "least 2 (update(images, real=True) and update(images, real=False))")
        out: dict[str, float] = {}
        if "fid" in self.metrics:
            out["fid"] = frechet_distance(*self._statistics("real"), *self._statistics("fake"))
        if self.keeps_features:
            real, fake = dim_zero_cat(self.real_features), dim_zero_cat(self.fake_features)
            if "kid" in self.metrics:
                kid = metric_options("kid", n_real, n_fake)
                out["kid"], out["kid_std"] = kernel_inception_distance(real, fake, kid["subsets"], kid["subset_size"],
                                                                       degree=kid["degree"], seed=kid["seed"])
                if not kid_spread_measured(kid, n_real, n_fake):  # eval stores None; a tensor says NaN
                    out["kid_std"] = float("nan")
            pr_k = PR_K if {"precision", "recall"} & set(self.metrics) else None
            dc_k = DC_K if {"density", "coverage"} & set(self.metrics) else None
            if pr_k or dc_k:
                scores = knn_metrics(real, fake, pr_k=pr_k, dc_k=dc_k)
                out.update({m: scores[m] for m in ("precision", "recall", "density", "coverage") if m in self.metrics})
        return {name: torch.tensor(value, dtype=torch.float64, device=self.device) for name, value in out.items()}

    def _statistics(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """mu (D,) and sigma (D, D) with N - 1 normalisation, from the float64 sums (torchmetrics' formula)."""
        n = getattr(self, f"{name}_count").to(torch.float64)
        mu = getattr(self, f"{name}_sum") / n
        outer = getattr(self, f"{name}_outer")
        sigma = (outer - n * torch.outer(mu, mu)) / (n - 1)
        # Raw moments cancel: where every sample is the same (a collapsed generator) sigma is round-off of either
        # sign, ~1e-16 of the second moments, whose negative eigenvalues frechet_distance rightly refuses. A
        # covariance that small is no variance at all.
        if sigma.abs().max() <= _ROUND_OFF * (outer.abs().max() / n):
            sigma = torch.zeros_like(sigma)
        return mu.cpu(), ((sigma + sigma.T) / 2).cpu()

    def reset(self) -> None:
        if self.reset_real_features:
            super().reset()
            return
        # torchmetrics clears list states in place, so the kept features need a list of their own
        kept = {k: (list(v) if isinstance(v, list) else v) for k in self._defaults if k.startswith("real_")
                for v in [getattr(self, k)]}
        super().reset()
        for k, value in kept.items():
            setattr(self, k, value)
