"""Pieces both UGC stages use: data loaders, the discriminator, the OMGD loss and validation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from edgegan.data.datasets import split_validation, subset
from edgegan.losses import OMGDLoss
from edgegan.metrics.reference import psnr
from edgegan.metrics.ssim import ssim
from edgegan.models import PatchDiscriminator
from edgegan.nn.perceptual import build_perceptual
from edgegan.ugc.config import UGCConfig
from edgegan.ugc.data import LabelSplit

__all__ = ["UGCData", "cycle", "evaluate", "make_discriminator", "make_omgd", "to01"]


def to01(x: torch.Tensor) -> torch.Tensor:
    return ((x.float() + 1) / 2).clamp(0, 1)


class UGCData:
    """Labelled training pairs, a held-out labelled validation slice and the unlabelled inputs."""

    def __init__(self, split: LabelSplit, cfg: UGCConfig) -> None:
        labeled = split.labeled_set(load_size=cfg.load_size, crop_size=cfg.crop_size, train=True)
        labeled_eval = split.labeled_set(load_size=cfg.load_size, crop_size=cfg.crop_size, train=False)
        n = len(labeled)
        train_idx, val_idx = split_validation(n, cfg.val_fraction, cfg.seed) if n > 1 else ([0], [])
        self.train: Dataset[Any] = subset(labeled, train_idx)
        self.val: Dataset[Any] | None = subset(labeled_eval, val_idx) if val_idx else None
        self.unlabeled = split.unlabeled_set(load_size=cfg.load_size, crop_size=cfg.crop_size, train=True)
        self.cfg = cfg

    def sizes(self) -> dict[str, int]:
        return {
            "labeled_train": len(self.train),  # type: ignore[arg-type]
            "labeled_val": len(self.val) if self.val is not None else 0,  # type: ignore[arg-type]
            "unlabeled": len(self.unlabeled) if self.unlabeled is not None else 0,
        }

    def labeled_loader(self) -> DataLoader[Any]:
        return DataLoader(self.train, batch_size=self.cfg.batch_size, shuffle=True, num_workers=0)

    def unlabeled_batches(self) -> Iterator[torch.Tensor] | None:
        if self.unlabeled is None:
            return None
        loader = DataLoader(self.unlabeled, batch_size=self.cfg.batch_size, shuffle=True, num_workers=0)
        return (batch["A"] for batch in cycle(loader))

    def val_pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self.val is None:
            return []
        return [(item["A"], item["B"]) for item in self.val]  # type: ignore[attr-defined]


def cycle(loader: DataLoader[Any]) -> Iterator[Any]:
    """Endless passes over ``loader`` (reshuffled each pass)."""
    while True:
        yield from loader


def make_discriminator(cfg: UGCConfig, input_nc: int = 3, output_nc: int = 3) -> PatchDiscriminator:
    """A conditional PatchGAN (it sees the input and the image)."""
    return PatchDiscriminator(input_nc=input_nc + output_nc, ndf=cfg.ndf, n_layers=cfg.d_layers)


def make_omgd(cfg: UGCConfig, discriminator: nn.Module, device: torch.device) -> tuple[OMGDLoss, str]:
    """The OMGD loss with the configured perceptual network; also a description naming that network and
    the weights used (the discriminator substitute has its own feature and style weights)."""
    net, name = build_perceptual(
        cfg.perceptual, weights=cfg.perceptual_weights, discriminator=discriminator, conditional=True, device=device
    )
    vgg = name.startswith("vgg16")
    feature = cfg.lambda_feature if vgg else cfg.lambda_feature_d
    style = cfg.lambda_style if vgg else cfg.lambda_style_d
    loss = OMGDLoss(net, cfg.lambda_ssim, feature, style, cfg.lambda_tv)
    weights = f"λ ssim {cfg.lambda_ssim:g}, feature {feature:g}, style {style:g}, tv {cfg.lambda_tv:g}"
    return loss, f"{name}; {weights}"


@torch.no_grad()
def evaluate(
    model: nn.Module, pairs: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device | str = "cpu"
) -> dict[str, float | None]:
    """Mean PSNR (dB, capped at 100) and SSIM of ``model`` against the targets of ``pairs`` (eval mode)."""
    if not pairs:
        return {"psnr": None, "ssim": None}
    was = model.training
    model.eval()
    ps, ss = [], []
    for x, y in pairs:
        out = to01(model(x.unsqueeze(0).to(device)))
        ref = to01(y.unsqueeze(0).to(device))
        ps.append(psnr(out, ref).double().clamp(max=100.0))
        ss.append(ssim(out, ref).double())
    model.train(was)
    return {"psnr": float(torch.cat(ps).mean()), "ssim": float(torch.cat(ss).mean())}
