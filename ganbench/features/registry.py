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
    "vgg16": (
        "ganbench.features.vgg16:build_vgg16",
        "torchvision's ImageNet VGG16 at fc2_relu (4096-d), torch-fidelity's precision/recall features; "
        "needs torchvision's vgg16-397923af.pth",
    ),
    "wavelet": (
        "ganbench.features.wavelet:build_wavelet",
        "haar level-4 wavelet packets (pytorchfwd's defaults), the Frechet Wavelet Distance's space; no weights",
    ),
    "dinov2-vit-s14": (
        "ganbench.features.dinov2:build_dinov2_vit_s14",
        "DINOv2 ViT-S/14 final-norm CLS token (384-d); needs dinov2_vits14_pretrain.pth",
    ),
    "dinov2-vit-b14": (
        "ganbench.features.dinov2:build_dinov2_vit_b14",
        "DINOv2 ViT-B/14 final-norm CLS token (768-d); needs dinov2_vitb14_pretrain.pth",
    ),
    "dinov2-vit-l14": (
        "ganbench.features.dinov2:build_dinov2_vit_l14",
        "DINOv2 ViT-L/14 final-norm CLS token (1024-d), FD_DINOv2's space (dgm-eval, EDM2); needs dinov2_vitl14_pretrain.pth",
    ),
    "dinov2-vit-g14": (
        "ganbench.features.dinov2:build_dinov2_vit_g14",
        "DINOv2 ViT-g/14 final-norm CLS token (1536-d); needs dinov2_vitg14_pretrain.pth",
    ),
    "clip-vit-b32": (
        "ganbench.features.clip:build_clip_vit_b32",
        "OpenAI CLIP ViT-B/32 projected image embedding (512-d); needs its weights",
    ),
    "clip-vit-l14": (
        "ganbench.features.clip:build_clip_vit_l14",
        "OpenAI CLIP ViT-L/14 projected image embedding (768-d); needs its weights",
    ),
    "clip-vit-l14-336": (
        "ganbench.features.clip:build_clip_vit_l14_336",
        "OpenAI CLIP ViT-L/14@336px projected image embedding (768-d), CMMD's space; needs its weights",
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
    vgg16_weights: str | None = None,
    wavelet_size: int | None = None,
    data_root: str | None = None,
    progress: bool = True,
    dinov2_weights: str | None = None,
    dinov2_preprocessing: str = "dgm-eval",
    clip_weights: str | None = None,
    clip_preprocessing: str = "cmmd",
) -> dict:
    """`build_extractor`'s keyword options for extractor `name`, from the settings every command shares."""
    options = {"device": device, "precision": precision}
    if name == "inception":
        options.update(weights=inception_weights, preprocessing=preprocessing)
    elif name == "vgg16":
        options.update(weights=vgg16_weights)
    elif name == "wavelet":
        if wavelet_size is not None:
            options.update(image_size=wavelet_size)
    elif name == "lenet-mnist":  # trained on first use: it needs the data and shows progress
        options.update(data_root=data_root, progress=progress)
    elif name.startswith("dinov2-"):
        options.update(weights=dinov2_weights, preprocessing=dinov2_preprocessing)
    elif name.startswith("clip-"):
        options.update(weights=clip_weights, preprocessing=clip_preprocessing)
    return options


def build_extractor(name: str, precision: str = "fp32", **options):
    """Build a registered extractor computing in `precision` ("fp32", "tf32" or "bf16"). Options are extractor-specific
    (weights=, preprocessing=, device=)."""
    if name not in EXTRACTORS:
        raise ConfigError(f"unknown extractor {name!r}; expected one of {', '.join(EXTRACTORS)} (--extractor)")
    module_name, function_name = EXTRACTORS[name][0].split(":")
    from ganbench.devices import own_torch_state

    builder = getattr(importlib.import_module(module_name), function_name)
    with own_torch_state():
        extractor = builder(**options).set_precision(precision)
    if str(options.get("device", "cpu")).startswith("cuda"):
        import torch

        # NHWC convolutions are cuDNN's fast path (tensor cores); on CPU oneDNN picks its own layout anyway,
        # so CPU features stay bit-identical to the NCHW ones the tests compare with the reference libraries.
        extractor.to(memory_format=torch.channels_last)
    return extractor
