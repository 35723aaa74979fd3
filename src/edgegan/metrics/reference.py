"""Full-reference metrics that need no weights: PSNR, SSIM, MS-SSIM and L1, batched."""

from __future__ import annotations

import torch

from edgegan.metrics.ssim import ms_ssim, ms_ssim_min_size, ssim


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB per image ([N]); identical images give inf."""
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(dim=1)
    return (10 * torch.log10(data_range**2 / mse)).to(x.dtype)


def l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per image ([N])."""
    return (x - y).abs().flatten(1).mean(dim=1)


def paired_metrics(real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
    """PSNR, SSIM, L1 (and MS-SSIM where the images are large enough) per image, on [0, 1] images."""
    out = {"psnr": psnr(fake, real), "ssim": ssim(fake, real), "l1": l1(fake, real)}
    if min(real.shape[-2:]) >= ms_ssim_min_size():
        out["ms_ssim"] = ms_ssim(fake, real)
    return out
