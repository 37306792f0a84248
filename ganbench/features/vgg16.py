"""The VGG16 extractor of precision/recall: torchvision's ImageNet VGG16 at fc2 after its ReLU (4096-d), as
torch-fidelity's `prc` uses it (`FeatureExtractorVGG16`, feature "fc2_relu").

Preprocessing "tf1-224", torch-fidelity's forward unchanged: uint8 -> float32 values 0..255, TensorFlow-1.x-exact
bilinear resize to 224x224 (torch-fidelity's `interpolate_bilinear_2d_like_tensorflow1x`, align_corners=False),
ImageNet normalisation scaled to 0..255 ((u - 255 mean) / (255 std)), torchvision's `vgg16` up to the second fully
connected layer, then ReLU. Grayscale images are repeated to 3 channels first (torch-fidelity takes RGB only);
`gray_to_rgb = "repeat"` records it. Kynkaanniemi et al. 2019 and StyleGAN2-ADA's `pr50k3` use NVIDIA's TorchScript
port of the original VGG16 instead: a different network, not offered here.

Weights (torchvision's IMAGENET1K_V1 file `vgg16-397923af.pth`, which torch-fidelity loads through torchvision) come
from, in order: the `weights` argument (`--vgg16-weights PATH`), the GANBENCH_VGG16_WEIGHTS variable, the torch hub
cache (`<torch hub dir>/checkpoints/vgg16-397923af.pth`, where torchvision and torch-fidelity keep it), then a
download into that cache. A file under torchvision's name must carry the sha256 its name begins with; nothing else
is ever substituted.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import torch

from ganbench.errors import ConfigError, DataUnavailableError, one_line
from ganbench.features.base import ExtractorOutput, FeatureExtractor, existing_weights_file
from ganbench.safeload import load_error_detail

WEIGHTS_FILE = "vgg16-397923af.pth"  # torchvision's VGG16_Weights.IMAGENET1K_V1, in <torch hub dir>/checkpoints
WEIGHTS_URL = f"https://download.pytorch.org/models/{WEIGHTS_FILE}"
WEIGHTS_SHA256_PREFIX = "397923af"  # torchvision names its files after the start of their sha256
WEIGHTS_ENV = "GANBENCH_VGG16_WEIGHTS"
WEIGHTS_FLAG = "--vgg16-weights"
DOWNLOAD_PROBE_TIMEOUT_S = 10.0
_EXPECTED = f"expected torchvision's ImageNet VGG16 weights {WEIGHTS_FILE} (from {WEIGHTS_URL})"
INPUT_SIZE = 224
PREPROCESSING = "tf1-224"
_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet statistics, which torch-fidelity scales by 255
_STD = (0.229, 0.224, 0.225)
_CLASSIFIER_TAIL = (6, 5, 4)  # fc3, dropout, ReLU after fc2: removed, as torch-fidelity removes them


class VGG16Extractor(FeatureExtractor):
    """torch-fidelity's `vgg16` fc2_relu features (N, 4096), no logits; build it with `build_vgg16`."""

    name = "vgg16"
    preprocessing = PREPROCESSING
    feature_dim = 4096
    num_classes = None
    gray_to_rgb = "repeat"

    def __init__(self, network: torch.nn.Module, *, weights_sha256: str, weights_path: Path, batch_size: int | None) -> None:
        super().__init__()
        self.network = network
        self.weights_sha256 = weights_sha256
        self.weights_path = weights_path
        self.batch_size = batch_size
        self.register_buffer("mean", 255 * torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", 255 * torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def train(self, mode: bool = True) -> VGG16Extractor:
        """Stays in eval mode: the classifier's dropout must be off, or features would be random."""
        return super().train(False)

    def _forward(self, images: torch.Tensor) -> ExtractorOutput:
        device = self.mean.device
        chunks = images.split(self.batch_size) if self.batch_size else (images,)
        return ExtractorOutput(torch.cat([self._forward_batch(chunk.to(device)) for chunk in chunks]), None)

    def _forward_batch(self, images: torch.Tensor) -> torch.Tensor:
        from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

        x = images.expand(-1, 3, -1, -1).to(torch.float32)
        x = interpolate_bilinear_2d_like_tensorflow1x(x, size=(INPUT_SIZE, INPUT_SIZE), align_corners=False)
        # torchvision's normalize computes (x - mean) / std, in that order
        return torch.relu(self.network((x - self.mean) / self.std)).float()


def build_vgg16(
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    *,
    download: bool = True,
) -> VGG16Extractor:
    """The VGG16 fc2_relu extractor. weights: a file path, or None to search (module docstring); batch_size: the most
    images per network pass (bounds memory, never the values). Raises ConfigError for bad options and
    DataUnavailableError for weights that cannot be found, downloaded or loaded."""
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ConfigError(f"VGG16 batch_size must be a positive integer or None, got {batch_size!r}")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ConfigError(f"invalid device {device!r} for the VGG16 extractor: {error}") from error
    path = resolve_vgg16_weights(weights, download=download)
    network, sha256 = load_vgg16_network(path)
    return VGG16Extractor(network, weights_sha256=sha256, weights_path=path, batch_size=batch_size).to(device)


def hub_weights_path() -> Path:
    """Where torchvision (and so torch-fidelity) caches the weights: <torch.hub.get_dir()>/checkpoints/<file>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def resolve_vgg16_weights(weights: str | Path | None = None, *, download: bool = True) -> Path:
    """The argument, else $GANBENCH_VGG16_WEIGHTS, else the hub cache, else a download. An explicit path must exist."""
    if weights is not None:
        return existing_weights_file(Path(weights).expanduser(), f"{WEIGHTS_FLAG} {weights}", _EXPECTED)
    from_env = os.environ.get(WEIGHTS_ENV)
    if from_env:
        return existing_weights_file(Path(from_env).expanduser(), f"{WEIGHTS_ENV}={from_env}", _EXPECTED)
    target = hub_weights_path()
    if target.is_file():
        return target
    if not download:
        raise DataUnavailableError(_missing_weights_message("downloads are disabled"))
    _download_weights(target)
    return target


def _missing_weights_message(reason: str) -> str:
    target = hub_weights_path()
    return (
        f"the VGG16 weights {WEIGHTS_FILE} are not available: not found at {target}, and downloading {WEIGHTS_URL} "
        f"failed ({reason}). Download that URL on a machine with internet and put the file at {target}, or pass "
        f"{WEIGHTS_FLAG} PATH, or set {WEIGHTS_ENV}=PATH"
    )


def _download_weights(target: Path) -> None:
    """torchvision's file into the hub cache (torch.hub writes a temporary file, then moves it); a short request
    first, because torch.hub opens the URL without a timeout and an offline machine would hang."""
    import urllib.request

    try:
        request = urllib.request.Request(WEIGHTS_URL, headers={"User-Agent": "ganbench"})
        with urllib.request.urlopen(request, timeout=DOWNLOAD_PROBE_TIMEOUT_S):
            pass
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(WEIGHTS_URL, str(target), hash_prefix=WEIGHTS_SHA256_PREFIX, progress=True)
    except (OSError, RuntimeError) as error:  # URLError, HTTPError, timeouts; RuntimeError: a hash mismatch
        raise DataUnavailableError(_missing_weights_message(f"{type(error).__name__}: {one_line(error)}")) from error


def load_vgg16_network(path: Path) -> tuple[torch.nn.Module, str]:
    """torchvision's vgg16 with the tensors in `path`, classifier cut after fc2, and the sha256 of the bytes loaded.

    The file is read once, hashed, and loaded with weights_only=True (torch-fidelity unpickles it with
    weights_only=False). The network is built on the meta device and takes the loaded tensors as they are, so the
    138M parameters are neither randomly initialised first nor held twice.
    """
    import torchvision

    raw = path.read_bytes()
    sha256 = hashlib.sha256(raw).hexdigest()
    expected = f"expected torchvision's ImageNet VGG16 weights {WEIGHTS_FILE} from {WEIGHTS_URL}"
    if path.name == WEIGHTS_FILE and not sha256.startswith(WEIGHTS_SHA256_PREFIX):
        raise DataUnavailableError(f"{path} has sha256 {sha256[:12]}..., not the {WEIGHTS_SHA256_PREFIX}... its name "
                                   f"promises (a partial or different file); delete it, or {expected}")
    try:
        state_dict = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types (UnpicklingError, RuntimeError, EOFError, ...)
        raise DataUnavailableError(f"{path} is not a loadable weights-only tensor file ({load_error_detail(error)}); "
                                   f"{expected}") from error
    del raw
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise DataUnavailableError(f"{path} holds a {type(state_dict).__name__}, not a state dict of tensors; {expected}")
    with torch.device("meta"):
        network = torchvision.models.vgg16(weights=None)
    try:
        network.load_state_dict(state_dict, strict=True, assign=True)
    except RuntimeError as error:  # missing, unexpected or mis-shaped tensors
        raise DataUnavailableError(f"{path} does not hold the VGG16 tensors ({one_line(error, 300)}); {expected}") from error
    for index in _CLASSIFIER_TAIL:
        del network.classifier[index]
    network.float().requires_grad_(False).eval()
    return network, sha256
