"""Sources -> samples: .npz and image folders decode to uint8 NCHW or fail with one SampleError line (truncated,
corrupt, bombs, lying headers, ambiguous arrays), 16-bit images scale to 8 bits, and generation's checks keep
its images bit for bit."""

import ast
import importlib.util
import io
import random
import re
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganbench import samples
from ganbench.errors import ConfigError, SampleError
from ganbench.samples import (
    IMAGE_SUFFIXES,
    MAX_IMAGE_PIXELS,
    check_generator_output,
    discover_sources,
    generate,
    is_statistics_npz,
    load_folder_images,
    load_npz_images,
)


def _images(n=6, shape=(8, 8), seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


# -- .npz: which array, and what it must be --------------------------------------------------------------------------


def test_npz_reads_images_then_x_then_arr_0_then_the_only_array(tmp_path):
    images = _images()
    labels = np.arange(6, dtype=np.int64)
    np.savez(tmp_path / "a.npz", labels=labels, images=images)  # labels first: read as images before
    np.savez(tmp_path / "b.npz", labels=labels, x=images)
    np.savez(tmp_path / "c.npz", images, labels)  # arr_0, arr_1
    np.savez(tmp_path / "d.npz", samples=images)
    for name in "abcd":
        assert torch.equal(load_npz_images(tmp_path / f"{name}.npz"), torch.from_numpy(images[:, None])), name
    nhwc = _images(shape=(8, 8, 3))
    np.savez(tmp_path / "nhwc.npz", images=nhwc)
    np.savez(tmp_path / "nchw.npz", images=nhwc.transpose(0, 3, 1, 2))
    expected = torch.from_numpy(nhwc.transpose(0, 3, 1, 2).copy())
    assert torch.equal(load_npz_images(tmp_path / "nhwc.npz"), expected)
    assert torch.equal(load_npz_images(tmp_path / "nchw.npz"), expected)
    np.savez(tmp_path / "fortran.npz", images=np.asfortranarray(nhwc))
    assert torch.equal(load_npz_images(tmp_path / "fortran.npz", limit=4), expected[:4])


def test_npz_ambiguous_or_wrong_arrays_are_refused_naming_what_was_found(tmp_path):
    np.savez(tmp_path / "two.npz", fakes=_images(), labels=np.arange(6))
    with pytest.raises(SampleError, match=r"two\.npz: cannot tell which array holds the images; found fakes \(6, 8, 8\) "
                                          r"uint8, labels \(6,\) int64; name it 'images' or 'x' or 'arr_0'"):
        load_npz_images(tmp_path / "two.npz")
    np.savez(tmp_path / "float.npz", images=_images().astype(np.float32))
    with pytest.raises(SampleError, match=r"array 'images' is float32, expected uint8 images 0\.\.255 "
                                          r"\(found images \(6, 8, 8\) float32\)$"):
        load_npz_images(tmp_path / "float.npz")
    np.savez(tmp_path / "shape.npz", images=_images(shape=(8, 8, 5)), labels=np.arange(6))
    with pytest.raises(SampleError, match=r"array 'images' has a shape that is not NHW, NHWC or NCHW with 1 or 3 "
                                          r"channels \(found images \(6, 8, 8, 5\) uint8, labels \(6,\) int64\)"):
        load_npz_images(tmp_path / "shape.npz")
    np.savez(tmp_path / "empty.npz", images=np.zeros((0, 28, 28), np.uint8))
    with pytest.raises(SampleError, match=r"array 'images' holds 0 images"):
        load_npz_images(tmp_path / "empty.npz")
    np.savez(tmp_path / "none.npz")
    with pytest.raises(SampleError, match=r"none\.npz holds no arrays"):
        load_npz_images(tmp_path / "none.npz")


def test_statistics_npz_is_recognised_and_refused_as_images(tmp_path):
    np.savez(tmp_path / "stats.npz", mu=np.zeros(4), sigma=np.eye(4))
    np.savez(tmp_path / "images.npz", images=_images())
    (tmp_path / "junk.npz").write_bytes(b"junk")
    assert is_statistics_npz(tmp_path / "stats.npz")
    assert not is_statistics_npz(tmp_path / "images.npz") and not is_statistics_npz(tmp_path / "junk.npz")
    assert not is_statistics_npz(tmp_path / "missing.npz")
    with pytest.raises(SampleError, match=r"stats\.npz is a statistics file \(arrays mu and sigma\), not images"):
        load_npz_images(tmp_path / "stats.npz")


# -- .npz: corrupt, truncated, lying and bombs -------------------------------------------------------------------------


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "deflated"])
def test_truncated_and_corrupt_npz_load_or_raise_sample_error(tmp_path, compressed):
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, images=_images(20))
    base = buffer.getvalue()
    path = tmp_path / "f.npz"
    for cut in range(0, len(base), max(1, len(base) // 40)):
        path.write_bytes(base[:cut])
        with pytest.raises(SampleError, match=r"f\.npz"):
            load_npz_images(path)
    rng = random.Random(2)
    for _ in range(150):
        data = bytearray(base)
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data))
        try:
            images = load_npz_images(path)
        except SampleError as exc:
            assert "\n" not in str(exc)
        else:
            assert images.dtype == torch.uint8 and images.ndim == 4


def _npy(shape: tuple[int, ...], data: bytes) -> bytes:
    """An .npy member whose header claims `shape` of uint8 whatever `data` holds."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return buffer.getvalue() + data


def test_npz_whose_header_claims_73_gib_is_refused_without_allocating_it(tmp_path):
    shape = (292_256, 299, 299, 3)  # 73.0 GiB
    with zipfile.ZipFile(tmp_path / "liar.npz", "w") as archive:
        archive.writestr("images.npy", _npy(shape, bytes(299 * 299 * 3)))
    for limit in (None, 200):
        with pytest.raises(SampleError, match=r"liar\.npz: array 'images' claims \(292256, 299, 299, 3\) uint8 \(73 GiB\), "
                                              r"but holds 268,203 bytes; the file is truncated or corrupt$"):
            load_npz_images(tmp_path / "liar.npz", limit=limit)


def test_npz_bigger_than_the_decoding_bound_is_refused_unless_limited(tmp_path, monkeypatch):
    np.savez(tmp_path / "big.npz", images=_images(10))
    monkeypatch.setattr(samples, "MAX_DECODED_BYTES", 5 * 64)
    with pytest.raises(SampleError, match=r"big\.npz: 10 images of \(8, 8\) are 5.96e-07 GiB, more than the 2.98e-07 GiB "
                                          r"ganbench decodes from one source; pass a smaller --num-samples"):
        load_npz_images(tmp_path / "big.npz")
    assert load_npz_images(tmp_path / "big.npz", limit=5).shape == (5, 1, 8, 8)


def test_npz_zip_bomb_decompresses_only_the_images_asked_for(tmp_path):
    """128 MiB of zeros deflated to ~0.5 MB: 200 images must not decompress the rest."""
    shape = (10_923, 64, 64, 3)
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("images.npy", "w", force_zip64=True) as member:
            member.write(_npy(shape, b""))
            block = bytes(64 * 64 * 3 * 1024)
            for first in range(0, shape[0], 1024):
                member.write(block[: (min(shape[0], first + 1024) - first) * 64 * 64 * 3])
    assert path.stat().st_size < 2**20
    tracemalloc.start()
    try:
        images = load_npz_images(path, limit=200)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert images.shape == (200, 3, 64, 64) and not images.any()
    assert peak < 32 * 2**20, f"decoding 200 images (2.4 MiB) peaked at {peak / 2**20:.0f} MiB"


# -- image folders -----------------------------------------------------------------------------------------------------


def test_image_suffixes_are_pytorch_fids():
    # read from its source: importing pytorch_fid.fid_score takes seconds
    source = Path(importlib.util.find_spec("pytorch_fid").origin).with_name("fid_score.py").read_text()
    extensions = ast.literal_eval(re.search(r"IMAGE_EXTENSIONS = (\{[^}]*\})", source).group(1))
    assert {s[1:] for s in IMAGE_SUFFIXES} == extensions


@pytest.mark.parametrize("suffix, options", [
    (".bmp", {}), (".pgm", {}), (".png", {}), (".ppm", {}), (".tif", {}), (".tiff", {}),
    (".webp", {"lossless": True}), (".jpg", {"quality": 100, "subsampling": 0}), (".jpeg", {"quality": 100, "subsampling": 0}),
])
def test_every_format_pytorch_fid_reads_is_read(tmp_path, suffix, options):
    rgb = suffix not in (".pgm",)
    image = _images(1, (12, 10, 3) if rgb else (12, 10))[0]
    (tmp_path / "f").mkdir()
    Image.fromarray(image).save(tmp_path / "f" / f"a{suffix.upper() if suffix == '.png' else suffix}", **options)
    loaded = load_folder_images(tmp_path / "f")
    expected = torch.from_numpy(image.transpose(2, 0, 1) if rgb else image[None])[None]
    assert loaded.shape == expected.shape and loaded.dtype == torch.uint8
    if suffix in (".jpg", ".jpeg"):
        assert (loaded.int() - expected.int()).abs().max() <= 8  # lossy, even at quality 100
    else:
        assert torch.equal(loaded, expected)
    assert discover_sources([str(tmp_path / "f")])[0].kind == "folder"


def test_folder_mixing_grayscale_and_rgb_becomes_rgb(tmp_path):
    gray, rgb = _images(1, (8, 8))[0], _images(1, (8, 8, 3), seed=1)[0]
    (tmp_path / "f").mkdir()
    Image.fromarray(gray).save(tmp_path / "f" / "a.png")
    Image.fromarray(rgb).save(tmp_path / "f" / "b.png")
    loaded = load_folder_images(tmp_path / "f")
    assert loaded.shape == (2, 3, 8, 8)
    assert torch.equal(loaded[0], torch.from_numpy(gray).expand(3, 8, 8))
    assert torch.equal(loaded[1], torch.from_numpy(rgb).permute(2, 0, 1))


def test_folder_of_different_sizes_is_refused_with_a_count_per_size(tmp_path):
    (tmp_path / "f").mkdir()
    for i, (h, w) in enumerate([(8, 8), (16, 8), (8, 8), (16, 8), (8, 8)]):
        Image.fromarray(_images(1, (h, w))[0]).save(tmp_path / "f" / f"{i}.png")
    with pytest.raises(SampleError, match=r"images in .*f differ in size \(height x width\): 3 of 8x8, 2 of 16x8; "
                                          r"make them one size$"):
        load_folder_images(tmp_path / "f")


def test_folder_without_images_says_what_it_found(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    for name in ("a.txt", "b.csv", "notes.md"):
        (tmp_path / "other" / name).write_text("x")
    with pytest.raises(SampleError, match=r"^no images \(bmp, jpg, jpeg, pgm, png, ppm, tif, tiff, webp\) in .*empty; "
                                          r"it holds no files$"):
        load_folder_images(tmp_path / "empty")
    with pytest.raises(SampleError, match=r"in .*other; found 3 files: a\.txt, b\.csv, notes\.md$"):
        load_folder_images(tmp_path / "other")
    with pytest.raises(ConfigError, match=r"other holds no ganbench checkpoints \(epoch_XXXX\.pt\) and no images \(bmp, "
                                          r".*webp\); found 3 files: a\.txt, b\.csv, notes\.md$"):
        discover_sources([str(tmp_path / "other")])


def test_folder_limit_decodes_only_the_first_images(tmp_path):
    images = _images(5)
    (tmp_path / "f").mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / "f" / f"{i}.png")
    (tmp_path / "f" / "3.png").write_bytes(b"not a png")  # never reached with limit 3
    assert torch.equal(load_folder_images(tmp_path / "f", limit=3), torch.from_numpy(images[:3, None]))
    with pytest.raises(SampleError, match=r"cannot read image .*3\.png: UnidentifiedImageError"):
        load_folder_images(tmp_path / "f")


def test_hidden_files_and_folders_are_not_samples(tmp_path):
    # a Jupyter .ipynb_checkpoints copy sorted first: 5 duplicates scored, 5 real images dropped, no word said;
    # macOS's ._a.png resource forks failed the source
    images = _images(4)
    folder = tmp_path / "f"
    (folder / ".ipynb_checkpoints").mkdir(parents=True)
    (folder / "sub").mkdir()
    for i, image in enumerate(images[:3]):
        Image.fromarray(image).save(folder / f"{i}.png")
        Image.fromarray(image).save(folder / ".ipynb_checkpoints" / f"{i}-checkpoint.png")
    Image.fromarray(images[3]).save(folder / "sub" / "3.png")  # visible subfolders are still searched
    (folder / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    assert torch.equal(load_folder_images(folder), torch.from_numpy(images[:, None]))
    (only_hidden := tmp_path / "g" / ".cache").mkdir(parents=True)
    Image.fromarray(images[0]).save(only_hidden / "a.png")
    with pytest.raises(ConfigError, match=r"holds no ganbench checkpoints .* and no images"):
        discover_sources([str(tmp_path / "g")])


def _png(width: int, height: int, bit_depth: int, colour_type: int, raw: bytes) -> bytes:
    """A PNG written chunk by chunk, so its header can claim any size."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [9_000, 10_000, 20_000], ids=["over-ganbench", "pillow-warns", "pillow-refuses"])
def test_png_decompression_bomb_is_refused_before_decoding(tmp_path, side):
    assert side * side > MAX_IMAGE_PIXELS
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "bomb.png").write_bytes(_png(side, side, 8, 0, bytes(side + 1) * 4))
    with pytest.raises(SampleError, match=r"bomb\.png .*decompression bomb"):
        load_folder_images(tmp_path / "f")


def test_truncated_png_is_a_sample_error(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(_images(1, (32, 32, 3))[0]).save(buffer, "PNG")
    data = buffer.getvalue()
    (tmp_path / "f").mkdir()
    for cut in (0, 8, 30, len(data) // 2):
        (tmp_path / "f" / "a.png").write_bytes(data[:cut])
        with pytest.raises(SampleError, match=r"^cannot read image .*a\.png: \w+"):
            load_folder_images(tmp_path / "f")


def test_16_bit_images_keep_their_high_byte(tmp_path):
    values = np.array([[0, 0x00FF, 0x0100, 0x7FFF, 0x8000, 0x80FF, 0xFF00, 0xFFFF]], dtype=np.uint16)
    gradient = np.concatenate([values, (np.arange(8, dtype=np.uint16) * 9362)[None]])  # 0 .. 65534
    expected = torch.from_numpy((gradient >> 8).astype(np.uint8))[None, None]
    for name, image in [("I16.png", Image.fromarray(gradient)),  # mode I;16
                        ("I16B.tif", Image.fromarray(gradient.astype(">u2"))),  # mode I;16B
                        ("I.tif", Image.fromarray(gradient.astype(np.int32)))]:  # mode I
        folder = tmp_path / name.replace(".", "_")
        folder.mkdir()
        image.save(folder / name)
        with Image.open(folder / name) as reopened:
            assert reopened.mode == image.mode
        assert torch.equal(load_folder_images(folder), expected), name
    # Pillow itself reads a 16-bit RGB PNG by its high byte: the same gradient in colour gives the same pixels
    (tmp_path / "rgb").mkdir()
    rgb = np.repeat(gradient[:, :, None], 3, axis=2).astype(">u2")
    raw = b"".join(b"\x00" + row.tobytes() for row in rgb)
    (tmp_path / "rgb" / "a.png").write_bytes(_png(8, 2, 16, 2, raw))
    assert torch.equal(load_folder_images(tmp_path / "rgb"), expected.expand(1, 3, 2, 8))


@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_a_16_bit_image_holding_only_8_bit_values_is_refused_not_read_black(tmp_path, mode):
    # 8-bit pixels saved in a 16-bit file (Image.fromarray(x.astype(np.uint16))): the high byte is 0 everywhere, and
    # the folder was scored as black images (FID 561 instead of 24) without a word
    eight_bit = _images(1)[0].astype(np.uint16 if mode == "I;16" else np.int32)
    (tmp_path / "f").mkdir()
    Image.fromarray(eight_bit).save(tmp_path / "f" / ("a.png" if mode == "I;16" else "a.tif"))
    with pytest.raises(SampleError, match=r"is 16-bit but holds only values 0\.\.255 .*8-bit pixels saved in a 16-bit "
                                          r"file\?.*save it as 8-bit"):
        load_folder_images(tmp_path / "f")
    (tmp_path / "black").mkdir()  # a black 16-bit image is black either way
    Image.fromarray(np.zeros((8, 8), np.uint16)).save(tmp_path / "black" / "a.png")
    assert load_folder_images(tmp_path / "black").max() == 0


# -- generation: one reduction to check, the same images -----------------------------------------------------------


class _Pattern(torch.nn.Module):
    """Every rounding half-step of the uint8 conversion and values inside the tolerance margin, shifted by z."""

    def forward(self, z):
        steps = (torch.arange(-1, 257, dtype=torch.float32) + 0.5) / 127.5 - 1.0
        edges = torch.tensor([-1.0009, -1.0, 1.0, 1.0009, 0.0, -0.0])
        base = torch.cat([steps.clamp(-1.0009, 1.0009), edges, torch.zeros(784 - steps.numel() - edges.numel())])
        return (base + 1e-7 * z[:, :1]).clamp(-1.0009, 1.0009)


def test_generate_gives_the_same_images_as_the_reference_formula():
    for module, latent_dim in [(_Pattern(), 3), (torch.nn.Sequential(torch.nn.Linear(5, 2 * 16 * 16), torch.nn.Tanh(),
                                                                        torch.nn.Unflatten(1, (2, 16, 16))), 5)]:
        torch.manual_seed(0)
        module = module.eval()
        images = generate(module, latent_dim, 70, seed=3, batch_size=32)
        rng = torch.Generator().manual_seed(3)
        expected = []
        with torch.no_grad():
            for first in range(0, 70, 32):
                out = module(torch.randn(min(32, 70 - first), latent_dim, generator=rng)).float()
                out = out.reshape(-1, 1, 28, 28) if out.ndim == 2 else out
                expected.append(((out + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8))
        assert torch.equal(images, torch.cat(expected))


def test_check_generator_output_messages():
    good = torch.linspace(-1.0009, 1.0009, 100)
    check_generator_output(good)
    for bad_value in (float("nan"), float("inf"), float("-inf")):
        bad = good.clone()
        bad[[3, 50]] = bad_value
        bad[7] = 5.0  # out of range as well: the NaN/inf message wins
        with pytest.raises(SampleError, match=r"^generator output has 2 NaN or infinite values out of 100$"):
            check_generator_output(bad)
    with pytest.raises(SampleError, match=r"^generator output spans \[-1\.001, 1\.5\], outside the expected \[-1\.0, 1\.0\]$"):
        check_generator_output(torch.cat([good, torch.tensor([1.5])]))
    with pytest.raises(SampleError, match=r"spans \[-1\.002, 1\]"):
        check_generator_output(torch.tensor([-1.002, 1.0]))
