"""The FID Inception extractor: both protocols against their reference libraries, batching, weights resolution, errors.

The real weights cannot be downloaded in tests, so a module fixture writes a randomly initialised weights file in the
FID Inception layout; ganbench, torch-fidelity and pytorch-fid all load that same file, so any difference between
them comes from the code, not the weights.

Tolerance: the compared paths run the same float32 operations in the same order, and are bit-identical on this CPU.
ATOL = 1e-4 leaves room for a different convolution algorithm (float32 rounding, ~1e-6 relative on features of size
~1-30) while staying three orders of magnitude below the difference between the two protocols (> 0.1).
"""

from __future__ import annotations

import hashlib
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from torch import nn

from ganbench.errors import ConfigError, DataUnavailableError
from ganbench.features import ExtractorOutput, build_extractor
from ganbench.features import inception as inc

ATOL = 1e-4


def write_random_inception_weights(path: Path, seed: int = 0) -> Path:
    """A state dict in the FID Inception layout (torchvision's Inception v3 names, no aux head, 1008 classes).

    Convolutions and fc are He-scaled and batch-norm statistics random, so activations stay of order 1 through the
    depth of the network (torchvision's own init grows them to ~1e10, where an absolute tolerance means nothing).
    """
    import torchvision

    generator = torch.Generator().manual_seed(seed)
    model = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2 / module.weight[0].numel()) ** 0.5)
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
            elif isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module", autouse=True)
def one_cpu_thread():
    """Run this file's network passes on one thread: on a few cores shared with other jobs, OpenMP threads wait at
    every op for a descheduled sibling (measured here: 1 image in 0.17 s on 1 thread, 1-2 s on 2 threads)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def weights_path(tmp_path_factory) -> Path:
    return write_random_inception_weights(tmp_path_factory.mktemp("inception") / "random-inception.pth")


@pytest.fixture(scope="module")
def images() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {
        "gray": torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8, generator=generator),
        "rgb": torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=generator),
    }


@pytest.fixture(scope="module")
def extractors(weights_path) -> dict[str, inc.InceptionExtractor]:
    # pytorch-fid's extractor splits its input into batches of 2, so the reference comparison also covers chunking
    return {
        "tf1": inc.build_inception(weights_path),
        "pytorch-fid": inc.build_inception(weights_path, preprocessing="pytorch-fid", batch_size=2),
    }


@pytest.fixture(scope="module")
def outputs(extractors, images) -> dict[tuple[str, str], ExtractorOutput]:
    return {(protocol, kind): extractors[protocol](x) for protocol in extractors for kind, x in images.items()}


@pytest.fixture(scope="module")
def torch_fidelity_network(weights_path):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    return FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(weights_path)
    )


@pytest.fixture(scope="module")
def pytorch_fid_network(weights_path):
    """pytorch-fid's FID InceptionV3 with our weights: its loader fetches a URL, so that one function is replaced."""
    import pytorch_fid.inception

    def load_local(url, progress=True):
        assert url == pytorch_fid.inception.FID_WEIGHTS_URL
        return torch.load(weights_path, weights_only=True)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pytorch_fid.inception, "load_state_dict_from_url", load_local)
        return pytorch_fid.inception.InceptionV3([3], resize_input=True, normalize_input=True).eval()


@pytest.mark.parametrize("kind", ["gray", "rgb"])
def test_tf1_equals_torch_fidelity(outputs, images, torch_fidelity_network, kind):
    with torch.inference_mode():
        features, logits = torch_fidelity_network(images[kind].expand(-1, 3, -1, -1))  # gray given as 3 equal channels
    ours = outputs[("tf1", kind)]
    assert ours.features.dtype == ours.logits.dtype == torch.float32
    assert ours.features.shape == (len(images[kind]), 2048) and ours.logits.shape == (len(images[kind]), 1008)
    torch.testing.assert_close(ours.features, features, rtol=0, atol=ATOL)
    torch.testing.assert_close(ours.logits, logits, rtol=0, atol=ATOL)


@pytest.mark.parametrize("kind", ["gray", "rgb"])
def test_pytorch_fid_protocol_equals_pytorch_fid(outputs, images, pytorch_fid_network, kind):
    # pytorch-fid's loader gives ToTensor() images (u / 255, PIL's convert("RGB") repeats gray) to InceptionV3
    rgb = images[kind].expand(-1, 3, -1, -1)
    with torch.inference_mode():
        (pool3,) = pytorch_fid_network(rgb.to(torch.float32).div(255))
    torch.testing.assert_close(outputs[("pytorch-fid", kind)].features, pool3.flatten(1), rtol=0, atol=ATOL)


def test_the_two_networks_agree_on_the_same_preprocessed_input(images, extractors, torch_fidelity_network, pytorch_fid_network):
    """The protocols differ only in preprocessing: on one 299x299 input, torch-fidelity's forward, the layers that
    ganbench's pytorch-fid protocol runs, and pytorch-fid's blocks give the same pool3 features."""
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    rgb = images["rgb"][:1]
    x = interpolate_bilinear_2d_like_tensorflow1x(rgb.to(torch.float32), size=(299, 299), align_corners=False)
    x = (x - 128) / 128
    with torch.inference_mode():
        reference_features, reference_logits = torch_fidelity_network(rgb)
        features, logits = inc._pool3_and_logits(extractors["tf1"].network, x)
        for block in pytorch_fid_network.blocks:  # its forward, minus its own resize and scaling
            x = block(x)
        pytorch_fid_pool3 = x.flatten(1)
    torch.testing.assert_close(features, reference_features, rtol=0, atol=ATOL)
    torch.testing.assert_close(logits, reference_logits, rtol=0, atol=ATOL)
    torch.testing.assert_close(pytorch_fid_pool3, reference_features, rtol=0, atol=ATOL)


def test_weights_files_of_both_libraries_share_one_layout(torch_fidelity_network, pytorch_fid_network):
    """One state dict loads strictly (all names, all shapes) into both torch-fidelity's network and pytorch-fid's
    fid_inception_v3 (the fixtures), so pytorch-fid's pt_inception file is accepted as torch-fidelity's; spot checks:"""
    theirs = {name: tuple(t.shape) for name, t in torch_fidelity_network.state_dict().items()}
    blocks = pytorch_fid_network.blocks  # pytorch-fid keeps the layers it uses, under block indices
    assert theirs["Conv2d_1a_3x3.conv.weight"] == tuple(blocks[0][0].conv.weight.shape)
    assert theirs["Mixed_7c.branch_pool.conv.weight"] == tuple(blocks[3][2].branch_pool.conv.weight.shape)
    assert theirs["fc.weight"] == (1008, 2048)


@pytest.mark.parametrize("kind", ["gray", "rgb"])
def test_protocols_give_different_features_on_small_images(outputs, kind):
    difference = (outputs[("tf1", kind)].features - outputs[("pytorch-fid", kind)].features).abs().max().item()
    assert difference > 1000 * ATOL


@pytest.mark.parametrize("protocol", ["tf1", "pytorch-fid"])
def test_features_do_not_depend_on_batch_size(extractors, outputs, images, protocol):
    one_at_a_time = [extractors[protocol](image[None]) for image in images["gray"]]
    all_at_once = outputs[(protocol, "gray")]
    torch.testing.assert_close(torch.cat([o.features for o in one_at_a_time]), all_at_once.features, rtol=0, atol=ATOL)
    torch.testing.assert_close(torch.cat([o.logits for o in one_at_a_time]), all_at_once.logits, rtol=0, atol=ATOL)


def test_channels_last_changes_only_float_rounding(weights_path, outputs, images):
    fast = inc.build_inception(weights_path, channels_last=True)(images["gray"])
    torch.testing.assert_close(fast.features, outputs[("tf1", "gray")].features, rtol=0, atol=ATOL)
    torch.testing.assert_close(fast.logits, outputs[("tf1", "gray")].logits, rtol=0, atol=ATOL)


def test_protocol_names_preprocessing_gray_handling_and_weights_hash(extractors, weights_path):
    sha256 = hashlib.sha256(weights_path.read_bytes()).hexdigest()
    expected = {"extractor": "inception", "preprocessing": "tf1", "weights_sha256": sha256, "gray_to_rgb": "repeat"}
    assert extractors["tf1"].protocol == expected
    assert extractors["pytorch-fid"].protocol["preprocessing"] == "pytorch-fid"
    assert extractors["tf1"].feature_dim == 2048 and extractors["tf1"].num_classes == 1008


def test_cli_choices_are_the_preprocessings():
    from ganbench.cli.options import PREPROCESSINGS as CLI_CHOICES

    assert tuple(inc.PREPROCESSINGS) == CLI_CHOICES  # the CLI keeps its own copy so --help does not import torch


def test_file_names_and_url_are_the_libraries_own():
    import pytorch_fid.inception
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    assert inc.WEIGHTS_URL == tfi.URL_INCEPTION_V3
    assert inc.WEIGHTS_URL.rsplit("/", 1)[1] == inc.WEIGHTS_FILE
    assert pytorch_fid.inception.FID_WEIGHTS_URL.rsplit("/", 1)[1] == inc.PYTORCH_FID_WEIGHTS_FILE


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (torch.zeros(2, 3, 28, 28), "uint8 images with values 0..255, got torch.float32"),
        (torch.zeros(2, 2, 28, 28, dtype=torch.uint8), re.escape("1 or 3 channels, got shape (2, 2, 28, 28)")),
        (torch.zeros(3, 28, 28, dtype=torch.uint8), re.escape("NCHW images with 1 or 3 channels, got shape (3, 28, 28)")),
    ],
)
def test_bad_images_raise_config_error(extractors, bad, message):
    with pytest.raises(ConfigError, match=message):
        extractors["tf1"](bad)


def test_unknown_preprocessing_lists_the_valid_ones():
    expected = r"unknown Inception preprocessing 'clean-fid'; expected one of: tf1, pytorch-fid \(--preprocessing\)"
    with pytest.raises(ConfigError, match=expected):
        inc.build_inception(preprocessing="clean-fid")
    with pytest.raises(ConfigError, match="unknown Inception preprocessing"):  # reached through the registry too
        build_extractor("inception", preprocessing="TF1")
    with pytest.raises(ConfigError, match="batch_size must be a positive integer or None, got 0"):
        inc.build_inception(batch_size=0)


# --- weights resolution -------------------------------------------------------------------------------------------------


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache (TORCH_HOME in tmp), no GANBENCH_INCEPTION_WEIGHTS, and no network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv(inc.WEIGHTS_ENV, raising=False)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    def must_not_download(*args, **kwargs):
        raise AssertionError("torch.hub.download_url_to_file called although the probe failed")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setattr(torch.hub, "download_url_to_file", must_not_download)
    checkpoints = tmp_path / "torch-home" / "hub" / "checkpoints"
    assert inc.hub_weights_paths() == (checkpoints / inc.WEIGHTS_FILE, checkpoints / inc.PYTORCH_FID_WEIGHTS_FILE)
    return checkpoints


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"weights")
    return path


def test_weights_argument_beats_variable_beats_hub_cache(hub, tmp_path, monkeypatch):
    argument, variable = _touch(tmp_path / "argument.pth"), _touch(tmp_path / "variable.pth")
    cached = _touch(hub / inc.WEIGHTS_FILE)
    monkeypatch.setenv(inc.WEIGHTS_ENV, str(variable))
    assert inc.resolve_inception_weights(argument) == argument
    assert inc.resolve_inception_weights() == variable
    monkeypatch.delenv(inc.WEIGHTS_ENV)
    assert inc.resolve_inception_weights() == cached
    cached.unlink()
    pytorch_fid_copy = _touch(hub / inc.PYTORCH_FID_WEIGHTS_FILE)
    assert inc.resolve_inception_weights() == pytorch_fid_copy


def test_an_explicit_missing_path_is_an_error_not_a_fallback(hub, tmp_path, monkeypatch):
    _touch(hub / inc.WEIGHTS_FILE)
    with pytest.raises(DataUnavailableError, match=r"--inception-weights .*nope\.pth: no such file; expected the FID Inception"):
        inc.resolve_inception_weights(tmp_path / "nope.pth")
    monkeypatch.setenv(inc.WEIGHTS_ENV, str(tmp_path / "nope.pth"))
    with pytest.raises(DataUnavailableError, match=r"GANBENCH_INCEPTION_WEIGHTS=.*nope\.pth: no such file"):
        inc.resolve_inception_weights()


@pytest.mark.parametrize("resolve,flag", [
    (lambda path: inc.resolve_inception_weights(path, download=False), "--inception-weights"),
    (lambda path: __import__("ganbench.features.vgg16").features.vgg16.resolve_vgg16_weights(path, download=False),
     "--vgg16-weights"),
    (lambda path: __import__("ganbench.features.dinov2").features.dinov2.resolve_dinov2_weights(
        "dinov2-vit-s14", path, download=False), "--dinov2-weights"),
    (lambda path: __import__("ganbench.features.clip").features.clip.resolve_clip_weights(
        "clip-vit-b32", path, download=False), "--clip-weights"),
])
def test_a_folder_given_as_weights_is_named_a_folder(tmp_path, resolve, flag):
    # it said "no such file" of a folder that exists
    with pytest.raises(DataUnavailableError) as refused:
        resolve(tmp_path)
    message = str(refused.value)
    assert message.startswith(f"{flag} {tmp_path}: a folder, not a file; expected "), message
    with pytest.raises(DataUnavailableError, match="nope.pth: no such file; expected "):
        resolve(tmp_path / "nope.pth")


def test_missing_weights_offline_raise_one_message_with_every_fix(hub):
    expected = r"the FID Inception weights weights-inception-2015-12-05-6726825d\.pth are not available"
    with pytest.raises(DataUnavailableError, match=expected) as info:
        inc.build_inception()  # the public entry point; nothing is substituted
    message = str(info.value)
    for part in [
        f"not found at {hub / inc.WEIGHTS_FILE}",
        f"pytorch-fid's copy at {hub / inc.PYTORCH_FID_WEIGHTS_FILE}",
        f"downloading {inc.WEIGHTS_URL} failed (URLError: <urlopen error no network in tests>)",
        f"put the file at {hub / inc.WEIGHTS_FILE}",
        "pass --inception-weights PATH",
        "set GANBENCH_INCEPTION_WEIGHTS=PATH",
        "--extractor lenet-fashion-mnist or --extractor lenet-mnist",
    ]:
        assert part in message
    assert "\n" not in message
    assert not hub.exists() or not any(hub.iterdir())  # no partial file left behind


def test_download_false_never_touches_the_network(hub, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("network used although download=False"))
    with pytest.raises(DataUnavailableError, match=r"failed \(downloads are disabled\)"):
        inc.resolve_inception_weights(download=False)


def test_download_goes_through_torch_hub_into_the_cache(hub, monkeypatch):
    calls = []

    class Response:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append(url)
        assert hash_prefix == inc.WEIGHTS_SHA256  # torch.hub compares the whole digest and deletes a mismatch
        Path(dst).write_bytes(b"downloaded")

    monkeypatch.setattr(urllib.request, "urlopen", lambda request, timeout: Response())
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    assert inc.resolve_inception_weights() == hub / inc.WEIGHTS_FILE
    assert calls == [inc.WEIGHTS_URL] and (hub / inc.WEIGHTS_FILE).read_bytes() == b"downloaded"


def test_a_file_under_the_reference_tools_names_must_be_the_published_one(hub, weights_path):
    """A different file cached under torch-fidelity's or pytorch-fid's name (a partial download, a test's random
    weights left in a real cache) would be used as the FID network without a word: refused, naming both hashes."""
    import shutil

    for name in (inc.WEIGHTS_FILE, inc.PYTORCH_FID_WEIGHTS_FILE):
        cached = hub / name
        hub.mkdir(parents=True, exist_ok=True)
        shutil.copy(weights_path, cached)
        with pytest.raises(DataUnavailableError) as refused:
            inc.build_inception()
        message = str(refused.value)
        sha = hashlib.sha256(weights_path.read_bytes()).hexdigest()
        for part in (str(cached), sha[:12], inc.WEIGHTS_SHA256, "delete it", "--inception-weights"):
            assert part in message, (part, message)
        assert "\n" not in message
        cached.unlink()
    # the same bytes under another name, asked for on purpose, are used; their hash goes into the protocol
    extractor = inc.build_inception(weights_path)
    assert extractor.protocol["weights_sha256"] == hashlib.sha256(weights_path.read_bytes()).hexdigest()


def test_the_published_hash_is_the_one_both_files_are_named_after():
    """torch-fidelity's and pytorch-fid's files are the same bytes (95,628,359 of them), named after their sha256 as
    torch.hub names files; the download is checked against the whole hash."""
    assert len(inc.WEIGHTS_SHA256) == 64
    for name in (inc.WEIGHTS_FILE, inc.PYTORCH_FID_WEIGHTS_FILE):
        assert name.rsplit("-", 1)[1] == inc.WEIGHTS_SHA256[:8] + ".pth"


# --- files that are not the weights -------------------------------------------------------------------------------------

UNSAFE_LOADED = []


def _record_unsafe_load():
    UNSAFE_LOADED.append(True)
    return torch.zeros(1)


class _RunsCodeWhenUnpickled:
    def __reduce__(self):
        return (_record_unsafe_load, ())


def test_files_that_are_not_the_weights_are_refused(tmp_path):
    (tmp_path / "text.pth").write_bytes(b"not a torch file")
    with pytest.raises(DataUnavailableError, match="text.pth is not a loadable weights-only tensor file"):
        inc.build_inception(tmp_path / "text.pth")
    torch.save({"weight": _RunsCodeWhenUnpickled()}, tmp_path / "code.pth")
    with pytest.raises(DataUnavailableError, match="code.pth is not a loadable weights-only tensor file .*UnpicklingError"):
        inc.build_inception(tmp_path / "code.pth")
    (tmp_path / "garbage.pth").write_bytes(b"garbage")  # an unpickler refusal: torch's five lines of advice
    with pytest.raises(DataUnavailableError) as refused:
        inc.build_inception(tmp_path / "garbage.pth")
    message = str(refused.value)
    assert "\n" not in message and "Unsupported operand" in message and "PyTorch 2.6" not in message, message
    assert not UNSAFE_LOADED  # loaded with weights_only=True: the pickled call never ran
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(DataUnavailableError, match="list.pth holds a list, not a state dict of tensors"):
        inc.build_inception(tmp_path / "list.pth")
    torch.save({"fc.weight": torch.zeros(1008, 2048)}, tmp_path / "other.pth")
    with pytest.raises(DataUnavailableError, match="other.pth does not hold the FID Inception v3 tensors .*Missing key"):
        inc.build_inception(tmp_path / "other.pth")
