"""Load and save images as float tensors in [-1, 1].

Conventions:

* Loaded images are ``float32`` tensors of shape ``[3, H, W]`` with values in ``[-1, 1]``.
* Every image mode Pillow can open is turned into RGB: grayscale is repeated on three channels,
  16-bit grayscale keeps its full precision (divided by 65535, no 8-bit round trip), 32-bit float
  ("F") is clipped to ``[0, 1]``.
* Transparency is composited over **white**: transparent areas of sketches, edge maps and logos
  are meant to be background "paper"; dropping alpha would expose whatever colour the encoder
  left under transparent pixels (often black or garbage).
* EXIF orientation is applied, so photos come out upright. Only the first frame of animated
  files (GIF, WebP, multi-page TIFF) is used.
* Resizing happens on the float tensor (bicubic, antialiased, clamped), never via uint8.
* Every problem with an input file raises :class:`~edgegan.errors.ImageLoadError` with a one-line
  message that names the path; invalid ``size``/``max_side``/``max_pixels`` arguments and unknown
  output formats raise :class:`~edgegan.errors.ConfigError`. Both are ``ValueError`` subclasses.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from edgegan.errors import ConfigError, ImageLoadError
from edgegan.fileio import atomic_path

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "list_images",
    "load_image",
    "load_image_batch",
    "save_image",
    "to_pil",
]

DEFAULT_MAX_PIXELS = 64_000_000
"""Largest accepted image (width * height) unless a caller passes another ``max_pixels``."""

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".png",
    ".jpg",
    ".jpeg",
    ".jpe",
    ".jfif",
    ".bmp",
    ".dib",
    ".tif",
    ".tiff",
    ".webp",
    ".gif",
    ".ppm",
    ".pgm",
    ".pbm",
    ".pnm",
    ".tga",
)
"""Lower-case suffixes that :func:`list_images` treats as images (matched case-insensitively)."""

PathLike = str | os.PathLike[str]
Size = int | tuple[int, int]

_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    UnidentifiedImageError,
    Image.DecompressionBombError,
)

# Pillow's own decompression-bomb guard is a process-wide setting. While any load_image call is
# inside Pillow we switch it off (our own max_pixels check from the header replaces it) and put
# the previous value back when the last concurrent call leaves.
_guard_lock = threading.Lock()
_guard_users = 0
_guard_saved: int | None = None


@contextlib.contextmanager
def _pil_bomb_guard_off() -> Iterator[None]:
    global _guard_users, _guard_saved
    with _guard_lock:
        if _guard_users == 0:
            _guard_saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _guard_users += 1
    try:
        yield
    finally:
        with _guard_lock:
            _guard_users -= 1
            if _guard_users == 0:
                Image.MAX_IMAGE_PIXELS = _guard_saved


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _is_pos_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool) and value > 0


def _check_size(size: Size | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if _is_pos_int(size):
        return int(size), int(size)  # type: ignore[arg-type]
    if isinstance(size, tuple | list) and len(size) == 2 and all(_is_pos_int(v) for v in size):
        return int(size[0]), int(size[1])
    raise ConfigError(f"size must be a positive int or a (height, width) pair of positive ints, got {size!r}")


def _check_args(size: Size | None, max_side: int | None, max_pixels: int | None) -> tuple[int, int] | None:
    hw = _check_size(size)
    if max_side is not None and not _is_pos_int(max_side):
        raise ConfigError(f"max_side must be a positive int, got {max_side!r}")
    if hw is not None and max_side is not None:
        raise ConfigError("give either size or max_side, not both")
    if max_pixels is not None and not _is_pos_int(max_pixels):
        raise ConfigError(f"max_pixels must be a positive int or None, got {max_pixels!r}")
    return hw


def _white_composite(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Composite ``color`` (H, W[, C], in [0, 1]) over white using ``alpha`` (H, W, in [0, 1])."""
    if color.ndim == 3:
        alpha = alpha[..., None]
    return color * alpha + (1.0 - alpha)


def _to_unit_array(img: Image.Image) -> np.ndarray:
    """Decoded Pillow image -> float32 array (H, W, 3) in [0, 1]."""
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img).astype(np.float32) / 65535.0
        arr = np.clip(arr, 0.0, 1.0)
    elif mode == "F":
        arr = np.clip(np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0), 0.0, 1.0)
    elif mode == "RGB":
        arr = np.asarray(img, dtype=np.float32) / 255.0
    elif mode in ("L", "1"):
        arr = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    elif mode in ("LA", "La"):
        la = np.asarray(img.convert("LA"), dtype=np.float32) / 255.0
        arr = _white_composite(la[..., 0], la[..., 1])
    elif mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        arr = _white_composite(rgba[..., :3], rgba[..., 3])
    else:  # P, CMYK, YCbCr, LAB, HSV, RGBX, ...
        arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return np.ascontiguousarray(arr, dtype=np.float32)


def _resize(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == hw:
        return x
    y = F.interpolate(x.unsqueeze(0), size=hw, mode="bicubic", align_corners=False, antialias=True)
    return y.squeeze(0).clamp_(-1.0, 1.0)


def load_image(
    path: PathLike,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    size: Size | None = None,
    max_side: int | None = None,
) -> torch.Tensor:
    """Load an image file as a float32 tensor ``[3, H, W]`` in ``[-1, 1]``.

    ``max_pixels`` rejects images whose header says width * height is larger, before any pixel is
    decoded (``None`` disables the limit). ``size`` resizes to exactly ``(H, W)`` (an int means a
    square); ``max_side`` shrinks, keeping the aspect ratio, so that the longer side is at most
    ``max_side`` (smaller images are left alone). ``size`` and ``max_side`` are exclusive.
    """
    hw = _check_args(size, max_side, max_pixels)
    p = Path(path)
    if not p.exists():
        raise ImageLoadError(f"image file not found: {p}")
    if p.is_dir():
        raise ImageLoadError(f"expected an image file but got a folder: {p}")
    try:
        if p.stat().st_size == 0:
            raise ImageLoadError(f"image file is empty (0 bytes): {p}")
    except OSError as exc:
        raise ImageLoadError(f"cannot read image file {p}: {_one_line(exc)}") from exc

    with _pil_bomb_guard_off():
        try:
            img_cm = Image.open(p)
        except UnidentifiedImageError as exc:
            raise ImageLoadError(f"not an image or unsupported image format: {p}") from exc
        except PermissionError as exc:
            raise ImageLoadError(f"permission denied reading image file: {p}") from exc
        except _DECODE_ERRORS as exc:
            raise ImageLoadError(f"corrupt or unreadable image file {p}: {_one_line(exc)}") from exc
        with img_cm as img:
            width, height = img.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageLoadError(
                    f"image too large: {p} is {width}x{height} = {width * height} pixels, "
                    f"over the limit of max_pixels={max_pixels}"
                )
            try:
                img.load()
            except _DECODE_ERRORS as exc:
                raise ImageLoadError(f"corrupt or truncated image file {p}: {_one_line(exc)}") from exc
            try:
                upright = ImageOps.exif_transpose(img)
            except _DECODE_ERRORS:
                upright = img  # a broken EXIF block must not make a readable image unusable
            try:
                arr = _to_unit_array(upright)
            except _DECODE_ERRORS as exc:
                raise ImageLoadError(f"cannot convert {p} (mode {upright.mode}) to RGB: {_one_line(exc)}") from exc

    x = torch.from_numpy(arr).permute(2, 0, 1).contiguous().mul_(2.0).sub_(1.0)
    if hw is not None:
        x = _resize(x, hw)
    elif max_side is not None:
        h, w = x.shape[-2:]
        longest = max(h, w)
        if longest > max_side:
            scale = max_side / longest
            x = _resize(x, (max(1, round(h * scale)), max(1, round(w * scale))))
    return x


def load_image_batch(paths: Iterable[PathLike], **kw: object) -> torch.Tensor:
    """Load several images into one ``[N, 3, H, W]`` tensor; keyword arguments go to :func:`load_image`.

    Without ``size`` all images must already have the same height and width.
    """
    paths = list(paths)
    if not paths:
        raise ImageLoadError("no image paths given to load_image_batch")
    tensors: list[torch.Tensor] = []
    for p in paths:
        t = load_image(p, **kw)  # type: ignore[arg-type]
        if tensors and t.shape != tensors[0].shape:
            raise ImageLoadError(
                f"image {p} has size {t.shape[1]}x{t.shape[2]} (HxW) but {paths[0]} has "
                f"{tensors[0].shape[1]}x{tensors[0].shape[2]}; pass size= to resize them to one size"
            )
        tensors.append(t)
    return torch.stack(tensors)


def list_images(folder: PathLike) -> list[Path]:
    """Image files directly in ``folder`` (not recursive), sorted by name.

    A file counts as an image by its suffix (case-insensitive, see :data:`IMAGE_EXTENSIONS`).
    Hidden files (name starting with ".", e.g. macOS "._x.jpg" metadata) are skipped.
    """
    d = Path(folder)
    if not d.exists():
        raise ImageLoadError(f"image folder not found: {d}")
    if not d.is_dir():
        raise ImageLoadError(f"expected a folder of images but got a file: {d}")
    try:
        entries = list(d.iterdir())
    except OSError as exc:
        raise ImageLoadError(f"cannot list image folder {d}: {_one_line(exc)}") from exc
    found = sorted(
        e for e in entries if not e.name.startswith(".") and e.suffix.lower() in IMAGE_EXTENSIONS and e.is_file()
    )
    if not found:
        raise ImageLoadError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in folder: {d}")
    return found


def to_pil(tensor: torch.Tensor) -> Image.Image:
    """``[3, H, W]`` or ``[1, 3, H, W]`` tensor in ``[-1, 1]`` -> 8-bit RGB image (clamped, rounded)."""
    t = tensor.detach()
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 3 or t.shape[0] != 3:
        raise ValueError(f"expected a tensor of shape [3, H, W] or [1, 3, H, W], got {tuple(tensor.shape)}")
    t = t.to(device="cpu", dtype=torch.float32)
    if torch.isnan(t).any():
        raise ValueError("image tensor contains NaN values")
    u8 = ((t.clamp(-1.0, 1.0) + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
    return Image.fromarray(u8.permute(1, 2, 0).contiguous().numpy(), mode="RGB")


def save_image(tensor: torch.Tensor, path: PathLike, *, quality: int = 95) -> Path:
    """Write a ``[3, H, W]``/``[1, 3, H, W]`` tensor in ``[-1, 1]`` to ``path`` atomically.

    The format follows the suffix of ``path`` (``.png``, ``.jpg``, ...); ``quality`` applies to
    lossy formats (JPEG, WebP). Parent folders are created. Returns the path written.
    """
    target = Path(path)
    fmt = Image.registered_extensions().get(target.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise ConfigError(f"cannot tell which image format to write from the suffix of {target} (use .png, .jpg, ...)")
    img = to_pil(tensor)
    options: dict[str, object] = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    with atomic_path(target) as tmp:
        img.save(tmp, format=fmt, **options)
    return target
