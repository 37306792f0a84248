"""The operating system's refusals (full disk, read-only folder, a folder where a file belongs) are one line and exit
code 2, never a traceback; killed writers' temporaries are cleaned up, live writers' never."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ganbench import atomic
from ganbench.atomic import STALE_AFTER_S, atomic_write_bytes, remove_stale_temporaries, replace_dir, temporary_prefix
from ganbench.cli import main

# -- one place turns OSError into one line ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "line"),
    [
        (errno.ENOSPC, r"disk full: No space left on device \(/x/r\.csv\); free some space or write elsewhere \(--out, "),
        (errno.EDQUOT, r"disk quota exceeded: Disk quota exceeded \(/x/r\.csv\); free some space"),
        (errno.EACCES, r"permission denied: Permission denied \(/x/r\.csv\); check its permissions or write elsewhere"),
        (errno.EROFS, r"read-only file system: Read-only file system \(/x/r\.csv\); choose a writable folder"),
        (errno.EISDIR, r"a folder where a file was expected: Is a directory \(/x/r\.csv\); pass a file path, not a folder"),
        (errno.EIO, r"operating system error: Input/output error \(/x/r\.csv\)$"),
    ],
)
def test_os_errors_are_one_line_and_exit_2(tmp_path, capsys, monkeypatch, code, line):
    import ganbench.results.report

    def fail(cfg):
        raise OSError(code, os.strerror(code), "/x/r.csv")

    monkeypatch.setattr(ganbench.results.report, "write_report", fail)
    assert main(["report", "--results", str(tmp_path / "r.sqlite"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert re.search(r"^ganbench: error: " + line, err.strip()), err


def test_both_file_names_of_a_failed_rename_are_quoted(tmp_path, capsys, monkeypatch):
    import ganbench.results.report

    def fail(cfg):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), "/a/tmp", None, "/b/out")  # what os.replace raises

    monkeypatch.setattr(ganbench.results.report, "write_report", fail)
    assert main(["report", "--results", str(tmp_path / "r.sqlite")]) == 2
    assert capsys.readouterr().err == "ganbench: error: operating system error: Invalid cross-device link (/a/tmp -> /b/out)\n"


def test_full_cache_dir_is_a_warning_and_the_command_succeeds(tiny_data_root, tmp_path, capsys, monkeypatch):
    from ganbench.errors import GanbenchWarning
    from ganbench.features import cache

    def full(path, write):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(cache, "atomic_write_bytes", full)
    args = ["reference", "--dataset", "fashion-mnist", "--count", "20", "--data-root", str(tiny_data_root),
            "--cache-dir", str(tmp_path / "cache"), "--extractor", "lenet-fashion-mnist", "--device", "cpu", "--quiet"]
    with pytest.warns(GanbenchWarning, match=r"could not be written \(No space left on device\); continuing without caching"):
        assert main(args) == 0
    assert "fashion-mnist:test n=20 dim=128" in capsys.readouterr().out


# -- atomic writes name their temporaries after their writer ----------------------------------------------------------


def test_atomic_write_names_its_temp_file_after_the_live_writer_which_cleanup_leaves_alone(tmp_path):
    seen = []

    def write(f):
        (tmp,) = [p for p in tmp_path.iterdir() if p.name != "a.bin"]
        seen.append(tmp.name)
        seen.append(remove_stale_temporaries(tmp_path))  # a concurrent cleanup while we write
        f.write(b"data")

    atomic_write_bytes(tmp_path / "a.bin", write)
    assert seen[0].startswith(temporary_prefix("a.bin")) and seen[0].endswith(".tmp") and seen[1] == 0
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"] and (tmp_path / "a.bin").read_bytes() == b"data"


def test_atomic_write_names_the_target_in_a_write_error_and_leaves_nothing(tmp_path):
    def full(f):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError, match=r"No space left on device") as caught:
        atomic_write_bytes(tmp_path / "a.bin", full)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / "a.bin")
    assert list(tmp_path.iterdir()) == []


def test_replace_dir_leaves_a_recognisable_folder_when_killed_before_removing_the_old_one(tmp_path, monkeypatch):
    (tmp_path / "out").mkdir()
    new = atomic.make_temporary_dir(tmp_path / "out", "build")  # as report makes it
    monkeypatch.setattr(atomic.shutil, "rmtree", lambda *a, **k: None)  # killed right after the rename
    replace_dir(new, tmp_path / "out")
    monkeypatch.undo()
    (left,) = [p for p in tmp_path.iterdir() if p.name != "out"]
    # the old folder: exchanged into the build folder's name, or (no exchange) moved aside into an .old one
    assert left.name.startswith(temporary_prefix("out")) and left.name.endswith((".build", ".old"))
    assert remove_stale_temporaries(tmp_path) == 0, "its writer (this process) is alive"
    assert remove_stale_temporaries(tmp_path, now=time.time() + STALE_AFTER_S + 60) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_replace_dir_killed_after_any_rename_leaves_out_in_place(tmp_path, monkeypatch):
    # The old folder was moved aside and only then the new one moved in: a kill between the two left no --out at all
    # (a helper hit it with strace's fault injection), and the next report deleted the moved-aside one as stale.
    # Linux exchanges the two in one step; elsewhere the next report puts a moved-aside folder back (test below).
    if not sys.platform.startswith("linux"):
        pytest.skip("renameat2 (RENAME_EXCHANGE) is Linux's")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "new.txt").write_text("new")
    real_replace = os.replace

    def replace_then_die(*args, **kwargs):
        real_replace(*args, **kwargs)
        raise KeyboardInterrupt  # the process dies right after this rename

    monkeypatch.setattr(atomic.os, "replace", replace_then_die)
    try:
        replace_dir(tmp_path / "new", tmp_path / "out")
    except KeyboardInterrupt:
        pass
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) in (["old.txt"], ["new.txt"])


def test_a_report_moved_aside_by_a_killed_report_is_put_back(tmp_path, capsys):
    # Where the folders cannot be exchanged in one step, a report killed between its two renames leaves --out only
    # in its moved-aside temporary: the next report puts it back before anything else (and keeps it if it fails).
    dead = temporary_prefix("rep").replace(f"-{os.getpid()}-", f"-{_dead_pid()}-")
    aside = tmp_path / f"{dead}abcd1234.old"
    (aside / "rep").mkdir(parents=True)
    (aside / "rep" / "leaderboard.md").write_text("the old report")
    (tmp_path / "empty.sqlite").write_bytes(b"")
    assert main(["report", "--results", str(tmp_path / "empty.sqlite"), "--out", str(tmp_path / "rep")]) == 2
    assert (tmp_path / "rep" / "leaderboard.md").read_text() == "the old report"
    assert not aside.exists()
    assert f"put back {tmp_path / 'rep'}" in capsys.readouterr().err


# -- remove_stale_temporaries ---------------------------------------------------------------------------------------


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(done.stdout)


def _make(path: Path, *, folder: bool = False, age_s: float = 0.0) -> Path:
    if folder:
        path.mkdir()
        (path / "inside").write_text("x")
    else:
        path.write_text("x")
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return path


def test_only_killed_or_day_old_temporaries_are_removed(tmp_path):
    ours, old = temporary_prefix("a.pt"), 2 * STALE_AFTER_S
    dead = ours.replace(f"-{os.getpid()}-", f"-{_dead_pid()}-")
    other_host = re.sub(r"-[0-9a-f]{8}\.$", "-00000000.", ours)
    removed = [
        _make(tmp_path / f"{dead}abcd1234.tmp"),  # killed writer on this host
        _make(tmp_path / f"{dead}abcd1234.old", folder=True),  # replace_dir's aside folder of a killed report
        _make(tmp_path / f"{dead}abcd1234.build", folder=True),  # a killed report's build folder
        _make(tmp_path / f"{other_host}abcd1234.tmp", age_s=old),  # another host's, a day old
        _make(tmp_path / ".a.pt.abcd1234.tmp", age_s=old),  # an older ganbench's names, a day old
        _make(tmp_path / ".reports.old-abcd1234", folder=True, age_s=old),
        _make(tmp_path / ".reports.tmp-abcd1234", folder=True, age_s=old),
    ]
    kept = [
        _make(tmp_path / f"{ours}abcd1234.tmp", age_s=60),  # a live writer: this process
        _make(tmp_path / f"{other_host}efgh5678.tmp"),  # another host's, recent: it may be writing
        _make(tmp_path / ".a.pt.efgh5678.tmp"),  # an older ganbench's, recent
        *(_make(tmp_path / name, age_s=old) for name in (".bashrc", "notes.tmp", ".a.tmp", "a.pt.abcd1234.tmp",
                                                          ".ganbench-write-test-abcd1234", "a.pt")),
    ]
    os.symlink(tmp_path / "a.pt", tmp_path / f"{dead}abcd1234.tmp.link")  # not a temporary name: kept
    os.symlink(tmp_path / "a.pt", tmp_path / f"{dead}efgh5678.tmp")  # a temporary's name, but a link: never followed
    assert remove_stale_temporaries(tmp_path) == len(removed)
    assert not any(p.exists() for p in removed) and all(p.exists() for p in kept)
    assert (tmp_path / f"{dead}efgh5678.tmp").is_symlink() and (tmp_path / "a.pt").read_text() == "x"


def test_target_limits_cleanup_to_one_name_and_missing_folders_are_fine(tmp_path):
    dead = f"-{_dead_pid()}-"
    for name in ("reports", "other"):
        _make(tmp_path / (temporary_prefix(name).replace(f"-{os.getpid()}-", dead) + "abcd1234.build"), folder=True)
    assert remove_stale_temporaries(tmp_path, target="reports") == 1
    assert [p.name.split(".ganbench-")[0] for p in tmp_path.iterdir()] == [".other"]
    assert remove_stale_temporaries(tmp_path / "missing") == 0


class _FillingFile:
    """A file on a disk that fills after `room` bytes: write() raises ENOSPC, as a real full disk does."""

    def __init__(self, f, room: int):
        self._f, self._room = f, room

    def write(self, data) -> int:
        size = memoryview(data).nbytes
        if size > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= size
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


@pytest.mark.parametrize("command", ["train", "classifier"])
def test_a_disk_that_fills_while_a_checkpoint_is_written_is_one_line(tiny_data_root, tmp_path, capsys, monkeypatch,
                                                                     command):
    # torch.save turns the file's OSError into a RuntimeError ("unexpected pos ..."), which printed a traceback
    real_fdopen = os.fdopen
    monkeypatch.setattr(atomic.os, "fdopen", lambda fd, mode: _FillingFile(real_fdopen(fd, mode), 200_000))
    if command == "train":
        args = ["train", "baseline", "--dataset", "fashion-mnist", "--data-root", str(tiny_data_root), "--epochs", "1",
                "--max-train-images", "64", "--out", str(tmp_path / "out"), "--quiet"]
    else:
        args = ["train", "classifier", "--dataset", "fashion-mnist", "--data-root", str(tiny_data_root), "--epochs", "1",
                "--out", str(tmp_path / "lenet.pt"), "--max-train-images", "64", "--max-test-images", "64", "--batch-size", "32"]
    assert main(args) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and err.count("ganbench: error:") == 1, err
    assert re.search(r"^ganbench: error: disk full: No space left on device \(.*\.pt\); free some space", last), err
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]  # no temporary left behind
