"""Pieces both UGC stages use: data loaders, per-epoch seeding, the discriminator, the OMGD loss with its
frozen feature network, and validation scores (the :class:`Judge`)."""

from __future__ import annotations

import copy
import hashlib
import math
import random
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate

from edgegan.data.datasets import split_validation, subset
from edgegan.errors import ConfigError
from edgegan.losses import OMGDLoss
from edgegan.metrics.reference import psnr
from edgegan.metrics.ssim import ssim
from edgegan.models import PatchDiscriminator
from edgegan.nn.perceptual import build_perceptual
from edgegan.runs import set_seed
from edgegan.ugc.config import UGCConfig
from edgegan.ugc.data import LabelSplit

__all__ = [
    "Judge",
    "UGCData",
    "evaluate",
    "fingerprint",
    "frozen_copy",
    "make_discriminator",
    "make_omgd",
    "search_metric",
    "seed_epoch",
    "to01",
]


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

    def unlabeled_batches(self, start: int = 0, seed: int = 0, stage: int = 1) -> Iterator[torch.Tensor] | None:
        """Endless unlabelled batches from the ``start``-th on. Pass ``p`` over the inputs follows a
        permutation seeded by ``(seed, stage, p)``, so batch ``k`` is the same whether or not the run was stopped
        and resumed before it (crops and flips come from the global RNG, which each epoch reseeds)."""
        if self.unlabeled is None:
            return None
        return self._unlabeled(start, _derive("unlabeled", stage, seed))

    def _unlabeled(self, start: int, seed: int) -> Iterator[torch.Tensor]:
        assert self.unlabeled is not None
        n, size = len(self.unlabeled), self.cfg.batch_size
        per_pass = math.ceil(n / size)
        k = start
        order: tuple[int, torch.Tensor] | None = None
        while True:
            p, j = divmod(k, per_pass)
            if order is None or order[0] != p:
                order = (p, torch.randperm(n, generator=torch.Generator().manual_seed(_derive(seed, p))))
            items = [self.unlabeled[int(i)] for i in order[1][j * size : (j + 1) * size]]
            yield default_collate(items)["A"]
            k += 1

    def val_pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self.val is None:
            return []
        return [(item["A"], item["B"]) for item in self.val]  # type: ignore[attr-defined]


def _derive(*parts: object) -> int:
    """A 63-bit seed from ``parts`` (stable across processes, unlike ``hash``)."""
    digest = hashlib.sha256("-".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def seed_epoch(seed: int, stage: int, epoch: int) -> random.Random:
    """Seed the global RNGs (shuffling, crops, flips) for ``epoch`` of ``stage`` from ``(seed, stage, epoch)``
    and return that epoch's private :class:`random.Random` (sub-network sampling, the pseudo-label coin).

    Every epoch's randomness depends on its number alone, so a run stopped after any epoch and resumed
    continues exactly as the uninterrupted run does."""
    set_seed(_derive("ugc", stage, seed, epoch))
    return random.Random(_derive("ugc-rng", stage, seed, epoch))


def frozen_copy(module: nn.Module) -> nn.Module:
    """A fixed copy of ``module``: its own weights, no gradients, eval mode (nothing trains it)."""
    return copy.deepcopy(module).requires_grad_(False).eval()


def fingerprint(module: nn.Module) -> str:
    """The first 12 hex digits of a sha256 over ``module``'s state (names, shapes and values)."""
    h = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(value.shape)).encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def make_discriminator(cfg: UGCConfig, input_nc: int = 3, output_nc: int = 3) -> PatchDiscriminator:
    """A conditional PatchGAN (it sees the input and the image)."""
    return PatchDiscriminator(input_nc=input_nc + output_nc, ndf=cfg.ndf, n_layers=cfg.d_layers)


def make_omgd(cfg: UGCConfig, discriminator: nn.Module, device: torch.device, *, source: str) -> tuple[OMGDLoss, str]:
    """The OMGD loss with the configured perceptual network; also a description naming that network, its
    weights and the loss weights (the discriminator substitute has its own feature and style weights).

    The substitute is a FROZEN copy of ``discriminator`` as it is now (``source`` says which one that is):
    a feature space that kept training with the GAN would move under the student, which would then chase
    it. The copy's weight fingerprint goes into the description, so logs, summaries and a resumed run's
    config check all name the exact weights."""
    frozen = frozen_copy(discriminator)
    net, name = build_perceptual(
        cfg.perceptual, weights=cfg.perceptual_weights, discriminator=frozen, conditional=True, device=device
    )
    vgg = name.startswith("vgg16")
    if not vgg:
        c = getattr(frozen, "config", None)
        arch = f"PatchGAN ndf {c.ndf}, {c.n_layers} layers" if c is not None else type(frozen).__name__
        name = f"{name}: frozen copy of {source} ({arch}, weights sha256 {fingerprint(frozen)})"
    feature = cfg.lambda_feature if vgg else cfg.lambda_feature_d
    style = cfg.lambda_style if vgg else cfg.lambda_style_d
    loss = OMGDLoss(net, cfg.lambda_ssim, feature, style, cfg.lambda_tv)
    weights = f"λ ssim {cfg.lambda_ssim:g}, feature {feature:g}, style {style:g}, tv {cfg.lambda_tv:g}"
    return loss, f"{name}; {weights}"


@torch.no_grad()
def _outputs(
    model: nn.Module, pairs: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``model``'s outputs for the inputs of ``pairs`` and the targets, both [N, 3, H, W] in [0, 1] (eval mode)."""
    was = model.training
    model.eval()
    try:
        outs = torch.cat([to01(model(x.unsqueeze(0).to(device))) for x, _ in pairs])
    finally:
        model.train(was)
    return outs, torch.cat([to01(y.unsqueeze(0).to(device)) for _, y in pairs])


def _psnr_ssim(outs: torch.Tensor, refs: torch.Tensor) -> dict[str, float]:
    """Mean PSNR (dB, capped at 100) and SSIM."""
    return {
        "psnr": float(psnr(outs, refs).double().clamp(max=100.0).mean()),
        "ssim": float(ssim(outs, refs).double().mean()),
    }


def evaluate(
    model: nn.Module, pairs: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device | str = "cpu"
) -> dict[str, float | None]:
    """Mean PSNR (dB, capped at 100) and SSIM of ``model`` against the targets of ``pairs`` (eval mode)."""
    if not pairs:
        return {"psnr": None, "ssim": None}
    return dict(_psnr_ssim(*_outputs(model, pairs, device)))


def search_metric(cfg: UGCConfig, n_val: int) -> str:
    """``cfg.search_by``, with ``auto`` resolved: KID when the Inception weights are found and the validation
    slice has two images or more (KID is unbiased on small sets, FID is not), otherwise SSIM."""
    if cfg.search_by != "auto":
        return cfg.search_by
    from edgegan.weights import available

    found, _ = available("inception-fid", cfg.eval_weights)
    return "kid" if found is not None and n_val >= 2 else "ssim"


class Judge:
    """Scores generators on the labelled validation slice: PSNR and SSIM always, and ``metric`` (one of
    ``ssim``, ``psnr``, ``lpips``, ``fid``, ``kid``). The networks LPIPS, FID and KID need are loaded once
    (looked up from ``weights``, then as every edgegan weights file; a missing file is a WeightsError that
    names it) and the real images' Inception features are computed once."""

    LOWER_IS_BETTER = ("lpips", "fid", "kid")

    def __init__(
        self,
        pairs: list[tuple[torch.Tensor, torch.Tensor]],
        metric: str,
        *,
        device: torch.device | str = "cpu",
        weights: str | None = None,
    ) -> None:
        if not pairs:
            raise ConfigError(
                f"choosing by {metric} needs labelled validation pairs (val_fraction > 0, 2 or more labelled pairs)"
            )
        if metric in ("fid", "kid") and len(pairs) < 2:
            raise ConfigError(f"{metric} needs at least 2 validation pairs, got {len(pairs)}")
        self.pairs, self.metric, self.device = pairs, metric, device
        self._net: nn.Module | None = None
        self._real: Any = None
        if metric == "lpips":
            from edgegan.metrics.lpips import load_lpips

            self._net = load_lpips(backbone_path=weights, heads_path=weights, device=device)
        elif metric in ("fid", "kid"):
            from edgegan.metrics.inception import extract_features, load_fid_inception

            self._net = load_fid_inception(weights, device=device)
            reals = torch.cat([to01(y.unsqueeze(0)) for _, y in pairs])
            self._real = extract_features(self._net, reals, device=device)  # type: ignore[arg-type]

    def __call__(self, model: nn.Module) -> dict[str, float]:
        """``{"psnr", "ssim", <metric>}`` of ``model`` on the validation slice."""
        outs, refs = _outputs(model, self.pairs, self.device)
        scores = _psnr_ssim(outs, refs)
        if self.metric == "lpips":
            assert self._net is not None
            with torch.no_grad():
                scores["lpips"] = float(self._net(outs * 2 - 1, refs * 2 - 1).mean())
        elif self.metric in ("fid", "kid"):
            from edgegan.metrics.fid import fid_from_features, kid
            from edgegan.metrics.inception import extract_features

            fake = extract_features(self._net, outs, device=self.device)  # type: ignore[arg-type]
            value = fid_from_features(self._real, fake).value if self.metric == "fid" else kid(self._real, fake).mean
            scores[self.metric] = float(value)
        return scores

    def rank(self, scores: dict[str, float]) -> float:
        """The chosen metric as a figure where higher is better (lower-is-better metrics negated)."""
        value = scores[self.metric]
        return -value if self.metric in self.LOWER_IS_BETTER else value
