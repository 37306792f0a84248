"""The eval sweep: sources -> samples -> features -> metrics -> results store, one source at a time.

Per source and extractor there is one generation pass and one feature pass, shared by every metric
and every reference; reference features come from the cache. A source's results (all metrics, all
references) are written in one transaction, so a killed sweep leaves only complete sources and the
next run does the rest. Sources whose results are already stored are skipped and said to be skipped.
A source that fails (corrupt checkpoint, NaN output) is reported in one line and recorded as failed;
the sweep goes on.

Under torchrun (see `ganbench.distributed`) the sweep runs on every rank in one of two ways:
- `--distribute samples` (default): every source is split. Each rank generates and extracts its own whole
  batches of the N samples, the features are gathered in sample order, and the main rank alone reads the
  reference features, computes the metrics, writes the store and prints; the numbers are those of one process.
- `--distribute sources`: sources are dealt round-robin; each rank evaluates its own sources whole and writes
  them to the store itself (SQLite, concurrent writers). The main rank fills the reference cache first, so
  no entry is computed twice, and prints every rank's results at the end.
Either way the ranks agree on every failure, and each rank's exit code counts the failures of all ranks.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ganbench import __version__
from ganbench.config import EvalConfig
from ganbench.distributed import SOLO, Group
from ganbench.errors import ConfigError, GanbenchError, one_line
from ganbench.evaluate import applicable_metrics, check_metrics, metric_options, metrics_from_features
from ganbench.features.cache import cached_features
from ganbench.features.extract import FeatureSet, extract_features
from ganbench.protocol import DATASETS, METRIC_PROTOCOL_VERSION, SELECTION_SUBSET_SEED, SPLITS, default_references
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
    """Runs one EvalConfig; `emit` receives each written result as a dict (for table/json/csv output).

    `group` is the torchrun process group (`SOLO` in a single process); only its main rank emits.
    """

    def __init__(self, cfg: EvalConfig, emit: Callable[[dict], None], log=None, group: Group = SOLO):
        self.cfg = cfg
        self.world = group
        # The ranks that share one source's samples: all of them, or each rank alone when whole sources are dealt.
        self.split = group if cfg.distribute == "samples" else SOLO
        self.progress = not cfg.quiet and group.is_main
        self.emit = emit
        prefix = f"ganbench: [rank {group.rank}/{group.world_size}]" if group.world_size > 1 else "ganbench:"
        self.log = log or (lambda message: print(f"{prefix} {message}", file=sys.stderr))
        # Each reference once, in the order given (a repeated --reference would score everything twice).
        self.references = list({r.name: r for r in map(parse_reference, cfg.references)}.values())
        self._reference_features: dict[tuple, FeatureSet] = {}

    def run(self) -> int:
        """Evaluate every source; returns the number of sources that failed."""
        from ganbench.features.registry import build_extractor, extractor_options
        from ganbench.train.loop import resolve_device

        cfg, world = self.cfg, self.world
        sources = discover_sources(list(cfg.paths), cfg.generator)
        if not self.references and any(s.kind != "checkpoint" for s in sources):
            raise ConfigError("folders, .npz files and --generator sources need --reference DATASET:SPLIT, FOLDER or NPZ")
        device = resolve_device(cfg.device)
        self.device = str(world.device if world.world_size > 1 else device)  # a rank works on its own GPU
        mine = sources if self.split is world else sources[world.rank :: world.world_size]
        emit, held = self.emit, []
        if not world.is_main:
            self.emit = held.append  # other ranks' results are printed by the main rank at the end
        failed = 0
        with self._open_store() as store:
            for extractor_name in cfg.extractors:
                options = extractor_options(extractor_name, device=self.device, precision=cfg.precision,
                                            inception_weights=cfg.inception_weights, preprocessing=cfg.preprocessing,
                                            data_root=cfg.data_root, progress=self.progress)
                # Main rank first: lenet-mnist trains and caches its weights on first use, Inception may download them.
                extractor = world.main_first(lambda options=options, name=extractor_name: build_extractor(name, **options))
                if self.split is not world:
                    self._warm_reference_cache(extractor, sources)
                for source in self._progress(mine, f"eval {extractor_name}"):
                    failed += not self._evaluate_source(store, extractor, source)
        if world.world_size > 1:
            gathered = world.all_gather_object(held)
            for row in (row for rows in gathered[1:] for row in rows) if world.is_main else ():
                emit(row)
        return world.sum(failed)

    def _open_store(self):
        """The store on every rank that writes (the main rank first, so a new file's schema is created once)."""
        if self.split is not self.world:  # --distribute sources: every rank writes its own sources
            return self.world.main_first(lambda: ResultsStore(self.cfg.results))
        return ResultsStore(self.cfg.results) if self.world.is_main else contextlib.nullcontext()

    def _warm_reference_cache(self, extractor, sources: list[Source]) -> None:
        """--distribute sources: the main rank computes every reference the sources will need, then the others read them."""
        if self.world.is_main:
            datasets = {s.run.get("dataset") for s in sources} & set(DATASETS)
            references = self.references or [parse_reference(t) for d in sorted(datasets) for t in default_references(d)]
            for reference in references:
                try:
                    self._reference(extractor, reference)
                except GanbenchError:
                    pass  # the source that needs it reports the error
        self.world.barrier()

    # -- one source ------------------------------------------------------------------------------

    def _evaluate_source(self, store: ResultsStore | None, extractor, source: Source) -> bool:
        """False when the source failed; only the split's main rank counts (and records) a failure."""
        cfg, split = self.cfg, self.split
        started = time.perf_counter()
        sha = source_sha256(source)
        run = dict(source.run)
        # Cheap first: load the generator or the images, and plan (main rank); generate and extract only if needed.
        loaded, plan, n_fake, error = None, [], 0, None
        try:
            loaded, run, n_fake = self._load(source, run)
            if split.is_main:
                plan = self._plan(store, extractor, sha, run, n_fake)
        except GanbenchError as exc:
            error = one_line(exc, limit=None)
        error, work = self._agree(error, bool(plan))
        if error is None and not work:
            if split.is_main:
                self.log(f"skip {source.label}: its {extractor.name} results are already in {cfg.results} (--force recomputes)")
            return True
        if error is None:
            try:  # this rank's whole batches of the samples, then their features
                share = split.rows(n_fake, cfg.batch_size)
                part = _shape(extractor) if share[0] == share[1] else extract_features(
                    extractor, self._samples(source, loaded, share), cfg.batch_size, self.device, self.progress,
                    f"features {source.path.name}")
            except GanbenchError as exc:
                error = one_line(exc, limit=None)
            error, _ = self._agree(error)
        if error is None:
            fake = self._gather(part)
            if not split.is_main:
                return True
            try:
                results = []
                for reference, real, names in plan:
                    values = metrics_from_features(real, fake, names, bootstrap=cfg.bootstrap)
                    for name, value in values.items():
                        results.append(self._row(name, value, extractor, reference, real, fake, source, sha, run, started))
                store.write_results(results, replace=cfg.force)  # one transaction: all of this source or nothing
            except GanbenchError as exc:
                error = one_line(exc, limit=None)
            else:
                for row in results:
                    self.emit(_public(row))
                return True
        if not split.is_main:
            return True
        self.log(f"FAILED {source.label}: {error}")
        self._record_failure(store, extractor, source, sha, run, error, started)
        return False

    def _agree(self, error: str | None, work: bool = True) -> tuple[str | None, bool]:
        """The first error of any rank sharing this source (in rank order), and the main rank's `work`.

        Every rank calls this at the same points, so a failure on one rank stops the source on all of them
        instead of leaving the others waiting in a collective."""
        votes = self.split.all_gather_object((error, work))
        errors = [e for e, _ in votes if e is not None]
        return (errors[0] if errors else None), votes[0][1]

    def _gather(self, part: FeatureSet) -> FeatureSet:
        """Every rank's rows of the fake features, in sample order."""
        if self.split.world_size == 1:
            return part
        logits = None if part.logits is None else self.split.all_gather_rows(part.logits)
        return FeatureSet(self.split.all_gather_rows(part.features), logits, part.protocol, part.source)

    def _load(self, source: Source, run: dict):
        """(generator module + latent size, or images), the run fields, and the number of samples it will give."""
        cfg = self.cfg
        if source.kind == "checkpoint":
            module, latent_dim, run = load_baseline_generator(source.path)
            return (module, latent_dim), run, cfg.num_samples
        if source.kind == "generator":
            return load_user_generator(cfg.generator, source.path), run, cfg.num_samples
        images = load_npz_images(source.path) if source.kind == "npz" else load_folder_images(source.path)
        if images.shape[0] < cfg.num_samples and self.split.is_main:
            self.log(f"{source.label}: {images.shape[0]} images, fewer than --num-samples {cfg.num_samples}; using all")
        images = images[: cfg.num_samples]
        return images, run, int(images.shape[0])

    def _samples(self, source: Source, loaded, rows: tuple[int, int]) -> torch.Tensor:
        """Samples [start, stop) of the source: all of them in one process, this rank's share under torchrun."""
        if source.kind not in ("checkpoint", "generator"):
            return loaded[rows[0] : rows[1]]
        cfg = self.cfg
        module, latent_dim = loaded
        bar = self._bar(rows[1] - rows[0], f"samples {source.path.name}")
        images = generate(module, latent_dim, cfg.num_samples, cfg.seed, cfg.batch_size, self.device,
                          bar.update if bar is not None else None, rows=rows)
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
                                              progress=self.progress)
            else:
                source = Source("npz" if reference.path.suffix == ".npz" else "folder", reference.path)
                sha = source_sha256(source)
                images = load_npz_images(reference.path) if source.kind == "npz" else load_folder_images(reference.path)
                fields = {"reference_sha256": sha, "count": int(images.shape[0]), **extractor.protocol}
                features = cached_features(
                    fields,
                    lambda: extract_features(extractor, images, cfg.batch_size, self.device, self.progress,
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
            extractor=extractor.name, weights_sha256=extractor.weights_sha256,
            preprocessing=extractor.protocol["preprocessing"],
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
        if not self.progress or len(items) <= 1:
            return items
        from tqdm import tqdm

        return tqdm(items, desc=description, unit="source", file=sys.stderr, dynamic_ncols=True)

    def _bar(self, total: int, description: str):
        if not self.progress:
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
