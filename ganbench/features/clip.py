"""The OpenAI CLIP image encoders (CMMD's space): the projected image embedding of ViT-B/32, ViT-L/14 and ViT-L/14@336px.

`clip-vit-b32`, `clip-vit-l14`, `clip-vit-l14-336` give 512, 768 and 768-d embeddings: the class token after `ln_post`
times `proj`, what open_clip's `encode_image`, OpenAI's `encode_image`, transformers' `image_embeds` and
torch-fidelity's `clip-vit-*` return. The network is open_clip's vision tower, built from open_clip's model config with
OpenAI's QuickGELU; only the `visual.*` tensors of a CLIP checkpoint are used (the text tower is dropped).

The references differ in the resize and in whether the embedding is L2-normalised, so both are the protocol:

- "cmmd" (default): CMMD's official code (google-research/cmmd, Jayasumana et al. 2024): PIL centre crop to a square,
  PIL bicubic resize to the model's resolution (336 for clip-vit-l14-336, its model), u / 255, CLIP's mean/std; the
  embedding is divided by its L2 norm (`image_embs /= torch.linalg.norm(image_embs, axis=-1, keepdims=True)`).
- "open-clip": open_clip's preprocess for OpenAI models: torchvision Resize(shortest side, bicubic) and CenterCrop to
  the resolution, ToTensor, CLIP's mean/std; the raw (unnormalised) embedding, as `encode_image` returns it.
- "torch-fidelity": torch-fidelity's `FeatureExtractorCLIP`: its TF1-style bilinear resize to the resolution, then
  (u - 255 mean) / (255 std); the raw embedding (its `clip-fid` features).

On square images "cmmd" and "open-clip" feed the network the same pixels; they differ by the normalisation only.
Grayscale images are repeated to 3 channels; `gray_to_rgb` says so.

Weights, in order: the `weights` argument (`--clip-weights PATH`), `GANBENCH_CLIP_VIT_B32_WEIGHTS` (one variable per
model), open_clip's copy in the Hugging Face cache (`timm/vit_base_patch32_clip_224.openai`: open_clip_model.safetensors,
else open_clip_pytorch_model.bin), then a download of the safetensors file into that cache. OpenAI's own `.pt` files
(which torch-fidelity and the `clip` package download) are TorchScript archives that carry code: they are refused, and the
message names open_clip's copy of the same tensors. Never a substitute: no random initialisation, no other model.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ganbench.errors import ConfigError, DataUnavailableError, one_line
from ganbench.features.base import ExtractorOutput, FeatureExtractor, check_build_options, existing_weights_file
from ganbench.features.dinov2 import (
    check_image_size,
    file_sha256,
    hf_cached_file,
    layout_problems,
    load_tensor_file,
    normalize,
    weights_env,
)


@dataclass(frozen=True)
class ClipModel:
    open_clip_name: str  # open_clip's model config
    hf_repo: str  # the Hugging Face repository open_clip downloads OpenAI's weights from
    resolution: int
    feature_dim: int

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.hf_repo}/resolve/main/{SAFETENSORS_FILE}"


MODELS: dict[str, ClipModel] = {
    "clip-vit-b32": ClipModel("ViT-B-32", "timm/vit_base_patch32_clip_224.openai", 224, 512),
    "clip-vit-l14": ClipModel("ViT-L-14", "timm/vit_large_patch14_clip_224.openai", 224, 768),
    "clip-vit-l14-336": ClipModel("ViT-L-14-336", "timm/vit_large_patch14_clip_336.openai", 336, 768),
}

PREPROCESSINGS: dict[str, str] = {
    "cmmd": "CMMD: PIL centre crop and bicubic resize to the resolution, u / 255, CLIP mean/std; L2-normalised embedding",
    "open-clip": "open_clip: Resize(shortest side, bicubic) + CenterCrop, u / 255, CLIP mean/std; raw embedding",
    "torch-fidelity": "torch-fidelity clip-*: TF1-style bilinear resize, (u - 255 mean) / (255 std); raw embedding",
}
SAFETENSORS_FILE = "open_clip_model.safetensors"
PICKLE_FILE = "open_clip_pytorch_model.bin"
WEIGHTS_FLAG = "--clip-weights"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DOWNLOAD_PROBE_TIMEOUT_S = 10.0


class ClipExtractor(FeatureExtractor):
    """A CLIP image encoder under one preprocessing; build it with `build_clip`.

    `forward(images)` takes uint8 NCHW images (1 or 3 channels, any size of at least 1x1) and returns float32
    embeddings (N, feature_dim) and no logits. Images are independent, so batching changes them by float rounding only.
    """

    num_classes = None
    gray_to_rgb = "repeat"

    def __init__(self, name: str, network: torch.nn.Module, *, preprocessing: str, weights_sha256: str,
                 weights_path: Path, batch_size: int | None) -> None:
        super().__init__()
        self.name = name
        self.feature_dim = MODELS[name].feature_dim
        self.resolution = MODELS[name].resolution
        self.network = network
        self.preprocessing = preprocessing
        self.weights_sha256 = weights_sha256
        self.weights_path = weights_path
        self.batch_size = batch_size
        self.eval()

    def _forward(self, images: torch.Tensor) -> ExtractorOutput:
        check_image_size(images, self.name)
        if images.shape[0] == 0:  # open_clip's tower cannot reshape an empty batch
            return ExtractorOutput(features=torch.zeros((0, self.feature_dim)), logits=None)
        device = self.network.class_embedding.device
        chunks = images.split(self.batch_size) if self.batch_size else (images,)
        embeddings = torch.cat([self.network(preprocess(c, self.preprocessing, self.resolution, device)) for c in chunks])
        if self.preprocessing == "cmmd":
            embeddings = embeddings / torch.linalg.norm(embeddings, dim=-1, keepdim=True)
        return ExtractorOutput(features=embeddings.float(), logits=None)


def preprocess(images: torch.Tensor, preprocessing: str, resolution: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 NCHW (1 or 3 channels) -> the network's float32 (N, 3, resolution, resolution) input."""
    rgb = images.expand(-1, 3, -1, -1)
    if preprocessing in ("cmmd", "open-clip"):
        crop = pil_center_crop_resize if preprocessing == "cmmd" else pil_resize_center_crop
        x = crop(rgb, resolution).to(device).float().div(255)
        return normalize(x, CLIP_MEAN, CLIP_STD)
    if preprocessing == "torch-fidelity":
        from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

        x = interpolate_bilinear_2d_like_tensorflow1x(rgb.to(device).float(), size=(resolution, resolution), align_corners=False)
        return normalize(x, [255 * m for m in CLIP_MEAN], [255 * s for s in CLIP_STD])
    raise ConfigError(f"unknown CLIP preprocessing {preprocessing!r}; expected one of {', '.join(PREPROCESSINGS)}")


def _through_pil(images: torch.Tensor, transform) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> uint8 (N, 3, R, R), `transform` applied to each image as a PIL RGB image."""
    import numpy as np
    from PIL import Image

    pixels = images.permute(0, 2, 3, 1).contiguous().cpu().numpy()
    return torch.stack([torch.from_numpy(np.array(transform(Image.fromarray(p, "RGB")))).permute(2, 0, 1) for p in pixels])


def pil_center_crop_resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """CMMD's `_center_crop_and_resize`: the centred square of side min(w, h), then PIL bicubic resize to `size`."""
    from PIL import Image

    def transform(image):
        w, h = image.size
        side = min(w, h)
        top, left = (h - side) // 2, (w - side) // 2
        return image.crop((left, top, left + side, top + side)).resize((size, size), resample=Image.Resampling.BICUBIC)

    return _empty(size) if images.shape[0] == 0 else _through_pil(images, transform)


def pil_resize_center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """open_clip's eval transform for OpenAI models: torchvision Resize(size, bicubic) of the shortest side, CenterCrop."""
    from torchvision import transforms

    transform = transforms.Compose([transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
                                    transforms.CenterCrop(size)])
    return _empty(size) if images.shape[0] == 0 else _through_pil(images, transform)


def _empty(size: int) -> torch.Tensor:
    return torch.zeros((0, 3, size, size), dtype=torch.uint8)


def build_clip(
    name: str,
    weights: str | Path | None = None,
    preprocessing: str = "cmmd",
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    *,
    download: bool = True,
) -> ClipExtractor:
    """The CLIP extractor `name` (a key of MODELS).

    weights: the weights file; None searches the variable, the Hugging Face cache, then downloads (see
    `resolve_clip_weights`). preprocessing: "cmmd", "open-clip" or "torch-fidelity" (module docstring). batch_size: the
    most images per network pass inside `forward` (None: all at once); it bounds memory, never the values. download:
    False never touches the network. Raises ConfigError for bad options, DataUnavailableError for weights that cannot
    be found or loaded.
    """
    if name not in MODELS:
        raise ConfigError(f"unknown CLIP model {name!r}; expected one of {', '.join(MODELS)} (--extractor)")
    if preprocessing not in PREPROCESSINGS:
        raise ConfigError(f"unknown CLIP preprocessing {preprocessing!r}; expected one of: "
                          f"{', '.join(PREPROCESSINGS)} (--clip-preprocessing)")
    device = check_build_options(name, batch_size, device)
    path = resolve_clip_weights(name, weights, download=download)
    sha256 = file_sha256(path)
    network = load_clip_network(name, path)
    extractor = ClipExtractor(name, network, preprocessing=preprocessing, weights_sha256=sha256, weights_path=path,
                              batch_size=batch_size)
    return extractor.to(device)


# The registry's builders, one per model.
def build_clip_vit_b32(**options) -> ClipExtractor:
    return build_clip("clip-vit-b32", **options)


def build_clip_vit_l14(**options) -> ClipExtractor:
    return build_clip("clip-vit-l14", **options)


def build_clip_vit_l14_336(**options) -> ClipExtractor:
    return build_clip("clip-vit-l14-336", **options)


# ---- the network and its weights ----

def clip_architecture(name: str) -> torch.nn.Module:
    """open_clip's vision tower for `name` with QuickGELU (OpenAI's activation), on the meta device: shapes only."""
    import open_clip
    from open_clip.model import _build_vision_tower  # open_clip's own config -> tower mapping, as create_model uses it

    config = open_clip.get_model_config(MODELS[name].open_clip_name)
    with torch.device("meta"):
        return _build_vision_tower(config["embed_dim"], config["vision_cfg"], quick_gelu=True)


def visual_state_dict(checkpoint: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A CLIP checkpoint in OpenAI's / open_clip's layout -> its vision tower's tensors (the `visual.` prefix removed)."""
    if any(k.startswith("visual.") for k in checkpoint):
        return {k[len("visual."):]: v for k, v in checkpoint.items() if k.startswith("visual.")}
    return dict(checkpoint)  # a vision tower saved on its own


def load_clip_network(name: str, path: Path) -> torch.nn.Module:
    """open_clip's vision tower for `name` holding exactly the `visual.*` tensors in `path` (float32, eval mode)."""
    spec = MODELS[name]
    expected = f"expected {SAFETENSORS_FILE} from hf.co/{spec.hf_repo} ({spec.url})"
    if _is_torchscript(path):
        raise DataUnavailableError(f"{path} is OpenAI's TorchScript archive, which carries code and is not loaded; use "
                                   f"open_clip's copy of the same tensors: {expected}")
    state = visual_state_dict(load_tensor_file(path, expected))
    model = clip_architecture(name)
    problems = layout_problems(model, state)
    if problems:
        raise DataUnavailableError(f"{path} does not hold the {name} image tower: {'; '.join(problems)}; {expected}")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files with a `constants.pkl` or `code/` entry, which torch.save never writes."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith("/constants.pkl") or "/code/" in n for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def resolve_clip_weights(name: str, weights: str | Path | None = None, *, download: bool = True) -> Path:
    """The weights file: the argument, else $GANBENCH_<NAME>_WEIGHTS, else open_clip's Hugging Face cache, else a
    download into that cache. An explicit path that does not exist is an error, never a reason to look further."""
    spec = MODELS[name]
    expected = f"expected the {name} weights {SAFETENSORS_FILE} from hf.co/{spec.hf_repo}"
    if weights is not None:
        return existing_weights_file(Path(weights).expanduser(), f"{WEIGHTS_FLAG} {weights}", expected)
    env = weights_env(name)
    if os.environ.get(env):
        return existing_weights_file(Path(os.environ[env]).expanduser(), f"{env}={os.environ[env]}", expected)
    for file_name in (SAFETENSORS_FILE, PICKLE_FILE):
        cached = hf_cached_file(spec.hf_repo, file_name)
        if cached is not None:
            return cached
    message = (f"the {name} weights {SAFETENSORS_FILE} of hf.co/{spec.hf_repo} are not in the Hugging Face cache, and "
               f"downloading {spec.url} failed ({{reason}}). Run `hf download {spec.hf_repo} {SAFETENSORS_FILE}` on a "
               f"machine with internet and copy its Hugging Face cache here, or pass {WEIGHTS_FLAG} PATH, or set {env}=PATH")
    if not download:
        raise DataUnavailableError(message.format(reason="downloads are disabled"))
    return _download_from_hugging_face(spec.hf_repo, spec.url, message)


def _download_from_hugging_face(repo: str, url: str, message: str) -> Path:
    """open_clip's file into the Hugging Face cache; a short request first makes an offline machine fail in seconds."""
    import urllib.request

    try:
        from huggingface_hub import hf_hub_download

        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD", headers={"User-Agent": "ganbench"}),
                                    timeout=DOWNLOAD_PROBE_TIMEOUT_S):
            pass
        return Path(hf_hub_download(repo, SAFETENSORS_FILE))
    except ImportError as error:
        raise DataUnavailableError(message.format(reason="huggingface_hub is not installed")) from error
    except Exception as error:  # URLError, HTTPError, timeouts and huggingface_hub's own errors
        raise DataUnavailableError(message.format(reason=f"{type(error).__name__}: {one_line(error, 120)}")) from error
