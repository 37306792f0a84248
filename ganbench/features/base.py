"""The contract every feature extractor keeps.

Input, written once for all extractors: images are a `torch.uint8` tensor, NCHW, values 0..255,
with 1 (grayscale) or 3 (RGB) channels. Output: one forward pass gives both the features that
FID/KID/PRDC use and the logits that IS and the class metrics use, so every metric shares it.

An extractor's identity is its protocol: `name` (registry key), `preprocessing` (a name for the
exact resize / scaling / grayscale handling), and `weights_sha256` (the hash of the weights file).
All three travel with every feature set and every stored number.

Precision is part of that identity. "fp32" (the default) is float32 arithmetic throughout: on CUDA the forward
pass runs with TF32 switched off, which cuDNN's convolutions otherwise use on Ampere and newer GPUs. "tf32" (CUDA
only) switches TF32 on for cuDNN and cuBLAS, the arithmetic the reference implementations get on such GPUs by
PyTorch's defaults. "bf16" runs the forward pass under bf16 autocast (CPU or CUDA). A reduced precision names the
preprocessing "<preprocessing>+tf32" or "+bf16" in `protocol`, so its features get their own cache entries and
their own stored results. Features and logits come back as float32 either way, and every metric stays float64.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ganbench.devices import own_torch_state
from ganbench.errors import ConfigError, DataUnavailableError, GanbenchWarning, one_line
from ganbench.protocol import PRECISIONS, precisions_on


@dataclass(frozen=True)
class ExtractorOutput:
    """features: float32 (N, feature_dim); logits: float32 (N, num_classes) or None."""

    features: torch.Tensor
    logits: torch.Tensor | None


def check_images(images: torch.Tensor) -> None:
    """Enforce the input contract: uint8, NCHW, 1 or 3 channels."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        got = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
        raise ConfigError(f"feature extractors take uint8 images with values 0..255, got {got}")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ConfigError(f"feature extractors take NCHW images with 1 or 3 channels, got shape {tuple(images.shape)}")


class FeatureExtractor(nn.Module):
    """Base class: subclasses set the protocol attributes and implement `_forward` on checked images."""

    name: str
    preprocessing: str
    weights_sha256: str
    feature_dim: int
    num_classes: int | None
    precision: str = "fp32"
    gray_to_rgb: str | None = None  # how 1-channel images become RGB ("repeat"), for the extractors that take RGB

    @property
    def protocol(self) -> dict:
        """The fields that identify this extractor's features anywhere they are stored."""
        fields = {"extractor": self.name, "preprocessing": self.protocol_preprocessing, "weights_sha256": self.weights_sha256}
        return fields if self.gray_to_rgb is None else {**fields, "gray_to_rgb": self.gray_to_rgb}

    @property
    def protocol_preprocessing(self) -> str:
        """`preprocessing` as stored: reduced-precision features are not comparable with fp32 ones, so they are named apart."""
        return self.preprocessing if self.precision == "fp32" else f"{self.preprocessing}+{self.precision}"

    def set_precision(self, precision: str) -> FeatureExtractor:
        """Compute features in `precision` ("fp32", "tf32" or "bf16", see the module docstring); returns self."""
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)} (--precision)")
        device = _device_of(self)
        if precision not in precisions_on(device.type):
            raise ConfigError(f"--precision tf32 is a CUDA tensor-core format and this extractor runs on {device.type}; "
                              "use --precision fp32 or bf16, or --device cuda")
        if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError(f"{torch.cuda.get_device_name(device)} has no bf16 support; use --precision fp32")
        if precision == "bf16" and device.type == "cpu" and not cpu_has_bf16():
            # Still correct, so not refused; but the only reason to ask for bf16 is speed, and here it costs speed.
            warnings.warn("--precision bf16: this CPU has no bf16 instructions (AVX512-BF16 or AMX), so bf16 is emulated "
                          "and slower than fp32, not faster (on a 2-core AVX2 CPU: lenet 9x, Inception 18x slower); "
                          "use --precision fp32 here", GanbenchWarning, stacklevel=2)
        self.precision = precision
        return self

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> ExtractorOutput:
        check_images(images)
        device = _device_of(self)
        # The caller's autocast (a mixed-precision training loop) must not reach an fp32 or tf32 extractor: its
        # features would be reduced-precision ones under the fp32 protocol, in the store and the feature cache.
        with own_torch_state(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            if self.precision != "bf16":
                with _tf32(device, allowed=self.precision == "tf32"):
                    return self._forward(images)
            out = self._forward(images)
        return ExtractorOutput(out.features.float(), None if out.logits is None else out.logits.float())

    def _forward(self, images: torch.Tensor) -> ExtractorOutput:  # pragma: no cover - abstract
        raise NotImplementedError


def cpu_has_bf16() -> bool:
    """Whether oneDNN finds bf16 instructions on this CPU; without them bf16 autocast is emulated, and slow."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN, or the probe renamed: no warning rather than a guess
        return True


@contextmanager
def _tf32(device: torch.device, allowed: bool) -> Iterator[None]:
    """On CUDA, TF32 in cuDNN convolutions and cuBLAS matmuls on or off for the block; the caller's settings after it."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _device_of(module: nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return torch.device("cpu") if parameter is None else parameter.device


def check_build_options(name: str, batch_size: int | None, device) -> torch.device:
    """The options every network extractor's builder takes: a positive batch size or None, and a device."""
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ConfigError(f"{name} batch_size must be a positive integer or None, got {batch_size!r}")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ConfigError(f"invalid device {device!r} for the {name} extractor: {one_line(error)}") from error


def existing_weights_file(path: Path, source: str, expected: str) -> Path:
    """`path` when it is a file; else one line naming `source` (the flag or variable that gave it) and what it is."""
    if path.is_file():
        return path
    what = "a folder, not a file" if path.is_dir() else "no such file"
    raise DataUnavailableError(f"{source}: {what}; {expected}")
