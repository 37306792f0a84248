"""The results store: round trips, idempotent re-runs, all-or-nothing batches, kill safety, concurrent
writers, and the errors for files it must not touch. Offline, CPU only, a few seconds."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest

from ganbench.errors import GanbenchError
from ganbench.results import COLUMNS, SCHEMA_VERSION, Protocol, ResultRow, ResultsStore, ResultsStoreError, RunInfo
from ganbench.results.schema import APPLICATION_ID

REPO = Path(__file__).resolve().parents[1]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def make_protocol(**overrides) -> Protocol:
    fields = dict(
        extractor="inception-v3-compat",
        weights_sha256=sha("weights"),
        preprocessing="torch-fidelity-bilinear-299",
        n_generated=10_000,
        n_reference=10_000,
        reference_name="fashion-mnist:test",
        reference_split="test",
        seed=0,
        metric_protocol_version=1,
    )
    return Protocol(**{**fields, **overrides})


def make_row(source: str = "ckpt-a", metric: str = "fid", value: float | None = 12.5, **overrides) -> ResultRow:
    fields = dict(
        metric=metric,
        protocol=make_protocol(),
        source_path=f"checkpoints/{source}.pt",
        source_sha256=sha(source),
        value=value,
    )
    return ResultRow(**{**fields, **overrides})


def failed_row(source: str = "ckpt-a", metric: str = "fid", error: str = "MetricError: NaN features") -> ResultRow:
    return make_row(source, metric, value=None, status="failed", error=error)


def raw_connection(path: Path) -> closing[sqlite3.Connection]:
    """A plain sqlite3 connection, closed on exit (`with sqlite3.connect()` alone only commits)."""
    return closing(sqlite3.connect(path))


def raw_query(path: Path, sql: str) -> list[tuple]:
    with raw_connection(path) as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ResultsStore]:
    with ResultsStore(tmp_path / "nested" / "dir" / "results.sqlite") as opened:
        yield opened


# -- round trip and the long format ----------------------------------------------------------------


def test_every_field_round_trips(store: ResultsStore):
    protocol = make_protocol(options={"subset_size": 1000, "subsets": 100})
    row = ResultRow(
        metric="kid",
        protocol=protocol,
        source_path="checkpoints/dcgan/epoch_010.pt",
        source_sha256=sha("epoch10"),
        value=0.0123,
        std=0.0004,
        ci_low=0.0115,
        ci_high=0.0131,
        run=RunInfo(kind="generator", dataset="fashion-mnist", seed=3, epoch=10, step=4690),
        torch_version="2.6.0",
        device="cuda:0",
        wall_time_s=41.5,
        created_at="2026-01-02T03:04:05.678+00:00",
    )
    assert store.write_results([row]) == 1
    (stored,) = store.rows()
    assert stored == row.to_record()
    assert list(stored) == list(COLUMNS)
    assert stored["protocol_key"] == protocol.key == hashlib.sha256(stored["protocol_json"].encode()).hexdigest()
    assert json.loads(stored["protocol_json"]) == protocol.to_dict()
    assert json.loads(stored["metric_options"]) == {"subset_size": 1000, "subsets": 100}
    assert (stored["run_kind"], stored["run_epoch"], stored["run_step"]) == ("generator", 10, 4690)


def test_table_columns_match_the_long_format(store: ResultsStore):
    columns = [name for _, name, *_ in raw_query(store.path, "PRAGMA table_info(results)")]
    assert columns == ["id", *COLUMNS]
    assert raw_query(store.path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert raw_query(store.path, "PRAGMA journal_mode") == [("wal",)]


def test_protocol_key_is_canonical_and_covers_metric_options():
    options = {"b": 2, "a": [1, 2]}
    assert make_protocol(options=options).key == make_protocol(options=dict(reversed(options.items()))).key
    assert make_protocol(options={"subset_size": 1000}).key != make_protocol(options={"subset_size": 500}).key
    assert make_protocol().key != make_protocol(metric_protocol_version=2).key


@pytest.mark.parametrize("metrics", [[], ["fid"], ["fid", "kid", "precision", "recall"]])
def test_dataframe_has_fixed_columns_and_dtypes(tmp_path: Path, metrics: list[str]):
    with ResultsStore(tmp_path / "r.sqlite") as store:
        store.write_results([make_row(metric=m) for m in metrics])
        if metrics:
            store.write_results([failed_row("ckpt-b", metrics[0])])
        frame = store.to_dataframe()
    assert list(frame.columns) == list(COLUMNS)
    assert len(frame) == (len(metrics) + 1 if metrics else 0)
    expected = {"text": "string", "int": "Int64", "real": "float64", "time": "datetime64[us, UTC]"}
    assert {name: str(dtype) for name, dtype in frame.dtypes.items()} == {name: expected[kind] for name, kind in COLUMNS.items()}


def test_rows_filters(store: ResultsStore):
    store.write_results([make_row(metric="fid"), make_row(metric="kid", value=0.01), failed_row("ckpt-b")])
    assert [r["metric"] for r in store.rows(metric="kid")] == ["kid"]
    assert len(store.rows(metric=["fid", "kid"])) == 3
    assert store.rows(metric=[]) == []
    assert [r["status"] for r in store.rows(value=None)] == ["failed"]
    assert len(store.rows(source_sha256=sha("ckpt-a"), status="ok")) == 2
    with pytest.raises(ValueError, match=r"unknown results column\(s\) \['fdi'\]"):
        store.rows(fdi=1)


# -- idempotence, --force, failures -----------------------------------------------------------------


def test_rewrite_keeps_the_stored_row(store: ResultsStore):
    rows = [make_row(metric="fid", value=10.0), make_row(metric="kid", value=0.5)]
    assert store.write_results(rows) == 2
    assert store.write_results([replace(r, value=99.0) for r in rows]) == 0
    assert sorted(r["value"] for r in store.rows()) == [0.5, 10.0]


def test_replace_mode_overwrites_without_duplicating(store: ResultsStore):
    store.write_results([make_row(metric="fid", value=10.0), make_row(metric="kid", value=0.5)])
    assert store.write_results([make_row(metric="fid", value=11.0)], replace=True) == 1
    assert {r["metric"]: r["value"] for r in store.rows()} == {"fid": 11.0, "kid": 0.5}


def test_completed_metrics(store: ResultsStore):
    key = make_protocol().key
    store.write_results([make_row(metric="fid"), make_row(metric="is", value=8.0), failed_row(metric="kid")])
    assert store.completed_metrics(sha("ckpt-a"), key) == {"fid", "is"}
    assert store.completed_metrics(sha("ckpt-a"), make_protocol(n_generated=5000).key) == frozenset()
    assert store.completed_metrics(sha("ckpt-other"), key) == frozenset()


def test_failure_is_replaced_by_a_later_success(store: ResultsStore):
    store.write_results([failed_row(metric="fid", error="first")])
    store.write_results([failed_row(metric="fid", error="second")])
    assert [(r["status"], r["error"]) for r in store.rows()] == [("failed", "second")]
    assert store.write_results([make_row(metric="fid", value=7.0)]) == 1  # no --force needed
    assert [(r["status"], r["value"], r["error"]) for r in store.rows()] == [("ok", 7.0, None)]


def test_failure_never_replaces_a_result(store: ResultsStore):
    store.write_results([make_row(metric="fid", value=7.0)])
    assert store.write_results([failed_row(metric="fid")], replace=True) == 0
    assert [(r["status"], r["value"]) for r in store.rows()] == [("ok", 7.0)]


# -- all or nothing -------------------------------------------------------------------------------


def test_batch_that_fails_halfway_leaves_nothing(store: ResultsStore):
    store.write_results([make_row("kept")])

    def rows_then_crash():
        yield make_row("ckpt-b", "fid")
        yield make_row("ckpt-b", "kid", value=0.1)
        raise RuntimeError("sampler crashed")

    with pytest.raises(RuntimeError, match="sampler crashed"):
        store.write_results(rows_then_crash())
    with pytest.raises(TypeError, match="expected a ResultRow, got dict"):
        store.write_results([make_row("ckpt-c", "fid"), {"metric": "kid"}, make_row("ckpt-c", "is")])
    with pytest.raises(KeyError), store.transaction() as batch:
        batch.write(make_row("ckpt-d", "fid"))
        raise KeyError("interrupted")
    assert [r["source_sha256"] for r in store.rows()] == [sha("kept")]
    assert store.write_results([make_row("ckpt-b")]) == 1  # the store is still usable
    with pytest.raises(RuntimeError, match="transaction has ended"):
        batch.write(make_row("ckpt-e"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"metric": ""}, "metric must be a non-empty string"),
        ({"value": float("nan")}, "value must be a finite number, got nan"),
        ({"value": None}, "value must be a finite number, got None"),
        ({"status": "done"}, r"status must be one of \('ok', 'failed'\)"),
        ({"status": "failed", "error": None, "value": None}, "error must be a non-empty string"),
        ({"status": "failed", "error": "boom"}, "a 'failed' row has no value"),
        ({"error": "boom"}, "an 'ok' row carries no error message"),
        ({"source_sha256": "abc"}, "source_sha256 must be 64 lowercase hex digits"),
        ({"ci_low": 1.0}, "give both ci_low and ci_high or neither"),
        ({"std": -1.0}, "std must be >= 0"),
        ({"created_at": "2026-01-02T03:04:05"}, "created_at must be an ISO 8601 UTC timestamp"),
    ],
)
def test_invalid_rows_are_refused(overrides: dict, message: str):
    with pytest.raises(ValueError, match=message):
        make_row(**overrides)


def test_invalid_protocol_is_refused():
    with pytest.raises(ValueError, match="n_generated must be an integer >= 1, got True"):
        make_protocol(n_generated=True)
    with pytest.raises(ValueError, match="not plain JSON data"):
        make_protocol(options={"k": float("inf")})


# -- processes: kill safety and concurrent writers --------------------------------------------------

# Writes `batches` transactions (forever when negative) of `rows` rows each, one source per transaction,
# plus one row for a source shared by all writers. Touches `ready`, then waits for `go` before writing.
WRITER = """
import hashlib, os, sys, time
from ganbench.results import Protocol, ResultRow, ResultsStore
path, prefix, batches, rows, ready, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
sha = lambda text: hashlib.sha256(text.encode()).hexdigest()
protocol = Protocol(extractor="lenet", weights_sha256=sha("w"), preprocessing="none", n_generated=100, n_reference=100,
                    reference_name="fashion-mnist:test", reference_split="test", seed=0, metric_protocol_version=1)
with ResultsStore(path) as store:
    open(ready, "w").close()
    while not os.path.exists(go):
        time.sleep(0.005)
    i = 0
    while i != batches:
        batch = [ResultRow(metric=f"m{j}", protocol=protocol, source_path=f"{prefix}-{i}", source_sha256=sha(f"{prefix}-{i}"),
                           value=float(j)) for j in range(rows)]
        batch.append(ResultRow(metric="shared", protocol=protocol, source_path="shared", source_sha256=sha(f"shared-{i % 5}"),
                               value=1.0))
        store.write_results(batch)
        i += 1
"""


def start_writer(tmp_path: Path, path: Path, prefix: str, batches: int, rows: int) -> tuple[subprocess.Popen, Path]:
    ready = tmp_path / f"{prefix}.ready"
    command = [sys.executable, "-c", WRITER, str(path), prefix, str(batches), str(rows), str(ready), str(tmp_path / "go")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return process, ready


def wait_for(condition, what: str, processes: list[subprocess.Popen], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        for process in processes:
            if process.poll() is not None:  # died early: show why instead of waiting out the timeout
                pytest.fail(f"writer exited with {process.returncode} while waiting for {what}: {process.communicate()[1]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def rows_per_source(path: Path) -> dict[str, int]:
    return dict(raw_query(path, "SELECT source_path, count(*) FROM results WHERE metric <> 'shared' GROUP BY source_path"))


def test_killed_writer_leaves_only_complete_batches(tmp_path: Path):
    path = tmp_path / "killed.sqlite"
    rows = 40
    process, ready = start_writer(tmp_path, path, "kill", batches=-1, rows=rows)
    try:
        wait_for(ready.exists, "the writer to open the store", [process])
        (tmp_path / "go").touch()
        wait_for(lambda: len(rows_per_source(path)) >= 5, "five committed batches", [process])
        time.sleep(0.05)  # land somewhere inside a later batch
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert raw_query(path, "PRAGMA integrity_check") == [("ok",)]
    with ResultsStore(path) as store:
        counts: dict[str, int] = {}
        for row in store.rows():
            counts[row["source_path"]] = counts.get(row["source_path"], 0) + 1
    batches = {source: n for source, n in counts.items() if source != "shared"}
    assert len(batches) >= 5
    assert set(batches.values()) == {rows}, "a batch was partly written"
    assert sorted(batches) == sorted(f"kill-{i}" for i in range(len(batches))), "a committed batch went missing"


def test_concurrent_writers_lose_nothing(tmp_path: Path):
    path = tmp_path / "shared.sqlite"
    batches, rows = 60, 3
    writers = [start_writer(tmp_path, path, prefix, batches, rows) for prefix in ("alpha", "beta")]
    try:
        for _, ready in writers:
            wait_for(ready.exists, "both writers to open the store", [p for p, _ in writers])
        (tmp_path / "go").touch()
        outputs = [process.communicate(timeout=120) for process, _ in writers]
    finally:
        for process, _ in writers:
            if process.poll() is None:
                process.kill()
                process.communicate()
    for (process, _), (_, stderr) in zip(writers, outputs, strict=True):
        assert process.returncode == 0, stderr
    expected = {f"{prefix}-{i}": rows for prefix in ("alpha", "beta") for i in range(batches)}
    assert rows_per_source(path) == expected
    assert raw_query(path, "SELECT count(*), count(DISTINCT source_sha256) FROM results WHERE metric = 'shared'") == [(5, 5)]
    assert raw_query(path, "SELECT count(*) FROM results") == [(2 * batches * rows + 5,)]


# -- files the store must refuse ----------------------------------------------------------------------


def test_newer_schema_version_is_refused(tmp_path: Path):
    path = tmp_path / "future.sqlite"
    ResultsStore(path).close()
    with raw_connection(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 98}")
        conn.commit()
    message = (
        rf"^\S*future\.sqlite has results schema version {SCHEMA_VERSION + 98}, written by a newer ganbench; "
        rf"ganbench \S+ reads schema version {SCHEMA_VERSION}: upgrade ganbench or pass a new --results path$"
    )
    with pytest.raises(ResultsStoreError, match=message) as caught:
        ResultsStore(path)
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, GanbenchError)


@pytest.mark.parametrize("read_only", [False, True])
def test_a_store_with_ganbenchs_header_but_other_tables_is_refused_in_one_line(tmp_path: Path, read_only: bool):
    # application_id and user_version were the only checks: eval and report then failed with a traceback
    # ("no such column: source_sha256") on a file that claims to be a store but is not one
    path = tmp_path / "fake.sqlite"
    with raw_connection(path) as conn:
        conn.execute("CREATE TABLE results (id INTEGER PRIMARY KEY, source_path TEXT)")
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.commit()
    before = path.read_bytes()
    with pytest.raises(ResultsStoreError, match=r"^\S*fake\.sqlite has a results table without the columns "
                                                r"source_sha256, protocol_key, metric, ...; it is not a ganbench results store: "
                                                r"pass a different --results path$"):
        ResultsStore(path, read_only=read_only)
    assert path.read_bytes() == before


@pytest.mark.parametrize("read_only", [False, True])
def test_a_fifo_is_refused_not_waited_on(tmp_path: Path, read_only: bool):
    # report's read-only open of a named pipe blocked for ever (waiting for a writer); eval said "disk I/O error".
    # In a subprocess: a blocked open cannot be interrupted from Python.
    path = tmp_path / "pipe.sqlite"
    os.mkfifo(path)
    code = ("from ganbench.results import ResultsStore, ResultsStoreError\n"
            f"try:\n    ResultsStore({str(path)!r}, read_only={read_only})\n"
            "except ResultsStoreError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert re.match(r"^\S*pipe\.sqlite is not a regular file \(a named pipe\); pass a results file to --results$",
                    done.stdout.strip()), (done.stdout, done.stderr)


def test_non_sqlite_file_is_refused_and_left_alone(tmp_path: Path):
    path = tmp_path / "notes.sqlite"
    content = b"these are not the results you are looking for\n" * 50
    path.write_bytes(content)
    message = r"^\S*notes\.sqlite is not a SQLite database \(file is not a database\); pass a different --results path$"
    with pytest.raises(ResultsStoreError, match=message):
        ResultsStore(path)
    assert path.read_bytes() == content


def test_foreign_sqlite_database_is_refused(tmp_path: Path):
    path = tmp_path / "other.sqlite"
    with raw_connection(path) as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.commit()
    with pytest.raises(ResultsStoreError, match=r"other\.sqlite is a SQLite database but not a ganbench results store"):
        ResultsStore(path)


def test_readers_do_not_create_a_store(tmp_path: Path):
    path = tmp_path / "missing" / "r.sqlite"
    with pytest.raises(ResultsStoreError, match=r"no results store here; run `ganbench eval --results .*r\.sqlite` first"):
        ResultsStore(path, create=False)
    assert not path.parent.exists()
    with pytest.raises(ResultsStoreError, match=r"is a folder; pass a results file to --results"):
        ResultsStore(tmp_path)


def corrupt_page(path: Path, which: str) -> None:
    """Overwrite one whole page of a closed store: 'middle' (a page of rows in the middle of the file) or 'index'
    (the root page of the unique index, which a plain scan by id never reads)."""
    page_size = raw_query(path, "PRAGMA page_size")[0][0]
    if which == "index":
        (root,) = raw_query(path, "SELECT rootpage FROM sqlite_master WHERE name = 'sqlite_autoindex_results_1'")[0]
        page = root - 1  # rootpage counts from 1
    else:
        page = path.stat().st_size // page_size // 2
    assert page > 0, "page 0 holds the header; damage past it"
    with open(path, "r+b") as f:
        f.seek(page * page_size)
        f.write(b"\xab" * page_size)


CORRUPT = r"^\S*\.sqlite is corrupt \(sqlite: .+\); restore it from a backup, or pass a new --results path and re-run "


@pytest.mark.parametrize("which", ["middle", "index"])
def test_corrupt_store_is_one_line_on_open_read_and_write_and_is_left_alone(tmp_path: Path, which: str):
    path = tmp_path / "r.sqlite"
    with ResultsStore(path) as store:
        store.write_results([make_row(f"src{i}", value=float(i)) for i in range(200)])
    corrupt_page(path, which)
    before = path.read_bytes()
    for create in (False, True):  # report opens with create=False, eval with create=True
        with pytest.raises(ResultsStoreError, match=CORRUPT) as caught:
            with ResultsStore(path, create=create) as store:
                store.rows()  # an index page's damage let this succeed before the open-time check
                store.write_results([make_row("new")])
        assert "\n" not in str(caught.value)
    assert path.read_bytes() == before, "a corrupt store is never written to"


class _MalformedConnection:
    """Stands in for the connection once the file is damaged under an open store (SQLite had cached its pages)."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn
        self.in_transaction = False

    def execute(self, *args, **kwargs):
        raise sqlite3.DatabaseError("database disk image is malformed")

    def close(self) -> None:
        self._conn.close()


def test_damage_found_after_opening_is_one_line_too(store: ResultsStore, monkeypatch):
    monkeypatch.setattr(store, "_conn", _MalformedConnection(store._conn))
    for action in (store.rows, lambda: store.completed_metrics(sha("a"), "key"), lambda: store.write_results([make_row()])):
        with pytest.raises(ResultsStoreError, match=CORRUPT):
            action()



def test_a_new_store_on_a_full_disk_says_so_and_leaves_no_empty_file(tmp_path: Path, monkeypatch):
    # it said "cannot be read as a results store (database or disk is full)" and left a 0-byte file behind
    def full(self):
        exc = sqlite3.OperationalError("database or disk is full")
        exc.sqlite_errorcode = 13  # SQLITE_FULL
        raise exc

    monkeypatch.setattr(ResultsStore, "_create_schema", full)
    path = tmp_path / "new.sqlite"
    with pytest.raises(ResultsStoreError) as refused:
        ResultsStore(path)
    message = str(refused.value)
    assert message.startswith(f"cannot write to {path} (database or disk is full); free disk space"), message
    assert "cannot be read" not in message
    assert not path.exists() and not list(tmp_path.iterdir())  # no empty store (nor -wal/-shm) left behind


def test_an_existing_store_this_user_cannot_write_is_read_for_eval_and_says_why(tmp_path: Path, monkeypatch):
    # An immutable file (chattr +i) or one on a read-only mount: SQLite opened it "read-write" and silently read-only,
    # so eval computed and only then failed with "attempt to write a readonly database; free disk space or ..."
    import ganbench.results.store as store_module

    path = tmp_path / "r.sqlite"
    with ResultsStore(path) as store:
        store.write_results([make_row()])
    real_access = os.access
    monkeypatch.setattr(store_module.os, "access", lambda p, mode, **kw: False if Path(p) == path and mode == os.W_OK
                        else real_access(p, mode, **kw))
    with pytest.raises(ResultsStoreError, match=rf"^cannot write to {re.escape(str(path))} \(this user may not write "
                                                r"to it\); pass a writable --results path$"):
        ResultsStore(path)
    with ResultsStore.for_writing(path) as store:  # eval: what it holds is still read, and skipped
        assert len(store.rows()) == 1
        with pytest.raises(ResultsStoreError, match=r"this user may not write to it"):
            store.require_writable()


@pytest.mark.parametrize(("code", "text", "hint"), [
    (8, "attempt to write a readonly database", "pass a writable --results path"),
    (13, "database or disk is full", "free disk space or pass a writable --results path"),
    (10, "disk I/O error", "free disk space, check the disk, or pass another --results path"),
])
def test_a_refused_write_names_its_cause(store: ResultsStore, monkeypatch, code, text, hint):
    # every refusal said "free disk space", a read-only store too
    class Refusing(_MalformedConnection):
        def execute(self, *args, **kwargs):
            exc = sqlite3.OperationalError(text)
            exc.sqlite_errorcode = code
            raise exc

    monkeypatch.setattr(store, "_conn", Refusing(store._conn))
    with pytest.raises(ResultsStoreError) as refused:
        store.write_results([make_row()])
    assert str(refused.value) == f"cannot write to {store.path} ({text}); {hint}"
