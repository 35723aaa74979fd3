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
) -> torch.Tensor:
    """WGAN-GP: weight · E[(‖∇D(x̂)‖₂ − 1)²] at random interpolates x̂ of real and fake."""
    alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    out = critic(mixed)
    outs = [out] if isinstance(out, torch.Tensor) else list(out)
    total = sum(o.sum() for o in outs)
    (grad,) = torch.autograd.grad(total, mixed, create_graph=True)
    norms = grad.flatten(1).norm(2, dim=1)
    return weight * ((norms - target_norm) ** 2).mean()


def l1_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(x, y)


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
