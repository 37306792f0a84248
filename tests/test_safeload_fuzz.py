"""safeload: whatever bytes a file holds, loading it gives its tensors or one CheckpointError line, and no message
repeats torch's advice to load with weights_only=False."""

import io
import os
import pickle
import random
import sys
from pathlib import Path

import pytest
import torch

from ganbench.errors import CheckpointError
from ganbench.safeload import _unpickler_detail, load_tensors
from ganbench.samples import load_user_generator

ADVICE = ("weights_only", "Re-running", "safe_globals", "allowlist", "trusted source")


def _assert_loads_or_refuses(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        load_tensors(path, "checkpoint")
    except CheckpointError as exc:
        message = str(exc)
        assert "\n" not in message and not any(a in message for a in ADVICE), (data[:40], message)


def test_random_bytes_load_or_raise_checkpoint_error(tmp_path):
    rng = random.Random(0)
    cases = [b"", b".", b"junk\n", b"PK\x03\x04", b"\x80\x02}q\x00."]
    for _ in range(300):
        prefix = rng.choice([b"", b"\x80\x02", b"\x80\x04", b"PK\x03\x04"])  # reach the unpickler and the zip reader
        cases.append(prefix + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 48))))
    for data in cases:
        _assert_loads_or_refuses(tmp_path / "f.pt", data)


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_truncated_and_bit_flipped_torch_files_load_or_raise_checkpoint_error(tmp_path, zip_format):
    buffer = io.BytesIO()
    torch.save({"w": torch.arange(6.0).reshape(2, 3), "n": 3, "s": "x", "l": [1, 2]}, buffer,
               _use_new_zipfile_serialization=zip_format)
    base = buffer.getvalue()
    assert load_tensors(_write(tmp_path / "ok.pt", base), "checkpoint")["n"] == 3
    rng = random.Random(1)
    for i in range(200):
        data = bytearray(base)
        if i % 3 == 0:
            data = data[: rng.randrange(len(data))]
        else:
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        _assert_loads_or_refuses(tmp_path / "f.pt", bytes(data))


def test_the_two_known_escapes_are_reported_as_corrupt(tmp_path):
    with pytest.raises(CheckpointError, match=r"junk\.pt is corrupt or truncated \(KeyError: \d+\)$"):
        load_tensors(_write(tmp_path / "junk.pt", b"junk\n"), "checkpoint")
    with pytest.raises(CheckpointError, match=r"dot\.pt is corrupt or truncated \(IndexError: pop from empty list\)$"):
        load_tensors(_write(tmp_path / "dot.pt", b"."), "checkpoint")


class _System:
    """Pickles as a call of os.system; never unpickled here except by torch's weights-only unpickler."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_carrying_file_is_refused_in_one_line_without_torchs_advice(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"generator": _System(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"^refused to load .*evil\.pt: it needs arbitrary unpickling, which could "
                                              r"run code \([^()]*GLOBAL (posix|nt)\.system[^()]*\)$") as caught:
        load_tensors(tmp_path / "evil.pt", "checkpoint")
    assert not any(a in str(caught.value) for a in ADVICE) and "\n" not in str(caught.value)
    (tmp_path / "evil2.pt").write_bytes(pickle.dumps({"x": _System(marker)}, protocol=2))  # a plain pickle, no zip
    with pytest.raises(CheckpointError, match="needs arbitrary unpickling") as caught:
        load_tensors(tmp_path / "evil2.pt", "checkpoint")
    assert not any(a in str(caught.value) for a in ADVICE)
    assert not marker.exists()


def test_user_generator_state_dict_goes_through_safeload(tmp_path, monkeypatch):
    module_name = "ganbench_safeload_fuzz_user_generator"
    (tmp_path / f"{module_name}.py").write_text(
        "import torch\n\ndef make():\n    return torch.nn.Linear(4, 784), 4\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module_name, raising=False)
    marker = tmp_path / "pwned"
    torch.save({"weight": _System(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"^refused to load .*evil\.pt: it needs arbitrary unpickling") as caught:
        load_user_generator(f"{module_name}:make", tmp_path / "evil.pt")
    assert not any(a in str(caught.value) for a in ADVICE) and "\n" not in str(caught.value)
    with pytest.raises(CheckpointError, match=r"state dict .*junk\.pt is corrupt or truncated \(KeyError"):
        load_user_generator(f"{module_name}:make", _write(tmp_path / "junk.pt", b"junk\n"))
    assert not marker.exists()
    torch.save(torch.nn.Linear(4, 784).state_dict(), tmp_path / "good.pt")
    module, latent_dim = load_user_generator(f"{module_name}:make", tmp_path / "good.pt")
    assert latent_dim == 4 and module.weight.shape == (784, 4)


@pytest.mark.parametrize("message, reason", [
    # torch 2.14
    ("Weights only load failed. In PyTorch 2.6, we changed the default value of the `weights_only` argument in "
     "`torch.load` from `False` to `True`. Re-running `torch.load` with `weights_only` set to `False` will likely "
     "succeed, but it can result in arbitrary code execution. Do it only if you got the file from a trusted source.\n\n\n"
     "Trying to load unsupported GLOBAL posix.system whose module posix is blocked.\n\nCheck the documentation of "
     "torch.load to learn more about types accepted by default with weights_only https://pytorch.org/docs/stable/"
     "generated/torch.load.html.", "Trying to load unsupported GLOBAL posix.system whose module posix is blocked."),
    # torch 2.6 - 2.8
    ("Weights only load failed. This file can still be loaded, to do so you have two options, \x1b[1mdo those steps "
     "only if you trust the source of the checkpoint\x1b[0m. \n\t(1) In PyTorch 2.6, we changed the default value of "
     "the `weights_only` argument in `torch.load` from `False` to `True`. Re-running `torch.load` with `weights_only` "
     "set to `False` will likely succeed, but it can result in arbitrary code execution. Do it only if you got the "
     "file from a trusted source.\n\t(2) Alternatively, to load with `weights_only=True` please check the recommended "
     "steps in the following error message.\n\tWeightsUnpickler error: Unsupported global: GLOBAL posix.system was "
     "not an allowed global by default. Please use `torch.serialization.add_safe_globals([system])` or the "
     "`torch.serialization.safe_globals([system])` context manager to allowlist this global if you trust this "
     "class/function.\n\nCheck the documentation of torch.load to learn more about types accepted by default with "
     "weights_only https://pytorch.org/docs/stable/generated/torch.load.html.",
     "Unsupported global: GLOBAL posix.system was not an allowed global by default."),
    # torch 2.1 - 2.4, no space after a full stop
    ("Weights only load failed. Re-running `torch.load` with `weights_only` set to `False` will likely succeed, but "
     "it can result in arbitrary code execution.Do it only if you get the file from a trusted source. "
     "WeightsUnpickler error: Unsupported operand 149", "Unsupported operand 149"),
    # a wording that only gives the advice
    ("Weights only load failed; load it with weights_only=False.", "unpickling refused"),
])
def test_unpickler_detail_keeps_the_reason_and_drops_the_advice(message, reason):
    assert _unpickler_detail(message) == reason


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
