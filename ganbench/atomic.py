"""Atomic file writes: readers see the old file or the complete new one, never a partial write.

Every temporary this module (and `ganbench report`) creates is named `.{target}.ganbench-{pid}-{host}.{random}.{kind}`
beside its target, so that `remove_stale_temporaries` can later tell the leftovers of a killed writer (its pid is
dead on this host) from the temporaries of a writer that is still running.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

# A leftover whose writer cannot be checked (another host, or a name from an older ganbench without the pid), or
# whose pid may have been reused, is removed once it is this old: no atomic write or report build lasts a day.
STALE_AFTER_S = 24 * 3600

_RANDOM = r"[a-z0-9_]{8}"  # what mkstemp / mkdtemp put in a name
_OURS = re.compile(rf"^\.(?P<target>.+)\.ganbench-(?P<pid>\d+)-(?P<host>[0-9a-f]{{8}})\.{_RANDOM}\.(?:tmp|old|build)$")
# Names written before the pid was in them: atomic_write_bytes' files, replace_dir's and report's folders.
_LEGACY = re.compile(rf"^\.(?P<target>.+)\.(?:{_RANDOM}\.tmp|old-{_RANDOM}|tmp-{_RANDOM})$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _host_tag() -> str:
    # hashed: a host name can hold dots and be long; 8 hex digits tell hosts sharing a file system apart
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def temporary_prefix(target: str) -> str:
    """The start of every temporary name for `target` (a file or folder name) written by this process."""
    return f".{target}.ganbench-{os.getpid()}-{_host_tag()}."


def make_temporary_dir(target: Path, kind: str = "build") -> Path:
    """A new empty folder beside `target` (mode 0700), named so that `remove_stale_temporaries` recognises it."""
    return Path(tempfile.mkdtemp(prefix=temporary_prefix(target.name), suffix=f".{kind}", dir=target.parent))


def atomic_write_bytes(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Call write(file_object) on a temp file beside `path`, fsync it, then rename it over `path`.

    An OSError without a file name (a write that hits a full disk) is raised again naming `path`, so the
    one-line error the CLI prints says which file could not be written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path.name), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs should get the user's usual mode
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_dir(new: Path, out: Path) -> None:
    """Put the finished folder `new` at `out`, so that `out` is always either the old or the complete new folder.

    On Linux the two are exchanged in one step (renameat2 RENAME_EXCHANGE) and `new` then holds the old folder,
    which is removed. Elsewhere, or on a file system without the exchange, the old folder is moved aside into a
    temporary first and removed only once the new one is in place; a kill between the two renames leaves it there,
    and `put_back_moved_aside` restores it. It replaces whatever folder `out` is; callers decide whether it may."""
    os.chmod(new, 0o777 & ~_umask())  # mkdtemp makes 0700 folders; give the user's usual mode
    if out.exists() and _exchange(new, out):
        shutil.rmtree(new, ignore_errors=True)
        return
    old = None
    if out.exists():
        old = make_temporary_dir(out, "old")
        os.replace(out, old / out.name)
    os.replace(new, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 with RENAME_EXCHANGE); False where that is not available."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):  # an old kernel, or a file system without it
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def put_back_moved_aside(out: Path) -> bool:
    """When `out` is missing and a killed `replace_dir` left it moved aside (a stale `.old` temporary beside it
    holding `out.name`), move it back; True when it did. Live writers' temporaries are never touched."""
    if out.exists() or out.is_symlink():
        return False
    try:
        entries = sorted(os.scandir(out.parent), key=lambda e: e.stat(follow_symlinks=False).st_mtime, reverse=True)
    except OSError:
        return False
    for entry in entries:
        match = _OURS.match(entry.name)
        if match is None or match["target"] != out.name or not entry.name.endswith(".old"):
            continue
        inside = Path(entry.path) / out.name
        try:
            if not _is_stale(match, entry) or not inside.is_dir() or inside.is_symlink():
                continue
            os.replace(inside, out)
        except OSError:  # removed meanwhile, or not movable: best effort, as the cleanup of temporaries is
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        return True
    return False


def _is_stale(match: re.Match, entry: os.DirEntry, now: float | None = None) -> bool:
    """A temporary whose writer is dead on this host, or older than STALE_AFTER_S."""
    now = time.time() if now is None else now
    pid = match.groupdict().get("pid")
    if pid is not None and match["host"] == _host_tag() and _pid_is_dead(int(pid)):
        return True
    return now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S


def _pid_is_dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by another user
        return False
    return False


def remove_stale_temporaries(folder: Path, *, target: str | None = None, now: float | None = None) -> int:
    """Delete the temporaries that killed ganbench writers left in `folder` (not below it); returns how many.

    A temporary is stale when its writer's pid, written in its name, is dead on this host, or when it is older
    than STALE_AFTER_S (the writer cannot be checked: another host, a name from an older ganbench, a reused pid).
    The temporaries of live writers are never touched. With `target`, only the temporaries of that file or
    folder name are considered (for folders ganbench shares with the user, such as the one holding --out).
    Best effort: a folder that is missing or cannot be listed, or an entry that cannot be removed, is skipped.
    """
    now = time.time() if now is None else now
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        ours, legacy = _OURS.match(entry.name), _LEGACY.match(entry.name)
        match = ours or legacy
        if match is None or (target is not None and match["target"] != target):
            continue
        try:
            if entry.is_symlink():  # we never make links; a link with such a name is not ours to delete
                continue
            if not _is_stale(match, entry, now):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed += 1
        except OSError:
            continue  # removed by someone else meanwhile, or not ours to remove: leave it
    return removed
