"""Tests for edgegan.data.images (every image is generated here, into tmp_path)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgegan.data import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    list_images,
    load_image,
    load_image_batch,
    save_image,
    to_pil,
)
from edgegan.errors import ConfigError, EdgeganError, ImageLoadError

RNG = np.random.default_rng(0)


def _rgb_array(h: int = 12, w: int = 16) -> np.ndarray:
    return RNG.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _check_range(x: torch.Tensor, h: int, w: int) -> None:
    assert x.dtype == torch.float32
    assert tuple(x.shape) == (3, h, w)
    assert x.min() >= -1.0 and x.max() <= 1.0


def _expected(arr_u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(arr_u8.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)


# --------------------------------------------------------------------------- good inputs


def test_rgb_png_exact(tmp_path: Path) -> None:
    arr = _rgb_array()
    p = tmp_path / "a.png"
    Image.fromarray(arr).save(p)
    x = load_image(p)
    _check_range(x, 12, 16)
    torch.testing.assert_close(x, _expected(arr), atol=1e-6, rtol=0)
    assert x.min() == pytest.approx(-1.0) and x.max() == pytest.approx(1.0)


def test_rgb_jpg(tmp_path: Path) -> None:
    p = tmp_path / "a.JPG"
    Image.new("RGB", (16, 8), (255, 0, 0)).save(p, format="JPEG", quality=95)
    x = load_image(str(p))
    _check_range(x, 8, 16)
    assert x[0].mean() > 0.9 and x[1].mean() < -0.9 and x[2].mean() < -0.9


def test_rgba_composited_over_white(tmp_path: Path) -> None:
    arr = np.zeros((4, 4, 4), dtype=np.uint8)
    arr[..., 0] = 255  # red
    arr[:2, :, 3] = 255  # top half opaque
    arr[2:, :, 3] = 0  # bottom half transparent (colour underneath is red, must not show)
    p = tmp_path / "a.png"
    Image.fromarray(arr, mode="RGBA").save(p)
    x = load_image(p)
    _check_range(x, 4, 4)
    torch.testing.assert_close(x[:, :2], _expected(np.array([[[255, 0, 0]]], np.uint8)).expand(3, 2, 4))
    torch.testing.assert_close(x[:, 2:], torch.ones(3, 2, 4))
    # half transparent black over white -> mid gray
    arr2 = np.zeros((2, 2, 4), dtype=np.uint8)
    arr2[..., 3] = 51  # alpha 0.2
    Image.fromarray(arr2, mode="RGBA").save(p)
    torch.testing.assert_close(load_image(p), torch.full((3, 2, 2), 0.8 * 2 - 1), atol=1e-6, rtol=0)


def test_grayscale_l(tmp_path: Path) -> None:
    arr = np.array([[0, 128, 255]], dtype=np.uint8)
    p = tmp_path / "g.png"
    Image.fromarray(arr, mode="L").save(p)
    x = load_image(p)
    _check_range(x, 1, 3)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    torch.testing.assert_close(x[0, 0], torch.tensor([-1.0, 128 / 127.5 - 1, 1.0]))


def test_grayscale_la(tmp_path: Path) -> None:
    arr = np.array([[[0, 255], [0, 0]]], dtype=np.uint8)  # opaque black, transparent black
    p = tmp_path / "la.png"
    Image.fromarray(arr, mode="LA").save(p)
    x = load_image(p)
    _check_range(x, 1, 2)
    torch.testing.assert_close(x[:, 0, 0], torch.full((3,), -1.0))
    torch.testing.assert_close(x[:, 0, 1], torch.full((3,), 1.0))


def test_palette_p(tmp_path: Path) -> None:
    img = Image.new("P", (5, 3))
    img.putpalette([0, 0, 0, 0, 255, 0] + [0] * (254 * 3))
    img.putpixel((0, 0), 1)
    p = tmp_path / "p.png"
    img.save(p)
    x = load_image(p)
    _check_range(x, 3, 5)
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([-1.0, 1.0, -1.0]))
    torch.testing.assert_close(x[:, 1, 1], torch.tensor([-1.0, -1.0, -1.0]))


def test_palette_with_transparency_gif(tmp_path: Path) -> None:
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    img.putpixel((0, 0), 0)
    p = tmp_path / "t.gif"
    img.save(p, transparency=0)
    x = load_image(p)
    _check_range(x, 4, 4)
    torch.testing.assert_close(x[:, 0, 0], torch.ones(3))  # transparent -> white
    torch.testing.assert_close(x[:, 1, 1], torch.tensor([1.0, -1.0, -1.0]))


def test_cmyk_jpeg(tmp_path: Path) -> None:
    p = tmp_path / "c.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(p, format="JPEG", quality=95)
    assert Image.open(p).mode == "CMYK"
    x = load_image(p)
    _check_range(x, 8, 8)
    assert x[0].mean() > 0.9 and x[1].mean() < -0.9 and x[2].mean() < -0.9


def test_one_bit(tmp_path: Path) -> None:
    img = Image.new("1", (4, 2), 0)
    img.putpixel((1, 0), 1)
    p = tmp_path / "b.png"
    img.save(p)
    assert Image.open(p).mode == "1"
    x = load_image(p)
    _check_range(x, 2, 4)
    assert set(x.unique().tolist()) == {-1.0, 1.0}
    torch.testing.assert_close(x[:, 0, 1], torch.ones(3))
    torch.testing.assert_close(x[:, 0, 0], -torch.ones(3))


def test_16bit_grayscale_full_precision(tmp_path: Path) -> None:
    arr = np.array([[0, 32768, 65535, 1]], dtype=np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(arr).save(p)
    assert Image.open(p).mode.startswith("I")
    x = load_image(p)
    _check_range(x, 1, 4)
    assert x[0, 0, 0].item() == pytest.approx(-1.0, abs=1e-6)
    assert x[0, 0, 2].item() == pytest.approx(1.0, abs=1e-6)
    assert x[0, 0, 1].item() == pytest.approx(32768 / 65535 * 2 - 1, abs=1e-6)
    assert x[0, 0, 3].item() == pytest.approx(1 / 65535 * 2 - 1, abs=1e-6)  # lost in any 8-bit round trip
    assert x[0, 0, 3].item() > -1.0


def test_16bit_big_endian_mode(tmp_path: Path) -> None:
    img = Image.new("I;16B", (2, 2), 32768)
    p = tmp_path / "g16b.tif"
    img.save(p)
    x = load_image(p)
    _check_range(x, 2, 2)
    assert x[0, 0, 0].item() == pytest.approx(32768 / 65535 * 2 - 1, abs=1e-6)


def test_float_tiff_clipped(tmp_path: Path) -> None:
    arr = np.array([[-0.5, 0.0, 0.25, 1.0, 3.0]], dtype=np.float32)
    p = tmp_path / "f.tif"
    Image.fromarray(arr, mode="F").save(p)
    assert Image.open(p).mode == "F"
    x = load_image(p)
    _check_range(x, 1, 5)
    torch.testing.assert_close(x[0, 0], torch.tensor([-1.0, -1.0, -0.5, 1.0, 1.0]))


@pytest.mark.parametrize(("orientation", "top_is_red"), [(6, True), (8, False)])
def test_exif_orientation(tmp_path: Path, orientation: int, top_is_red: bool) -> None:
    arr = np.zeros((10, 20, 3), dtype=np.uint8)
    arr[:, :10] = (255, 0, 0)  # left half red
    arr[:, 10:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / "rot.jpg"
    Image.fromarray(arr).save(p, format="JPEG", quality=95, exif=exif.tobytes())
    assert Image.open(p).size == (20, 10)
    x = load_image(p)
    _check_range(x, 20, 10)  # upright: 10 wide, 20 tall
    top_red = x[0, :8].mean() > 0.8 and x[2, :8].mean() < -0.8
    bottom_red = x[0, -8:].mean() > 0.8 and x[2, -8:].mean() < -0.8
    assert top_red if top_is_red else bottom_red


def test_resize_size(tmp_path: Path) -> None:
    p = tmp_path / "a.png"
    Image.fromarray(_rgb_array(12, 16)).save(p)
    _check_range(load_image(p, size=8), 8, 8)
    _check_range(load_image(p, size=(6, 20)), 6, 20)
    _check_range(load_image(p, size=(40, 40)), 40, 40)  # upscaling clamps overshoot


def test_resize_size_keeps_constant_colour(tmp_path: Path) -> None:
    p = tmp_path / "c.png"
    Image.new("RGB", (32, 32), (255, 255, 255)).save(p)
    torch.testing.assert_close(load_image(p, size=7), torch.ones(3, 7, 7))


def test_resize_max_side(tmp_path: Path) -> None:
    p = tmp_path / "a.png"
    Image.fromarray(_rgb_array(30, 60)).save(p)
    _check_range(load_image(p, max_side=20), 10, 20)
    _check_range(load_image(p, max_side=100), 30, 60)  # never upscales
    q = tmp_path / "tall.png"
    Image.fromarray(_rgb_array(50, 20)).save(q)
    _check_range(load_image(q, max_side=25), 25, 10)


@pytest.mark.parametrize(
    "kw",
    [
        {"size": 0},
        {"size": -3},
        {"size": (4, 0)},
        {"size": (4,)},
        {"size": True},
        {"max_side": 0},
        {"max_side": -1},
        {"size": 4, "max_side": 4},
        {"max_pixels": 0},
    ],
)
def test_bad_size_arguments(tmp_path: Path, kw: dict) -> None:
    p = tmp_path / "a.png"
    Image.fromarray(_rgb_array()).save(p)
    with pytest.raises(ConfigError):
        load_image(p, **kw)


# --------------------------------------------------------------------------- bad inputs


def _assert_load_error(path: Path, *needles: str, **kw: object) -> ImageLoadError:
    with pytest.raises(ImageLoadError) as info:
        load_image(path, **kw)  # type: ignore[arg-type]
    msg = str(info.value)
    assert str(path) in msg
    assert "\n" not in msg
    for n in needles:
        assert n in msg
    assert isinstance(info.value, EdgeganError) and isinstance(info.value, ValueError)
    return info.value


def test_missing_file(tmp_path: Path) -> None:
    _assert_load_error(tmp_path / "nope.png", "not found")


def test_directory(tmp_path: Path) -> None:
    d = tmp_path / "dir.png"
    d.mkdir()
    _assert_load_error(d, "folder")


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    _assert_load_error(p, "empty")


def test_truncated_png(tmp_path: Path) -> None:
    p = tmp_path / "trunc.png"
    Image.fromarray(RNG.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)).save(p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    _assert_load_error(p)


def test_random_bytes_png(tmp_path: Path) -> None:
    p = tmp_path / "noise.png"
    p.write_bytes(RNG.integers(0, 256, size=1000, dtype=np.uint8).tobytes())
    _assert_load_error(p)


def test_text_file(tmp_path: Path) -> None:
    p = tmp_path / "notes.txt"
    p.write_text("hello, I am not an image\n")
    _assert_load_error(p, "not an image")


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height but whose pixel data is junk: decoding it would fail."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"junk") + chunk(b"IEND", b""))


def test_over_max_pixels_checked_from_header(tmp_path: Path) -> None:
    p = tmp_path / "big.png"
    _png_header_only(p, 5000, 5000)
    # sanity: decoding this file fails, so the "too large" message proves nothing was decoded
    _assert_load_error(p, "corrupt", max_pixels=None)
    _assert_load_error(p, "max_pixels=1000", "5000x5000", max_pixels=1000)


def test_over_max_pixels_not_preempted_by_pillow_bomb_check(tmp_path: Path) -> None:
    p = tmp_path / "huge.png"
    _png_header_only(p, 100_000, 100_000)  # 1e10 pixels: far beyond Pillow's own limit
    before = Image.MAX_IMAGE_PIXELS
    _assert_load_error(p, f"max_pixels={DEFAULT_MAX_PIXELS}")
    assert before == Image.MAX_IMAGE_PIXELS  # Pillow's global guard is restored


def test_real_image_over_max_pixels(tmp_path: Path) -> None:
    p = tmp_path / "small.png"
    Image.fromarray(_rgb_array(40, 40)).save(p)
    _assert_load_error(p, "max_pixels=1000", max_pixels=1000)
    _check_range(load_image(p, max_pixels=1600), 40, 40)


# --------------------------------------------------------------------------- batches and folders


def test_load_image_batch(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    Image.fromarray(_rgb_array(8, 8)).save(a)
    Image.fromarray(_rgb_array(8, 8)).save(b)
    Image.fromarray(_rgb_array(6, 10)).save(c)
    batch = load_image_batch([a, b])
    assert tuple(batch.shape) == (2, 3, 8, 8) and batch.dtype == torch.float32
    torch.testing.assert_close(batch[1], load_image(b))
    with pytest.raises(ImageLoadError, match="size="):
        load_image_batch([a, c])
    assert tuple(load_image_batch([a, c], size=(5, 7)).shape) == (2, 3, 5, 7)
    with pytest.raises(ImageLoadError):
        load_image_batch([])
    with pytest.raises(ImageLoadError, match="missing"):
        load_image_batch([a, tmp_path / "missing.png"])


def test_list_images_sorted(tmp_path: Path) -> None:
    for name in ["b.png", "a.JPG", "c.jpeg", "d.TIFF", "e.webp", "notes.txt", ".hidden.png"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "z.png").write_bytes(b"x")
    (tmp_path / "folder.png").mkdir()
    found = list_images(tmp_path)
    assert [f.name for f in found] == ["a.JPG", "b.png", "c.jpeg", "d.TIFF", "e.webp"]
    assert all(isinstance(f, Path) for f in found)
    assert list_images(str(tmp_path)) == found


def test_list_images_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(ImageLoadError, match="not found") as info:
        list_images(missing)
    assert str(missing) in str(info.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageLoadError, match="no image files"):
        list_images(empty)
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text("a")
    (texts / "b.csv").write_text("b")
    with pytest.raises(ImageLoadError, match="no image files"):
        list_images(texts)
    f = texts / "a.txt"
    with pytest.raises(ImageLoadError, match="got a file"):
        list_images(f)


def test_image_extensions() -> None:
    for ext in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"):
        assert ext in IMAGE_EXTENSIONS
    assert all(e == e.lower() and e.startswith(".") for e in IMAGE_EXTENSIONS)


# --------------------------------------------------------------------------- saving


def test_to_pil() -> None:
    t = torch.tensor([-1.0, 0.0, 1.0, 5.0, -5.0]).view(1, 1, 5).expand(3, 1, 5)
    img = to_pil(t)
    assert img.mode == "RGB" and img.size == (5, 1)
    assert np.asarray(img)[0, :, 0].tolist() == [0, 128, 255, 255, 0]
    assert to_pil(t.unsqueeze(0)).size == (5, 1)
    with pytest.raises(ValueError):
        to_pil(torch.zeros(1, 4, 4))
    with pytest.raises(ValueError):
        to_pil(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="NaN"):
        to_pil(torch.full((3, 2, 2), float("nan")))


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tiff"])
def test_save_load_round_trip(tmp_path: Path, suffix: str) -> None:
    x = torch.rand(3, 9, 13) * 2 - 1
    out = tmp_path / "sub" / f"out{suffix}"
    assert save_image(x, out) == out
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temp files left
    y = load_image(out)
    assert tuple(y.shape) == (3, 9, 13)
    assert (y - x).abs().max().item() <= 1 / 127.5 + 1e-6


def test_save_jpeg_format_from_suffix(tmp_path: Path) -> None:
    x = torch.zeros(1, 3, 8, 8)
    out = tmp_path / "out.JPG"
    save_image(x, out)
    with Image.open(out) as img:
        assert img.format == "JPEG"
    assert list(tmp_path.iterdir()) == [out]
    assert (load_image(out) - x[0]).abs().max() < 0.05


def test_save_overwrites_and_unknown_suffix(tmp_path: Path) -> None:
    out = tmp_path / "o.png"
    save_image(torch.ones(3, 4, 4), out)
    save_image(-torch.ones(3, 4, 4), out)
    torch.testing.assert_close(load_image(out), -torch.ones(3, 4, 4))
    with pytest.raises(ConfigError):
        save_image(torch.ones(3, 4, 4), tmp_path / "o.unknownext")
    with pytest.raises(ConfigError):
        save_image(torch.ones(3, 4, 4), tmp_path / "noext")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.png"]
