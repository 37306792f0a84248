"""The contract every feature extractor keeps.

Input, written once for all extractors: images are a `torch.uint8` tensor, NCHW, values 0..255,
with 1 (grayscale) or 3 (RGB) channels. Output: one forward pass gives both the features that
FID/KID/PRDC use and the logits that IS and the class metrics use, so every metric shares it.

An extractor's identity is its protocol: `name` (registry key), `preprocessing` (a name for the
exact resize / scaling / grayscale handling), and `weights_sha256` (the hash of the weights file).
All three travel with every feature set and every stored number.

Precision is part of that identity: an extractor set to "bf16" runs its forward pass under bf16 autocast
(CPU or CUDA) and names its preprocessing "<preprocessing>+bf16" in `protocol`, so bf16 features get
their own cache entries and their own stored results; "fp32" (the default) leaves the protocol as it was.
Features and logits come back as float32 either way, and every metric stays float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ganbench.errors import ConfigError
from ganbench.protocol import PRECISIONS


@dataclass(frozen=True)
class ExtractorOutput:
    """features: float32 (N, feature_dim); logits: float32 (N, num_classes) or None."""

    features: torch.Tensor
    logits: torch.Tensor | None


def check_images(images: torch.Tensor) -> None:
    """Enforce the input contract: uint8, NCHW, 1 or 3 channels."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        got = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
        raise ConfigError(f"feature extractors take uint8 images with values 0..255, got {got}")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ConfigError(f"feature extractors take NCHW images with 1 or 3 channels, got shape {tuple(images.shape)}")


class FeatureExtractor(nn.Module):
    """Base class: subclasses set the protocol attributes and implement `_forward` on checked images."""

    name: str
    preprocessing: str
    weights_sha256: str
    feature_dim: int
    num_classes: int | None
    precision: str = "fp32"

    @property
    def protocol(self) -> dict:
        """The fields that identify this extractor's features anywhere they are stored."""
        return {"extractor": self.name, "preprocessing": self.protocol_preprocessing, "weights_sha256": self.weights_sha256}

    @property
    def protocol_preprocessing(self) -> str:
        """`preprocessing` as stored: reduced-precision features are not comparable with fp32 ones, so they are named apart."""
        return self.preprocessing if self.precision == "fp32" else f"{self.preprocessing}+{self.precision}"

    def set_precision(self, precision: str) -> FeatureExtractor:
        """Compute features in `precision` ("fp32" or "bf16", see the module docstring); returns self."""
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)} (--precision)")
        device = _device_of(self)
        if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError(f"{torch.cuda.get_device_name(device)} has no bf16 support; use --precision fp32")
        self.precision = precision
        return self

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> ExtractorOutput:
        check_images(images)
        if self.precision == "fp32":
            return self._forward(images)
        with torch.autocast(_device_of(self).type, dtype=torch.bfloat16):
            out = self._forward(images)
        return ExtractorOutput(out.features.float(), None if out.logits is None else out.logits.float())

    def _forward(self, images: torch.Tensor) -> ExtractorOutput:  # pragma: no cover - abstract
        raise NotImplementedError


def _device_of(module: nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return torch.device("cpu") if parameter is None else parameter.device
