"""Shared fixtures: tiny IDX datasets written by the tests, so training tests need no downloads."""

from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

import numpy as np
import pytest


def modes_bind_prefix() -> list[str]:
    """A command prefix under which file modes bind a subprocess even when the tests run as root (setpriv drops the
    capabilities that write through them; [] for another user); skips the test where that cannot be had."""
    import os
    import shutil

    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot make a folder read-only to this process")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    """Write a uint8 array in the IDX format (big-endian dims after the 0x0008 magic)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def make_idx_split(root: Path, split: str, n: int, seed: int, compress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    prefix = "train" if split == "train" else "t10k"
    write_idx(root / f"{prefix}-images-idx3-ubyte", images, compress)
    write_idx(root / f"{prefix}-labels-idx1-ubyte", labels, compress)
    return images, labels


@pytest.fixture
def tiny_data_root(tmp_path: Path) -> Path:
    """A --data-root with 256 random training and 64 test images (gzip IDX, like the real files)."""
    root = tmp_path / "data"
    root.mkdir()
    make_idx_split(root, "train", 256, seed=1)
    make_idx_split(root, "test", 64, seed=2)
    return root


def readme_python_block(marker: str) -> str:
    """The README's ```python block that contains `marker` (tests run the README's examples as written)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if marker in b]
    assert len(blocks) == 1, f"expected one README python block containing {marker!r}, found {len(blocks)}"
    return blocks[0]
