"""Extractor registry: its keys feed the CLI's `--extractor` choices.

Builders are referenced as "module:function" strings and imported on first use, so listing the
names (for `--help`) never imports torch-fidelity or loads weights.
"""

from __future__ import annotations

import importlib

from ganbench.errors import ConfigError

# name -> (builder "module:function", one-line description for --help)
EXTRACTORS: dict[str, tuple[str, str]] = {
    "inception": (
        "ganbench.features.inception:build_inception",
        "FID Inception v3 (pool3 2048-d features, 1008 logits); needs the pt_inception weights file",
    ),
    "lenet-fashion-mnist": (
        "ganbench.features.lenet:build_lenet_fashion_mnist",
        "small CNN classifier trained by ganbench on Fashion-MNIST; weights ship with ganbench",
    ),
    # Trained on first use, so built by the training package: features never import training.
    "lenet-mnist": (
        "ganbench.train.classifier:lenet_mnist_trained_on_first_use",
        "small CNN classifier trained by ganbench on MNIST; trained on first use and cached",
    ),
}


def extractor_names() -> tuple[str, ...]:
    return tuple(EXTRACTORS)


def extractor_options(
    name: str,
    *,
    device: str,
    precision: str = "fp32",
    inception_weights: str | None = None,
    preprocessing: str = "tf1",
    data_root: str | None = None,
    progress: bool = True,
) -> dict:
    """`build_extractor`'s keyword options for extractor `name`, from the settings every command shares."""
    options = {"device": device, "precision": precision}
    if name == "inception":
        options.update(weights=inception_weights, preprocessing=preprocessing)
    elif name == "lenet-mnist":  # trained on first use: it needs the data and shows progress
        options.update(data_root=data_root, progress=progress)
    return options


def build_extractor(name: str, precision: str = "fp32", **options):
    """Build a registered extractor computing in `precision` ("fp32", "tf32" or "bf16"). Options are extractor-specific
    (weights=, preprocessing=, device=)."""
    if name not in EXTRACTORS:
        raise ConfigError(f"unknown extractor {name!r}; expected one of {', '.join(EXTRACTORS)} (--extractor)")
    module_name, function_name = EXTRACTORS[name][0].split(":")
    builder = getattr(importlib.import_module(module_name), function_name)
    extractor = builder(**options).set_precision(precision)
    if str(options.get("device", "cpu")).startswith("cuda"):
        import torch

        # NHWC convolutions are cuDNN's fast path (tensor cores); on CPU oneDNN picks its own layout anyway,
        # so CPU features stay bit-identical to the NCHW ones the tests compare with the reference libraries.
        extractor.to(memory_format=torch.channels_last)
    return extractor
