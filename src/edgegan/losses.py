"""GAN objectives and the image losses the recipes combine with them.

Discriminator outputs may be a tensor or a list of tensors (multi-scale discriminators);
lists are averaged over scales.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from edgegan.metrics.ssim import ssim

GANMode = Literal["vanilla", "lsgan", "hinge", "wgangp"]
Pred = torch.Tensor | Sequence[torch.Tensor]


class GANLoss(nn.Module):
    """Adversarial loss for the discriminator (``for_discriminator=True``) or the generator.

    vanilla: BCE on logits; lsgan: least squares to 1/0; hinge: max(0, 1 ∓ D) for D and
    −D for G; wgangp: −D(real) + D(fake) for D and −D for G (add :func:`gradient_penalty`).
    """

    def __init__(self, mode: GANMode = "hinge") -> None:
        super().__init__()
        if mode not in ("vanilla", "lsgan", "hinge", "wgangp"):
            raise ValueError(f"unknown GAN loss {mode!r}")
        self.mode = mode

    def _single(self, pred: torch.Tensor, target_is_real: bool, for_discriminator: bool) -> torch.Tensor:
        if self.mode == "vanilla":
            target = torch.full_like(pred, 1.0 if target_is_real else 0.0)
            return F.binary_cross_entropy_with_logits(pred, target)
        if self.mode == "lsgan":
            target = torch.full_like(pred, 1.0 if target_is_real else 0.0)
            return F.mse_loss(pred, target)
        if not for_discriminator:
            # hinge and Wasserstein generators both maximise the critic's score.
            if not target_is_real:
                raise ValueError(f"{self.mode} generator loss is defined for target_is_real=True only")
            return -pred.mean()
        if self.mode == "hinge":
            return F.relu(1.0 - pred).mean() if target_is_real else F.relu(1.0 + pred).mean()
        return -pred.mean() if target_is_real else pred.mean()

    def forward(self, pred: Pred, target_is_real: bool, for_discriminator: bool = True) -> torch.Tensor:
        preds = [pred] if isinstance(pred, torch.Tensor) else list(pred)
        losses = [self._single(p, target_is_real, for_discriminator) for p in preds]
        return torch.stack(losses).mean()


def gradient_penalty(
    critic: Callable[[torch.Tensor], Pred],
    real: torch.Tensor,
    fake: torch.Tensor,
    weight: float = 10.0,
    target_norm: float = 1.0,
    *,
    per_pixel: bool = False,
    shared_alpha: bool = False,
) -> torch.Tensor:
    """Gradient penalty ``weight · E[(‖∇D(x̂)‖₂ − target_norm)²]`` at random interpolates
    ``x̂ = α·real + (1 − α)·fake`` (the critic's outputs, or the sum over a list of them, are summed).

    Two forms, chosen explicitly:

    * ``per_pixel=False`` (default), WGAN-GP (Gulrajani et al., 2017): the norm is taken over
      the whole sample (all channels and positions), and the expectation is the mean over the batch.
    * ``per_pixel=True``, SinGAN (Shaham et al., 2019, ``calc_gradient_penalty`` in the reference
      code) and so SETGAN: the norm is taken over the channel dimension (dim 1) at each position,
      and the expectation is the mean over positions and batch.

    ``shared_alpha=True`` draws one α for the whole batch (as SinGAN does); otherwise each sample
    draws its own (WGAN-GP). With a batch of one the two are the same.
    """
    if per_pixel and real.dim() < 2:
        raise ValueError(f"per_pixel needs a [N, C, ...] input, got shape {tuple(real.shape)}")
    n_alpha = 1 if shared_alpha else real.shape[0]
    alpha = torch.rand(n_alpha, *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    out = critic(mixed)
    outs = [out] if isinstance(out, torch.Tensor) else list(out)
    total = sum(o.sum() for o in outs)
    (grad,) = torch.autograd.grad(total, mixed, create_graph=True)
    norms = grad.norm(2, dim=1) if per_pixel else grad.flatten(1).norm(2, dim=1)
    return weight * ((norms - target_norm) ** 2).mean()


def l1_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(x, y)


def pixel_l1_loss(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """L1 on the length of each pixel's error vector across channels, ``sqrt(sum_c e_c^2 + eps^2) / sqrt(C)``,
    averaged over pixels (equal to :func:`l1_loss` where the error is the same in every channel).

    Per-channel L1 pulls each channel to its own median, so where the target is one of two colours (an ink
    line or paper) each channel can make its own call and the output gets a colour the target never has. Here
    the gradient of each pixel points along its error vector, so every channel moves together."""
    if x.shape != y.shape or x.ndim < 2:
        raise ValueError(f"pixel_l1_loss needs two tensors of one shape [N, C, ...], got {x.shape} and {y.shape}")
    err = (x - y).pow(2).sum(1)
    return (err + eps * eps).sqrt().mean() / x.shape[1] ** 0.5


def ssim_loss(x: torch.Tensor, y: torch.Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> torch.Tensor:
    """1 − SSIM, for images whose values lie in ``value_range``.

    Values are mapped to [0, 1] first: SSIM's luminance term assumes non-negative intensities
    (with zero-mean [-1, 1] data an image and its negative would score as similar).
    """
    lo, hi = value_range
    scale = hi - lo
    return 1.0 - ssim((x - lo) / scale, (y - lo) / scale, data_range=1.0).mean()


def total_variation(x: torch.Tensor, reduction: Literal["mean", "sum"] = "mean") -> torch.Tensor:
    """Anisotropic L1 total variation: absolute differences of vertical and horizontal neighbours."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs()
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs()
    if reduction == "sum":
        return dh.sum() + dw.sum()
    return dh.mean() + dw.mean()


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """``[N, C, C]`` Gram matrices of ``[N, C, H, W]`` features, normalised by ``C·H·W``."""
    n, c, h, w = features.shape
    f = features.reshape(n, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


class OMGDLoss(nn.Module):
    """OMGD's online distillation loss (used by UGC):
    ``λ_ssim·(1 − SSIM) + λ_feature·Σ L1(features) + λ_style·Σ L1(Gram) + λ_tv·TV(student)``.

    ``perceptual(x, image)`` returns a list of feature maps for an image generated from input ``x``
    (see :func:`edgegan.nn.perceptual.build_perceptual`); the teacher's features are taken without
    gradients. ``forward`` returns the total and the four weighted terms (for logging).
    """

    def __init__(
        self,
        perceptual: Callable[[torch.Tensor, torch.Tensor], list[torch.Tensor]],
        lambda_ssim: float = 1e1,
        lambda_feature: float = 1e4,
        lambda_style: float = 1e1,
        lambda_tv: float = 1e-5,
    ) -> None:
        super().__init__()
        self.perceptual = perceptual
        self.weights = {"ssim": lambda_ssim, "feature": lambda_feature, "style": lambda_style, "tv": lambda_tv}

    def forward(
        self, student: torch.Tensor, teacher: torch.Tensor, x: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        teacher = teacher.detach()
        with torch.no_grad():
            t_feats = self.perceptual(x, teacher)
        s_feats = self.perceptual(x, student)
        if len(s_feats) != len(t_feats) or not s_feats:
            raise ValueError("the perceptual network returned no features or different layer counts")
        feature = torch.stack([F.l1_loss(s, t) for s, t in zip(s_feats, t_feats, strict=True)]).sum()
        style = torch.stack(
            [F.l1_loss(gram_matrix(s), gram_matrix(t)) for s, t in zip(s_feats, t_feats, strict=True)]
        ).sum()
        terms = {
            "ssim": self.weights["ssim"] * ssim_loss(student, teacher),
            "feature": self.weights["feature"] * feature,
            "style": self.weights["style"] * style,
            "tv": self.weights["tv"] * total_variation(student),
        }
        return torch.stack(list(terms.values())).sum(), terms
