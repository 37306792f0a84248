"""`ganbench.evaluate`: one source against one reference from Python, with the numbers of `ganbench eval`.

A source is a checkpoint, a folder of images or an `.npz` (paths, as `ganbench eval` takes them), a generator module
(`(module, latent_dim)`, or a module with a `latent_dim` attribute), a callable `n -> uint8 NCHW images`, or a uint8
NCHW tensor. A reference is what `--reference` takes: 'DATASET:SPLIT[:N]', a folder, an `.npz` of images or of
statistics (mu, sigma). The result is an `Evaluation`: each metric's value with the protocol it was computed under.

Every stage is the CLI's: options are checked by `EvalConfig`, references resolved (and cached) by `References`,
file sources loaded by `scoring.load_source`, samples drawn by `scoring.samples`, metrics and protocols made by
scoring's helpers, so a checkpoint gives `ganbench eval`'s values and protocol keys. What differs is what a failure
does: `ganbench eval` records a failed row and goes on to the next source; here the one source failed, so its error is
raised, with the message `ganbench eval` records (a failed source never comes back as NaN). Nothing is written to a
results store unless `store=PATH` is given; then the rows are those `ganbench eval` would write.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganbench.config import EvalConfig
from ganbench.errors import ConfigError, GanbenchError, MetricError, SampleError, counted, one_line
from ganbench.results import Protocol, ResultRow, ResultsStore, canonical_json

EXAMPLE = "ganbench.evaluate('epoch_0005.pt', 'fashion-mnist:test', extractor='lenet-fashion-mnist')"


@dataclass(frozen=True)
class Score:
    """One metric's value, its spread where it has one (std over subsets, bootstrap interval), and its protocol."""

    metric: str
    value: float
    std: float | None
    ci_low: float | None
    ci_high: float | None
    protocol: Protocol


@dataclass(frozen=True)
class Evaluation:
    """What `evaluate` returns: the source, its content sha256 (the results store's key) and one Score per metric.

    `result["fid"]` is a value; `print(result)` a table; `to_dict()` one flat row (metrics as columns, for
    `pandas.DataFrame([r.to_dict() for r in results])`); `to_frame()` one row per metric with its whole protocol."""

    source: str
    source_sha256: str
    scores: tuple[Score, ...]
    notes: tuple[str, ...] = field(default=())  # metrics left out for too few samples, images fewer than asked for

    def __getitem__(self, metric: str) -> float:
        for score in self.scores:
            if score.metric == metric:
                return score.value
        raise KeyError(f"{metric!r} was not computed; this evaluation holds {', '.join(self.values)}")

    @property
    def values(self) -> dict[str, float]:
        return {score.metric: score.value for score in self.scores}

    def to_dict(self) -> dict[str, Any]:
        """One flat row: the shared protocol fields, then each metric's value (and `<metric>_std`, `_ci_low`, `_ci_high`)."""
        p = self.scores[0].protocol  # the shared fields are the same for every metric; options are per metric
        row: dict[str, Any] = {
            "source": self.source, "source_sha256": self.source_sha256, "extractor": p.extractor,
            "preprocessing": p.preprocessing, "weights_sha256": p.weights_sha256, "reference": p.reference_name,
            "num_samples": p.n_generated, "num_reference": p.n_reference, "seed": p.seed,
            "metric_protocol_version": p.metric_protocol_version,
        }
        for score in self.scores:
            row[score.metric] = score.value
            for name in ("std", "ci_low", "ci_high"):
                if getattr(score, name) is not None:
                    row[f"{score.metric}_{name}"] = getattr(score, name)
        return row

    def to_frame(self):
        """A pandas DataFrame, one row per metric: value, spread, every protocol field, its options and protocol key."""
        import pandas as pd  # lazy: pandas is for readers

        return pd.DataFrame([
            {"source": self.source, "metric": s.metric, "value": s.value, "std": s.std, "ci_low": s.ci_low,
             "ci_high": s.ci_high, **{k: v for k, v in s.protocol.to_dict().items() if k != "options"},
             "options": canonical_json(dict(s.protocol.options)), "protocol_key": s.protocol.key}
            for s in self.scores
        ])

    def __str__(self) -> str:
        p = self.scores[0].protocol
        lines = [
            f"{self.source} vs {p.reference_name}",
            f"  {p.extractor} ({p.preprocessing}, weights {p.weights_sha256[:12]}), {p.n_generated} generated, "
            f"{p.n_reference} reference, seed {p.seed}",
            f"  {'metric':16} {'value':>12} {'std':>10}  options",
        ]
        for s in self.scores:
            std = "" if s.std is None else f"{s.std:.3g}"
            interval = "" if s.ci_low is None else f" [{s.ci_low:.6g}, {s.ci_high:.6g}]"
            options = canonical_json(dict(s.protocol.options)) if s.protocol.options else ""
            lines.append(f"  {s.metric:16} {s.value:>12.6g} {std:>10}  {options}{interval}".rstrip())
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def __repr__(self) -> str:
        values = ", ".join(f"{m}={v:.6g}" for m, v in self.values.items())
        return f"Evaluation({self.source!r} vs {self.scores[0].protocol.reference_name!r}: {values})"


def evaluate(
    source,
    reference: str | Path,
    *,
    extractor: str = "inception",
    metrics: Sequence[str] | str | None = None,
    num_samples: int = 10_000,
    seed: int = 0,
    device: str = "auto",
    cache_dir: str | Path | None = None,
    store: str | Path | None = None,
    data_root: str | Path | None = None,
    batch_size: int = 250,
    bootstrap: int = 0,
    precision: str = "fp32",
    inception_weights: str | Path | None = None,
    preprocessing: str = "tf1",
    progress: bool = False,
) -> Evaluation:
    """Every requested metric of `source` against `reference`, as `ganbench eval` computes them (see the module docstring).

    metrics: names ('fid', ['fid', 'kid'] or 'fid,kid'); None: every metric that applies to the extractor.
    num_samples: images generated by a generator or callable; a folder, npz or tensor gives at most this many.
    seed: the sampling noise's seed. store: a results file to add the rows to (nothing is written without it).
    The other options are `ganbench eval`'s flags of the same names. Raises GanbenchError (one line) on bad input.
    """
    started = time.perf_counter()
    _check_types(reference=reference, extractor=extractor, metrics=metrics, num_samples=num_samples, seed=seed,
                 batch_size=batch_size, bootstrap=bootstrap, store=store, cache_dir=cache_dir, data_root=data_root,
                 inception_weights=inception_weights, device=device, precision=precision, preprocessing=preprocessing)
    num_samples, seed, batch_size, bootstrap = int(num_samples), int(seed), int(batch_size), int(bootstrap)  # numpy's too
    cfg = EvalConfig(
        paths=(_label(source),), references=(str(reference),), num_samples=num_samples, extractors=(extractor,),
        inception_weights=None if inception_weights is None else str(inception_weights), preprocessing=preprocessing,
        metrics=_metric_names(metrics), batch_size=batch_size, device=device, seed=seed, bootstrap=bootstrap,
        results=str(store) if store is not None else EvalConfig.results, quiet=not progress,
        cache_dir=None if cache_dir is None else str(cache_dir), data_root=None if data_root is None else str(data_root),
        precision=precision,
    )
    from ganbench.devices import resolve_device
    from ganbench.features.extract import extract_features
    from ganbench.features.registry import build_extractor
    from ganbench.metric_values import check_metrics
    from ganbench.reference import References, check_statistics_metrics, parse_reference
    from ganbench.scoring import (
        UNREACHABLE,
        RowMaker,
        Scorer,
        extractor_shape,
        reference_count,
        samples,
        source_metrics,
        too_few,
    )

    ref = parse_reference(cfg.references[0])
    check_statistics_metrics([ref], cfg.metrics)
    where = _source(source, cfg)  # a missing path or a folder of several checkpoints is an option error, before any work
    dev = str(resolve_device(cfg.device))
    built = build_extractor(extractor, **cfg.extractor_options(extractor, dev, progress))
    if cfg.metrics is not None:
        check_metrics(cfg.metrics, extractor_shape(built))

    notes: list[str] = []
    references = References(data_root=cfg.data_root, cache_dir=cfg.cache_dir, batch_size=cfg.batch_size, device=dev,
                            progress=progress, log=notes.append)
    loaded = _load(source, where, cfg)
    if loaded.images is not None and loaded.count < cfg.num_samples:
        notes.append(f"{cfg.paths[0]}: {counted(loaded.count, 'image')}, fewer than num_samples {cfg.num_samples}; using all")
    # The Scorer holds what scoring's helpers read (options, extractor, references); its own loop, which records
    # failures as rows and goes on, is the sweep's. Here a failure is raised.
    scorer = Scorer(cfg, built, [ref], references, store=None, device=dev, features=None, log=notes.append)
    scorer.check_reachable()
    try:
        real = references.get(built, ref)
    except GanbenchError as exc:  # worded as the failed rows of `ganbench eval` say it
        raise type(exc)(f"reference {ref.name}: {one_line(exc, limit=None)}") from exc
    n_real = reference_count(real)
    wanted = scorer.wanted(ref, [ref])
    unreachable = [m for m in cfg.metrics or () if m not in wanted]
    if unreachable:  # `ganbench eval` notes them beside its other references; here there are none
        raise MetricError(f"{cfg.paths[0]} vs {ref.name}: {', '.join(unreachable)} not computed: {UNREACHABLE}, "
                          "which one reference cannot give; use `ganbench eval` with both references")
    impossible = {m: why for m in wanted if (why := too_few(m, n_real, loaded.count))}
    if impossible:
        text = f"{cfg.paths[0]} vs {ref.name}: not computed: " + "; ".join(f"{m} ({why})" for m, why in impossible.items())
        if cfg.metrics is not None:
            raise MetricError(text)
        notes.append(text)
    names = [m for m in wanted if m not in impossible]
    if not names:
        raise MetricError(f"{cfg.paths[0]}: no metric can be computed from {loaded.count} sample(s)")

    with _borrowed(loaded.generator[0] if loaded.generator is not None else None):
        images = samples(loaded, cfg, (0, loaded.count), dev)
    fake = extract_features(built, images, cfg.batch_size, dev, progress, f"features {cfg.paths[0]}")
    values = source_metrics(real, fake, names, cfg)

    sha = _content_sha256(where, images)
    rows = RowMaker(scorer, where, sha, started)
    rows.run = loaded.run
    made: list[ResultRow] = [rows.ok(m, value, ref, n_real, len(fake)) for m, value in values.items()]
    if store is not None:
        with ResultsStore(store) as results:
            results.write_results(made)
    scores = tuple(Score(r.metric, r.value, r.std, r.ci_low, r.ci_high, r.protocol) for r in made)
    return Evaluation(cfg.paths[0], sha, scores, tuple(notes))


def _check_types(**options) -> None:
    """Wrong types are one-line ConfigErrors here, not TypeErrors from deep inside (or silent: True is not 1)."""
    for name in ("num_samples", "seed", "batch_size", "bootstrap"):
        value = options[name]
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ConfigError(f"{name}: expected an integer, got {type(value).__name__} {value!r}")
    for name in ("store", "cache_dir", "data_root", "inception_weights"):
        if options[name] is not None and not isinstance(options[name], str | Path):
            raise ConfigError(f"{name}: expected a path or None, got {type(options[name]).__name__}")
    for name in ("device", "precision", "preprocessing"):
        if not isinstance(options[name], str):
            raise ConfigError(f"{name}: expected a string, got {type(options[name]).__name__}")
    from ganbench.features.inception import PREPROCESSINGS

    if options["preprocessing"] not in PREPROCESSINGS:  # Inception's; the CLI's choices refuse it for every extractor
        raise ConfigError(f"unknown Inception preprocessing {options['preprocessing']!r}; expected one of: "
                          f"{', '.join(PREPROCESSINGS)} (--preprocessing)")
    if not isinstance(options["extractor"], str):
        raise ConfigError(f"extractor: expected one extractor name, got {type(options['extractor']).__name__} "
                          "(evaluate one extractor per call)")
    metrics = options["metrics"]
    if not (metrics is None or isinstance(metrics, str)
            or isinstance(metrics, Sequence) and all(isinstance(m, str) for m in metrics)):
        raise ConfigError(f"metrics: expected a name, a list of names or None, got {type(metrics).__name__}")
    if not isinstance(options["reference"], str | Path):
        raise ConfigError("reference: expected DATASET:SPLIT[:N], a folder or an .npz path, got "
                          f"{type(options['reference']).__name__}")


# -- sources --------------------------------------------------------------------------------------------------------


def _metric_names(metrics: Sequence[str] | str | None) -> tuple[str, ...] | None:
    if metrics is None:
        return None
    if isinstance(metrics, str):  # 'fid,kid', as --metrics takes them
        metrics = metrics.split(",")
    return tuple(m.strip() for m in metrics if m.strip())


def _generator(source) -> tuple[torch.nn.Module, int] | None:
    """(module, latent_dim) for a generator source, None for any other source."""
    if isinstance(source, tuple) and len(source) == 2 and isinstance(source[0], torch.nn.Module):
        module, latent_dim = source
    elif isinstance(source, torch.nn.Module):
        module, latent_dim = source, getattr(source, "latent_dim", None)
        if latent_dim is None:
            raise ConfigError(f"generator {type(source).__name__} has no latent_dim attribute; pass (module, latent_dim)")
    else:
        return None
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
        raise ConfigError(f"latent_dim must be a positive integer, got {latent_dim!r}; pass (module, latent_dim)")
    return module, latent_dim


def _label(source) -> str:
    """How a source is named in messages, results and the store's source_path."""
    if isinstance(source, str | Path):
        return str(source)
    if (generator := _generator(source)) is not None:
        return f"<generator {type(generator[0]).__name__}>"
    if isinstance(source, torch.Tensor | np.ndarray):
        return f"<{type(source).__name__} {source.dtype} {'x'.join(map(str, source.shape))}>"
    if callable(source):
        return f"<callable {getattr(source, '__qualname__', type(source).__name__)}>"
    raise ConfigError(
        f"cannot evaluate a {type(source).__name__}; expected a checkpoint, folder or .npz path, a generator "
        f"(module, latent_dim), a callable n -> uint8 NCHW images, or a uint8 NCHW tensor, e.g. {EXAMPLE}"
    )


def _source(source, cfg: EvalConfig):
    """The `Source` of a path (as `ganbench eval` finds it), or a stand-in naming an in-memory source."""
    from ganbench.samples import Source, discover_sources

    if not isinstance(source, str | Path):
        kind = "generator" if _generator(source) is not None else "tensor" if hasattr(source, "shape") else "callable"
        return Source(kind, Path(cfg.paths[0]), {"kind": kind})
    found = discover_sources([str(source)])
    if len(found) != 1:
        raise ConfigError(f"{source} holds {len(found)} checkpoints; ganbench.evaluate scores one source: pass one of "
                          "them, or run `ganbench eval` on the folder")
    return found[0]


def _load(source, where, cfg: EvalConfig):
    """A path through `scoring.load_source`; a generator, callable or tensor as the same `Loaded`."""
    from ganbench.scoring import Loaded, load_source

    if isinstance(source, str | Path):
        return load_source(where, cfg)
    if (generator := _generator(source)) is not None:
        return Loaded(where.run, cfg.num_samples, generator=generator)
    asked = callable(source) and not hasattr(source, "shape")
    if asked:
        try:
            images = source(cfg.num_samples)
        except (MemoryError, torch.OutOfMemoryError):
            raise
        except Exception as exc:  # the caller's code: its failure in one line, as a generator's is
            raise SampleError(f"{where.label} failed: {type(exc).__name__}: {one_line(exc)}") from exc
        if hasattr(images, "shape") and len(images.shape) == 4 and images.shape[0] < cfg.num_samples:
            raise SampleError(f"{where.label} returned {images.shape[0]} images when asked for {cfg.num_samples}")
    else:
        images = source
    images = torch.as_tensor(images)[: cfg.num_samples] if isinstance(images, np.ndarray) else images
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        got = f"{images.dtype} {tuple(images.shape)}" if hasattr(images, "shape") else type(images).__name__
        raise SampleError(f"{where.label} gave {got}; expected uint8 NCHW images (1 or 3 channels, 0..255); "
                          "from [-1, 1]: x.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)")
    images = images[: cfg.num_samples].cpu()
    if images.shape[0] == 0:
        raise SampleError(f"{where.label} yields no images")
    return Loaded(where.run, int(images.shape[0]), images=images)


@contextmanager
def _borrowed(module: torch.nn.Module | None) -> Iterator[None]:
    """Generation moves the module and puts it in eval mode; the caller's module comes back as it was: on its
    device, each submodule in its own mode."""
    if module is None:
        yield
        return
    modes = [(m, m.training) for m in module.modules()]  # each its own: a frozen BatchNorm in a training model
    tensor = next(itertools.chain(module.parameters(), module.buffers()), None)
    device = None if tensor is None else tensor.device  # read now: Module.to moves parameters in place
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
        if device is not None:
            module.to(device)


def _content_sha256(where, images: torch.Tensor) -> str:
    """A file's content hash, as `ganbench eval` keys it; an in-memory source is keyed by the samples it gave."""
    from ganbench.samples import source_sha256

    if where.kind in ("checkpoint", "folder", "npz"):
        return source_sha256(where)
    digest = hashlib.sha256(repr(tuple(images.shape)).encode())
    digest.update(images.contiguous().numpy().tobytes())
    return digest.hexdigest()

