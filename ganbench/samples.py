"""Sources -> samples: what `ganbench eval` can evaluate, and how each becomes uint8 NCHW images.

A source is a ganbench checkpoint, a user's generator (`--generator module:callable` plus a
state-dict checkpoint), a folder of images or an `.npz` of uint8 images. Every source has a
content sha256 (the key of its results) and, where known, the run it belongs to.

Generation is seeded (an explicit `torch.Generator`), so the same source, seed and count always give
the same samples. Generator output that is NaN, infinite or outside the generator's range is an
error naming the problem, never a number that looks valid.

Files are decoded defensively: whatever is wrong with one (truncated, corrupt, a decompression bomb, a
header claiming more data than it holds) raises a one-line SampleError, so a sweep records the source as
failed and goes on. An image may have at most MAX_IMAGE_PIXELS pixels and a source may decode at most
MAX_DECODED_BYTES; with `limit`, only the first `limit` images are decoded.

Folders: every image whose suffix pytorch-fid reads (IMAGE_SUFFIXES), in sorted path order. Grayscale
images become RGB when the folder mixes both; 16-bit images keep their high byte (value >> 8), as Pillow
decodes 16-bit colour PNGs (pytorch-fid and torch-fidelity clip 16-bit grayscale to 255 instead).

.npz: the array named `images`, else `x`, else `arr_0`, else the only array; uint8, NHW, NHWC or NCHW
with 1 or 3 channels. An .npz of statistics (`mu`, `sigma`) is not a source of images.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ganbench.devices import own_torch_state
from ganbench.errors import CheckpointError, ConfigError, DataUnavailableError, SampleError, counted, one_line
from ganbench.safeload import load_tensors

# pytorch-fid's IMAGE_EXTENSIONS (torch-fidelity reads png, jpg, jpeg by default); Pillow decodes them all
IMAGE_SUFFIXES = (".bmp", ".jpg", ".jpeg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
MAX_IMAGE_PIXELS = 2**26  # 8192 x 8192: far above any benchmark's images, far below what a decompression bomb claims
MAX_DECODED_BYTES = 2**34  # 16 GiB of uint8 per source: 50,000 RGB images of 256 x 256 (9.2 GiB) fit
NPZ_IMAGE_NAMES = ("images", "x", "arr_0")  # the array an .npz source is read from, in order of preference

_SUFFIX_TEXT = ", ".join(suffix[1:] for suffix in IMAGE_SUFFIXES)
_GRAY_MODES = ("1", "L", "LA", "La")  # Pillow modes read as 8-bit grayscale; palette and colour modes become RGB


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


def _visible_files(folder: Path, pattern: str = "*") -> list[Path]:
    """Files under `folder` (searched recursively), sorted, leaving out hidden ones: any name below `folder` that
    starts with '.' (a Jupyter .ipynb_checkpoints copy, macOS ._ resource forks, .cache folders)."""
    return sorted(p for p in folder.rglob(pattern)
                  if not any(part.startswith(".") for part in p.relative_to(folder).parts) and p.is_file())


def _folder_images(folder: Path) -> list[Path]:
    return [p for p in _visible_files(folder) if p.suffix.lower() in IMAGE_SUFFIXES]


def _found_files(folder: Path) -> str:
    """What a folder without images holds, for the message that refuses it."""
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    if not files:
        return "it holds no files"
    shown = ", ".join(files[:5]) + (", ..." if len(files) > 5 else "")
    return f"found {len(files)} file{'s' if len(files) > 1 else ''}: {shown}"


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
        elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            raise ConfigError(f"{path} is one image; ganbench scores sets of samples (a folder of images, an .npz, "
                              "a checkpoint): pass the folder that holds it")
        elif path.is_file():
            sources.append(Source("checkpoint", path, _run_from_path(path)))
        else:
            checkpoints = _visible_files(path, "epoch_[0-9][0-9][0-9][0-9].pt")
            if checkpoints:
                sources += [Source("checkpoint", p, _run_from_path(p)) for p in checkpoints]
            elif _folder_images(path):
                sources.append(Source("folder", path, {"kind": "folder"}))
            else:
                raise ConfigError(
                    f"{path} holds no ganbench checkpoints (epoch_XXXX.pt) and no images ({_SUFFIX_TEXT}); {_found_files(path)}"
                )
    unique: dict[Path, Source] = {}  # a file named twice (or inside a folder also given) is one source
    for source in sources:
        unique.setdefault(source.path.resolve(), source)
    return list(unique.values())


def _run_from_path(path: Path) -> dict:
    """Run fields from the OUT/<model>/<dataset>/seed<k>/epoch_XXXX.pt layout (the checkpoint confirms them); a
    checkpoint outside that layout is taken for a baseline's until it is read."""
    from ganbench.train.zoo import MODELS

    run = {"kind": "baseline"}
    if path.stem.startswith("epoch_") and path.stem[6:].isdigit():
        run["epoch"] = int(path.stem[6:])
    if path.parent.name.startswith("seed") and path.parent.name[4:].isdigit():
        run["seed"] = int(path.parent.name[4:])
        run["dataset"] = path.parent.parent.name
        if path.parent.parent.parent.name in MODELS:
            run["kind"] = path.parent.parent.parent.name
    return run


def check_generator_output(flat: torch.Tensor, low: float = -1.0, high: float = 1.0, tolerance: float = 1e-3) -> None:
    """Refuse NaN, inf and values outside [low, high] (beyond float round-off) instead of clamping them away."""
    # One reduction and one device sync per batch: aminmax propagates NaN and inf lies outside any finite range,
    # so both fail the range test; the bad values are counted only to word the error.
    lo, hi = torch.stack(torch.aminmax(flat)).tolist()
    if low - tolerance <= lo and hi <= high + tolerance:
        return
    bad = (~torch.isfinite(flat)).sum().item()
    if bad:
        raise SampleError(f"generator output has {bad} NaN or infinite values out of {flat.numel()}")
    raise SampleError(f"generator output spans [{lo:.4g}, {hi:.4g}], outside the expected [{low}, {high}]")


def _forward(module: torch.nn.Module, z: torch.Tensor) -> torch.Tensor:
    """One batch through a generator, which may be a user's code: its failures are this source's, in one line."""
    try:
        images = module(z)
    except (MemoryError, torch.OutOfMemoryError):
        raise
    except Exception as exc:
        raise SampleError(f"generator failed: {type(exc).__name__}: {one_line(exc)}") from exc
    if not isinstance(images, torch.Tensor):
        raise SampleError(f"generator returned {type(images).__name__}, expected a tensor of images")
    return images.float()


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
    weight = next((p for p in module.parameters() if p.is_floating_point()), None)
    dtype = torch.float32 if weight is None else weight.dtype  # the same float32 noise, in the module's precision
    out = []
    for first in range(0, stop, batch_size):
        z = torch.randn(min(batch_size, num_samples - first), latent_dim, generator=noise_rng, dtype=torch.float32)
        if first < start:  # another rank's batch: draw its noise to keep the stream aligned, skip the module
            continue
        images = _forward(module, z.to(device, dtype))
        check_generator_output(images)
        if images.ndim == 2:  # flattened 28x28 (the baseline's output)
            side = int(round(images.shape[1] ** 0.5))
            images = images.reshape(-1, 1, side, side)
        out.append(images.add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8).cpu())  # in place after one copy
        if progress is not None:
            progress(z.shape[0])
    return torch.cat(out)


def load_baseline_generator(path: Path) -> tuple[torch.nn.Module, int, dict]:
    """The generator of a ganbench checkpoint of any zoo model (its kind names the model), its latent size and its
    run fields, with the model's name as the run's kind."""
    from ganbench.train.checkpoint import load_checkpoint
    from ganbench.train.models import make_model_generator
    from ganbench.train.zoo import MODELS

    state = load_checkpoint(path)
    kind = state.get("kind")
    if kind not in MODELS:
        raise CheckpointError(f"{path} is a {kind!r} checkpoint; eval knows the zoo's: {', '.join(MODELS)}")
    latent_dim = int(state["config"].get("latent_dim", 100))
    with own_torch_state():  # float32 as trained, and the caller's random stream left alone by the initialisation
        generator = make_model_generator(MODELS[kind].architecture, latent_dim)
    try:
        generator.load_state_dict(state["generator"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: generator weights do not fit the {kind} architecture ({one_line(exc)})") from exc
    run = {"kind": kind, "dataset": state["dataset"]["name"], "seed": state["config"].get("seed"),
           "epoch": state["epoch"], "step": state["step"]}
    return generator, latent_dim, run


def import_generator_factory(spec: str) -> Callable[[], tuple[torch.nn.Module, int]]:
    """The callable that `module:callable` names; ConfigError when it cannot be imported or is not callable (the same
    for every source, so `ganbench eval` checks it once, before any work)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"--generator expects module:callable, got {spec!r}")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except Exception as exc:  # ImportError, AttributeError, or anything the user's module raises on import
        raise ConfigError(f"--generator {spec}: cannot import it ({one_line(exc)})") from exc
    if not callable(factory):
        raise ConfigError(f"--generator {spec} is {type(factory).__name__}, not a callable returning (nn.Module, latent_dim)")
    return factory


def load_user_generator(spec: str, path: Path) -> tuple[torch.nn.Module, int]:
    """`module:callable` returning (nn.Module, latent_dim), with weights from a state-dict file at `path`."""
    factory = import_generator_factory(spec)
    try:
        made = factory()
    except Exception as exc:  # user code: any failure is this source's, in one line
        raise ConfigError(f"--generator {spec}: calling it failed: {type(exc).__name__}: {one_line(exc)}") from exc
    if not (isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], torch.nn.Module)):
        raise ConfigError(f"--generator {spec} must return (nn.Module, latent_dim), got {type(made).__name__}")
    module, latent_dim = made
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
        raise ConfigError(f"--generator {spec} must return (nn.Module, latent_dim) with latent_dim a positive integer, "
                          f"got {latent_dim!r}")
    state = load_tensors(path, "state dict")
    if isinstance(state, dict) and "generator" in state and isinstance(state["generator"], dict):
        state = state["generator"]  # a ganbench-style checkpoint dict
    try:
        module.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: state dict does not fit --generator {spec} ({one_line(exc)})") from exc
    return module, int(latent_dim)


def is_statistics_npz(path: Path) -> bool:
    """Whether `path` is an .npz of Inception statistics (arrays `mu` and `sigma`) rather than of images."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = {name.removesuffix(".npy") for name in archive.namelist()}
    except MemoryError:
        raise
    except Exception:  # not a readable zip (zipfile raises many types): not statistics; loading it says what is wrong
        return False
    return {"mu", "sigma"} <= names


def load_npz_images(path: Path, limit: int | None = None) -> torch.Tensor:
    """uint8 NCHW images from an .npz (see the module docstring for which array); at most `limit` of them.

    Only the rows needed are read, from the member's stream, so a compressed array decompresses no further
    than `limit` images however large its header says it is.
    """
    assert limit is None or limit > 0, limit
    if is_statistics_npz(path):
        raise SampleError(f"{path} is a statistics file (arrays mu and sigma), not images; pass an .npz of uint8 images")
    try:
        with zipfile.ZipFile(path) as archive:
            headers = {info.filename.removesuffix(".npy"): (info, *_npy_header(archive, info))
                       for info in archive.infolist() if info.filename.endswith(".npy")}
            name = _images_array_name(path, headers)
            info, shape, fortran_order, dtype, header_bytes = headers[name]
            layout = _check_images_array(path, name, shape, dtype, headers)
            row_bytes = math.prod(shape[1:])
            if info.file_size != header_bytes + shape[0] * row_bytes:
                raise SampleError(
                    f"{path}: array {name!r} claims {shape} uint8 ({_gib(shape[0] * row_bytes)}), but holds "
                    f"{info.file_size - header_bytes:,} bytes; the file is truncated or corrupt"
                )
            rows = shape[0] if limit is None else min(shape[0], limit)
            read = shape[0] if fortran_order else rows  # Fortran order keeps an image's pixels apart: read all
            if read * row_bytes > MAX_DECODED_BYTES:
                raise SampleError(
                    f"{path}: {read} images of {shape[1:]} are {_gib(read * row_bytes)}, more than the "
                    f"{_gib(MAX_DECODED_BYTES)} ganbench decodes from one source; pass a smaller --num-samples"
                )
            with archive.open(info) as member:
                member.read(header_bytes)
                flat = _read_exactly(member, read * row_bytes, f"{path}: array {name!r}")
    except (SampleError, MemoryError):
        raise
    except Exception as exc:  # zipfile, zlib and numpy's header parser raise many types on corrupt bytes
        raise SampleError(f"cannot read {path} as an .npz of images ({type(exc).__name__}: {one_line(exc)})") from exc
    array = flat.reshape(shape[0], *shape[1:], order="F")[:rows] if fortran_order else flat.reshape(rows, *shape[1:])
    return _to_nchw(array, layout)


def _npy_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, header length) of one .npy member, without reading its data."""
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(member)
        else:  # 3.0 only adds utf-8 field names, which an image array cannot have
            return (), False, np.dtype("V"), 0
        return tuple(shape), bool(fortran_order), dtype, member.tell()


def _images_array_name(path: Path, headers: dict) -> str:
    for name in NPZ_IMAGE_NAMES:
        if name in headers:
            return name
    if len(headers) == 1:
        return next(iter(headers))
    if not headers:
        raise SampleError(f"{path} holds no arrays; expected an .npz of uint8 images (np.savez(path, images=...))")
    raise SampleError(
        f"{path}: cannot tell which array holds the images; found {_listing(headers)}; "
        f"name it {' or '.join(repr(n) for n in NPZ_IMAGE_NAMES)} (np.savez(path, images=...))"
    )


def _check_images_array(path: Path, name: str, shape: tuple[int, ...], dtype: np.dtype, headers: dict) -> str:
    """The layout (NHW, NHWC or NCHW) of the array chosen as images, or a SampleError naming what was found."""
    layout = _layout(shape)
    problem = None
    if dtype != np.uint8:
        problem = f"is {dtype}, expected uint8 images 0..255"
    elif layout is None:
        problem = "has a shape that is not NHW, NHWC or NCHW with 1 or 3 channels"
    elif shape[0] == 0:
        problem = "holds 0 images"
    elif _pixels(shape, layout) == 0 or _pixels(shape, layout) > MAX_IMAGE_PIXELS:
        problem = f"has images of {_pixels(shape, layout):,} pixels, expected 1 to {MAX_IMAGE_PIXELS:,}"
    if problem is not None:
        raise SampleError(f"{path}: array {name!r} {problem} (found {_listing(headers)})")
    return layout


def _listing(headers: dict) -> str:
    shown = [f"{name} {shape} {dtype}" for name, (_, shape, _, dtype, _) in list(headers.items())[:6]]
    return ", ".join(shown) + (", ..." if len(headers) > 6 else "")


def _read_exactly(stream, count: int, where: str) -> np.ndarray:
    """`count` bytes of a stream as a writable uint8 array, read in bounded chunks (no second full-size copy)."""
    out = np.empty(count, np.uint8)
    filled = 0
    while filled < count:
        chunk = stream.read(min(count - filled, 1 << 24))
        if not chunk:
            raise SampleError(f"{where} ends after {filled:,} of {count:,} bytes; the file is truncated")
        out[filled : filled + len(chunk)] = np.frombuffer(chunk, np.uint8)
        filled += len(chunk)
    return out


def load_folder_images(folder: Path, limit: int | None = None) -> torch.Tensor:
    """uint8 NCHW images from the image files under `folder` (sorted paths); at most the first `limit` of them."""
    assert limit is None or limit > 0, limit
    paths = _folder_images(folder)
    if not paths:
        raise SampleError(f"no images ({_SUFFIX_TEXT}) in {folder}; {_found_files(folder)}")
    paths = paths[:limit]
    arrays: list[np.ndarray] = []
    sizes: Counter[tuple[int, int]] = Counter()
    for path in paths:
        size, array = _read_image(path, decode=len(sizes) <= 1)  # once sizes differ, only count them
        sizes[size] += 1
        if len(sizes) == 1:
            arrays.append(array)
            if len(arrays) == 1 and len(paths) * array.nbytes > MAX_DECODED_BYTES:
                raise SampleError(
                    f"{folder}: {len(paths)} images of {array.shape} are {_gib(len(paths) * array.nbytes)}, more than the "
                    f"{_gib(MAX_DECODED_BYTES)} ganbench decodes from one source; pass a smaller --num-samples"
                )
    if len(sizes) > 1:
        counts = ", ".join(f"{n} of {h}x{w}" for (h, w), n in sizes.most_common(5))
        raise SampleError(f"images in {folder} differ in size (height x width): {counts}; make them one size")
    if any(a.ndim == 3 for a in arrays):
        # Mixed grayscale and RGB: repeat the gray channel. Inception sees the same input either way (it repeats a
        # gray channel, like PIL's convert("RGB")), and LeNet reads an RGB image of equal channels as the gray one.
        arrays = [np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
    return _to_nchw(np.stack(arrays), "NHWC" if arrays[0].ndim == 3 else "NHW")


def _read_image(path: Path, decode: bool) -> tuple[tuple[int, int], np.ndarray | None]:
    """(height, width) of one image file and, if `decode`, its pixels: uint8 HxW (grayscale) or HxWx3 (RGB)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")  # notes such as palette transparency
            # Pillow only warns about (not refuses) images up to twice its own limit; ganbench's is lower
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:  # reads the header only
                size = (image.height, image.width)
                if not 0 < image.width * image.height <= MAX_IMAGE_PIXELS:
                    raise SampleError(
                        f"image {path} is {image.width}x{image.height} pixels; ganbench decodes images of 1 to "
                        f"{MAX_IMAGE_PIXELS:,} pixels (a larger one may be a decompression bomb)"
                    )
                return size, (_to_8bit(image, path) if decode else None)
    except (SampleError, MemoryError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise SampleError(f"image {path} refused as a possible decompression bomb ({one_line(exc)})") from exc
    except Exception as exc:  # Pillow's decoders raise many types (OSError, SyntaxError, ValueError, zlib.error, ...)
        raise SampleError(f"cannot read image {path}: {type(exc).__name__}: {one_line(exc)}") from exc


def _to_8bit(image, path: Path) -> np.ndarray:
    """Pixels of an open Pillow image as uint8: grayscale HxW or RGB HxWx3."""
    if image.mode.startswith("I;16") or image.mode == "I":  # 16-bit grayscale (mode "I": 32-bit ints of 16-bit data)
        values = np.asarray(image)
        if image.mode == "I" and (values.min() < 0 or values.max() > 65535):
            raise SampleError(f"image {path} holds 32-bit values outside 0..65535; expected 8- or 16-bit images")
        if 0 < values.max() <= 255:  # the high byte kept below would be 0 everywhere: a black image
            raise SampleError(f"image {path} is 16-bit but holds only values 0..255 (8-bit pixels saved in a 16-bit "
                              "file?); ganbench keeps a 16-bit image's high byte, which here is 0 everywhere: save it "
                              "as 8-bit")
        return (values >> 8).astype(np.uint8)  # the high byte, as Pillow decodes 16-bit colour PNGs
    if image.mode == "F":
        raise SampleError(f"image {path} holds 32-bit floats; expected 8- or 16-bit images")
    return np.asarray(image.convert("L" if image.mode in _GRAY_MODES else "RGB"))


def _layout(shape: tuple[int, ...]) -> str | None:
    if len(shape) == 3:
        return "NHW"
    if len(shape) == 4 and shape[1] in (1, 3):
        return "NCHW"
    if len(shape) == 4 and shape[-1] in (1, 3):
        return "NHWC"
    return None


def _pixels(shape: tuple[int, ...], layout: str) -> int:
    return shape[2] * shape[3] if layout == "NCHW" else shape[1] * shape[2]


def _gib(count: int) -> str:
    return f"{count / 2**30:.3g} GiB"


def _to_nchw(array: np.ndarray, layout: str) -> torch.Tensor:
    if layout == "NHW":
        array = array[:, None]
    elif layout == "NHWC":
        array = array.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(array))


def first_n(images: torch.Tensor, n: int, where: str) -> torch.Tensor:
    if images.shape[0] < n:
        raise DataUnavailableError(f"{where} holds {counted(images.shape[0], 'image')}, fewer than --num-samples {n}")
    return images[:n]
