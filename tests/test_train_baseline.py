"""The specified GAN, its training loop, determinism, exact resume and the safe checkpoint format."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from ganbench.config import BaselineConfig
from ganbench.errors import CheckpointError
from ganbench.train import checkpoint as ckpt
from ganbench.train.loop import train_baseline
from ganbench.train.models import images_to_model, make_discriminator, make_generator, model_to_images


def _layers(model: nn.Sequential) -> list[tuple]:
    out = []
    for m in model:
        if isinstance(m, nn.Linear):
            out.append(("Linear", m.in_features, m.out_features))
        elif isinstance(m, nn.LeakyReLU):
            out.append(("LeakyReLU", m.negative_slope))
        elif isinstance(m, nn.Dropout):
            out.append(("Dropout", m.p))
        else:
            out.append((type(m).__name__,))
    return out


def test_generator_matches_specification():
    g = make_generator()
    assert _layers(g) == [
        ("Linear", 100, 256), ("ReLU",), ("Linear", 256, 512), ("ReLU",),
        ("Linear", 512, 1024), ("ReLU",), ("Linear", 1024, 784), ("Tanh",),
    ]
    assert sum(p.numel() for p in g.parameters()) == 1_486_352


def test_discriminator_matches_specification():
    d = make_discriminator()
    assert _layers(d) == [
        ("Linear", 784, 1024), ("LeakyReLU", 0.2), ("Dropout", 0.3),
        ("Linear", 1024, 512), ("LeakyReLU", 0.2), ("Dropout", 0.3),
        ("Linear", 512, 256), ("LeakyReLU", 0.2), ("Dropout", 0.3),
        ("Linear", 256, 1), ("Sigmoid",),
    ]
    assert sum(p.numel() for p in d.parameters()) == 1_460_225


def test_image_scaling_round_trips_and_matches_tanh_range():
    images = torch.arange(256, dtype=torch.uint8).repeat(4)[:784 * 1].reshape(1, 1, 28, 28)
    flat = images_to_model(images)
    assert flat.min() == -1.0 and flat.max() == 1.0
    assert torch.equal(model_to_images(flat), images)


def _cfg(root: Path, out: Path, **overrides) -> BaselineConfig:
    values = dict(dataset="fashion-mnist", epochs=2, batch_size=64, seed=0, max_train_images=192,
                  checkpoint_every=1, device="cpu", out=str(out), data_root=str(root))
    values.update(overrides)
    return BaselineConfig(**values)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_training_changes_both_networks_and_writes_every_output(tiny_data_root, tmp_path):
    cfg = _cfg(tiny_data_root, tmp_path / "out", epochs=2, checkpoint_every=2)
    run = train_baseline(cfg, progress=False)
    assert run == tmp_path / "out" / "baseline" / "fashion-mnist" / "seed0"
    names = sorted(p.name for p in run.iterdir())
    assert names == ["config.json", "epoch_0002.png", "epoch_0002.pt", "history.csv", "loss_curve.png", "resume.pt"]
    state = torch.load(run / "epoch_0002.pt", weights_only=True)
    assert state["epoch"] == 2 and state["step"] == 2 * 3  # 192 images / batch 64 = 3 steps per epoch

    with torch.random.fork_rng():  # the initial weights of this seed, rebuilt the way the trainer builds them
        from ganbench.train.loop import TrainingState

        initial = TrainingState(cfg, torch.device("cpu"))
    for name, net in (("generator", initial.generator), ("discriminator", initial.discriminator)):
        for key, before in net.state_dict().items():
            assert not torch.equal(before, state[name][key]), f"{name}.{key} did not change"
    for row in state["history"]:
        assert all(torch.isfinite(torch.tensor(row[k])) for k in ("d_loss", "g_loss", "d_real", "d_fake"))
        assert 0.0 < row["d_real"] < 1.0 and 0.0 < row["d_fake"] < 1.0
    lines = (run / "history.csv").read_text().splitlines()
    assert lines[0] == "epoch,step,d_loss,g_loss,d_real,d_fake,seconds,images_per_s" and len(lines) == 3
    assert json.loads((run / "config.json").read_text())["betas"] == [0.9, 0.999]
    from PIL import Image

    with Image.open(run / "epoch_0002.png") as grid:  # 8x8 tiles of 28 px with 2 px padding
        assert grid.size == (8 * 30 + 2, 8 * 30 + 2)


def test_same_seed_gives_bit_identical_checkpoints_and_another_seed_does_not(tiny_data_root, tmp_path):
    a = train_baseline(_cfg(tiny_data_root, tmp_path / "a"), progress=False)
    b = train_baseline(_cfg(tiny_data_root, tmp_path / "b"), progress=False)
    c = train_baseline(_cfg(tiny_data_root, tmp_path / "c", seed=1), progress=False)
    assert _sha(a / "epoch_0002.pt") == _sha(b / "epoch_0002.pt")
    assert _sha(a / "epoch_0002.pt") != _sha(c / "epoch_0002.pt")


def test_resume_ends_with_exactly_the_weights_of_an_uninterrupted_run(tiny_data_root, tmp_path):
    full = train_baseline(_cfg(tiny_data_root, tmp_path / "full", epochs=3), progress=False)
    # "killed after epoch 1": a run that stopped there, continued with --resume to the same 3 epochs
    train_baseline(_cfg(tiny_data_root, tmp_path / "cut", epochs=1), progress=False)
    cut = train_baseline(_cfg(tiny_data_root, tmp_path / "cut", epochs=3), resume=True, progress=False)
    uninterrupted = torch.load(full / "epoch_0003.pt", weights_only=True)
    resumed = torch.load(cut / "epoch_0003.pt", weights_only=True)
    for name in ("generator", "discriminator"):
        for key, value in uninterrupted[name].items():
            assert torch.equal(value, resumed[name][key]), f"{name}.{key} differs after resume"
    assert uninterrupted["history"] == resumed["history"]
    assert len((cut / "history.csv").read_text().splitlines()) == 4  # header + 3 epochs, no duplicates


def test_checkpoint_refuses_arbitrary_unpickling(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = tmp_path / "evil.pt"
    torch.save({"format": ckpt.FORMAT, "payload": Exploit()}, evil)
    with pytest.raises(CheckpointError, match=r"needs arbitrary unpickling, which could run code \(.*GLOBAL"):
        ckpt.load_checkpoint(evil)
    assert not marker.exists()


def test_garbage_bytes_are_reported_as_corrupt_not_as_code(tmp_path):
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"garbage\.pt is corrupt or not a plain-tensor file; refused without "
                                              r"unpickling it \(Unsupported operand"):
        ckpt.load_checkpoint(tmp_path / "garbage.pt")


def test_truncated_and_foreign_checkpoints_are_reported(tmp_path, tiny_data_root):
    run = train_baseline(_cfg(tiny_data_root, tmp_path / "r", epochs=1), progress=False)
    data = (run / "epoch_0001.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        ckpt.load_checkpoint(tmp_path / "cut.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a ganbench checkpoint"):
        ckpt.load_checkpoint(tmp_path / "other.pt")
