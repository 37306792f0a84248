"""The VGG16 extractor: equal to torch-fidelity's `vgg16` (prc) features on the same file, weights resolution, errors.

The real weights cannot be downloaded in tests, so a module fixture writes randomly initialised VGG16 weights in
torchvision's key layout (553 MB, written once); ganbench and torch-fidelity both load that file, so any difference
comes from the code. Both run the same float32 operations in the same order: bit-identical on this CPU; ATOL leaves
room for another convolution algorithm elsewhere (features are of order 1).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ganbench.errors import DataUnavailableError
from ganbench.features import build_extractor
from ganbench.features import vgg16 as vgg

ATOL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def one_cpu_thread():
    """One thread: on a few cores shared with other jobs, OpenMP threads wait for descheduled siblings."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def weights_path(tmp_path_factory) -> Path:
    """Seeded random tensors under torchvision's VGG16 names and shapes (He-scaled weights, so activations stay of
    order 1 through the 16 layers); drawn from a generator of their own, not torchvision's init from the global one."""
    import torchvision

    with torch.device("meta"):
        layout = torchvision.models.vgg16(weights=None).state_dict()
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, meta in layout.items():
        fan_in = meta[0].numel() if meta.ndim > 1 else 1
        scale = (2 / fan_in) ** 0.5 if meta.ndim > 1 else 0.01
        state[key] = torch.randn(meta.shape, generator=generator) * scale
    path = tmp_path_factory.mktemp("vgg16") / "random-vgg16.pth"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def extractor(weights_path):
    return build_extractor("vgg16", weights=weights_path, device="cpu")


def test_features_equal_torch_fidelity_prc_features_on_the_same_weights(extractor, weights_path):
    from torch_fidelity.feature_extractor_vgg16 import FeatureExtractorVGG16

    generator = torch.Generator().manual_seed(1)
    rgb = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8, generator=generator)
    gray = torch.randint(0, 256, (1, 1, 28, 28), dtype=torch.uint8, generator=generator)
    reference = FeatureExtractorVGG16("vgg16", ["fc2_relu"], feature_extractor_weights_path=str(weights_path))
    with torch.no_grad():  # torch-fidelity takes RGB only: gray is repeated to 3 channels, as ganbench does
        expected = reference(rgb)[0]
        expected_gray = reference(gray.expand(-1, 3, -1, -1))[0]
    out = extractor(rgb)
    assert out.logits is None and out.features.shape == (1, 4096) and out.features.dtype == torch.float32
    assert (out.features >= 0).all() and (out.features > 0.1).sum() > 100  # after the ReLU, and not all zero
    torch.testing.assert_close(out.features, expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(extractor(gray).features, expected_gray, atol=ATOL, rtol=0)


def test_protocol_names_file_hash_and_preprocessing(extractor, weights_path):
    import hashlib

    assert extractor.protocol == {"extractor": "vgg16", "preprocessing": "tf1-224",
                                  "weights_sha256": hashlib.sha256(weights_path.read_bytes()).hexdigest(),
                                  "gray_to_rgb": "repeat"}
    assert not extractor.train().training  # dropout stays off


def test_weights_resolve_from_flag_then_environment_then_hub_cache(tmp_path, monkeypatch):
    flag, env, hub = tmp_path / "flag.pth", tmp_path / "env.pth", tmp_path / "hub"
    for path in (flag, env):
        path.write_bytes(b"x")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.setenv(vgg.WEIGHTS_ENV, str(env))
    assert vgg.resolve_vgg16_weights(flag) == flag
    assert vgg.resolve_vgg16_weights() == env
    monkeypatch.delenv(vgg.WEIGHTS_ENV)
    cached = hub / "checkpoints" / "vgg16-397923af.pth"  # where torchvision, and so torch-fidelity, caches it
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert vgg.resolve_vgg16_weights() == cached


def test_missing_weights_offline_is_one_line_naming_the_file_its_source_and_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv(vgg.WEIGHTS_ENV, raising=False)
    with pytest.raises(DataUnavailableError, match=r"VGG16 weights vgg16-397923af\.pth are not available: not found at "
                       r".*hub/checkpoints/vgg16-397923af\.pth.*download\.pytorch\.org/models/vgg16-397923af\.pth.*"
                       r"--vgg16-weights PATH, or set GANBENCH_VGG16_WEIGHTS=PATH") as caught:
        vgg.resolve_vgg16_weights(download=False)
    assert "\n" not in str(caught.value)
    with pytest.raises(DataUnavailableError, match=r"--vgg16-weights .*nowhere\.pth: no such file; expected torchvision's "
                       r"ImageNet VGG16 weights vgg16-397923af\.pth"):
        vgg.resolve_vgg16_weights(tmp_path / "nowhere.pth")


def test_wrong_files_are_refused_in_one_line(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(DataUnavailableError, match=r"garbage\.pth is not a loadable weights-only tensor file") as refused:
        vgg.load_vgg16_network(garbage)
    assert "\n" not in str(refused.value) and "PyTorch 2.6" not in str(refused.value), str(refused.value)
    wrong_keys = tmp_path / "inception.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, wrong_keys)
    with pytest.raises(DataUnavailableError, match=r"inception\.pth does not hold the VGG16 tensors \(.*Missing key"):
        vgg.load_vgg16_network(wrong_keys)
    # a file under torchvision's name must be torchvision's file: its name carries the start of its sha256
    misnamed = tmp_path / "vgg16-397923af.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, misnamed)
    with pytest.raises(DataUnavailableError, match=r"vgg16-397923af\.pth has sha256 \w{12}\.\.\., not the 397923af"):
        vgg.load_vgg16_network(misnamed)
