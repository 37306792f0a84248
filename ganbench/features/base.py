"""The contract every feature extractor keeps.

Input, written once for all extractors: images are a `torch.uint8` tensor, NCHW, values 0..255,
with 1 (grayscale) or 3 (RGB) channels. Output: one forward pass gives both the features that
FID/KID/PRDC use and the logits that IS and the class metrics use, so every metric shares it.

An extractor's identity is its protocol: `name` (registry key), `preprocessing` (a name for the
exact resize / scaling / grayscale handling), and `weights_sha256` (the hash of the weights file).
All three travel with every feature set and every stored number.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ganbench.errors import ConfigError


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

    @property
    def protocol(self) -> dict:
        """The fields that identify this extractor's features anywhere they are stored."""
        return {"extractor": self.name, "preprocessing": self.preprocessing, "weights_sha256": self.weights_sha256}

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> ExtractorOutput:
        check_images(images)
        return self._forward(images)

    def _forward(self, images: torch.Tensor) -> ExtractorOutput:  # pragma: no cover - abstract
        raise NotImplementedError
