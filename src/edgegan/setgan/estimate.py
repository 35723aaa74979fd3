"""SETGAN's quality estimators and the early exit that picks the fewest scales meeting a threshold.

Two estimators score scale k by SSIM against the real image:

* ``chain`` (:func:`estimate_quality`): samples made through scales 0..k, as the device runs
  them, up-sampled to full size and compared with the full-size real image.
* ``per_scale`` (:func:`estimate_per_scale`, the paper's SSIM_i): scale k alone, fed the
  up-sampled *real* image of scale k-1, compared with the real image at scale k.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from edgegan.metrics.ssim import ssim
from edgegan.setgan.pyramid import SETGANPyramid, resize

Estimator = Literal["chain", "per_scale"]
ESTIMATORS: tuple[Estimator, ...] = ("chain", "per_scale")
# The early exit chooses by the chain estimator unless asked otherwise: it scores what the device
# runs (scales 0..k fed by each other, no real image anywhere, paper Fig. 3). The per-scale one
# feeds every scale the real coarser image, which inference never has, and the up-sampled real
# image alone is already close to the next scale (see ``ScaleQuality.input_ssim``), so
# "the fewest scales meeting T" by it exits after one or two scales whatever the coarse scales do.
DEFAULT_ESTIMATOR: Estimator = "chain"


@dataclass
class ScaleQuality:
    index: int
    ssim: float  # mean over noise draws
    ssim_std: float
    sifid: float | None = None
    # per_scale only: SSIM of the generator's input alone (the up-sampled real image of scale k-1)
    # against the real image of scale k, i.e. what a generator that changes nothing scores.
    input_ssim: float | None = None

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
    """The chain estimator. For each k: generate through scales 0..k, up-sample to the real
    image's size and compare (SSIM on [0, 1] images, mean over ``draws`` noise draws; SIFID too
    when a FID Inception model is given). ``real`` is [1, 3, H, W] in [-1, 1]; ``ks`` limits
    which k are estimated.

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


@torch.no_grad()
def estimate_per_scale(
    pyr: SETGANPyramid,
    reals: Sequence[torch.Tensor],
    *,
    draws: int = 4,
    seed: int = 0,
    noise: Literal["random", "reconstruction"] = "random",
    sifid_model: Any = None,
    ks: Sequence[int] | None = None,
) -> list[ScaleQuality]:
    """The per-scale estimator (the paper's SSIM_i). For each k: F_k = G_k(up-sampled real image of
    scale k-1, Z_k) (scale 0 gets zeros, as in training), SSIM of F_k against the real image of
    scale k, both at scale k's size, on [0, 1] images. ``reals`` is the real pyramid (coarsest
    first, [1, 3, h, w] each, in [-1, 1]; ``SETGANRun.load_reals()``).

    The noise Z_k is the paper's: a fresh Gaussian draw at the scale's noise amplitude, the same
    kind of fake the critic saw in training (``noise="random"``, mean over ``draws``; its seeds are
    ``seed + k``, never the reconstruction noise's stream). At scale 0 this is an unconditional
    random sample, which rearranges the image, so its SSIM is low by design. ``noise=
    "reconstruction"`` instead feeds the reconstruction noise (z_rec at scale 0, zeros above):
    then SSIM measures how well each scale learnt its reconstruction term, not its fakes.

    It scores each scale in isolation, on an input the deployed pyramid never has; the chain
    estimator (:func:`estimate_quality`) scores what inference makes. ``input_ssim`` gives the
    floor: the SSIM of the up-sampled real coarser image alone (None at scale 0).
    """
    if noise not in ("random", "reconstruction"):
        raise ValueError(f"noise must be 'random' or 'reconstruction', got {noise!r}")
    if len(reals) < pyr.n_scales:
        raise ValueError(f"the real pyramid has {len(reals)} scales; the generators need {pyr.n_scales}")
    if noise == "reconstruction" and pyr.z_rec is None:
        raise ValueError("noise='reconstruction' needs the pyramid's reconstruction noise")
    dev = pyr.device
    out = []
    for k in range(pyr.n_scales) if ks is None else ks:
        size = pyr.sizes[k]
        real = reals[k].to(dev)
        if tuple(real.shape[-2:]) != tuple(size):
            raise ValueError(f"real image of scale {k} is {tuple(real.shape[-2:])}, the pyramid's scale is {size}")
        target = (real + 1) / 2
        n = draws if noise == "random" else 1  # the reconstruction input is deterministic
        prev = torch.zeros(1, 3, *size, device=dev) if k == 0 else resize(reals[k - 1].to(dev), size)
        if noise == "random":
            gen = torch.Generator().manual_seed(seed + k)
            z = pyr.noise_amps[k] * pyr.draw_noise(k, n, size, generator=gen)
        elif k == 0:
            z = pyr.z_rec.to(dev).expand(1, 3, *size)  # type: ignore[union-attr]
        else:
            z = torch.zeros(1, 3, *size, device=dev)
        fake = pyr.generators[k](prev.expand(n, 3, *size), z).clamp(-1, 1)
        values = ssim((fake + 1) / 2, target.expand_as(fake))
        sifid_value = None
        if sifid_model is not None:
            from edgegan.metrics.fid import sifid

            sifid_value = float(sifid(sifid_model, target, (fake + 1) / 2).mean)
        input_ssim = None if k == 0 else float(ssim((prev.clamp(-1, 1) + 1) / 2, target).mean())
        std = float(values.std()) if n > 1 else 0.0
        out.append(ScaleQuality(k, float(values.mean()), std, sifid_value, input_ssim))
    return out


def choose_scales(ssims: Sequence[float], threshold: float) -> int | None:
    """Index k of the fewest scales (0..k) whose SSIM reaches ``threshold``; None if none does.
    Which estimator made ``ssims`` is the caller's to record (the report's ``estimator``)."""
    for k, value in enumerate(ssims):
        if value >= threshold:
            return k
    return None
