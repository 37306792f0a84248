"""The checkpoint format: a plain dict of tensors and JSON-able metadata, written atomically.

Every checkpoint loads with `torch.load(path, weights_only=True)`, which refuses anything that
would need arbitrary unpickling, so an untrusted checkpoint can never run code. Layout
(FORMAT_VERSION 1):

    format          "ganbench.checkpoint"
    format_version  1
    ganbench_version
    kind            the model's name: "baseline" or another model of ganbench/train/zoo.py
    config          BaselineConfig.to_dict() (ZooConfig's for other models: + model, loss, architecture,
                    n_critic, gp_weight), less out, data_root and device (config.NOT_IN_WEIGHTS: where, not what)
    epoch, step     completed epochs / optimiser steps
    dataset         {"name", "split", "num_images", "fingerprint"}
    generator, discriminator             state_dicts
    optimizer_g, optimizer_d             Adam state_dicts (for --resume)
    rng             {"torch_cpu", "noise", "shuffle", ["torch_cuda"]} uint8 state tensors
    fixed_noise     (64, latent_dim) noise behind every sample grid
    history         list of per-epoch dicts (epoch, step, d_loss, g_loss, d_real, d_fake)

load_checkpoint checks the type and range of every field ganbench reads; --resume needs every field above.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import NoReturn

import torch

from ganbench.atomic import atomic_write_bytes
from ganbench.config import MAX_LATENT_DIM, SEED_LIMIT, BaselineConfig, train_config_class
from ganbench.errors import CheckpointError, GanbenchError, one_line
from ganbench.protocol import DATASETS
from ganbench.safeload import load_tensors

FORMAT = "ganbench.checkpoint"
FORMAT_VERSION = 1
_REQUIRED = ("format", "format_version", "kind", "config", "epoch", "step", "dataset", "generator")
# What --resume needs beyond what eval reads; epoch_XXXX.pt and resume.pt both carry it.
RESUME_FIELDS = ("discriminator", "optimizer_g", "optimizer_d", "rng", "fixed_noise", "history")
MAX_INT64 = SEED_LIMIT - 1  # seeds, epochs and steps end up in the results store's signed 64-bit INTEGER columns
HISTORY_NUMBERS = ("d_loss", "g_loss", "d_real", "d_fake")


def checkpoint_name(epoch: int) -> str:
    return f"epoch_{epoch:04d}.pt"


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write a checkpoint dict atomically: readers see the old file or the complete new one.

    The bytes depend on the values alone: pickle writes an object met twice as a reference to the first, so which
    strings and containers happen to be one object would otherwise show in the file (a resumed run's optimiser state,
    rebuilt from a loaded file, pickled its repeated 'step' keys apart), and the results store, which keys
    checkpoints by content, would count a resumed run's equal checkpoint as another source."""
    data = checkpoint_bytes(state)  # in memory first: torch.save turns a full disk's OSError into a RuntimeError
    atomic_write_bytes(Path(path), lambda f: f.write(data))


def checkpoint_bytes(state: dict) -> bytes:
    """The bytes `save_checkpoint` writes for `state` (torch.save's output is deterministic)."""
    buffer = io.BytesIO()
    torch.save(_canonical(state), buffer)
    return buffer.getvalue()


def _canonical(value):
    """`value` with every dict, list and tuple rebuilt (none shared) and every string interned (equal ones shared)."""
    if isinstance(value, dict):
        return {_canonical(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_canonical(v) for v in value)
    if isinstance(value, str):
        return sys.intern(value)
    return value


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load and validate a ganbench checkpoint without ever unpickling arbitrary objects.

    Every field ganbench reads is checked here, once, for type and range, so that eval and --resume can
    index the dict without further checks; a bad field is a CheckpointError naming it.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = load_tensors(path, "checkpoint", map_location)
    except (CheckpointError, MemoryError):
        raise
    except Exception as exc:  # safeload maps torch's errors; one it misses on a broken file is still a broken file
        raise CheckpointError(f"checkpoint {path} is corrupt ({one_line(exc)})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a ganbench checkpoint (no format={FORMAT!r} marker)")
    missing = [key for key in _REQUIRED if key not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
    _check_int(path, "format_version", state["format_version"], 1, MAX_INT64)
    if state["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {state['format_version']}, this ganbench reads up to "
            f"{FORMAT_VERSION}; upgrade ganbench"
        )
    _check_fields(path, state)
    return state


def resume_config(path: Path, state: dict) -> BaselineConfig:
    """The config a loaded checkpoint was trained with, once the fields --resume restores are known to be there
    (load_checkpoint has checked their types)."""
    missing = [key for key in RESUME_FIELDS if key not in state]
    if "rng" in state:
        missing += [f"rng.{key}" for key in ("torch_cpu", "noise", "shuffle") if key not in state["rng"]]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}, which --resume needs; it can be evaluated "
                              "but not continued")
    if state["epoch"] < 1 or [row["epoch"] for row in state["history"]] != list(range(1, state["epoch"] + 1)):
        raise CheckpointError(f"checkpoint {path}: its history does not hold one row for each of epochs 1..{state['epoch']}; "
                              "it can be evaluated but not continued")
    try:
        config = train_config_class(state["kind"]).from_dict(state["config"])
    except (GanbenchError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} holds an invalid config ({one_line(exc)}); it can be evaluated but not "
                              "continued") from exc
    if config.kind != state["kind"]:
        raise CheckpointError(f"checkpoint {path} is a {state['kind']!r} checkpoint holding a {config.kind!r} config; "
                              "it can be evaluated but not continued")
    return config


def find_checkpoints(run_dir: str | Path) -> list[Path]:
    """epoch_XXXX.pt files in a run directory, oldest first."""
    return sorted(Path(run_dir).glob("epoch_[0-9][0-9][0-9][0-9].pt"))


def _check_fields(path: Path, state: dict) -> None:
    if not isinstance(state["kind"], str):
        _bad(path, "kind", state["kind"], "a string")
    config = state["config"]
    if not isinstance(config, dict):
        _bad(path, "config", config, "a dict")
    # Absent: the default, as BaselineConfig.from_dict reads it.
    _check_int(path, "config.latent_dim", config.get("latent_dim", 100), 1, MAX_LATENT_DIM)
    _check_int(path, "config.seed", config.get("seed", 0), 0, MAX_INT64)
    _check_int(path, "epoch", state["epoch"], 0, MAX_INT64)
    _check_int(path, "step", state["step"], 0, MAX_INT64)
    dataset = state["dataset"]
    if not isinstance(dataset, dict):
        _bad(path, "dataset", dataset, "a dict")
    if dataset.get("name") not in DATASETS:
        _bad(path, "dataset.name", dataset.get("name"), f"one of {', '.join(DATASETS)}")
    if not isinstance(dataset.get("fingerprint"), str):
        _bad(path, "dataset.fingerprint", dataset.get("fingerprint"), "a string")
    _check_tensors(path, "generator", state["generator"])
    if "discriminator" in state:
        _check_tensors(path, "discriminator", state["discriminator"])
    for name in ("optimizer_g", "optimizer_d"):
        if name in state:
            optimizer = state[name]
            if not (isinstance(optimizer, dict) and isinstance(optimizer.get("state"), dict)
                    and isinstance(optimizer.get("param_groups"), list)):
                _bad(path, name, optimizer, "an optimizer state_dict (state, param_groups)")
    if "rng" in state:
        rng = state["rng"]
        if not isinstance(rng, dict):
            _bad(path, "rng", rng, "a dict of generator states")
        for key, value in rng.items():
            if not (isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and value.ndim == 1):
                _bad(path, f"rng.{key}", value, "a uint8 generator state")
    if "fixed_noise" in state:
        noise = state["fixed_noise"]
        latent_dim = config.get("latent_dim", 100)
        if not (isinstance(noise, torch.Tensor) and noise.dtype == torch.float32 and noise.ndim == 2
                and noise.shape[0] > 0 and noise.shape[1] == latent_dim):
            _bad(path, "fixed_noise", noise, f"float32 noise of shape (N, {latent_dim})")
    if "history" in state:
        history = state["history"]
        if not isinstance(history, list):
            _bad(path, "history", history, "a list of per-epoch rows")
        for row in history:
            if not isinstance(row, dict):
                _bad(path, "history row", row, "a dict")
            _check_int(path, "history epoch", row.get("epoch"), 1, MAX_INT64)
            _check_int(path, "history step", row.get("step"), 0, MAX_INT64)
            for key in HISTORY_NUMBERS:
                if isinstance(row.get(key), bool) or not isinstance(row.get(key), int | float):
                    _bad(path, f"history {key}", row.get(key), "a number")


def _check_int(path: Path, field: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        _bad(path, field, value, f"an integer in {low}..{high}")


def _check_tensors(path: Path, field: str, value: object) -> None:
    if not (isinstance(value, dict) and value and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                       for k, v in value.items())):
        _bad(path, field, value, "a non-empty state_dict of tensors")


def _bad(path: Path, field: str, value: object, expected: str) -> NoReturn:
    shown = type(value).__name__ if isinstance(value, dict | list | torch.Tensor) else repr(value)[:60]
    raise CheckpointError(f"checkpoint {path}: {field} is {shown}, expected {expected}; the file is damaged or not "
                          "written by ganbench")
