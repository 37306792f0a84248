"""The CLIP extractors: features against torch-fidelity's CLIP (an independent port of OpenAI's code) on the same
weights, each preprocessing against the reference's operations, the official layouts, weights resolution and errors.

The real weights cannot be downloaded here, so a module fixture writes random ViT-B/32 weights in OpenAI's layout
(`visual.*`, as torch-fidelity's own `CLIPVisual` names them, plus `text_projection`), rounded to float16 as OpenAI's
checkpoints are (torch-fidelity rounds every weight to float16 on load). torch-fidelity's FeatureExtractorCLIP reads
OpenAI's TorchScript files with torch.jit.load; the test hands it the same tensors through that call.

Tolerance: float32 rounding of the same operations in another order (fused attention): ATOL = 1e-4 on embeddings of
order 1, which differ between images and preprocessings by more than 1e-2.
"""

from __future__ import annotations

import types
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ganbench.errors import ConfigError, DataUnavailableError
from ganbench.features import build_extractor
from ganbench.features import clip as cl
from ganbench.features.dinov2 import layout_problems

ATOL = 1e-4
# OpenAI's published vision towers: (embed dim, resolution, layers, width, patch), text width for text_projection.
ARCHITECTURES = {
    "clip-vit-b32": (512, 224, 12, 768, 32),
    "clip-vit-l14": (768, 224, 24, 1024, 14),
    "clip-vit-l14-336": (768, 336, 24, 1024, 14),
}


def openai_layout_tower(name: str):
    from torch_fidelity.feature_extractor_clip import CLIPVisual

    return CLIPVisual(*ARCHITECTURES[name])


@pytest.fixture(scope="module", autouse=True)
def one_cpu_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def b32_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)  # torch-fidelity's CLIPVisual initialises from the global generator
    state = {k: v.half().float() for k, v in openai_layout_tower("clip-vit-b32").state_dict().items()}
    state["text_projection"] = torch.randn(512, 512, generator=torch.Generator().manual_seed(1)).half().float()
    return state


@pytest.fixture(scope="module")
def b32_weights(tmp_path_factory, b32_state) -> Path:
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("clip") / cl.SAFETENSORS_FILE
    save_file({k: v.half() for k, v in b32_state.items()}, str(path))
    return path


@pytest.fixture(scope="module")
def torch_fidelity_clip(b32_state):
    """torch-fidelity's FeatureExtractorCLIP holding the fixture's tensors."""
    import torch_fidelity.feature_extractor_clip as tfc

    original = torch.jit.load
    torch.jit.load = lambda *args, **kwargs: types.SimpleNamespace(state_dict=lambda: dict(b32_state))
    try:
        return tfc.FeatureExtractorCLIP("clip-vit-b-32", ["clip"], feature_extractor_weights_path="given", verbose=False)
    finally:
        torch.jit.load = original


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope="module")
def extractors(b32_weights) -> dict[str, cl.ClipExtractor]:
    return {p: cl.build_clip("clip-vit-b32", b32_weights, preprocessing=p, download=False) for p in cl.PREPROCESSINGS}


@pytest.fixture(scope="module")
def features(extractors, images) -> dict[str, torch.Tensor]:
    return {p: e(images).features for p, e in extractors.items()}


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_openai_layout_maps_onto_open_clip_with_no_missing_or_unexpected_keys(name):
    with torch.device("meta"):
        official = dict(openai_layout_tower(name).state_dict())
    official["text_projection"] = torch.empty(8, ARCHITECTURES[name][0], device="meta")
    mapped = cl.visual_state_dict(official)
    model = cl.clip_architecture(name)
    assert layout_problems(model, mapped) == [] and len(mapped) == len(official) - 1
    model.load_state_dict(mapped, strict=True, assign=True)
    assert model.proj.shape[1] == cl.MODELS[name].feature_dim and model.image_size == (cl.MODELS[name].resolution,) * 2


def test_torch_fidelity_preprocessing_equals_torch_fidelity_clip(features, torch_fidelity_clip, images):
    with torch.inference_mode():
        (expected,) = torch_fidelity_clip(images.repeat(1, 3, 1, 1))
    assert features["torch-fidelity"].shape == (2, 512) and features["torch-fidelity"].dtype == torch.float32
    torch.testing.assert_close(features["torch-fidelity"], expected, atol=ATOL, rtol=0)
    assert (expected[0] - expected[1]).abs().max() > 100 * ATOL


def reference_cmmd_input(images: torch.Tensor, size: int) -> torch.Tensor:
    """CMMD's io_util + embedding.py: PIL crop to the centred square and BICUBIC resize, float32 / 255, torch bicubic
    resize to the same size (the identity), CLIPImageProcessor's normalisation only."""
    import numpy as np
    from PIL import Image

    out = []
    for img in images:
        im = Image.fromarray(img.permute(1, 2, 0).squeeze(-1).numpy()).convert("RGB")
        w, h = im.size
        side = min(w, h)
        top, left = (h - side) // 2, (w - side) // 2
        im = im.crop((left, top, left + side, top + side)).resize((size, size), resample=Image.BICUBIC)
        out.append(np.asarray(im).astype(np.float32))
    batch = np.stack(out) / 255.0
    x = F.interpolate(torch.from_numpy(batch.transpose(0, 3, 1, 2)), size=(size, size), mode="bicubic")
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    return (x - mean) / std


def test_cmmd_preprocessing_equals_cmmd_pipeline_and_embeddings_are_unit_vectors(features, torch_fidelity_clip, images):
    generator = torch.Generator().manual_seed(5)
    rgb = torch.randint(0, 256, (2, 3, 30, 44), dtype=torch.uint8, generator=generator)  # not square: cropped
    for batch in (images, rgb):
        torch.testing.assert_close(cl.preprocess(batch, "cmmd", 224), reference_cmmd_input(batch, 224), atol=1e-6, rtol=0)
    with torch.inference_mode():
        embs = torch_fidelity_clip.model.visual(reference_cmmd_input(images, 224))
        embs /= torch.linalg.norm(embs, axis=-1, keepdims=True)
    torch.testing.assert_close(features["cmmd"], embs, atol=ATOL, rtol=0)
    torch.testing.assert_close(features["cmmd"].norm(dim=1), torch.ones(2), atol=1e-6, rtol=0)


def test_open_clip_preprocessing_equals_open_clip_transform(features, torch_fidelity_clip, images):
    import open_clip
    from PIL import Image

    transform = open_clip.image_transform(224, is_train=False)
    rgb = torch.randint(0, 256, (2, 3, 30, 44), dtype=torch.uint8, generator=torch.Generator().manual_seed(6))
    for batch in (images, rgb):
        expected = torch.stack([transform(Image.fromarray(img.permute(1, 2, 0).squeeze(-1).numpy()).convert("RGB"))
                                for img in batch])
        assert torch.equal(cl.preprocess(batch, "open-clip", 224), expected)
    with torch.inference_mode():
        reference = torch_fidelity_clip.model.visual(cl.preprocess(images, "open-clip", 224))
    torch.testing.assert_close(features["open-clip"], reference, atol=ATOL, rtol=0)
    # square images: the same pixels as CMMD's, so the same embedding up to its L2 normalisation
    torch.testing.assert_close(features["open-clip"] / features["open-clip"].norm(dim=1, keepdim=True), features["cmmd"],
                               atol=ATOL, rtol=0)


def test_batching_does_not_change_embeddings_and_protocols_differ(b32_weights, extractors, features, images):
    one_by_one = cl.build_clip("clip-vit-b32", b32_weights, preprocessing="torch-fidelity", batch_size=1)(images).features
    torch.testing.assert_close(one_by_one, features["torch-fidelity"], atol=1e-5, rtol=0)
    assert (features["cmmd"] - features["torch-fidelity"]).abs().max() > 100 * ATOL
    protocol = extractors["cmmd"].protocol
    assert protocol["extractor"] == "clip-vit-b32" and protocol["preprocessing"] == "cmmd" and protocol["gray_to_rgb"] == "repeat"
    import hashlib

    assert protocol["weights_sha256"] == hashlib.sha256(b32_weights.read_bytes()).hexdigest()


def test_registry_builds_it_from_the_shared_settings(b32_weights):
    from ganbench.features.registry import extractor_options

    options = extractor_options("clip-vit-b32", device="cpu", clip_weights=str(b32_weights), clip_preprocessing="open-clip")
    extractor = build_extractor("clip-vit-b32", **options)
    assert extractor.protocol["preprocessing"] == "open-clip" and extractor.feature_dim == 512


# ---- weights resolution and errors ----

@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    for name in cl.MODELS:
        monkeypatch.delenv(cl.weights_env(name), raising=False)
    return tmp_path


def test_hugging_face_cache_of_open_clip_is_found(empty_caches, monkeypatch, b32_weights):
    repo = empty_caches / "hf" / "models--timm--vit_base_patch32_clip_224.openai"
    cached = repo / "snapshots" / "abc" / cl.SAFETENSORS_FILE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc")
    assert cl.resolve_clip_weights("clip-vit-b32", download=False) == cached
    monkeypatch.setenv("GANBENCH_CLIP_VIT_B32_WEIGHTS", str(b32_weights))
    assert cl.resolve_clip_weights("clip-vit-b32", download=False) == b32_weights


def test_missing_weights_offline_is_one_line_naming_file_source_and_fix(empty_caches, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataUnavailableError, match=r"the clip-vit-l14-336 weights open_clip_model.safetensors of "
                                                   r"hf.co/timm/vit_large_patch14_clip_336.openai are not in") as error:
        cl.build_clip("clip-vit-l14-336")
    message = str(error.value)
    assert "\n" not in message and "URLError" in message and "--clip-weights" in message
    assert "GANBENCH_CLIP_VIT_L14_336_WEIGHTS" in message


def test_explicit_path_that_does_not_exist_is_an_error(empty_caches):
    with pytest.raises(DataUnavailableError, match=r"--clip-weights /nowhere/c.st: no such file; expected the clip-vit-b32"):
        cl.build_clip("clip-vit-b32", "/nowhere/c.st")


def test_openai_torchscript_archives_are_refused_naming_the_safe_copy(tmp_path):
    path = tmp_path / "ViT-B-32.pt"
    with warnings.catch_warnings():  # torch.jit is deprecated; OpenAI's files are made with it all the same
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(DataUnavailableError, match=r"is OpenAI's TorchScript archive, which carries code and is not loaded; "
                                                   r"use open_clip's copy .*open_clip_model.safetensors from hf.co/timm/"):
        cl.build_clip("clip-vit-b32", path)


def test_weights_of_another_model_are_refused(b32_weights):
    with pytest.raises(DataUnavailableError, match=r"does not hold the clip-vit-l14 image tower: .*mis-shaped"):
        cl.build_clip("clip-vit-l14", b32_weights)


def test_bad_options_and_images_are_one_line_errors(extractors):
    with pytest.raises(ConfigError, match="unknown CLIP preprocessing 'edm2'; expected one of: cmmd, open-clip, torch-fidelity"):
        cl.build_clip("clip-vit-b32", preprocessing="edm2")
    with pytest.raises(ConfigError, match=r"clip-vit-b32 takes images of at least 1x1 pixels"):
        extractors["cmmd"](torch.zeros((1, 1, 4, 0), dtype=torch.uint8))
    assert extractors["cmmd"](torch.zeros((0, 3, 8, 8), dtype=torch.uint8)).features.shape == (0, 512)
