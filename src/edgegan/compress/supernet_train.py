"""GAN Compression step 2: once-for-all training of a :class:`~edgegan.models.MobileResnetSupernet`.

The supernet is distilled from the teacher with the same objective as :func:`edgegan.compress.distill.distill`
(L_cGAN + λ_recon · L1 + λ_distill · feature distillation), but every step first samples a channel
configuration ``c0..c7`` (each entry drawn from ``choices``) and trains that sub-network. With the
**sandwich rule** each step trains the largest config, the smallest config and one random config, their
generator losses summed (gradients accumulated) before one optimiser step; the discriminator step sees
the random config's output.

As in the paper (appendix 6.1) and the reference's ``train_supernet.sh``, the supernet starts from a
distilled student (``init``, restored like ``--restore_student_G_path``): every supernet tensor takes the
leading slice of the student's tensor of the same name (:func:`~edgegan.nn.dynamic.load_leading_slices`),
so with the student at the supernet's full width the largest sub-network *is* that student at step 0.
Without ``init`` the supernet starts from its own random weights.

The config sampler is a ``random.Random`` re-seeded from ``(seed, epoch)`` at the start of every epoch,
and the checkpoint restores torch's RNG (data order, initialisation), so a run resumed after epoch k
continues exactly as an uninterrupted one. Every epoch writes ``supernet/`` (an ``edgegan.load``-able
supernet, swapped in atomically), ``last_discriminator/``, a checkpoint with supernet, mappers,
discriminator and optimisers, and a ``metrics.jsonl`` line with mean losses and validation PSNR and SSIM
of the largest and smallest sub-networks (against the target, or against the teacher's output for
unpaired data). The supernet handed on is the last epoch's (``select_by="last"``, the reference's
``latest_net_G.pth``); another ``select_by`` also keeps ``best_supernet/``, the epoch with the best mean
of the largest and smallest sub-networks' scores.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from edgegan.compress.distill import (
    METRIC_WEIGHTS,
    SELECT_BY,
    DistillMapper,
    Scorer,
    better,
    check_metric,
    check_training_fields,
    distill_layers,
    distillation_loss,
    make_targets,
)
from edgegan.compress.recipe_parts import (
    Progress,
    check_generator,
    count_params,
    describe,
    json_safe,
    load_from_folders,
    make_discriminator,
    make_optimizers,
    split_train_val,
)
from edgegan.compress.results import SupernetResult
from edgegan.compress.supernet import extract_subnet, subnet_config
from edgegan.errors import ConfigError
from edgegan.fileio import atomic_write_json
from edgegan.losses import GANLoss
from edgegan.models.mobile_resnet import MobileResnetGenerator
from edgegan.models.mobile_supernet import MobileResnetSupernet
from edgegan.nn.dynamic import load_leading_slices
from edgegan.nn.layers import init_gan_weights
from edgegan.registry import load
from edgegan.runs import RunDir, check_finite, load_checkpoint, save_checkpoint, set_seed

__all__ = [
    "DEFAULT_CHOICES",
    "SupernetConfig",
    "SupernetResult",
    "build_supernet",
    "full_width_student",
    "init_supernet",
    "parse_choices",
    "train_supernet",
    "train_supernet_from_folders",
]

DEFAULT_CHOICES: tuple[int, ...] = (16, 24, 32, 40, 48, 56, 64)


def parse_choices(choices: str | Sequence[int] | None, ngf: int) -> tuple[int, ...]:
    """Sorted distinct width choices for a supernet of width ``ngf``.

    ``None``: :data:`DEFAULT_CHOICES` clipped to ``<= ngf`` (plus ``ngf`` itself, so the full width is
    always a choice). Given choices (a sequence, or ``"16,24,32"``) must be integers in ``[1, ngf]``.
    """
    if choices is None:
        return tuple(sorted({c for c in DEFAULT_CHOICES if c <= ngf} | {ngf}))
    if isinstance(choices, str):
        parts = [p.strip() for p in choices.replace("_", ",").split(",") if p.strip()]
        try:
            values: list[Any] = [int(p) for p in parts]
        except ValueError:
            raise ConfigError(f"choices must be integers like 16,24,32, got {choices!r}") from None
    else:
        try:
            values = list(choices)
        except TypeError:
            raise ConfigError(f"choices must be a sequence of integers, got {choices!r}") from None
    if not values:
        raise ConfigError("choices must not be empty")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"choices must be integers, got {v!r}")
        if not 1 <= v <= ngf:
            raise ConfigError(f"choice {v} is outside [1, ngf={ngf}]")
    return tuple(sorted(set(values)))


@dataclass
class SupernetConfig:
    """Settings of one once-for-all supernet run: :class:`~edgegan.compress.distill.DistillConfig`'s training
    fields (same defaults, same checks) plus the search space.

    ``ngf`` is the supernet's full width (every config entry is at most ``ngf``); ``choices`` the widths
    each of the 8 entries is drawn from (None: 16..64 in steps of 8, clipped to ``ngf``); ``sandwich``
    trains largest + smallest + one random config per step instead of one random config. ``n_blocks``
    (None: the teacher's) sizes the supernet. The supernet starts from :func:`train_supernet`'s ``init``.

    Until this class stood alone it inherited DistillConfig's ``channels`` and ``student_init`` without using
    them; :meth:`to_dict` never wrote them, so the configs saved in run folders are unchanged (same keys, same
    order) and old runs resume.
    """

    n_blocks: int | None = None
    lambda_recon: float = 100.0
    lambda_distill: float = 1.0
    gan_mode: str = "hinge"
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    epochs: int = 50
    decay_epochs: int = 50
    batch_size: int = 1
    load_size: int | None = 286
    crop_size: int = 256
    direction: str = "AtoB"
    paired: bool = True
    val_fraction: float = 0.1
    seed: int = 0
    ndf: int = 64
    d_layers: int = 3
    select_by: str = "last"
    ngf: int = 64
    choices: str | tuple[int, ...] | None = field(default=None)
    sandwich: bool = True

    def __post_init__(self) -> None:
        check_metric(self.select_by, "select_by", SELECT_BY)
        check_training_fields(self)
        if isinstance(self.ngf, bool) or not isinstance(self.ngf, int) or self.ngf < 1:
            raise ConfigError(f"ngf must be a positive integer, got {self.ngf!r}")
        self.choices = parse_choices(self.choices, self.ngf)
        if not isinstance(self.sandwich, bool):
            raise ConfigError(f"sandwich must be true or false, got {self.sandwich!r}")

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.decay_epochs

    def lr_factor(self, epoch: int) -> float:
        """Multiplier of ``lr`` during 0-based ``epoch``: DistillConfig's rule (constant, then a linear decay)."""
        return 1.0 - max(0, epoch + 1 - self.epochs) / float(self.decay_epochs + 1)

    @property
    def choice_list(self) -> tuple[int, ...]:
        assert isinstance(self.choices, tuple)
        return self.choices

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        d["choices"] = list(self.choice_list)
        return d


def _config_rng(seed: int, epoch: int) -> random.Random:
    """The channel-config sampler of 1-based ``epoch``: a pure function of (seed, epoch), so resume is exact."""
    return random.Random(f"edgegan-supernet:{seed}:{epoch}")


def build_supernet(teacher: nn.Module, cfg: SupernetConfig) -> MobileResnetSupernet:
    """The ``MobileResnetSupernet`` :func:`train_supernet` trains for ``teacher``: width ``cfg.ngf``, the
    teacher's channels in and out, norm, padding, ``residual`` and ``input_skip``, and ``cfg.n_blocks`` (None:
    the teacher's) blocks."""
    t_cfg = getattr(teacher, "config", None)
    n_blocks = cfg.n_blocks if cfg.n_blocks is not None else len(getattr(teacher, "blocks", ()))
    return MobileResnetSupernet(
        input_nc=int(getattr(t_cfg, "input_nc", 3)),
        output_nc=int(getattr(t_cfg, "output_nc", 3)),
        ngf=cfg.ngf,
        n_blocks=n_blocks,
        norm=getattr(t_cfg, "norm", "instance"),
        padding_type=getattr(t_cfg, "padding_type", "reflect"),
        residual=bool(getattr(t_cfg, "residual", False)),
        input_skip=bool(getattr(t_cfg, "input_skip", False)),
    )


def full_width_student(teacher: nn.Module, cfg: SupernetConfig) -> MobileResnetGenerator:
    """A fresh ``MobileResnetGenerator`` shaped like the largest sub-network of :func:`build_supernet`: the
    student to distil first, which then initialises the supernet (the reference: student_ngf = supernet ngf)."""
    template = build_supernet(teacher, cfg)
    return MobileResnetGenerator(subnet_config(template, template.largest_config()))


@torch.no_grad()
def init_supernet(supernet: MobileResnetSupernet, student: nn.Module) -> None:
    """Load ``student``'s weights into ``supernet``: each supernet tensor takes the leading slice of the
    same-named student tensor. ConfigError when the two differ in layout or the student is narrower."""
    s_cfg, n_cfg = getattr(student, "config", None), supernet.config
    for key in ("input_nc", "output_nc", "n_blocks", "norm", "padding_type", "residual", "input_skip"):
        mine, theirs = getattr(n_cfg, key, False), getattr(s_cfg, key, False)
        if mine != theirs:
            raise ConfigError(f"the student that initialises the supernet has {key}={theirs!r}, the supernet {mine!r}")
    try:
        load_leading_slices(supernet, student)
    except ValueError as exc:
        raise ConfigError(f"cannot initialise the supernet from the student: {exc}") from None


def train_supernet(
    teacher: nn.Module,
    data: Dataset[Any],
    out: str | os.PathLike[str],
    cfg: SupernetConfig,
    *,
    discriminator: nn.Module | None = None,
    init: nn.Module | None = None,
    resume: bool = False,
    progress: Progress | None = None,
    device: str | torch.device = "cpu",
) -> SupernetResult:
    """Train a ``MobileResnetSupernet(ngf=cfg.ngf)`` once-for-all from ``teacher``; return the run summary
    (a :class:`~edgegan.compress.results.SupernetResult`, which still reads as the dict returned before).

    ``data`` yields ``"A"`` (input) and, when ``cfg.paired``, ``"B"`` (target) items; unpaired targets
    are the teacher's outputs. Writes into run folder ``out``: ``config.yaml``, ``metrics.jsonl`` (one
    line per epoch: ``lr``, mean ``g_gan``/``recon``/``distill`` per trained config, ``d``, and
    ``val_{psnr,ssim}_{largest,smallest}``), ``checkpoints/``, ``supernet/`` (the last epoch's),
    ``best_supernet/`` (with a ``select_by`` other than ``last``), ``last_discriminator/`` and
    ``summary.json`` (``supernet`` is the one ``select_by`` picks). ``init`` (a distilled student,
    :func:`full_width_student`) gives the starting weights (:func:`init_supernet`). The teacher is
    frozen; ``discriminator`` (the distilled student's, or the teacher's) is copied, never modified.
    """
    if not isinstance(cfg, SupernetConfig):
        raise ConfigError(f"cfg must be a SupernetConfig, got {type(cfg).__name__}")
    check_generator(teacher, "teacher")
    check_metric(cfg.select_by, "select_by", SELECT_BY)
    n_items = len(data)  # type: ignore[arg-type]
    if n_items < 1:
        raise ConfigError("the data set is empty")
    dev = torch.device(device)
    out = Path(out)
    set_seed(cfg.seed)

    # ---- networks
    teacher = teacher.to(dev).eval()
    t_cfg = getattr(teacher, "config", None)
    input_nc = int(getattr(t_cfg, "input_nc", 3))
    output_nc = int(getattr(t_cfg, "output_nc", 3))
    # Without init the supernet keeps its dynamic layers' own initialisation: init_gan_weights (N(0, 0.02))
    # only knows the static torch layers.
    supernet = build_supernet(teacher, cfg)
    if init is not None:
        init_supernet(supernet, init)
    supernet = supernet.to(dev).train()
    choices = list(cfg.choice_list)
    largest = supernet.largest_config()
    smallest = supernet.smallest_config(choices)
    names = distill_layers(teacher, supernet)
    mapper = init_gan_weights(DistillMapper.for_models(teacher, supernet)).to(dev)
    d, conditional = make_discriminator(discriminator, input_nc, output_nc, cfg.ndf, cfg.d_layers, dev)

    def d_input(a: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return torch.cat([a, image], 1) if conditional else image

    gan = GANLoss(cfg.gan_mode)  # type: ignore[arg-type]
    opt_g, opt_d, sched_g, sched_d = make_optimizers([supernet, mapper], d, cfg)
    objs: dict[str, Any] = {
        "modules": {"supernet": supernet, "mapper": mapper, "D": d},
        "optimizers": {"G": opt_g, "D": opt_d},
        "schedulers": {"G": sched_g, "D": sched_d},
    }

    # ---- data
    train_set, val_set = split_train_val(data, n_items, cfg)
    loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, num_workers=0)
    # select_by ranks epochs by the mean of the largest and smallest sub-networks' scores (None: the last epoch).
    selection = None if cfg.select_by == "last" else cfg.select_by
    scorer = Scorer(selection or "ssim", dev)
    if selection in ("fid", "kid") and (val_set is None or len(val_set) < 2):
        raise ConfigError(f"select_by {selection} needs at least 2 validation items; raise val_fraction")

    # ---- run folder, resume
    run_config = {
        "supernet_train": cfg.to_dict(),
        "teacher": describe(teacher),
        "supernet": {**describe(supernet), "init": describe(init) if init is not None else None},
        "discriminator": {**describe(d), "inherited": discriminator is not None},
        "data": {"items": n_items, "train": len(train_set), "val": len(val_set) if val_set is not None else 0},
    }
    run = RunDir(out, run_config, resume=resume)
    ckpt = load_checkpoint(run, **objs, map_location=dev)
    state: dict[str, Any] = {"history": [], "best": None, "best_epoch": None}
    if ckpt is not None and isinstance(ckpt.extra, dict):
        state.update(ckpt.extra)
    start = ckpt.step if ckpt else 0

    def g_loss(
        a: torch.Tensor, target: torch.Tensor, t_feats: dict[str, torch.Tensor], s_out: torch.Tensor, s_feats: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        loss_gan = gan(d(d_input(a, s_out)), True, for_discriminator=False)
        loss_recon = F.l1_loss(s_out, target)
        loss_distill = distillation_loss(t_feats, s_feats, mapper, names)
        total = loss_gan + cfg.lambda_recon * loss_recon + cfg.lambda_distill * loss_distill
        return total, loss_gan, loss_recon, loss_distill

    for epoch in range(start + 1, cfg.total_epochs + 1):
        rng = _config_rng(cfg.seed, epoch)
        sums = {"g": 0.0, "g_gan": 0.0, "recon": 0.0, "distill": 0.0, "d": 0.0}
        n_batches = len(loader)
        for i, batch in enumerate(loader):
            a = batch["A"].to(dev)
            with torch.no_grad():
                t_out, t_feats = teacher(a, return_features=True)
            target = make_targets(batch, t_out, cfg.paired)
            sampled = supernet.sample_config(rng, choices)

            # The random config's output feeds both the D step and its own G loss.
            supernet.set_config(sampled)
            s_out, s_feats = supernet(a, return_features=True)
            d.requires_grad_(True)
            loss_d = 0.5 * (gan(d(d_input(a, target)), True) + gan(d(d_input(a, s_out.detach())), False))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()

            # G step: gradients of every trained config accumulate (= one backward of their summed losses).
            d.requires_grad_(False)
            opt_g.zero_grad(set_to_none=True)
            terms = g_loss(a, target, t_feats, s_out, s_feats)
            terms[0].backward()
            trained = [terms]
            if cfg.sandwich:
                for config in (largest, smallest):
                    supernet.set_config(config)
                    out_c, feats_c = supernet(a, return_features=True)
                    terms_c = g_loss(a, target, t_feats, out_c, feats_c)
                    terms_c[0].backward()
                    trained.append(terms_c)
            opt_g.step()
            supernet.set_config(largest)

            k = len(trained)
            means = {
                key: sum(float(t[j].detach()) for t in trained) / k
                for j, key in enumerate(("g", "g_gan", "recon", "distill"))
            }
            step = (epoch - 1) * n_batches + i + 1
            check_finite(step, checkpoint=run, d=loss_d, **means)
            for key, value in means.items():
                sums[key] += value
            sums["d"] += float(loss_d.detach())
            if progress is not None:
                progress(epoch, i + 1, n_batches)
        lr = opt_g.param_groups[0]["lr"]
        sched_g.step()
        sched_d.step()

        val = {
            **_validate(teacher, supernet, largest, "largest", val_set, cfg, dev, scorer),
            **_validate(teacher, supernet, smallest, "smallest", val_set, cfg, dev, scorer),
        }
        row = {"epoch": epoch, "lr": lr, **{k: v / max(n_batches, 1) for k, v in sums.items()}, **val}
        run.log(epoch, **row)
        state["history"].append(row)
        pair = [val.get(f"val_{selection}_{size}") for size in ("largest", "smallest")] if selection else [None]
        score = None if None in pair else sum(pair) / len(pair)  # type: ignore[arg-type]
        improved = score is None or better(cfg.select_by, score, state["best"])
        if improved:
            state["best"], state["best_epoch"] = score, epoch
        supernet.set_config(largest)
        supernet.save(out / "supernet")
        if improved and selection is not None:
            supernet.save(out / "best_supernet")
        d.save(out / "last_discriminator")  # the fine-tune's critic starts from it (reference: latest_net_D)
        save_checkpoint(run, epoch, **objs, extra=json_safe(state), keep=2)

    supernet.set_config(largest)
    if not (out / "supernet").is_dir():  # resumed a finished run whose folder was removed
        supernet.save(out / "supernet")
    if not (out / "last_discriminator").is_dir():
        d.save(out / "last_discriminator")
    chosen = out / ("supernet" if selection is None else "best_supernet")
    if not chosen.is_dir():
        supernet.save(chosen)
    result = SupernetResult(
        run=out,
        epochs=cfg.total_epochs,
        resumed_from=start if ckpt is not None else None,
        paired=cfg.paired,
        val_reference="target" if cfg.paired else "teacher",
        select_by=cfg.select_by,
        best_epoch=state["best_epoch"],
        best_score=state["best"],
        init=describe(init) if init is not None else None,
        sandwich=cfg.sandwich,
        ngf=cfg.ngf,
        choices=choices,
        largest_config=list(largest),
        smallest_config=list(smallest),
        supernet=chosen,
        last_supernet=out / "supernet",
        last_discriminator=out / "last_discriminator",
        layers=names,
        teacher_params=count_params(teacher),
        largest_params=count_params(extract_subnet(supernet, largest)),
        smallest_params=count_params(extract_subnet(supernet, smallest)),
        history=state["history"],
    )
    atomic_write_json(out / "summary.json", json_safe(result.to_dict()))
    return result


@torch.no_grad()
def _validate(
    teacher: nn.Module,
    supernet: MobileResnetSupernet,
    config: Sequence[int],
    size: str,
    val_set: Dataset[Any] | None,
    cfg: SupernetConfig,
    dev: torch.device,
    scorer: Scorer,
) -> dict[str, float | None]:
    """``val_<metric>_<size>``: PSNR, SSIM (and ``select_by``'s LPIPS/FID/KID) of the sub-network at
    ``config`` against the target (paired) or the teacher's output."""
    names = ["psnr", "ssim"] + ([cfg.select_by] if cfg.select_by in METRIC_WEIGHTS else [])
    if val_set is None:
        return {f"val_{n}_{size}": None for n in names}
    was_training = supernet.training
    active = supernet.active_config
    supernet.set_config(config)
    supernet.eval()
    outs, refs = [], []
    try:
        for batch in DataLoader(val_set, batch_size=cfg.batch_size, shuffle=False, num_workers=0):
            a = batch["A"].to(dev)
            refs.append(make_targets(batch, teacher(a), cfg.paired))
            outs.append(supernet(a))
    finally:
        supernet.train(was_training)
        supernet.set_config(active)
    scores = scorer(torch.cat(outs), torch.cat(refs))
    return {f"val_{n}_{size}": scores[n] for n in names}


def train_supernet_from_folders(
    teacher_dir: str | os.PathLike[str],
    a_dir: str | os.PathLike[str],
    b_dir: str | os.PathLike[str] | None,
    out: str | os.PathLike[str],
    cfg: SupernetConfig,
    *,
    discriminator_dir: str | os.PathLike[str] | None = None,
    init_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    progress: Progress | None = None,
    device: str | torch.device = "cpu",
) -> SupernetResult:
    """:func:`train_supernet` with the teacher (and optionally a discriminator and the student that
    initialises the supernet, ``init_dir``) loaded from model folders, and the images read by
    :func:`~edgegan.compress.recipe_parts.load_from_folders` (``b_dir`` may be None for unpaired data).
    """
    teacher, discriminator, data = load_from_folders(teacher_dir, a_dir, b_dir, cfg, discriminator_dir, task="training")
    init = load(init_dir) if init_dir is not None else None
    if init is not None and not isinstance(init, MobileResnetGenerator | MobileResnetSupernet):
        raise ConfigError(f"{init_dir} holds a {init.arch}; the supernet starts from a mobile_resnet_generator")
    return train_supernet(
        teacher,
        data,
        out,
        cfg,
        discriminator=discriminator,
        init=init,
        resume=resume,
        progress=progress,
        device=device,
    )
