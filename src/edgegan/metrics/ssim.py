"""SSIM (Wang et al. 2004): 11×11 Gaussian window, σ = 1.5, per channel, then averaged."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).to(dtype)


def ssim_map(
    x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, window: int = 11, sigma: float = 1.5
) -> torch.Tensor:
    """Per-pixel SSIM of two [N, C, H, W] batches, valid positions only ([N, C, H-10, W-10])."""
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"ssim needs two [N, C, H, W] tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < window:
        raise ValueError(f"images must be at least {window} px on each side for SSIM, got {tuple(x.shape[-2:])}")
    c = x.shape[1]
    w = gaussian_window(window, sigma, x.dtype).to(x.device).expand(c, 1, window, window)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """SSIM per image ([N]): mean over positions of each channel, then over channels."""
    return ssim_map(x, y, data_range).mean(dim=(2, 3)).mean(dim=1)
