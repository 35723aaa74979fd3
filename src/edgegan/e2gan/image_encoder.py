"""Image embeddings for E2GAN: choosing base concepts by K-means, and the similarity filter of make-pairs.

* :class:`StatsImageEncoder` (``"stats"``): a weight-free descriptor of colour, tone and texture (channel
  moments and histograms, Lab-like opponent colour, gradient-magnitude and edge-orientation histograms).
  Editing concepts differ mostly in exactly these, so it works offline with nothing to download.
* :class:`CLIPImageEncoder`: a Hugging Face CLIP vision model (with projection) from a local folder, the
  paper's choice; checked against an expected sha256 of its weights file when one is given.

Every encoder maps ``[M, 3, H, W]`` images in [-1, 1] to ``[M, D]`` float embeddings.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from edgegan.errors import ConfigError

__all__ = ["CLIPImageEncoder", "ImageEncoder", "StatsImageEncoder", "cosine_similarity_fn", "image_encoder"]


class ImageEncoder(Protocol):
    name: str

    def embed(self, images: torch.Tensor) -> torch.Tensor: ...


def _hist(values: torch.Tensor, bins: int, lo: float, hi: float) -> torch.Tensor:
    """Per-image normalised histograms of ``values`` ``[M, N]`` (soft-free, so exactly reproducible)."""
    idx = ((values - lo) / (hi - lo) * bins).long().clamp(0, bins - 1)
    out = torch.zeros(values.shape[0], bins, dtype=torch.float64)
    out.scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float64))
    return out / values.shape[1]


class StatsImageEncoder:
    """Colour, tone and texture statistics (88-d with 8 bins); needs no weights. ``size`` is the working resolution."""

    name = "stats"

    def __init__(self, size: int = 64, bins: int = 8) -> None:
        self.size, self.bins = size, bins

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ConfigError(f"images must be [M, 3, H, W], got {tuple(images.shape)}")
        x = F.interpolate(images.double().clamp(-1, 1), size=(self.size, self.size), mode="area")
        x = (x + 1) / 2
        m = x.shape[0]
        r, g, b = x[:, 0], x[:, 1], x[:, 2]
        lum = 0.299 * r + 0.587 * g + 0.114 * b
        # opponent colour axes (a Lab stand-in): red-green and yellow-blue, and saturation
        rg, yb = r - g, 0.5 * (r + g) - b
        sat = x.amax(1) - x.amin(1)
        feats = [x.mean((2, 3)), x.std((2, 3))]
        for ch, lo, hi in ((r, 0, 1), (g, 0, 1), (b, 0, 1), (lum, 0, 1), (rg, -1, 1), (yb, -1, 1), (sat, 0, 1)):
            feats.append(_hist(ch.reshape(m, -1), self.bins, lo, hi))
        for ch in (rg, yb, sat):
            feats.append(torch.stack([ch.mean((1, 2)), ch.std((1, 2))], 1))
        # texture: Sobel gradients of luminance (edge strength and direction, and how many levels remain)
        kx = torch.tensor([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=torch.float64)[None, None] / 4
        ky = kx.transpose(-1, -2)
        pad = F.pad(lum[:, None], (1, 1, 1, 1), mode="replicate")
        gx, gy = F.conv2d(pad, kx)[:, 0], F.conv2d(pad, ky)[:, 0]
        mag = (gx**2 + gy**2).sqrt().reshape(m, -1)
        ang = torch.atan2(gy, gx).reshape(m, -1) % math.pi
        strong = mag > 0.05
        orient = torch.stack(
            [
                _hist(ang[i][strong[i]][None], self.bins, 0, math.pi)[0]
                if strong[i].any()
                else torch.zeros(self.bins, dtype=torch.float64)
                for i in range(m)
            ]
        )
        levels = torch.tensor([torch.unique((lum[i] * 255).round()).numel() / 256.0 for i in range(m)]).double()
        feats += [
            _hist(mag.clamp(max=0.999), self.bins, 0, 1),
            orient,
            torch.stack([mag.mean(1), mag.std(1), strong.double().mean(1), levels], 1),
        ]
        return torch.cat([f.double() for f in feats], 1).float()


# Upstream CLIP's normalisation, used when a folder has no preprocessor_config.json.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class CLIPImageEncoder:
    """Image embeddings (``image_embeds``) of a local ``CLIPVisionModelWithProjection`` folder.

    ``sha256`` (optional) is compared with the weights file (``model.safetensors``) before loading."""

    def __init__(self, path: str | os.PathLike[str], *, sha256: str | None = None, device: str = "cpu") -> None:
        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise ConfigError(f"no CLIP image encoder in {folder} (a Hugging Face folder with config.json)")
        if sha256 is not None:
            from edgegan.weights import sha256_of

            weights = folder / "model.safetensors"
            if not weights.is_file():
                raise ConfigError(f"{folder} has no model.safetensors to check against the given sha256")
            got = sha256_of(weights)
            if not got.startswith(sha256.lower()):
                raise ConfigError(f"{weights} has sha256 {got[:16]}..., expected {sha256}")
        try:
            from transformers import CLIPVisionModelWithProjection
        except ImportError:
            raise ConfigError("CLIP image encoders need transformers (pip install 'edgegan[e2gan]')") from None
        try:
            self.model = CLIPVisionModelWithProjection.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load a CLIP vision model from {folder}: {str(exc).splitlines()[0]}") from None
        self.model.eval().to(device)
        self.device = device
        self.size = int(self.model.config.image_size)
        mean, std = CLIP_MEAN, CLIP_STD
        pre = folder / "preprocessor_config.json"
        if pre.is_file():
            cfg = json.loads(pre.read_text())
            mean, std = tuple(cfg.get("image_mean", mean)), tuple(cfg.get("image_std", std))
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.name = f"clip:{folder.name}"

    @torch.no_grad()
    def embed(self, images: torch.Tensor, batch: int = 16) -> torch.Tensor:
        out = []
        for i in range(0, images.shape[0], batch):
            # shortest side to the model's size, centre crop, CLIP normalisation
            x = (images[i : i + batch].float().clamp(-1, 1) + 1) / 2
            h, w = x.shape[-2:]
            scale = self.size / min(h, w)
            x = F.interpolate(
                x,
                size=(max(self.size, round(h * scale)), max(self.size, round(w * scale))),
                mode="bicubic",
                align_corners=False,
            ).clamp(0, 1)
            top, left = (x.shape[-2] - self.size) // 2, (x.shape[-1] - self.size) // 2
            x = x[..., top : top + self.size, left : left + self.size]
            x = (x - self.mean) / self.std
            out.append(self.model(pixel_values=x.to(self.device)).image_embeds.float().cpu())
        return torch.cat(out)


def image_encoder(spec: str, *, sha256: str | None = None, device: str = "cpu") -> ImageEncoder:
    """``"stats"`` or a local CLIP vision folder."""
    if spec == "stats":
        return StatsImageEncoder()
    return CLIPImageEncoder(spec, sha256=sha256, device=device)


def cosine_similarity_fn(encoder: ImageEncoder):  # noqa: ANN201 - returns pairs.Similarity
    """``(source, edited) -> cos`` of their embeddings (uint8 HWC arrays), for make-pairs' filter."""

    def score(source: np.ndarray, edited: np.ndarray) -> float:
        x = torch.from_numpy(np.stack([source, edited])).permute(0, 3, 1, 2).float() / 127.5 - 1
        e = encoder.embed(x).double()
        return float(F.cosine_similarity(e[:1], e[1:]).item())

    return score
