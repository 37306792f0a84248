"""The on-disk cache of reference features: computed once per (data, extractor, protocol), reused forever.

An entry's file name carries a sha256 of every field that produced it (dataset and split, count and
subset, extractor name and weights hash, preprocessing, ganbench's metric-protocol version), and the
entry stores those fields again. Writes are atomic (temp file + rename), so a killed process never
leaves a half-written entry. An entry that is unreadable, or whose stored fields differ from its key,
is recomputed with a warning; it is never trusted.

Location: `--cache-dir`, else `$GANBENCH_CACHE`, else `$XDG_CACHE_HOME/ganbench` (`~/.cache/ganbench`);
never inside the package. Files are `.npz` read with `allow_pickle=False`: no code runs on load.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ganbench.atomic import atomic_write_bytes
from ganbench.errors import GanbenchWarning, one_line
from ganbench.features.extract import FeatureSet
from ganbench.protocol import METRIC_PROTOCOL_VERSION


def default_cache_dir() -> Path:
    env = os.environ.get("GANBENCH_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ganbench"


def cache_key(fields: dict) -> str:
    """sha256 of the canonical JSON of `fields` (sorted keys), plus the metric-protocol version."""
    canonical = json.dumps({**fields, "metric_protocol_version": METRIC_PROTOCOL_VERSION}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def entry_path(cache_dir: Path, fields: dict) -> Path:
    label = "-".join(str(fields.get(k)) for k in ("dataset", "split", "extractor") if fields.get(k) is not None)
    return Path(cache_dir) / "features" / f"{label or 'features'}-{cache_key(fields)[:20]}.npz"


def save_feature_set(feature_set: FeatureSet, path: Path, fields: dict) -> None:
    meta = {"key": cache_key(fields), "fields": fields, "protocol": feature_set.protocol, "source": feature_set.source}
    arrays = {"features": feature_set.features, "meta": np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8)}
    if feature_set.logits is not None:
        arrays["logits"] = feature_set.logits
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, lambda f: f.write(buffer.getvalue()))


def load_feature_set(path: Path, fields: dict) -> FeatureSet:
    """Read an entry; raises ValueError when it is unreadable or belongs to another key."""
    try:
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as npz:  # our handle: closed even on error
            meta = json.loads(npz["meta"].tobytes().decode())
            features = npz["features"]
            logits = npz["logits"] if "logits" in npz.files else None
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise ValueError(f"unreadable ({type(exc).__name__}: {one_line(exc, 120)})") from exc
    if meta.get("key") != cache_key(fields) or meta.get("fields") != json.loads(json.dumps(fields)):
        raise ValueError("its stored key does not match the request")
    if features.ndim != 2 or (logits is not None and logits.shape[0] != features.shape[0]):
        raise ValueError(f"malformed arrays (features {features.shape})")
    return FeatureSet(features=features, logits=logits, protocol=meta["protocol"], source=meta["source"])


def cached_features(fields: dict, compute: Callable[[], FeatureSet], cache_dir: str | Path | None = None) -> FeatureSet:
    """The cached FeatureSet for `fields`, computing and storing it (atomically) when absent or bad."""
    path = entry_path(Path(cache_dir) if cache_dir is not None else default_cache_dir(), fields)
    if path.is_file():
        try:
            return load_feature_set(path, fields)
        except ValueError as exc:
            warnings.warn(f"feature cache entry {path} is {exc}; recomputing it", GanbenchWarning, stacklevel=2)
    feature_set = compute()
    save_feature_set(feature_set, path, fields)
    return feature_set
