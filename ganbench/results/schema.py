"""What one stored result is: the typed rows ganbench writes and the SQLite table that holds them.

A result is one number for one (source, protocol, metric). The protocol is every choice that changes
the number (extractor and its weights, preprocessing, sample counts, reference data and split, seed,
the metric's own options, ganbench's metric-protocol version); it is stored whole as canonical JSON,
its sha256 is the `protocol_key`, and the fields people filter on also get their own columns.

Rows are validated when they are built, so a malformed row never reaches the database. A bad row is
a bug in the caller (a metric should have raised `MetricError` before producing NaN), so validation
raises `ValueError`/`TypeError`, not a `GanbenchError`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from ganbench import __version__

# Bump when the table changes; `PRAGMA user_version` holds it and the store refuses other versions.
SCHEMA_VERSION = 1
# `PRAGMA application_id` ("GANB"): tells a ganbench store apart from any other SQLite file.
APPLICATION_ID = 0x47414E42

Status = Literal["ok", "failed"]
STATUSES: tuple[str, ...] = ("ok", "failed")

# The long format, in order, with each column's kind (text, int, real, time); `rows()` and
# `to_dataframe()` always return exactly these columns, whichever metrics are present.
COLUMNS: dict[str, str] = {
    "source_sha256": "text",
    "protocol_key": "text",
    "metric": "text",
    "status": "text",
    "value": "real",
    "std": "real",
    "ci_low": "real",
    "ci_high": "real",
    "error": "text",
    "source_path": "text",
    "extractor": "text",
    "weights_sha256": "text",
    "preprocessing": "text",
    "n_generated": "int",
    "n_reference": "int",
    "reference_name": "text",
    "reference_split": "text",
    "seed": "int",
    "metric_options": "text",
    "protocol_json": "text",
    "run_kind": "text",
    "run_dataset": "text",
    "run_seed": "int",
    "run_epoch": "int",
    "run_step": "int",
    "ganbench_version": "text",
    "torch_version": "text",
    "device": "text",
    "wall_time_s": "real",
    "created_at": "time",
}

# Written by hand rather than generated from COLUMNS so that the file's shape can be read here;
# tests check that the two agree. Not STRICT: that needs SQLite 3.37, older than some Pythons ship.
DDL = """
CREATE TABLE results (
    id               INTEGER PRIMARY KEY,
    source_sha256    TEXT NOT NULL,               -- sha256 of the checkpoint / folder / npz contents
    protocol_key     TEXT NOT NULL,               -- sha256 of protocol_json
    metric           TEXT NOT NULL CHECK (metric <> ''),
    status           TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    value            REAL,                        -- NULL exactly when status = 'failed'
    std              REAL,
    ci_low           REAL,
    ci_high          REAL,
    error            TEXT,                        -- the failure's message; set exactly when status = 'failed'
    source_path      TEXT NOT NULL,
    extractor        TEXT NOT NULL,
    weights_sha256   TEXT NOT NULL,
    preprocessing    TEXT NOT NULL,
    n_generated      INTEGER NOT NULL,
    n_reference      INTEGER NOT NULL,
    reference_name   TEXT NOT NULL,               -- e.g. fashion-mnist:test, or a folder / npz path
    reference_split  TEXT,
    seed             INTEGER NOT NULL,
    metric_options   TEXT NOT NULL,               -- canonical JSON, '{}' when the metric has none
    protocol_json    TEXT NOT NULL,               -- canonical JSON of the whole protocol
    run_kind         TEXT,                        -- baseline / generator / folder / npz
    run_dataset      TEXT,
    run_seed         INTEGER,
    run_epoch        INTEGER,
    run_step         INTEGER,
    ganbench_version TEXT NOT NULL,
    torch_version    TEXT,
    device           TEXT,
    wall_time_s      REAL,
    created_at       TEXT NOT NULL,               -- UTC, ISO 8601
    CHECK ((status = 'ok') = (value IS NOT NULL AND error IS NULL)),
    UNIQUE (source_sha256, protocol_key, metric)  -- makes re-runs idempotent, and indexes completed_metrics()
);
CREATE INDEX results_metric ON results (metric, status);
"""

_SHA256 = re.compile(r"[0-9a-f]{64}")


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, no NaN: equal protocols always give byte-equal text, hence equal keys."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not plain JSON data ({exc}): {value!r}") from exc


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _text(name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")


def _integer(name: str, value: object, *, minimum: int | None = None, optional: bool = False) -> None:
    if value is None and optional:
        return
    # bool is an int subclass; True as a sample count is a bug, not 1.
    if not isinstance(value, int) or isinstance(value, bool) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ValueError(f"{name} must be an integer{bound}, got {value!r}")


def _finite(name: str, value: object, *, optional: bool = True) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class Protocol:
    """Everything that changes a metric's value besides the source itself.

    `options` holds this metric's own options (KID subset size, PRDC k, ...), so FID and KID computed in
    one run have different protocol keys; the shared fields have their own columns for grouping.
    `metric_protocol_version` is the evaluation code's version (features.cache.METRIC_PROTOCOL_VERSION),
    passed in because results never import the evaluation code.
    """

    extractor: str
    weights_sha256: str
    preprocessing: str
    n_generated: int
    n_reference: int
    reference_name: str
    reference_split: str | None
    seed: int
    metric_protocol_version: int
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("extractor", "weights_sha256", "preprocessing", "reference_name"):
            _text(name, getattr(self, name))
        _text("reference_split", self.reference_split, optional=True)
        _integer("n_generated", self.n_generated, minimum=1)
        _integer("n_reference", self.n_reference, minimum=0)  # 0: a failed source whose reference is unknown
        _integer("seed", self.seed)
        _integer("metric_protocol_version", self.metric_protocol_version, minimum=1)
        if not isinstance(self.options, Mapping):
            raise TypeError(f"options must be a mapping, got {type(self.options).__name__}")
        # A private copy, round-tripped through JSON: later edits to the caller's dict cannot change the key.
        object.__setattr__(self, "options", json.loads(canonical_json(dict(self.options))))

    def __hash__(self) -> int:  # the dataclass hash would fail on the options dict
        return hash(self.key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "extractor": self.extractor,
            "weights_sha256": self.weights_sha256,
            "preprocessing": self.preprocessing,
            "n_generated": self.n_generated,
            "n_reference": self.n_reference,
            "reference_name": self.reference_name,
            "reference_split": self.reference_split,
            "seed": self.seed,
            "metric_protocol_version": self.metric_protocol_version,
            "options": dict(self.options),
        }

    @property
    def json(self) -> str:
        return canonical_json(self.to_dict())

    @property
    def key(self) -> str:
        """sha256 of the canonical JSON: the `protocol_key` column."""
        return hashlib.sha256(self.json.encode()).hexdigest()


@dataclass(frozen=True, kw_only=True)
class RunInfo:
    """The training run a checkpoint belongs to; all None for a folder or npz of images."""

    kind: str | None = None  # baseline / generator / folder / npz
    dataset: str | None = None
    seed: int | None = None
    epoch: int | None = None
    step: int | None = None

    def __post_init__(self) -> None:
        _text("run kind", self.kind, optional=True)
        _text("run dataset", self.dataset, optional=True)
        _integer("run seed", self.seed, optional=True)
        _integer("run epoch", self.epoch, minimum=0, optional=True)
        _integer("run step", self.step, minimum=0, optional=True)


@dataclass(frozen=True, kw_only=True)
class ResultRow:
    """One metric value (or one failure) for one source under one protocol, as written to the store.

    A failure has status='failed', value None and a one-line `error`; it is recorded per metric, so a
    later success for that metric replaces it through the same unique key.
    """

    metric: str
    protocol: Protocol
    source_path: str
    source_sha256: str
    value: float | None = None
    std: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    status: Status = "ok"
    error: str | None = None
    run: RunInfo = field(default_factory=RunInfo)
    ganbench_version: str = __version__
    torch_version: str | None = None
    device: str | None = None
    wall_time_s: float | None = None
    created_at: str = field(default_factory=utc_now)

    def __post_init__(self) -> None:
        _text("metric", self.metric)
        if self.metric != self.metric.strip():
            raise ValueError(f"metric must not have surrounding spaces, got {self.metric!r}")
        if not isinstance(self.protocol, Protocol):
            raise TypeError(f"protocol must be a Protocol, got {type(self.protocol).__name__}")
        if not isinstance(self.run, RunInfo):
            raise TypeError(f"run must be a RunInfo, got {type(self.run).__name__}")
        _text("source_path", self.source_path)
        if not isinstance(self.source_sha256, str) or not _SHA256.fullmatch(self.source_sha256):
            raise ValueError(f"source_sha256 must be 64 lowercase hex digits, got {self.source_sha256!r}")
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if self.status == "ok":
            _finite("value", self.value, optional=False)
            if self.error is not None:
                raise ValueError(f"an 'ok' row carries no error message, got {self.error!r}")
        else:
            if self.value is not None:
                raise ValueError(f"a 'failed' row has no value, got {self.value!r}")
            _text("error", self.error)
        for name in ("std", "ci_low", "ci_high", "wall_time_s"):
            _finite(name, getattr(self, name))
        if self.std is not None and self.std < 0:
            raise ValueError(f"std must be >= 0, got {self.std!r}")
        if (self.ci_low is None) != (self.ci_high is None):
            raise ValueError(f"give both ci_low and ci_high or neither, got {self.ci_low!r}, {self.ci_high!r}")
        if self.ci_low is not None and self.ci_low > self.ci_high:
            raise ValueError(f"ci_low {self.ci_low!r} is above ci_high {self.ci_high!r}")
        if self.wall_time_s is not None and self.wall_time_s < 0:
            raise ValueError(f"wall_time_s must be >= 0, got {self.wall_time_s!r}")
        _text("ganbench_version", self.ganbench_version)
        _text("torch_version", self.torch_version, optional=True)
        _text("device", self.device, optional=True)
        _check_utc_timestamp(self.created_at)

    def to_record(self) -> dict[str, Any]:
        """Column name -> value for every column in COLUMNS (floats as float, so numpy scalars store as REAL)."""
        protocol = self.protocol
        record = {
            "source_sha256": self.source_sha256,
            "protocol_key": protocol.key,
            "metric": self.metric,
            "status": self.status,
            "value": _float_or_none(self.value),
            "std": _float_or_none(self.std),
            "ci_low": _float_or_none(self.ci_low),
            "ci_high": _float_or_none(self.ci_high),
            "error": self.error,
            "source_path": self.source_path,
            "extractor": protocol.extractor,
            "weights_sha256": protocol.weights_sha256,
            "preprocessing": protocol.preprocessing,
            "n_generated": protocol.n_generated,
            "n_reference": protocol.n_reference,
            "reference_name": protocol.reference_name,
            "reference_split": protocol.reference_split,
            "seed": protocol.seed,
            "metric_options": canonical_json(dict(protocol.options)),
            "protocol_json": protocol.json,
            "run_kind": self.run.kind,
            "run_dataset": self.run.dataset,
            "run_seed": self.run.seed,
            "run_epoch": self.run.epoch,
            "run_step": self.run.step,
            "ganbench_version": self.ganbench_version,
            "torch_version": self.torch_version,
            "device": self.device,
            "wall_time_s": _float_or_none(self.wall_time_s),
            "created_at": self.created_at,
        }
        assert record.keys() == COLUMNS.keys()
        return record


def _float_or_none(value: float | None) -> float | None:
    return None if value is None else float(value)


def _check_utc_timestamp(text: object) -> None:
    try:
        moment = datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.utcoffset() is None or moment.utcoffset().total_seconds() != 0:
        raise ValueError(f"created_at must be an ISO 8601 UTC timestamp such as {utc_now()!r}, got {text!r}")
