"""Image quality metrics."""

from edgegan.metrics.ssim import gaussian_window, ssim, ssim_map

__all__ = ["gaussian_window", "ssim", "ssim_map"]
