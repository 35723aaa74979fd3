"""SinGAN's editing applications on a trained pyramid: harmonization, editing, paint-to-image
and super-resolution.

All of them work on float tensors in [-1, 1] and run under ``torch.no_grad()``. Harmonization,
editing and paint-to-image first bring their input to the pyramid's finest trained size, since
the scale sizes (and what each generator learnt) are tied to it; super-resolution keeps the
input's size and grows it, which works because the generators are fully convolutional.

Injection (``SETGANPyramid.inject``) down-samples an image to scale ``n - 1`` and lets scales
``n``..N re-synthesise it: a coarse ``n`` keeps only the layout and colours, a fine ``n``
changes only textures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from edgegan.data.images import load_image
from edgegan.errors import ConfigError
from edgegan.setgan.pyramid import SETGANPyramid, Size, resize

__all__ = [
    "HARMONIZE_DILATE",
    "EDIT_DILATE",
    "BLUR_SIGMA",
    "SuperResolution",
    "blend_mask",
    "check_mask",
    "edit",
    "harmonize",
    "kmeans_palette",
    "load_mask",
    "paint_to_image",
    "quantize_to_palette",
    "sr_schedule",
    "super_resolve",
    "validate_inject_scale",
]

# SinGAN dilates by a disk of radius 7 (harmonization) or 20 (editing) and blurs with sigma 5 on
# images of about 250 px; as fractions of the shorter side they work for any training size.
HARMONIZE_DILATE = 0.03
EDIT_DILATE = 0.08
BLUR_SIGMA = 0.02


# ---------------------------------------------------------------------------------- checks


def validate_inject_scale(pyr: SETGANPyramid, n: int) -> None:
    """Raise :class:`ConfigError` unless ``n`` is a scale an image can be injected at (1..N)."""
    last = pyr.n_scales - 1
    if last < 1:
        raise ConfigError("the pyramid has a single trained scale; an image can only be injected above scale 0")
    if not 1 <= n <= last:
        raise ConfigError(f"inject scale must be between 1 and {last} (the pyramid has {pyr.n_scales} scales), got {n}")


def check_mask(mask: torch.Tensor, image: torch.Tensor) -> None:
    """Raise :class:`ConfigError` when ``mask`` and ``image`` differ in width or height."""
    mh, mw = mask.shape[-2:]
    ih, iw = image.shape[-2:]
    if (mh, mw) != (ih, iw):
        raise ConfigError(f"mask is {mw}x{mh} but the image is {iw}x{ih}")


def load_mask(path: str | Path) -> torch.Tensor:
    """Load a mask image as ``[1, 1, H, W]`` in [0, 1] (white = 1); soft edges are kept."""
    img = load_image(path)  # [3, H, W] in [-1, 1]; transparency becomes white
    return ((img.mean(dim=0, keepdim=True) + 1.0) / 2.0).clamp_(0.0, 1.0)[None]


def _as_image(x: torch.Tensor, name: str) -> torch.Tensor:
    x = x[None] if x.dim() == 3 else x
    if x.dim() != 4 or x.shape[1] != 3:
        raise ConfigError(f"{name} must be a [1, 3, H, W] or [3, H, W] tensor, got {tuple(x.shape)}")
    return x.float()


def _as_mask(m: torch.Tensor) -> torch.Tensor:
    # Accept [H, W], [C, H, W] and [N, C, H, W]; colour masks are averaged over channels.
    while m.dim() < 4:
        m = m[None]
    if m.dim() != 4:
        raise ConfigError(f"mask must be a [1, 1, H, W] tensor, got {tuple(m.shape)}")
    if m.shape[1] != 1:
        m = m.mean(dim=1, keepdim=True)
    return m.float().clamp(0.0, 1.0)


def _finest_size(pyr: SETGANPyramid) -> Size:
    # The last *trained* scale (a partially trained run has more sizes than generators).
    h, w = pyr.sizes[pyr.n_scales - 1]
    return h, w


# ---------------------------------------------------------------------------------- masks


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    half = max(1, math.ceil(3.0 * sigma))  # truncated at 3 sigma: the blur stays local
    x = torch.arange(-half, half + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


@torch.no_grad()
def blend_mask(mask: torch.Tensor, dilate: float, blur_sigma: float) -> torch.Tensor:
    """Dilate ``mask`` [N, 1, H, W] by a square of radius ``round(dilate * min(H, W))`` px (grey
    max-pool) and blur it with a Gaussian of sigma ``blur_sigma * min(H, W)`` px.

    Dilation makes the blend cover the object's border, where the naive paste is most visible;
    the blur fades the generated pixels into the original ones so no seam remains.
    """
    if dilate < 0 or blur_sigma < 0:
        raise ConfigError(f"dilate and blur_sigma must be >= 0, got {dilate} and {blur_sigma}")
    m = _as_mask(mask)
    short = min(m.shape[-2:])
    radius = round(dilate * short)
    if radius > 0:
        m = F.max_pool2d(m, kernel_size=2 * radius + 1, stride=1, padding=radius)
    sigma = blur_sigma * short
    if sigma > 0:
        k = _gaussian_kernel(sigma).to(m.device)
        half = k.numel() // 2
        # Separable blur; replicated borders so a mask touching the edge is not faded there.
        m = F.conv2d(F.pad(m, [half, half, 0, 0], mode="replicate"), k.view(1, 1, 1, -1))
        m = F.conv2d(F.pad(m, [0, 0, half, half], mode="replicate"), k.view(1, 1, -1, 1))
    return m.clamp(0.0, 1.0)


def _resize_mask(mask: torch.Tensor, size: Size) -> torch.Tensor:
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    # Bilinear rather than bicubic: no overshoot around hard mask edges.
    shrinking = size[0] < mask.shape[-2] or size[1] < mask.shape[-1]
    return F.interpolate(mask, size=size, mode="bilinear", align_corners=False, antialias=shrinking).clamp(0.0, 1.0)


# ---------------------------------------------------------------------------------- harmonize / edit


@torch.no_grad()
def _inject_and_blend(
    pyr: SETGANPyramid,
    image: torch.Tensor,
    mask: torch.Tensor,
    inject_scale: int,
    dilate: float,
    blur_sigma: float,
    generator: torch.Generator | None,
) -> torch.Tensor:
    validate_inject_scale(pyr, inject_scale)
    image, mask = _as_image(image, "image"), _as_mask(mask)
    check_mask(mask, image)
    size = _finest_size(pyr)
    image = resize(image.to(pyr.device), size)
    mask = blend_mask(_resize_mask(mask.to(pyr.device), size), dilate, blur_sigma)
    generated = pyr.inject(image, inject_scale, generator=generator)
    # Only the (dilated, blurred) masked region is taken from the generator; the rest stays as given.
    return mask * generated + (1.0 - mask) * image


def harmonize(
    pyr: SETGANPyramid,
    image: torch.Tensor,
    mask: torch.Tensor,
    inject_scale: int,
    *,
    dilate: float = HARMONIZE_DILATE,
    blur_sigma: float = BLUR_SIGMA,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Harmonize a pasted object: ``image`` is the naive composite [1, 3, h, w], ``mask``
    [1, 1, h, w] in [0, 1] marks the object. Both are resized to the finest training size, the
    composite is injected at ``inject_scale`` and the result is blended back through the
    dilated, blurred mask. Returns [1, 3, H, W] at the finest training size."""
    return _inject_and_blend(pyr, image, mask, inject_scale, dilate, blur_sigma, generator)


def edit(
    pyr: SETGANPyramid,
    image: torch.Tensor,
    mask: torch.Tensor,
    inject_scale: int,
    *,
    dilate: float = EDIT_DILATE,
    blur_sigma: float = BLUR_SIGMA,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SinGAN's editing: ``image`` is the roughly edited image, ``mask`` marks the edited region.
    Same mechanics as :func:`harmonize`, with a wider default dilation (edits such as moved or
    copied regions leave larger seams than a pasted object)."""
    return _inject_and_blend(pyr, image, mask, inject_scale, dilate, blur_sigma, generator)


# ---------------------------------------------------------------------------------- paint to image


@torch.no_grad()
def kmeans_palette(image: torch.Tensor, k: int = 5, *, seed: int = 0, iters: int = 50) -> torch.Tensor:
    """The ``k`` dominant colours of ``image`` ([1, 3, H, W] or [3, H, W]) as a [k', 3] tensor
    (k' < k only when the image has fewer distinct colours): k-means with k-means++ seeding from
    a fixed ``seed``, so the palette is the same on every call."""
    if k < 1:
        raise ConfigError(f"the number of colours must be >= 1, got {k}")
    pixels = _as_image(image, "palette image").permute(0, 2, 3, 1).reshape(-1, 3).cpu()
    gen = torch.Generator().manual_seed(seed)
    if pixels.shape[0] > 50_000:  # a random subset is plenty for 5 colours and keeps this fast
        pixels = pixels[torch.randperm(pixels.shape[0], generator=gen)[:50_000]]
    distinct = torch.unique(pixels, dim=0)
    if distinct.shape[0] <= k:
        return distinct
    # k-means++ seeding: each new centre drawn with probability ~ squared distance to the nearest one.
    centres = pixels[torch.randint(pixels.shape[0], (1,), generator=gen)]
    for _ in range(1, k):
        d2 = torch.cdist(pixels, centres).min(dim=1).values.pow(2)
        pick = torch.multinomial(d2 / d2.sum(), 1, generator=gen) if d2.sum() > 0 else torch.zeros(1, dtype=torch.long)
        centres = torch.cat([centres, pixels[pick]])
    labels = None
    for _ in range(iters):
        new_labels = torch.cdist(pixels, centres).argmin(dim=1)
        if labels is not None and torch.equal(new_labels, labels):
            break
        labels = new_labels
        for j in range(k):
            members = pixels[labels == j]
            if members.numel():  # an empty cluster keeps its centre
                centres[j] = members.mean(dim=0)
    return centres


@torch.no_grad()
def quantize_to_palette(image: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """Replace every pixel of ``image`` [N, 3, H, W] by the nearest colour of ``palette`` [K, 3]."""
    n, c, h, w = image.shape
    pixels = image.permute(0, 2, 3, 1).reshape(-1, c)
    pal = palette.to(image.device, image.dtype)
    nearest = pal[torch.cdist(pixels, pal).argmin(dim=1)]
    return nearest.reshape(n, h, w, c).permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def paint_to_image(
    pyr: SETGANPyramid,
    paint: torch.Tensor,
    inject_scale: int,
    *,
    quantize: bool = True,
    palette_from: torch.Tensor | None = None,
    n_colors: int = 5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Turn a rough clip-art ``paint`` into a realistic image: resized to the finest training size,
    optionally quantized to the ``n_colors`` dominant colours of ``palette_from`` (the training
    image; skipped when it is None), then injected at ``inject_scale``; no blending."""
    validate_inject_scale(pyr, inject_scale)
    paint = resize(_as_image(paint, "paint").to(pyr.device), _finest_size(pyr))
    if quantize and palette_from is not None:
        # SinGAN snaps the paint to the real image's colours so the coarse scales see familiar inputs.
        paint = quantize_to_palette(paint, kmeans_palette(palette_from, n_colors))
    return pyr.inject(paint, inject_scale, generator=generator)


# ---------------------------------------------------------------------------------- super-resolution


@dataclass(frozen=True)
class SuperResolution:
    """Result of :func:`super_resolve`: the image, the number of generator passes ``steps`` (k),
    the up-sampling ratio per pass ``ratio`` (r, with r**k = factor) and the size after each pass."""

    image: torch.Tensor
    steps: int
    ratio: float
    sizes: list[Size] = field(default_factory=list)


def sr_schedule(factor: float, pyramid_factor: float) -> tuple[int, float]:
    """SinGAN's schedule: k = max(1, round(log(factor) / log(1 / pyramid_factor))) passes of
    ratio r = factor ** (1 / k), so each pass up-samples by about the ratio the finest generator
    was trained to refine."""
    if not factor > 1.0:
        raise ConfigError(f"the super-resolution factor must be > 1, got {factor}")
    if not 0.0 < pyramid_factor < 1.0:
        raise ConfigError(f"the pyramid factor must be in (0, 1), got {pyramid_factor}")
    k = max(1, round(math.log(factor) / math.log(1.0 / pyramid_factor)))
    return k, factor ** (1.0 / k)


@torch.no_grad()
def super_resolve(
    pyr: SETGANPyramid,
    image: torch.Tensor,
    factor: float,
    *,
    generator: torch.Generator | None = None,
    noise: bool = True,
) -> SuperResolution:
    """Up-sample ``image`` [1, 3, h, w] by ``factor``: k times, up-sample by r (bicubic) and refine
    with the finest generator, ``G_N(up, amp_N * z)`` (z fresh noise, or zeros with ``noise=False``).
    The final size is ``round(h * factor) x round(w * factor)``."""
    k, r = sr_schedule(factor, pyr.factor)
    x = _as_image(image, "image").to(pyr.device)
    h, w = x.shape[-2:]
    # Sizes from the input size (not pass by pass), so rounding does not drift; the last is exact.
    sizes: list[Size] = [(max(1, round(h * r**j)), max(1, round(w * r**j))) for j in range(1, k)]
    sizes.append((max(1, round(h * factor)), max(1, round(w * factor))))
    last = pyr.n_scales - 1
    g, amp = pyr.generators[last], pyr.noise_amps[last]
    for size in sizes:
        up = resize(x, size)
        z = pyr.draw_noise(last, x.shape[0], size, generator) if noise else torch.zeros_like(up)
        x = g(up, amp * z)
    return SuperResolution(x, k, r, sizes)
