"""Reading torch files that may come from anyone: `torch.load(weights_only=True)`, and one set of messages for
what it refuses. The counterpart of `ganbench.atomic`, which writes them.

weights_only loading never unpickles a class or function, so a file cannot run code however it was made. torch
rejects every file it cannot read that way with the same UnpicklingError; its reason tells a file that refers
to code ("Unsupported global: GLOBAL ...") apart from one that is merely broken ("Unsupported operand ...").
Corrupt bytes can also trip torch's parsers into any other exception (KeyError, IndexError, struct.error, ...);
every one becomes a CheckpointError. torch's own advice (re-run with weights_only off, allowlist the global) is
never repeated: following it is exactly how a malicious file gets to run.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from pathlib import Path

import torch

from ganbench.errors import CheckpointError

# Sentences of torch's refusal that give advice rather than the reason; their wording changes between versions.
_ADVICE = re.compile(r"weights.only|re-?run|safe_globals|allowlist|documentation|trusted|load failed|PyTorch \d|option",
                     re.IGNORECASE)
# Exceptions whose message describes the problem by itself; any other type is named in front of its message.
_SELF_DESCRIBING = (RuntimeError, OSError, EOFError, zipfile.BadZipFile, ValueError)


def load_tensors(path: Path, what: str, map_location: str | torch.device = "cpu") -> object:
    """The object in `path`, loaded without ever unpickling code; `what` names the file in errors ("checkpoint")."""
    try:
        with warnings.catch_warnings():  # a foreign pickle protocol warns before being refused anyway
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except MemoryError:
        raise
    except pickle.UnpicklingError as exc:
        detail = _unpickler_detail(str(exc))
        if "GLOBAL" in str(exc):  # a reference to a class or function: the way a pickle runs code
            raise CheckpointError(
                f"refused to load {path}: it needs arbitrary unpickling, which could run code ({detail[:160]})"
            ) from exc
        raise CheckpointError(
            f"{what} {path} is corrupt or not a plain-tensor file; refused without unpickling it ({detail[:160]})"
        ) from exc
    except Exception as exc:  # corrupt bytes reach torch's parsers, which raise many types
        raise CheckpointError(f"{what} {path} is corrupt or truncated ({load_error_detail(exc)})") from exc


def load_error_detail(exc: BaseException, limit: int = 160) -> str:
    """Why torch.load refused a file, on one line: the reason without torch's advice, its type named unless the
    message says enough by itself."""
    detail = _unpickler_detail(str(exc))[:limit]
    return detail if isinstance(exc, _SELF_DESCRIBING) else f"{type(exc).__name__}: {detail}"


def _unpickler_detail(message: str) -> str:
    """The reason in a torch.load error, on one line, without torch's advice (its wording varies between versions)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", message).split("WeightsUnpickler error:", 1)[-1]
    pieces = re.split(r"\n|(?<=[.!?])\s+|\(\d\)", text)  # lines, sentences and numbered options
    kept = [" ".join(piece.split()) for piece in pieces if piece.strip() and not _ADVICE.search(piece)]
    return " ".join(kept).strip() or "unpickling refused"
