"""The results store: one SQLite file that `ganbench eval` writes and `ganbench report` reads.

Guarantees, and how they are kept:
- All or nothing per checkpoint: `write_results(rows)` is one `BEGIN IMMEDIATE ... COMMIT`; a killed
  process leaves the last committed state (SQLite's journal rolls back the rest on next open).
- Concurrent writers lose nothing: WAL journal, a busy timeout so a writer waits for the lock instead
  of failing, and `BEGIN IMMEDIATE` so the write lock is taken up front (a deferred transaction that
  upgrades from read to write can fail without waiting). Lock errors are retried until
  `lock_timeout_s`, then reported as a `ResultsStoreError`.
- Idempotent re-runs: rows are unique on (source_sha256, protocol_key, metric). Writing an existing
  'ok' row keeps the stored one unless `replace=True` (`--force`). A 'failed' row is always replaced
  by a newer row, and a failure never replaces an 'ok' row, so a flaky re-run cannot erase a result.
- `PRAGMA user_version` holds the schema version and `PRAGMA application_id` marks the file as
  ganbench's; any other file is refused with a one-line error rather than modified.
- A corrupt store is refused, not read or written: opening runs `PRAGMA quick_check` (14 ms per 10,000
  rows on a 2-core machine; a damaged index is otherwise read without error, and rows written into a
  damaged file can be lost), and SQLite's "malformed" errors on any later read or write become the same
  one-line `ResultsStoreError`.

The store never prints; callers report what was written or skipped.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ganbench import __version__
from ganbench.errors import ResultsStoreError, one_line
from ganbench.results.schema import APPLICATION_ID, COLUMNS, DDL, SCHEMA_VERSION, ResultRow

if TYPE_CHECKING:
    import pandas

DEFAULT_RESULTS_PATH = Path("results/ganbench.sqlite")

T = TypeVar("T")

_COLUMN_LIST = ", ".join(COLUMNS)
_UPSERT = (
    f"INSERT INTO results ({_COLUMN_LIST}) VALUES ({', '.join(':' + c for c in COLUMNS)}) "
    "ON CONFLICT (source_sha256, protocol_key, metric) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS)
    # The conflict policy in one place: replace failures always, successes only when asked.
    + " WHERE results.status = 'failed' OR (excluded.status = 'ok' AND :replace)"
)
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_CORRUPT, _SQLITE_NOTADB = 5, 6, 11, 26
_SQLITE_CANNOT_WRITE = (8, 10, 13)  # READONLY, IOERR, FULL
_SQLITE_CANTOPEN = 14


def _primary_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF  # extended codes (BUSY_SNAPSHOT, ...) keep the primary in the low byte


def _is_lock_error(exc: sqlite3.Error) -> bool:
    return _primary_code(exc) in (_SQLITE_BUSY, _SQLITE_LOCKED) or "database is locked" in str(exc)


def _is_corrupt(exc: sqlite3.Error) -> bool:
    return _primary_code(exc) == _SQLITE_CORRUPT or "malformed" in str(exc)


def _corrupt(path: Path, detail: str) -> ResultsStoreError:
    return ResultsStoreError(
        f"{path} is corrupt (sqlite: {one_line(detail, 120)}); restore it from a backup, or pass a new --results "
        "path and re-run `ganbench eval` to rebuild it"
    )


class _CannotWrite(ResultsStoreError):
    """The store (or the disk under it) refuses writes: read-only, full, failing."""


_WRITE_HINTS = {
    8: "pass a writable --results path",  # READONLY
    13: "free disk space or pass a writable --results path",  # FULL
    10: "free disk space, check the disk, or pass another --results path",  # IOERR
}


def _cannot_write(path: Path, exc: sqlite3.Error | str) -> ResultsStoreError:
    hint = _WRITE_HINTS.get(_primary_code(exc) if isinstance(exc, sqlite3.Error) else 8, _WRITE_HINTS[13])
    return _CannotWrite(f"cannot write to {path} ({exc}); {hint}")


def _statements(script: str) -> Iterator[str]:
    """Split a DDL script into statements (executescript would COMMIT our open transaction first)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending.strip()
            pending = ""
    assert not pending.strip(), f"incomplete statement in DDL: {pending!r}"


class ResultsStore:
    """An open results file. Use as a context manager, or call `close()`.

    `create=False` is for readers: a missing file is an error instead of a new empty store. `read_only=True`
    (report, compare) opens it for reading only, so that a store on a read-only mount or in a folder this user
    cannot write is still read: SQLite's read-only mode, and when even that needs to write beside the file (a WAL
    store's shared-memory index), as an immutable file; a non-empty write-ahead log beside it (a writer still
    running, or killed) is then refused rather than silently left unread.
    Not shared between threads or processes: open one store per process (connections do not survive fork).
    """

    def __init__(self, path: str | Path = DEFAULT_RESULTS_PATH, *, create: bool = True, lock_timeout_s: float = 60.0,
                 read_only: bool = False):
        self.path = Path(path)
        self.read_only = read_only
        create = create and not read_only
        self.lock_timeout_s = float(lock_timeout_s)
        if self.path.is_dir():
            example = self.path / "ganbench.sqlite"
            raise ResultsStoreError(f"{self.path} is a folder; pass a results file to --results, e.g. {example}")
        if self.path.exists() and not self.path.is_file():  # SQLite would block on a FIFO until a writer came
            mode = self.path.stat().st_mode
            kind = ("a named pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device")
            raise ResultsStoreError(f"{self.path} is not a regular file ({kind}); pass a results file to --results")
        if not self.path.exists():
            if not create:
                raise ResultsStoreError(f"{self.path}: no results store here; run `ganbench eval --results {self.path}` first")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ResultsStoreError(f"{self.path}: cannot create its folder ({exc}); pass a writable --results path") from exc
        self._conn: sqlite3.Connection | None = None
        self._refused: ResultsStoreError | None = None
        new_file = not self.path.exists()
        try:
            self._open(read_only)
        except BaseException:
            if new_file:
                self._remove_empty_new_file()
            raise

    @classmethod
    def for_writing(cls, path: str | Path, **options: Any) -> ResultsStore:
        """The store opened for writing (`ganbench eval`); an existing store this process cannot write (a read-only
        mount, a full disk) is opened for reading instead, so that sources it already holds are still skipped, and
        `require_writable()` (called before any work) and every write raise why it could not be opened for writing."""
        existed = Path(path).is_file()
        try:
            return cls(path, **options)
        except _CannotWrite as refused:
            if not existed:
                raise
            try:
                store = cls(path, read_only=True, **options)
            except ResultsStoreError:
                raise refused from None
            store._refused = refused
            return store

    def require_writable(self) -> None:
        """Raise the reason this store was opened read-only, if it was opened for writing and could not be."""
        if self._refused is not None:
            raise self._refused

    def _open(self, read_only: bool) -> None:
        for mode in ("ro", "immutable") if read_only else ("rw",):
            self.close()
            wal = self.path.with_name(self.path.name + "-wal")
            if mode == "immutable" and wal.is_file() and wal.stat().st_size > 0:  # read as immutable, it is ignored
                raise ResultsStoreError(
                    f"{self.path}: its last writes are still in {wal.name}, which can only be merged or read from a "
                    "folder this user can write to; copy both files to one and read them there")
            try:
                self._conn = self._connect(mode)
                self._retry_locked(self._prepare)
                if mode == "rw" and not os.access(self.path, os.W_OK):
                    # immutable, or on a read-only mount: SQLite opens it read-only without a word, and the first
                    # write (after the work) would fail
                    raise _cannot_write(self.path, "this user may not write to it")
                break
            except ResultsStoreError as exc:
                # read-only, but SQLite could not make its -shm file beside the store (a read-only folder or mount,
                # a full disk): read it as an immutable file instead
                if mode != "ro" or not any(t in str(exc) for t in ("unable to open", "readonly", "disk I/O error")):
                    self.close()
                    raise
            except BaseException:
                self.close()
                raise

    def _remove_empty_new_file(self) -> None:
        """A store this call created but could not initialise (a full disk): leave no empty file behind. Only a file
        without a single table goes, so that a store another process created meanwhile is never touched."""
        self.close()
        if not self.path.is_file():
            return
        try:
            with closing(sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
                if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                    return
        except sqlite3.Error:
            return
        for leftover in (self.path, self.path.with_name(self.path.name + "-wal"), self.path.with_name(self.path.name + "-shm")):
            leftover.unlink(missing_ok=True)

    def _connect(self, mode: str) -> sqlite3.Connection:
        """isolation_level=None: no implicit transactions; every write goes through transaction()."""
        uri = {"ro": "?mode=ro", "immutable": "?immutable=1"}.get(mode)
        try:
            if uri is None:
                return sqlite3.connect(self.path, timeout=self.lock_timeout_s, isolation_level=None)
            return sqlite3.connect(f"{self.path.resolve().as_uri()}{uri}", uri=True, timeout=self.lock_timeout_s,
                                   isolation_level=None)
        except sqlite3.Error as exc:
            needed = "a readable" if uri else "a readable and writable"
            raise ResultsStoreError(f"{self.path}: cannot open ({exc}); pass {needed} --results path") from exc

    # -- opening ---------------------------------------------------------------------------------

    def _prepare(self) -> None:
        """Check the file is a compatible ganbench store (creating the schema in a new one); never alter another file."""
        conn = self._connection
        try:
            version, app_id, tables = self._header()
            if app_id == 0 and version == 0 and tables == 0 and self.read_only:
                raise ResultsStoreError(f"{self.path} holds no results yet; run `ganbench eval CHECKPOINTS --results "
                                        f"{self.path}` first")
            if app_id == 0 and version == 0 and tables == 0:
                conn.execute("PRAGMA journal_mode = WAL")  # persistent in the file; must be set outside a transaction
                self._create_schema()
                version, app_id, tables = self._header()
            if app_id != APPLICATION_ID:
                raise ResultsStoreError(
                    f"{self.path} is a SQLite database but not a ganbench results store; pass a different --results path"
                )
            if version != SCHEMA_VERSION:
                origin = "a newer ganbench" if version > SCHEMA_VERSION else "an unknown ganbench version"
                raise ResultsStoreError(
                    f"{self.path} has results schema version {version}, written by {origin}; ganbench {__version__} reads "
                    f"schema version {SCHEMA_VERSION}: upgrade ganbench or pass a new --results path"
                )
            have = {name for (_, name, *_rest) in conn.execute("PRAGMA table_info(results)").fetchall()}
            missing = [c for c in ("id", *COLUMNS) if c not in have]
            if missing:  # ganbench's header on other tables: refused before a query fails on a missing column
                shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
                raise ResultsStoreError(f"{self.path} has a results table without the columns {shown}; it is not a "
                                        "ganbench results store: pass a different --results path")
            problems = [text for (text,) in conn.execute("PRAGMA quick_check").fetchall() if text != "ok"]
            if problems:
                raise _corrupt(self.path, "; ".join(problems))
            if not self.read_only:
                conn.execute("PRAGMA journal_mode = WAL")  # a no-op unless the file was copied out of WAL mode
                # FULL: a committed checkpoint survives power loss too; one fsync per checkpoint is nothing next to evaluation.
                conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.DatabaseError as exc:
            if _is_lock_error(exc):
                raise  # retried by the caller
            if _is_corrupt(exc):
                raise _corrupt(self.path, str(exc)) from exc
            if not self.read_only and _primary_code(exc) in _SQLITE_CANNOT_WRITE:
                raise _cannot_write(self.path, exc) from exc
            if not self.read_only and _primary_code(exc) == _SQLITE_CANTOPEN and not os.access(self.path.parent, os.W_OK):
                # a WAL store needs its -wal and -shm files beside it: a read-only mount cannot have them made
                raise _cannot_write(self.path, "its folder cannot be written, for the files SQLite keeps beside it") from exc
            what = "is not a SQLite database" if _primary_code(exc) == _SQLITE_NOTADB else "cannot be read as a results store"
            raise ResultsStoreError(f"{self.path} {what} ({exc}); pass a different --results path") from exc

    def _header(self) -> tuple[int, int, int]:
        conn = self._connection
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        return version, app_id, tables

    def _create_schema(self) -> None:
        conn = self._connection
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have created it between our first look and taking the lock.
            if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
                for statement in _statements(DDL):
                    conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.rollback()
            raise

    def _retry_locked(self, action: Callable[[], T]) -> T:
        """Run `action`, retrying while another connection holds the lock, up to `lock_timeout_s` in all.

        The busy timeout already waits inside SQLite; this covers the cases where SQLite returns BUSY
        without waiting (WAL recovery, a journal-mode change by another process)."""
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.005
        while True:
            try:
                return action()
            except sqlite3.OperationalError as exc:
                if not _is_lock_error(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise ResultsStoreError(
                        f"{self.path} is still locked by another process after {self.lock_timeout_s:g} s; "
                        "wait for it to finish or pass a different --results path"
                    ) from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.25)

    @property
    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"results store {self.path} is closed")
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.path)!r})"

    # -- writing ---------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Batch]:
        """One write transaction: everything written through the batch commits together, or nothing does.

        It holds the store's write lock, so compute first and open it only to write."""
        self.require_writable()
        conn = self._connection
        if conn.in_transaction:
            raise RuntimeError("results store transactions do not nest")
        self._retry_locked(lambda: self._write_step(lambda: conn.execute("BEGIN IMMEDIATE")))
        batch = Batch(self)
        try:
            yield batch
            self._write_step(lambda: conn.execute("COMMIT"))
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise
        finally:
            batch._open = False

    def write_results(self, rows: Iterable[ResultRow], *, replace: bool = False) -> int:
        """Write one checkpoint's rows in one transaction; returns how many were inserted or replaced.

        Existing 'ok' rows are kept unless `replace` (for --force); rows not written = len(rows) - return.
        If iterating `rows` raises, nothing from this call is stored."""
        with self.transaction() as batch:
            for row in rows:
                batch.write(row, replace=replace)
        return batch.written

    def _write_step(self, action: Callable[[], T]) -> T:
        try:
            return action()
        except sqlite3.DatabaseError as exc:
            if _is_lock_error(exc):
                raise
            if _is_corrupt(exc):
                raise _corrupt(self.path, str(exc)) from exc
            raise _cannot_write(self.path, exc) from exc

    # -- reading ---------------------------------------------------------------------------------

    def completed_metrics(self, source_sha256: str, protocol_key: str) -> frozenset[str]:
        """Metrics with an 'ok' row for this source under this protocol: the ones a re-run can skip."""
        sql = "SELECT metric FROM results WHERE source_sha256 = ? AND protocol_key = ? AND status = 'ok'"
        return frozenset(metric for (metric,) in self._fetchall(sql, (source_sha256, protocol_key)))

    def rows(self, **where: Any) -> list[dict[str, Any]]:
        """Rows as dicts with exactly the keys of schema.COLUMNS, in the order they were first written.

        Each keyword is a column: `metric="fid"`; None matches NULL; a list/tuple/set matches any of its values."""
        clauses, params = _where(where)
        sql = f"SELECT {_COLUMN_LIST} FROM results{clauses} ORDER BY id"
        return [dict(zip(COLUMNS, values, strict=True)) for values in self._fetchall(sql, params)]

    def _fetchall(self, sql: str, params: Any) -> list[tuple]:
        try:
            cursor = self._connection.execute(sql, params)
            try:
                return cursor.fetchall()
            finally:
                cursor.close()
        except sqlite3.DatabaseError as exc:
            if _is_corrupt(exc):  # damage after opening (another process, the disk): one line, not a traceback
                raise _corrupt(self.path, str(exc)) from exc
            raise

    def to_dataframe(self, **where: Any) -> pandas.DataFrame:
        """`rows(**where)` as a long-format DataFrame with fixed columns and dtypes, whichever metrics are present:
        text -> "string", integers -> "Int64" (nullable), reals -> float64, created_at -> datetime64[us, UTC]."""
        import pandas as pd  # lazy: keeps `ganbench --help` and the eval path free of pandas

        records = self.rows(**where)
        columns = {}
        for name, kind in COLUMNS.items():
            values = [record[name] for record in records]
            if kind == "time":
                columns[name] = pd.Series(pd.to_datetime(values, utc=True, format="ISO8601").as_unit("us"))
            else:
                columns[name] = pd.Series(values, dtype={"text": "string", "int": "Int64", "real": "float64"}[kind])
        return pd.DataFrame(columns)


class Batch:
    """The writer handed out by `ResultsStore.transaction()`; valid only inside its `with` block."""

    def __init__(self, store: ResultsStore):
        self._store = store
        self._open = True
        self.written = 0

    def write(self, row: ResultRow, *, replace: bool = False) -> bool:
        """Insert `row`, or replace the stored one per the store's policy; True when the store changed."""
        if not self._open:
            raise RuntimeError("this results batch's transaction has ended")
        if not isinstance(row, ResultRow):
            raise TypeError(f"expected a ResultRow, got {type(row).__name__}")
        params = {**row.to_record(), "replace": bool(replace)}
        cursor = self._store._write_step(lambda: self._store._connection.execute(_UPSERT, params))
        changed = cursor.rowcount > 0
        cursor.close()
        self.written += changed
        return changed


def _where(where: dict[str, Any]) -> tuple[str, list[Any]]:
    unknown = sorted(set(where) - COLUMNS.keys())
    if unknown:
        raise ValueError(f"unknown results column(s) {unknown}; columns are {list(COLUMNS)}")
    clauses, params = [], []
    for name, value in where.items():
        if isinstance(value, list | tuple | set | frozenset):
            values = list(value)
            clauses.append(f"{name} IN ({', '.join('?' * len(values))})" if values else "0")
            params.extend(values)
        else:
            clauses.append(f"{name} IS ?")  # IS: equality that also matches NULL to None
            params.append(value)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params
