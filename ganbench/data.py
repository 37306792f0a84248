"""Datasets -> uint8 image tensors.

Every dataset leaves this module in one shape: `images` uint8 NCHW (N, 1, 28, 28) with values
0..255, `labels` int64 (N,), and a human-readable `source`. Scaling to [-1, 1] for the GAN or
resizing for a feature extractor happens downstream, so there is one input contract.

Where the files come from, in order:
1. `--data-root DIR` (IDX files, `.gz` or not, in DIR or in torchvision's DIR/<Name>/raw layout);
2. for fashion-mnist, the Debian package `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist);
3. torchvision's own dataset class and downloader, into the ganbench data cache.
Debian recompressed its `.gz` files, so their MD5s differ from the ones torchvision checks; we
therefore read IDX files directly (about 0.2 s for both splits) instead of handing them to torchvision.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ganbench.errors import ConfigError, DataUnavailableError, one_line
from ganbench.protocol import DATASETS, SPLITS

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

# torchvision class name (also its folder name under root) for each dataset.
_TORCHVISION_CLASS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_IDX_PREFIX = {"train": "train", "test": "t10k"}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_DISPLAY = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}
# Both datasets name their IDX files alike, so a folder of one passes for the other. Their class counts tell them
# apart: MNIST's published ones, and Fashion-MNIST's exact balance. Files recognised as the other dataset are refused;
# any other counts (a user's own IDX data, the tests' small sets) are read as named.
_CLASS_COUNTS = {
    ("mnist", "train"): (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
    ("mnist", "test"): (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
    ("fashion-mnist", "train"): (6000,) * 10,
    ("fashion-mnist", "test"): (1000,) * 10,
}


@dataclass(frozen=True)
class ImageDataset:
    """A whole split in memory. images: uint8 (N, 1, 28, 28); labels: int64 (N,)."""

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    source: str

    def __len__(self) -> int:
        return self.images.shape[0]

    def fingerprint(self) -> str:
        """sha256 of the image and label bytes: identifies exactly which data a model saw."""
        digest = hashlib.sha256()
        digest.update(self.images.numpy().tobytes())
        digest.update(self.labels.numpy().tobytes())
        return digest.hexdigest()

    def head(self, n: int | None) -> ImageDataset:
        """The first `n` items (all when n is None)."""
        if n is None or n >= len(self):
            return self
        return ImageDataset(self.name, self.split, self.images[:n], self.labels[:n], self.source)

    def subset(self, n: int, seed: int) -> ImageDataset:
        """A fixed random subset of `n` items (all when n >= len), chosen by `seed`, in the split's order."""
        if n >= len(self):
            return self
        keep = np.sort(np.random.default_rng(seed).choice(len(self), size=n, replace=False))
        index = torch.from_numpy(keep)
        return ImageDataset(self.name, self.split, self.images[index], self.labels[index], f"{self.source} (subset)")


def default_data_cache() -> Path:
    """Where torchvision downloads go: $GANBENCH_DATA, else ~/.cache/ganbench/datasets."""
    env = os.environ.get("GANBENCH_DATA")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ganbench" / "datasets"


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into a numpy array of its stored shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as exc:  # zlib.error: a damaged deflate stream inside a .gz
        raise DataUnavailableError(f"cannot read IDX file {path}: {exc}") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataUnavailableError(f"{path} is not an IDX file ({f'bad magic number {data[:4].hex()}' if data else 'empty'})")
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataUnavailableError(f"{path} is truncated or corrupt: its header declares {ndim} dimensions, "
                                   f"{header} bytes, but the file holds {len(data)}")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = math.prod(shape) * dtype.itemsize  # Python integers: no overflow for a corrupt header
    if len(data) - header != expected:
        raise DataUnavailableError(
            f"{path} is truncated or corrupt: header says shape {shape} ({expected} bytes), "
            f"file holds {len(data) - header} bytes"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def _find_idx_pair(directory: Path, name: str, split: str) -> tuple[Path, Path] | None:
    """The (images, labels) IDX files for a split in `directory` or its torchvision layout."""
    prefix = _IDX_PREFIX[split]
    for folder in (directory, directory / _TORCHVISION_CLASS[name] / "raw"):
        pair = []
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
            found = next(
                (folder / f"{prefix}-{kind}{ext}" for ext in ("", ".gz") if (folder / f"{prefix}-{kind}{ext}").is_file()),
                None,
            )
            pair.append(found)
        if all(pair):
            return pair[0], pair[1]
    return None


def _load_idx_pair(name: str, split: str, images_path: Path, labels_path: Path) -> ImageDataset:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if (images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8 or labels.ndim != 1
            or len(images) != len(labels)):
        raise DataUnavailableError(
            f"{images_path} / {labels_path}: expected uint8 images (N, 28, 28) and N labels, "
            f"got images {images.shape} {images.dtype} and labels {labels.shape}"
        )
    _check_not_the_other_dataset(name, split, labels, images_path.parent)
    return ImageDataset(
        name=name,
        split=split,
        images=torch.from_numpy(images.copy()).unsqueeze(1),
        labels=torch.from_numpy(labels.astype(np.int64)),
        source=f"IDX files {images_path.parent}",
    )


def _check_not_the_other_dataset(name: str, split: str, labels: np.ndarray, folder: Path) -> None:
    if labels.size == 0 or labels.min() < 0 or labels.max() > 9:
        return
    counts = tuple(int(c) for c in np.bincount(labels.astype(np.int64), minlength=10))
    for other in DATASETS:
        if other != name and counts == _CLASS_COUNTS.get((other, split)):
            raise DataUnavailableError(
                f"{folder} holds {_DISPLAY[other]} {split} (its class counts), not {_DISPLAY[name]}: the two datasets' "
                f"IDX files have the same names; point --data-root at {_DISPLAY[name]}'s files"
            )


def _download_torchvision(name: str, split: str, root: Path) -> ImageDataset:
    """torchvision's dataset class and downloader: the real code path for users who are online."""
    import torchvision

    cls = getattr(torchvision.datasets, _TORCHVISION_CLASS[name])
    ds = cls(root=str(root), train=(split == "train"), download=True)
    return ImageDataset(
        name=name,
        split=split,
        images=ds.data.to(torch.uint8).unsqueeze(1).contiguous(),
        labels=ds.targets.to(torch.int64),
        source=f"torchvision {cls.__name__} in {root}",
    )


def load_dataset(name: str, split: str = "train", data_root: str | Path | None = None, log=True) -> ImageDataset:
    """Load a whole split as uint8 tensors, saying on stderr where it came from."""
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)} (--dataset)")
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r} for {name}; expected one of {', '.join(SPLITS)}")

    searched: list[Path] = []
    candidates: list[Path] = []
    cache = default_data_cache()
    if data_root is not None:
        # An explicit --data-root is the only place looked in: silently using another copy of the data would
        # train or score on files the user did not name.
        if not Path(data_root).is_dir():
            raise DataUnavailableError(f"--data-root {data_root} does not exist or is not a folder")
        candidates.append(Path(data_root))
    else:
        if name == "fashion-mnist":
            candidates.append(DEBIAN_FASHION_MNIST)
        candidates.append(cache)  # files torchvision downloaded earlier are plain IDX files too

    for directory in candidates:
        searched.append(directory)
        pair = _find_idx_pair(directory, name, split)
        if pair is not None:
            dataset = _load_idx_pair(name, split, *pair)
            if log:
                print(f"ganbench: {name} {split} ({len(dataset)} images) from {dataset.source}", file=sys.stderr)
            return dataset

    if data_root is not None:
        # An explicit --data-root that lacks the files is a mistake worth stopping on, not downloading around.
        raise DataUnavailableError(
            f"no {name} {split} IDX files in --data-root {data_root}: expected "
            f"{_IDX_PREFIX[split]}-images-idx3-ubyte[.gz] and {_IDX_PREFIX[split]}-labels-idx1-ubyte[.gz] "
            f"there or in {Path(data_root) / _TORCHVISION_CLASS[name] / 'raw'}"
        )
    try:
        dataset = _download_torchvision(name, split, cache)
    except Exception as exc:  # torchvision raises RuntimeError/URLError/OSError depending on what failed
        reason = one_line(exc, 200)
        fixes = [
            "connect to the internet once so torchvision can download it",
            f"or pass --data-root DIR with {_IDX_PREFIX[split]}-images-idx3-ubyte[.gz] and "
            f"{_IDX_PREFIX[split]}-labels-idx1-ubyte[.gz]",
        ]
        if name == "fashion-mnist":
            fixes.append("or `apt-get install dataset-fashion-mnist` (Debian)")
        else:
            fixes.append("or use --dataset fashion-mnist (`apt-get install dataset-fashion-mnist` on Debian)")
        raise DataUnavailableError(
            f"{name} {split} not found (looked in {', '.join(map(str, searched))}) and the download failed "
            f"({reason}); fix: {'; '.join(fixes)}"
        ) from exc
    if log:
        print(f"ganbench: {name} {split} ({len(dataset)} images) from {dataset.source}", file=sys.stderr)
    return dataset
