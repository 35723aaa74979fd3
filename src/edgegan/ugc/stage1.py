"""UGC stage 1: semi-supervised architecture search training of the depth-width supernet.

Each step follows the sandwich rule. The largest sub-network G_l trains on a labelled pair with the
GAN loss + λ_recon·L1 (the discriminator trains against it, on Eq. 4 alone, as in Algorithm 1); a random
sub-network G_r and the smallest G_s then learn on an unlabelled input by online distillation from G_l's
output with the OMGD loss. All three gradients are summed into one optimiser step of the shared weights.

Without VGG16 weights the OMGD feature and style terms use a frozen copy of the discriminator as it was
initialised (random weights, fixed by the seed): the discriminator that trains moves every step, and the
sub-networks would chase that moving feature space. Each epoch draws its randomness from (seed, epoch),
so a resumed run ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgegan.fileio import atomic_write_json
from edgegan.losses import GANLoss, OMGDLoss
from edgegan.models import DepthWidthSupernet, PatchDiscriminator
from edgegan.runs import RunDir, check_finite, load_checkpoint, save_checkpoint, set_seed
from edgegan.ugc.common import UGCData, evaluate, make_discriminator, make_omgd, seed_epoch
from edgegan.ugc.config import UGCConfig
from edgegan.ugc.data import LabelSplit
from edgegan.ugc.results import UGCStage1Result

__all__ = ["build_supernet", "gene_choices", "sandwich_step", "train_stage1"]

Progress = Callable[[int, int, int], None]


def build_supernet(cfg: UGCConfig, input_nc: int = 3, output_nc: int = 3) -> DepthWidthSupernet:
    return DepthWidthSupernet(
        input_nc=input_nc,
        output_nc=output_nc,
        ngf=cfg.ngf,
        n_blocks=cfg.n_blocks,
        max_inserted=cfg.max_inserted,
        residual=cfg.residual,
        input_skip=cfg.input_skip,
    )


def gene_choices(supernet: DepthWidthSupernet, cfg: UGCConfig) -> list[tuple[int, ...]]:
    return supernet.gene_choices(cfg.widths, cfg.depths, cfg.trunk_depths)


def sandwich_step(
    supernet: DepthWidthSupernet,
    discriminator: nn.Module,
    x_a: torch.Tensor,
    y_a: torch.Tensor,
    x_u: torch.Tensor,
    *,
    choices: list[tuple[int, ...]],
    rng: random.Random,
    gan: GANLoss,
    omgd: OMGDLoss,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    lambda_recon: float,
) -> dict[str, Any]:
    """One stage-1 step; returns its losses and the three configs it trained (``largest``, ``random``,
    ``smallest``). ``x_u`` is the unlabelled batch (pass ``x_a`` to train without unlabelled data)."""
    largest = supernet.largest_config(choices)
    smallest = supernet.smallest_config(choices)
    middle = supernet.sample_config(rng, choices)

    # D step: real pairs against G_l's output.
    supernet.set_config(largest)
    fake = supernet(x_a)
    discriminator.requires_grad_(True)
    loss_d = 0.5 * (
        gan(discriminator(torch.cat([x_a, y_a], 1)), True)
        + gan(discriminator(torch.cat([x_a, fake.detach()], 1)), False)
    )
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()

    # G step, sandwich rule: supervised G_l, then G_r and G_s distilled from G_l on the unlabelled input.
    discriminator.requires_grad_(False)  # the generator losses must not leave gradients in D
    opt_g.zero_grad(set_to_none=True)
    loss_gan = gan(discriminator(torch.cat([x_a, fake], 1)), True, for_discriminator=False)
    loss_recon = F.l1_loss(fake, y_a)
    (loss_gan + lambda_recon * loss_recon).backward()
    with torch.no_grad():
        pseudo = supernet(x_u)  # still G_l
    losses: dict[str, Any] = {"d": loss_d, "g_gan": loss_gan, "recon": loss_recon}
    for name, config in (("random", middle), ("smallest", smallest)):
        supernet.set_config(config)
        loss_od, _ = omgd(supernet(x_u), pseudo, x_u)
        loss_od.backward()
        losses[f"od_{name}"] = loss_od
    opt_g.step()
    discriminator.requires_grad_(True)
    supernet.set_config(largest)
    return {"losses": losses, "configs": {"largest": largest, "random": middle, "smallest": smallest}}


def train_stage1(
    split: LabelSplit,
    out: str | os.PathLike[str],
    cfg: UGCConfig,
    *,
    resume: bool = False,
    progress: Progress | None = None,
    device: str | torch.device = "cpu",
) -> UGCStage1Result:
    """Train the supernet into ``out`` (``config.yaml``, ``metrics.jsonl``, ``checkpoints/``, ``supernet/``,
    ``discriminator/`` and ``summary.json``); returns a :class:`~edgegan.ugc.results.UGCStage1Result` (which still
    reads as the summary dict returned before, and ``summary.json`` holds). ``progress(epoch, batch, batches)``."""
    dev = torch.device(device)
    out = Path(out)
    set_seed(cfg.seed)
    data = UGCData(split, cfg)
    supernet = build_supernet(cfg).to(dev).train()
    d = make_discriminator(cfg).to(dev).train()
    choices = gene_choices(supernet, cfg)
    gan = GANLoss(cfg.gan_mode)  # type: ignore[arg-type]
    omgd, perceptual_name = make_omgd(
        cfg, d, dev, source=f"the stage-1 discriminator as initialised (seed {cfg.seed}), before any training"
    )
    opt_g = torch.optim.Adam(supernet.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr, betas=cfg.betas)
    sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, cfg.lr_factor(1))
    sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, cfg.lr_factor(1))
    objs: dict[str, Any] = {
        "modules": {"supernet": supernet, "D": d},
        "optimizers": {"G": opt_g, "D": opt_d},
        "schedulers": {"G": sched_g, "D": sched_d},
    }
    use_u = cfg.use_unlabeled_stage1 and data.unlabeled is not None
    run = RunDir(
        out, {"ugc": cfg.to_dict(), "stage": 1, "data": data.sizes(), "perceptual": perceptual_name}, resume=resume
    )
    ckpt = load_checkpoint(run, **objs, map_location=dev)
    state: dict[str, Any] = {"history": []}
    if ckpt is not None and isinstance(ckpt.extra, dict):
        state.update(ckpt.extra)
    start = ckpt.step if ckpt else 0
    loader = data.labeled_loader()
    total = cfg.total_epochs(1)
    val_pairs = data.val_pairs()

    for epoch in range(start + 1, total + 1):
        rng = seed_epoch(cfg.seed, 1, epoch)  # shuffling, crops, flips and sub-network sampling of this epoch
        sums: dict[str, float] = {}
        n_batches = len(loader)
        u_batches = data.unlabeled_batches((epoch - 1) * n_batches, cfg.seed, stage=1) if use_u else None
        for i, batch in enumerate(loader):
            x_a, y_a = batch["A"].to(dev), batch["B"].to(dev)
            x_u = next(u_batches).to(dev) if u_batches is not None else x_a
            step = sandwich_step(
                supernet,
                d,
                x_a,
                y_a,
                x_u,
                choices=choices,
                rng=rng,
                gan=gan,
                omgd=omgd,
                opt_g=opt_g,
                opt_d=opt_d,
                lambda_recon=cfg.lambda_recon,
            )
            check_finite((epoch - 1) * n_batches + i + 1, checkpoint=run, **step["losses"])
            for k, v in step["losses"].items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            if progress is not None:
                progress(epoch, i + 1, n_batches)
        lr = opt_g.param_groups[0]["lr"]
        sched_g.step()
        sched_d.step()
        row: dict[str, Any] = {"epoch": epoch, "lr": lr, **{k: v / max(n_batches, 1) for k, v in sums.items()}}
        for name, config in (
            ("largest", supernet.largest_config(choices)),
            ("smallest", supernet.smallest_config(choices)),
        ):
            supernet.set_config(config)
            scores = evaluate(supernet, val_pairs, dev)
            row[f"val_psnr_{name}"], row[f"val_ssim_{name}"] = scores["psnr"], scores["ssim"]
        supernet.set_config(supernet.largest_config(choices))
        state["history"].append(row)
        run.log(epoch, **row)
        save_checkpoint(run, epoch, **objs, extra=state, keep=2)

    supernet.set_config(supernet.largest_config(choices))
    supernet.save(out / "supernet")
    d.save(out / "discriminator")
    result = UGCStage1Result(
        run=out,
        epochs=total,
        resumed_from=start if ckpt is not None else None,
        data=data.sizes(),
        unlabeled_used=use_u,
        perceptual=perceptual_name,
        supernet=out / "supernet",
        discriminator=out / "discriminator",
        history=state["history"],
    )
    atomic_write_json(out / "summary.json", result.to_dict())
    return result


def load_stage1(out: str | os.PathLike[str]) -> tuple[DepthWidthSupernet, PatchDiscriminator]:
    """The trained supernet and discriminator saved by :func:`train_stage1`."""
    import edgegan

    supernet = edgegan.load(Path(out) / "supernet")
    d = edgegan.load(Path(out) / "discriminator")
    assert isinstance(supernet, DepthWidthSupernet) and isinstance(d, PatchDiscriminator)
    return supernet, d
