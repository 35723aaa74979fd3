"""Full-reference metrics that need no weights: PSNR, SSIM, MS-SSIM, L1 and invented colour, batched."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgegan.metrics.ssim import ms_ssim, ms_ssim_min_size, ssim


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB per image ([N]); identical images give inf."""
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(dim=1)
    return (10 * torch.log10(data_range**2 / mse)).to(x.dtype)


def l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per image ([N])."""
    return (x - y).abs().flatten(1).mean(dim=1)


def invented_colour(x: torch.Tensor, y: torch.Tensor, margin: float = 0.25, window: int = 3) -> torch.Tensor:
    """Fraction of pixels per image ([N]) where ``x`` is more saturated than every pixel of ``y`` within
    ``window // 2`` px by more than ``margin`` (saturation: max minus min over the channels; [0, 1] images).

    It counts colour speckle, pixels whose colour the target has nowhere near them (a magenta dot on a black ink
    line between beige walls), and not blur: a mix of two target colours is never more saturated than both."""
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"invented_colour needs two [N, C, H, W] tensors of one shape, got {x.shape} and {y.shape}")
    sat_x = x.amax(1, keepdim=True) - x.amin(1, keepdim=True)
    sat_y = y.amax(1, keepdim=True) - y.amin(1, keepdim=True)
    room = F.max_pool2d(sat_y, window, stride=1, padding=window // 2)
    return (sat_x > room + margin).flatten(1).float().mean(1)


def paired_metrics(real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
    """PSNR, SSIM, L1 (and MS-SSIM where the images are large enough) per image, on [0, 1] images."""
    out = {"psnr": psnr(fake, real), "ssim": ssim(fake, real), "l1": l1(fake, real)}
    if min(real.shape[-2:]) >= ms_ssim_min_size():
        out["ms_ssim"] = ms_ssim(fake, real)
    return out
