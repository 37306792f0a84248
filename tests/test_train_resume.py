"""Training survives being killed anywhere and damaged files: --resume finishes every seed with the outputs an
uninterrupted run writes, and a corrupt or malformed checkpoint is one line, never a traceback."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import make_idx_split

from ganbench.cli import main
from ganbench.config import BaselineConfig
from ganbench.errors import CheckpointError
from ganbench.train import checkpoint as ckpt
from ganbench.train import loop
from ganbench.train.loop import train_baseline


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_idx_split(root, "train", 256, seed=1)
    make_idx_split(root, "test", 64, seed=2)
    return root


def _cfg(data_root: Path, out: Path, **overrides) -> BaselineConfig:
    values = dict(dataset="fashion-mnist", epochs=3, batch_size=64, seed=0, max_train_images=128,
                  checkpoint_every=1, device="cpu", out=str(out), data_root=str(data_root))
    values.update(overrides)
    return BaselineConfig(**values)


@pytest.fixture(scope="module")
def uninterrupted(data_root, tmp_path_factory) -> Path:
    """Three epochs in one go: the run every interrupted one must end up equal to."""
    return train_baseline(_cfg(data_root, tmp_path_factory.mktemp("full")), progress=False)


def _args(data_root: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "baseline", "--dataset", "fashion-mnist", "--data-root", str(data_root), "--out", str(out),
            "--max-train-images", "128", "--epochs", "2", "--quiet", *extra]


def _last_error(capsys, pattern: str) -> None:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("ganbench: error: ") and re.search(pattern, last), last


class Killed(BaseException):
    """Stands for kill -9: nothing after it runs, and no `except Exception` catches it."""


def _epoch_files(run: Path) -> list[str]:
    return sorted(p.name for p in run.glob("epoch_*"))


def _assert_same_outputs(run: Path, reference: Path) -> None:
    assert _epoch_files(run) == _epoch_files(reference)
    for pt in reference.glob("epoch_*.pt"):
        ours, theirs = torch.load(run / pt.name, weights_only=True), torch.load(pt, weights_only=True)
        assert ours["epoch"] == theirs["epoch"] and ours["history"] == theirs["history"]
        for net in ("generator", "discriminator"):
            for key, value in theirs[net].items():
                assert torch.equal(ours[net][key], value), f"{pt.name} {net}.{key}"
        # and byte for byte under the same config: the results store keys checkpoints by content, so equal values
        # in other bytes would be another source (a resumed run's optimiser state pickled its repeated keys apart)
        if ours["config"] == theirs["config"]:
            assert (run / pt.name).read_bytes() == pt.read_bytes(), f"{pt.name}: same values, other bytes"
    for grid in reference.glob("epoch_*.png"):
        assert (run / grid.name).read_bytes() == grid.read_bytes(), grid.name
    assert len((run / "history.csv").read_text().splitlines()) == 1 + 3


def _kill_writing(monkeypatch, name: str) -> None:
    if name.endswith(".png"):
        real = loop.save_sample_grid
        monkeypatch.setattr(loop, "save_sample_grid",
                            lambda images, path, **kw: _raise_if(path, name) or real(images, path, **kw))
    else:
        real = ckpt.save_checkpoint
        monkeypatch.setattr(ckpt, "save_checkpoint", lambda state, path: _raise_if(path, name) or real(state, path))


def _raise_if(path, name: str) -> None:
    if Path(path).name == name:
        raise Killed(name)


@pytest.mark.parametrize("killed_at", ["epoch_0002.pt", "epoch_0002.png", "files left out by an older ganbench"])
def test_a_kill_between_an_epochs_files_loses_nothing_after_resume(data_root, uninterrupted, tmp_path, monkeypatch,
                                                                    capsys, killed_at):
    if killed_at.startswith("epoch_"):
        with monkeypatch.context() as patch:
            _kill_writing(patch, killed_at)
            with pytest.raises(Killed):
                train_baseline(_cfg(data_root, tmp_path), progress=False)
    else:  # older versions wrote resume.pt first: a kill right after it left epoch 2's checkpoint and grid unwritten
        run = train_baseline(_cfg(data_root, tmp_path, epochs=2), progress=False)
        (run / "epoch_0002.pt").unlink()
        (run / "epoch_0002.png").unlink()
    capsys.readouterr()
    run = train_baseline(_cfg(data_root, tmp_path), resume=True, progress=False)
    _assert_same_outputs(run, uninterrupted)
    if killed_at != "epoch_0002.pt":  # that kill came before epoch 2 had a checkpoint: resume repeats the epoch
        assert re.search(r"wrote .*epoch_0002\.png", capsys.readouterr().err)


@pytest.mark.parametrize("junk", [b"junk\n", b"."])
def test_a_corrupt_resume_file_is_one_line_and_resume_skips_it(data_root, tmp_path, capsys, junk):
    run = tmp_path / "baseline" / "fashion-mnist" / "seed0"
    run.mkdir(parents=True)
    (run / "resume.pt").write_bytes(junk)
    assert main(_args(data_root, tmp_path)) == 2
    _last_error(capsys, r"seed0 already holds checkpoints; pass --resume")
    assert main(_args(data_root, tmp_path, "--resume", "--checkpoint-every", "1")) == 0  # nothing readable: from scratch
    err = capsys.readouterr().err
    assert re.search(r"--resume: skipping resume\.pt: checkpoint .*resume\.pt is corrupt", err) and "Traceback" not in err
    assert ckpt.load_checkpoint(run / "resume.pt")["epoch"] == 2
    # A damaged newer checkpoint beside a good older one: resume continues from the good one.
    (run / "epoch_0002.pt").write_bytes(junk)
    (run / "resume.pt").write_bytes(junk)
    assert main(_args(data_root, tmp_path, "--resume")) == 0
    assert "resuming" in (err := capsys.readouterr().err) and "after epoch 1" in err
    assert ckpt.load_checkpoint(run / "epoch_0002.pt")["epoch"] == 2


def test_resume_finishes_every_seed_of_an_interrupted_seeds_call(data_root, uninterrupted, tmp_path, capsys):
    base = tmp_path / "baseline" / "fashion-mnist"
    full = _args(data_root, tmp_path, "--seeds", "0,1", "--checkpoint-every", "1")
    full[full.index("--epochs") + 1] = "3"
    # Killed during seed 0's third epoch: seed 0 has two epochs, seed 1 nothing.
    assert main(_args(data_root, tmp_path, "--seed", "0", "--checkpoint-every", "1")) == 0
    assert main(full) == 2
    _last_error(capsys, r"seed0 already holds checkpoints; pass --resume")
    assert main([*full, "--resume"]) == 0
    err = capsys.readouterr().err
    assert "resuming" in err and err.count("training it from the start") == 1
    assert sorted(p.name for p in base.iterdir()) == ["seed0", "seed1"]
    _assert_same_outputs(base / "seed0", uninterrupted)
    # Run again: every seed is finished, so each is skipped with a note and nothing is rewritten.
    before = {p: p.stat().st_mtime_ns for p in base.rglob("*")}
    assert main([*full, "--resume"]) == 0
    assert capsys.readouterr().err.count("already completed 3 epochs (--epochs 3); skipped it") == 2
    assert {p: p.stat().st_mtime_ns for p in base.rglob("*")} == before


def test_a_plain_rerun_refuses_before_training_any_seed(data_root, tmp_path, capsys):
    assert main(_args(data_root, tmp_path, "--seed", "1")) == 0
    assert main(_args(data_root, tmp_path, "--seeds", "0,1")) == 2
    _last_error(capsys, r"seed1 already holds checkpoints; pass --resume")
    assert not (tmp_path / "baseline" / "fashion-mnist" / "seed0").exists()


@pytest.fixture(scope="module")
def good_checkpoint(data_root, tmp_path_factory) -> Path:
    return train_baseline(_cfg(data_root, tmp_path_factory.mktemp("one"), epochs=1), progress=False) / "epoch_0001.pt"


def _set(state: dict, where: str, value) -> None:
    """state[a][b][c] = value for where "a/b/c" (digits index optimizer states, whose keys are ints)."""
    *parents, last = [int(key) if key.isdigit() else key for key in where.split("/")]
    for key in parents:
        state = state[key]
    if value is _DELETE:
        del state[last]
    else:
        state[last] = value


_DELETE = object()


@pytest.mark.parametrize(
    ("field", "value", "pattern"),
    [
        ("config", [1, 2], r"config is list, expected a dict"),
        ("config/latent_dim", -5, r"config\.latent_dim is -5, expected an integer in 1\.\.65536"),
        ("config/latent_dim", 10**9, r"config\.latent_dim is 1000000000, expected an integer in 1\.\.65536"),
        ("config/latent_dim", "100", r"config\.latent_dim is '100', expected an integer"),
        ("config/seed", 2**63, r"config\.seed is 9223372036854775808, expected an integer in 0\.\.9223372036854775807"),
        ("epoch", 1.5, r"epoch is 1\.5, expected an integer in 0\.\."),
        ("epoch", -1, r"epoch is -1, expected an integer"),
        ("epoch", True, r"epoch is True, expected an integer"),
        ("step", "3", r"step is '3', expected an integer"),
        ("dataset", _DELETE, r"lacks dataset"),
        ("dataset", "fashion-mnist", r"dataset is 'fashion-mnist', expected a dict"),
        ("dataset/name", 7, r"dataset\.name is 7, expected one of mnist, fashion-mnist"),
        ("dataset/fingerprint", None, r"dataset\.fingerprint is None, expected a string"),
        ("generator", {}, r"generator is dict, expected a non-empty state_dict of tensors"),
        ("generator", {"0.weight": [1.0]}, r"generator is dict, expected a non-empty state_dict of tensors"),
        ("discriminator", "weights", r"discriminator is 'weights', expected a non-empty state_dict"),
        ("optimizer_g", {"state": 1}, r"optimizer_g is dict, expected an optimizer state_dict"),
        ("rng", {"torch_cpu": 5}, r"rng\.torch_cpu is 5, expected a uint8 generator state"),
        ("fixed_noise", torch.zeros(64, 7), r"fixed_noise is Tensor, expected float32 noise of shape \(N, 100\)"),
        ("history", [{"epoch": 1}], r"history step is None, expected an integer"),
        ("format_version", "1", r"format_version is '1', expected an integer"),
        ("kind", None, r"kind is None, expected a string"),
    ],
)
def test_malformed_fields_are_checkpoint_errors_naming_the_field(good_checkpoint, tmp_path, field, value, pattern):
    state = torch.load(good_checkpoint, weights_only=True)
    _set(state, field, value)
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match=pattern):
        ckpt.load_checkpoint(bad)


def _run_with_resume_file(run: Path, good_checkpoint: Path, field: str, value) -> None:
    run.mkdir(parents=True)
    state = torch.load(good_checkpoint, weights_only=True)
    _set(state, field, value)
    torch.save(state, run / "resume.pt")


@pytest.mark.parametrize(
    ("field", "value", "pattern"),
    [
        ("epoch", "1", r"epoch is '1', expected an integer"),
        ("optimizer_d", _DELETE, r"lacks optimizer_d, which --resume needs"),
        ("rng/noise", _DELETE, r"lacks rng\.noise, which --resume needs"),
        ("history", [], r"its history does not hold one row for each of epochs 1\.\.1"),
        ("config/batch_size", "64", r"holds an invalid config \(.*'<' not supported"),
    ],
)
def test_a_resume_file_that_cannot_be_continued_is_skipped_for_an_older_checkpoint(data_root, good_checkpoint, tmp_path,
                                                                                   capsys, field, value, pattern):
    run = tmp_path / "baseline" / "fashion-mnist" / "seed0"
    _run_with_resume_file(run, good_checkpoint, field, value)
    shutil.copy(good_checkpoint, run / "epoch_0001.pt")
    assert main(_args(data_root, tmp_path, "--resume")) == 0
    err = capsys.readouterr().err
    assert re.search(r"--resume: skipping resume\.pt: checkpoint .*resume\.pt:? " + pattern, err), err
    assert re.search(r"wrote epoch_0001\.png, resume\.pt of epoch 1.*\n.*resuming .* after epoch 1", err), err
    assert ckpt.load_checkpoint(run / "resume.pt")["epoch"] == 2


@pytest.mark.parametrize(
    ("field", "value", "pattern"),
    [
        ("rng/shuffle", torch.zeros(3, dtype=torch.uint8), r"does not fit this run \(.*\); delete it"),
        ("generator/0.weight", torch.zeros(3, 3), r"does not fit this run \(.*size mismatch"),
        ("optimizer_g/state/0/exp_avg", torch.zeros(2), r"does not fit this run \(optimizer_g exp_avg has shape \(2,\)"),
    ],
)
def test_a_resume_state_that_does_not_fit_the_networks_is_refused_in_one_line(data_root, good_checkpoint, tmp_path,
                                                                              capsys, field, value, pattern):
    _run_with_resume_file(tmp_path / "baseline" / "fashion-mnist" / "seed0", good_checkpoint, field, value)
    assert main(_args(data_root, tmp_path, "--resume")) == 2
    _last_error(capsys, r"resume\.pt" + r".*" + pattern)



def test_resume_never_trains_over_checkpoints_it_cannot_continue(data_root, tmp_path, capsys):
    # every checkpoint skipped (a newer format; no optimiser state): --resume trained from scratch over them, exit 0,
    # and the originals were gone
    assert main(_args(data_root, tmp_path, "--checkpoint-every", "1")) == 0
    run = tmp_path / "baseline" / "fashion-mnist" / "seed0"
    (run / "resume.pt").unlink()
    for path in run.glob("epoch_*.pt"):
        state = torch.load(path, weights_only=True)
        torch.save({k: v for k, v in state.items() if k not in ("optimizer_g", "optimizer_d", "discriminator")}, path)
    before = {p.name: p.read_bytes() for p in run.glob("epoch_*.pt")}
    capsys.readouterr()
    assert main(_args(data_root, tmp_path, "--resume", "--epochs", "3")) == 2
    _last_error(capsys, r"--resume: .*seed0 holds checkpoints none of which can be continued .*; training from the "
                        r"start would overwrite them: move them away or choose another --out")
    assert {p.name: p.read_bytes() for p in run.glob("epoch_*.pt")} == before


def test_a_folder_under_a_checkpoints_name_is_called_a_folder(tmp_path):
    # the --resume note said "does not exist" of a folder named epoch_0002.pt
    (tmp_path / "epoch_0002.pt").mkdir()
    with pytest.raises(CheckpointError, match=r"epoch_0002\.pt is a folder, not a checkpoint file"):
        ckpt.load_checkpoint(tmp_path / "epoch_0002.pt")
    with pytest.raises(CheckpointError, match=r"nope\.pt does not exist"):
        ckpt.load_checkpoint(tmp_path / "nope.pt")


def test_a_run_resumed_with_fewer_epochs_ending_where_it_stopped_gets_its_final_checkpoint(data_root, tmp_path, capsys):
    # Interrupted after epoch 1 of --epochs 3 --checkpoint-every 2 (only resume.pt on disk), then resumed with
    # --epochs 1: "already completed; skipped", and no checkpoint at all (eval found none). The last epoch always
    # gets one: the files of an uninterrupted --epochs 1 run.
    with pytest.raises(Killed):
        with pytest.MonkeyPatch.context() as patch:
            real = loop._write_epoch_outputs

            def stop_after_first(state, *args, **kwargs):
                real(state, *args, **kwargs)
                if state.epoch == 1:
                    raise Killed("after epoch 1")

            patch.setattr(loop, "_write_epoch_outputs", stop_after_first)
            train_baseline(_cfg(data_root, tmp_path / "cut", checkpoint_every=2), progress=False)
    run = train_baseline(_cfg(data_root, tmp_path / "cut", epochs=1), resume=True, progress=False)
    alone = train_baseline(_cfg(data_root, tmp_path / "alone", epochs=1), progress=False)
    assert _epoch_files(run) == _epoch_files(alone) == ["epoch_0001.png", "epoch_0001.pt"]
    assert (run / "epoch_0001.pt").read_bytes() == (alone / "epoch_0001.pt").read_bytes()


def test_checkpoint_bytes_do_not_depend_on_where_the_data_was_read_or_how_the_device_was_named(data_root, tmp_path,
                                                                                                uninterrupted):
    # The checkpoint's config kept --data-root and --device as typed: the same weights from a symlinked data folder,
    # or with --device auto on a CPU, were other bytes, so other sources in the results store; and a run resumed
    # with another spelling of its data folder did not end in the uninterrupted run's bytes.
    link = tmp_path / "link"
    link.symlink_to(data_root)
    other = train_baseline(_cfg(link, tmp_path / "other", device="auto"), progress=False)
    for pt in uninterrupted.glob("epoch_*.pt"):
        assert (other / pt.name).read_bytes() == pt.read_bytes(), pt.name
    train_baseline(_cfg(data_root, tmp_path / "resumed", epochs=2), progress=False)
    resumed = train_baseline(_cfg(link, tmp_path / "resumed"), resume=True, progress=False)
    assert (resumed / "epoch_0003.pt").read_bytes() == (uninterrupted / "epoch_0003.pt").read_bytes()


def test_a_resume_under_another_cpu_thread_count_says_its_bits_will_differ(data_root, tmp_path, capsys):
    # dcgan's convolutions round differently with another thread count (a helper measured max |dW| 0.02 after two
    # epochs): a resume that changes it cannot be bit-identical, and nothing said so
    import json

    run = train_baseline(_cfg(data_root, tmp_path, epochs=1), progress=False)
    config = json.loads((run / "config.json").read_text())
    assert config["torch_threads"] == torch.get_num_threads()
    (run / "config.json").write_text(json.dumps({**config, "torch_threads": torch.get_num_threads() + 7}))
    capsys.readouterr()
    train_baseline(_cfg(data_root, tmp_path, epochs=2), resume=True, progress=False)
    assert f"was trained with {torch.get_num_threads() + 7} CPU threads and resumes with" in capsys.readouterr().err


def test_resume_refuses_a_later_seeds_other_config_before_training_any_seed(data_root, tmp_path, capsys):
    # --resume --seeds 0,1 trained seed 0 on and only then found that seed 1 was trained with another batch size;
    # a fresh run's refusals already come before the first seed trains
    assert main(_args(data_root, tmp_path, "--epochs", "1", "--seed", "0", "--batch-size", "64")) == 0
    assert main(_args(data_root, tmp_path, "--epochs", "1", "--seed", "1", "--batch-size", "32")) == 0
    capsys.readouterr()
    assert main(_args(data_root, tmp_path, "--epochs", "2", "--seeds", "0,1", "--batch-size", "64", "--resume")) == 2
    _last_error(capsys, r"seed1/.* was trained with a different config \(batch_size: checkpoint 32 vs now 64\)")
    assert not (tmp_path / "baseline" / "fashion-mnist" / "seed0" / "epoch_0002.pt").exists()
