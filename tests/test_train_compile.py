"""`ganbench train baseline --compile`: the flag reaches the config, training runs through torch.compile'd G and D
with finite losses and plain checkpoints, and a compiler failure is one line naming the flag.

Inductor's C++ code generation takes over a minute on a busy 2-core CPU, so these tests compile with Dynamo's
"eager" backend: the same graph capture, guards and recompiles, without code generation. Inductor itself is
exercised by bench/gpu.py.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch

from ganbench.cli import main
from ganbench.config import BaselineConfig
from ganbench.train import loop


def _train(root: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "baseline", "--dataset", "fashion-mnist", "--data-root", str(root), "--out", str(out),
            "--max-train-images", "96", "--batch-size", "64", "--epochs", "1", "--quiet", *extra]


# Dynamo reads .grad of the non-leaf tensors it traces (a torch-internal UserWarning, harmless); the suite makes
# warnings errors, and Dynamo would report it as a compile failure.
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning")
def test_compile_trains_one_epoch_with_finite_losses_and_plain_checkpoints(tiny_data_root, tmp_path, monkeypatch):
    calls = []
    original = torch.compile

    def eager_compile(module, **kwargs):
        calls.append(type(module).__name__)
        return original(module, backend="eager", **kwargs)

    monkeypatch.setattr(torch, "compile", eager_compile)
    torch._dynamo.reset()
    assert main(_train(tiny_data_root, tmp_path / "out", "--compile")) == 0
    assert calls == ["Sequential", "Sequential"]  # G and D
    state = torch.load(tmp_path / "out/baseline/fashion-mnist/seed0/epoch_0001.pt", weights_only=True)
    assert all(math.isfinite(state["history"][-1][k]) for k in ("d_loss", "g_loss"))
    assert not any(key.startswith("_orig_mod") for key in state["generator"])  # the plain module's state dict
    assert state["config"]["compile"] is True


def test_compile_is_off_by_default_and_does_not_change_the_training_identity():
    assert BaselineConfig().compile is False
    assert BaselineConfig(compile=True).training_identity() == BaselineConfig().training_identity()


def test_a_compiler_failure_names_the_flag(tiny_data_root, tmp_path, monkeypatch, capsys):
    def broken_backend(graph, example_inputs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=broken_backend))
    torch._dynamo.reset()
    assert main(_train(tiny_data_root, tmp_path / "out", "--compile")) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("ganbench: error: --compile: torch.compile failed here") and "without --compile" in err


def test_torch_compile_unavailable_is_a_config_error(monkeypatch):
    def unavailable(module, **kwargs):
        raise RuntimeError("Dynamo is not supported on Python 3.99+")

    monkeypatch.setattr(torch, "compile", unavailable)
    with pytest.raises(Exception, match=r"^--compile: torch.compile is unavailable \(Dynamo is not supported"):
        loop.compiled(torch.nn.Linear(1, 1))


def test_cuda_graphs_are_refused_with_compile_or_without_cuda(tiny_data_root, tmp_path, capsys):
    assert main(_train(tiny_data_root, tmp_path / "a", "--compile", "--cuda-graphs")) == 2
    assert "--compile and --cuda-graphs are alternatives; choose one" in capsys.readouterr().err
    assert main(_train(tiny_data_root, tmp_path / "b", "--cuda-graphs", "--device", "cpu")) == 2
    assert "--cuda-graphs needs a CUDA device; drop it or use --device cuda" in capsys.readouterr().err
    if not torch.cuda.is_available():  # --device auto resolves to the CPU here
        assert main(_train(tiny_data_root, tmp_path / "c", "--cuda-graphs")) == 2
        assert "--cuda-graphs needs a CUDA device, and none is available here" in capsys.readouterr().err
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").rglob("*.pt"))
