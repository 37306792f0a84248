"""Flags shared by the commands that extract features, and their one translation into builder options."""

from __future__ import annotations

import argparse

from ganbench.features.registry import EXTRACTORS, extractor_names

PREPROCESSINGS = ("tf1", "pytorch-fid")


def add_extractor_flags(parser: argparse.ArgumentParser, multiple: bool = False) -> None:
    names = ", ".join(f"{name} ({description})" for name, (_, description) in EXTRACTORS.items())
    parser.add_argument(
        "--extractor", default="inception", metavar="NAME[,NAME]" if multiple else "NAME",
        help=f"feature extractor (default: %(default)s); one of: {names}",
    )
    parser.add_argument(
        "--inception-weights", metavar="PATH",
        help="the FID Inception weights file (torch-fidelity's weights-inception-2015-12-05-6726825d.pth or pytorch-fid's "
        "pt_inception-2015-12-05-6726825d.pth); default: $GANBENCH_INCEPTION_WEIGHTS, then either file in the torch hub "
        "cache (~/.cache/torch/hub/checkpoints), then a download; never a substitute",
    )
    parser.add_argument(
        "--preprocessing", choices=PREPROCESSINGS, default="tf1",
        help="Inception protocol: tf1 = torch-fidelity / TTUR (TF1-exact resize), pytorch-fid = torch bilinear resize "
        "and 2u/255-1 scaling (default: %(default)s)",
    )
    parser.add_argument("--cache-dir", metavar="DIR",
                        help="reference-feature cache (default: $GANBENCH_CACHE or ~/.cache/ganbench)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per extractor pass (default: %(default)s)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: %(default)s")


def parse_extractors(text: str) -> list[str]:
    from ganbench.errors import ConfigError

    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in extractor_names()]
    if unknown or not names:
        raise ConfigError(
            f"unknown extractor {', '.join(unknown) or repr(text)}; expected one of {', '.join(extractor_names())} (--extractor)"
        )
    return names


def extractor_options(name: str, args: argparse.Namespace, device: str) -> dict:
    """The builder keyword options for extractor `name` from the shared flags."""
    if name == "inception":
        return {"weights": args.inception_weights, "preprocessing": args.preprocessing, "device": device}
    if name == "lenet-mnist":  # trained on first use: it needs the data and shows progress
        return {"device": device, "data_root": getattr(args, "data_root", None), "progress": not getattr(args, "quiet", False)}
    return {"device": device}
