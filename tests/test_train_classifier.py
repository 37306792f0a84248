"""`ganbench train classifier`: determinism, outputs through main(argv), and bad input as one line + exit 2."""

from __future__ import annotations

import json
import re

import pytest
import torch

from ganbench.cli import main
from ganbench.errors import ConfigError
from ganbench.features.lenet import build_lenet_fashion_mnist, file_sha256, load_lenet_weights
from ganbench.train.classifier import ClassifierConfig, train_classifier


def _tiny(out, **changes) -> ClassifierConfig:
    """One epoch on 512 real Fashion-MNIST images, accuracy on 256 test images: about a second."""
    options = {"dataset": "fashion-mnist", "epochs": 1, "batch_size": 64, "max_train_images": 512,
               "max_test_images": 256, "device": "cpu", "out": str(out)}
    return ClassifierConfig(**{**options, **changes})


def _run(args: list[str]) -> int:
    try:
        return main(args)
    except SystemExit as exited:
        return exited.code


def test_same_seed_gives_bit_identical_weights(tmp_path):
    rng_before = torch.get_rng_state()
    first = train_classifier(_tiny(tmp_path / "a.pt"), progress=False)
    second = train_classifier(_tiny(tmp_path / "b.pt"), progress=False)
    assert torch.equal(torch.get_rng_state(), rng_before), "training must not touch the caller's global RNG"
    assert first.sidecar["sha256"] == second.sidecar["sha256"]  # nothing time-dependent in the .pt
    a, b = (load_lenet_weights(p)["state_dict"] for p in (first.path, second.path))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    other = train_classifier(_tiny(tmp_path / "c.pt", seed=1), progress=False)
    assert other.sidecar["sha256"] != first.sidecar["sha256"]


def test_cli_writes_weights_and_sidecar_that_the_extractor_loads(tmp_path, capsys):
    out = tmp_path / "w" / "lenet.pt"
    args = ["train", "classifier", "--dataset", "fashion-mnist", "--epochs", "1", "--batch-size", "64",
            "--max-train-images", "512", "--max-test-images", "256", "--device", "cpu", "--out", str(out), "--quiet"]
    assert main(args) == 0
    assert re.search(r"lenet-fashion-mnist: test accuracy 0\.\d{4} on 256 test images", capsys.readouterr().out)
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["sha256"] == file_sha256(out)
    assert sidecar["command"] == (
        f"ganbench train classifier --dataset fashion-mnist --epochs 1 --batch-size 64 --max-train-images 512 "
        f"--max-test-images 256 --device cpu --out {out}"
    )
    assert (sidecar["seed"], sidecar["epochs"], sidecar["train_images"], sidecar["test_images"]) == (0, 1, 512, 256)
    assert sidecar["torch_version"] == str(torch.__version__) and 0.0 <= sidecar["test_accuracy"] <= 1.0
    state = torch.load(out, weights_only=True)
    assert state["test_accuracy"] == sidecar["test_accuracy"] and state["config"]["epochs"] == 1

    extractor = build_lenet_fashion_mnist(weights=out)
    assert extractor.weights_sha256 == sidecar["sha256"]


def test_default_out_is_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GANBENCH_CACHE", str(tmp_path / "cache"))
    assert ClassifierConfig(dataset="mnist").out_path == tmp_path / "cache" / "weights" / "lenet-mnist.pt"
    monkeypatch.delenv("GANBENCH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert ClassifierConfig().out_path == tmp_path / "xdg" / "ganbench" / "weights" / "lenet-fashion-mnist.pt"


@pytest.mark.parametrize(
    ("extra", "pattern"),
    [
        (["--epochs", "0"], r"--epochs must be at least 1, got 0"),
        (["--batch-size", "0"], r"--batch-size must be at least 1, got 0"),
        (["--seed", "-1"], r"--seed must be non-negative, got -1"),
        (["--max-train-images", "0"], r"--max-train-images must be at least 1, got 0"),
        (["--out", "weights.bin"], r"--out names the weights file and must end in \.pt, got 'weights\.bin'"),
        (["--max-train-images", "32"], r"--batch-size 128 is larger than --max-train-images 32; lower --batch-size"),
        (["--epochs", "two"], r"argument --epochs: invalid int value: 'two'"),
        (["--dataset", "cifar10"], r"argument --dataset: invalid choice: 'cifar10'"),
        (["--lr", "inf"], r"--lr must be a positive finite number, got inf"),  # it trained to NaN weights, exit 0
        (["--lr", "nan"], r"--lr must be a positive finite number, got nan"),
    ],
)
def test_bad_values_are_one_line_and_exit_2(extra, pattern, tmp_path, capsys):
    code = _run(["train", "classifier", "--out", str(tmp_path / "w.pt"), "--quiet", *extra])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ganbench: error: ") and "Traceback" not in err[0]
    assert re.search(pattern, err[0]), err[0]
    assert not (tmp_path / "w.pt").exists()


def test_config_validates_in_one_place():
    with pytest.raises(ConfigError, match=r"unknown device 'tpu'; expected one of auto, cpu, cuda \(--device\)"):
        ClassifierConfig(device="tpu")
    with pytest.raises(ConfigError, match=r"--lr must be a positive finite number, got 0"):
        ClassifierConfig(lr=0)


def test_help_has_examples(capsys):
    assert _run(["train", "classifier", "--help"]) == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "--out ganbench/features/weights/lenet-fashion-mnist.pt" in text
