"""The DINOv2 extractors: the official checkpoint layout, the features against dinov2's own forward, each preprocessing
against the reference's operations, batching, weights resolution and errors.

The real checkpoints cannot be downloaded here and torch.hub cannot fetch dinov2's code offline, so the reference is
dinov2's `DinoVisionTransformer.forward` (eval, no xFormers) written out below from its published code, run on a random
state dict in the OFFICIAL key layout (also written out below, from the published architecture), including its
run-time `interpolate_pos_encoding`. Weights are scaled so activations stay of order 1 (see `official_state_dict`):
then a wrong pos_embed resize, gate order or normalisation moves the features far beyond ATOL.

Tolerance: the two forwards differ only in float32 rounding (fused vs explicit attention): ATOL = 1e-4 on features of
order 1, which differ between images and between preprocessings by more than 1e-2.
"""

from __future__ import annotations

import math
import types
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ganbench.errors import ConfigError, DataUnavailableError
from ganbench.features import build_extractor
from ganbench.features import dinov2 as dv

ATOL = 1e-4
# Published architecture (facebookresearch/dinov2 hubconf): embed dim, depth, heads, MLP; ViT-g uses SwiGLU FFN whose
# hidden width is (int(4D * 2/3) + 7) // 8 * 8 = 4096.
ARCHITECTURES = {
    "dinov2-vit-s14": (384, 12, 6, "mlp"),
    "dinov2-vit-b14": (768, 12, 12, "mlp"),
    "dinov2-vit-l14": (1024, 24, 16, "mlp"),
    "dinov2-vit-g14": (1536, 40, 24, "swiglufused"),
}


def official_layout(dim: int, depth: int, ffn: str) -> dict[str, tuple[int, ...]]:
    """Names and shapes of facebookresearch/dinov2's `dinov2_vit*14_pretrain.pth` (518 px: 37x37 patches)."""
    layout = {"cls_token": (1, 1, dim), "pos_embed": (1, 1 + 37 * 37, dim), "mask_token": (1, dim),
              "patch_embed.proj.weight": (dim, 3, 14, 14), "patch_embed.proj.bias": (dim,)}
    hidden = (int(4 * dim * 2 / 3) + 7) // 8 * 8 if ffn == "swiglufused" else 4 * dim
    for i in range(depth):
        p = f"blocks.{i}."
        layout.update({p + "norm1.weight": (dim,), p + "norm1.bias": (dim,), p + "attn.qkv.weight": (3 * dim, dim),
                       p + "attn.qkv.bias": (3 * dim,), p + "attn.proj.weight": (dim, dim), p + "attn.proj.bias": (dim,),
                       p + "ls1.gamma": (dim,), p + "norm2.weight": (dim,), p + "norm2.bias": (dim,), p + "ls2.gamma": (dim,)})
        if ffn == "swiglufused":
            layout.update({p + "mlp.w12.weight": (2 * hidden, dim), p + "mlp.w12.bias": (2 * hidden,),
                           p + "mlp.w3.weight": (dim, hidden), p + "mlp.w3.bias": (dim,)})
        else:
            layout.update({p + "mlp.fc1.weight": (hidden, dim), p + "mlp.fc1.bias": (hidden,),
                           p + "mlp.fc2.weight": (dim, hidden), p + "mlp.fc2.bias": (dim,)})
    layout.update({"norm.weight": (dim,), "norm.bias": (dim,)})
    return layout


def official_state_dict(dim: int, depth: int, ffn: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values in the official layout: weights ~ 1/sqrt(fan in), norms ~ 1, pos_embed ~ 1, layer scale ~ 0.5."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in official_layout(dim, depth, ffn).items():
        if key.endswith(".weight") and len(shape) > 1:
            fan_in = math.prod(shape[1:])
            value = torch.randn(shape, generator=generator) / fan_in**0.5
        elif "norm" in key and key.endswith(".weight"):
            value = torch.rand(shape, generator=generator) + 0.5
        elif key.endswith("gamma"):
            value = torch.rand(shape, generator=generator) * 0.5 + 0.25
        elif key in ("pos_embed", "cls_token", "mask_token"):
            value = torch.randn(shape, generator=generator)
        else:
            value = torch.randn(shape, generator=generator) * 0.1
        state[key] = value
    return state


def reference_interpolate_pos_encoding(pos_embed, x, w, h, patch_size=14, interpolate_offset=0.1, antialias=False):
    """dinov2's DinoVisionTransformer.interpolate_pos_encoding, as its hub models are configured."""
    previous_dtype = x.dtype
    npatch = x.shape[1] - 1
    N = pos_embed.shape[1] - 1
    if npatch == N and w == h:
        return pos_embed
    pos_embed = pos_embed.float()
    class_pos_embed = pos_embed[:, 0]
    patch_pos_embed = pos_embed[:, 1:]
    dim = x.shape[-1]
    w0 = w // patch_size
    h0 = h // patch_size
    M = int(math.sqrt(N))
    sx = float(w0 + interpolate_offset) / M
    sy = float(h0 + interpolate_offset) / M
    patch_pos_embed = F.interpolate(patch_pos_embed.reshape(1, M, M, dim).permute(0, 3, 1, 2), mode="bicubic",
                                    antialias=antialias, scale_factor=(sx, sy))
    patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
    return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1).to(previous_dtype)


def reference_dinov2(state: dict, x: torch.Tensor, heads: int, **interpolation) -> torch.Tensor:
    """dinov2's forward(x) = head(norm(tokens)[:, 0]) with head = Identity: blocks of attention and MLP/SwiGLU with
    layer scale, LayerNorm eps 1e-6, exact GELU, written with explicit operations."""
    B, _, h, w = x.shape
    dim = state["cls_token"].shape[-1]
    t = F.conv2d(x, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=14).flatten(2).transpose(1, 2)
    t = torch.cat((state["cls_token"].expand(B, -1, -1), t), dim=1)
    t = t + reference_interpolate_pos_encoding(state["pos_embed"], t, w, h, **interpolation)
    n = t.shape[1]
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    for i in range(depth):
        s = {k[len(f"blocks.{i}."):]: v for k, v in state.items() if k.startswith(f"blocks.{i}.")}
        y = F.layer_norm(t, (dim,), s["norm1.weight"], s["norm1.bias"], eps=1e-6)
        qkv = F.linear(y, s["attn.qkv.weight"], s["attn.qkv.bias"]).reshape(B, n, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * (dim // heads) ** -0.5, qkv[1], qkv[2]
        y = ((q @ k.transpose(-2, -1)).softmax(dim=-1) @ v).transpose(1, 2).reshape(B, n, dim)
        t = t + s["ls1.gamma"] * F.linear(y, s["attn.proj.weight"], s["attn.proj.bias"])
        y = F.layer_norm(t, (dim,), s["norm2.weight"], s["norm2.bias"], eps=1e-6)
        if "mlp.w12.weight" in s:  # SwiGLUFFNFused: silu(first half) * second half
            x1, x2 = F.linear(y, s["mlp.w12.weight"], s["mlp.w12.bias"]).chunk(2, dim=-1)
            y = F.linear(F.silu(x1) * x2, s["mlp.w3.weight"], s["mlp.w3.bias"])
        else:
            y = F.linear(F.gelu(F.linear(y, s["mlp.fc1.weight"], s["mlp.fc1.bias"])), s["mlp.fc2.weight"], s["mlp.fc2.bias"])
        t = t + s["ls2.gamma"] * y
    return F.layer_norm(t, (dim,), state["norm.weight"], state["norm.bias"], eps=1e-6)[:, 0]


def reference_dgm_eval_input(images: torch.Tensor) -> torch.Tensor:
    """dgm-eval's DINOv2 transform on its loader's PIL images: convert("RGB"), Resize((224, 224), BICUBIC), ToTensor,
    Normalize(ImageNet mean, std)."""
    import torchvision.transforms as TF
    from PIL import Image

    transform = TF.Compose([TF.Resize((224, 224), interpolation=TF.InterpolationMode.BICUBIC), TF.ToTensor(),
                            TF.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))])
    pils = [Image.fromarray(img.permute(1, 2, 0).squeeze(-1).numpy()).convert("RGB") for img in images]
    return torch.stack([transform(p) for p in pils])


def reference_edm2_input(images: torch.Tensor) -> torch.Tensor:
    """EDM2's DINOv2Detector.__call__ with its default resize_mode='torch' (images already RGB)."""
    x = F.interpolate(images.expand(-1, 3, -1, -1).to(torch.float32), size=(224, 224), mode="bicubic", antialias=True)
    x = x.to(torch.float32) / 255
    x = x - torch.tensor([0.485, 0.456, 0.406]).reshape(1, -1, 1, 1)
    return x / torch.tensor([0.229, 0.224, 0.225]).reshape(1, -1, 1, 1)


@pytest.fixture(scope="module", autouse=True)
def one_cpu_thread():
    """One thread: on cores shared with other jobs, OpenMP threads wait at every op for a descheduled sibling."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def s14_state() -> dict[str, torch.Tensor]:
    return official_state_dict(384, 12, "mlp")


@pytest.fixture(scope="module")
def s14_weights(tmp_path_factory, s14_state) -> Path:
    path = tmp_path_factory.mktemp("dinov2") / "dinov2_vits14_pretrain.pth"
    torch.save(s14_state, path)
    return path


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Two 28x28 grayscale images, as Fashion-MNIST gives them."""
    return torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def extractors(s14_weights) -> dict[str, dv.DinoV2Extractor]:
    return {p: dv.build_dinov2("dinov2-vit-s14", s14_weights, preprocessing=p, download=False) for p in dv.PREPROCESSINGS}


@pytest.fixture(scope="module")
def features(extractors, images) -> dict[str, torch.Tensor]:
    """Each preprocessing's features of `images`, computed once: a ViT-S pass costs ~0.3 s per image here."""
    return {p: e(images).features for p, e in extractors.items()}


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_official_checkpoint_layout_maps_onto_timm_with_no_missing_or_unexpected_keys(name):
    dim, depth, _, ffn = ARCHITECTURES[name]
    with torch.device("meta"):  # shapes only: ViT-g's 1.1e9 parameters cost nothing here
        official = {k: torch.empty(s) for k, s in official_layout(dim, depth, ffn).items()}
    model = dv.dinov2_architecture(name)
    mapped = dv.timm_state_dict(official)
    assert dv.layout_problems(model, mapped) == []
    assert "mask_token" not in mapped and len(mapped) == len(official) - 1  # the one tensor unused: a training-only one
    model.load_state_dict(mapped, strict=True, assign=True)
    assert mapped["pos_embed"].shape == (1, 1 + 16 * 16, dim) and dv.MODELS[name].feature_dim == dim


def test_swiglu_checkpoint_keys_keep_their_meaning_in_timm():
    """ViT-g's w12/w3 renamed to fc1/fc2 compute dinov2's silu(x1) * x2 (on a 2-block ViT built with ViT-g's timm
    arguments, small enough to run)."""
    from timm.layers import SwiGLUPacked
    from timm.models.vision_transformer import VisionTransformer

    state = official_state_dict(48, 2, "swiglufused", seed=3)
    model = VisionTransformer(img_size=224, patch_size=14, embed_dim=48, depth=2, num_heads=2, init_values=1e-5,
                              mlp_ratio=2.66667 * 2, mlp_layer=SwiGLUPacked, act_layer=torch.nn.SiLU, num_classes=0)
    model.load_state_dict(dv.timm_state_dict(state), strict=True)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        torch.testing.assert_close(model.eval().forward_features(x)[:, 0], reference_dinov2(state, x, heads=2), atol=ATOL, rtol=0)


def test_pos_embed_is_resized_as_dinov2_does_at_run_time(s14_state):
    ours = dv.interpolate_pos_embed(s14_state["pos_embed"], 16)
    tokens = torch.zeros(1, 257, 384)
    assert torch.equal(ours, reference_interpolate_pos_encoding(s14_state["pos_embed"], tokens, 224, 224))
    timm_style = F.interpolate(s14_state["pos_embed"][:, 1:].reshape(1, 37, 37, 384).permute(0, 3, 1, 2), size=(16, 16),
                               mode="bicubic", antialias=True)  # what timm's own loader would do: not the reference
    assert (ours[:, 1:] - timm_style.permute(0, 2, 3, 1).reshape(1, 256, 384)).abs().max() > 0.1


def test_dgm_eval_preprocessing_equals_its_pil_pipeline_exactly():
    generator = torch.Generator().manual_seed(2)
    gray = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8, generator=generator)
    rgb = torch.randint(0, 256, (2, 3, 19, 41), dtype=torch.uint8, generator=generator)  # not square: squeezed, as dgm-eval
    for images in (gray, rgb):
        assert torch.equal(dv.preprocess(images, "dgm-eval"), reference_dgm_eval_input(images))


def test_edm2_preprocessing_equals_its_torch_resize_exactly(images):
    assert torch.equal(dv.preprocess(images, "edm2"), reference_edm2_input(images))


@pytest.mark.parametrize("preprocessing", ["dgm-eval", "edm2"])
def test_features_equal_dinov2_forward_on_the_same_weights(features, s14_state, images, preprocessing):
    reference_input = reference_dgm_eval_input(images) if preprocessing == "dgm-eval" else reference_edm2_input(images)
    with torch.inference_mode():
        expected = reference_dinov2(s14_state, reference_input, heads=6)
    assert features[preprocessing].dtype == torch.float32 and features[preprocessing].shape == (2, 384)
    torch.testing.assert_close(features[preprocessing], expected, atol=ATOL, rtol=0)
    assert (expected[0] - expected[1]).abs().max() > 100 * ATOL  # the images are told apart far beyond the tolerance


def test_torch_fidelity_preprocessing_equals_torch_fidelity_forward(features, s14_state, images):
    """torch-fidelity's own FeatureExtractorDinoV2.forward (its resize and scaling), with dinov2's forward as its model:
    it cannot load a local file, so its hub model is the reference above."""
    from torch_fidelity.feature_extractor_dinov2 import FeatureExtractorDinoV2

    peer = types.SimpleNamespace(feature_extractor_internal_dtype=torch.float32, INPUT_IMAGE_SIZE=224,
                                 features_list=["dinov2"], model=lambda x: reference_dinov2(s14_state, x, heads=6))
    with torch.inference_mode():
        (expected,) = FeatureExtractorDinoV2.forward(peer, images.repeat(1, 3, 1, 1))
    torch.testing.assert_close(features["torch-fidelity"], expected, atol=ATOL, rtol=0)


def test_preprocessings_are_different_protocols(extractors, features):
    assert (features["dgm-eval"] - features["torch-fidelity"]).abs().max() > 100 * ATOL
    assert (features["dgm-eval"] - features["edm2"]).abs().max() > 10 * ATOL
    protocols = {p: e.protocol for p, e in extractors.items()}
    assert protocols["edm2"]["preprocessing"] == "edm2" and protocols["edm2"]["extractor"] == "dinov2-vit-s14"
    assert protocols["edm2"]["gray_to_rgb"] == "repeat"


def test_features_are_deterministic_and_do_not_depend_on_batching(s14_weights, features, images):
    one_by_one = dv.build_dinov2("dinov2-vit-s14", s14_weights, batch_size=1, download=False)(images)
    assert one_by_one.logits is None
    torch.testing.assert_close(one_by_one.features, features["dgm-eval"], atol=1e-5, rtol=0)
    again = dv.build_dinov2("dinov2-vit-s14", s14_weights, batch_size=1, download=False)(images).features
    assert torch.equal(again, one_by_one.features)  # same weights and images: bit-identical


def test_weights_sha256_is_the_file_hash(extractors, s14_weights):
    import hashlib

    assert extractors["dgm-eval"].weights_sha256 == hashlib.sha256(s14_weights.read_bytes()).hexdigest()


def test_registry_builds_it_from_the_shared_settings(s14_weights):
    from ganbench.features.registry import extractor_options

    options = extractor_options("dinov2-vit-s14", device="cpu", dinov2_weights=str(s14_weights), dinov2_preprocessing="edm2")
    extractor = build_extractor("dinov2-vit-s14", **options)
    assert extractor.protocol["preprocessing"] == "edm2" and extractor.weights_path == s14_weights


# ---- weights resolution and errors ----

@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """An empty torch hub and Hugging Face cache, and no weights variables."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    for name in dv.MODELS:
        monkeypatch.delenv(dv.weights_env(name), raising=False)
    return tmp_path


def test_resolution_order_flag_then_variable_then_hub_cache_then_hugging_face(empty_caches, monkeypatch, s14_weights):
    hf_file = empty_caches / "hf" / "models--timm--vit_small_patch14_dinov2.lvd142m" / "snapshots" / "abc" / "model.safetensors"
    hf_file.parent.mkdir(parents=True)
    hf_file.write_bytes(b"x")
    (empty_caches / "hf" / "models--timm--vit_small_patch14_dinov2.lvd142m" / "refs").mkdir()
    (empty_caches / "hf" / "models--timm--vit_small_patch14_dinov2.lvd142m" / "refs" / "main").write_text("abc")
    assert dv.resolve_dinov2_weights("dinov2-vit-s14", download=False) == hf_file
    hub_file = empty_caches / "hub" / "checkpoints" / "dinov2_vits14_pretrain.pth"
    hub_file.parent.mkdir(parents=True)
    hub_file.write_bytes(b"x")
    assert dv.resolve_dinov2_weights("dinov2-vit-s14", download=False) == hub_file
    monkeypatch.setenv("GANBENCH_DINOV2_VIT_S14_WEIGHTS", str(s14_weights))
    assert dv.resolve_dinov2_weights("dinov2-vit-s14", download=False) == s14_weights
    assert dv.resolve_dinov2_weights("dinov2-vit-s14", hub_file, download=False) == hub_file


def test_missing_weights_offline_is_one_line_naming_file_source_and_place(empty_caches, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    target = empty_caches / "hub" / "checkpoints" / "dinov2_vitl14_pretrain.pth"
    with pytest.raises(DataUnavailableError, match="dinov2_vitl14_pretrain.pth are not available") as error:
        dv.build_dinov2("dinov2-vit-l14")
    message = str(error.value)
    assert "\n" not in message and str(target) in message and "URLError" in message
    assert "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth" in message
    assert "--dinov2-weights" in message and "GANBENCH_DINOV2_VIT_L14_WEIGHTS" in message


def test_explicit_path_that_does_not_exist_is_an_error_not_a_fallback(empty_caches, monkeypatch):
    with pytest.raises(DataUnavailableError, match=r"--dinov2-weights /nowhere/x.pth: no such file; expected the dinov2-vit-s14"):
        dv.build_dinov2("dinov2-vit-s14", "/nowhere/x.pth")
    monkeypatch.setenv("GANBENCH_DINOV2_VIT_B14_WEIGHTS", "/nowhere/y.pth")
    with pytest.raises(DataUnavailableError, match=r"GANBENCH_DINOV2_VIT_B14_WEIGHTS=/nowhere/y.pth: no such file"):
        dv.build_dinov2("dinov2-vit-b14")


def test_weights_of_another_model_are_refused_in_one_line(s14_weights):
    with pytest.raises(DataUnavailableError, match=r"does not hold the dinov2-vit-b14 tensors: .*mis-shaped .*expected "
                                                   r"dinov2_vitb14_pretrain.pth from https://") as error:
        dv.build_dinov2("dinov2-vit-b14", s14_weights)
    assert "\n" not in str(error.value)


def test_a_file_that_is_not_a_tensor_file_is_refused(tmp_path):
    bad = tmp_path / "dinov2_vits14_pretrain.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DataUnavailableError, match=r"weights file .* is corrupt or not a plain-tensor file; refused without "
                                                   r"unpickling it .*; expected the dinov2-vit-s14 weights"):
        dv.build_dinov2("dinov2-vit-s14", bad)


def test_a_truncated_layout_is_refused_naming_the_missing_keys(tmp_path, s14_state):
    path = tmp_path / "partial.pth"
    torch.save({k: v for k, v in s14_state.items() if not k.startswith("blocks.11.")}, path)
    with pytest.raises(DataUnavailableError, match=r"14 missing \(blocks\.11\."):
        dv.build_dinov2("dinov2-vit-s14", path)


def test_bad_options_and_images_are_one_line_errors(extractors):
    with pytest.raises(ConfigError, match="unknown DINOv2 preprocessing 'tf1'; expected one of: dgm-eval, edm2, torch-fidelity"):
        dv.build_dinov2("dinov2-vit-s14", preprocessing="tf1")
    with pytest.raises(ConfigError, match="unknown DINOv2 model 'dinov2-vit-h14'"):
        dv.build_dinov2("dinov2-vit-h14")
    with pytest.raises(ConfigError, match=r"dinov2-vit-s14 takes images of at least 1x1 pixels .*got shape \(2, 3, 0, 5\)"):
        extractors["dgm-eval"](torch.zeros((2, 3, 0, 5), dtype=torch.uint8))
    with pytest.raises(ConfigError, match="uint8 images"):
        extractors["dgm-eval"](torch.zeros((2, 3, 8, 8)))
    assert extractors["dgm-eval"](torch.zeros((0, 3, 8, 8), dtype=torch.uint8)).features.shape == (0, 384)


def test_pil_resize_handles_an_empty_batch():
    assert dv.pil_bicubic_resize(torch.zeros((0, 3, 5, 5), dtype=torch.uint8), 224).shape == (0, 3, 224, 224)
    assert np.asarray(dv.pil_bicubic_resize(torch.full((1, 3, 5, 5), 7, dtype=torch.uint8), 9)).max() == 7
