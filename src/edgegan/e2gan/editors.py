"""Editors: anything that maps (image, concept prompt) to an edited image.

* Classical editors (no weights): OpenCV's non-photorealistic filters (stylization, pencil sketch,
  edge-preserving smoothing, detail enhancement) and colour looks (sepia, cool/warm grades, posterize,
  cartoon, invert-luma "negative"), each with its prompt. They let users distil any slow filter chain and
  let edgegan's benchmarks run offline.
* :class:`DiffusionEditor`: InstructPix2Pix, Stable Diffusion img2img or ControlNet (canny) img2img
  through ``diffusers`` (extra ``diffusion``), loaded from a local folder or a hub id the user provides.
* :class:`CallableEditor`: any Python callable ``f(image, prompt, seed) -> image``.

Images are ``uint8`` RGB arrays ``[H, W, 3]``; editors return the same size.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgegan.errors import ConfigError

__all__ = [
    "CLASSICAL",
    "CallableEditor",
    "ClassicalEditor",
    "DiffusionEditor",
    "Editor",
    "classical_editor",
]

Image = np.ndarray


class Editor(Protocol):
    name: str

    def __call__(self, image: Image, prompt: str, seed: int = 0) -> Image: ...


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise ConfigError("the OpenCV editors need opencv-python-headless (pip install 'edgegan[diffusion]')") from None
    return cv2


def _bgr(image: Image) -> Image:
    return np.ascontiguousarray(image[..., ::-1])


def _rgb(image: Image) -> Image:
    return np.ascontiguousarray(image[..., ::-1])


def _stylize(img: Image) -> Image:
    return _rgb(_cv2().stylization(_bgr(img), sigma_s=60, sigma_r=0.45))


def _pencil(img: Image) -> Image:
    _, color = _cv2().pencilSketch(_bgr(img), sigma_s=60, sigma_r=0.07, shade_factor=0.05)
    return _rgb(color)


def _smooth(img: Image) -> Image:
    return _rgb(_cv2().edgePreservingFilter(_bgr(img), flags=1, sigma_s=60, sigma_r=0.4))


def _detail(img: Image) -> Image:
    return _rgb(_cv2().detailEnhance(_bgr(img), sigma_s=10, sigma_r=0.15))


def _grade(img: Image, matrix: list[list[float]]) -> Image:
    out = img.astype(np.float32) @ np.asarray(matrix, dtype=np.float32).T
    return np.clip(out, 0, 255).astype(np.uint8)


def _sepia(img: Image) -> Image:
    return _grade(img, [[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]])


def _cool(img: Image) -> Image:
    return _grade(img, [[0.85, 0.05, 0.0], [0.0, 0.95, 0.05], [0.05, 0.1, 1.15]])


def _warm(img: Image) -> Image:
    return _grade(img, [[1.15, 0.05, 0.0], [0.05, 1.0, 0.0], [0.0, 0.0, 0.8]])


def _posterize(img: Image, levels: int = 4) -> Image:
    step = 256 // levels
    return ((img // step) * step + step // 2).astype(np.uint8)


def _cartoon(img: Image) -> Image:
    cv2 = _cv2()
    bgr = _bgr(img)
    color = cv2.bilateralFilter(bgr, 9, 75, 75)
    gray = cv2.medianBlur(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), 5)
    edges = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 9, 5)
    out = _posterize(_rgb(color), 6)
    out[edges == 0] = 0  # dark ink outlines
    return out


def _negative(img: Image) -> Image:
    # Invert luminance, keep hue: a strong but learnable edit.
    f = img.astype(np.float32)
    luma = f @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.clip(f + (255 - 2 * luma)[..., None], 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class ClassicalEditor:
    """A weight-free editor with the prompt that names its concept."""

    name: str
    prompt: str
    fn: Callable[[Image], Image]

    def __call__(self, image: Image, prompt: str | None = None, seed: int = 0) -> Image:
        img = _check(image)
        out = self.fn(img)
        return _check(out, like=img)


CLASSICAL: dict[str, ClassicalEditor] = {
    e.name: e
    for e in (
        ClassicalEditor("stylize", "turn it into a watercolor painting", _stylize),
        ClassicalEditor("pencil", "make it a colored pencil sketch", _pencil),
        ClassicalEditor("smooth", "make it look like a smooth oil painting", _smooth),
        ClassicalEditor("detail", "enhance the fine details", _detail),
        ClassicalEditor("sepia", "make it an old sepia photograph", _sepia),
        ClassicalEditor("cool", "give it a cold blue winter grade", _cool),
        ClassicalEditor("warm", "give it a warm golden sunset grade", _warm),
        ClassicalEditor("posterize", "make it a flat posterized poster", _posterize),
        ClassicalEditor("cartoon", "make it a cartoon with ink outlines", _cartoon),
        ClassicalEditor("negative", "invert the brightness like a film negative", _negative),
    )
}


def classical_editor(name: str) -> ClassicalEditor:
    if name not in CLASSICAL:
        raise ConfigError(f"unknown classical editor {name!r}; choose one of {', '.join(CLASSICAL)}")
    return CLASSICAL[name]


def _check(image: Image, like: Image | None = None) -> Image:
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ConfigError(f"editors take and return uint8 RGB arrays [H, W, 3], got {arr.dtype} {arr.shape}")
    if like is not None and arr.shape != like.shape:
        raise ConfigError(f"the editor changed the image size from {like.shape[:2]} to {arr.shape[:2]}")
    return arr


class CallableEditor:
    """Wraps ``fn(image, prompt, seed) -> image`` (uint8 RGB arrays) as an editor."""

    def __init__(self, fn: Callable[[Image, str, int], Image], name: str | None = None) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "callable")

    def __call__(self, image: Image, prompt: str, seed: int = 0) -> Image:
        img = _check(image)
        return _check(self.fn(img, prompt, seed), like=img)


DIFFUSION_KINDS = ("instruct-pix2pix", "img2img", "controlnet")


class DiffusionEditor:
    """A ``diffusers`` editing pipeline loaded from ``model`` (a local folder or a hub id the user provides).

    ``kind``: ``instruct-pix2pix`` (``StableDiffusionInstructPix2PixPipeline``; knobs ``steps``,
    ``guidance``, ``image_guidance``), ``img2img`` (``StableDiffusionImg2ImgPipeline``; ``strength``) or
    ``controlnet`` (``StableDiffusionControlNetImg2ImgPipeline`` with ``controlnet`` a folder/id of a canny
    ControlNet; the condition is the image's Canny edges). ``pipeline`` passes a ready pipeline instead
    (tests build a tiny random one). Seeds make every edit reproducible; :meth:`edit_batch` batches.
    """

    def __init__(
        self,
        kind: str = "instruct-pix2pix",
        model: str | os.PathLike[str] | None = None,
        *,
        controlnet: str | os.PathLike[str] | None = None,
        pipeline: Any = None,
        steps: int = 20,
        guidance: float = 7.5,
        image_guidance: float = 1.5,
        strength: float = 0.6,
        device: str = "cpu",
        local_files_only: bool = True,
    ) -> None:
        if kind not in DIFFUSION_KINDS:
            raise ConfigError(f"diffusion editor kind must be one of {', '.join(DIFFUSION_KINDS)}, got {kind!r}")
        self.kind, self.steps, self.guidance = kind, steps, guidance
        self.image_guidance, self.strength, self.device = image_guidance, strength, device
        if pipeline is None:
            if model is None:
                raise ConfigError("a diffusion editor needs --model (a local pipeline folder or a hub id)")
            pipeline = self._load(kind, model, controlnet, local_files_only)
        self.pipe = pipeline.to(device)
        if hasattr(self.pipe, "set_progress_bar_config"):
            self.pipe.set_progress_bar_config(disable=True)
        self.name = f"{kind}:{Path(str(model)).name if model else type(pipeline).__name__}"

    @staticmethod
    def _load(kind: str, model: Any, controlnet: Any, local_files_only: bool) -> Any:
        try:
            import diffusers
        except ImportError:
            raise ConfigError("diffusion editors need diffusers (pip install 'edgegan[diffusion]')") from None
        try:
            if kind == "instruct-pix2pix":
                return diffusers.StableDiffusionInstructPix2PixPipeline.from_pretrained(
                    str(model), local_files_only=local_files_only, safety_checker=None
                )
            if kind == "img2img":
                return diffusers.StableDiffusionImg2ImgPipeline.from_pretrained(
                    str(model), local_files_only=local_files_only, safety_checker=None
                )
            if controlnet is None:
                raise ConfigError("the controlnet editor needs --controlnet (a canny ControlNet folder or id)")
            net = diffusers.ControlNetModel.from_pretrained(str(controlnet), local_files_only=local_files_only)
            return diffusers.StableDiffusionControlNetImg2ImgPipeline.from_pretrained(
                str(model), controlnet=net, local_files_only=local_files_only, safety_checker=None
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load the {kind} pipeline from {model}: {str(exc).splitlines()[0]}") from None

    def edit_batch(self, images: list[Image], prompts: list[str], seeds: list[int]) -> list[Image]:
        import torch
        from PIL import Image as PILImage

        pil = [PILImage.fromarray(_check(i)) for i in images]
        gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
        common: dict[str, Any] = {
            "num_inference_steps": self.steps,
            "guidance_scale": self.guidance,
            "generator": gens,
            "output_type": "np",
        }
        if self.kind == "instruct-pix2pix":
            result = self.pipe(prompt=prompts, image=pil, image_guidance_scale=self.image_guidance, **common)
        elif self.kind == "img2img":
            result = self.pipe(prompt=prompts, image=pil, strength=self.strength, **common)
        else:
            cv2 = _cv2()
            edges = [PILImage.fromarray(np.repeat(cv2.Canny(np.asarray(p), 100, 200)[..., None], 3, 2)) for p in pil]
            result = self.pipe(prompt=prompts, image=pil, control_image=edges, strength=self.strength, **common)
        outs = []
        for src, arr in zip(pil, result.images, strict=True):
            img = (np.clip(np.asarray(arr), 0, 1) * 255).round().astype(np.uint8)
            if img.shape[:2] != (src.height, src.width):  # pipelines work at multiples of 8
                img = np.asarray(PILImage.fromarray(img).resize((src.width, src.height), PILImage.BICUBIC))
            outs.append(img)
        return outs

    def __call__(self, image: Image, prompt: str, seed: int = 0) -> Image:
        return self.edit_batch([image], [prompt], [seed])[0]
