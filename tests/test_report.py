"""`ganbench report` on synthetic results stores: aggregation against hand-computed values, ranking directions and
ties, honest best-checkpoint selection, the fixed long-CSV schema, CSV / Markdown / HTML contents, protocols kept
apart, and every bad input pinned with its message (exit code 2, nothing half-written in --out)."""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import modes_bind_prefix

from ganbench.atomic import temporary_prefix
from ganbench.cli import main
from ganbench.results import COLUMNS, Protocol, ResultRow, ResultsStore, RunInfo
from ganbench.results.leaderboard import DERIVED_COLUMNS, aggregate, build_tables, interval_ranks, tidy
from ganbench.results.report import REPORT_FILES, REPORT_MARKER

T_975_DF2 = 4.302652729749464  # Student t 97.5% quantile with 2 degrees of freedom (statistical tables)
TEST, SELECT = "fashion-mnist:test", "fashion-mnist:train:10000"


def row(root: Path, metric: str, value: float, *, seed: int = 0, epoch: int = 10, reference: str = TEST,
        extractor: str = "lenet-fashion-mnist", n_generated: int = 100, kind: str = "baseline",
        ci: tuple[float, float] | None = None) -> ResultRow:
    path = root / "baseline" / "fashion-mnist" / f"seed{seed}" / f"epoch_{epoch:04d}.pt"
    protocol = Protocol(extractor=extractor, weights_sha256="ab" * 32, preprocessing="lenet-28-gray-unit",
                        n_generated=n_generated, n_reference=100, reference_name=reference,
                        reference_split=reference.split(":")[1], seed=0, metric_protocol_version=1)
    return ResultRow(metric=metric, protocol=protocol, source_path=str(path),
                     source_sha256=hashlib.sha256(str(path).encode()).hexdigest(), value=value,
                     ci_low=None if ci is None else ci[0], ci_high=None if ci is None else ci[1],
                     run=RunInfo(kind=kind, dataset="fashion-mnist", seed=seed, epoch=epoch, step=epoch * 10))


def write(store_path: Path, rows: list[ResultRow]) -> Path:
    with ResultsStore(store_path) as store:
        store.write_results(rows)
    return store_path


def frame(store_path: Path) -> pd.DataFrame:
    with ResultsStore(store_path, create=False) as store:
        return tidy(store.to_dataframe())


def table(tables, rule: str, extractor: str = "lenet-fashion-mnist"):
    (found,) = [t for t in tables if t.rule == rule and t.protocol["extractor"] == extractor]
    return found


# -- aggregation and ranking -----------------------------------------------------------------------------------------


def test_aggregate_matches_hand_computed_mean_std_and_t_interval():
    a = aggregate([1.0, 2.0, 3.0])
    half = T_975_DF2 * 1.0 / math.sqrt(3)  # sample std of 1, 2, 3 is exactly 1
    assert (a.mean, a.std) == (2.0, 1.0)
    assert a.ci_low == pytest.approx(2.0 - half, rel=1e-12) and a.ci_high == pytest.approx(2.0 + half, rel=1e-12)
    one = aggregate([5.0])
    assert one.mean == 5.0 and math.isnan(one.std) and math.isnan(one.ci_low)
    assert (aggregate([5.0], (4.0, 6.5)).ci_low, aggregate([5.0], (4.0, 6.5)).ci_high) == (4.0, 6.5)


def test_ranks_follow_the_metric_direction_and_tie_when_intervals_overlap():
    a, b, c = aggregate([1.0, 1.1, 0.9]), aggregate([5.0, 5.1, 4.9]), aggregate([5.05, 5.2, 4.95])
    assert interval_ranks([a, b, c], "lower") == [(1, False), (2, True), (2, True)]
    assert interval_ranks([a, b, c], "higher") == [(3, False), (1, True), (1, True)]
    with pytest.raises(ValueError, match="direction must be"):
        interval_ranks([a], "sideways")


def test_leaderboard_aggregates_final_checkpoints_over_seeds_and_ranks_by_direction(tmp_path):
    rows = []
    for seed, (fid, is_) in enumerate([(10.0, 3.0), (12.0, 3.2), (14.0, 3.4)]):
        rows += [row(tmp_path / "good", "fid", fid, seed=seed, epoch=20), row(tmp_path / "good", "is", is_, seed=seed, epoch=20),
                 row(tmp_path / "good", "fid", 99.0, seed=seed, epoch=10), row(tmp_path / "good", "is", 1.0, seed=seed, epoch=10)]
        rows += [row(tmp_path / "bad", "fid", 50.0 + seed, seed=seed, epoch=20), row(tmp_path / "bad", "is", 1.5 + seed / 100,
                                                                                        seed=seed, epoch=20)]
    tables = build_tables(frame(write(tmp_path / "r.sqlite", rows)))
    final = table(tables, "final")
    by_group = {Path(r.group).parents[1].name: r for r in final.rows}
    good, bad = by_group["good"], by_group["bad"]
    assert good.epochs == {0: 20, 1: 20, 2: 20} and good.n_seeds == 3
    assert good.metrics["fid"].mean == 12.0 and good.metrics["fid"].std == 2.0
    assert good.metrics["fid"].ci_high == pytest.approx(12.0 + T_975_DF2 * 2.0 / math.sqrt(3))
    assert (good.metrics["fid"].rank, bad.metrics["fid"].rank) == (1, 2)  # lower FID is better
    assert (good.metrics["is"].rank, bad.metrics["is"].rank) == (1, 2)  # higher IS is better
    assert not good.metrics["fid"].tied


# -- honest selection ------------------------------------------------------------------------------------------------


def test_best_checkpoint_is_chosen_on_the_selection_reference_and_reported_on_the_test_split(tmp_path):
    root = tmp_path / "run"
    rows = []
    for seed in (0, 1):
        # On the selection reference epoch 20 is best; on the test split epoch 30 would look best.
        rows += [row(root, "fid", v, seed=seed, epoch=e, reference=SELECT) for e, v in ((10, 30.0), (20, 5.0), (30, 9.0))]
        rows += [row(root, "fid", v + seed, seed=seed, epoch=e) for e, v in ((10, 31.0), (20, 8.0), (30, 2.0))]
    tables = build_tables(frame(write(tmp_path / "r.sqlite", rows)))
    assert {t.protocol["reference_name"] for t in tables} == {TEST}  # the selection reference gets no leaderboard
    best = table(tables, "best").rows[0]
    # the header names the table's dataset (it printed the placeholder DATASET:train:10000)
    assert table(tables, "best").rule_text.startswith(f"best: each seed's checkpoint with the lowest fid on {SELECT} ")
    assert best.epochs == {0: 20, 1: 20} and best.selected_on == SELECT and best.selection_note == ""
    assert best.metrics["fid"].values == (8.0, 9.0)  # the test-split numbers of the selected checkpoints
    assert table(tables, "final").rows[0].metrics["fid"].values == (2.0, 3.0)


def test_a_seed_whose_final_checkpoint_failed_is_left_out_of_final_and_said_so(tmp_path):
    # The final rule took each seed's last *successfully* scored checkpoint: a run that diverged at its last epoch
    # (NaN samples: failed rows) was reported, and compared, with an earlier epoch's number, without a word.
    from dataclasses import replace

    root = tmp_path / "run"
    rows = [row(root, "fid", 10.0 + seed + (epoch == 5) * 100, seed=seed, epoch=epoch) for seed in (0, 1, 2)
            for epoch in (5, 10) if (seed, epoch) != (2, 10)]
    diverged = row(root, "fid", 1.0, seed=2, epoch=10)
    rows.append(replace(diverged, value=None, status="failed", error="generator output holds NaN"))
    tables = build_tables(frame(write(tmp_path / "r.sqlite", rows)))
    final = table(tables, "final").rows[0]
    assert final.epochs == {0: 10, 1: 10} and final.metrics["fid"].values == (10.0, 11.0)
    assert final.notes == ["seed 2: its final checkpoint (epoch 10) failed (generator output holds NaN); left out, "
                           "not replaced by an earlier one"]
    # best chooses among the checkpoints that were scored: seed 2's epoch 5 remains a candidate there
    assert table(tables, "best").rows[0].epochs == {0: 10, 1: 10, 2: 5}
    # every seed diverged: the group stays in the final table, without values, saying why; report and compare run
    rows = [r for r in rows if r.run.epoch == 5] + [
        replace(row(root, "fid", 1.0, seed=seed, epoch=10), value=None, status="failed", error="NaN") for seed in (0, 1, 2)]
    rows += [row(tmp_path / "other", "fid", v, seed=s) for s, v in enumerate((20.0, 21.0, 22.0))]
    store = write(tmp_path / "all.sqlite", rows)
    (empty,) = [r for r in table(build_tables(frame(store)), "final").rows if r.n_seeds == 0]
    assert empty.metrics == {} and len(empty.notes) == 3
    assert main(["report", "--results", str(store), "--out", str(tmp_path / "rep"), "--no-plots"]) == 0
    assert "its final checkpoint (epoch 10) failed (NaN)" in (tmp_path / "rep" / "leaderboard.md").read_text()
    assert main(["compare", "--results", str(store), "--rule", "best"]) == 0
    assert main(["compare", "--results", str(store)]) == 2  # final: one group has values; one line, no traceback


def test_without_a_selection_reference_the_table_says_the_choice_used_the_reported_data(tmp_path):
    root = tmp_path / "run"
    rows = [row(root, "fid", v, epoch=e) for e, v in ((10, 7.0), (20, 3.0), (30, 4.0))]
    store = write(tmp_path / "r.sqlite", rows)
    best = table(build_tables(frame(store)), "best").rows[0]
    assert best.epochs == {0: 20} and best.selected_on == TEST
    assert best.selection_note == "selected on the reported data (optimistic)"
    out = tmp_path / "reports"
    assert main(["report", "--results", str(store), "--out", str(out), "--no-plots"]) == 0
    md = (out / "leaderboard.md").read_text()
    assert "fashion-mnist:test - selected on the reported data (optimistic)" in md


# -- files ------------------------------------------------------------------------------------------------------------


def test_long_csv_columns_do_not_change_when_a_metric_is_added(tmp_path):
    store = write(tmp_path / "r.sqlite", [row(tmp_path, "fid", 4.0)])
    assert main(["report", "--results", str(store), "--out", str(tmp_path / "a"), "--no-plots"]) == 0
    write(store, [row(tmp_path, "kid", 0.01), row(tmp_path, "coverage", 0.5)])
    assert main(["report", "--results", str(store), "--out", str(tmp_path / "b"), "--no-plots"]) == 0
    a, b = pd.read_csv(tmp_path / "a" / "results.csv"), pd.read_csv(tmp_path / "b" / "results.csv")
    assert list(a.columns) == list(b.columns) == [*COLUMNS, *DERIVED_COLUMNS]
    assert len(a) == 1 and sorted(b["metric"]) == ["coverage", "fid", "kid"]
    la, lb = pd.read_csv(tmp_path / "a" / "leaderboard.csv"), pd.read_csv(tmp_path / "b" / "leaderboard.csv")
    assert list(la.columns) == list(lb.columns)
    assert math.isnan(la["kid_mean"].iloc[0]) and lb.loc[lb["rule"] == "final", "kid_mean"].iloc[0] == 0.01


def test_csv_markdown_and_html_contents(tmp_path, capsys):
    rows = [row(tmp_path / "m", "fid", v, seed=s, epoch=e) for s, vs in enumerate([(9.0, 6.0), (8.0, 4.0)])
            for e, v in zip((10, 20), vs, strict=True)]
    store = write(tmp_path / "r.sqlite", rows)
    out = tmp_path / "reports"
    assert main(["report", "--results", str(store), "--out", str(out), "--format", "csv", "--no-plots"]) == 0
    stdout = capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {*REPORT_FILES, REPORT_MARKER}
    board = pd.read_csv(out / "leaderboard.csv")
    final = board[board["rule"] == "final"].iloc[0]
    assert (final["fid_mean"], final["n_seeds"], final["epochs"], final["fid_rank"]) == (5.0, 2, "20,20", 1)
    assert final["fid_std"] == pytest.approx(math.sqrt(2.0))
    assert (final["extractor"], final["reference_name"], final["n_generated"]) == ("lenet-fashion-mnist", TEST, 100)
    assert stdout.splitlines()[0].startswith("protocol_id,rule,group")
    md = (out / "leaderboard.md").read_text()
    assert "extractor lenet-fashion-mnist" in md and "N generated 100" in md and "reference fashion-mnist:test" in md
    assert "5 ± 1.414 [" in md and "#1" in md
    assert "checkpoint rule: final: each seed's last evaluated checkpoint" in md
    page = (out / "index.html").read_text()
    assert "<table>" in page and "5 ± 1.414" in page and "protocol" in page


def test_tables_name_models_by_the_shortest_unique_end_of_their_path(tmp_path, capsys):
    roots = {"x": tmp_path / "x" / "runs", "y": tmp_path / "y" / "runs", "solo": tmp_path / "solo"}
    store = write(tmp_path / "r.sqlite", [row(root, "fid", 1.0 + i) for i, root in enumerate(roots.values())])
    out = tmp_path / "reports"
    assert main(["report", "--results", str(store), "--out", str(out), "--format", "markdown", "--no-plots"]) == 0
    texts = {"stdout": capsys.readouterr().out, "md": (out / "leaderboard.md").read_text(),
             "html": (out / "index.html").read_text()}
    for where, text in texts.items():
        # Two runs share `runs/baseline/fashion-mnist`, so they keep one more part; the third needs none.
        for name in ("x/runs/baseline/fashion-mnist", "y/runs/baseline/fashion-mnist", "solo/baseline/fashion-mnist"):
            assert name in text and f"baseline fashion-mnist {name}" not in text, (where, name)  # said once
        assert str(tmp_path) not in text, where
    # The machine-readable files keep the full paths.
    assert set(pd.read_csv(out / "leaderboard.csv")["group"]) == {str(r / "baseline" / "fashion-mnist") for r in roots.values()}


def test_every_model_of_a_zoo_is_named_model_slash_dataset(tmp_path, capsys):
    import dataclasses

    runs = tmp_path / "zoo" / "runs"
    rows = []
    for i, kind in enumerate(("baseline", "hinge", "lsgan")):
        base = row(runs, "fid", 1.0 + i, kind=kind)
        path = runs / kind / "fashion-mnist" / "seed0" / "epoch_0010.pt"
        rows.append(dataclasses.replace(base, source_path=str(path),
                                        source_sha256=hashlib.sha256(str(path).encode()).hexdigest()))
    store = write(tmp_path / "r.sqlite", rows)
    assert main(["report", "--results", str(store), "--out", str(tmp_path / "out"), "--format", "markdown",
                 "--no-plots"]) == 0
    text = capsys.readouterr().out
    for kind in ("baseline", "hinge", "lsgan"):
        assert f"| {kind}/fashion-mnist |" in text, kind  # the name says model and dataset: no "kind dataset" prefix
    assert "runs/baseline" not in text


def test_curves_and_sample_grids_are_written_for_checkpoint_runs(tmp_path):
    root = tmp_path / "run"
    rows = [row(root, m, v + e, seed=s, epoch=e) for s in (0, 1) for e in (10, 20, 30) for m, v in (("fid", 3.0), ("is", 1.0))]
    grid = root / "baseline" / "fashion-mnist" / "seed1" / "epoch_0030.png"
    grid.parent.mkdir(parents=True)
    grid.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    store = write(tmp_path / "r.sqlite", rows)
    out = tmp_path / "reports"
    assert main(["report", "--results", str(store), "--out", str(out), "--format", "markdown"]) == 0
    (group_dir,) = [p for p in out.iterdir() if p.is_dir()]
    names = sorted(p.name for p in group_dir.iterdir())
    assert any(n.startswith("curves_") and n.endswith(".png") for n in names)
    assert "samples_seed1_epoch30.png" in names
    assert (group_dir / "samples_seed1_epoch30.png").read_bytes() == grid.read_bytes()
    assert (group_dir / names[0]).read_bytes()[:4] == b"\x89PNG"
    page = (out / "index.html").read_text()
    assert f"{group_dir.name}/samples_seed1_epoch30.png" in page and f"{group_dir.name}/curves_" in page


def test_a_file_beside_a_checkpoint_that_is_not_a_png_is_left_out_and_said_so(tmp_path):
    # it was copied into the report, whatever it held, and shown as the run's sample grid
    root = tmp_path / "run"
    rows = [row(root, "fid", 3.0 + e, seed=0, epoch=e) for e in (10, 20)]
    grid = root / "baseline" / "fashion-mnist" / "seed0" / "epoch_0020.png"
    grid.parent.mkdir(parents=True)
    grid.write_bytes(b"ssh-rsa AAAA a private note, not an image")
    store = write(tmp_path / "r.sqlite", rows)
    out = tmp_path / "reports"
    assert main(["report", "--results", str(store), "--out", str(out)]) == 0
    (group_dir,) = [p for p in out.iterdir() if p.is_dir()]
    assert not [p.name for p in group_dir.iterdir() if p.name.startswith("samples_")]
    page = (out / "index.html").read_text()
    assert "epoch_0020.png (seed 0) is not a PNG image; its sample grid is left out" in page


def test_a_source_rescored_with_other_content_is_reported_by_its_latest_content_only(tmp_path):
    # a folder refilled with other images and scored again: the 'best' table kept the FID of the images that were
    # gone (23.59, ranked #1) beside the 'final' table's 757.7
    folder = str(tmp_path / "sw")
    protocol = Protocol(extractor="lenet-fashion-mnist", weights_sha256="ab" * 32, preprocessing="lenet-28-gray-unit",
                        n_generated=100, n_reference=100, reference_name=TEST, reference_split="test", seed=0,
                        metric_protocol_version=1)
    rows = [ResultRow(metric="fid", protocol=protocol, source_path=folder, source_sha256=sha * 64, value=value,
                      run=RunInfo(kind="folder"), created_at=when)
            for sha, value, when in (("a", 23.59, "2026-11-30T09:00:00+00:00"), ("b", 757.7, "2026-11-30T10:00:00+00:00"))]
    rows.append(row(tmp_path, "fid", 40.0))  # another group, untouched
    tables = build_tables(frame(write(tmp_path / "r.sqlite", rows)))
    for table in tables:
        (mine,) = [r for r in table.rows if r.group == folder]
        assert tuple(mine.metrics["fid"].values) == (757.7,), (table.rule, mine.metrics["fid"].values)
        assert any("1 source was scored again with other content" in note for note in table.notes), table.notes


def test_protocols_are_never_ranked_in_one_table(tmp_path):
    rows = [row(tmp_path / "a", "fid", 1.0), row(tmp_path / "b", "fid", 2.0, n_generated=200),
            row(tmp_path / "c", "fid", 0.5, extractor="inception")]
    tables = build_tables(frame(write(tmp_path / "r.sqlite", rows)))
    finals = [t for t in tables if t.rule == "final"]
    assert len(finals) == 3 and all(len(t.rows) == 1 and t.rows[0].metrics["fid"].rank == 1 for t in finals)
    assert len({t.protocol_id for t in finals}) == 3


def test_tables_of_one_extractor_come_most_checkpoints_first_not_in_protocol_id_order(tmp_path):
    # The zoo benchmark scored every checkpoint under one sampling seed and the final ones again under another; the
    # report opened on the final-only protocol because its id happened to sort first. Find such an unlucky pair.
    def pid(rows: list[ResultRow]) -> str:
        path = tmp_path / f"pid{rows[0].protocol.n_generated}.sqlite"
        return build_tables(frame(write(path, rows)))[0].protocol_id

    every = [row(tmp_path, "fid", 10.0 - e / 10, epoch=e) for e in (10, 20, 30)]
    n = next(n for n in range(101, 400) if pid([row(tmp_path, "fid", 1.0, epoch=30, n_generated=n)]) < pid(every))
    final_only = [row(tmp_path, "fid", 7.0, epoch=30, n_generated=n)]
    inception = [row(tmp_path, "fid", 3.0, epoch=e, extractor="inception") for e in (10, 20, 30)]
    tables = build_tables(frame(write(tmp_path / "r.sqlite", every + final_only + inception)))
    order = [(t.protocol["extractor"], t.protocol["n_generated"], t.rule) for t in tables]
    assert order == [("inception", 100, "final"), ("inception", 100, "best"), ("lenet-fashion-mnist", 100, "final"),
                     ("lenet-fashion-mnist", 100, "best"), ("lenet-fashion-mnist", n, "final"),
                     ("lenet-fashion-mnist", n, "best")]


def test_filters_select_datasets_metrics_and_protocols(tmp_path, capsys):
    rows = [row(tmp_path / "a", "fid", 1.0), row(tmp_path / "a", "kid", 0.1),
            row(tmp_path / "c", "fid", 0.5, extractor="inception")]
    store = write(tmp_path / "r.sqlite", rows)
    out = tmp_path / "reports"
    assert main(["report", "--results", str(store), "--out", str(out), "--protocol", "inception", "--metric", "fid",
                 "--dataset", "fashion-mnist", "--no-plots"]) == 0
    board = pd.read_csv(out / "leaderboard.csv")
    assert set(board["extractor"]) == {"inception"}
    assert set(pd.read_csv(out / "results.csv")["metric"]) == {"fid"}
    pid = board["protocol_id"].iloc[0]
    capsys.readouterr()
    assert main(["report", "--results", str(store), "--out", str(out), "--protocol", pid[:6], "--no-plots"]) == 0
    assert f"protocol {pid}" in capsys.readouterr().out


def test_reading_an_empty_file_as_a_store_leaves_it_untouched(tmp_path, capsys):
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    assert main(["report", "--results", str(empty), "--out", str(tmp_path / "out"), "--no-plots"]) == 2
    assert f"{empty} holds no results yet" in capsys.readouterr().err
    assert empty.stat().st_size == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["empty.sqlite"]


def test_a_store_on_a_read_only_folder_is_reported_and_compared(tmp_path):
    # report and compare only read, yet a store they could read but not write beside (a read-only mount, a shared
    # folder) was "cannot be read as a results store (unable to open database file)"
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="ganbench-ro-"))  # under /tmp: another user can reach it, unlike tmp_path
    try:
        rows = [row(folder / "runs" / m, "fid", v + s, seed=s) for m, v in (("a", 1.0), ("b", 9.0)) for s in (0, 1, 2)]
        store = write(folder / "r.sqlite", rows)
        out = folder / "out"
        out.mkdir()
        out.chmod(0o777)
        store.chmod(0o444)
        folder.chmod(0o555)
        prefix = modes_bind_prefix()
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        for argv in (["report", "--results", str(store), "--out", str(out / "rep"), "--no-plots"],
                     ["compare", "--results", str(store)]):
            done = subprocess.run([*prefix, sys.executable, "-m", "ganbench", *argv], env=env, capture_output=True,
                                  text=True, timeout=600)
            assert done.returncode == 0, (argv[0], done.stderr)
        assert (out / "rep" / "leaderboard.csv").is_file()
        assert sorted(p.name for p in folder.iterdir()) == ["out", "r.sqlite"]  # nothing written beside the store

        # A store whose last commits are still in its write-ahead log (a killed `ganbench eval`) without the log's
        # index: read as an immutable file it would silently lack those rows; it must say so instead.
        held = folder.parent / (folder.name + "-wal")
        held.mkdir()
        with ResultsStore(held / "r.sqlite") as writer:
            writer.write_results(rows[:4])
        with ResultsStore(held / "r.sqlite") as writer:
            writer.write_results(rows[4:])  # committed to r.sqlite-wal, not yet merged into r.sqlite
            for name in ("r.sqlite", "r.sqlite-wal"):
                shutil.copy(held / name, out / name)
        out.chmod(0o555)
        done = subprocess.run([*prefix, sys.executable, "-m", "ganbench", "compare", "--results", str(out / "r.sqlite")],
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 2 and "r.sqlite-wal" in done.stderr and len(done.stderr.splitlines()) == 1, done
    finally:
        folder.chmod(0o755)
        (folder / "out").chmod(0o755)
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(folder.parent / (folder.name + "-wal"), ignore_errors=True)


# -- bad input ------------------------------------------------------------------------------------------------------


def _old_report(out: Path) -> None:
    """A previous report, which a new one may replace: its marker lists every file in it."""
    out.mkdir()
    (out / "leaderboard.md").write_text("previous report\n")
    (out / REPORT_MARKER).write_text(json.dumps({"format": "ganbench-report", "version": 1, "files": ["leaderboard.md"]}))


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", r"no results store here; run `ganbench eval --results"),
        ("empty", r"holds no results yet; run `ganbench eval CHECKPOINTS --results"),
        ("newer-schema", r"has results schema version 99, written by a newer ganbench.*upgrade ganbench"),
        ("not-a-store", r"is a SQLite database but not a ganbench results store"),
        ("no-dataset", r"--dataset mnist matches no results; datasets in the store: fashion-mnist"),
        ("no-protocol", r"--protocol nothing matches no results; protocols: [0-9a-f]{10} \(lenet-fashion-mnist\)"),
        ("no-metric", r"--metric kid matches no results; metrics in the store: fid"),
        # it dropped every 'best' table without a word
        ("no-select-metric", r"--select-metric kid matches no results, so no best checkpoint can be chosen; "
                             r"metrics in the store: fid"),
        # these reported everything, as if the filter had not been given
        ("empty-metric", r"--metric ',' names nothing; give NAME\[,NAME\] or leave the flag out"),
        ("empty-dataset", r"--dataset '' names nothing"),
        ("unknown-metric", r"unknown metric fidd; expected one of fid, is"),
        ("corrupt", r"r\.sqlite is corrupt \(sqlite: .+\); restore it from a backup, or pass a new --results path"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_leaves_out_untouched(tmp_path, capsys, case, message):
    store = tmp_path / "r.sqlite"
    extra: list[str] = []
    if case != "missing":
        write(store, [] if case == "empty" else [row(tmp_path, "fid", 1.0)])
    if case == "newer-schema":
        with sqlite3.connect(store) as conn:
            conn.execute("PRAGMA user_version = 99")
    if case == "not-a-store":
        store.unlink()
        with sqlite3.connect(store) as conn:
            conn.execute("CREATE TABLE t (x)")
    if case == "corrupt":  # a damaged index: reading every row by id still works, so this once exited 0
        with sqlite3.connect(store) as conn:
            (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'sqlite_autoindex_results_1'").fetchone()
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.close()
        with open(store, "r+b") as f:
            f.seek((root - 1) * page_size)
            f.write(b"\xab" * page_size)
    extra = {"no-dataset": ["--dataset", "mnist"], "no-protocol": ["--protocol", "nothing"],
             "no-metric": ["--metric", "kid"], "unknown-metric": ["--metric", "fidd"],
             "no-select-metric": ["--select-metric", "kid"], "empty-metric": ["--metric", ","],
             "empty-dataset": ["--dataset", ""]}.get(case, [])
    out = tmp_path / "reports"
    _old_report(out)
    capsys.readouterr()
    assert main(["report", "--results", str(store), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ganbench: error: ") and "Traceback" not in err
    assert re.search(message, err), err
    assert sorted(p.name for p in out.iterdir()) == [REPORT_MARKER, "leaderboard.md"]
    assert (out / "leaderboard.md").read_text() == "previous report\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".reports.")]  # no temporary folder left behind


def test_a_store_without_the_default_selection_metric_still_reports_its_final_tables(tmp_path, capsys):
    # only an explicit --select-metric that matches nothing is an error; a wavelet-only store (fwd, no fid) reports
    store = write(tmp_path / "r.sqlite", [row(tmp_path, "fwd", 3.0, epoch=e) for e in (10, 20)])
    assert main(["report", "--results", str(store), "--out", str(tmp_path / "reports"), "--no-plots"]) == 0
    assert "fwd" in (tmp_path / "reports" / "leaderboard.md").read_text()


# -- what --out may replace: only a previous report ----------------------------------------------------------------


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def _epoch_rows(root: Path, epochs=(10, 20)) -> list[ResultRow]:
    return [row(root, "fid", 3.0 + e, seed=0, epoch=e) for e in epochs]


def test_a_report_carries_a_marker_listing_its_files_and_replaces_a_previous_report(tmp_path):
    store, out = write(tmp_path / "r.sqlite", _epoch_rows(tmp_path / "run")), tmp_path / "reports"
    assert main(["report", "--results", str(store), "--out", str(out)]) == 0
    marker = json.loads((out / REPORT_MARKER).read_text())
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != REPORT_MARKER)
    assert (marker["format"], marker["version"], marker["files"]) == ("ganbench-report", 1, files)
    assert set(REPORT_FILES) < set(files) and any("/curves_" in f for f in files), files
    write(store, _epoch_rows(tmp_path / "run", epochs=(30,)))
    assert main(["report", "--results", str(store), "--out", str(out)]) == 0, "a previous report is replaced"
    assert "30" in set(pd.read_csv(out / "leaderboard.csv")["epochs"].astype(str))


def test_an_empty_folder_and_a_report_from_before_the_marker_may_be_replaced(tmp_path):
    store, out = write(tmp_path / "r.sqlite", _epoch_rows(tmp_path / "run")), tmp_path / "reports"
    out.mkdir()
    assert main(["report", "--results", str(store), "--out", str(out)]) == 0
    (out / REPORT_MARKER).unlink()  # what earlier ganbench versions wrote: the four files and group folders of PNGs
    assert main(["report", "--results", str(store), "--out", str(out)]) == 0
    assert (out / REPORT_MARKER).is_file()


def _setup_out(case: str, store: Path, out: Path) -> None:
    if case == "file":
        out.write_text("mine\n")
        return
    if case == "user-folder":
        out.mkdir()
        (out / "notes.txt").write_text("mine\n")
        (out / "data").mkdir()
        (out / "data" / "x.bin").write_bytes(b"\0" * 10)
        return
    assert main(["report", "--results", str(store), "--out", str(out)]) == 0  # a real previous report, with curves
    if case in ("notes-in-report", "legacy-with-notes"):
        (out / "notes.txt").write_text("mine\n")
    if case == "empty-folder-in-report":
        (out / "drafts").mkdir()
    if case == "file-in-group-folder":
        (group,) = [p for p in out.iterdir() if p.is_dir()]
        (group / "mine.png").write_bytes(b"mine")
    if case == "bad-marker":
        (out / REPORT_MARKER).write_text("{not json")
    if case.startswith("legacy"):
        (out / REPORT_MARKER).unlink()
    if case == "legacy-without-title":
        (out / "index.html").write_text("<html><title>my page</title></html>")


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("file", r"exists and is not a folder; choose another --out"),
        ("user-folder", r"exists and is not a ganbench report \(no \.ganbench-report marker\); choose another --out or "
                        r"remove it yourself"),
        ("notes-in-report", r"holds files that ganbench report did not write \(notes\.txt\); move them out of it, "
                            r"or choose another --out"),
        ("empty-folder-in-report", r"holds files that ganbench report did not write \(drafts/\)"),
        ("file-in-group-folder", r"holds files that ganbench report did not write \([^/ ]+/mine\.png\)"),
        ("bad-marker", r"exists and is not a ganbench report \(no \.ganbench-report marker\)"),
        ("legacy-with-notes", r"holds files that ganbench report did not write \(notes\.txt\)"),
        ("legacy-without-title", r"exists and is not a ganbench report \(no \.ganbench-report marker\)"),
    ],
)
def test_out_that_is_not_a_previous_report_is_refused_and_left_alone(tmp_path, capsys, case, message):
    store, out = write(tmp_path / "r.sqlite", _epoch_rows(tmp_path / "run")), tmp_path / "reports"
    _setup_out(case, store, out)
    before = _snapshot(tmp_path)
    capsys.readouterr()
    assert main(["report", "--results", str(store), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(rf"^ganbench: error: --out {re.escape(str(out))} {message}", err), err
    assert _snapshot(tmp_path) == before, "nothing deleted, nothing left behind"


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (".", r"--out \. is the current folder or one above it; report replaces its --out as a whole: choose a new folder"),
        ("..", r"--out \.\. is the current folder or one above it"),
        ("store-folder", r"--out \S+/data/results holds the results store \S+/r\.sqlite that report reads; choose another"),
        ("store-ancestor", r"--out \S+/data holds the results store"),
        ("mount", r"--out \S+/mnt is a mount point; report replaces its --out as a whole: choose a new folder inside it"),
        ("root", r"--out / is the root folder; report replaces its --out as a whole: choose a new folder inside it"),
    ],
)
def test_out_that_holds_the_current_folder_the_store_or_a_mount_is_refused(tmp_path, capsys, monkeypatch, where, message):
    (tmp_path / "work" / "here").mkdir(parents=True)
    (tmp_path / "mnt").mkdir()
    store = write(tmp_path / "data" / "results" / "r.sqlite", [row(tmp_path, "fid", 1.0)])
    monkeypatch.chdir(tmp_path / "work" / "here")
    mount = tmp_path / "mnt"
    real_ismount = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: Path(p) == mount or real_ismount(p))
    out = {"store-folder": store.parent, "store-ancestor": store.parent.parent, "mount": mount, "root": "/"}.get(where, where)
    before, top = _snapshot(tmp_path), sorted(os.listdir("/"))
    assert main(["report", "--results", str(store), "--out", str(out), "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(r"^ganbench: error: " + message, err), err
    assert _snapshot(tmp_path) == before and sorted(os.listdir("/")) == top


def test_out_below_a_file_names_the_file(tmp_path, capsys):
    # it said "cannot write there (File exists)"
    store = write(tmp_path / "r.sqlite", [row(tmp_path, "fid", 1.0)])
    assert main(["report", "--results", str(store), "--out", str(store / "sub" / "rep"), "--no-plots"]) == 2
    assert capsys.readouterr().err == (f"ganbench: error: --out {store / 'sub' / 'rep'}: {store} is a file, not a "
                                       "folder; choose another --out\n")


def test_report_on_a_full_disk_is_one_line_naming_out_and_keeps_the_previous_report(tmp_path, capsys, monkeypatch):
    store, out = write(tmp_path / "r.sqlite", [row(tmp_path, "fid", 1.0)]), tmp_path / "reports"
    assert main(["report", "--results", str(store), "--out", str(out), "--no-plots"]) == 0
    before = _snapshot(tmp_path)

    def full(self, *args, **kwargs):  # what a write to a full disk raises: errno and strerror, no file name
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pd.DataFrame, "to_csv", full)
    capsys.readouterr()
    assert main(["report", "--results", str(store), "--out", str(out), "--no-plots"]) == 2
    assert capsys.readouterr().err == (f"ganbench: error: disk full: No space left on device ({out}); free some space or "
                                       "write elsewhere (--out, --cache-dir, --results, --stats-out)\n")
    assert _snapshot(tmp_path) == before, "the previous report is kept and no build folder is left"


def test_a_killed_reports_build_folder_is_removed_by_the_next_report(tmp_path):
    store, out = write(tmp_path / "r.sqlite", [row(tmp_path, "fid", 1.0)]), tmp_path / "reports"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout
    left = tmp_path / (temporary_prefix("reports").replace(f"-{os.getpid()}-", f"-{int(dead)}-") + "abcd1234.build")
    left.mkdir()
    (left / "results.csv").write_text("half")
    assert main(["report", "--results", str(store), "--out", str(out), "--no-plots"]) == 0
    assert not left.exists()


def test_sources_without_seed_or_epoch_are_one_row_each(tmp_path):
    def npz_row(name: str, value: float) -> ResultRow:
        protocol = row(tmp_path, "fid", 0.0).protocol
        path = tmp_path / f"{name}.npz"
        return ResultRow(metric="fid", protocol=protocol, source_path=str(path), value=value,
                         source_sha256=hashlib.sha256(name.encode()).hexdigest(), run=RunInfo(kind="npz"))

    store = write(tmp_path / "r.sqlite", [npz_row("a", 3.0), npz_row("b", 1.0)])
    final = table(build_tables(frame(store)), "final")
    assert sorted((Path(r.group).name, r.n_seeds, r.epochs[None], r.metrics["fid"].mean, r.metrics["fid"].rank)
                  for r in final.rows) == [("a.npz", 1, None, 3.0, 2), ("b.npz", 1, None, 1.0, 1)]
    out = tmp_path / "reports"
    assert main(["report", "--results", str(store), "--out", str(out)]) == 0  # no curves for sources without epochs
    assert not [p for p in out.iterdir() if p.is_dir()]


def test_a_non_finite_value_written_into_the_store_by_hand_is_a_failed_row(tmp_path, capsys):
    # an edited or foreign store with inf: report and compare printed a ValueError traceback
    rows = [row(tmp_path, "fid", 3.0 + s, seed=s) for s in range(3)] + [row(tmp_path, "kid", 0.1, seed=s) for s in range(3)]
    store = write(tmp_path / "r.sqlite", rows)
    with sqlite3.connect(store) as conn:
        conn.execute("UPDATE results SET value = 1e999 WHERE metric = 'fid' AND run_seed = 1")
    conn.close()
    assert main(["report", "--results", str(store), "--out", str(tmp_path / "out"), "--no-plots"]) == 0
    text = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "inf" not in text and "| 4 ± 1.414 " in text, text  # fid: the mean of the two finite seeds (3 and 5)
    csv = pd.read_csv(tmp_path / "out" / "results.csv")
    bad = csv[(csv["metric"] == "fid") & (csv["run_seed"] == 1)]
    assert list(bad["status"]) == ["failed"] and "not finite" in bad["error"].iloc[0]
    assert main(["compare", "--results", str(store)]) in (0, 2)
    assert "Traceback" not in capsys.readouterr().err


def test_a_path_holding_a_newline_keeps_every_table_row_on_one_line(tmp_path, capsys):
    # the Markdown tables escaped '|' but not a newline, which split the row in two
    odd = tmp_path / "new\nline|pipe"
    store = write(tmp_path / "r.sqlite", [row(root, "fid", 3.0, kind="npz") for root in (odd, tmp_path / "plain")])
    assert main(["report", "--results", str(store), "--out", str(tmp_path / "out"), "--no-plots", "--format",
                 "markdown"]) == 0
    for text in ((tmp_path / "out" / "leaderboard.md").read_text(), capsys.readouterr().out):
        for line in text.splitlines():
            assert not line.startswith("|") or line.rstrip().endswith("|"), line
        assert "new\\nline\\|pipe" in text


def test_an_error_naming_a_path_with_a_newline_is_still_one_line(tmp_path, capsys):
    odd = tmp_path / "a\nb.sqlite"
    assert main(["report", "--results", str(odd), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a\\nb.sqlite" in err, err
