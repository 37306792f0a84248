"""Sources -> samples: what `ganbench eval` can evaluate, and how each becomes uint8 NCHW images.

A source is a ganbench checkpoint, a user's generator (`--generator module:callable` plus a
state-dict checkpoint), a folder of PNG/JPEG images or an `.npz` of uint8 images. Every source has a
content sha256 (the key of its results) and, where known, the run it belongs to.

Generation is seeded (an explicit `torch.Generator`), so the same source, seed and count always give
the same samples. Generator output that is NaN, infinite or outside the generator's range is an
error naming the problem, never a number that looks valid.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ganbench.errors import CheckpointError, ConfigError, DataUnavailableError, SampleError, one_line

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class Source:
    """One thing to evaluate. kind: checkpoint | generator | folder | npz."""

    kind: str
    path: Path
    run: dict = field(default_factory=dict)  # kind, dataset, seed, epoch, step where known

    @property
    def label(self) -> str:
        return str(self.path)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_sha256(source: Source) -> str:
    """Content hash: the file's bytes, or for a folder the sorted names and bytes of its images."""
    if source.kind != "folder":
        return file_sha256(source.path)
    digest = hashlib.sha256()
    for image in _folder_images(source.path):
        digest.update(str(image.relative_to(source.path)).encode())
        digest.update(file_sha256(image).encode())
    return digest.hexdigest()


def _folder_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def discover_sources(paths: list[str], generator: str | None = None) -> list[Source]:
    """Expand the PATH arguments of `ganbench eval` into sources, in a stable order."""
    sources: list[Source] = []
    for text in paths:
        path = Path(text)
        if not path.exists():
            raise ConfigError(f"{path} does not exist; pass checkpoint files or folders, image folders or .npz files")
        if generator is not None:
            if not path.is_file():
                raise ConfigError(f"with --generator, pass state-dict checkpoint files, got folder {path}")
            sources.append(Source("generator", path, {"kind": "generator"}))
        elif path.is_file() and path.suffix == ".npz":
            sources.append(Source("npz", path, {"kind": "npz"}))
        elif path.is_file():
            sources.append(Source("checkpoint", path, _run_from_path(path)))
        else:
            checkpoints = sorted(p for p in path.rglob("epoch_[0-9][0-9][0-9][0-9].pt") if p.is_file())
            if checkpoints:
                sources += [Source("checkpoint", p, _run_from_path(p)) for p in checkpoints]
            elif _folder_images(path):
                sources.append(Source("folder", path, {"kind": "folder"}))
            else:
                raise ConfigError(f"{path} holds no ganbench checkpoints (epoch_XXXX.pt) and no PNG/JPEG images")
    return sources


def _run_from_path(path: Path) -> dict:
    """Run fields from the OUT/baseline/<dataset>/seed<k>/epoch_XXXX.pt layout (the checkpoint confirms them)."""
    run = {"kind": "baseline"}
    if path.stem.startswith("epoch_") and path.stem[6:].isdigit():
        run["epoch"] = int(path.stem[6:])
    if path.parent.name.startswith("seed") and path.parent.name[4:].isdigit():
        run["seed"] = int(path.parent.name[4:])
        run["dataset"] = path.parent.parent.name
    return run


def check_generator_output(flat: torch.Tensor, low: float = -1.0, high: float = 1.0, tolerance: float = 1e-3) -> None:
    """Refuse NaN, inf and values outside [low, high] (beyond float round-off) instead of clamping them away."""
    bad = (~torch.isfinite(flat)).sum().item()
    if bad:
        raise SampleError(f"generator output has {bad} NaN or infinite values out of {flat.numel()}")
    lo, hi = flat.min().item(), flat.max().item()
    if lo < low - tolerance or hi > high + tolerance:
        raise SampleError(f"generator output spans [{lo:.4g}, {hi:.4g}], outside the expected [{low}, {high}]")


@torch.no_grad()
def generate(
    module: torch.nn.Module,
    latent_dim: int,
    num_samples: int,
    seed: int,
    batch_size: int = 500,
    device: str | torch.device = "cpu",
    progress: Callable[[int], None] | None = None,
    rows: tuple[int, int] | None = None,
) -> torch.Tensor:
    """uint8 (N, C, H, W) samples from z ~ N(0, I) drawn from a generator seeded with `seed`.

    rows: only samples [start, stop) of the N, with start and stop on `batch_size` boundaries (or stop = N):
    one rank's share under torchrun. They equal the same rows of the full run bit for bit, because the noise
    of every earlier batch is still drawn and the module sees exactly the batches it would see in one process.
    """
    start, stop = (0, num_samples) if rows is None else rows
    assert start % batch_size == 0 and (stop % batch_size == 0 or stop == num_samples), (rows, batch_size)
    noise_rng = torch.Generator().manual_seed(seed)  # CPU noise: the same samples on every device
    module = module.to(device).eval()
    out = []
    for first in range(0, stop, batch_size):
        z = torch.randn(min(batch_size, num_samples - first), latent_dim, generator=noise_rng)
        if first < start:  # another rank's batch: draw its noise to keep the stream aligned, skip the module
            continue
        images = module(z.to(device)).float()
        check_generator_output(images)
        if images.ndim == 2:  # flattened 28x28 (the baseline's output)
            side = int(round(images.shape[1] ** 0.5))
            images = images.reshape(-1, 1, side, side)
        out.append(((images + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8).cpu())
        if progress is not None:
            progress(z.shape[0])
    return torch.cat(out)


def load_baseline_generator(path: Path) -> tuple[torch.nn.Module, int, dict]:
    """The generator of a ganbench checkpoint, its latent size and its run fields."""
    from ganbench.train.checkpoint import load_checkpoint
    from ganbench.train.models import make_generator

    state = load_checkpoint(path)
    if state.get("kind") != "baseline":
        raise CheckpointError(f"{path} is a {state.get('kind')!r} checkpoint; eval knows 'baseline' checkpoints")
    latent_dim = int(state["config"].get("latent_dim", 100))
    generator = make_generator(latent_dim)
    try:
        generator.load_state_dict(state["generator"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: generator weights do not fit the baseline architecture ({one_line(exc)})") from exc
    run = {"kind": "baseline", "dataset": state["dataset"]["name"], "seed": state["config"].get("seed"),
           "epoch": state["epoch"], "step": state["step"]}
    return generator, latent_dim, run


def load_user_generator(spec: str, path: Path) -> tuple[torch.nn.Module, int]:
    """`module:callable` returning (nn.Module, latent_dim), with weights from a state-dict file at `path`."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"--generator expects module:callable, got {spec!r}")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"--generator {spec}: cannot import it ({exc})") from exc
    made = factory()
    if not (isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], torch.nn.Module)):
        raise ConfigError(f"--generator {spec} must return (nn.Module, latent_dim), got {type(made).__name__}")
    module, latent_dim = made
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types; weights_only refuses code-carrying pickles
        raise CheckpointError(f"{path}: not a loadable state dict ({one_line(exc)})") from exc
    if isinstance(state, dict) and "generator" in state and isinstance(state["generator"], dict):
        state = state["generator"]  # a ganbench-style checkpoint dict
    try:
        module.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: state dict does not fit --generator {spec} ({one_line(exc)})") from exc
    return module, int(latent_dim)


def load_npz_images(path: Path) -> torch.Tensor:
    """uint8 images from an .npz: the first array, NHWC or NCHW, 1 or 3 channels, or NHW grayscale."""
    try:
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as npz:
            if not npz.files:
                raise SampleError(f"{path} holds no arrays")
            array = npz[npz.files[0]]
    except (OSError, ValueError) as exc:
        raise SampleError(f"cannot read {path}: {one_line(exc)}") from exc
    return _to_nchw(array, str(path))


def load_folder_images(folder: Path) -> torch.Tensor:
    from PIL import Image

    arrays = []
    for image_path in _folder_images(folder):
        try:
            with Image.open(image_path) as image:
                gray = image.mode in ("L", "1", "LA", "I;16")  # palette and colour images become RGB
                arrays.append(np.asarray(image.convert("L" if gray else "RGB")))
        except OSError as exc:
            raise SampleError(f"cannot read image {image_path}: {exc}") from exc
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise SampleError(f"images in {folder} differ in size or channels: {sorted(shapes)[:4]}")
    return _to_nchw(np.stack(arrays), str(folder))


def _to_nchw(array: np.ndarray, where: str) -> torch.Tensor:
    if array.dtype != np.uint8:
        raise SampleError(f"{where}: images must be uint8 0..255, got {array.dtype}")
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and array.shape[-1] in (1, 3) and array.shape[1] not in (1, 3):
        array = array.transpose(0, 3, 1, 2)
    if array.ndim != 4 or array.shape[1] not in (1, 3):
        raise SampleError(f"{where}: expected images NHW, NHWC or NCHW with 1 or 3 channels, got shape {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array))


def first_n(images: torch.Tensor, n: int, where: str) -> torch.Tensor:
    if images.shape[0] < n:
        raise DataUnavailableError(f"{where} holds {images.shape[0]} images, fewer than --num-samples {n}")
    return images[:n]
