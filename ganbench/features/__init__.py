"""Images -> features: the registry of extractors, each mapping uint8 NCHW images to features and logits in one pass."""

from ganbench.features.registry import EXTRACTORS, build_extractor, extractor_names

_FROM_BASE = ("ExtractorOutput", "FeatureExtractor", "check_images")


def __getattr__(name: str):
    # The base types need torch; importing them on first use keeps `ganbench --help` (which reads the registry) fast.
    if name in _FROM_BASE:
        from ganbench.features import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["EXTRACTORS", "ExtractorOutput", "FeatureExtractor", "build_extractor", "check_images", "extractor_names"]
