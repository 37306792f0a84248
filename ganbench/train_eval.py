"""`ganbench train MODEL --eval-every N`: the generator being trained, scored in-process every N epochs.

An epoch's evaluation is `ganbench eval` of that epoch's checkpoint, without the file. The source is the live
generator (in eval mode, as eval loads it; the train/eval mode is restored after), its content sha256 is the sha256
of the checkpoint bytes that epoch writes, or would write when --checkpoint-every keeps none, and its run fields are
the checkpoint's. So its rows carry the protocol, the key and the numbers that `ganbench eval` gives the saved
checkpoint, and a later `ganbench eval` of the run skips them as already stored. Scoring is eval's `Scorer`: a
failure (NaN samples, a reference that cannot load) becomes failed rows and one line, and training goes on.

The run's random streams are untouched: evaluation draws its noise from its own seeded generator and runs inside
`torch.random.fork_rng`, so a run trained with --eval-every writes the checkpoints of the run trained without it.
"""

from __future__ import annotations

import hashlib
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ganbench.config import EvalConfig
from ganbench.errors import ConfigError, ResultsStoreError
from ganbench.results import ResultsStore
from ganbench.scoring import Loaded, Outcome, Scorer, samples


@dataclass(frozen=True)
class EvalEvery:
    """What to score while training, and how often: every `every` epochs and the last, under `eval` (an EvalConfig
    with one extractor; its `paths` only name the training output, the sources are the run's epochs). Picklable,
    so --jobs workers receive it and build their own `EpochScorer`."""

    every: int
    eval: EvalConfig

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ConfigError(f"--eval-every must be at least 1 (epochs), got {self.every}")
        if len(self.eval.extractors) != 1:
            raise ConfigError(f"--eval-extractor takes one extractor, got {','.join(self.eval.extractors)}")

    def due(self, epoch: int, last_epoch: int) -> bool:
        return epoch % self.every == 0 or epoch == last_epoch

    def start(self, device: torch.device, dataset: str) -> EpochScorer:
        """The scorer for one training process: extractor built, every reference resolved (their features computed
        and cached), so a missing weights file or dataset is a one-line error before the first epoch trains."""
        return EpochScorer(self, device, dataset)


class EpochScorer:
    """Scores one epoch's generator with `ganbench eval`'s flow; built once per training process."""

    def __init__(self, plan: EvalEvery, device: torch.device, dataset: str):
        from ganbench.features.registry import build_extractor
        from ganbench.metric_values import check_metrics
        from ganbench.protocol import default_references
        from ganbench.reference import References, check_statistics_metrics, parse_reference
        from ganbench.scoring import extractor_shape

        cfg = self.cfg = plan.eval
        self.due = plan.due
        self.device = str(device)
        name = cfg.extractors[0]
        self.extractor = build_extractor(name, **cfg.extractor_options(name, self.device, progress=False))
        if cfg.metrics is not None:
            check_metrics(cfg.metrics, extractor_shape(self.extractor))
        self.given = list({r.name: r for r in map(parse_reference, cfg.references)}.values())
        check_statistics_metrics(self.given, cfg.metrics)
        self.references = References(data_root=cfg.data_root, cache_dir=cfg.cache_dir, batch_size=cfg.batch_size,
                                     device=self.device, progress=not cfg.quiet, log=_log)
        for reference in self.given or [parse_reference(text) for text in default_references(dataset)]:
            self.references.get(self.extractor, reference)  # raises the reference's one-line error now
        try:
            with ResultsStore(cfg.results):  # a corrupt or unwritable store, too: before an epoch is trained, not after
                pass
        except ResultsStoreError as exc:  # the store's messages name eval's flag; here it is --eval-results
            raise ResultsStoreError(re.sub(r"(?<![\w-])--results\b", "--eval-results", str(exc))) from exc

    def __call__(self, generator: torch.nn.Module, latent_dim: int, checkpoint: dict, path: Path) -> Outcome:
        """Score `generator` as the checkpoint dict `checkpoint` (of the epoch it was taken at) saved at `path`."""
        from ganbench.samples import Source

        started = time.perf_counter()
        run = {"kind": checkpoint["kind"], "dataset": checkpoint["dataset"]["name"],
               "seed": checkpoint["config"].get("seed"), "epoch": checkpoint["epoch"], "step": checkpoint["step"]}
        source = Source("checkpoint", path, run)
        loaded = Loaded(run, self.cfg.num_samples, generator=(generator, latent_dim))
        training = generator.training
        devices = [torch.device(self.device).index or 0] if self.device.startswith("cuda") else []
        try:
            with torch.random.fork_rng(devices=devices), ResultsStore(self.cfg.results) as store:
                scorer = Scorer(self.cfg, self.extractor, self.given, self.references, store, self.device,
                                self._features, _log)
                outcome = scorer.score(source, loaded, checkpoint_sha256(checkpoint))
        finally:
            generator.train(training)
        _log(summary(path, run["epoch"], outcome, time.perf_counter() - started))
        return outcome

    def _features(self, source, loaded: Loaded):
        from ganbench.features.extract import extract_features

        images = samples(loaded, self.cfg, (0, loaded.count), self.device)
        return extract_features(self.extractor, images, self.cfg.batch_size, self.device)


def checkpoint_sha256(checkpoint: dict) -> str:
    """sha256 of the bytes `save_checkpoint` writes for this dict, i.e. the source_sha256 `ganbench eval` gives the
    file."""
    from ganbench.train.checkpoint import checkpoint_bytes

    return hashlib.sha256(checkpoint_bytes(checkpoint)).hexdigest()


def summary(path: Path, epoch: int, outcome: Outcome, seconds: float) -> str:
    """One line per reference: the epoch's values (failed metrics named), and the time the evaluation took."""
    if outcome.skipped:
        return f"{path.parent} epoch {epoch}: already in the results store ({seconds:.1f} s)"
    by_reference: dict[str, list[str]] = {}
    for row in outcome.rows:
        text = f"{row.metric} {row.value:.4g}" if row.status == "ok" else f"{row.metric} FAILED"
        by_reference.setdefault(row.protocol.reference_name, []).append(text)
    parts = [f"vs {name}: {', '.join(values)}" for name, values in by_reference.items()]
    return f"{path.parent} epoch {epoch}: {'; '.join(parts)} ({seconds:.1f} s)"


def _log(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"ganbench: {message}", file=sys.stderr)  # above the training progress bars, not through them
