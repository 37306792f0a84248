"""The eval sweep: sources -> samples -> features -> metrics -> results store, one source at a time.

Per source and extractor there is one generation pass and one feature pass, shared by every metric
and every reference; reference features come from the cache. A source's results (all metrics, all
references) are written in one transaction, so a killed sweep leaves only complete sources and the
next run does the rest. Sources whose results are already stored are skipped and said to be skipped.
A source that fails (corrupt checkpoint, NaN output) is reported in one line and recorded as failed;
the sweep goes on.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ganbench import __version__
from ganbench.config import EvalConfig
from ganbench.data import DATASETS, SPLITS
from ganbench.errors import ConfigError, GanbenchError
from ganbench.evaluate import applicable_metrics, check_metrics, metric_options, metrics_from_features
from ganbench.features.cache import cached_features
from ganbench.features.extract import FeatureSet, extract_features
from ganbench.protocol import METRIC_PROTOCOL_VERSION, SELECTION_SUBSET_SEED, default_references
from ganbench.results import Protocol, ResultRow, ResultsStore, RunInfo
from ganbench.samples import (
    Source,
    discover_sources,
    generate,
    load_baseline_generator,
    load_folder_images,
    load_npz_images,
    load_user_generator,
    source_sha256,
)


@dataclass(frozen=True)
class Reference:
    """A parsed --reference: a dataset split ('fashion-mnist:test'), a seeded subset of one
    ('fashion-mnist:train:10000', drawn with SELECTION_SUBSET_SEED), or a folder / .npz of images."""

    name: str
    dataset: str | None = None
    split: str | None = None
    path: Path | None = None
    count: int | None = None  # a seeded subset of this many images (all of them when the split is smaller)


def parse_reference(text: str) -> Reference:
    dataset, sep, rest = text.partition(":")
    if sep and dataset in DATASETS:
        split, _, count = rest.partition(":")
        if split not in SPLITS:
            raise ConfigError(f"--reference {text}: unknown split {split!r}; expected {' or '.join(SPLITS)}")
        if not count:
            return Reference(text, dataset, split)
        if not count.isdigit() or int(count) < 2:
            raise ConfigError(f"--reference {text}: the subset size must be an integer >= 2, e.g. {dataset}:{split}:10000")
        return Reference(text, dataset, split, count=int(count))
    path = Path(text)
    if path.exists():
        return Reference(str(path), path=path)
    raise ConfigError(
        f"--reference {text}: expected DATASET:SPLIT[:N] ({', '.join(f'{d}:test' for d in DATASETS)}), "
        "a folder of images or an .npz"
    )


class Sweep:
    """Runs one EvalConfig; `emit` receives each written result as a dict (for table/json/csv output)."""

    def __init__(self, cfg: EvalConfig, emit: Callable[[dict], None], log=None):
        self.cfg = cfg
        self.emit = emit
        self.log = log or (lambda message: print(f"ganbench: {message}", file=sys.stderr))
        # Each reference once, in the order given (a repeated --reference would score everything twice).
        self.references = list({r.name: r for r in map(parse_reference, cfg.references)}.values())
        self._reference_features: dict[tuple, FeatureSet] = {}

    def run(self) -> int:
        """Evaluate every source; returns the number of sources that failed."""
        from ganbench.features.registry import build_extractor
        from ganbench.train.loop import resolve_device

        cfg = self.cfg
        sources = discover_sources(list(cfg.paths), cfg.generator)
        if not self.references and any(s.kind != "checkpoint" for s in sources):
            raise ConfigError("folders, .npz files and --generator sources need --reference DATASET:SPLIT, FOLDER or NPZ")
        self.device = str(resolve_device(cfg.device))
        failed = 0
        with ResultsStore(cfg.results) as store:
            for extractor_name in cfg.extractors:
                options = {"device": self.device}
                if extractor_name == "inception":
                    options.update(weights=cfg.inception_weights, preprocessing=cfg.preprocessing)
                elif extractor_name == "lenet-mnist":
                    options.update(data_root=cfg.data_root, progress=not cfg.quiet)
                extractor = build_extractor(extractor_name, **options)
                for source in self._progress(sources, f"eval {extractor_name}"):
                    failed += not self._evaluate_source(store, extractor, source)
        return failed

    # -- one source ------------------------------------------------------------------------------

    def _evaluate_source(self, store: ResultsStore, extractor, source: Source) -> bool:
        cfg = self.cfg
        started = time.perf_counter()
        sha = source_sha256(source)
        run = dict(source.run)
        try:
            # Cheap first: load the generator or the images, and plan; generate and extract only if needed.
            loaded, run, n_fake = self._load(source, run)
            plan = self._plan(store, extractor, sha, run, n_fake)
            if not plan:
                self.log(f"skip {source.label}: its {extractor.name} results are already in {cfg.results} (--force recomputes)")
                return True
            images = self._samples(source, loaded)
            fake = extract_features(extractor, images, cfg.batch_size, self.device, not cfg.quiet, f"features {source.path.name}")
            rows = []
            for reference, real, names in plan:
                values = metrics_from_features(real, fake, names, bootstrap=cfg.bootstrap)
                for name, value in values.items():
                    rows.append(self._row(name, value, extractor, reference, real, fake, source, sha, run, started))
            store.write_results(rows, replace=cfg.force)  # one transaction: all of this source or nothing
        except GanbenchError as exc:
            message = str(exc).splitlines()[0]
            self.log(f"FAILED {source.label}: {message}")
            self._record_failure(store, extractor, source, sha, run, message, started)
            return False
        for row in rows:
            self.emit(_public(row))
        return True

    def _load(self, source: Source, run: dict):
        """(generator module + latent size, or images), the run fields, and the number of samples it will give."""
        cfg = self.cfg
        if source.kind == "checkpoint":
            module, latent_dim, run = load_baseline_generator(source.path)
            return (module, latent_dim), run, cfg.num_samples
        if source.kind == "generator":
            return load_user_generator(cfg.generator, source.path), run, cfg.num_samples
        images = load_npz_images(source.path) if source.kind == "npz" else load_folder_images(source.path)
        if images.shape[0] < cfg.num_samples:
            self.log(f"{source.label}: {images.shape[0]} images, fewer than --num-samples {cfg.num_samples}; using all")
        images = images[: cfg.num_samples]
        return images, run, int(images.shape[0])

    def _samples(self, source: Source, loaded) -> torch.Tensor:
        if source.kind not in ("checkpoint", "generator"):
            return loaded
        cfg = self.cfg
        module, latent_dim = loaded
        bar = self._bar(cfg.num_samples, f"samples {source.path.name}")
        images = generate(module, latent_dim, cfg.num_samples, cfg.seed, cfg.batch_size, self.device,
                          bar.update if bar is not None else None)
        if bar is not None:
            bar.close()
        return images

    def _plan(self, store, extractor, sha, run, n_fake) -> list[tuple[Reference, FeatureSet, list[str]]]:
        """(reference, its features, metrics still to compute) for every reference of this source."""
        cfg = self.cfg
        references = self.references or self._default_references(run)
        shape = _shape(extractor)
        plan = []
        for reference in references:
            real = self._reference(extractor, reference)
            if cfg.metrics is not None:
                wanted = list(check_metrics(cfg.metrics, shape))
            else:
                wanted = [m for m in applicable_metrics(shape) if _enough(m, len(real), n_fake)]
            done = set() if cfg.force else {
                m for m in wanted
                if m in store.completed_metrics(sha, self._protocol(m, extractor, reference, len(real), n_fake).key)
            }
            todo = [m for m in wanted if m not in done]
            if todo:
                plan.append((reference, real, todo))
        return plan

    def _default_references(self, run: dict) -> list[Reference]:
        # Selection (a seeded 10,000-image training subset) and reporting (the held-out test split: scoring
        # against the training images would reward memorisation; its 10,000 images match --num-samples).
        dataset = run.get("dataset")
        if dataset not in DATASETS:
            raise ConfigError(f"cannot tell the training dataset of this source ({dataset!r}); pass --reference DATASET:SPLIT")
        return [parse_reference(text) for text in default_references(dataset)]

    def _reference(self, extractor, reference: Reference) -> FeatureSet:
        from ganbench.reference import reference_features

        key = (extractor.name, reference.name)
        if key not in self._reference_features:
            cfg = self.cfg
            if reference.dataset is not None:
                features = reference_features(extractor, reference.dataset, reference.split, reference.count,
                                              subset_seed=None if reference.count is None else SELECTION_SUBSET_SEED,
                                              data_root=cfg.data_root,
                                              cache_dir=cfg.cache_dir, batch_size=cfg.batch_size, device=self.device,
                                              progress=not cfg.quiet)
            else:
                source = Source("npz" if reference.path.suffix == ".npz" else "folder", reference.path)
                sha = source_sha256(source)
                images = load_npz_images(reference.path) if source.kind == "npz" else load_folder_images(reference.path)
                fields = {"reference_sha256": sha, "count": int(images.shape[0]), **extractor.protocol}
                features = cached_features(
                    fields,
                    lambda: extract_features(extractor, images, cfg.batch_size, self.device, not cfg.quiet,
                                             f"reference {reference.path.name}", {"path": str(reference.path)}),
                    cfg.cache_dir,
                )
            if reference.count is not None and len(features) < reference.count:
                self.log(f"reference {reference.name}: the split holds only {len(features)} images; using all of them")
            self._reference_features[key] = features
        return self._reference_features[key]

    def _protocol(self, metric: str, extractor, reference: Reference, n_real: int, n_fake: int) -> Protocol:
        cfg = self.cfg
        return Protocol(
            extractor=extractor.name, weights_sha256=extractor.weights_sha256, preprocessing=extractor.preprocessing,
            n_generated=n_fake, n_reference=n_real, reference_name=reference.name, reference_split=reference.split,
            seed=cfg.seed, metric_protocol_version=METRIC_PROTOCOL_VERSION,
            options=metric_options(metric, n_real, n_fake, bootstrap=cfg.bootstrap),
        )

    def _row(self, name, value, extractor, reference, real, fake, source, sha, run, started) -> ResultRow:
        return ResultRow(
            metric=name, protocol=self._protocol(name, extractor, reference, len(real), len(fake)), source_path=str(source.path),
            source_sha256=sha, value=value.value, std=value.std, ci_low=value.ci_low, ci_high=value.ci_high,
            run=_run_info(run), torch_version=torch.__version__, device=self.device,
            wall_time_s=time.perf_counter() - started, ganbench_version=__version__,
        )

    def _record_failure(self, store, extractor, source, sha, run, message, started) -> None:
        """Failed rows under the protocols a success would have, so a later success replaces each of them."""
        cfg = self.cfg
        if run.get("dataset") not in DATASETS and not self.references:
            run = {**run, "dataset": None}
            references = [Reference("unknown:test")]  # no reference can be known for an unreadable checkpoint
        else:
            references = self.references or self._default_references(run)
        rows: list[ResultRow] = []
        for reference in references:
            n_real = len(self._reference(extractor, reference)) if reference.name != "unknown:test" else 0
            for metric in cfg.metrics or applicable_metrics(_shape(extractor)):
                rows.append(ResultRow(
                    metric=metric, protocol=self._protocol(metric, extractor, reference, n_real, cfg.num_samples),
                    source_path=str(source.path), source_sha256=sha, status="failed", error=message, run=_run_info(run),
                    torch_version=torch.__version__, device=self.device, wall_time_s=time.perf_counter() - started,
                ))
        store.write_results(rows)
        for row in rows:
            self.emit(_public(row))

    def _progress(self, items, description):
        if self.cfg.quiet or len(items) <= 1:
            return items
        from tqdm import tqdm

        return tqdm(items, desc=description, unit="source", file=sys.stderr, dynamic_ncols=True)

    def _bar(self, total: int, description: str):
        if self.cfg.quiet:
            return None
        from tqdm import tqdm

        return tqdm(total=total, desc=description, unit="img", file=sys.stderr, dynamic_ncols=True, leave=False)


def _shape(extractor) -> FeatureSet:
    """An empty FeatureSet with the extractor's outputs: enough to decide which metrics apply."""
    logits = None if extractor.num_classes is None else np.zeros((0, extractor.num_classes), np.float32)
    return FeatureSet(np.zeros((0, extractor.feature_dim), np.float32), logits, dict(extractor.protocol))


def _enough(metric: str, n_real: int, n_fake: int) -> bool:
    from ganbench.metrics.registry import METRICS

    need = 2 if metric == "kid" else METRICS[metric].min_samples
    return min(n_real, n_fake) >= need


def _run_info(run: dict) -> RunInfo:
    return RunInfo(**{k: run.get(k) for k in ("kind", "dataset", "seed", "epoch", "step")})


def _public(row: ResultRow) -> dict:
    """The fields printed for each result (json/csv/table)."""
    p = row.protocol
    return {
        "source": row.source_path, "metric": row.metric, "value": row.value, "std": row.std,
        "ci_low": row.ci_low, "ci_high": row.ci_high, "extractor": p.extractor, "preprocessing": p.preprocessing,
        "reference": p.reference_name, "num_samples": p.n_generated, "num_reference": p.n_reference,
        "epoch": row.run.epoch, "seed": row.run.seed, "status": row.status, "error": row.error,
    }
