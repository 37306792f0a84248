"""The on-disk cache of reference features: computed once per (data, extractor, protocol), reused forever.

An entry's file name carries a sha256 of every field that produced it (dataset and split, count and
subset, extractor name and weights hash, preprocessing, ganbench's metric-protocol version), and the
entry stores those fields again. Writes are atomic (temp file + rename), so a killed process never
leaves a half-written entry. An entry that is unreadable, whose stored fields differ from its key, or
whose arrays do not fit the key (row count, feature dimension, dtype, NaN) is recomputed with a warning;
it is never trusted. A cache that cannot be written (read-only, full) is a warning too: the features
are returned all the same. The leftovers of killed writes are removed when an entry is computed.

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

from ganbench.atomic import atomic_write_bytes, remove_stale_temporaries
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


def load_feature_set(path: Path, fields: dict, expect_rows: int | None = None, expect_dim: int | None = None) -> FeatureSet:
    """Read an entry; raises ValueError when it is unreadable, belongs to another key or does not fit it."""
    try:
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as npz:  # our handle: closed even on error
            meta = json.loads(npz["meta"].tobytes().decode())
            features = npz["features"]
            logits = npz["logits"] if "logits" in npz.files else None
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise ValueError(f"unreadable ({type(exc).__name__}: {one_line(exc, 120)})") from exc
    if meta.get("key") != cache_key(fields) or meta.get("fields") != json.loads(json.dumps(fields)):
        raise ValueError("its stored key does not match the request")
    feature_set = FeatureSet(features=features, logits=logits, protocol=meta["protocol"], source=meta["source"])
    problem = _misfit(feature_set, fields, expect_rows, expect_dim)
    if problem:
        raise ValueError(f"not what its key describes ({problem})")
    return feature_set


def _misfit(feature_set: FeatureSet, fields: dict, expect_rows: int | None, expect_dim: int | None) -> str | None:
    """Why these arrays cannot be the features `fields` describe, or None when they can.

    The key says what went in; this checks what came out, so an entry written by a buggy or interrupted
    producer (50 rows under a key of 10,000 images, a NaN) is recomputed rather than silently scored."""
    features, logits = feature_set.features, feature_set.logits
    rows = expect_rows if expect_rows is not None else fields.get("count")
    if features.ndim != 2:
        return f"features of shape {features.shape}, expected (N, D)"
    if rows is not None and features.shape[0] != int(rows):
        return f"{features.shape[0]} rows, expected {int(rows)}"
    if expect_dim is not None and features.shape[1] != expect_dim:
        return f"{features.shape[1]}-d features, expected {expect_dim}-d"
    for name, array in (("features", features), ("logits", logits)):
        if array is None:
            continue
        if not np.issubdtype(array.dtype, np.floating):
            return f"{name} of dtype {array.dtype}, expected float"
        if not np.isfinite(array).all():
            return f"{name} hold NaN or infinite values"
    if logits is not None and (logits.ndim != 2 or logits.shape[0] != features.shape[0]):
        return f"logits of shape {logits.shape} for {features.shape[0]} feature rows"
    return None


def cached_features(fields: dict, compute: Callable[[], FeatureSet], cache_dir: str | Path | None = None,
                    expect_rows: int | None = None, expect_dim: int | None = None) -> FeatureSet:
    """The cached FeatureSet for `fields`, computing and storing it (atomically) when absent or bad.

    An entry is used only when it matches its key and fits it: `expect_rows` rows (default: `fields["count"]`
    when present), `expect_dim` columns when given, float and finite. A cache that cannot be written (read-only,
    full) costs a warning, not the computed features: the cache only saves time, so losing it must not fail a
    sweep that has already paid for the extraction."""
    path = entry_path(Path(cache_dir) if cache_dir is not None else default_cache_dir(), fields)
    if path.is_file():
        try:
            return load_feature_set(path, fields, expect_rows, expect_dim)
        except ValueError as exc:
            warnings.warn(f"feature cache entry {path} is {exc}; recomputing it", GanbenchWarning, stacklevel=2)
    elif path.exists():
        warnings.warn(f"feature cache entry {path} is not a file; recomputing it", GanbenchWarning, stacklevel=2)
    remove_stale_temporaries(path.parent)  # the leftovers of killed writes; cheap, and only on this slower path
    feature_set = compute()
    if _misfit(feature_set, fields, expect_rows, expect_dim) is not None:
        return feature_set  # not stored: it would only be recomputed; the metric reports what is wrong with it
    try:
        save_feature_set(feature_set, path, fields)
    except OSError as exc:
        reason = exc.strerror or one_line(exc, 120)
        warnings.warn(f"feature cache entry {path} could not be written ({reason}); continuing without caching it "
                      "(free space or pass a writable --cache-dir)", GanbenchWarning, stacklevel=2)
    return feature_set
