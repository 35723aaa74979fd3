"""Segmentation-based evaluation: label maps, a wrapper for user-supplied segmentation models,
confusion matrices and mean IoU.

The usual use is "FCN score" style evaluation of image-to-image models: run a segmentation
network on generated images and compare its predictions with the ground-truth label maps.
No segmentation weights ship with edgegan; the user supplies a TorchScript or ONNX file.

Confusion matrices are ``[C, C + 1]``: rows are target classes, columns ``0..C-1`` predicted
classes, and the extra last column counts pixels whose prediction lies outside ``[0, C)``
(always wrong). ``matrix[:, :C]`` is the ordinary square confusion matrix.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from edgegan.errors import CheckpointError, ConfigError, EdgeganError, ImageLoadError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ONNX_SUFFIXES",
    "TORCHSCRIPT_SUFFIXES",
    "SegmentationModel",
    "confusion_matrix",
    "evaluate_segmentation",
    "load_label_map",
    "segmentation_scores",
]

PathLike = str | os.PathLike[str]
InputRange = Literal["unit", "signed", "imagenet"]

TORCHSCRIPT_SUFFIXES = (".pt", ".ts", ".torchscript")
ONNX_SUFFIXES = (".onnx",)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_INPUT_RANGES = ("unit", "signed", "imagenet")
_INDEX_MODES = ("L", "P", "I", "1")  # plus the "I;16*" family


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _short(exc: BaseException, limit: int = 200) -> str:
    text = _one_line(exc)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# Label maps
# ---------------------------------------------------------------------------------------------


def load_label_map(path: PathLike) -> Tensor:
    """Read a single-channel label image (PNG, BMP, TIFF...) as a ``LongTensor [H, W]`` of class indices.

    Accepted modes: ``L`` (8-bit), ``P`` (the palette *indices* are the classes, the colours are
    ignored), ``I`` / ``I;16`` (16/32-bit integers) and ``1``. RGB(A), LA and float images are
    refused with :class:`~edgegan.errors.ImageLoadError`, as are missing or corrupt files.
    EXIF orientation is applied, as :func:`edgegan.data.images.load_image` does for photos.
    """
    p = Path(path)
    if not p.exists():
        raise ImageLoadError(f"label map not found: {p}")
    if p.is_dir():
        raise ImageLoadError(f"expected a label image file but got a folder: {p}")
    try:
        with Image.open(p) as img:
            img.load()
            mode = img.mode
            if not (mode in _INDEX_MODES or mode.startswith("I;16")):
                raise ImageLoadError(
                    f"label map {p} has mode {mode}: label maps must be single-channel index images "
                    "(8-bit grayscale L, palette P or integer I), not colour or float images"
                )
            try:
                upright = ImageOps.exif_transpose(img)
            except (OSError, SyntaxError, ValueError, KeyError, IndexError, TypeError):
                upright = img
            arr = np.array(upright)
    except ImageLoadError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageLoadError(f"not an image or unsupported image format: {p}") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, Image.DecompressionBombError) as exc:
        raise ImageLoadError(f"corrupt or unreadable label map {p}: {_short(exc)}") from exc
    if arr.ndim != 2:
        raise ImageLoadError(f"label map {p} decoded to shape {arr.shape}, expected a single channel")
    return torch.from_numpy(arr.astype(np.int64))


# ---------------------------------------------------------------------------------------------
# Model wrapper
# ---------------------------------------------------------------------------------------------


class SegmentationModel:
    """A user-supplied segmentation network (TorchScript or ONNX) with edgegan's image convention.

    ``model(images)`` takes ``[N, 3, H, W]`` in ``[-1, 1]`` and returns a ``LongTensor [N, H, W]``
    of predicted classes on the images' device. The network may output logits ``[N, C, h, w]``
    (bilinearly resized to ``H, W`` when needed, then argmax over ``C``) or a class map
    ``[N, h, w]`` / integer ``[N, 1, h, w]`` (nearest-neighbour resized). TorchScript outputs that
    are a dict (``"out"`` preferred, as torchvision's models return) or a tuple use the first tensor.
    """

    def __init__(
        self,
        run: Callable[[Tensor], Any],
        *,
        input_range: InputRange = "unit",
        device: str | torch.device = "cpu",
        name: str = "segmentation model",
    ) -> None:
        if input_range not in _INPUT_RANGES:
            raise ConfigError(f"input_range must be one of {', '.join(_INPUT_RANGES)}, got {input_range!r}")
        self._run = run
        self.input_range: InputRange = input_range
        self.device = torch.device(device)
        self.name = name

    @classmethod
    def load(
        cls,
        path: PathLike,
        input_range: InputRange = "unit",
        device: str | torch.device = "cpu",
    ) -> SegmentationModel:
        """Load ``.pt``/``.ts``/``.torchscript`` (TorchScript) or ``.onnx`` (onnxruntime, CPU) files."""
        if input_range not in _INPUT_RANGES:
            raise ConfigError(f"input_range must be one of {', '.join(_INPUT_RANGES)}, got {input_range!r}")
        p = Path(path)
        suffix = p.suffix.lower()
        if suffix not in TORCHSCRIPT_SUFFIXES + ONNX_SUFFIXES:
            raise ConfigError(
                f"unknown segmentation model format {p}: expected a TorchScript "
                f"({', '.join(TORCHSCRIPT_SUFFIXES)}) or ONNX (.onnx) file"
            )
        if not p.is_file():
            raise CheckpointError(f"segmentation model file not found: {p}")
        if suffix in ONNX_SUFFIXES:
            return cls(_onnx_runner(p), input_range=input_range, device="cpu", name=str(p))
        try:
            module = torch.jit.load(str(p), map_location=torch.device(device))
        except Exception as exc:  # RuntimeError for non-zip files, ValueError/others for odd content
            raise CheckpointError(
                f"cannot load {p} as a TorchScript model (save one with torch.jit.script/trace + .save; "
                f"a state dict is not enough): {_short(exc).split('. ')[0]}"
            ) from None
        module.eval()
        return cls(module, input_range=input_range, device=device, name=str(p))

    def _prepare(self, images: Tensor) -> Tensor:
        x01 = (images.float() + 1.0) / 2.0
        if self.input_range == "unit":
            return x01
        if self.input_range == "signed":
            return images.float()
        mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
        return (x01 - mean) / std

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [N, 3, H, W], got {tuple(images.shape)}")
        n, _, h, w = images.shape
        x = self._prepare(images).to(self.device)
        try:
            out = self._run(x)
        except Exception as exc:
            raise EdgeganError(f"{self.name} failed on input {tuple(x.shape)}: {_short(exc)}") from exc
        out = _first_tensor(out, self.name)
        return _to_class_map(out, n, (h, w), self.name).to(images.device)


def _onnx_runner(path: Path) -> Callable[[Tensor], Tensor]:
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - onnxruntime is a dependency
        raise EdgeganError(f"onnxruntime is not installed; it is needed to run {path}") from None
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # InvalidProtobuf, Fail, NoSuchFile...
        raise CheckpointError(f"cannot load {path} as an ONNX model: {_short(exc)}") from None
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise CheckpointError(f"{path} has {len(inputs)} inputs; a segmentation model must take one image batch")
    input_name = inputs[0].name
    dtype = np.float16 if inputs[0].type == "tensor(float16)" else np.float32

    def run(x: Tensor) -> Tensor:
        feed = {input_name: x.detach().cpu().numpy().astype(dtype, copy=False)}
        return torch.from_numpy(np.asarray(session.run(None, feed)[0]))

    return run


def _first_tensor(out: Any, name: str) -> Tensor:
    if isinstance(out, dict):
        out = out["out"] if "out" in out else next(iter(out.values()), None)
    elif isinstance(out, list | tuple):
        out = out[0] if out else None
    if not isinstance(out, Tensor):
        raise EdgeganError(f"{name} returned {type(out).__name__}, expected a tensor of logits or classes")
    return out


def _to_class_map(out: Tensor, n: int, hw: tuple[int, int], name: str) -> Tensor:
    shape = tuple(out.shape)
    if out.dim() == 4 and out.shape[1] == 1 and not out.is_floating_point():
        out = out[:, 0]
    if out.dim() == 4:
        if out.shape[0] != n or out.shape[1] < 2:
            raise EdgeganError(
                f"{name} returned shape {shape}; expected logits [{n}, C>=2, h, w] or classes [{n}, h, w]"
            )
        logits = out.float()
        if tuple(logits.shape[-2:]) != hw:
            logits = F.interpolate(logits, size=hw, mode="bilinear", align_corners=False)
        return logits.argmax(dim=1)
    if out.dim() == 3 and out.shape[0] == n:
        if out.is_floating_point():
            if not torch.equal(out, out.round()):
                raise EdgeganError(f"{name} returned a non-integer [N, h, w] map; expected class indices")
        elif out.dtype == torch.bool:
            out = out.to(torch.uint8)
        if tuple(out.shape[-2:]) != hw:
            out = F.interpolate(out[:, None].double(), size=hw, mode="nearest-exact")[:, 0]
        return out.long()
    raise EdgeganError(f"{name} returned shape {shape}; expected logits [{n}, C, h, w] or classes [{n}, h, w]")


# ---------------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------------


def _check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive int, got {num_classes!r}")
    return int(num_classes)


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = 255) -> Tensor:
    """Count (target, prediction) pairs into a ``LongTensor [C, C + 1]`` on the CPU.

    Rows are target classes, columns ``0..C-1`` predicted classes; the last column counts pixels
    whose prediction is outside ``[0, C)``, so such predictions are always wrong yet still count
    as misses of their target class. Target pixels equal to ``ignore_index`` or outside
    ``[0, C)`` are skipped. ``pred`` and ``target`` must have the same shape.
    """
    c = _check_num_classes(num_classes)
    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(f"prediction shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}")
    if pred.is_floating_point() or target.is_floating_point():
        raise ValueError("confusion_matrix expects integer class maps, not floating-point tensors")
    t = target.reshape(-1).long().cpu()
    p = pred.reshape(-1).long().cpu()
    valid = (t >= 0) & (t < c)
    if ignore_index is not None:
        valid &= t != ignore_index
    t, p = t[valid], p[valid]
    p = torch.where((p >= 0) & (p < c), p, torch.full_like(p, c))
    counts = torch.bincount(t * (c + 1) + p, minlength=c * (c + 1))
    return counts.view(c, c + 1)


def segmentation_scores(confmat: Tensor) -> dict[str, Any]:
    """Scores from a ``[C, C + 1]`` (or plain ``[C, C]``) confusion matrix.

    ``miou`` is the mean IoU over the classes that appear in the target or the prediction (among
    non-ignored pixels); classes absent from both have an undefined IoU and are **excluded** from
    the mean (their ``per_class_iou`` entry is ``None``). ``pixel_accuracy`` is correct / counted
    pixels. Both are ``None`` when no pixel was counted. ``num_pixels`` is the counted pixels.
    """
    if confmat.dim() != 2 or confmat.shape[1] not in (confmat.shape[0], confmat.shape[0] + 1):
        raise ValueError(f"expected a [C, C] or [C, C + 1] confusion matrix, got {tuple(confmat.shape)}")
    m = confmat.detach().cpu().to(torch.float64)
    c = m.shape[0]
    tp = m.diagonal()[:c]
    union = m.sum(dim=1) + m[:, :c].sum(dim=0) - tp
    total = float(m.sum())
    per_class: list[float | None] = [float(i / u) if u > 0 else None for i, u in zip(tp, union, strict=True)]
    present = [v for v in per_class if v is not None]
    return {
        "miou": sum(present) / len(present) if present else None,
        "pixel_accuracy": float(tp.sum()) / total if total > 0 else None,
        "per_class_iou": per_class,
        "num_classes": c,
        "num_pixels": int(total),
    }


def evaluate_segmentation(
    model: Callable[[Tensor], Tensor],
    images_and_labels: Iterable[tuple[Tensor, Tensor]],
    num_classes: int,
    ignore_index: int | None = 255,
) -> dict[str, Any]:
    """Run ``model`` (e.g. a :class:`SegmentationModel`) on ``(images [N,3,H,W], labels [N,H,W])``
    batches and score all of them with one accumulated confusion matrix.

    Returns :func:`segmentation_scores` plus ``confusion_matrix`` (``LongTensor [C, C + 1]``).
    A single ``[H, W]`` label map or ``[N, 1, H, W]`` labels are accepted as well.
    """
    c = _check_num_classes(num_classes)
    total = torch.zeros(c, c + 1, dtype=torch.long)
    for images, labels in images_and_labels:
        with torch.no_grad():
            pred = model(images)
        if labels.dim() == 2:
            labels = labels.unsqueeze(0)
        elif labels.dim() == 4 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if tuple(pred.shape) != tuple(labels.shape):
            raise EdgeganError(
                f"predictions {tuple(pred.shape)} and label maps {tuple(labels.shape)} differ in shape; "
                "label maps must have the size of their images"
            )
        total += confusion_matrix(pred, labels, c, ignore_index)
    scores = segmentation_scores(total)
    scores["confusion_matrix"] = total
    return scores
