"""Which torch device a command runs on: one rule for training, feature extraction and torchrun ranks; and the
torch state ganbench's own networks are built and run in, whatever the caller (a training loop calling
`ganbench.evaluate` or `GanbenchMetric`) has set.

It sits below all three (it imports nothing of ganbench but the errors), so the features and the distributed
code need not import the training loop to ask it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ganbench.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when available, else the CPU; `cuda` without a CUDA device is an option error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was requested but no CUDA device is available; use --device cpu or auto")
    return torch.device(name)


@contextmanager
def own_torch_state() -> Iterator[None]:
    """Build ganbench's networks as specified and leave the caller's state as it was: float32 as the default dtype
    inside (a caller's float64 default would make float64 weights), and the caller's CPU random stream untouched
    (PyTorch's default initialisation, run before saved weights replace it, draws from it)."""
    saved = torch.get_default_dtype()
    with torch.random.fork_rng(devices=[]):
        torch.set_default_dtype(torch.float32)
        try:
            yield
        finally:
            torch.set_default_dtype(saved)
