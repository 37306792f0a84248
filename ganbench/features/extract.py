"""Images -> one feature pass: features and logits for a whole image set, in batches, with a progress bar.

Every metric reads the `FeatureSet` this produces, so an image set goes through the extractor once.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np
import torch

from ganbench.features.base import FeatureExtractor, check_images


@dataclass(frozen=True)
class FeatureSet:
    """The features of one image set and the protocol that produced them.

    features: float32 (N, D); logits: float32 (N, C) or None; protocol: extractor name, preprocessing,
    weights sha256 (and any extractor-specific fields); source: what the images were (dataset, split, count).
    """

    features: np.ndarray
    logits: np.ndarray | None
    protocol: dict
    source: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.features.shape[0]

    @property
    def predicted_classes(self) -> np.ndarray | None:
        return None if self.logits is None else self.logits.argmax(axis=1)


def extract_features(
    extractor: FeatureExtractor,
    images: torch.Tensor,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = False,
    description: str = "features",
    source: dict | None = None,
) -> FeatureSet:
    """Run `extractor` over uint8 NCHW `images` in batches; the result does not depend on `batch_size`."""
    check_images(images)
    features, logits = [], []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=images.shape[0], unit="img", desc=description, file=sys.stderr, dynamic_ncols=True)
    with torch.inference_mode():
        for start in range(0, images.shape[0], batch_size):
            out = extractor(images[start : start + batch_size].to(device, non_blocking=True))
            features.append(out.features.float().cpu())
            if out.logits is not None:
                logits.append(out.logits.float().cpu())
            if bar is not None:
                bar.update(min(batch_size, images.shape[0] - start))
    if bar is not None:
        bar.close()
    no_logits = None if extractor.num_classes is None else np.zeros((0, extractor.num_classes), np.float32)
    return FeatureSet(
        features=torch.cat(features).numpy() if features else np.zeros((0, extractor.feature_dim), np.float32),
        logits=torch.cat(logits).numpy() if logits else no_logits,
        protocol=dict(extractor.protocol),
        source=dict(source or {}),
    )
