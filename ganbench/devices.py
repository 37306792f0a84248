"""Which torch device a command runs on: one rule for training, feature extraction and torchrun ranks.

It sits below all three (it imports nothing of ganbench but the errors), so the features and the distributed
code need not import the training loop to ask it.
"""

from __future__ import annotations

import torch

from ganbench.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when available, else the CPU; `cuda` without a CUDA device is an option error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was requested but no CUDA device is available; use --device cpu or auto")
    return torch.device(name)
