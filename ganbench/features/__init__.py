"""Images -> features: the registry of extractors, each mapping uint8 NCHW images to features and logits in one pass."""

from ganbench.features.base import ExtractorOutput, FeatureExtractor, check_images
from ganbench.features.registry import EXTRACTORS, build_extractor, extractor_names

__all__ = ["EXTRACTORS", "ExtractorOutput", "FeatureExtractor", "build_extractor", "check_images", "extractor_names"]
