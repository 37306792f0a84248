"""`ganbench train MODEL --eval-every N`: the generator scored in-process, with the rows `ganbench eval` gives the
saved checkpoint of that epoch (same keys, same values; a later eval skips them), the run's checkpoints unchanged
by the scoring, a failing evaluation recorded without stopping training, and bad options refused in one line
before any epoch trains.

Runs are tiny (128 random training images, 64-image test split, 64 generated samples, the shipped
lenet-fashion-mnist extractor on the CPU), a few seconds each.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
import torch
from conftest import make_idx_split

from ganbench.cli import main
from ganbench.config import EvalConfig
from ganbench.samples import file_sha256
from ganbench.train import checkpoint as ckpt
from ganbench.train_eval import EvalEvery, checkpoint_sha256

N = 64


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_idx_split(root, "train", 256, seed=1)
    make_idx_split(root, "test", N, seed=2)
    return root


def train(data_root: Path, out: Path, model: str = "baseline", extra: tuple[str, ...] = ()) -> int:
    return main(["train", model, "--dataset", "fashion-mnist", "--data-root", str(data_root), "--out", str(out),
                 "--max-train-images", "128", "--epochs", "2", "--device", "cpu", "--quiet", *extra])


def eval_flags(results: Path, every: int = 1) -> tuple[str, ...]:
    return ("--eval-every", str(every), "--eval-num-samples", str(N), "--eval-reference", "fashion-mnist:test",
            "--eval-results", str(results))


def rows(results: Path) -> dict[tuple, dict]:
    """(source sha256, protocol key, metric) -> the stored row."""
    with sqlite3.connect(results) as db:
        db.row_factory = sqlite3.Row
        return {(r["source_sha256"], r["protocol_key"], r["metric"]): dict(r) for r in db.execute("SELECT * FROM results")}


def run_dir(out: Path, model: str = "baseline", seed: int = 0) -> Path:
    return out / model / "fashion-mnist" / f"seed{seed}"


@pytest.fixture(scope="module")
def evaluated(data_root, tmp_path_factory):
    """2 epochs scored every epoch, a checkpoint each; and the same run without scoring."""
    base = tmp_path_factory.mktemp("eval-every")
    assert train(data_root, base / "with", extra=("--checkpoint-every", "1", *eval_flags(base / "during.sqlite"))) == 0
    assert train(data_root, base / "without", extra=("--checkpoint-every", "1")) == 0
    return base


def test_scoring_leaves_the_training_run_unchanged(evaluated):
    for name in ("epoch_0001.pt", "epoch_0002.pt", "resume.pt"):
        assert (run_dir(evaluated / "with") / name).read_bytes() == (run_dir(evaluated / "without") / name).read_bytes()


def test_rows_are_those_of_ganbench_eval_on_each_epochs_checkpoint(evaluated, data_root):
    during = rows(evaluated / "during.sqlite")
    by_epoch = {}
    for row in during.values():
        by_epoch.setdefault(row["run_epoch"], []).append(row)
    assert sorted(by_epoch) == [1, 2] and all(r["status"] == "ok" for r in during.values())
    for epoch, scored in by_epoch.items():  # scored before the file was written: the key is the file's content
        path = run_dir(evaluated / "with") / ckpt.checkpoint_name(epoch)
        assert {(r["source_sha256"], r["source_path"]) for r in scored} == {(file_sha256(path), str(path))}

    after = evaluated / "after.sqlite"
    assert main(["eval", str(evaluated / "with"), "--extractor", "lenet-fashion-mnist", "--num-samples", str(N),
                 "--reference", "fashion-mnist:test", "--data-root", str(data_root), "--results", str(after),
                 "--device", "cpu", "--quiet"]) == 0
    expected = rows(after)
    assert set(expected) == set(during)  # the same sources, protocols and metrics
    for key, row in expected.items():
        assert (during[key]["value"], during[key]["std"]) == (row["value"], row["std"]), key[2]  # exactly
        assert (during[key]["run_kind"], during[key]["run_seed"], during[key]["run_step"]) == \
            (row["run_kind"], row["run_seed"], row["run_step"])


def test_ganbench_eval_of_the_run_skips_what_training_scored(evaluated, data_root, capsys):
    store = evaluated / "during.sqlite"
    before = len(rows(store))
    assert main(["eval", str(evaluated / "with"), "--extractor", "lenet-fashion-mnist", "--num-samples", str(N),
                 "--reference", "fashion-mnist:test", "--data-root", str(data_root), "--results", str(store),
                 "--device", "cpu", "--quiet"]) == 0
    assert "already in" in capsys.readouterr().err
    assert len(rows(store)) == before


def test_the_checkpoint_sha256_is_that_of_the_file_save_checkpoint_writes(tmp_path):
    state = {"generator": {"w": torch.randn(7, 3)}, "epoch": 3, "history": [{"d_loss": 0.5}]}
    ckpt.save_checkpoint(state, tmp_path / "x.pt")
    assert checkpoint_sha256(state) == file_sha256(tmp_path / "x.pt")


def test_a_batchnorm_generator_goes_back_to_training_mode(data_root, tmp_path):
    """dcgan's BatchNorm samples in eval mode; left there, the next epoch would train on running statistics. Epoch 1
    keeps no checkpoint (--checkpoint-every 2) and is scored all the same."""
    assert train(data_root, tmp_path / "with", "dcgan", ("--checkpoint-every", "2", *eval_flags(tmp_path / "r.sqlite"))) == 0
    assert train(data_root, tmp_path / "without", "dcgan", ("--checkpoint-every", "2")) == 0
    assert not (run_dir(tmp_path / "with", "dcgan") / "epoch_0001.pt").exists()
    with_, without = (run_dir(tmp_path / name, "dcgan") / "epoch_0002.pt" for name in ("with", "without"))
    assert with_.read_bytes() == without.read_bytes()
    assert {r["run_epoch"] for r in rows(tmp_path / "r.sqlite").values()} == {1, 2}


def test_seeds_in_worker_processes_each_score_their_run(data_root, tmp_path):
    assert train(data_root, tmp_path / "runs", extra=("--epochs", "1", "--seeds", "0,1", "--jobs", "2",
                                                      *eval_flags(tmp_path / "r.sqlite"))) == 0
    scored = {(r["run_seed"], r["run_epoch"]) for r in rows(tmp_path / "r.sqlite").values()}
    assert scored == {(0, 1), (1, 1)}


class NaNGenerator(torch.nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.full((z.shape[0], 784), float("nan"))


def scorer_for(data_root: Path, results: Path):
    plan = EvalEvery(1, EvalConfig(paths=("runs",), references=("fashion-mnist:test",), num_samples=N,
                                   extractors=("lenet-fashion-mnist",), device="cpu", results=str(results),
                                   data_root=str(data_root), quiet=True))
    return plan.start(torch.device("cpu"), "fashion-mnist")


def test_a_failing_evaluation_is_recorded_and_training_goes_on(evaluated, data_root, tmp_path):
    """A generator giving NaN: failed rows with the reason, and the call returns (training continues after it)."""
    path = run_dir(evaluated / "without") / "epoch_0002.pt"
    generator = NaNGenerator().train()
    outcome = scorer_for(data_root, tmp_path / "r.sqlite")(generator, 100, ckpt.load_checkpoint(path), path)
    assert outcome.failed and generator.training
    stored = rows(tmp_path / "r.sqlite").values()
    assert stored and all(r["status"] == "failed" and "NaN" in r["error"] and r["run_epoch"] == 2 for r in stored)


def test_scoring_keeps_the_callers_rng_and_mode(evaluated, data_root, tmp_path):
    from ganbench.samples import load_baseline_generator

    path = run_dir(evaluated / "without") / "epoch_0002.pt"
    generator, latent_dim, _ = load_baseline_generator(path)
    scorer = scorer_for(data_root, tmp_path / "r.sqlite")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    outcome = scorer(generator.train(), latent_dim, ckpt.load_checkpoint(path), path)
    assert not outcome.failed and generator.training
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(("extra", "pattern"), [
    (("--eval-metrics", "fid"), r"--eval-metrics applies to --eval-every, which is off"),
    # these two were silently ignored without --eval-every
    (("--eval-num-samples", "500"), r"--eval-num-samples applies to --eval-every, which is off"),
    (("--eval-results", "r.sqlite"), r"--eval-results applies to --eval-every, which is off"),
    (("--eval-every", "0"), r"--eval-every must be at least 1"),
    # each message names the flag given (they named eval's --extractor, --metrics, --num-samples, --reference)
    (("--eval-every", "1", "--eval-extractor", "nope"), r"unknown extractor nope; .*\(--eval-extractor\)$"),
    (("--eval-every", "1", "--eval-metrics", "fid,nope"), r"unknown metric nope; .*\(--eval-metrics\)$"),
    (("--eval-every", "1", "--eval-num-samples", "1"), r"--eval-num-samples must be at least 2"),
    (("--eval-every", "1", "--eval-reference", "nosuch"), r"--eval-reference nosuch: expected DATASET:SPLIT"),
])
def test_bad_eval_options_are_one_line_errors_before_training(data_root, tmp_path, capsys, extra, pattern):
    assert train(data_root, tmp_path / "runs", extra=extra) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(pattern, err), err
    assert not (tmp_path / "runs").exists()


def test_a_reference_that_cannot_load_stops_the_run_before_its_first_epoch(data_root, tmp_path, capsys):
    extra = ("--eval-every", "1", "--eval-reference", str(tmp_path / "missing-folder"))
    assert train(data_root, tmp_path / "runs", extra=extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "missing-folder" in err[-1]
    assert not run_dir(tmp_path / "runs").exists()


def test_a_results_store_that_cannot_be_opened_stops_the_run_before_its_first_epoch(data_root, tmp_path, capsys):
    """Found only after the first epoch, it would cost that epoch (scoring precedes the epoch's files) and the run."""
    bad = tmp_path / "bad.sqlite"
    bad.write_text("not a database")
    extra = ("--eval-every", "1", "--eval-num-samples", str(N), "--eval-reference", "fashion-mnist:test",
             "--eval-results", str(bad))
    assert train(data_root, tmp_path / "runs", extra=extra) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "not a SQLite database" in last and "pass a different --eval-results path" in last, last  # not --results
    assert not run_dir(tmp_path / "runs").exists()
