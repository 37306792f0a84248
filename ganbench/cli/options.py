"""Flags shared by the commands that extract features; `features.registry.extractor_options` turns them into builder options."""

from __future__ import annotations

import argparse

from ganbench.features.registry import EXTRACTORS, extractor_names
from ganbench.features.registry import extractor_options as registry_options
from ganbench.protocol import PRECISIONS

PREPROCESSINGS = ("tf1", "pytorch-fid")
PRECISION_RECALL = {"precision", "recall"}
# Measured by bench/bf16_drift.py on a CPU without native bf16 (torch 2.14); the README has the table.
PRECISION_HELP = (
    "feature-extraction precision (default: %(default)s: float32 throughout, TF32 off on CUDA). tf32 (CUDA only) lets "
    "cuDNN use TensorFloat-32 convolutions, which the reference implementations get on Ampere and newer GPUs by "
    "PyTorch's defaults. bf16 runs the extractor under bf16 autocast on CUDA or CPU: faster on GPUs and on CPUs with "
    "bf16 instructions; emulated elsewhere, and then much slower (a 2-core AVX2 CPU: lenet 9x, Inception 18x slower "
    "than fp32; ganbench warns). Metrics stay float64, and tf32 and bf16 results are protocols of "
    "their own (preprocessing NAME+tf32, NAME+bf16, cached and stored apart). Measured FID drift vs fp32: "
    "lenet-fashion-mnist 0.2%% (2,000 test vs 2,000 train images, FID 1.66) and 0.4%% (vs blurred noisy images, "
    "FID 153); Inception (random weights, 8 images) features within 1.6%% of their scale. Use fp32 for numbers you "
    "compare with published ones"
)


def add_extractor_flags(parser: argparse.ArgumentParser, multiple: bool = False, metrics: bool = True) -> None:
    """The extractor flags; `metrics`: the command has --metrics, which can change the default extractor."""
    names = ", ".join(f"{name} ({description})" for name, (_, description) in EXTRACTORS.items())
    default = ("default: inception; vgg16 when --metrics asks for precision and/or recall only, as torch-fidelity's "
               "prc and Kynkaanniemi et al. compute them" if metrics else "default: inception")
    parser.add_argument(
        "--extractor", metavar="NAME[,NAME]" if multiple else "NAME",
        help=f"feature extractor ({default}); one of: {names}",
    )
    parser.add_argument(
        "--inception-weights", metavar="PATH",
        help="the FID Inception weights file (torch-fidelity's weights-inception-2015-12-05-6726825d.pth or pytorch-fid's "
        "pt_inception-2015-12-05-6726825d.pth); default: $GANBENCH_INCEPTION_WEIGHTS, then either file in the torch hub "
        "cache (~/.cache/torch/hub/checkpoints), then a download; never a substitute",
    )
    parser.add_argument(
        "--vgg16-weights", metavar="PATH",
        help="torchvision's ImageNet VGG16 weights file vgg16-397923af.pth (the vgg16 extractor); default: "
        "$GANBENCH_VGG16_WEIGHTS, then the torch hub cache (~/.cache/torch/hub/checkpoints), then a download",
    )
    parser.add_argument(
        "--wavelet-size", type=int, metavar="N",
        help="side of the square images the wavelet extractor takes (its feature size depends on it; default: 28)",
    )
    parser.add_argument(
        "--dinov2-weights", metavar="PATH",
        help="the weights of the dinov2-vit-* extractor asked for (facebookresearch/dinov2's dinov2_vitl14_pretrain.pth "
        "etc., or timm's model.safetensors copy); default: $GANBENCH_DINOV2_VIT_L14_WEIGHTS (one variable per model), "
        "then the torch hub cache (~/.cache/torch/hub/checkpoints), then timm's copy in the Hugging Face cache, then a "
        "download; never a substitute",
    )
    parser.add_argument(
        "--dinov2-preprocessing", choices=("dgm-eval", "edm2", "torch-fidelity"), default="dgm-eval",
        help="DINOv2 protocol: dgm-eval = PIL bicubic resize to 224 (dgm-eval, EDM2 resize_mode=pil), edm2 = torch "
        "antialiased bicubic (EDM2's default), torch-fidelity = its TF1-style bilinear resize (default: %(default)s)",
    )
    parser.add_argument(
        "--clip-weights", metavar="PATH",
        help="the weights of the clip-vit-* extractor asked for (open_clip's open_clip_model.safetensors of "
        "hf.co/timm/vit_large_patch14_clip_336.openai etc.); default: $GANBENCH_CLIP_VIT_L14_336_WEIGHTS (one variable "
        "per model), then the Hugging Face cache, then a download; OpenAI's TorchScript .pt files are refused",
    )
    parser.add_argument(
        "--clip-preprocessing", choices=("cmmd", "open-clip", "torch-fidelity"), default="cmmd",
        help="CLIP protocol: cmmd = CMMD's PIL centre crop and bicubic resize, L2-normalised embeddings; open-clip = "
        "open_clip's resize and centre crop, raw embeddings; torch-fidelity = its TF1-style bilinear resize, raw "
        "embeddings (default: %(default)s)",
    )
    parser.add_argument(
        "--preprocessing", choices=PREPROCESSINGS, default="tf1",
        help="Inception protocol: tf1 = torch-fidelity / TTUR (TF1-exact resize), pytorch-fid = torch bilinear resize "
        "and 2u/255-1 scaling (default: %(default)s)",
    )
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help=PRECISION_HELP)
    parser.add_argument("--cache-dir", metavar="DIR",
                        help="reference-feature cache (default: $GANBENCH_CACHE or ~/.cache/ganbench)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per extractor pass (default: %(default)s)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: %(default)s")


def parse_extractors(text: str | None, metrics: tuple[str, ...] | None = None) -> list[str]:
    """--extractor's names; without the flag, inception, or vgg16 when `metrics` are precision and/or recall only."""
    from ganbench.errors import ConfigError

    if text is None:  # precision/recall are conventionally VGG16 numbers; every other metric here is Inception's
        return ["vgg16"] if metrics and set(metrics) <= PRECISION_RECALL else ["inception"]
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))  # each once, in the order given
    unknown = [n for n in names if n not in extractor_names()]
    if unknown or not names:
        raise ConfigError(
            f"unknown extractor {', '.join(unknown) or repr(text)}; expected one of {', '.join(extractor_names())} (--extractor)"
        )
    return names


def extractor_options(name: str, args: argparse.Namespace, device: str) -> dict:
    """The builder keyword options for extractor `name` from the shared flags."""
    return registry_options(name, device=device, precision=args.precision, inception_weights=args.inception_weights,
                            preprocessing=args.preprocessing, vgg16_weights=getattr(args, "vgg16_weights", None),
                            wavelet_size=getattr(args, "wavelet_size", None), data_root=getattr(args, "data_root", None),
                            progress=not getattr(args, "quiet", False),
                            dinov2_weights=getattr(args, "dinov2_weights", None),
                            dinov2_preprocessing=getattr(args, "dinov2_preprocessing", "dgm-eval"),
                            clip_weights=getattr(args, "clip_weights", None),
                            clip_preprocessing=getattr(args, "clip_preprocessing", "cmmd"))


def filter_names(text: str | None, flag: str) -> tuple[str, ...]:
    """A NAME[,NAME] filter flag's names; () when the flag is absent. Given but naming nothing ('', ',') is an error,
    not 'everything'."""
    from ganbench.errors import ConfigError

    if text is None:
        return ()
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise ConfigError(f"{flag} {text!r} names nothing; give NAME[,NAME] or leave the flag out")
    return names
