"""Image quality metrics: reference (PSNR, SSIM, MS-SSIM, L1), feature-based (FID, KID, SIFID,
LPIPS), single-image diversity, weight-free patch realism, and segmentation mIoU. Weight-based
metrics load their networks from local files only (see :mod:`edgegan.weights`)."""

from edgegan.metrics.fid import (
    FIDResult,
    KIDResult,
    SIFIDResult,
    diversity,
    feature_stats,
    fid_from_features,
    frechet_distance,
    kid,
    sifid,
)
from edgegan.metrics.patches import patch_realism, sample_diversity
from edgegan.metrics.reference import invented_colour, l1, paired_metrics, psnr
from edgegan.metrics.ssim import gaussian_window, ms_ssim, ssim, ssim_map

__all__ = [
    "FIDResult",
    "KIDResult",
    "SIFIDResult",
    "diversity",
    "feature_stats",
    "fid_from_features",
    "frechet_distance",
    "gaussian_window",
    "invented_colour",
    "kid",
    "l1",
    "ms_ssim",
    "paired_metrics",
    "patch_realism",
    "psnr",
    "sample_diversity",
    "sifid",
    "ssim",
    "ssim_map",
]
