"""SETGAN's quality estimator: SSIM of samples through scales 0..k against the real image,
and the early exit that picks the fewest scales meeting a threshold."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from edgegan.metrics.ssim import ssim
from edgegan.setgan.pyramid import SETGANPyramid, resize


@dataclass
class ScaleQuality:
    index: int
    ssim: float  # mean over noise draws
    ssim_std: float
    sifid: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def estimate_quality(
    pyr: SETGANPyramid,
    real: torch.Tensor,
    *,
    draws: int = 4,
    seed: int = 0,
    sifid_model: Any = None,
    ks: Sequence[int] | None = None,
    anchored: bool = True,
) -> list[ScaleQuality]:
    """For each k: generate through scales 0..k, up-sample to the real image's size and compare
    (SSIM on [0, 1] images, mean over ``draws`` noise draws; SIFID too when a FID Inception
    model is given). ``real`` is [1, 3, H, W] in [-1, 1]; ``ks`` limits which k are estimated.

    ``anchored`` (default) feeds scale 0 its fixed reconstruction noise and draws fresh noise
    at scales 1..k, so the samples keep the training image's layout and SSIM measures how much
    each added scale refines it. Fully random samples (``anchored=False``) rearrange the image
    at scale 0, so their SSIM tends to *fall* as finer scales add detail at random places,
    which would make "the fewest scales meeting T" meaningless.
    """
    size = tuple(real.shape[-2:])
    target = ((real + 1) / 2).to(pyr.device)
    if anchored and pyr.z_rec is None:
        raise ValueError("anchored estimation needs the pyramid's reconstruction noise")
    out = []
    for k in range(pyr.n_scales) if ks is None else ks:
        gen = torch.Generator().manual_seed(seed + k)
        noises = pyr.noises(draws, pyr.sizes, k, generator=gen)
        if anchored:
            noises[0] = pyr.z_rec.to(pyr.device).expand(draws, 3, *pyr.sizes[0])  # type: ignore[union-attr]
        samples = resize(pyr.run(noises, pyr.sizes)[-1], size).clamp(-1, 1)
        values = ssim((samples + 1) / 2, target.expand_as(samples))
        sifid_value = None
        if sifid_model is not None:
            from edgegan.metrics.fid import sifid

            sifid_value = float(sifid(sifid_model, target, (samples + 1) / 2).mean)
        std = float(values.std()) if draws > 1 else 0.0
        out.append(ScaleQuality(k, float(values.mean()), std, sifid_value))
    return out


def choose_scales(ssims: Sequence[float], threshold: float) -> int | None:
    """Index k of the fewest scales (0..k) whose SSIM reaches ``threshold``; None if none does."""
    for k, value in enumerate(ssims):
        if value >= threshold:
            return k
    return None
