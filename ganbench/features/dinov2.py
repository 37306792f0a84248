"""The DINOv2 ViT/14 extractors (FD_DINOv2): the final-norm CLS token of Oquab et al.'s self-supervised ViTs.

`dinov2-vit-s14`, `-b14`, `-l14`, `-g14` give 384, 768, 1024 and 1536-d features: what `torch.hub.load(
"facebookresearch/dinov2", "dinov2_vitX14")(x)` returns (its head is the identity), the features dgm-eval, EDM2's
FD_DINOv2 (on ViT-L/14) and torch-fidelity's `dinov2-vit-*-14` use. The network is timm's `vit_*_patch14_dinov2` built
for 224x224 input, never code fetched by torch.hub. The official checkpoint maps onto it key for key (`mask_token`, a
training-only tensor, is dropped; ViT-g's SwiGLU `mlp.w12`/`mlp.w3` are timm's `mlp.fc1`/`mlp.fc2`), except `pos_embed`:
it is stored for 518 px (37x37 patches), and the hub model resizes it on every call for 224 px input with
`interpolate_pos_encoding` (bicubic, scale factor (16 + 0.1) / 37, no antialiasing). It is resized here once, at load,
by the same call; timm's own loader would antialias and target 16/37, and give other features.

Every reference feeds the network 224x224 ImageNet-normalised RGB; they differ in the resize, so it is the protocol:

- "dgm-eval" (default): dgm-eval, and EDM2's `resize_mode='pil'`: each image through PIL, `resize((224, 224), BICUBIC)`
  (antialiased, rounded to uint8), then u / 255 and (x - mean) / std with ImageNet's mean and std.
- "edm2": EDM2's default `resize_mode='torch'`: torch bicubic `F.interpolate(..., antialias=True)` of the float values
  to 224 (no rounding), then the same scaling. EDM2 calls it "almost the same results" as dgm-eval; it is not equal.
- "torch-fidelity": torch-fidelity's `FeatureExtractorDinoV2`: its TF1-style bilinear resize to 224, then
  (u - 255 mean) / (255 std).

Grayscale images are repeated to 3 channels (PIL's convert("RGB"), as dgm-eval's loader does); `gray_to_rgb` says so.

Weights, in order: the `weights` argument (`--dinov2-weights PATH`), `GANBENCH_DINOV2_VIT_S14_WEIGHTS` (one variable per
model), the torch hub cache the references fill (`<hub>/checkpoints/dinov2_vits14_pretrain.pth`), timm's copy in the
Hugging Face cache (`timm/vit_small_patch14_dinov2.lvd142m`, model.safetensors: the same tensors, another file hash),
then a download of the official file into the hub cache. Never a substitute: no random initialisation, no other model.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ganbench.errors import ConfigError, DataUnavailableError, one_line
from ganbench.features.base import ExtractorOutput, FeatureExtractor, check_build_options, existing_weights_file


@dataclass(frozen=True)
class DinoV2Model:
    timm_name: str  # timm's architecture
    hub_name: str  # facebookresearch/dinov2's hub entry, which names the official file
    feature_dim: int
    depth: int

    @property
    def file_name(self) -> str:
        return f"{self.hub_name}_pretrain.pth"

    @property
    def url(self) -> str:
        return f"https://dl.fbaipublicfiles.com/dinov2/{self.hub_name}/{self.file_name}"

    @property
    def hf_repo(self) -> str:
        return f"timm/{self.timm_name}.lvd142m"


MODELS: dict[str, DinoV2Model] = {
    "dinov2-vit-s14": DinoV2Model("vit_small_patch14_dinov2", "dinov2_vits14", 384, 12),
    "dinov2-vit-b14": DinoV2Model("vit_base_patch14_dinov2", "dinov2_vitb14", 768, 12),
    "dinov2-vit-l14": DinoV2Model("vit_large_patch14_dinov2", "dinov2_vitl14", 1024, 24),
    "dinov2-vit-g14": DinoV2Model("vit_giant_patch14_dinov2", "dinov2_vitg14", 1536, 40),
}

PREPROCESSINGS: dict[str, str] = {
    "dgm-eval": "dgm-eval / EDM2 resize_mode='pil': PIL bicubic resize of uint8 RGB to 224, u / 255, ImageNet mean/std",
    "edm2": "EDM2 resize_mode='torch' (its default): torch bicubic antialiased resize to 224, u / 255, ImageNet mean/std",
    "torch-fidelity": "torch-fidelity dinov2-vit-*-14: TF1-style bilinear resize to 224, (u - 255 mean) / (255 std)",
}
WEIGHTS_FLAG = "--dinov2-weights"
INPUT_SIZE = 224
PATCH = 14
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
POS_EMBED_OFFSET = 0.1  # dinov2's interpolate_offset for its hub models, a kludge kept for backward compatibility
DOWNLOAD_PROBE_TIMEOUT_S = 10.0


def weights_env(name: str) -> str:
    """The variable naming extractor `name`'s weights file: GANBENCH_<NAME>_WEIGHTS (as GANBENCH_INCEPTION_WEIGHTS)."""
    return f"GANBENCH_{name.upper().replace('-', '_')}_WEIGHTS"


class DinoV2Extractor(FeatureExtractor):
    """A DINOv2 ViT/14 under one preprocessing; build it with `build_dinov2`.

    `forward(images)` takes uint8 NCHW images (1 or 3 channels, any size of at least 1x1) and returns float32 CLS
    features (N, feature_dim) and no logits. Images are independent (layer norm, no batch statistics), so batching
    changes the features by float rounding only.
    """

    num_classes = None
    gray_to_rgb = "repeat"

    def __init__(self, name: str, network: torch.nn.Module, *, preprocessing: str, weights_sha256: str,
                 weights_path: Path, batch_size: int | None) -> None:
        super().__init__()
        self.name = name
        self.feature_dim = MODELS[name].feature_dim
        self.network = network
        self.preprocessing = preprocessing
        self.weights_sha256 = weights_sha256
        self.weights_path = weights_path
        self.batch_size = batch_size
        self.eval()

    def _forward(self, images: torch.Tensor) -> ExtractorOutput:
        check_image_size(images, self.name)
        device = self.network.cls_token.device
        chunks = images.split(self.batch_size) if self.batch_size else (images,)
        features = [self.network.forward_features(preprocess(chunk, self.preprocessing, device))[:, 0] for chunk in chunks]
        return ExtractorOutput(features=torch.cat(features).float(), logits=None)


def check_image_size(images: torch.Tensor, name: str) -> None:
    """A resize needs at least one pixel each way; an empty image would otherwise fail deep inside PIL or torch."""
    if images.shape[-2] < 1 or images.shape[-1] < 1:
        raise ConfigError(f"{name} takes images of at least 1x1 pixels (they are resized), got shape {tuple(images.shape)}")


def preprocess(images: torch.Tensor, preprocessing: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 NCHW (1 or 3 channels) -> the network's float32 (N, 3, 224, 224) input under `preprocessing`."""
    rgb = images.expand(-1, 3, -1, -1)
    if preprocessing == "dgm-eval":
        x = pil_bicubic_resize(rgb, INPUT_SIZE).to(device).float().div(255)
        return normalize(x, IMAGENET_MEAN, IMAGENET_STD)
    if preprocessing == "edm2":
        x = F.interpolate(rgb.to(device).float(), size=(INPUT_SIZE, INPUT_SIZE), mode="bicubic", antialias=True)
        return normalize(x / 255, IMAGENET_MEAN, IMAGENET_STD)
    if preprocessing == "torch-fidelity":
        from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

        x = interpolate_bilinear_2d_like_tensorflow1x(rgb.to(device).float(), size=(INPUT_SIZE, INPUT_SIZE), align_corners=False)
        return normalize(x, [255 * m for m in IMAGENET_MEAN], [255 * s for s in IMAGENET_STD])
    raise ConfigError(f"unknown DINOv2 preprocessing {preprocessing!r}; expected one of {', '.join(PREPROCESSINGS)}")


def pil_bicubic_resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> uint8 (N, 3, size, size), each image through PIL's antialiased bicubic resize.

    This is what the references do, image by image; torch's bicubic (antialias=True) is close but not equal, and PIL
    rounds to uint8 in between."""
    import numpy as np
    from PIL import Image

    pixels = images.permute(0, 2, 3, 1).contiguous().cpu().numpy()
    resized = [np.asarray(Image.fromarray(p, "RGB").resize((size, size), Image.Resampling.BICUBIC)) for p in pixels]
    out = torch.from_numpy(np.stack(resized)) if resized else torch.zeros((0, size, size, 3), dtype=torch.uint8)
    return out.permute(0, 3, 1, 2)


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """(x - mean) / std per channel in float32, as torchvision's Normalize computes it."""
    mean = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def build_dinov2(
    name: str,
    weights: str | Path | None = None,
    preprocessing: str = "dgm-eval",
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    *,
    download: bool = True,
) -> DinoV2Extractor:
    """The DINOv2 extractor `name` (a key of MODELS).

    weights: the weights file; None searches the variable, the caches, then downloads (see `resolve_dinov2_weights`).
    preprocessing: "dgm-eval", "edm2" or "torch-fidelity" (module docstring). batch_size: the most images per network
    pass inside `forward` (None: all at once); it bounds memory, never the values. download: False never touches the
    network. Raises ConfigError for bad options, DataUnavailableError for weights that cannot be found or loaded.
    """
    if name not in MODELS:
        raise ConfigError(f"unknown DINOv2 model {name!r}; expected one of {', '.join(MODELS)} (--extractor)")
    if preprocessing not in PREPROCESSINGS:
        raise ConfigError(f"unknown DINOv2 preprocessing {preprocessing!r}; expected one of: "
                          f"{', '.join(PREPROCESSINGS)} (--dinov2-preprocessing)")
    device = check_build_options(name, batch_size, device)
    path = resolve_dinov2_weights(name, weights, download=download)
    sha256 = file_sha256(path)
    network = load_dinov2_network(name, path)
    extractor = DinoV2Extractor(name, network, preprocessing=preprocessing, weights_sha256=sha256, weights_path=path,
                                batch_size=batch_size)
    return extractor.to(device)


# The registry's builders, one per model (its "module:function" entries name what they build).
def build_dinov2_vit_s14(**options) -> DinoV2Extractor:
    return build_dinov2("dinov2-vit-s14", **options)


def build_dinov2_vit_b14(**options) -> DinoV2Extractor:
    return build_dinov2("dinov2-vit-b14", **options)


def build_dinov2_vit_l14(**options) -> DinoV2Extractor:
    return build_dinov2("dinov2-vit-l14", **options)


def build_dinov2_vit_g14(**options) -> DinoV2Extractor:
    return build_dinov2("dinov2-vit-g14", **options)


# ---- the network and its weights ----

def dinov2_architecture(name: str) -> torch.nn.Module:
    """timm's DINOv2 ViT for 224 px input, on the meta device: shapes only, no memory, no random initialisation."""
    import timm

    with torch.device("meta"):
        return timm.create_model(MODELS[name].timm_name, pretrained=False, img_size=INPUT_SIZE, num_classes=0)


def timm_state_dict(official: dict[str, torch.Tensor], grid: int = INPUT_SIZE // PATCH) -> dict[str, torch.Tensor]:
    """facebookresearch/dinov2's checkpoint (or timm's copy of it) -> timm's names, pos_embed resized for `grid`^2 patches."""
    mapped = {}
    for key, value in official.items():
        if key == "mask_token":  # masked-image-modelling token: used in training only
            continue
        mapped[re.sub(r"^(blocks\.\d+\.mlp\.)w12\.", r"\1fc1.", re.sub(r"^(blocks\.\d+\.mlp\.)w3\.", r"\1fc2.", key))] = value
    if "pos_embed" in mapped:
        mapped["pos_embed"] = interpolate_pos_embed(mapped["pos_embed"], grid)
    return mapped


def interpolate_pos_embed(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """dinov2's `interpolate_pos_encoding` for a square input of `grid` x `grid` patches, as its hub models run it.

    pos_embed: (1, 1 + M*M, D). Unchanged when M == grid (dinov2 skips the resize then); otherwise the patch part is
    resized by bicubic interpolation with scale factor (grid + 0.1) / M and no antialiasing, in float32."""
    n = pos_embed.shape[1] - 1
    m = math.isqrt(n)
    if m * m != n:
        raise ValueError(f"pos_embed holds {n} patch positions, not a square grid")
    if m == grid:
        return pos_embed
    dim = pos_embed.shape[-1]
    pos = pos_embed.float()
    scale = float(grid + POS_EMBED_OFFSET) / m
    patches = F.interpolate(pos[:, 1:].reshape(1, m, m, dim).permute(0, 3, 1, 2), scale_factor=(scale, scale),
                            mode="bicubic", antialias=False)
    assert patches.shape[-2:] == (grid, grid)
    return torch.cat((pos[:, :1], patches.permute(0, 2, 3, 1).reshape(1, grid * grid, dim)), dim=1)


def layout_problems(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> list[str]:
    """What keeps `state_dict` from loading into `model` exactly: missing, unexpected and mis-shaped tensors."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    misshaped = [f"{k} {tuple(state_dict[k].shape)} for {tuple(v.shape)}" for k, v in expected.items()
                 if k in state_dict and state_dict[k].shape != v.shape]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if keys:
            problems.append(f"{len(keys)} {label} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
    return problems


def load_dinov2_network(name: str, path: Path) -> torch.nn.Module:
    """timm's network for `name` holding exactly the tensors in `path` (float32, eval mode, no gradients)."""
    spec = MODELS[name]
    state = load_tensor_file(path, f"expected the {name} weights {spec.file_name} from {spec.url}")
    model = dinov2_architecture(name)
    try:
        mapped = timm_state_dict(state)
    except ValueError as error:
        raise DataUnavailableError(f"{path} does not hold the {name} tensors ({error}); expected {spec.file_name} "
                                   f"from {spec.url}") from error
    problems = layout_problems(model, mapped)
    if problems:
        raise DataUnavailableError(f"{path} does not hold the {name} tensors: {'; '.join(problems)}; expected "
                                   f"{spec.file_name} from {spec.url}")
    model.load_state_dict({k: v.float() for k, v in mapped.items()}, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def resolve_dinov2_weights(name: str, weights: str | Path | None = None, *, download: bool = True) -> Path:
    """The weights file: the argument, else $GANBENCH_<NAME>_WEIGHTS, else the hub cache, else timm's Hugging Face copy,
    else a download of the official file into the hub cache. An explicit path that does not exist is an error."""
    spec = MODELS[name]
    expected = f"expected the {name} weights {spec.file_name} from {spec.url}"
    if weights is not None:
        return existing_weights_file(Path(weights).expanduser(), f"{WEIGHTS_FLAG} {weights}", expected)
    env = weights_env(name)
    if os.environ.get(env):
        return existing_weights_file(Path(os.environ[env]).expanduser(), f"{env}={os.environ[env]}", expected)
    target = hub_checkpoint(spec.file_name)
    if target.is_file():
        return target
    cached = hf_cached_file(spec.hf_repo, "model.safetensors")
    if cached is not None:
        return cached
    message = (f"the {name} weights {spec.file_name} are not available: not at {target} (nor timm's copy "
               f"hf.co/{spec.hf_repo} in the Hugging Face cache), and downloading {spec.url} failed ({{reason}}). "
               f"Download that URL on a machine with internet and put the file at {target}, or pass {WEIGHTS_FLAG} "
               f"PATH, or set {env}=PATH")
    if not download:
        raise DataUnavailableError(message.format(reason="downloads are disabled"))
    download_file(spec.url, target, message)
    return target


# ---- weights files: shared with the CLIP extractors ----

def hub_checkpoint(file_name: str) -> Path:
    """Where torch.hub's load_state_dict_from_url caches `file_name`: <torch.hub.get_dir()>/checkpoints/."""
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def hf_cached_file(repo: str, file_name: str) -> Path | None:
    """`file_name` of Hugging Face repository `repo` when the Hugging Face cache holds it (no network), else None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # not installed: then nothing can be in its cache either
        return None
    found = try_to_load_from_cache(repo, file_name)
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def file_sha256(path: Path) -> str:
    """sha256 of the file, read in 16 MiB blocks: ViT-g's 4.5 GB never sit in memory twice."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def load_tensor_file(path: Path, expected: str) -> dict[str, torch.Tensor]:
    """A flat name -> tensor dict from a .safetensors file or a torch file read by `ganbench.safeload` (no code runs)."""
    from ganbench.errors import CheckpointError
    from ganbench.safeload import load_tensors

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = load_tensors(path, "weights file")
    except CheckpointError as error:  # the safe loader's one-line reason, without torch's advice to switch it off
        raise DataUnavailableError(f"{error}; {expected}") from error
    except Exception as error:  # safetensors raises its own SafetensorError, OSError, ...
        raise DataUnavailableError(f"{path} is not a loadable safetensors file ({type(error).__name__}: "
                                   f"{one_line(error)}); {expected}") from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataUnavailableError(f"{path} holds a {type(state).__name__}, not a flat state dict of tensors; {expected}")
    return state


def download_file(url: str, target: Path, message: str) -> None:
    """Fetch `url` to `target` with torch.hub (atomic: temp file, then move); `message` has a {reason} slot.

    torch.hub opens the URL without a timeout, so a short request first makes an offline machine fail in seconds."""
    import urllib.request

    try:
        request = urllib.request.Request(url, headers={"User-Agent": "ganbench"})
        with urllib.request.urlopen(request, timeout=DOWNLOAD_PROBE_TIMEOUT_S):
            pass
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(target), progress=True)
    except (OSError, RuntimeError) as error:  # URLError, HTTPError and timeouts are OSErrors
        raise DataUnavailableError(message.format(reason=f"{type(error).__name__}: {one_line(error, 120)}")) from error
