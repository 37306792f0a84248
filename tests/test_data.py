"""The IDX loader, dataset search order and the offline error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_idx_split, write_idx

from ganbench import data
from ganbench.errors import ConfigError, DataUnavailableError


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trips_written_files(tmp_path, compress):
    array = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    path = write_idx(tmp_path / "x-idx3-ubyte", array, compress=compress)
    np.testing.assert_array_equal(data.read_idx(path), array)


def test_read_idx_rejects_truncated_and_foreign_files(tmp_path):
    path = write_idx(tmp_path / "x-idx3-ubyte", np.zeros((4, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataUnavailableError, match="truncated or corrupt"):
        data.read_idx(path)
    (tmp_path / "junk").write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(DataUnavailableError, match="not an IDX file"):
        data.read_idx(tmp_path / "junk")


def test_damaged_idx_headers_and_gzip_bodies_are_one_line(tmp_path):
    # a header shorter than its dimensions raised struct.error, a corrupt gzip body zlib.error, an empty file said
    # "bad magic number )", and three 2**32-1 dimensions overflowed the byte count in the message
    import gzip

    good = write_idx(tmp_path / "x-idx3-ubyte", np.zeros((4, 28, 28), dtype=np.uint8)).read_bytes()
    cases = {
        "short-header": (good[:8], r"is truncated or corrupt: its header declares 3 dimensions"),
        "many-dims": (bytes([0, 0, 8, 255]) + b"\0" * 16, r"is truncated or corrupt: its header declares 255 dimensions"),
        "empty": (b"", r"is not an IDX file \(empty\)"),
        "huge": (bytes([0, 0, 8, 3]) + b"\xff" * 12, r"header says shape \(4294967295, 4294967295, 4294967295\) "
                                                     r"\(79228162458924105385300197375 bytes\)"),
    }
    for name, (content, pattern) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataUnavailableError, match=pattern):
            data.read_idx(tmp_path / name)
    body = bytearray(gzip.compress(good))
    body[40:60] = bytes(20)  # a damaged deflate stream, not a truncated one
    (tmp_path / "bad.gz").write_bytes(bytes(body))
    with pytest.raises(DataUnavailableError, match=r"cannot read IDX file .*bad\.gz"):
        data.read_idx(tmp_path / "bad.gz")


def test_idx_images_that_are_not_28x28_are_refused_before_training(tmp_path):
    # 32x32 IDX images passed the "(N, 28, 28)" check, which never looked at the size: training failed later
    # with a raw "Sizes of tensors must match" RuntimeError, leaving a config.json behind
    make_idx_split(tmp_path, "train", 10, seed=3)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((10, 32, 32), dtype=np.uint8))
    with pytest.raises(DataUnavailableError, match=r"expected uint8 images \(N, 28, 28\) and N labels, got images "
                                                   r"\(10, 32, 32\)"):
        data.load_dataset("fashion-mnist", "train", data_root=tmp_path)


def test_data_root_is_used_first_and_yields_uint8_nchw(tmp_path, capsys):
    images, labels = make_idx_split(tmp_path, "train", 10, seed=3)
    ds = data.load_dataset("fashion-mnist", "train", data_root=tmp_path)
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (10, 1, 28, 28)
    np.testing.assert_array_equal(ds.images[:, 0].numpy(), images)
    np.testing.assert_array_equal(ds.labels.numpy(), labels.astype(np.int64))
    assert str(tmp_path) in capsys.readouterr().err  # where the data came from goes to stderr


def test_torchvision_raw_layout_is_found(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    make_idx_split(raw, "test", 5, seed=4, compress=False)
    assert len(data.load_dataset("mnist", "test", data_root=tmp_path)) == 5


def test_fingerprint_identifies_the_data(tmp_path):
    make_idx_split(tmp_path, "train", 10, seed=5)
    ds = data.load_dataset("fashion-mnist", "train", data_root=tmp_path, log=False)
    assert ds.fingerprint() == ds.head(10).fingerprint() != ds.head(9).fingerprint()


@pytest.mark.skipif(not data.DEBIAN_FASHION_MNIST.is_dir(), reason="needs `apt-get install dataset-fashion-mnist`")
def test_debian_fashion_mnist_files(monkeypatch, tmp_path):
    monkeypatch.setenv("GANBENCH_DATA", str(tmp_path))  # nothing cached: the Debian files must be the source
    train = data.load_dataset("fashion-mnist", "train")
    test = data.load_dataset("fashion-mnist", "test")
    assert (len(train), len(test)) == (60000, 10000)
    assert train.source.endswith(str(data.DEBIAN_FASHION_MNIST))
    # Fashion-MNIST is balanced: 6,000 training and 1,000 test images per class.
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10


def test_offline_without_files_says_what_was_searched_and_how_to_fix(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: <urlopen error [Errno -3]>")

    monkeypatch.setattr(data, "_download_torchvision", offline)
    monkeypatch.setenv("GANBENCH_DATA", str(tmp_path))
    with pytest.raises(DataUnavailableError, match=r"mnist train not found \(looked in .*\) and the download failed") as err:
        data.load_dataset("mnist", "train")
    assert "--data-root" in str(err.value) and "fashion-mnist" in str(err.value)


def test_explicit_data_root_without_files_is_an_error(tmp_path):
    with pytest.raises(DataUnavailableError, match="no mnist test IDX files in --data-root"):
        data.load_dataset("mnist", "test", data_root=tmp_path)


def test_unknown_dataset_and_split():
    with pytest.raises(ConfigError, match="unknown dataset 'cifar'"):
        data.load_dataset("cifar")
    with pytest.raises(ConfigError, match="unknown split 'val'"):
        data.load_dataset("mnist", "val")


@pytest.mark.parametrize("exists", [False, True])
def test_a_data_root_without_the_files_never_falls_back_to_another_copy(tmp_path, monkeypatch, exists):
    # A copy elsewhere (the Debian package's folder, here a stand-in) must not be used when --data-root names another.
    elsewhere = tmp_path / "debian"
    elsewhere.mkdir()
    make_idx_split(elsewhere, "test", 5, seed=0)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", elsewhere)
    root = tmp_path / "mine"
    if exists:
        root.mkdir()
    pattern = "no fashion-mnist test IDX files in --data-root" if exists else "--data-root .*mine does not exist"
    with pytest.raises(DataUnavailableError, match=pattern):
        data.load_dataset("fashion-mnist", "test", data_root=root)
    assert len(data.load_dataset("fashion-mnist", "test", log=False)) == 5  # without --data-root the copy is found


# MNIST's published class counts (LeCun et al.'s files), and Fashion-MNIST's balance (Xiao et al. 2017).
MNIST_COUNTS = {"train": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
                "test": (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)}
FASHION_COUNTS = {"train": (6000,) * 10, "test": (1000,) * 10}


def _split_with_counts(root, split, counts):
    """IDX files named as both datasets name them, holding blank images with these class counts."""
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(10, dtype=np.uint8), counts))
    prefix = "train" if split == "train" else "t10k"
    write_idx(root / f"{prefix}-images-idx3-ubyte", np.zeros((len(labels), 28, 28), np.uint8))
    write_idx(root / f"{prefix}-labels-idx1-ubyte", labels)
    return root


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize(("asked", "held", "counts"), [("mnist", "Fashion-MNIST", FASHION_COUNTS),
                                                        ("fashion-mnist", "MNIST", MNIST_COUNTS)])
def test_one_datasets_files_are_never_read_as_the_others(tmp_path, split, asked, held, counts):
    # both datasets name their files train-images-idx3-ubyte.gz ...: `--dataset mnist --data-root <Fashion-MNIST>`
    # trained (and lenet-mnist trained its classifier) on Fashion-MNIST, recorded as MNIST
    root = _split_with_counts(tmp_path, split, counts[split])
    with pytest.raises(DataUnavailableError) as refused:
        data.load_dataset(asked, split, data_root=root, log=False)
    message = str(refused.value)
    assert f"holds {held} {split}" in message and "--data-root" in message and "\n" not in message, message
    own = {"MNIST": "mnist", "Fashion-MNIST": "fashion-mnist"}[held]
    assert len(data.load_dataset(own, split, data_root=root, log=False)) == sum(counts[split])


@pytest.mark.skipif(not data.DEBIAN_FASHION_MNIST.is_dir(), reason="needs `apt-get install dataset-fashion-mnist`")
def test_the_real_fashion_mnist_files_are_not_mnist():
    with pytest.raises(DataUnavailableError, match="holds Fashion-MNIST test"):
        data.load_dataset("mnist", "test", data_root=data.DEBIAN_FASHION_MNIST, log=False)
