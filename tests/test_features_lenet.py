"""The lenet-* extractors: the shipped weights, the input contract, invariants, and the offline MNIST path."""

from __future__ import annotations

import json

import pytest
import torch

import ganbench.data
from ganbench.data import load_dataset
from ganbench.errors import CheckpointError, ConfigError, DataUnavailableError
from ganbench.features import build_extractor
from ganbench.features.lenet import (
    FEATURE_DIM,
    PACKAGE_WEIGHTS_DIR,
    build_lenet_fashion_mnist,
    file_sha256,
)
from ganbench.train.classifier import ClassifierConfig, lenet_mnist_trained_on_first_use, train_classifier

SHIPPED = PACKAGE_WEIGHTS_DIR / "lenet-fashion-mnist.pt"


@pytest.fixture(scope="module")
def extractor():
    return build_extractor("lenet-fashion-mnist")


@pytest.fixture(scope="module")
def test_images():
    data = load_dataset("fashion-mnist", "test", log=False)
    return data.images[:2000], data.labels[:2000]


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """No real cache, no real data cache, and no downloads, whether or not this machine is online."""
    monkeypatch.setenv("GANBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GANBENCH_DATA", str(tmp_path / "data-cache"))

    def offline(name, split, root):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz (network is unreachable)")

    monkeypatch.setattr(ganbench.data, "_download_torchvision", offline)
    return tmp_path / "cache" / "weights"


def test_shipped_weights_load_safely_and_match_their_sidecar(extractor):
    state = torch.load(SHIPPED, weights_only=True)
    assert state["format"] == "ganbench.lenet" and state["dataset"] == "fashion-mnist"
    sidecar = json.loads(SHIPPED.with_suffix(".json").read_text())
    assert sidecar["sha256"] == file_sha256(SHIPPED) == extractor.weights_sha256
    assert sidecar["command"].startswith("ganbench train classifier --dataset fashion-mnist")
    assert sidecar["command"].endswith("--out ganbench/features/weights/lenet-fashion-mnist.pt")
    assert sidecar["test_images"] == 10000 and sidecar["test_accuracy"] >= 0.91
    assert sidecar["test_accuracy"] == state["test_accuracy"]
    assert {"seed", "epochs", "torch_version", "date"} <= sidecar.keys()
    assert SHIPPED.stat().st_size < 2_000_000
    assert extractor.protocol == {
        "extractor": "lenet-fashion-mnist", "preprocessing": "lenet-28-gray-unit", "weights_sha256": sidecar["sha256"],
        "rgb_to_gray": "bt601-round",
    }


def test_shipped_classifier_is_accurate_on_real_test_images(extractor, test_images):
    images, labels = test_images
    accuracy = (extractor.predict(images) == labels).double().mean().item()
    assert accuracy >= 0.90


def test_output_shapes_and_determinism(extractor, test_images):
    images = test_images[0][:64]
    out = extractor(images)
    assert out.features.shape == (64, FEATURE_DIM) and out.features.dtype == torch.float32
    assert out.logits.shape == (64, 10) and out.logits.dtype == torch.float32
    assert extractor.feature_dim == FEATURE_DIM and extractor.num_classes == 10
    again = extractor(images)
    assert torch.equal(out.features, again.features) and torch.equal(out.logits, again.logits)
    assert torch.equal(extractor.predict(images), out.logits.argmax(1))


def test_features_do_not_depend_on_batch_size(extractor, test_images):
    images = test_images[0][:100]
    whole = extractor(images)
    pieces = [extractor(chunk) for chunk in images.split(7)]
    torch.testing.assert_close(torch.cat([p.features for p in pieces]), whole.features, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([p.logits for p in pieces]), whole.logits, rtol=1e-5, atol=1e-5)


def test_rgb_with_equal_channels_is_the_gray_image(extractor, test_images):
    gray = test_images[0][:16]
    rgb = gray.expand(-1, 3, -1, -1).contiguous()
    assert torch.equal(extractor(rgb).features, extractor(gray).features)
    # a colour image goes through round(0.299 R + 0.587 G + 0.114 B): pure red 255 -> gray 76
    red = torch.zeros(1, 3, 28, 28, dtype=torch.uint8)
    red[:, 0] = 255
    assert torch.equal(extractor(red).features, extractor(torch.full((1, 1, 28, 28), 76, dtype=torch.uint8)).features)


def test_bad_inputs_are_config_errors(extractor):
    with pytest.raises(ConfigError, match=r"feature extractors take uint8 images with values 0\.\.255, got torch\.float32"):
        extractor(torch.rand(2, 1, 28, 28))
    with pytest.raises(ConfigError, match=r"lenet-fashion-mnist takes 28x28 images .* got \(32, 32\)"):
        extractor(torch.zeros(2, 1, 32, 32, dtype=torch.uint8))
    with pytest.raises(ConfigError, match=r"NCHW images with 1 or 3 channels, got shape \(2, 2, 28, 28\)"):
        extractor(torch.zeros(2, 2, 28, 28, dtype=torch.uint8))


def test_files_that_are_not_lenet_weights_are_refused(tmp_path):
    missing = tmp_path / "nothing.pt"
    with pytest.raises(DataUnavailableError, match=r"lenet weights file .*nothing\.pt does not exist"):
        build_lenet_fashion_mnist(weights=missing)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError, match=r"garbage\.pt is corrupt or truncated"):
        build_lenet_fashion_mnist(weights=garbage)
    other = tmp_path / "other.pt"
    torch.save({"format": "ganbench.checkpoint", "generator": {}}, other)
    with pytest.raises(CheckpointError, match=r"other\.pt is not a ganbench lenet weights file"):
        build_lenet_fashion_mnist(weights=other)


def test_weights_that_do_not_fit_the_network_name_the_mismatch(tmp_path):
    state = torch.load(PACKAGE_WEIGHTS_DIR / "lenet-fashion-mnist.pt", weights_only=True)
    key = next(iter(state["state_dict"]))
    state["state_dict"][key] = torch.zeros(3)
    wrong = tmp_path / "wrong.pt"
    torch.save(state, wrong)
    # torch puts the reason on the line after "Error(s) in loading state_dict for LeNet:"; the one-line error keeps it.
    with pytest.raises(CheckpointError, match=rf"do not fit the .* network \(Error\(s\) in loading state_dict for "
                       rf"LeNet: size mismatch for {key}: .*\.\.\.\)$"):
        build_lenet_fashion_mnist(weights=wrong)


def test_one_line_quotes_any_error_on_one_line():
    from ganbench.errors import one_line

    assert one_line(EOFError()) == "EOFError"  # no message: the type, not an IndexError
    assert one_line(RuntimeError("heading:\n\tthe reason")) == "heading: the reason"
    long = one_line(ValueError("x" * 500), 50)
    assert len(long) == 50 and long.endswith("...")


def test_lenet_mnist_offline_without_cache_says_how_to_fix(isolated_cache):
    with pytest.raises(
        DataUnavailableError,
        match=r"lenet-mnist needs weights trained on MNIST: none cached at .*lenet-mnist\.pt and MNIST could not be "
        r"loaded .*network is unreachable.*Fix: go online once.*--data-root DIR` with MNIST.s files in DIR \(it writes "
        r".*lenet-mnist\.pt\), or use --extractor lenet-fashion-mnist; in Python, build_extractor\(.lenet-mnist., weights=FILE\)",
    ):
        build_extractor("lenet-mnist")
    assert not (isolated_cache / "lenet-mnist.pt").exists()


def test_lenet_mnist_trains_on_first_use_then_uses_the_cache(isolated_cache, tiny_data_root, monkeypatch):
    first = lenet_mnist_trained_on_first_use(data_root=tiny_data_root, progress=False)  # 256 random "digits": seconds
    cached = isolated_cache / "lenet-mnist.pt"
    assert cached.is_file() and first.weights_sha256 == file_sha256(cached)
    assert json.loads(cached.with_suffix(".json").read_text())["dataset"] == "mnist"

    import ganbench.train.classifier

    def no_training(*args, **kwargs):
        raise AssertionError("the cached weights should have been used")

    monkeypatch.setattr(ganbench.train.classifier, "train_classifier", no_training)
    second = build_extractor("lenet-mnist")
    assert second.weights_sha256 == first.weights_sha256 and second.name == "lenet-mnist"


def test_explicit_weights_win_and_must_match_the_dataset(isolated_cache, tiny_data_root, tmp_path):
    path = tmp_path / "mine.pt"
    train_classifier(ClassifierConfig(dataset="mnist", epochs=1, batch_size=64, device="cpu", out=str(path),
                                      data_root=str(tiny_data_root)), progress=False)
    assert lenet_mnist_trained_on_first_use(weights=path).weights_sha256 == file_sha256(path)  # no MNIST, no cache needed
    with pytest.raises(CheckpointError, match=r"mine\.pt was trained on mnist, but this extractor is lenet-fashion-mnist"):
        build_lenet_fashion_mnist(weights=path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for machines without CUDA")
def test_cuda_without_cuda_is_a_config_error():
    with pytest.raises(ConfigError, match=r"lenet-fashion-mnist: device cuda was requested but no CUDA device is available"):
        build_lenet_fashion_mnist(device="cuda")


def test_features_never_import_training():
    # config -> features.lenet -> train.classifier -> config was an import circle (a lazy one); lenet-mnist's
    # first-use training now lives in train.classifier, which the registry names as its builder.
    import re
    from pathlib import Path

    import ganbench.features

    package = Path(ganbench.features.__file__).parent
    offenders = [str(p.name) for p in package.rglob("*.py")
                 if re.search(r"^\s*(from ganbench\.train\b|import ganbench\.train\b)", p.read_text(), re.M)]
    assert offenders == []
