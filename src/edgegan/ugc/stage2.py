"""UGC stage 2: adaptive online semi-supervised distillation.

The student G* and the wide and deep teachers inherit the supernet's weights (see
:mod:`edgegan.ugc.search`); each teacher also inherits a copy of the stage-1 discriminator. Every
``teacher_every`` steps each teacher takes a pix2pix step on a labelled pair (D step, then GAN + λ·L1).
Every step the student, with no discriminator of its own, takes one step on
``Σ_T L_OD(T(x_A), G*(x_A)) + Σ_T Φ_T · L_OD(T(x_U), G*(x_U))``, where the filter Φ_T keeps the pseudo
label when the teacher's discriminator scores it at or below its running (EMA) score for fakes and
otherwise keeps it with probability ½ (:func:`adaptive_keep`, the paper's Eq. 8).
"""

from __future__ import annotations

import copy
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgegan.errors import ConfigError
from edgegan.export.onnx import export_onnx
from edgegan.fileio import atomic_write_json
from edgegan.losses import GANLoss
from edgegan.models import DepthWidthGenerator, DepthWidthSupernet
from edgegan.profile.macs import profile_macs
from edgegan.runs import RunDir, check_finite, load_checkpoint, save_checkpoint, set_seed
from edgegan.ugc.common import UGCData, evaluate, make_omgd
from edgegan.ugc.config import UGCConfig
from edgegan.ugc.data import LabelSplit

__all__ = ["EMA", "adaptive_keep", "export_student", "train_stage2"]

Progress = Callable[[int, int, int], None]
TEACHERS = ("wide", "deep")


class EMA:
    """Exponential moving average; the first value initialises it."""

    def __init__(self, decay: float, value: float | None = None) -> None:
        self.decay = decay
        self.value = value

    def update(self, x: float) -> float:
        self.value = x if self.value is None else self.decay * self.value + (1 - self.decay) * x
        return self.value


def adaptive_keep(score: float, ema: float | None, rng: random.Random) -> int:
    """Φ: 1 (keep) when the discriminator's score of a pseudo label is not above its EMA score for
    fakes; otherwise a fair coin, 0 or 1. With no EMA yet the label is kept."""
    if ema is None or score <= ema:
        return 1
    return rng.randint(0, 1)


def _teacher_step(
    teacher: nn.Module,
    d: nn.Module,
    opt_t: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    gan: GANLoss,
    x: torch.Tensor,
    y: torch.Tensor,
    lambda_recon: float,
    ema: EMA,
) -> dict[str, torch.Tensor]:
    """One supervised pix2pix step of a teacher and its discriminator; updates the fake-score EMA."""
    fake = teacher(x)
    d.requires_grad_(True)
    pred_fake = d(torch.cat([x, fake.detach()], 1))
    loss_d = 0.5 * (gan(d(torch.cat([x, y], 1)), True) + gan(pred_fake, False))
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    ema.update(float(pred_fake.detach().mean()))
    d.requires_grad_(False)
    loss_gan = gan(d(torch.cat([x, fake], 1)), True, for_discriminator=False)
    loss_recon = F.l1_loss(fake, y)
    opt_t.zero_grad(set_to_none=True)
    (loss_gan + lambda_recon * loss_recon).backward()
    opt_t.step()
    d.requires_grad_(True)
    return {"d": loss_d, "gan": loss_gan, "recon": loss_recon}


def train_stage2(
    split: LabelSplit,
    supernet: DepthWidthSupernet,
    discriminator: nn.Module,
    searched: dict[str, Any],
    out: str | os.PathLike[str],
    cfg: UGCConfig,
    *,
    resume: bool = False,
    progress: Progress | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Distil the searched student into ``out`` (``best_student/``, ``last_student/``, ``teacher_wide/``,
    ``teacher_deep/``, ``checkpoints/``, ``metrics.jsonl``, ``summary.json``); returns the summary.

    ``searched`` is :func:`edgegan.ugc.search.search_all`'s record. The best student is chosen by PSNR
    on the labelled validation slice."""
    dev = torch.device(device)
    out = Path(out)
    set_seed(cfg.seed + 2)
    data = UGCData(split, cfg)
    genes = {"student": searched["student"]["best_config"], **{t: searched[t]["best_config"] for t in TEACHERS}}
    student = supernet.extract(genes["student"]).to(dev).train()
    teachers = {t: supernet.extract(genes[t]).to(dev).train() for t in TEACHERS}
    discs = {t: copy.deepcopy(discriminator).to(dev).train() for t in TEACHERS}
    gan = GANLoss(cfg.gan_mode)  # type: ignore[arg-type]
    omgd = {}
    perceptual_name = ""
    for t in TEACHERS:
        omgd[t], perceptual_name = make_omgd(cfg, discs[t], dev)
    opt = {"student": torch.optim.Adam(student.parameters(), lr=cfg.lr, betas=cfg.betas)}
    for t in TEACHERS:
        opt[t] = torch.optim.Adam(teachers[t].parameters(), lr=cfg.lr, betas=cfg.betas)
        opt[f"D_{t}"] = torch.optim.Adam(discs[t].parameters(), lr=cfg.lr, betas=cfg.betas)
    sched = {k: torch.optim.lr_scheduler.LambdaLR(o, cfg.lr_factor(2)) for k, o in opt.items()}
    objs: dict[str, Any] = {
        "modules": {
            "student": student,
            **{f"T_{t}": teachers[t] for t in TEACHERS},
            **{f"D_{t}": discs[t] for t in TEACHERS},
        },
        "optimizers": opt,
        "schedulers": sched,
    }
    use_u = cfg.use_unlabeled_stage2 and data.unlabeled is not None
    run = RunDir(
        out,
        {"ugc": cfg.to_dict(), "stage": 2, "genes": genes, "data": data.sizes(), "perceptual": perceptual_name},
        resume=resume,
    )
    ckpt = load_checkpoint(run, **objs, map_location=dev)
    state: dict[str, Any] = {"history": [], "best": None, "best_epoch": None, "ema": {t: None for t in TEACHERS}}
    if ckpt is not None and isinstance(ckpt.extra, dict):
        state.update(ckpt.extra)
    start = ckpt.step if ckpt else 0
    ema = {t: EMA(cfg.ema_decay, state["ema"][t]) for t in TEACHERS}
    rng = random.Random(f"filter-{cfg.seed}-{start}")
    loader = data.labeled_loader()
    u_batches = data.unlabeled_batches() if use_u else None
    val_pairs = data.val_pairs()
    total = cfg.total_epochs(2)
    step = start * len(loader)

    for epoch in range(start + 1, total + 1):
        sums: dict[str, float] = {}
        n_batches = len(loader)
        for i, batch in enumerate(loader):
            x_a, y_a = batch["A"].to(dev), batch["B"].to(dev)
            step += 1
            losses: dict[str, torch.Tensor] = {}
            # Teachers (and their discriminators): supervised, every teacher_every steps.
            if step % cfg.teacher_every == 0:
                for t in TEACHERS:
                    got = _teacher_step(
                        teachers[t], discs[t], opt[t], opt[f"D_{t}"], gan, x_a, y_a, cfg.lambda_recon, ema[t]
                    )
                    losses.update({f"{t}_{k}": v for k, v in got.items()})
            # Student: discriminator-free online distillation from both teachers, on A and (filtered) on U.
            for d in discs.values():
                d.requires_grad_(False)
            loss_s = torch.zeros((), device=dev)
            with torch.no_grad():
                t_a = {t: teachers[t](x_a) for t in TEACHERS}
            s_a = student(x_a)
            for t in TEACHERS:
                loss_t, _ = omgd[t](s_a, t_a[t], x_a)
                loss_s = loss_s + loss_t
                losses[f"od_a_{t}"] = loss_t
            if u_batches is not None:
                x_u = next(u_batches).to(dev)
                s_u = student(x_u)
                for t in TEACHERS:
                    with torch.no_grad():
                        t_u = teachers[t](x_u)
                        score = float(discs[t](torch.cat([x_u, t_u], 1)).mean())
                    keep = adaptive_keep(score, ema[t].value, rng)
                    losses[f"keep_{t}"] = torch.tensor(float(keep))
                    if keep:
                        loss_u, _ = omgd[t](s_u, t_u, x_u)
                        loss_s = loss_s + loss_u
                        losses[f"od_u_{t}"] = loss_u.detach()
            opt["student"].zero_grad(set_to_none=True)
            loss_s.backward()
            opt["student"].step()
            for d in discs.values():
                d.requires_grad_(True)
            losses["student"] = loss_s
            check_finite(step, checkpoint=run, **{k: v for k, v in losses.items() if not k.startswith("keep")})
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            if progress is not None:
                progress(epoch, i + 1, n_batches)
        lr = opt["student"].param_groups[0]["lr"]
        for s in sched.values():
            s.step()
        row: dict[str, Any] = {"epoch": epoch, "lr": lr, **{k: v / max(n_batches, 1) for k, v in sums.items()}}
        for name, model in (("student", student), *((f"teacher_{t}", teachers[t]) for t in TEACHERS)):
            scores = evaluate(model, val_pairs, dev)
            row[f"val_psnr_{name}"], row[f"val_ssim_{name}"] = scores["psnr"], scores["ssim"]
        score = row["val_psnr_student"]
        improved = score is None or state["best"] is None or score > state["best"]
        if improved:
            state["best"], state["best_epoch"] = score, epoch
            student.save(out / "best_student")
        student.save(out / "last_student")
        state["ema"] = {t: ema[t].value for t in TEACHERS}
        state["history"].append(row)
        run.log(epoch, **row)
        save_checkpoint(run, epoch, **objs, extra=state, keep=2)

    for t in TEACHERS:
        teachers[t].save(out / f"teacher_{t}")
    if not (out / "best_student").is_dir():
        student.save(out / "best_student")
    summary = {
        "run": str(out),
        "epochs": total,
        "resumed_from": start if ckpt is not None else None,
        "unlabeled_used": use_u,
        "perceptual": perceptual_name,
        "genes": genes,
        "best_epoch": state["best_epoch"],
        "best_val_psnr": state["best"],
        "best_student": str(out / "best_student"),
        "last_student": str(out / "last_student"),
        "history": state["history"],
    }
    atomic_write_json(out / "summary.json", summary)
    return summary


def export_student(model_dir: str | os.PathLike[str], out: str | os.PathLike[str], size: int = 256) -> dict[str, Any]:
    """Copy the chosen student as ``out/student/`` (``edgegan.load``-able) and ``out/student.onnx``
    (checked against PyTorch); returns costs at ``size`` and the ONNX parity."""
    import edgegan

    model = edgegan.load(model_dir)
    if not isinstance(model, DepthWidthGenerator):
        raise ConfigError(f"{model_dir} does not hold a DepthWidthGenerator")
    out = Path(out)
    model.eval()
    folder = model.save(out / "student")
    cost = profile_macs(model, model.example_input(size))
    exported = export_onnx(model, out / "student.onnx", size=size, check=True)
    return {
        "model_dir": str(folder),
        "onnx": exported.path,
        "size": size,
        "macs_gc": cost.macs_gc,
        "macs": cost.macs,
        "params": cost.params,
        "max_abs_diff": exported.max_abs_diff,
        "config": model.config.to_dict() if hasattr(model.config, "to_dict") else None,
    }
