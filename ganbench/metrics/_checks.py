"""Input validation shared by the metrics: inputs are converted once, here, and every bad input
raises `MetricError` with a message that says what was received and what was expected."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ganbench.errors import MetricError

TORCH_FIDELITY_SEED = 2020  # torch-fidelity's default rng_seed: IS's shuffle and KID's subsets default to it


def _shape_of(x) -> tuple[int, ...]:
    return tuple(x.shape) if hasattr(x, "shape") else np.shape(x)


def _check_matrix(x, name: str, min_samples: int) -> None:
    shape = _shape_of(x)
    if len(shape) != 2:
        raise MetricError(f"{name}: expected a 2-D array of shape (N, D), received shape {shape}")
    if shape[0] < min_samples:
        raise MetricError(f"{name}: received {shape[0]} sample(s), fewer than the {min_samples} needed")
    if shape[1] < 1:
        raise MetricError(f"{name}: received shape {shape}; expected at least 1 feature per sample")


def _check_finite(bad: int, name: str) -> None:
    if bad:
        raise MetricError(f"{name}: {bad} value(s) are NaN or inf; expected finite features")


def as_numpy(x, name: str, *, min_samples: int = 2, dtype=np.float64) -> np.ndarray:
    """(N, D) array-like or tensor -> (N, D) numpy array of `dtype` (no copy when it already is one).

    dtype=None keeps float32/float64 as they are (callers that accumulate in float64 chunk by chunk).
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    _check_matrix(x, name, min_samples)
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise MetricError(f"{name}: expected real numbers, received dtype {x.dtype}")
    if dtype is not None:
        x = x.astype(dtype, copy=False)
    elif not np.issubdtype(x.dtype, np.floating) or x.dtype == np.float16:
        x = x.astype(np.float64)
    _check_finite(int(np.size(x) - np.count_nonzero(np.isfinite(x))), name)
    return x


def as_tensor(x, name: str, *, min_samples: int = 2, widen: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, D) array-like or tensor -> (N, D) float32 or float64 tensor on its own device (CPU for numpy, no copy).

    widen: the dtype integers and half precision become (float32 and float64 inputs keep their precision).
    """
    if not isinstance(x, torch.Tensor):
        array = np.asarray(x)
        _check_matrix(array, name, min_samples)
        if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
            raise MetricError(f"{name}: expected real numbers, received dtype {array.dtype}")
        if any(stride < 0 for stride in array.strides):
            array = array.copy()  # torch cannot view negative strides
        with warnings.catch_warnings():
            # a read-only array is only ever read here; copying it would double the memory of 50k x 2048 features
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
            x = torch.from_numpy(array)
    x = x.detach()
    _check_matrix(x, name, min_samples)
    if x.is_complex() or x.dtype == torch.bool:
        raise MetricError(f"{name}: expected real numbers, received dtype {x.dtype}")
    if x.dtype not in (torch.float32, torch.float64):
        x = x.to(widen)
    # by chunks: a full (N, D) mask would be a large temporary for 50k x 2048 features; one int(): one device sync
    _check_finite(int(sum((~torch.isfinite(c)).sum() for c in x.split(4096))), name)
    return x


def check_same_device(real: torch.Tensor, fake: torch.Tensor) -> None:
    if real.device != fake.device:
        raise MetricError(f"real features are on {real.device}, fake features on {fake.device}; expected one device")


def check_same_dim(real, fake, what: str = "feature") -> None:
    if real.shape[1] != fake.shape[1]:
        raise MetricError(
            f"{what} dimensions differ: real has D={real.shape[1]}, fake has D={fake.shape[1]}; "
            "expected both sets from the same extractor layer"
        )


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise MetricError(f"seed: expected a non-negative integer, received {seed!r}")
    return int(seed)


def check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise MetricError(f"{name}: expected a positive integer, received {value!r}")
    return int(value)


def check_finite_number(value, name: str, *, positive: bool = False, default: str | None = None) -> float | None:
    """A real, finite number (not a bool or a string), > 0 when `positive`: a kernel's or a scale's option.
    With `default` (what None means), None is accepted too."""
    if value is None and default is not None:
        return None
    expected = ("a positive finite number" if positive else "a finite number") + (f" or None ({default})" if default else "")
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating) \
            or not np.isfinite(value) or (positive and not value > 0):
        raise MetricError(f"{name}: expected {expected}, received {value!r}")
    return float(value)


def real_array(x, name: str) -> np.ndarray:
    """Array-like or tensor -> float64 numpy array; strings, objects and complex numbers are refused in one line."""
    array = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x)
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise MetricError(f"{name}: expected real numbers, received dtype {array.dtype}")
    return array.astype(np.float64, copy=False)
