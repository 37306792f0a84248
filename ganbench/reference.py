"""Reference sets for FID and friends: what `--reference` names, and how it becomes features or statistics.

A reference is a dataset split ('fashion-mnist:test'), a seeded subset of one ('fashion-mnist:train:10000'),
a folder or `.npz` of images, or an `.npz` of statistics (`mu` and `sigma`, the pytorch-fid / TTUR format that
`ganbench reference --stats-out` writes and papers publish). Image references are extracted once per protocol
and cached (see `ganbench.features.cache`); statistics serve FID alone, with their file's sha256 in the protocol.

`References` is the one place a sweep resolves them: each reference once per extractor, and a reference that
cannot be loaded (a dataset offline, a bad folder) is an error of every source that needs it, never of the sweep.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ganbench.data import load_dataset
from ganbench.errors import ConfigError, DataUnavailableError, GanbenchError, counted, one_line
from ganbench.features.base import FeatureExtractor
from ganbench.features.cache import cached_features
from ganbench.features.extract import FeatureSet, extract_features
from ganbench.protocol import DATASETS, SELECTION_SUBSET_SEED, SPLITS


def needs_reference_features(metric: str) -> bool:
    """A statistics file (mu, sigma) serves FID alone: every other metric of features needs the reference's features
    (KID, PRDC, CMMD, FD-infinity, FWD, the memorization metrics); IS and the class metrics need no reference."""
    from ganbench.metrics.registry import METRICS

    return metric != "fid" and METRICS[metric].needs == "features"


@dataclass(frozen=True)
class Reference:
    """A parsed --reference: a dataset split ('fashion-mnist:test'), a seeded subset of one
    ('fashion-mnist:train:10000', drawn with SELECTION_SUBSET_SEED), a folder or .npz of images, or an .npz
    of statistics (kind 'statistics')."""

    name: str
    dataset: str | None = None
    split: str | None = None
    path: Path | None = None
    count: int | None = None  # a seeded subset of this many images (all of them when the split is smaller)
    kind: str = "dataset"  # dataset | folder | npz | statistics


def parse_reference(text: str) -> Reference:
    if not text.strip():  # Path("") is the current folder: never read it as images unasked
        raise ConfigError(f"--reference {text!r}: expected DATASET:SPLIT[:N] "
                          f"({', '.join(f'{d}:test' for d in DATASETS)}), a folder of images or an .npz")
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
    if path.is_dir():
        return Reference(str(path), path=path, kind="folder")
    if path.is_file() and path.suffix == ".npz":
        from ganbench.samples import is_statistics_npz

        return Reference(str(path), path=path, kind="statistics" if is_statistics_npz(path) else "npz")
    if path.exists():
        raise ConfigError(f"--reference {text}: expected a folder of images or an .npz, got another kind of file")
    raise ConfigError(
        f"--reference {text}: expected DATASET:SPLIT[:N] ({', '.join(f'{d}:test' for d in DATASETS)}), "
        "a folder of images or an .npz (of images, or of statistics mu and sigma)"
    )


def reference_features(
    extractor: FeatureExtractor,
    dataset: str,
    split: str,
    count: int | None = None,
    *,
    subset_seed: int | None = None,
    data_root: str | Path | None = None,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = True,
) -> FeatureSet:
    """Features of the first `count` images (all when None) of a dataset split, from the cache when possible.

    With `subset_seed`, `count` images drawn at random by that seed instead of the first ones (all of them
    when the split is smaller): the fixed selection subset of the training split that `ganbench report` picks
    the best checkpoint on."""
    data = load_dataset(dataset, split, data_root)
    if subset_seed is not None:
        if count is None:
            raise ConfigError("a seeded reference subset needs a count, e.g. fashion-mnist:train:10000")
        data = data.subset(count, subset_seed)
    elif count is not None:
        if count > len(data):
            raise ConfigError(f"asked for {count} reference images but {dataset} {split} has {len(data)}; lower the count")
        data = data.head(count)
    fields = {
        "dataset": dataset,
        "split": split,
        "count": len(data),
        **({} if subset_seed is None else {"subset_seed": subset_seed}),
        "data_sha256": data.fingerprint(),
        **extractor.protocol,
    }
    source = {"dataset": dataset, "split": split, "count": len(data)}
    return cached_features(
        fields,
        lambda: extract_features(extractor, data.images, batch_size, device, progress, f"{dataset} {split} features", source),
        cache_dir,
        expect_dim=extractor.feature_dim,
    )


@dataclass(frozen=True)
class ReferenceStatistics:
    """mu: float64 (D,); sigma: float64 (D, D); protocol: as declared by the user, plus the file's sha256."""

    mu: np.ndarray
    sigma: np.ndarray
    protocol: dict


def load_reference_statistics(path: str | Path, declared_protocol: dict) -> ReferenceStatistics:
    """Read `mu` and `sigma` from an `.npz` (pytorch-fid / TTUR format) produced elsewhere.

    The file cannot say how it was made, so the caller states it (`declared_protocol`: extractor,
    preprocessing, weights, count); it is stored with every number computed against these statistics.
    """
    path = Path(path)
    if not path.is_file():
        raise DataUnavailableError(f"reference statistics {path} do not exist")
    try:
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as npz:
            if "mu" not in npz.files or "sigma" not in npz.files:
                raise ConfigError(f"{path} holds {', '.join(npz.files)}; reference statistics need arrays 'mu' and 'sigma'")
            mu, sigma = np.asarray(npz["mu"], np.float64), np.asarray(npz["sigma"], np.float64)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataUnavailableError(f"cannot read reference statistics {path}: {one_line(exc)}") from exc
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ConfigError(f"{path}: expected mu (D,) and sigma (D, D), got mu {mu.shape} and sigma {sigma.shape}")
    if not declared_protocol.get("extractor"):
        raise ConfigError(f"{path}: say which extractor and preprocessing produced these statistics (their protocol)")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ConfigError(f"{path}: mu or sigma holds NaN or infinite values")
    from ganbench.samples import file_sha256

    return ReferenceStatistics(mu, sigma, {**declared_protocol, "statistics_sha256": file_sha256(path),
                                           "statistics_file": path.name})


def check_statistics_metrics(references: list[Reference], metrics: tuple[str, ...] | None) -> None:
    """Asking for a metric that needs reference features against a statistics file is an option error."""
    statistics = [r.name for r in references if r.kind == "statistics"]
    wanted = [m for m in (metrics or ()) if needs_reference_features(m)]
    if statistics and wanted:
        raise ConfigError(
            f"--reference {statistics[0]} holds statistics (mu, sigma), not images, so {', '.join(wanted)} cannot use it "
            "(they need the reference's features); leave them out of --metrics or pass the reference images"
        )


class References:
    """Resolves references for one sweep: each (extractor, reference) once, its failure remembered and re-raised
    for every source that needs it, so one unloadable reference fails those sources and nothing else."""

    def __init__(self, *, data_root, cache_dir, batch_size: int, device: str, progress: bool, log):
        self.data_root, self.cache_dir, self.batch_size = data_root, cache_dir, batch_size
        self.device, self.progress, self.log = device, progress, log
        self._resolved: dict[tuple[str, str], FeatureSet | ReferenceStatistics | GanbenchError] = {}
        self._digests: dict[str, str | None] = {}

    def digest(self, reference: Reference) -> str | None:
        """sha256 of a file reference's content (None for dataset splits, or a file that cannot be read)."""
        from ganbench.samples import Source, source_sha256

        if reference.kind == "dataset" or reference.path is None:
            return None
        if reference.name not in self._digests:
            try:
                kind = "folder" if reference.kind == "folder" else "npz"
                self._digests[reference.name] = source_sha256(Source(kind, reference.path))
            except OSError:
                self._digests[reference.name] = None
        return self._digests[reference.name]

    def get(self, extractor: FeatureExtractor, reference: Reference) -> FeatureSet | ReferenceStatistics:
        key = (extractor.name, reference.name)
        if key not in self._resolved:
            try:
                self._resolved[key] = self._load(extractor, reference)
            except GanbenchError as exc:
                self._resolved[key] = exc
        found = self._resolved[key]
        if isinstance(found, GanbenchError):
            raise found
        return found

    def _load(self, extractor: FeatureExtractor, reference: Reference) -> FeatureSet | ReferenceStatistics:
        from ganbench.samples import load_folder_images, load_npz_images

        if reference.kind == "dataset":
            features = reference_features(
                extractor, reference.dataset, reference.split, reference.count,
                subset_seed=None if reference.count is None else SELECTION_SUBSET_SEED, data_root=self.data_root,
                cache_dir=self.cache_dir, batch_size=self.batch_size, device=self.device, progress=self.progress)
            if reference.count is not None and len(features) < reference.count:
                self.log(f"reference {reference.name}: the split holds only {counted(len(features), 'image')}; using all of them")
            return features
        if reference.kind == "statistics":
            stats = load_reference_statistics(reference.path, dict(extractor.protocol))
            if stats.mu.shape[0] != extractor.feature_dim:
                raise ConfigError(
                    f"reference statistics {reference.path} are {stats.mu.shape[0]}-dimensional, but {extractor.name} "
                    f"features have {extractor.feature_dim} dimensions; use statistics made with --extractor {extractor.name}"
                )
            return stats
        sha = self.digest(reference)
        images = load_npz_images(reference.path) if reference.kind == "npz" else load_folder_images(reference.path)
        if images.shape[0] < 2:
            raise ConfigError(f"reference {reference.path} holds {counted(images.shape[0], 'image')}; "
                              "a reference needs at least 2")
        fields = {"reference_sha256": sha, "count": int(images.shape[0]), **extractor.protocol}
        return cached_features(
            fields,
            lambda: extract_features(extractor, images, self.batch_size, self.device, self.progress,
                                     f"reference {reference.path.name}", {"path": str(reference.path), "sha256": sha}),
            self.cache_dir,
            expect_dim=extractor.feature_dim,
        )

