"""The checkpoint format: a plain dict of tensors and JSON-able metadata, written atomically.

Every checkpoint loads with `torch.load(path, weights_only=True)`, which refuses anything that
would need arbitrary unpickling, so an untrusted checkpoint can never run code. Layout
(FORMAT_VERSION 1):

    format          "ganbench.checkpoint"
    format_version  1
    ganbench_version
    kind            "baseline"
    config          BaselineConfig.to_dict()
    epoch, step     completed epochs / optimiser steps
    dataset         {"name", "split", "num_images", "fingerprint"}
    generator, discriminator             state_dicts
    optimizer_g, optimizer_d             Adam state_dicts (for --resume)
    rng             {"torch_cpu", "noise", "shuffle", ["torch_cuda"]} uint8 state tensors
    fixed_noise     (64, latent_dim) noise behind every sample grid
    history         list of per-epoch dicts (d_loss, g_loss, d_real, d_fake, seconds, images_per_s)
"""

from __future__ import annotations

from pathlib import Path

import torch

from ganbench.atomic import atomic_write_bytes
from ganbench.errors import CheckpointError
from ganbench.safeload import load_tensors

FORMAT = "ganbench.checkpoint"
FORMAT_VERSION = 1
_REQUIRED = ("format", "format_version", "kind", "config", "epoch", "step", "generator")


def checkpoint_name(epoch: int) -> str:
    return f"epoch_{epoch:04d}.pt"


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write a checkpoint dict atomically: readers see the old file or the complete new one."""
    atomic_write_bytes(Path(path), lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load and validate a ganbench checkpoint without ever unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    state = load_tensors(path, "checkpoint", map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a ganbench checkpoint (no format={FORMAT!r} marker)")
    missing = [key for key in _REQUIRED if key not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
    if state["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {state['format_version']}, this ganbench reads up to "
            f"{FORMAT_VERSION}; upgrade ganbench"
        )
    return state


def find_checkpoints(run_dir: str | Path) -> list[Path]:
    """epoch_XXXX.pt files in a run directory, oldest first."""
    return sorted(Path(run_dir).glob("epoch_[0-9][0-9][0-9][0-9].pt"))
