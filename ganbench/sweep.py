"""The eval sweep: every source through `ganbench.scoring`, in one process or spread over torchrun's ranks.

The per-source flow (load -> samples -> features -> metrics -> rows, or failure rows) lives in `scoring.Scorer`,
which knows nothing of ranks; this module decides who runs it and where its features come from:
- one process: every source is scored here, its features extracted here;
- `--distribute sources` under torchrun: sources are dealt round-robin; each rank scores its own sources whole and
  writes them to the store itself (SQLite, concurrent writers). The main rank fills the reference cache first, so
  no entry is computed twice, and prints every rank's results at the end;
- `--distribute samples` (default) under torchrun: the main rank scores every source; when a source needs features,
  it tells the other ranks (which wait in `_serve_features`), each rank generates and extracts its own whole
  batches of the N samples, and the rows are gathered in sample order. The numbers are those of one process.
  A rank that cannot load the source or extract its share reports the error, and the source fails on every rank.
Each rank's exit code counts the failures of all ranks.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable

from ganbench.config import EvalConfig
from ganbench.distributed import SOLO, Group
from ganbench.errors import ConfigError, GanbenchError, SampleError, single_line
from ganbench.features.extract import FeatureSet, extract_features
from ganbench.metric_values import check_metrics
from ganbench.protocol import DATASETS, default_references
from ganbench.reference import References, check_statistics_metrics, parse_reference
from ganbench.results import ResultsStore
from ganbench.samples import Source, discover_sources, import_generator_factory
from ganbench.scoring import Loaded, Scorer, extractor_shape, load_source, public, samples

_DONE = None  # tells ranks waiting in _serve_features that the main rank has no more sources for this extractor


class Sweep:
    """Runs one EvalConfig; `emit` receives each written result as a dict (for table/json/csv output).

    `group` is the torchrun process group (`SOLO` in a single process); only its main rank emits.
    """

    def __init__(self, cfg: EvalConfig, emit: Callable[[dict], None], log=None, group: Group = SOLO):
        self.cfg = cfg
        self.world = group
        # The ranks that share one source's samples: all of them, or each rank alone when whole sources are dealt.
        self.shared = group.world_size > 1 and cfg.distribute == "samples"
        self.progress = not cfg.quiet and group.is_main
        self.emit = emit
        prefix = f"ganbench: [rank {group.rank}/{group.world_size}]" if group.world_size > 1 else "ganbench:"
        self.log = log or (lambda message: print(f"{prefix} {single_line(message)}", file=sys.stderr))
        # Each reference once, in the order given (a repeated --reference would score everything twice).
        self.given = list({r.name: r for r in map(parse_reference, cfg.references)}.values())
        check_statistics_metrics(self.given, cfg.metrics)

    def run(self) -> int:
        """Evaluate every source; returns the number of sources that failed (on all ranks)."""
        from ganbench.devices import resolve_device
        from ganbench.features.registry import build_extractor

        cfg, world = self.cfg, self.world
        sources = discover_sources(list(cfg.paths), cfg.generator)
        if not self.given and any(s.kind != "checkpoint" for s in sources):
            raise ConfigError("folders, .npz files and --generator sources need --reference DATASET:SPLIT, FOLDER or NPZ")
        if cfg.generator is not None:
            import_generator_factory(cfg.generator)  # the same for every source: an option error, before any work
        self.device = str(world.device if world.world_size > 1 else resolve_device(cfg.device))  # a rank's own GPU
        mine = sources if self.shared else sources[world.rank :: world.world_size]
        emit, held = self.emit, []
        if not world.is_main:
            self.emit = held.append  # other ranks' results are printed by the main rank at the end
        references = References(data_root=cfg.data_root, cache_dir=cfg.cache_dir, batch_size=cfg.batch_size,
                                device=self.device, progress=self.progress, log=self.log)
        failed = 0
        with self._open_store() as store:
            for extractor_name in cfg.extractors:
                options = cfg.extractor_options(extractor_name, self.device, self.progress)
                # Main rank first: lenet-mnist trains and caches its weights on first use, Inception may download them.
                extractor = world.main_first(lambda options=options, name=extractor_name: build_extractor(name, **options))
                if cfg.metrics is not None:
                    check_metrics(cfg.metrics, extractor_shape(extractor))  # an option error, before any source
                checking = Scorer(cfg, extractor, self.given, references, store, self.device, None, self.log)
                checking.check_reachable()
                if world.is_main:
                    checking.note_statistics()
                if self.shared and not world.is_main:
                    self._serve_features(extractor, sources)
                    continue
                if not self.shared and world.world_size > 1:
                    self._warm_reference_cache(references, extractor, sources)
                features = self._shared_features(extractor, sources) if self.shared else self._local_features(extractor)
                scorer = Scorer(cfg, extractor, self.given, references, store, self.device, features, self.log)
                for source in self._progress(mine, f"eval {extractor_name}"):
                    outcome = scorer.score(source)
                    failed += outcome.failed
                    for row in outcome.rows:
                        self.emit(public(row))
                if self.shared:
                    world.broadcast_object(_DONE)
        if world.world_size > 1:
            gathered = world.all_gather_object(held)
            for row in (row for rows in gathered[1:] for row in rows) if world.is_main else ():
                emit(row)
        return world.sum(failed)

    def _open_store(self):
        """The store on every rank that scores sources (the main rank first, so a new file's schema is created once)."""
        if self.shared:
            return ResultsStore.for_writing(self.cfg.results) if self.world.is_main else contextlib.nullcontext()
        return self.world.main_first(lambda: ResultsStore.for_writing(self.cfg.results))

    def _warm_reference_cache(self, references: References, extractor, sources: list[Source]) -> None:
        """--distribute sources: the main rank computes every reference the sources will need, then the others read them."""
        if self.world.is_main:
            datasets = {s.run.get("dataset") for s in sources} & set(DATASETS)
            wanted = self.given or [parse_reference(t) for d in sorted(datasets) for t in default_references(d)]
            for reference in wanted:
                with contextlib.suppress(GanbenchError):  # the sources that need it record the error
                    references.get(extractor, reference)
        self.world.barrier()

    # -- where a source's features come from ---------------------------------------------------------

    def _extract(self, extractor, source: Source, loaded: Loaded, rows: tuple[int, int]) -> FeatureSet:
        """Features of samples [start, stop) of a loaded source, in this process."""
        bar = self._bar(rows[1] - rows[0], f"samples {source.path.name}")
        images = samples(loaded, self.cfg, rows, self.device, bar.update if bar is not None else None)
        if bar is not None:
            bar.close()
        return extract_features(extractor, images, self.cfg.batch_size, self.device, self.progress,
                                f"features {source.path.name}")

    def _local_features(self, extractor):
        return lambda source, loaded: self._extract(extractor, source, loaded, (0, loaded.count))

    def _shared_features(self, extractor, sources: list[Source]):
        """On the main rank: each rank extracts its whole batches of the source's samples; the rows are gathered."""
        index = {id(source): i for i, source in enumerate(sources)}

        def features(source: Source, loaded: Loaded) -> FeatureSet:
            self.world.broadcast_object((index[id(source)], loaded.count))
            return self._share(extractor, source, loaded, loaded.count)

        return features

    def _serve_features(self, extractor, sources: list[Source]) -> None:
        """On the other ranks: extract this rank's share of each source the main rank asks for, until it is done."""
        while (request := self.world.broadcast_object(None)) is not _DONE:
            number, count = request
            source, loaded, error = sources[number], None, None
            try:
                loaded = load_source(source, self.cfg)
            except GanbenchError as exc:
                error = exc
            self._share(extractor, source, loaded, count, error)

    def _share(self, extractor, source: Source, loaded: Loaded | None, count: int, error=None) -> FeatureSet | None:
        """This rank's rows of the source's features, gathered from all ranks in sample order; every rank raises
        (or, on the other ranks, returns None for) the first rank's error, so no rank waits in a collective."""
        world, part = self.world, None
        if error is None:
            rows = world.rows(count, self.cfg.batch_size)
            try:
                part = extractor_shape(extractor) if rows[0] == rows[1] else self._extract(extractor, source, loaded, rows)
            except GanbenchError as exc:
                error = exc
        errors = [e for e in world.all_gather_object(None if error is None else str(error)) if e is not None]
        if errors:
            if world.is_main:
                raise SampleError(errors[0])
            return None
        logits = None if part.logits is None else world.all_gather_rows(part.logits)
        return FeatureSet(world.all_gather_rows(part.features), logits, part.protocol, part.source)

    # -- progress ------------------------------------------------------------------------------------

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
