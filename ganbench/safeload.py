"""Reading torch files that may come from anyone: `torch.load(weights_only=True)`, and one set of messages for
what it refuses. The counterpart of `ganbench.atomic`, which writes them.

weights_only loading never unpickles a class or function, so a file cannot run code however it was made. torch
rejects every file it cannot read that way with the same UnpicklingError; its reason tells a file that refers
to code ("Unsupported global: GLOBAL ...") apart from one that is merely broken ("Unsupported operand ...").
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from pathlib import Path

import torch

from ganbench.errors import CheckpointError, one_line


def load_tensors(path: Path, what: str, map_location: str | torch.device = "cpu") -> object:
    """The object in `path`, loaded without ever unpickling code; `what` names the file in errors ("checkpoint")."""
    try:
        with warnings.catch_warnings():  # a foreign pickle protocol warns before being refused anyway
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = _unpickler_detail(str(exc))
        if "GLOBAL" in str(exc):  # a reference to a class or function: the way a pickle runs code
            raise CheckpointError(
                f"refused to load {path}: it needs arbitrary unpickling, which could run code ({detail[:160]})"
            ) from exc
        raise CheckpointError(
            f"{what} {path} is corrupt or not a plain-tensor file; refused without unpickling it ({detail[:160]})"
        ) from exc
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointError(f"{what} {path} is corrupt or truncated ({one_line(exc)})") from exc


def _unpickler_detail(message: str) -> str:
    """The specific part of torch's weights-only refusal (its wording varies between versions), on one line."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", message).split())
    found = re.search(r"WeightsUnpickler error:\s*(.*?)(?:\s*Check the documentation|$)", text)
    if found is None:
        found = re.search(r"([^.]*GLOBAL[^.]*\.)", text)
    detail = found.group(1).strip() if found else text
    return detail or "unpickling refused"
