"""One source -> its result rows: load -> samples -> features -> metrics -> rows, or failure rows.

This module knows nothing of ranks or processes. `ganbench.sweep` runs `Scorer.score` for each source, and under
torchrun hands it a `features` function that splits the samples across ranks; here a source is always whole.

Every failure of a source becomes rows with status 'failed' and its one-line reason, and the next source runs:
a source that cannot be read, a generator giving NaN, a reference it needs that cannot be loaded (that
reference's rows only), a metric that cannot be computed (too few samples: that metric's row, with why). A
source's rows, good and failed, are written in one transaction.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ganbench import __version__
from ganbench.config import EvalConfig
from ganbench.errors import ConfigError, GanbenchError, GanbenchWarning, SampleError, counted, one_line
from ganbench.features.extract import FeatureSet
from ganbench.metric_values import MetricValue, applicable_metrics, metric_options, metrics_from_features
from ganbench.metrics.registry import METRICS
from ganbench.protocol import DATASETS, METRIC_PROTOCOL_VERSION, default_references
from ganbench.reference import Reference, References, ReferenceStatistics, needs_reference_features, parse_reference
from ganbench.results import Protocol, ResultRow, ResultsStore, RunInfo
from ganbench.samples import (
    Source,
    generate,
    load_baseline_generator,
    load_folder_images,
    load_npz_images,
    load_user_generator,
    source_sha256,
)

UNREACHABLE = ("the memorization metrics need a DATASET:train[:N] reference, and data_copying_ct also the whole "
               "DATASET:test beside it")
UNKNOWN_REFERENCE = Reference("unknown:test")  # the failed rows of a checkpoint too broken to name its dataset


@dataclass(frozen=True)
class Loaded:
    """A source ready to give samples: a generator (module, latent size) or images, its run fields, its sample count."""

    run: dict
    count: int
    generator: tuple[torch.nn.Module, int] | None = None
    images: torch.Tensor | None = None


def load_source(source: Source, cfg: EvalConfig) -> Loaded:
    """The generator or the first --num-samples images of a source (never more are decoded)."""
    if source.kind == "checkpoint":
        module, latent_dim, run = load_baseline_generator(source.path)
        return Loaded(run, cfg.num_samples, generator=(module, latent_dim))
    if source.kind == "generator":
        return Loaded(dict(source.run), cfg.num_samples, generator=load_user_generator(cfg.generator, source.path))
    load = load_npz_images if source.kind == "npz" else load_folder_images
    images = load(source.path, limit=cfg.num_samples)
    if images.shape[0] == 0:
        raise SampleError(f"{source.label} yields no images")
    return Loaded(dict(source.run), int(images.shape[0]), images=images)


def samples(loaded: Loaded, cfg: EvalConfig, rows: tuple[int, int], device: str, progress=None) -> torch.Tensor:
    """Samples [start, stop) of a loaded source as uint8 NCHW: the seeded generator's, or the images'."""
    if loaded.images is not None:
        return loaded.images[rows[0] : rows[1]]
    module, latent_dim = loaded.generator
    images = generate(module, latent_dim, loaded.count, cfg.seed, cfg.batch_size, device, progress, rows=rows)
    if loaded.run.get("kind") == "generator" and images.numel() and int(images.min()) >= 127:
        warnings.warn(f"generator output is never negative (pixels {int(images.min())}..{int(images.max())} of 255): "
                      "ganbench reads a generator's output as [-1, 1] (tanh), -1 black, so [0, 1] images are scored "
                      "washed out to grey; if yours outputs [0, 1], return 2 * x - 1", GanbenchWarning, stacklevel=2)
    return images


@dataclass
class Outcome:
    """What scoring one source produced: its rows (written), and whether it failed or was already stored."""

    rows: list[ResultRow] = field(default_factory=list)
    failed: bool = False
    skipped: bool = False


@dataclass
class Scorer:
    """The per-source flow for one extractor. `features(source, loaded)` returns the source's generated features
    (the sweep decides how: in this process, or split across ranks); `log` prints one line."""

    cfg: EvalConfig
    extractor: object
    given: list[Reference]  # the parsed --reference list; empty: the source's dataset's defaults
    references: References
    store: ResultsStore
    device: str
    features: Callable[[Source, Loaded], FeatureSet]
    log: Callable[[str], None]

    def score(self, source: Source, loaded: Loaded | None = None, sha: str | None = None) -> Outcome:
        """Score a source read from its file, or one already in memory: `loaded` with the content `sha` its file
        has or would have (`ganbench train --eval-every` scores the generator it is training this way)."""
        started = time.perf_counter()
        sha = sha or _content_sha256(source)
        row = RowMaker(self, source, sha, started)
        if loaded is None:
            try:
                loaded = load_source(source, self.cfg)
            except GanbenchError as exc:
                return self._fail(row, dict(source.run), None, one_line(exc, limit=None))
        row.run = loaded.run
        if loaded.images is not None and loaded.count < self.cfg.num_samples:
            self.log(f"{source.label}: {counted(loaded.count, 'image')}, fewer than --num-samples "
                     f"{self.cfg.num_samples}; using all")
        try:
            references = self._references(loaded.run)
        except GanbenchError as exc:
            return self._fail(row, loaded.run, loaded.count, one_line(exc, limit=None))

        rows, todo, failed, computable_or_stored = [], [], False, False
        self._note_unreachable(source, references)
        row.heldout = self._heldouts(references)
        for reference in references:
            if not self.wanted(reference, references):  # a statistics file under an extractor it serves nothing of
                continue
            try:
                real = self.references.get(self.extractor, reference)
            except GanbenchError as exc:
                message = f"reference {reference.name}: {one_line(exc, limit=None)}"
                self.log(f"FAILED {source.label}: {message}")
                rows += [row.failed(m, reference, 0, loaded.count, message) for m in self.wanted(reference, references)]
                failed = True
                continue
            n_real = reference_count(real)
            wanted = self.wanted(reference, references)
            heldout = None
            if "data_copying_ct" in wanted:  # C_T compares with the held-out split; without it, C_T is left out
                held = self._heldout(reference, references)
                try:
                    heldout = self.references.get(self.extractor, held)
                except GanbenchError as exc:
                    self.log(f"note {source.label} vs {reference.name}: data_copying_ct not computed: held-out "
                             f"reference {held.name}: {one_line(exc)}")
                    wanted.remove("data_copying_ct")
            impossible = {m: why for m in wanted if (why := too_few(m, n_real, loaded.count))}
            if impossible:
                explicit = self.cfg.metrics is not None
                failed |= explicit
                self.log(f"{'FAILED' if explicit else 'note'} {source.label} vs {reference.name}: not computed: "
                         + "; ".join(f"{m} ({why})" for m, why in impossible.items()))
                rows += [row.failed(m, reference, n_real, loaded.count, f"not computed: {why}") for m, why in impossible.items()]
            possible = [m for m in wanted if m not in impossible]
            computable_or_stored |= bool(possible)
            done = set() if self.cfg.force else {
                m for m in possible
                if m in self.store.completed_metrics(sha, row.protocol(m, reference, n_real, loaded.count).key)
            }
            if [m for m in possible if m not in done]:
                todo.append((reference, real, [m for m in possible if m not in done], heldout))

        if not computable_or_stored and not failed:
            self.log(f"FAILED {source.label}: no metric can be computed from {loaded.count} sample(s)")
            return Outcome(failed=True)  # nothing to store; it is no 'already stored' skip
        if not todo and not rows and not failed:
            # results are keyed by content: a copy of a scored source is that source's rows, under its path
            paths = sorted({r["source_path"] for r in self.store.rows(source_sha256=sha, status="ok")})
            whose = ("its" if not paths or str(source.path) in paths
                     else f"the same content as {', '.join(paths[:2])}{', ...' if len(paths) > 2 else ''}, whose")
            self.log(f"skip {source.label}: {whose} {self.extractor.name} results are already in {self.cfg.results} "
                     "(--force recomputes)")
            return Outcome(skipped=True)

        self.store.require_writable()  # a read-only store that lacks these results: said before they are computed
        if todo:
            try:
                fake = self.features(source, loaded)
            except GanbenchError as exc:
                message = one_line(exc, limit=None)
                self.log(f"FAILED {source.label}: {message}")
                rows += [row.failed(m, ref, reference_count(real), loaded.count, message)
                         for ref, real, names, _ in todo for m in names]
                todo, failed = [], True
        for reference, real, names, heldout in todo:
            try:
                values = source_metrics(real, fake, names, self.cfg, heldout, self.device)
            except GanbenchError as exc:
                message = one_line(exc, limit=None)
                self.log(f"FAILED {source.label} vs {reference.name}: {message}")
                rows += [row.failed(m, reference, reference_count(real), loaded.count, message) for m in names]
                failed = True
                continue
            rows += [row.ok(m, value, reference, reference_count(real), len(fake)) for m, value in values.items()]
        self.store.write_results(rows, replace=self.cfg.force)  # one transaction: all of this source or nothing
        return Outcome(rows, failed=failed)

    def _fail(self, row: RowMaker, run: dict, count: int | None, message: str) -> Outcome:
        """Failed rows under the protocols a success would have (so a later success replaces each of them)."""
        self.log(f"FAILED {row.source.label}: {message}")
        row.run = run
        try:
            references = self._references(run)
        except GanbenchError:
            row.run = {**run, "dataset": None}
            references = [UNKNOWN_REFERENCE]  # no reference can be known for an unreadable checkpoint
        n_fake = count if count is not None else self.cfg.num_samples
        row.heldout = self._heldouts(references)
        rows = []
        for reference in references:
            try:
                n_real = 0 if reference is UNKNOWN_REFERENCE else reference_count(self.references.get(self.extractor, reference))
            except GanbenchError:
                n_real = 0
            rows += [row.failed(m, reference, n_real, n_fake, message) for m in self.wanted(reference, references)]
        self.store.write_results(rows)
        return Outcome(rows, failed=True)

    def _references(self, run: dict) -> list[Reference]:
        if self.given:
            return self.given
        # Selection (a seeded 10,000-image training subset) and reporting (the held-out test split: scoring
        # against the training images would reward memorisation; its 10,000 images match --num-samples).
        dataset = run.get("dataset")
        if dataset not in DATASETS:
            raise ConfigError(f"cannot tell the training dataset of this source ({dataset!r}); pass --reference DATASET:SPLIT")
        return [parse_reference(text) for text in default_references(dataset)]

    def wanted(self, reference: Reference, references: list[Reference]) -> list[str]:
        """The metrics this source is scored on against `reference` (checked against the extractor up front). The
        memorization metrics need a training-split reference, C_T also the test split of its dataset beside it."""
        training = reference.kind == "dataset" and reference.split == "train"
        heldout = self._heldout(reference, references) is not None
        shape = extractor_shape(self.extractor)
        if self.cfg.metrics is not None:
            possible = applicable_metrics(shape, training=training, heldout=heldout, by_name=True)
            wanted = [m for m in self.cfg.metrics if m in possible]
        else:
            wanted = list(applicable_metrics(shape, training=training, heldout=heldout))
        if reference.kind == "statistics":
            wanted = [m for m in wanted if not needs_reference_features(m)]
        return wanted

    @staticmethod
    def _heldout(reference: Reference, references: list[Reference]) -> Reference | None:
        """C_T's held-out set for a training-split reference: the test split of the same dataset, when scored too."""
        if reference.kind != "dataset" or reference.split != "train":
            return None
        return next((r for r in references if r.kind == "dataset" and r.dataset == reference.dataset
                     and r.split == "test" and r.count is None), None)

    def _heldouts(self, references: list[Reference]) -> dict[str, str]:
        return {r.name: held.name for r in references if (held := self._heldout(r, references)) is not None}

    def check_reachable(self) -> None:
        """Metrics of which no given reference can give any: an option error, before any source. A statistics
        reference that gives none under this extractor beside others that do: one line, and it is left out."""
        if not self.given:
            return
        name = self.extractor.name
        statistics = [r.name for r in self.given if r.kind == "statistics"]
        if not any(self.wanted(r, self.given) for r in self.given):
            if statistics and self.cfg.metrics is None:
                metrics = ", ".join(applicable_metrics(extractor_shape(self.extractor)))
                raise ConfigError(f"--reference {statistics[0]} holds statistics (mu, sigma), which serve fid only; the "
                                  f"{name} extractor's metrics ({metrics}) need the reference's features; pass the "
                                  "reference images, or --metrics fid")
            if self.cfg.metrics is None:
                return  # every source will say why in its own line
            raise ConfigError(f"--metrics {', '.join(self.cfg.metrics)}: none can be computed against --reference "
                              f"{', '.join(r.name for r in self.given)}: {UNREACHABLE}")

    def note_statistics(self) -> None:
        """Say once what each statistics reference serves under this extractor."""
        for reference in (r for r in self.given if r.kind == "statistics"):
            wanted = [m for m in self.wanted(reference, self.given) if METRICS[m].needs == "features"]  # not is, classes
            served = f"{', '.join(wanted)} is computed against it" if wanted else "nothing is computed against it"
            self.log(f"reference {reference.name} holds statistics (mu, sigma): {served} with the "
                     f"{self.extractor.name} extractor; the metrics of features need the reference images")

    def _note_unreachable(self, source: Source, references: list[Reference]) -> None:
        """Metrics asked for by name that no reference of this source can give: one line, and the rest is computed."""
        if self.cfg.metrics is None:
            return
        reachable = {m for r in references for m in self.wanted(r, references)}
        missing = [m for m in self.cfg.metrics if m not in reachable]
        if missing:
            self.log(f"note {source.label}: {', '.join(missing)} not computed: {UNREACHABLE}")


class RowMaker:
    """Result rows of one source: its protocol per (metric, reference) and the run, time and version fields."""

    def __init__(self, scorer: Scorer, source: Source, sha: str, started: float):
        self.scorer, self.source, self.sha, self.started = scorer, source, sha, started
        self.run: dict = dict(source.run)
        self.heldout: dict[str, str] = {}  # reference name -> the held-out reference C_T was computed with

    def protocol(self, metric: str, reference: Reference, n_real: int, n_fake: int) -> Protocol:
        scorer = self.scorer
        options = metric_options(metric, n_real, n_fake, bootstrap=scorer.cfg.bootstrap,
                                 cmmd_estimator=scorer.cfg.cmmd_estimator, heldout=self.heldout.get(reference.name))
        digest = scorer.references.digest(reference)
        if digest is not None:  # a file's content, not its path, is the reference
            options = {**options, "reference_sha256": digest}
        return Protocol(
            extractor=scorer.extractor.name, weights_sha256=scorer.extractor.weights_sha256,
            preprocessing=scorer.extractor.protocol["preprocessing"], n_generated=n_fake, n_reference=n_real,
            reference_name=reference.name, reference_split=reference.split, seed=scorer.cfg.seed,
            metric_protocol_version=METRIC_PROTOCOL_VERSION, options=options,
        )

    def _common(self) -> dict:
        return dict(source_path=str(self.source.path), source_sha256=self.sha, run=_run_info(self.run),
                    torch_version=torch.__version__, device=self.scorer.device,
                    wall_time_s=time.perf_counter() - self.started)

    def ok(self, metric: str, value: MetricValue, reference: Reference, n_real: int, n_fake: int) -> ResultRow:
        return ResultRow(metric=metric, protocol=self.protocol(metric, reference, n_real, n_fake), value=value.value,
                         std=value.std, ci_low=value.ci_low, ci_high=value.ci_high, ganbench_version=__version__,
                         **self._common())

    def failed(self, metric: str, reference: Reference, n_real: int, n_fake: int, message: str) -> ResultRow:
        return ResultRow(metric=metric, protocol=self.protocol(metric, reference, n_real, n_fake), status="failed",
                         error=message, **self._common())


def source_metrics(real: FeatureSet | ReferenceStatistics, fake: FeatureSet, names: list[str], cfg: EvalConfig,
             heldout: FeatureSet | None = None, device: str | None = None) -> dict:
    """Metric values against a reference's features, or against its statistics (FID, and the generated set's own).
    The maths runs on `device` (the sweep's: on a GPU the features go there once), with the CPU path's values."""
    if isinstance(real, FeatureSet):
        return metrics_from_features(real, fake, names, bootstrap=cfg.bootstrap, cmmd_estimator=cfg.cmmd_estimator,
                                     heldout=heldout, device=device)
    from ganbench.metrics.fid import feature_statistics, frechet_distance

    own = [m for m in names if m != "fid"]  # IS, classes: the generated set alone, so any reference will do
    values = metrics_from_features(fake, fake, own) if own else {}
    if "fid" in names:
        mu, sigma = feature_statistics(fake.features)
        values["fid"] = MetricValue(frechet_distance(real.mu, real.sigma, mu, sigma))
    return {m: values[m] for m in names}


def reference_count(real: FeatureSet | ReferenceStatistics) -> int:
    """Images behind a reference; 0 when a statistics file does not say."""
    return len(real) if isinstance(real, FeatureSet) else int(real.protocol.get("count") or 0)


def too_few(metric: str, n_real: int, n_fake: int) -> str | None:
    """Why `metric` cannot be computed from these counts, or None. KID shrinks its subsets to the data."""
    need = 2 if metric == "kid" else METRICS[metric].min_samples
    if METRICS[metric].needs != "features":
        return None if n_fake >= need else f"needs at least {need} generated samples, got {n_fake}"
    have = min(n_fake, n_real) if n_real else n_fake  # a statistics file without a count: trust it
    return None if have >= need else f"needs at least {need} samples per set, got {n_real} reference and {n_fake} generated"


def extractor_shape(extractor) -> FeatureSet:
    """An empty FeatureSet with the extractor's outputs: enough to decide which metrics apply."""
    logits = None if extractor.num_classes is None else np.zeros((0, extractor.num_classes), np.float32)
    return FeatureSet(np.zeros((0, extractor.feature_dim), np.float32), logits, dict(extractor.protocol))


def _content_sha256(source: Source) -> str:
    try:
        return source_sha256(source)
    except OSError:  # unreadable: its failure row still needs a key; the load that follows says why
        return hashlib.sha256(f"unreadable {source.path}".encode()).hexdigest()


def _run_info(run: dict) -> RunInfo:
    return RunInfo(**{k: run.get(k) for k in ("kind", "dataset", "seed", "epoch", "step")})


def public(row: ResultRow) -> dict:
    """The fields printed for each result (json/csv/table)."""
    p = row.protocol
    return {
        "source": row.source_path, "metric": row.metric, "value": row.value, "std": row.std,
        "ci_low": row.ci_low, "ci_high": row.ci_high, "extractor": p.extractor, "preprocessing": p.preprocessing,
        "reference": p.reference_name, "num_samples": p.n_generated, "num_reference": p.n_reference,
        "epoch": row.run.epoch, "seed": row.run.seed, "status": row.status, "error": row.error,
    }
