"""The `lenet-fashion-mnist` and `lenet-mnist` extractors: a small CNN classifier trained by ganbench.

Inception features describe ImageNet photographs; for 28x28 grayscale digits and clothes a classifier
trained on the domain itself gives features and class predictions that mean something (the
"domain-specific FID" and class-coverage metrics of the GAN-evaluation literature). The network:

    conv 5x5 1->16, ReLU, maxpool 2    (28x28 -> 14x14)
    conv 5x5 16->32, ReLU, maxpool 2   (14x14 -> 7x7)
    fc 1568->256, ReLU, dropout        fc 256->128, ReLU  => features (128-d, penultimate layer)
    fc 128->10                         => logits

Preprocessing `lenet-28-gray-unit` (a protocol name, stored with every feature set):
    - 28x28 only: any other size is refused (no silent resize);
    - 3-channel images become gray as PIL's "L" mode does, round(0.299 R + 0.587 G + 0.114 B), so an
      RGB image whose channels are equal gives exactly the 1-channel image;
    - u / 255, then (x - mean) / std with the training split's mean and std, stored in the weights file.

Weights (a plain dict, `torch.load(weights_only=True)`): `lenet-fashion-mnist` ships inside the
package (`ganbench/features/weights/`); `lenet-mnist` is trained on first use where MNIST is available
and cached in `$GANBENCH_CACHE/weights/` (default `$XDG_CACHE_HOME/ganbench/weights`, else
`~/.cache/ganbench/weights`). An explicit `weights=` path always wins.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import torch
from torch import nn

from ganbench.errors import CheckpointError, ConfigError, DataUnavailableError, one_line
from ganbench.features.base import ExtractorOutput, FeatureExtractor
from ganbench.safeload import load_tensors

WEIGHTS_FORMAT = "ganbench.lenet"
WEIGHTS_FORMAT_VERSION = 1
ARCHITECTURE = "lenet-c16-c32-f256-f128"
PREPROCESSING = "lenet-28-gray-unit"
FEATURE_DIM = 128
NUM_CLASSES = 10
IMAGE_SIZE = 28
PACKAGE_WEIGHTS_DIR = Path(__file__).parent / "weights"
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's convert("L")
_REQUIRED = ("format", "format_version", "architecture", "dataset", "normalization", "state_dict")


class LeNet(nn.Module):
    """Normalised float images (B, 1, 28, 28) -> (features (B, 128), logits (B, 10))."""

    def __init__(self, dropout: float = 0.3):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 7 * 7, 256),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(256, FEATURE_DIM),
            nn.ReLU(),
        )
        self.head = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        return features, self.head(features)


def dataset_normalization(images: torch.Tensor) -> dict[str, float]:
    """Mean and std of u/255 over a uint8 training split: the constants of the preprocessing."""
    x = images.to(torch.float64).div_(255.0)
    return {"mean": float(x.mean()), "std": float(x.std())}


def normalize(images: torch.Tensor, normalization: dict[str, float]) -> torch.Tensor:
    """uint8 (B, 1, H, W) 0..255 -> float32 (u / 255 - mean) / std on the images' device."""
    return images.to(torch.float32).div_(255.0).sub_(normalization["mean"]).div_(normalization["std"])


def to_gray(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> uint8 (B, 1, H, W) by round(0.299 R + 0.587 G + 0.114 B); 1 channel passes through."""
    if images.shape[1] == 1:
        return images
    weights = torch.tensor(_LUMA, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    luma = (images.to(torch.float32) * weights).sum(dim=1, keepdim=True)
    return luma.round_().clamp_(0, 255).to(torch.uint8)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_weights_cache() -> Path:
    """$GANBENCH_CACHE/weights, else $XDG_CACHE_HOME/ganbench/weights, else ~/.cache/ganbench/weights."""
    root = os.environ.get("GANBENCH_CACHE")
    if root:
        return Path(root) / "weights"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ganbench" / "weights"


def weights_file_name(dataset: str) -> str:
    return f"lenet-{dataset}.pt"


def load_lenet_weights(path: str | Path, dataset: str | None = None) -> dict:
    """Load and validate a lenet weights dict with weights_only=True; `dataset` checks what it was trained on."""
    path = Path(path)
    if not path.is_file():
        raise DataUnavailableError(f"lenet weights file {path} does not exist (weights=)")
    if not zipfile.is_zipfile(path):  # torch.save writes zip archives; anything else would reach the legacy unpickler
        raise CheckpointError(f"lenet weights file {path} is corrupt or truncated (not a torch.save zip archive)")
    state = load_tensors(path, "lenet weights file")
    if not isinstance(state, dict) or state.get("format") != WEIGHTS_FORMAT:
        raise CheckpointError(
            f"{path} is not a ganbench lenet weights file (no format={WEIGHTS_FORMAT!r} marker); "
            "produce one with `ganbench train classifier`"
        )
    missing = [key for key in _REQUIRED if key not in state]
    if missing:
        raise CheckpointError(f"lenet weights file {path} lacks {', '.join(missing)}")
    if state["format_version"] > WEIGHTS_FORMAT_VERSION:
        raise CheckpointError(
            f"lenet weights file {path} has format version {state['format_version']}, this ganbench reads up to "
            f"{WEIGHTS_FORMAT_VERSION}; upgrade ganbench"
        )
    if state["architecture"] != ARCHITECTURE:
        raise CheckpointError(
            f"lenet weights file {path} holds architecture {state['architecture']!r}, expected {ARCHITECTURE!r}"
        )
    if dataset is not None and state["dataset"] != dataset:
        raise CheckpointError(
            f"lenet weights file {path} was trained on {state['dataset']}, but this extractor is lenet-{dataset}; "
            f"use --extractor lenet-{state['dataset']} or weights trained on {dataset}"
        )
    return state


class LeNetExtractor(FeatureExtractor):
    """uint8 (N, 1 or 3, 28, 28) -> features (N, 128) penultimate activations, logits (N, 10), on the extractor's device."""

    preprocessing = PREPROCESSING
    feature_dim = FEATURE_DIM
    num_classes = NUM_CLASSES
    rgb_to_gray = "bt601-round"  # round(0.299 R + 0.587 G + 0.114 B), PIL's convert("L")

    def __init__(self, state: dict, weights_sha256: str, device: str | torch.device = "cpu"):
        super().__init__()
        self.name = f"lenet-{state['dataset']}"
        self.weights_sha256 = weights_sha256
        self.dataset = state["dataset"]
        self.normalization = {k: float(state["normalization"][k]) for k in ("mean", "std")}
        self.test_accuracy = state.get("test_accuracy")
        self.net = LeNet()
        try:
            self.net.load_state_dict(state["state_dict"])
        except (RuntimeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{self.name} weights do not fit the {ARCHITECTURE} network ({one_line(exc)})") from exc
        self.eval()
        self.requires_grad_(False)
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"{self.name}: device {device} was requested but no CUDA device is available; use --device cpu")
        self.to(device)

    @property
    def protocol(self) -> dict:
        return {**super().protocol, "rgb_to_gray": self.rgb_to_gray}

    @property
    def device(self) -> torch.device:
        return self.net.head.weight.device

    def _forward(self, images: torch.Tensor) -> ExtractorOutput:
        if images.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
            raise ConfigError(
                f"{self.name} takes 28x28 images (preprocessing {PREPROCESSING} does not resize), "
                f"got {tuple(images.shape[-2:])}; use --extractor inception for other sizes"
            )
        x = normalize(to_gray(images.to(self.device)), self.normalization)
        features, logits = self.net(x)
        return ExtractorOutput(features=features, logits=logits)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Predicted class per image: int64 (N,), logits.argmax(1)."""
        return self(images).logits.argmax(dim=1)


def _build(dataset: str, weights: str | Path, device: str | torch.device) -> LeNetExtractor:
    state = load_lenet_weights(weights, dataset)
    return LeNetExtractor(state, file_sha256(weights), device=device)


def build_lenet_fashion_mnist(weights: str | Path | None = None, device: str | torch.device = "cpu") -> LeNetExtractor:
    """The Fashion-MNIST classifier; the weights that ship with ganbench unless `weights=` names a file."""
    if weights is None:
        weights = PACKAGE_WEIGHTS_DIR / weights_file_name("fashion-mnist")
        if not Path(weights).is_file():
            raise DataUnavailableError(
                f"the shipped lenet-fashion-mnist weights {weights} are missing (a broken install?); reinstall ganbench "
                "or train them with `ganbench train classifier --dataset fashion-mnist` and pass that file as weights"
            )
    return _build("fashion-mnist", weights, device)


def build_lenet_mnist(weights: str | Path, device: str | torch.device = "cpu") -> LeNetExtractor:
    """The MNIST classifier from a weights file. `lenet-mnist` without one (the registry's builder, in
    `ganbench.train.classifier`) uses the cached file, training it on first use: training lives above features."""
    return _build("mnist", weights, device)
