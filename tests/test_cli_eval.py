"""`ganbench eval` end to end through main(argv) and `python -m ganbench`: stored rows and their protocol, values equal
to a direct computation, idempotent re-runs and --force, seeds, kill-and-resume, concurrent writers, unsafe / corrupt /
NaN sources recorded as failed, image folders and .npz, user generators, json/csv output, bad input, several references.

One tiny baseline run (3 epochs on 128 random images) is trained once per module and reused; tests that change a run
folder work on a copy. Sources are scored with the shipped lenet-fashion-mnist extractor against the tiny 64-image
test split, so each evaluation takes well under a second on a CPU.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_idx_split, modes_bind_prefix

from ganbench.cli import main
from ganbench.errors import GanbenchWarning
from ganbench.results import Protocol, ResultRow, ResultsStore, RunInfo
from ganbench.samples import file_sha256

REPO = Path(__file__).resolve().parents[1]
EXTRACTOR = "lenet-fashion-mnist"
ALL_METRICS = ("fid", "is", "kid", "precision", "recall", "density", "coverage", "classes_covered", "class_kl")
MEMORIZATION = ("authenticity", "mifid")  # by default against a training-split reference (data_copying_ct: by name)
N_TEST = 64  # images in the tiny test split: the default reference
N_TRAIN = 256
USER_MODULE = "ganbench_test_eval_user_generator"

USER_GENERATOR_SOURCE = '''
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self, poison=False):
        super().__init__()
        self.linear = nn.Linear(100, 784)
        self.poison = poison

    def forward(self, z):
        out = torch.tanh(self.linear(z))
        return out * float("nan") if self.poison else out


def make():
    return Tiny(), 100


def make_nan():
    return Tiny(poison=True), 100


class ZeroOne(Tiny):
    def forward(self, z):
        return torch.sigmoid(self.linear(z))  # [0, 1] images, where ganbench reads [-1, 1]


def make_zero_one():
    return ZeroOne(), 100


class Broken(Tiny):
    def __init__(self, how):
        super().__init__()
        self.how = how

    def forward(self, z):
        if self.how == "raises":
            raise RuntimeError("boom inside user code")
        return (super().forward(z),)  # a tuple, not a tensor


def make_raising():
    return Broken("raises"), 100


def make_tuple():
    return Broken("tuple"), 100


def make_wrong_latent():
    return Tiny(), 20  # the module takes 100


def make_negative_latent():
    return Tiny(), -1


def make_fails():
    raise ValueError("factory failed")


def make_needs_arguments(size):
    return Tiny(), size


not_callable = 5
'''


@dataclass(frozen=True)
class Workspace:
    data_root: Path
    out: Path  # OUT of the trained run
    run_dir: Path  # OUT/baseline/fashion-mnist/seed0
    cache: Path
    six: Path  # OUT/baseline/fashion-mnist/seed0 of a run folder with six distinct checkpoints

    @property
    def checkpoints(self) -> list[Path]:
        return sorted(self.run_dir.glob("epoch_*.pt"))


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    """Train once: epoch_0001..0003.pt (+ resume.pt); and a second run folder with six distinct checkpoints."""
    base = tmp_path_factory.mktemp("eval")
    data_root = base / "data"
    data_root.mkdir()
    make_idx_split(data_root, "train", N_TRAIN, seed=1)
    make_idx_split(data_root, "test", N_TEST, seed=2)
    out = base / "out"
    assert main(["train", "baseline", "--dataset", "fashion-mnist", "--data-root", str(data_root), "--out", str(out),
                 "--max-train-images", "128", "--epochs", "3", "--checkpoint-every", "1", "--quiet"]) == 0
    run_dir = out / "baseline" / "fashion-mnist" / "seed0"
    assert (run_dir / "resume.pt").is_file()
    six = base / "six" / "baseline" / "fashion-mnist" / "seed0"
    six.mkdir(parents=True)
    for epoch in range(1, 7):  # 4..6: epoch 3's generator under another epoch number, so each file has its own sha256
        _distinct_checkpoint(run_dir / f"epoch_{min(epoch, 3):04d}.pt", six / f"epoch_{epoch:04d}.pt", epoch)
    return Workspace(data_root, out, run_dir, base / "cache", six)


def _distinct_checkpoint(source: Path, target: Path, epoch: int) -> None:
    from ganbench.train.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(source)
    state["epoch"] = epoch
    save_checkpoint(state, target)


def eval_args(ws: Workspace, results: Path, *paths, num_samples: int = 64, extra: tuple[str, ...] = (),
              default_references: bool = False) -> list[str]:
    """Most tests score against the test split only (half the work); `default_references` keeps eval's defaults
    (the selection subset of the training split and the test split)."""
    references = () if default_references or "--reference" in extra else ("--reference", "fashion-mnist:test")
    return ["eval", *map(str, paths), "--extractor", EXTRACTOR, "--num-samples", str(num_samples),
            "--data-root", str(ws.data_root), "--cache-dir", str(ws.cache), "--results", str(results),
            "--quiet", "--device", "cpu", *references, *extra]


def stored(results: Path, **where) -> list[dict]:
    with ResultsStore(results, create=False) as store:
        return store.rows(**where)


def key(row: dict) -> tuple:
    return row["source_sha256"], row["protocol_key"], row["metric"]


def assert_no_duplicates(rows: list[dict]) -> None:
    counts = Counter(key(r) for r in rows)
    assert max(counts.values()) == 1, [k for k, n in counts.items() if n > 1]


def ganbench_lines(err: str, word: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(f"ganbench: {word} ")]


def subprocess_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def copy_run(ws: Workspace, tmp_path: Path) -> Path:
    """A private copy of the trained run folder (OUT/baseline/fashion-mnist/seed0 layout kept)."""
    run_dir = tmp_path / "out" / "baseline" / "fashion-mnist" / "seed0"
    shutil.copytree(ws.run_dir, run_dir)
    return run_dir


def direct_metrics(ws: Workspace, checkpoint: Path, num_samples: int, seed: int, metric_seed: int | None = None) -> dict:
    """What eval should store, computed without the sweep: samples -> lenet features -> metrics_from_features."""
    from ganbench.features.extract import extract_features
    from ganbench.features.registry import build_extractor
    from ganbench.metric_values import metrics_from_features
    from ganbench.reference import reference_features
    from ganbench.samples import generate, load_baseline_generator

    module, latent_dim, _ = load_baseline_generator(checkpoint)
    images = generate(module, latent_dim, num_samples, seed)
    extractor = build_extractor(EXTRACTOR, device="cpu")
    fake = extract_features(extractor, images)
    real = reference_features(extractor, "fashion-mnist", "test", data_root=ws.data_root, cache_dir=ws.cache, progress=False)
    options = {} if metric_seed is None else {"seed": metric_seed}
    return {name: value.value for name, value in metrics_from_features(real, fake, **options).items()}


# -- 1. end to end ---------------------------------------------------------------------------------------------------


def test_eval_run_folder_stores_every_metric_with_its_protocol(ws, tmp_path, capsys):
    from ganbench.features.registry import build_extractor

    results = tmp_path / "r.sqlite"
    assert main(eval_args(ws, results, ws.out, default_references=True)) == 0
    everything = stored(results)
    checkpoints = ws.checkpoints
    assert [p.name for p in checkpoints] == ["epoch_0001.pt", "epoch_0002.pt", "epoch_0003.pt"]
    assert not any(Path(r["source_path"]).name == "resume.pt" for r in everything), "resume.pt must not be evaluated"
    # By default every checkpoint is scored against the selection subset of the training split and the test split,
    # and against the training subset also on the memorization metrics (C_T with the test split held out).
    assert Counter((r["source_path"], r["metric"], r["reference_name"]) for r in everything) == {
        (str(p), m, ref): 1
        for p in checkpoints for ref in ("fashion-mnist:train:10000", "fashion-mnist:test")
        for m in ALL_METRICS + (MEMORIZATION if ref.startswith("fashion-mnist:train") else ())
    }
    results_ct = tmp_path / "ct.sqlite"  # C_T, asked for by name, holds the test split out
    assert main(eval_args(ws, results_ct, checkpoints[-1], default_references=True, extra=("--metrics", "data_copying_ct"))) == 0
    ct = stored(results_ct)
    assert [(r["metric"], r["reference_name"], r["status"]) for r in ct] == [
        ("data_copying_ct", "fashion-mnist:train:10000", "ok")]
    assert json.loads(ct[0]["protocol_json"])["options"]["heldout"] == "fashion-mnist:test"
    selection = [r for r in everything if r["reference_name"] == "fashion-mnist:train:10000"]
    assert {(r["reference_split"], r["n_reference"]) for r in selection} == {("train", N_TRAIN)}  # the split is smaller
    rows = [r for r in everything if r["reference_name"] == "fashion-mnist:test"]
    extractor = build_extractor(EXTRACTOR, device="cpu")
    for r in rows:
        path = Path(r["source_path"])
        assert r["status"] == "ok" and r["error"] is None and math.isfinite(r["value"]), r
        assert r["source_sha256"] == file_sha256(path)
        assert (r["extractor"], r["weights_sha256"], r["preprocessing"]) == (
            EXTRACTOR, extractor.weights_sha256, extractor.preprocessing)
        assert (r["n_generated"], r["n_reference"], r["reference_name"], r["reference_split"], r["seed"]) == (
            64, N_TEST, "fashion-mnist:test", "test", 0)
        assert (r["run_kind"], r["run_dataset"], r["run_seed"], r["run_epoch"]) == (
            "baseline", "fashion-mnist", 0, int(path.stem[6:]))
        assert r["device"] == "cpu" and r["created_at"]
    capsys.readouterr()

    # The stored numbers are the ones a direct computation on the same seeded samples gives.
    for checkpoint in checkpoints:
        expected = direct_metrics(ws, checkpoint, 64, seed=0)
        got = {r["metric"]: r["value"] for r in rows if r["source_path"] == str(checkpoint)}
        for metric in ("fid", "kid", "precision", "recall", "density", "coverage", "classes_covered", "class_kl"):
            assert got[metric] == pytest.approx(expected[metric], rel=1e-6, abs=1e-9), (checkpoint.name, metric)
    fids = [r["value"] for r in rows if r["metric"] == "fid"]
    assert len(set(fids)) == 3, "three different generators should not give one FID"


def test_stored_metric_options_reproduce_the_stored_value(ws, tmp_path):
    """IS and KID draw random numbers; the seed recorded in metric_options must be the one that produced the value."""
    results = tmp_path / "r.sqlite"
    checkpoint = ws.checkpoints[-1]
    assert main(eval_args(ws, results, checkpoint, num_samples=200, extra=("--metrics", "is,kid"))) == 0
    for r in stored(results):
        options = json.loads(r["metric_options"])
        expected = direct_metrics(ws, checkpoint, 200, seed=0, metric_seed=options["seed"])
        assert r["value"] == pytest.approx(expected[r["metric"]], rel=1e-9), (
            f"{r['metric']} stored {r['value']!r} but its recorded options {options} give {expected[r['metric']]!r}")


# -- 2. idempotent re-runs, --force ------------------------------------------------------------------------------------


def test_rerun_writes_nothing_and_says_skip_force_recomputes(ws, tmp_path, capsys):
    results = tmp_path / "r.sqlite"
    args = eval_args(ws, results, ws.run_dir)
    assert main(args) == 0
    first = stored(results)
    assert len(first) == 3 * len(ALL_METRICS)
    capsys.readouterr()

    assert main(args) == 0
    captured = capsys.readouterr()
    assert stored(results) == first  # same ids, values, created_at: nothing written
    skips = ganbench_lines(captured.err, "skip")
    assert len(skips) == 3, captured.err
    for checkpoint, line in zip(ws.checkpoints, skips, strict=True):
        assert re.fullmatch(rf"ganbench: skip {re.escape(str(checkpoint))}: its {EXTRACTOR} results are already in "
                            rf"{re.escape(str(results))} \(--force recomputes\)", line), line
    assert captured.out.strip() == ""  # nothing evaluated, nothing printed

    time.sleep(0.01)  # created_at has millisecond resolution
    assert main([*args, "--force"]) == 0
    captured = capsys.readouterr()
    assert not ganbench_lines(captured.err, "skip")
    forced = stored(results)
    assert_no_duplicates(forced)
    assert [key(r) for r in forced] == [key(r) for r in first]
    before = {key(r): r for r in first}
    for r in forced:
        assert r["created_at"] > before[key(r)]["created_at"], "--force must rewrite the row"
        assert r["value"] == pytest.approx(before[key(r)]["value"], rel=1e-9)


# -- 3. seeds ----------------------------------------------------------------------------------------------------------


def test_same_seed_same_values_other_seed_new_protocol(ws, tmp_path):
    checkpoint = ws.checkpoints[-1]
    a, b = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    assert main(eval_args(ws, a, checkpoint)) == 0
    assert main(eval_args(ws, b, checkpoint)) == 0
    rows_a, rows_b = stored(a), stored(b)
    assert [(key(r), r["value"]) for r in rows_a] == [(key(r), r["value"]) for r in rows_b]

    assert main(eval_args(ws, a, checkpoint, extra=("--seed", "1"))) == 0
    rows = stored(a)
    assert len(rows) == 2 * len(ALL_METRICS)
    assert_no_duplicates(rows)
    seed0 = {r["metric"]: r for r in rows if r["seed"] == 0}
    seed1 = {r["metric"]: r for r in rows if r["seed"] == 1}
    assert set(seed0) == set(seed1) == set(ALL_METRICS)
    for metric in ALL_METRICS:
        assert seed1[metric]["protocol_key"] != seed0[metric]["protocol_key"]
        assert seed1[metric]["run_seed"] == 0  # the training seed stays the training seed
    assert seed1["fid"]["value"] != seed0["fid"]["value"]
    assert seed1["fid"]["value"] == pytest.approx(direct_metrics(ws, checkpoint, 64, seed=1)["fid"], rel=1e-6)


# -- 4. kill and resume ------------------------------------------------------------------------------------------------


def _count_rows(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)) as conn:
            return conn.execute("SELECT count(*) FROM results").fetchone()[0]
    except sqlite3.Error:  # not created yet, or mid-creation
        return 0


def test_a_read_only_store_holding_every_result_is_a_clean_skip_and_new_work_is_one_line(ws, tmp_path):
    # A shared store on a read-only mount: re-running eval over sources it already holds wrote nothing, yet it
    # failed with "cannot write to ... (attempt to write a readonly database)" before looking at any source.
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="ganbench-ro-eval-"))  # under /tmp: reachable without tmp_path's modes
    try:
        store = folder / "r.sqlite"
        first, last = ws.checkpoints[0], ws.checkpoints[-1]
        assert main(eval_args(ws, store, first)) == 0
        before = stored(store)
        store.chmod(0o444)
        folder.chmod(0o555)
        prefix = modes_bind_prefix()

        def run(*paths):
            return subprocess.run([*prefix, sys.executable, "-m", "ganbench", *eval_args(ws, store, *paths)],
                                  env=subprocess_env(), capture_output=True, text=True, timeout=600)

        done = run(first)
        assert done.returncode == 0, done.stderr
        assert len(ganbench_lines(done.stderr, "skip")) == 1 and "Traceback" not in done.stderr
        done = run(first, last)  # new work: refused in one line before it is computed, the store untouched
        assert done.returncode == 2, done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("ganbench: error:")]
        assert len(errors) == 1 and f"cannot write to {store}" in errors[0] and "Traceback" not in done.stderr
        assert stored(store) == before
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)


def test_killed_sweep_keeps_whole_sources_and_resumes(ws, tmp_path, capsys):
    results = tmp_path / "r.sqlite"
    args = eval_args(ws, results, ws.six, num_samples=1000)
    log = tmp_path / "stderr.txt"
    with open(log, "w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "ganbench", *args], env=subprocess_env(),
                                   stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            deadline = time.monotonic() + 120
            while _count_rows(results) == 0:
                assert process.poll() is None, f"eval exited ({process.returncode}) before writing: {log.read_text()}"
                assert time.monotonic() < deadline, "no source finished in 120 s"
                time.sleep(0.01)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
    assert process.returncode == -signal.SIGKILL, "the sweep finished before the kill; make it slower"

    with contextlib.closing(sqlite3.connect(results)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    rows = stored(results)
    per_source = Counter(r["source_sha256"] for r in rows)
    assert all(n == len(ALL_METRICS) for n in per_source.values()), f"a partial source was committed: {per_source}"
    assert all(r["status"] == "ok" for r in rows)
    done = len(per_source)
    assert 1 <= done < 6, f"{done} of 6 sources done at the kill"

    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert len(ganbench_lines(err, "skip")) == done
    rows = stored(results)
    assert_no_duplicates(rows)
    assert len(rows) == 6 * len(ALL_METRICS)
    assert Counter(r["source_sha256"] for r in rows) == {file_sha256(p): len(ALL_METRICS) for p in ws.six.glob("*.pt")}
    assert {r["run_epoch"] for r in rows} == set(range(1, 7))


# -- 5. concurrent writers ---------------------------------------------------------------------------------------------


def test_two_concurrent_sweeps_into_one_store(ws, tmp_path):
    results = tmp_path / "r.sqlite"
    files = sorted(ws.six.glob("epoch_*.pt"))
    # Same sources in opposite orders, so the two processes meet in the middle on the same unique keys.
    commands = [eval_args(ws, results, *files), eval_args(ws, results, *reversed(files))]
    processes = [subprocess.Popen([sys.executable, "-m", "ganbench", *args], env=subprocess_env(),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for args in commands]
    outputs = [p.communicate(timeout=180)[1] for p in processes]
    for process, err in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
        assert "Traceback" not in err
    rows = stored(results)
    assert_no_duplicates(rows)
    assert len(rows) == 6 * len(ALL_METRICS)
    assert all(r["status"] == "ok" for r in rows)
    assert Counter(r["source_sha256"] for r in rows) == {file_sha256(p): len(ALL_METRICS) for p in files}


# -- 6, 7. unsafe and corrupt checkpoints ------------------------------------------------------------------------------


class _Payload:
    """Unpickling this opens (creates) `marker`: stands for any code a malicious checkpoint could run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _malicious_checkpoint(path: Path, marker: Path) -> None:
    torch.save({"format": "ganbench.checkpoint", "format_version": 1, "kind": "baseline", "config": {}, "epoch": 99,
                "step": 1, "generator": _Payload(marker)}, path)


def _assert_failed_source(results: Path, path: Path, error_pattern: str) -> list[dict]:
    failed = stored(results, source_path=str(path))
    assert sorted(r["metric"] for r in failed) == sorted(ALL_METRICS)
    for r in failed:
        assert r["status"] == "failed" and r["value"] is None, r
        assert re.search(error_pattern, r["error"]), r["error"]
        assert "\n" not in r["error"]
    return failed


def _assert_good_ones_evaluated(results: Path, checkpoints: list[Path]) -> None:
    for checkpoint in checkpoints:
        rows = stored(results, source_path=str(checkpoint))
        assert sorted(r["metric"] for r in rows) == sorted(ALL_METRICS), checkpoint
        assert all(r["status"] == "ok" for r in rows)


def test_malicious_pickle_is_refused_recorded_failed_and_the_rest_evaluated(ws, tmp_path, capsys):
    run_dir = copy_run(ws, tmp_path)
    good = sorted(run_dir.glob("epoch_*.pt"))
    marker = tmp_path / "pwned"
    evil = run_dir / "epoch_0099.pt"
    _malicious_checkpoint(evil, marker)
    # The payload is real: an unsafe load of the same kind of file does run it.
    probe_marker = tmp_path / "probe"
    _malicious_checkpoint(tmp_path / "probe.pt", probe_marker)
    torch.load(tmp_path / "probe.pt", weights_only=False)["generator"].close()
    assert probe_marker.exists()

    results = tmp_path / "r.sqlite"
    assert main(eval_args(ws, results, tmp_path / "out", extra=("--format", "json"))) == 1
    captured = capsys.readouterr()
    assert not marker.exists(), "evaluating the checkpoint ran code from its pickle"
    failed_lines = ganbench_lines(captured.err, "FAILED")
    assert len(failed_lines) == 1, captured.err
    assert re.fullmatch(rf"ganbench: FAILED {re.escape(str(evil))}: refused to load .*arbitrary unpickling.*", failed_lines[0])
    assert "Traceback" not in captured.err
    rows = _assert_failed_source(results, evil, r"refused to load .*unpickling")
    assert {(r["run_epoch"], r["reference_name"], r["source_sha256"]) for r in rows} == {
        (99, "fashion-mnist:test", file_sha256(evil))}
    _assert_good_ones_evaluated(results, good)
    printed = [json.loads(line) for line in captured.out.splitlines()]
    assert Counter(p["status"] for p in printed) == {"ok": 3 * len(ALL_METRICS), "failed": len(ALL_METRICS)}


def test_truncated_checkpoint_fails_alone_and_a_good_file_there_later_is_evaluated(ws, tmp_path, capsys):
    run_dir = copy_run(ws, tmp_path)
    good = sorted(run_dir.glob("epoch_*.pt"))
    bad = run_dir / "epoch_0098.pt"
    bad.write_bytes(good[1].read_bytes()[: good[1].stat().st_size // 2])
    results = tmp_path / "r.sqlite"
    args = eval_args(ws, results, tmp_path / "out")
    assert main(args) == 1
    err = capsys.readouterr().err
    failed_lines = ganbench_lines(err, "FAILED")
    assert len(failed_lines) == 1 and str(bad) in failed_lines[0] and "corrupt or truncated" in failed_lines[0], err
    assert "Traceback" not in err
    _assert_failed_source(results, bad, r"corrupt or truncated")
    _assert_good_ones_evaluated(results, good)

    _distinct_checkpoint(good[2], bad, 98)  # the run finished writing that file after all
    assert main(args) == 0
    err = capsys.readouterr().err
    assert len(ganbench_lines(err, "skip")) == 3 and not ganbench_lines(err, "FAILED")
    rows = stored(results, source_path=str(bad), source_sha256=file_sha256(bad))
    assert sorted(r["metric"] for r in rows) == sorted(ALL_METRICS) and all(r["status"] == "ok" for r in rows)
    assert {r["run_epoch"] for r in rows} == {98}


def test_corrupt_checkpoint_outside_a_run_folder_is_recorded_failed(ws, tmp_path, capsys):
    """No dataset can be read from the path nor the file: the failure is still one line and failed rows, not a crash."""
    loose = tmp_path / "loose" / "epoch_0001.pt"
    loose.parent.mkdir()
    loose.write_bytes(ws.checkpoints[0].read_bytes()[:5000])
    results = tmp_path / "r.sqlite"
    assert main(eval_args(ws, results, loose, ws.checkpoints[0])) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    failed_lines = ganbench_lines(err, "FAILED")
    assert len(failed_lines) == 1 and str(loose) in failed_lines[0] and "corrupt or truncated" in failed_lines[0], err
    failed = stored(results, source_path=str(loose))
    assert failed and all(r["status"] == "failed" and "corrupt or truncated" in r["error"] for r in failed)
    assert all(r["run_dataset"] is None for r in failed)
    _assert_good_ones_evaluated(results, ws.checkpoints[:1])


# -- 8, 10. user generators --------------------------------------------------------------------------------------------


@pytest.fixture
def user_generator(tmp_path, monkeypatch):
    """A --generator module on sys.path and a state-dict file of its generator."""
    folder = tmp_path / "usercode"
    folder.mkdir()
    (folder / f"{USER_MODULE}.py").write_text(USER_GENERATOR_SOURCE)
    monkeypatch.syspath_prepend(str(folder))
    sys.modules.pop(USER_MODULE, None)
    module = __import__(USER_MODULE)
    generator, _ = module.make()
    weights = tmp_path / "my_g.pt"
    torch.save(generator.state_dict(), weights)
    yield weights
    sys.modules.pop(USER_MODULE, None)


def test_user_generator_with_state_dict_is_evaluated(ws, tmp_path, user_generator):
    results = tmp_path / "r.sqlite"
    args = eval_args(ws, results, user_generator,
                     extra=("--generator", f"{USER_MODULE}:make", "--reference", "fashion-mnist:test"))
    assert main(args) == 0
    rows = stored(results)
    assert sorted(r["metric"] for r in rows) == sorted(ALL_METRICS)
    for r in rows:
        assert r["status"] == "ok" and math.isfinite(r["value"])
        assert (r["run_kind"], r["source_sha256"], r["reference_name"], r["n_generated"], r["n_reference"]) == (
            "generator", file_sha256(user_generator), "fashion-mnist:test", 64, N_TEST)


def test_nan_generator_output_is_a_failure_not_a_number(ws, tmp_path, user_generator, capsys):
    results = tmp_path / "r.sqlite"
    args = eval_args(ws, results, user_generator,
                     extra=("--generator", f"{USER_MODULE}:make_nan", "--reference", "fashion-mnist:test"))
    assert main(args) == 1
    err = capsys.readouterr().err
    failed_lines = ganbench_lines(err, "FAILED")
    assert len(failed_lines) == 1 and re.search(r"generator output has \d+ NaN or infinite values", failed_lines[0]), err
    rows = stored(results)
    assert rows and sorted(r["metric"] for r in rows) == sorted(ALL_METRICS)
    assert all(r["status"] == "failed" and r["value"] is None and "NaN" in r["error"] for r in rows)


def test_a_generator_whose_output_is_never_negative_is_warned_about(ws, tmp_path, user_generator, capsys):
    # [0, 1] output was read as [-1, 1] without a word: every image washed out to grey, FID 480 instead of 9
    results = tmp_path / "r.sqlite"
    args = eval_args(ws, results, user_generator, extra=("--generator", f"{USER_MODULE}:make_zero_one", "--metrics", "fid"))
    with pytest.warns(GanbenchWarning, match=r"generator output is never negative .*reads a generator's output as "
                                             r"\[-1, 1\] .*return 2 \* x - 1"):
        assert main(args) == 0
    assert [r["status"] for r in stored(results)] == ["ok"]  # scored as given: a warning, not a refusal
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a tanh generator says nothing
        assert main(eval_args(ws, tmp_path / "r2.sqlite", user_generator,
                              extra=("--generator", f"{USER_MODULE}:make", "--metrics", "fid"))) == 0


@pytest.mark.parametrize("factory,reason", [
    ("make_raising", "generator failed: RuntimeError: boom inside user code"),
    ("make_tuple", "generator returned tuple, expected a tensor of images"),
    ("make_wrong_latent", "generator failed: RuntimeError: mat1 and mat2 shapes cannot be multiplied"),
    ("make_negative_latent", "must return (nn.Module, latent_dim) with latent_dim a positive integer, got -1"),
    ("make_fails", "calling it failed: ValueError: factory failed"),
    ("make_needs_arguments", "calling it failed: TypeError"),
])
def test_a_misbehaving_user_generator_fails_its_source_in_one_line_and_the_sweep_goes_on(
        ws, tmp_path, user_generator, capsys, factory, reason):
    results = tmp_path / "r.sqlite"
    second = tmp_path / "my_g2.pt"
    shutil.copy(user_generator, second)
    torch.save({**torch.load(second), "linear.bias": torch.zeros(784)}, second)  # other bytes, another source
    args = eval_args(ws, results, user_generator, second, extra=("--generator", f"{USER_MODULE}:{factory}",
                                                                 "--metrics", "fid"))
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    failed = ganbench_lines(err, "FAILED")
    assert len(failed) == 2 and all(reason in line for line in failed), err
    rows = stored(results)
    assert len(rows) == 2 and all(r["status"] == "failed" and reason in r["error"] for r in rows)


@pytest.mark.parametrize("spec,reason", [
    ("nosuch_ganbench_module:make", "cannot import it (No module named 'nosuch_ganbench_module')"),
    (f"{USER_MODULE}:nosuch", f"cannot import it (module '{USER_MODULE}' has no attribute 'nosuch')"),
    (f"{USER_MODULE}:not_callable", "is int, not a callable returning (nn.Module, latent_dim)"),
])
def test_a_generator_spec_that_names_no_callable_is_an_option_error_before_any_work(ws, tmp_path, user_generator,
                                                                                     capsys, spec, reason):
    # it failed every source alike, one by one, after computing the reference's features for nothing
    results = tmp_path / "r.sqlite"
    args = eval_args(ws, results, user_generator, extra=("--generator", spec, "--reference", "fashion-mnist:test"))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and f"--generator {spec}" in err and reason in err, err
    assert not results.exists() or not stored(results)


@pytest.mark.parametrize("metrics,references", [
    ("data_copying_ct", ("fashion-mnist:test",)),
    ("authenticity,mifid", ("fashion-mnist:test",)),
    ("data_copying_ct", ("fashion-mnist:test:32", "fashion-mnist:train:50")),  # C_T needs the whole test split
])
def test_metrics_no_given_reference_can_give_are_an_option_error_before_any_work(ws, tmp_path, capsys, metrics,
                                                                                   references):
    # it printed FAILED, then 'skip ...: already in the store', stored nothing and exited 0
    results = tmp_path / "r.sqlite"
    refs = [a for r in references for a in ("--reference", r)]
    assert main(eval_args(ws, results, ws.checkpoints[-1], extra=("--metrics", metrics, *refs))) == 2
    _, err = capsys.readouterr()
    assert err.strip().count("\n") == 0, err
    assert f"--metrics {metrics.replace(',', ', ')}: none can be computed against --reference" in err
    assert "DATASET:train[:N]" in err and (not results.exists() or not stored(results))


def test_a_reader_that_closes_the_pipe_early_loses_no_source(ws, tmp_path):
    # `ganbench eval ... --format json | head -1` stopped the sweep at the first source with "Broken pipe", exit 2
    results = tmp_path / "r.sqlite"
    args = eval_args(ws, results, *ws.checkpoints, extra=("--format", "json", "--metrics", "fid,kid"))
    process = subprocess.Popen([sys.executable, "-m", "ganbench", *args], env=subprocess_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = process.stdout.readline()
    process.stdout.close()  # as `head -1` does
    _, err = process.communicate(timeout=600)
    assert json.loads(first)["metric"] in ("fid", "kid")
    assert process.returncode == 0 and b"Broken pipe" not in err and b"Traceback" not in err, err
    assert len(stored(results)) == 2 * len(ws.checkpoints) == 6


def test_report_and_compare_into_a_closed_pipe_exit_quietly(tmp_path):
    store = tmp_path / "r.sqlite"
    rows = []
    for model, values in {"lsgan": [1.0, 2.0, 3.0], "hinge": [5.0, 6.0, 7.5]}.items():
        for seed, value in enumerate(values):
            path = tmp_path / model / "fashion-mnist" / f"seed{seed}" / "epoch_0001.pt"
            protocol = Protocol(extractor=EXTRACTOR, weights_sha256="ab" * 32, preprocessing="lenet-28-gray-unit",
                                n_generated=100, n_reference=100, reference_name="fashion-mnist:test",
                                reference_split="test", seed=0, metric_protocol_version=1)
            rows.append(ResultRow(metric="fid", protocol=protocol, source_path=str(path),
                                  source_sha256=hashlib.sha256(str(path).encode()).hexdigest(), value=value,
                                  run=RunInfo(kind="baseline", dataset="fashion-mnist", seed=seed, epoch=1, step=1)))
    with ResultsStore(store) as s:
        s.write_results(rows)
    for argv in (["report", "--results", str(store), "--out", str(tmp_path / "rep"), "--format", "csv", "--no-plots"],
                 ["compare", "--results", str(store), "--format", "csv"]):
        process = subprocess.Popen([sys.executable, "-m", "ganbench", *argv], env=subprocess_env(),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        process.stdout.close()  # the reader is gone before the first byte
        _, err = process.communicate(timeout=600)
        assert process.returncode == 141 and err.strip() == b"", (argv[0], err)  # 128 + SIGPIPE, silent, as `git log | head`
    assert (tmp_path / "rep" / "leaderboard.csv").is_file()


def test_warnings_are_one_ganbench_line_without_a_source_path(ws, tmp_path):
    # a recoverable problem (here a --cache-dir that is a file) printed Python's two-line warning: file path, line, code
    blocker = tmp_path / "cache.txt"
    blocker.write_text("not a folder")
    args = eval_args(ws, tmp_path / "r.sqlite", ws.checkpoints[-1], extra=("--metrics", "fid"))
    args[args.index("--cache-dir") + 1] = str(blocker)
    done = subprocess.run([sys.executable, "-m", "ganbench", *args], env=subprocess_env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if "warning" in line.lower()]
    assert warned and all(line.startswith("ganbench: warning: ") for line in warned), done.stderr
    assert ".py:" not in done.stderr and "warnings.warn" not in done.stderr, done.stderr


def test_a_source_or_extractor_named_twice_is_scored_once(ws, tmp_path, capsys):
    # the second mention was scored again (or printed a 'skip: already in the store' line for a result just written)
    results = tmp_path / "r.sqlite"
    checkpoint = ws.checkpoints[-1]
    relative = os.path.relpath(checkpoint)
    args = eval_args(ws, results, checkpoint, relative, extra=("--metrics", "fid", "--format", "json",
                                                               "--extractor", f"{EXTRACTOR},{EXTRACTOR}"))
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 1 and "skip" not in err, (out, err)
    assert len(stored(results)) == 1


def test_a_malformed_generator_spec_is_an_option_error_before_any_work(ws, tmp_path, user_generator, capsys):
    results = tmp_path / "r.sqlite"
    assert main(eval_args(ws, results, user_generator, extra=("--generator", "notacolon"))) == 2
    _, err = capsys.readouterr()
    assert err.strip().count("\n") == 0 and "--generator expects module:callable, got 'notacolon'" in err
    assert not results.exists()


# -- 9. image folders and .npz -----------------------------------------------------------------------------------------


def _write_pngs(folder: Path, images: np.ndarray) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    for i, image in enumerate(images):
        Image.fromarray(image, mode="L").save(folder / f"{i:03d}.png")


def test_png_folder_and_npz_of_the_same_images_give_the_same_fid(ws, tmp_path):
    images = np.random.default_rng(7).integers(0, 256, size=(80, 28, 28), dtype=np.uint8)
    folder, npz = tmp_path / "pngs", tmp_path / "samples.npz"
    _write_pngs(folder, images)
    np.savez(npz, images=images)
    results = tmp_path / "r.sqlite"
    assert main(eval_args(ws, results, folder, npz, num_samples=80, extra=("--reference", "fashion-mnist:test"))) == 0
    rows = stored(results)
    assert len(rows) == 2 * len(ALL_METRICS) and all(r["status"] == "ok" for r in rows)
    by_kind = {kind: {r["metric"]: r for r in rows if r["run_kind"] == kind} for kind in ("folder", "npz")}
    assert set(by_kind["folder"]) == set(by_kind["npz"]) == set(ALL_METRICS)
    assert by_kind["folder"]["fid"]["source_path"] == str(folder) and by_kind["npz"]["fid"]["source_path"] == str(npz)
    assert by_kind["folder"]["fid"]["n_generated"] == by_kind["npz"]["fid"]["n_generated"] == 80
    for metric in ALL_METRICS:
        assert by_kind["folder"][metric]["value"] == pytest.approx(by_kind["npz"][metric]["value"], rel=1e-9), metric


# -- 11. output formats ------------------------------------------------------------------------------------------------

REQUIRED_FIELDS = {"source", "metric", "value", "extractor", "num_samples", "status"}


def test_format_json_prints_one_object_per_result(ws, tmp_path, capsys):
    results = tmp_path / "r.sqlite"
    checkpoint = ws.checkpoints[0]
    capsys.readouterr()
    assert main(eval_args(ws, results, checkpoint, extra=("--format", "json", "--metrics", "fid,precision"))) == 0
    out = capsys.readouterr().out
    printed = [json.loads(line) for line in out.splitlines()]
    assert [p["metric"] for p in printed] == ["fid", "precision"]
    values = {r["metric"]: r["value"] for r in stored(results)}
    for p in printed:
        assert REQUIRED_FIELDS <= p.keys()
        assert (p["source"], p["extractor"], p["num_samples"], p["status"]) == (str(checkpoint), EXTRACTOR, 64, "ok")
        assert p["value"] == values[p["metric"]]


def test_format_csv_prints_a_header_and_one_row_per_result(ws, tmp_path, capsys):
    results = tmp_path / "r.sqlite"
    checkpoint = ws.checkpoints[0]
    capsys.readouterr()
    assert main(eval_args(ws, results, checkpoint, extra=("--format", "csv", "--metrics", "fid,precision"))) == 0
    out = capsys.readouterr().out
    reader = csv.DictReader(io.StringIO(out))
    assert REQUIRED_FIELDS <= set(reader.fieldnames)
    printed = list(reader)
    assert len(out.splitlines()) == 1 + len(printed)
    assert [p["metric"] for p in printed] == ["fid", "precision"]
    values = {r["metric"]: r["value"] for r in stored(results)}
    for p in printed:
        assert (p["source"], p["extractor"], p["num_samples"], p["status"]) == (str(checkpoint), EXTRACTOR, "64", "ok")
        assert float(p["value"]) == pytest.approx(values[p["metric"]], rel=1e-12)


# -- 12. bad input -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "pattern"),
    [
        ("missing-path", r"nope\.pt does not exist; pass checkpoint files or folders"),
        ("unknown-extractor", r"unknown extractor bogus; expected one of inception, lenet-fashion-mnist, .*\(--extractor\)"),
        ("unknown-metric", r"unknown metric bogus; expected some of fid, is, .* \(--metrics\)"),
        ("too-few-for-is", r"--num-samples 5 is too few for is, which needs at least 10"),
        ("folder-without-reference", r"folders, \.npz files and --generator sources need --reference"),
        ("unknown-split", r"--reference fashion-mnist:val: unknown split 'val'"),
        ("missing-reference", r"--reference .*nowhere: expected DATASET:SPLIT"),
        ("bad-subset", r"--reference fashion-mnist:train:1: the subset size must be an integer >= 2"),
        ("empty-reference", r"--reference '': expected DATASET:SPLIT"),  # it read the current folder as images
        ("empty-metrics", r"--metrics ' ': name at least one metric"),  # it meant every metric
        ("single-image", r"one\.png is one image; .*pass the folder that holds it"),  # it was 'a corrupt checkpoint'
        ("missing-data-root", r"--data-root .*nosuch does not exist or is not a folder"),  # failed rows, exit 1
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_store(ws, tmp_path, capsys, case, pattern):
    results = tmp_path / "store" / "r.sqlite"
    checkpoint = ws.checkpoints[0]
    paths, extra = [checkpoint], []
    if case == "missing-path":
        paths = [checkpoint, tmp_path / "nope.pt"]
    elif case == "unknown-extractor":
        extra = ["--extractor", "bogus"]
    elif case == "unknown-metric":
        extra = ["--metrics", "fid,bogus"]
    elif case == "too-few-for-is":
        extra = ["--num-samples", "5", "--metrics", "is"]
    elif case == "folder-without-reference":
        _write_pngs(tmp_path / "pngs", np.zeros((3, 28, 28), np.uint8))
        paths = [checkpoint, tmp_path / "pngs"]
    elif case == "unknown-split":
        extra = ["--reference", "fashion-mnist:val"]
    elif case == "missing-reference":
        extra = ["--reference", str(tmp_path / "nowhere")]
    elif case == "bad-subset":
        extra = ["--reference", "fashion-mnist:train:1"]
    elif case == "empty-reference":
        extra = ["--reference", ""]
    elif case == "empty-metrics":
        extra = ["--metrics", " "]
    elif case == "missing-data-root":
        extra = ["--data-root", str(tmp_path / "nosuch")]
    elif case == "single-image":
        _write_pngs(tmp_path / "pngs", np.zeros((1, 28, 28), np.uint8))
        paths = [next((tmp_path / "pngs").iterdir()).rename(tmp_path / "one.png")]
    capsys.readouterr()
    assert main(eval_args(ws, results, *paths, extra=tuple(extra), default_references=case == "folder-without-reference")) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("ganbench: error: ") and re.search(pattern, lines[0]), lines[0]
    assert not results.parent.exists(), "bad input must not create a results store"


# -- 13. several references --------------------------------------------------------------------------------------------


def test_several_references_in_one_call(ws, tmp_path):
    results = tmp_path / "r.sqlite"
    checkpoint = ws.checkpoints[-1]
    extra = ("--reference", "fashion-mnist:test", "--reference", "fashion-mnist:train")
    assert main(eval_args(ws, results, checkpoint, extra=extra)) == 0
    rows = stored(results)
    assert_no_duplicates(rows)
    assert all(r["status"] == "ok" for r in rows)
    by_reference = {name: {r["metric"]: r for r in rows if r["reference_name"] == name}
                    for name in ("fashion-mnist:test", "fashion-mnist:train")}
    # the whole training split is a training reference too: the memorization metrics beside it (C_T needs the test split)
    assert len(rows) == 2 * len(ALL_METRICS) + len(MEMORIZATION)
    assert set(by_reference["fashion-mnist:test"]) == set(ALL_METRICS)
    assert set(by_reference["fashion-mnist:train"]) == set(ALL_METRICS + MEMORIZATION)
    test, train = by_reference["fashion-mnist:test"], by_reference["fashion-mnist:train"]
    assert {(r["n_reference"], r["reference_split"]) for r in test.values()} == {(N_TEST, "test")}
    assert {(r["n_reference"], r["reference_split"]) for r in train.values()} == {(N_TRAIN, "train")}
    assert test["fid"]["value"] != train["fid"]["value"]
    assert test["fid"]["value"] == pytest.approx(direct_metrics(ws, checkpoint, 64, seed=0)["fid"], rel=1e-6)
    # generated once: the generated-set-only metrics agree across references
    for metric in ("is", "classes_covered", "class_kl"):
        assert test[metric]["value"] == train[metric]["value"]


# -- 14. failures that belong to one source or one reference, never to the sweep ------------------------------------


def test_a_reference_that_cannot_be_loaded_fails_each_source_that_needs_it_and_the_sweep_goes_on(ws, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    results = tmp_path / "r.sqlite"
    first, last = ws.checkpoints[0], ws.checkpoints[-1]
    capsys.readouterr()
    code = main(eval_args(ws, results, first, last, extra=("--reference", str(empty), "--reference", "fashion-mnist:test",
                                                            "--metrics", "fid,precision")))
    assert code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    rows = stored(results)
    for checkpoint in (first, last):
        mine = [r for r in rows if r["source_path"] == str(checkpoint)]
        ok = {r["metric"] for r in mine if r["reference_name"] == "fashion-mnist:test" and r["status"] == "ok"}
        bad = [r for r in mine if r["reference_name"] == str(empty)]
        assert ok == {"fid", "precision"}
        assert {r["metric"] for r in bad} == {"fid", "precision"} and all(r["status"] == "failed" for r in bad)
        assert all(r["error"].startswith(f"reference {empty}:") for r in bad)
    assert len(ganbench_lines(err, "FAILED")) == 2  # one line per source


def test_statistics_npz_reference_gives_fid_with_its_sha256_in_the_protocol(ws, tmp_path, capsys):
    # `ganbench reference --stats-out` writes the pytorch-fid format; eval against it must equal eval against the images
    stats = tmp_path / "stats.npz"
    assert main(["reference", "--dataset", "fashion-mnist", "--split", "test", "--extractor", EXTRACTOR, "--data-root",
                 str(ws.data_root), "--cache-dir", str(ws.cache), "--device", "cpu", "--quiet", "--stats-out", str(stats)]) == 0
    results = tmp_path / "r.sqlite"
    checkpoint = ws.checkpoints[-1]
    capsys.readouterr()
    assert main(eval_args(ws, results, checkpoint, extra=("--reference", str(stats), "--reference", "fashion-mnist:test"))) == 0
    err = capsys.readouterr().err
    assert "holds statistics (mu, sigma): fid is computed against it with the lenet-fashion-mnist extractor" in err
    rows = stored(results)
    against_stats = {r["metric"]: r for r in rows if r["reference_name"] == str(stats)}
    against_images = {r["metric"]: r for r in rows if r["reference_name"] == "fashion-mnist:test"}
    assert set(against_stats) == {"fid", "is", "classes_covered", "class_kl"}  # no metric needing reference features
    assert against_stats["fid"]["value"] == pytest.approx(against_images["fid"]["value"], rel=1e-9)
    assert against_stats["is"]["value"] == against_images["is"]["value"]
    assert json.loads(against_stats["fid"]["protocol_json"])["options"]["reference_sha256"] == file_sha256(stats)
    with np.load(stats) as npz:  # and pytorch-fid's own formula on the same statistics
        from pytorch_fid.fid_score import calculate_frechet_distance

        from ganbench.metrics.fid import feature_statistics
        from ganbench.samples import generate, load_baseline_generator

        module, latent_dim, _ = load_baseline_generator(checkpoint)
        from ganbench.features.extract import extract_features
        from ganbench.features.registry import build_extractor

        fake = extract_features(build_extractor(EXTRACTOR, device="cpu"), generate(module, latent_dim, 64, 0))
        mu, sigma = feature_statistics(fake.features)
        with warnings.catch_warnings():  # 64 samples: singular covariances, which pytorch-fid's sqrtm warns about
            warnings.simplefilter("ignore")
            expected = calculate_frechet_distance(mu, sigma, npz["mu"], npz["sigma"])
    assert against_stats["fid"]["value"] == pytest.approx(expected, rel=1e-6)


def test_statistics_reference_with_metrics_that_need_features_is_an_option_error(ws, tmp_path, capsys):
    stats = tmp_path / "stats.npz"
    np.savez(stats, mu=np.zeros(3), sigma=np.eye(3))
    capsys.readouterr()
    extra = ("--reference", str(stats), "--metrics", "fid,kid")
    assert main(eval_args(ws, tmp_path / "r.sqlite", ws.checkpoints[0], extra=extra)) == 2
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(r"ganbench: error: --reference .*stats\.npz holds statistics \(mu, sigma\), not images, so kid "
                        r"cannot use it .*", err), err


def test_a_statistics_reference_that_serves_none_of_the_extractors_metrics_is_an_option_error(ws, tmp_path, capsys):
    # wavelet's metric (fwd) needs the reference's features: it printed FAILED, then a false "skip: already in the
    # store", stored nothing and exited 0
    stats = tmp_path / "stats.npz"
    np.savez(stats, mu=np.zeros(3), sigma=np.eye(3))
    results = tmp_path / "r.sqlite"
    capsys.readouterr()
    args = eval_args(ws, results, ws.checkpoints[0], extra=("--reference", str(stats)))
    args[args.index("--extractor") + 1] = "wavelet"
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "already in" not in err, err
    assert f"--reference {stats} holds statistics (mu, sigma), which serve fid only; the wavelet extractor's " \
           "metrics (fwd) need the reference's features" in err, err
    assert not results.exists() or not stored(results)


def test_a_statistics_reference_beside_an_image_reference_is_left_out_where_it_serves_nothing(ws, tmp_path, capsys):
    stats = tmp_path / "stats.npz"
    np.savez(stats, mu=np.zeros(3), sigma=np.eye(3))  # 3-d: would fail to load against 3,072-d wavelet features
    results = tmp_path / "r.sqlite"
    capsys.readouterr()
    args = eval_args(ws, results, ws.checkpoints[0], extra=("--reference", str(stats), "--reference", "fashion-mnist:test"))
    args[args.index("--extractor") + 1] = "wavelet"
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "FAILED" not in err and f"reference {stats} holds statistics (mu, sigma): nothing is computed against it " \
                                    "with the wavelet extractor" in err, err
    assert {(r["reference_name"], r["metric"], r["status"]) for r in stored(results)} == {
        ("fashion-mnist:test", "fwd", "ok")}


def test_a_source_too_small_for_any_metric_is_a_failure_row_never_already_stored(ws, tmp_path, capsys):
    empty, one = tmp_path / "none.npz", tmp_path / "one.npz"
    np.savez(empty, images=np.zeros((0, 28, 28), np.uint8))
    np.savez(one, images=np.zeros((1, 28, 28), np.uint8))
    results = tmp_path / "r.sqlite"
    for source, metrics in ((empty, "fid,is"), (one, "fid,is")):
        for extra in (("--metrics", metrics), ("--metrics", metrics, "--force")):
            capsys.readouterr()
            assert main(eval_args(ws, results, source, extra=extra)) == 1
            err = capsys.readouterr().err
            assert "already in" not in err and f"FAILED {source}" in err
            assert "Traceback" not in err
    rows = stored(results)
    assert {(r["source_path"], r["metric"], r["status"]) for r in rows} == {
        (str(s), m, "failed") for s in (empty, one) for m in ("fid", "is")}
    assert {r["n_generated"] for r in rows if r["source_path"] == str(one)} == {1}
    assert all("needs at least" in r["error"] for r in rows if r["source_path"] == str(one))


def test_metrics_dropped_for_too_few_samples_are_said_and_recorded(ws, tmp_path, capsys):
    npz = tmp_path / "five.npz"
    np.savez(npz, images=np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8))
    results = tmp_path / "r.sqlite"
    capsys.readouterr()
    assert main(eval_args(ws, results, npz)) == 0
    notes = ganbench_lines(capsys.readouterr().err, "note")
    assert len(notes) == 1 and "not computed" in notes[0]
    assert all(m in notes[0] for m in ("is (needs at least 10", "density (needs at least 6", "coverage"))
    rows = {r["metric"]: r for r in stored(results)}
    assert {m for m, r in rows.items() if r["status"] == "ok"} == {"fid", "kid", "precision", "recall", "classes_covered",
                                                                   "class_kl"}
    assert rows["is"]["status"] == "failed" and rows["is"]["error"].startswith("not computed: needs at least 10")


def test_failed_rows_of_an_npz_record_its_real_image_count(ws, tmp_path):
    npz = tmp_path / "thirty.npz"
    np.savez(npz, images=np.zeros((30, 28, 28), np.uint8))
    empty = tmp_path / "empty"
    empty.mkdir()
    results = tmp_path / "r.sqlite"
    assert main(eval_args(ws, results, npz, extra=("--reference", str(empty), "--metrics", "fid"))) == 1
    rows = stored(results)
    assert [(r["status"], r["n_generated"]) for r in rows] == [("failed", 30)]


def test_memorization_metrics_without_a_training_reference_are_said_in_one_line_and_the_rest_computed(ws, tmp_path, capsys):
    folder = tmp_path / "pngs"
    _write_pngs(folder, np.random.default_rng(3).integers(0, 256, size=(40, 28, 28), dtype=np.uint8))
    results = tmp_path / "r.sqlite"
    capsys.readouterr()
    code = main(eval_args(ws, results, ws.checkpoints[-1], extra=("--reference", str(folder), "--metrics",
                                                                  "fid,authenticity,data_copying_ct")))
    assert code == 0
    notes = ganbench_lines(capsys.readouterr().err, "note")
    assert len(notes) == 1 and "authenticity, data_copying_ct not computed" in notes[0]
    assert [(r["metric"], r["status"]) for r in stored(results)] == [("fid", "ok")]


def test_a_folder_of_one_image_says_one_image(ws, tmp_path, capsys):
    # "one: 1 images, fewer than --num-samples 64; using all"
    from PIL import Image

    folder = tmp_path / "one"
    folder.mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(folder / "a.png")
    assert main(eval_args(ws, tmp_path / "r.sqlite", folder, extra=("--metrics", "fid"))) == 1
    err = capsys.readouterr().err
    assert f"{folder}: 1 image, fewer than --num-samples 64; using all" in err, err
    assert "1 images" not in err


def test_a_copy_of_a_scored_source_is_skipped_naming_the_source_it_copies(ws, tmp_path, capsys):
    # results are keyed by content: "skip gb: its results are already in the store" read as if gb had been scored
    from PIL import Image

    images = np.random.default_rng(0).integers(0, 256, size=(8, 28, 28), dtype=np.uint8)
    for name in ("ga", "gb"):
        (tmp_path / name).mkdir()
        for i, image in enumerate(images):
            Image.fromarray(image).save(tmp_path / name / f"{i}.png")
    results = tmp_path / "r.sqlite"
    capsys.readouterr()
    assert main(eval_args(ws, results, tmp_path / "ga", tmp_path / "gb", extra=("--metrics", "fid"))) == 0
    err = capsys.readouterr().err
    assert f"skip {tmp_path / 'gb'}: the same content as {tmp_path / 'ga'}, whose {EXTRACTOR} results are already in" in err, err


def test_the_table_shows_bootstrap_intervals_when_asked_for(ws, tmp_path, capsys):
    # --bootstrap stored intervals that the default table did not show, so the flag looked ignored
    capsys.readouterr()
    assert main([a for a in eval_args(ws, tmp_path / "r.sqlite", ws.checkpoints[-1],
                                       extra=("--metrics", "fid,is", "--bootstrap", "5")) if a != "--quiet"]) == 0
    out = capsys.readouterr().out
    header, *lines = out.strip().splitlines()
    assert "95% interval" in header
    (fid,) = [line for line in lines if " fid " in line]
    (row,) = [r for r in stored(tmp_path / "r.sqlite") if r["metric"] == "fid"]
    assert f"[{row['ci_low']:.4g}, {row['ci_high']:.4g}]" in fid, out
    assert main(eval_args(ws, tmp_path / "r2.sqlite", ws.checkpoints[-1], extra=("--metrics", "fid"))) == 0
    assert "95% interval" not in capsys.readouterr().out  # no column without --bootstrap


def test_a_source_path_holding_a_line_break_keeps_each_log_message_on_one_line(ws, tmp_path, capsys):
    # "FAILED <path>: ..." printed the path's line break, so one message read as two
    odd = tmp_path / "bad\nname.npz"
    np.savez(odd, images=np.zeros((1, 28, 28), np.uint8))
    capsys.readouterr()
    assert main(eval_args(ws, tmp_path / "r.sqlite", odd, extra=("--metrics", "fid"))) == 1
    err = capsys.readouterr().err
    assert all(line.startswith("ganbench: ") for line in err.strip().splitlines()), err
    assert "bad\\nname.npz" in err
