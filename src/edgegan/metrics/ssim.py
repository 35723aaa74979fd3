"""SSIM (Wang et al. 2004) and MS-SSIM (Wang et al. 2003) on [0, data_range] images.

11×11 Gaussian window, σ = 1.5, K1 = 0.01, K2 = 0.03, valid positions only; computed per
channel, then averaged over channels. Batched ([N, C, H, W]) on any device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).to(dtype)


def _check(x: torch.Tensor, y: torch.Tensor, window: int) -> None:
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"need two [N, C, H, W] tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < window:
        raise ValueError(f"images must be at least {window} px on each side for SSIM, got {tuple(x.shape[-2:])}")


def _ssim_and_cs(
    x: torch.Tensor, y: torch.Tensor, data_range: float, window: int = 11, sigma: float = 1.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position SSIM and its contrast-structure part (valid positions)."""
    _check(x, y, window)
    c = x.shape[1]
    w = gaussian_window(window, sigma, x.dtype).to(x.device).expand(c, 1, window, window)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return luminance * cs, cs


def ssim_map(
    x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, window: int = 11, sigma: float = 1.5
) -> torch.Tensor:
    """Per-pixel SSIM of two [N, C, H, W] batches, valid positions only ([N, C, H-10, W-10])."""
    return _ssim_and_cs(x, y, data_range, window, sigma)[0]


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """SSIM per image ([N]): mean over positions of each channel, then over channels."""
    return ssim_map(x, y, data_range).mean(dim=(2, 3)).mean(dim=1)


def ms_ssim_min_size(levels: int = len(MS_SSIM_WEIGHTS), window: int = 11) -> int:
    """Smallest side for which the coarsest scale still holds one full window."""
    return (window - 1) * 2 ** (levels - 1) + 1


def ms_ssim(
    x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, weights: tuple[float, ...] = MS_SSIM_WEIGHTS
) -> torch.Tensor:
    """MS-SSIM per image ([N]) over ``len(weights)`` scales (5: images need ≥ 161 px a side).

    Contrast-structure terms are clamped at 0 before the fractional powers, so a negative
    correlation at one scale gives 0 rather than NaN.
    """
    need = ms_ssim_min_size(len(weights))
    if min(x.shape[-2:]) < need:
        raise ValueError(f"MS-SSIM with {len(weights)} scales needs images of at least {need} px a side")
    w = torch.tensor(weights, dtype=x.dtype, device=x.device)
    factors = []
    for level in range(len(weights)):
        s, cs = _ssim_and_cs(x, y, data_range)
        last = level == len(weights) - 1
        value = (s if last else cs).mean(dim=(2, 3))  # [N, C]
        factors.append(torch.relu(value))
        if not last:
            # Odd sides are padded so that 161 px keep a full window at the coarsest scale.
            pad = [s % 2 for s in x.shape[-2:]]
            x = F.avg_pool2d(x, 2, padding=pad, count_include_pad=False)
            y = F.avg_pool2d(y, 2, padding=pad, count_include_pad=False)
    stacked = torch.stack(factors, dim=0)  # [levels, N, C]
    return torch.prod(stacked ** w[:, None, None], dim=0).mean(dim=1)
