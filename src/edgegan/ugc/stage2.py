"""UGC stage 2: adaptive online semi-supervised distillation (the paper's Algorithm 1, lines 12-25).

The student G* and the wide and deep teachers inherit the supernet's weights (see
:mod:`edgegan.ugc.search`), and ONE discriminator D inherits the stage-1 discriminator's. Every
``teacher_every`` steps both teachers take a pix2pix step on a labelled pair: D is updated once on both
teachers' Eq. 4 losses (Algorithm 1, line 20: "update G_T^W, G_T^D, D"), then each teacher on GAN + λ·L1
against the updated D. Every step the student, with no discriminator of its own, takes one step on
``Σ_T L_OD(T(x_A), G*(x_A)) + Σ_T Φ_T · L_OD(T(x_U), G*(x_U))``. The filter Φ_T (Eq. 8) compares D's score
of the pseudo label T(x_U) with D_EMA, the moving average of D's score of T's labelled fakes T(x_A); both
scores are taken at the same point, after the teacher update of that step (lines 22-23 follow line 20).

Eq. 8 as printed: Φ = 1 when D[T(x_U)] < D_EMA and RandInt({0, 1}) when D[T(x_U)] > D_EMA, so the pseudo
labels D finds *less* real than the teacher's usual fakes are always kept and the more real ones half the
time. That is the default (``pseudo_label_rule="paper"``); ``"inverse"`` swaps the sign, for the ablation.

Without VGG16 weights the OMGD feature terms use a frozen copy of the stage-1 discriminator (the D that keeps
training here is another copy). Each epoch draws its randomness from (seed, epoch), so a resumed run ends
bit-identical to an uninterrupted one. The student passed on is the last epoch's unless ``select_by`` names
a validation metric (never PSNR by default: it rewards blur).
"""

from __future__ import annotations

import copy
import os
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgegan.errors import ConfigError
from edgegan.fileio import atomic_write_json
from edgegan.losses import GANLoss, OMGDLoss
from edgegan.models import DepthWidthGenerator, DepthWidthSupernet
from edgegan.runs import RunDir, check_finite, load_checkpoint, save_checkpoint, set_seed
from edgegan.stages import save_student
from edgegan.ugc.common import Judge, UGCData, evaluate, make_omgd, seed_epoch
from edgegan.ugc.config import UGCConfig
from edgegan.ugc.data import LabelSplit
from edgegan.ugc.results import UGCStage2Result

__all__ = ["EMA", "adaptive_keep", "distill_step", "export_student", "teachers_step", "train_stage2"]

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


def adaptive_keep(score: float, ema: float | None, rng: random.Random, rule: str = "paper") -> int:
    """Φ of Eq. 8 for one pseudo label that D scores ``score`` (higher: more real), against ``ema``.

    ``"paper"``: 1 (keep) when the score is not above the EMA (D finds it no more real than the teacher's
    usual fakes), otherwise a fair coin, 0 or 1. ``"inverse"``: 1 when the score is not below the EMA,
    otherwise the coin. With no EMA yet the label is kept. (Eq. 8 leaves a tie open; a tie keeps.)"""
    if rule not in ("paper", "inverse"):
        raise ConfigError(f"pseudo_label_rule must be paper or inverse, got {rule!r}")
    if ema is None:
        return 1
    sure = score <= ema if rule == "paper" else score >= ema
    return 1 if sure else rng.randint(0, 1)


def teachers_step(
    teachers: Mapping[str, nn.Module],
    d: nn.Module,
    opt_t: Mapping[str, torch.optim.Optimizer],
    opt_d: torch.optim.Optimizer,
    gan: GANLoss,
    x: torch.Tensor,
    y: torch.Tensor,
    lambda_recon: float,
) -> dict[str, torch.Tensor]:
    """Algorithm 1, lines 18-20: one D step on the sum of both teachers' Eq. 4 losses, then each teacher's
    G step (GAN + λ·L1) against the updated D."""
    fakes = {t: g(x) for t, g in teachers.items()}
    d.requires_grad_(True)
    pred_real = d(torch.cat([x, y], 1))
    loss_d = {t: 0.5 * (gan(pred_real, True) + gan(d(torch.cat([x, f.detach()], 1)), False)) for t, f in fakes.items()}
    opt_d.zero_grad(set_to_none=True)
    torch.stack(list(loss_d.values())).sum().backward()
    opt_d.step()
    d.requires_grad_(False)  # the teachers' losses must not leave gradients in D
    losses: dict[str, torch.Tensor] = {}
    for t, fake in fakes.items():
        loss_gan = gan(d(torch.cat([x, fake], 1)), True, for_discriminator=False)
        loss_recon = F.l1_loss(fake, y)
        opt_t[t].zero_grad(set_to_none=True)
        (loss_gan + lambda_recon * loss_recon).backward()
        opt_t[t].step()
        losses.update({f"{t}_d": loss_d[t].detach(), f"{t}_gan": loss_gan, f"{t}_recon": loss_recon})
    d.requires_grad_(True)
    return losses


def distill_step(
    student: nn.Module,
    teachers: Mapping[str, nn.Module],
    d: nn.Module,
    omgd: OMGDLoss,
    opt_s: torch.optim.Optimizer,
    x_a: torch.Tensor,
    x_u: torch.Tensor | None,
    ema: Mapping[str, EMA],
    rng: random.Random,
    rule: str = "paper",
) -> dict[str, torch.Tensor]:
    """Algorithm 1, lines 22-24: the student's step on Eq. 7 and, with ``x_u``, the filtered Eq. 9.

    D's score of each teacher's labelled fakes (which feeds that teacher's EMA) and of its pseudo labels
    are taken here, with the same D and the same teachers, so Eq. 8 compares like with like. Returns the
    losses and, per teacher, ``fake_score_*`` (what went into the EMA), ``u_score_*`` and ``keep_*``."""
    losses: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        t_a = {t: g(x_a) for t, g in teachers.items()}
    s_a = student(x_a)
    total = torch.zeros((), device=x_a.device)
    for t in teachers:
        loss_t, _ = omgd(s_a, t_a[t], x_a)
        total = total + loss_t
        losses[f"od_a_{t}"] = loss_t
    if x_u is not None:
        with torch.no_grad():
            t_u = {t: g(x_u) for t, g in teachers.items()}
            fake = {t: float(d(torch.cat([x_a, t_a[t]], 1)).mean()) for t in teachers}
            score = {t: float(d(torch.cat([x_u, t_u[t]], 1)).mean()) for t in teachers}
        s_u = student(x_u)
        for t in teachers:
            ema[t].update(fake[t])
            keep = adaptive_keep(score[t], ema[t].value, rng, rule)
            losses[f"fake_score_{t}"] = torch.tensor(fake[t])
            losses[f"u_score_{t}"] = torch.tensor(score[t])
            losses[f"keep_{t}"] = torch.tensor(float(keep))
            if keep:
                loss_u, _ = omgd(s_u, t_u[t], x_u)
                total = total + loss_u
                losses[f"od_u_{t}"] = loss_u.detach()
    opt_s.zero_grad(set_to_none=True)
    total.backward()
    opt_s.step()
    losses["student"] = total
    return losses


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
) -> UGCStage2Result:
    """Distil the searched student into ``out`` (``last_student/``, ``best_student/`` when ``select_by`` is a
    metric, ``teacher_wide/``, ``teacher_deep/``, ``checkpoints/``, ``metrics.jsonl``, ``summary.json``);
    returns a :class:`~edgegan.ugc.results.UGCStage2Result` (which still reads as the summary dict returned
    before, and ``summary.json`` holds), whose ``student`` is the folder of the student passed on.

    ``searched`` is :func:`edgegan.ugc.search.search_all`'s record (only each role's ``best_config`` is
    read); ``discriminator`` is stage 1's."""
    dev = torch.device(device)
    out = Path(out)
    set_seed(cfg.seed + 2)
    data = UGCData(split, cfg)
    genes = {"student": searched["student"]["best_config"], **{t: searched[t]["best_config"] for t in TEACHERS}}
    student = supernet.extract(genes["student"]).to(dev).train()
    teachers = {t: supernet.extract(genes[t]).to(dev).train() for t in TEACHERS}
    d = copy.deepcopy(discriminator).to(dev).train()  # the caller's stage-1 discriminator stays as it is
    gan = GANLoss(cfg.gan_mode)  # type: ignore[arg-type]
    omgd, perceptual_name = make_omgd(
        cfg, discriminator, dev, source="the stage-1 discriminator (stage 2's D, which trains on, is another copy)"
    )
    opt = {"student": torch.optim.Adam(student.parameters(), lr=cfg.lr, betas=cfg.betas)}
    for t in TEACHERS:
        opt[t] = torch.optim.Adam(teachers[t].parameters(), lr=cfg.lr, betas=cfg.betas)
    opt["D"] = torch.optim.Adam(d.parameters(), lr=cfg.lr, betas=cfg.betas)
    sched = {k: torch.optim.lr_scheduler.LambdaLR(o, cfg.lr_factor(2)) for k, o in opt.items()}
    objs: dict[str, Any] = {
        "modules": {"student": student, **{f"T_{t}": teachers[t] for t in TEACHERS}, "D": d},
        "optimizers": opt,
        "schedulers": sched,
    }
    use_u = cfg.use_unlabeled_stage2 and data.unlabeled is not None
    val_pairs = data.val_pairs()
    judge = Judge(val_pairs, cfg.select_by, device=dev, weights=cfg.eval_weights) if cfg.select_by != "last" else None
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
    loader = data.labeled_loader()
    total = cfg.total_epochs(2)
    step = start * len(loader)

    for epoch in range(start + 1, total + 1):
        rng = seed_epoch(cfg.seed, 2, epoch)  # shuffling, crops, flips and the filter's coin of this epoch
        sums: dict[str, float] = {}
        n_batches = len(loader)
        u_batches = data.unlabeled_batches((epoch - 1) * n_batches, cfg.seed, stage=2) if use_u else None
        for i, batch in enumerate(loader):
            x_a, y_a = batch["A"].to(dev), batch["B"].to(dev)
            step += 1
            losses: dict[str, torch.Tensor] = {}
            if step % cfg.teacher_every == 0:  # Algorithm 1, lines 17-21
                opt_t = {t: opt[t] for t in TEACHERS}
                losses.update(teachers_step(teachers, d, opt_t, opt["D"], gan, x_a, y_a, cfg.lambda_recon))
            x_u = next(u_batches).to(dev) if u_batches is not None else None
            losses.update(
                distill_step(student, teachers, d, omgd, opt["student"], x_a, x_u, ema, rng, cfg.pseudo_label_rule)
            )
            check_finite(step, checkpoint=run, **losses)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            if progress is not None:
                progress(epoch, i + 1, n_batches)
        lr = opt["student"].param_groups[0]["lr"]
        for s in sched.values():
            s.step()
        row: dict[str, Any] = {"epoch": epoch, "lr": lr, **{k: v / max(n_batches, 1) for k, v in sums.items()}}
        scores: dict[str, Any] = judge(student) if judge is not None else evaluate(student, val_pairs, dev)
        row.update({f"val_{k}_student": v for k, v in scores.items()})
        for t in TEACHERS:
            row.update({f"val_{k}_teacher_{t}": v for k, v in evaluate(teachers[t], val_pairs, dev).items()})
        if judge is not None:
            figure = judge.rank(scores)
            if state["best"] is None or figure > state["best"]:
                state["best"], state["best_epoch"] = figure, epoch
                student.save(out / "best_student")
        student.save(out / "last_student")
        state["ema"] = {t: ema[t].value for t in TEACHERS}
        state["history"].append(row)
        run.log(epoch, **row)
        save_checkpoint(run, epoch, **objs, extra=state, keep=2)

    for t in TEACHERS:
        teachers[t].save(out / f"teacher_{t}")
    chosen = out / ("last_student" if judge is None else "best_student")
    result = UGCStage2Result(
        run=out,
        epochs=total,
        resumed_from=start if ckpt is not None else None,
        unlabeled_used=use_u,
        perceptual=perceptual_name,
        pseudo_label_rule=cfg.pseudo_label_rule,
        genes=genes,
        select_by=cfg.select_by,
        selected_epoch=total if judge is None else state["best_epoch"],
        student=chosen,
        last_student=out / "last_student",
        last=state["history"][-1] if state["history"] else None,
        history=state["history"],
    )
    atomic_write_json(out / "summary.json", result.to_dict())
    return result


def export_student(model_dir: str | os.PathLike[str], out: str | os.PathLike[str], size: int = 256) -> dict[str, Any]:
    """Copy the chosen student as ``out/student/`` (``edgegan.load``-able) and ``out/student.onnx``
    (checked against PyTorch); returns costs at ``size`` and the ONNX parity."""
    import edgegan

    model = edgegan.load(model_dir)
    if not isinstance(model, DepthWidthGenerator):
        raise ConfigError(f"{model_dir} does not hold a DepthWidthGenerator")
    config = model.config.to_dict() if hasattr(model.config, "to_dict") else None
    return save_student(model, out, size=size) | {"config": config}
