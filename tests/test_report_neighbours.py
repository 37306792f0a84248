"""The report's memorization evidence: training-split columns and the generalization gap beside each leaderboard
row, copying rows flagged in words, a one-line note when there is no training split, and the nearest-neighbour
grids regenerated from a real (tiny) checkpoint."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from ganbench.cli import main
from ganbench.results import Protocol, ResultRow, ResultsStore, RunInfo, neighbours
from ganbench.results.leaderboard import build_tables, tidy
from ganbench.results.report import slug

TEST, SELECT = "fashion-mnist:test", "fashion-mnist:train:10000"


def result(path: Path, metric: str, value: float, reference: str, *, seed: int = 0, epoch: int = 10) -> ResultRow:
    protocol = Protocol(extractor="lenet-fashion-mnist", weights_sha256="ab" * 32, preprocessing="lenet-28-gray-unit",
                        n_generated=100, n_reference=100, reference_name=reference, reference_split=reference.split(":")[1],
                        seed=0, metric_protocol_version=1)
    return ResultRow(metric=metric, protocol=protocol, source_path=str(path),
                     source_sha256=hashlib.sha256(str(path).encode()).hexdigest(), value=value,
                     run=RunInfo(kind="baseline", dataset="fashion-mnist", seed=seed, epoch=epoch, step=epoch))


def checkpoint_path(root: Path, seed: int = 0, epoch: int = 10) -> Path:
    return root / "baseline" / "fashion-mnist" / f"seed{seed}" / f"epoch_{epoch:04d}.pt"


def store_of(path: Path, rows: list[ResultRow]) -> Path:
    with ResultsStore(path) as store:
        store.write_results(rows)
    return path


def frame_of(path: Path) -> pd.DataFrame:
    with ResultsStore(path, create=False) as store:
        return tidy(store.to_dataframe())


def test_copy_flag_says_in_words_which_number_crossed_its_threshold():
    assert neighbours.copy_flag({"authenticity": 0.12, "data_copying_ct": -8.34}) == "copies: AuthPct 0.12, C_T -8.3"
    assert neighbours.copy_flag({"authenticity": 0.59, "data_copying_ct": -3.5}) == "copies: AuthPct 0.59, C_T -3.5"
    assert neighbours.copy_flag({"authenticity": 0.59, "data_copying_ct": 2.0}) is None
    assert neighbours.copy_flag({"fid": 3.0}) is None


def test_rows_get_training_columns_the_gap_and_a_copy_flag(tmp_path, capsys):
    honest, copier = tmp_path / "honest", tmp_path / "copier"
    rows = []
    for root, fid_test, fid_train, auth, ct in ((honest, 9.0, 8.5, 0.61, 1.5), (copier, 6.0, 2.0, 0.05, -12.0)):
        for seed, shift in ((0, 0.0), (1, 0.2)):
            path = checkpoint_path(root, seed)
            rows += [result(path, "fid", fid_test + shift, TEST, seed=seed),
                     result(path, "fid", fid_train + shift / 2, SELECT, seed=seed),
                     result(path, "authenticity", auth, SELECT, seed=seed),
                     result(path, "data_copying_ct", ct + shift, SELECT, seed=seed)]
    store = store_of(tmp_path / "r.sqlite", rows)
    tables = build_tables(frame_of(store))
    neighbours.add_memorization(tables, frame_of(store))
    final = next(t for t in tables if t.rule == "final")
    assert final.metrics == ["fid", "fid_train", "fid_gap", "authenticity", "data_copying_ct"]
    by_group = {r.group: r for r in final.rows}
    honest_row = by_group[str(honest / "baseline" / "fashion-mnist")]
    copier_row = by_group[str(copier / "baseline" / "fashion-mnist")]
    assert copier_row.metrics["fid_train"].values == (2.0, 2.1)
    assert copier_row.metrics["fid_gap"].values == pytest.approx((4.0, 4.1))  # fid - fid_train, per seed
    assert honest_row.metrics["authenticity"].mean == pytest.approx(0.61) and honest_row.notes == []
    assert copier_row.notes == ["copies: AuthPct 0.05, C_T -11.9"]
    assert (honest_row.metrics["authenticity"].rank, copier_row.metrics["authenticity"].rank) == (1, 2)  # higher is better
    assert any(line.startswith("memorization: fid_train, fid_gap, authenticity, data_copying_ct are these checkpoints "
                               f"against the training-split reference {SELECT}") for line in final.notes)

    out = tmp_path / "reports"
    assert main(["report", "--results", str(store), "--out", str(out), "--no-plots", "--format", "markdown"]) == 0
    md = (out / "leaderboard.md").read_text()
    assert "| flags |" in md and "copies: AuthPct 0.05, C_T -11.9" in md and "memorization: fid_train" in md
    board = pd.read_csv(out / "leaderboard.csv")
    final_rows = board[board["rule"] == "final"].set_index("group")
    assert final_rows.loc[str(copier / "baseline" / "fashion-mnist"), "flags"] == "copies: AuthPct 0.05, C_T -11.9"
    assert final_rows.loc[str(honest / "baseline" / "fashion-mnist"), "fid_gap_mean"] == pytest.approx(0.55)
    assert {"fid_train_mean", "authenticity_mean", "mifid_mean", "data_copying_ct_rank"} <= set(board.columns)
    assert "copies: AuthPct 0.05" in capsys.readouterr().out


def test_without_training_split_results_the_table_says_so_in_one_line(tmp_path):
    store = store_of(tmp_path / "r.sqlite", [result(checkpoint_path(tmp_path), "fid", 5.0, TEST)])
    out = tmp_path / "reports"
    assert main(["report", "--results", str(store), "--out", str(out), "--no-plots"]) == 0
    md = (out / "leaderboard.md").read_text()
    assert ("- no generalization gap or memorization columns: these checkpoints have no results on a training-split "
            "reference (ganbench eval --reference DATASET:train[:N] --reference DATASET:test)\n") in md
    assert "flags" not in md and "fid_train" not in md


def test_nearest_neighbour_grids_are_regenerated_from_the_latest_checkpoint(tiny_data_root, tmp_path, monkeypatch):
    from ganbench.config import BaselineConfig
    from ganbench.train.loop import train_baseline

    monkeypatch.setenv("GANBENCH_CACHE", str(tmp_path / "cache"))
    run = train_baseline(BaselineConfig(dataset="fashion-mnist", epochs=1, batch_size=64, seed=0, max_train_images=128,
                                        checkpoint_every=1, device="cpu", out=str(tmp_path / "ck"),
                                        data_root=str(tiny_data_root)), progress=False)
    gone = checkpoint_path(tmp_path / "gone")
    store = store_of(tmp_path / "r.sqlite", [result(run / "epoch_0001.pt", "fid", 50.0, TEST, epoch=1),
                                             result(gone, "fid", 60.0, TEST)])
    real = neighbours.neighbour_grids
    monkeypatch.setattr(neighbours, "neighbour_grids", lambda *a, **k: real(*a, **k, data_root=tiny_data_root, samples=16))
    out = tmp_path / "reports"
    assert main(["report", "--results", str(store), "--out", str(out)]) == 0
    folder = out / slug(str(run.parent))
    names = sorted(p.name for p in folder.glob("neighbours_*.png"))
    assert names == ["neighbours_feature_seed0_epoch1.png", "neighbours_pixel_seed0_epoch1.png"]
    assert all((folder / n).read_bytes()[:4] == b"\x89PNG" for n in names)
    page = (out / "index.html").read_text()
    assert f"{folder.name}/neighbours_pixel_seed0_epoch1.png" in page
    assert "nearest training image beside each generated sample, pixel space (L2 on [0, 1] pixels), closest first" in page
    assert "L2 in lenet-fashion-mnist features" in page
    assert f"no nearest-neighbour grid: the checkpoint {gone} is no longer on disk" in page


def test_the_nearest_training_image_of_a_copy_is_itself(tiny_data_root, tmp_path, monkeypatch):
    from ganbench.data import load_dataset
    from ganbench.metrics.memorization import nearest_neighbours

    train = load_dataset("fashion-mnist", "train", tiny_data_root, log=False).images
    fake = train[[5, 17, 200]]
    drawn = {}
    monkeypatch.setattr(neighbours, "_images", lambda path, dataset, root, samples: (fake, train, train[:10]))
    monkeypatch.setattr("matplotlib.figure.Figure.savefig", lambda self, png, **k: drawn.setdefault("png", png))
    path = checkpoint_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    store = store_of(tmp_path / "r.sqlite", [result(path, "fid", 5.0, TEST)])
    frame = frame_of(store).assign(extractor="inception")
    pairs, notes = neighbours.neighbour_grids(frame, str(path.parent.parent), tmp_path)
    assert [name for _, name in pairs] == ["neighbours_pixel_seed0_epoch10.png"] and drawn["png"].name == pairs[0][1]
    assert notes == ["nearest neighbours in pixel space only: feature-space search over the training split needs a "
                     "lenet-* extractor (Inception over 60,000 images is too slow for a report)"]
    distance, index = nearest_neighbours(fake.flatten(1) / 255, train.flatten(1) / 255)
    assert distance.tolist() == [0.0, 0.0, 0.0] and index.tolist() == [5, 17, 200]


def test_a_zoo_models_grid_comes_from_its_latest_checkpoint_on_disk(tiny_data_root, tmp_path, monkeypatch):
    """Every zoo model gets its grid (its checkpoints load like the baseline's); an epoch scored during training
    without a checkpoint file (--eval-every) is passed over for the latest one on disk."""
    monkeypatch.setenv("GANBENCH_CACHE", str(tmp_path / "cache"))
    assert main(["train", "hinge", "--dataset", "fashion-mnist", "--data-root", str(tiny_data_root), "--out",
                 str(tmp_path / "ck"), "--max-train-images", "128", "--epochs", "1", "--device", "cpu", "--quiet"]) == 0
    run = tmp_path / "ck" / "hinge" / "fashion-mnist" / "seed0"

    def zoo_result(epoch: int, value: float) -> ResultRow:
        row = result(run / f"epoch_{epoch:04d}.pt", "fid", value, TEST, epoch=epoch)
        return ResultRow(**{**row.__dict__, "run": RunInfo(kind="hinge", dataset="fashion-mnist", seed=0, epoch=epoch,
                                                           step=epoch)})

    store = store_of(tmp_path / "r.sqlite", [zoo_result(1, 50.0), zoo_result(2, 40.0)])  # epoch 2: no file
    pairs, notes = neighbours.neighbour_grids(frame_of(store), str(run.parent), tmp_path, data_root=tiny_data_root,
                                              samples=16)
    assert [name for _, name in pairs] == ["neighbours_pixel_seed0_epoch1.png", "neighbours_feature_seed0_epoch1.png"]
    assert notes == [] and (tmp_path / pairs[0][1]).read_bytes()[:4] == b"\x89PNG"
