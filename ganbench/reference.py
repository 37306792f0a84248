"""Reference sets for FID and friends: dataset splits (features cached on disk) and external statistics.

A dataset split's reference features are extracted once per protocol and cached (see
`ganbench.features.cache`). Statistics produced elsewhere (an `.npz` with `mu` and `sigma`, the
pytorch-fid / TTUR format) can serve FID too, with the protocol the user declares recorded beside them.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ganbench.data import load_dataset
from ganbench.errors import ConfigError, DataUnavailableError, one_line
from ganbench.features.base import FeatureExtractor
from ganbench.features.cache import cached_features
from ganbench.features.extract import FeatureSet, extract_features


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
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return ReferenceStatistics(mu, sigma, {**declared_protocol, "statistics_sha256": digest, "statistics_file": path.name})
