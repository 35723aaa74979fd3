"""E2GAN recipes: the multi-concept base model, per-concept fine-tuning (LoRA on the crucial layers or
the full model), the LoRA rank search, the layer study, and applying an adapter.

Every training run is the same readable pix2pix-style loop with text conditioning (:func:`train_loop`):
a D step on (input, editor output) vs (input, generated), then a G step on GAN + λ·L1 to the editor's
output. Which parameters train is decided before the loop (all, or only the LoRA matrices).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

import edgegan
from edgegan.data.images import load_image
from edgegan.e2gan.image_encoder import ImageEncoder
from edgegan.e2gan.pairs import concept_slug, load_pairs_index
from edgegan.e2gan.select import (
    feature_spread,
    select_concepts,
    select_kmeans,
    select_random,
    standardise,
    stem_features,
)
from edgegan.e2gan.text import TextEncoder
from edgegan.errors import ConfigError
from edgegan.fileio import atomic_path, atomic_write_json
from edgegan.losses import GANLoss, pixel_l1_loss
from edgegan.metrics.reference import psnr
from edgegan.metrics.ssim import ssim
from edgegan.models import E2GANGenerator, PatchDiscriminator
from edgegan.nn.lora import (
    add_lora,
    lora_layers,
    lora_rank_cap,
    save_adapter,
    set_lora_trainable,
)
from edgegan.runs import RunDir, check_finite, load_checkpoint, save_checkpoint, set_seed

__all__ = [
    "E2GANTrainConfig",
    "PairSet",
    "apply_adapter",
    "base_discriminator",
    "build_discriminator",
    "choose_base_concepts",
    "crucial_layer_names",
    "finetune",
    "layer_study",
    "load_pairs",
    "pretrain",
    "rank_search",
    "train_loop",
    "upgrade_run_config",
]

Progress = Callable[[int, int, int], None]
# The layers LoRA adapts by default: the sampling layers (one of the paper's crucial parts) and the full-resolution
# convs ("io": first, last and the detail path's). Measured on `cool` (bench/e2gan.py's cpu preset, rank 3, 12
# epochs): without "io" LoRA reached 35.2 dB against full fine-tuning's 38.0; with it 37.8 dB.
# Departure from the paper, whose other crucial part is the transformer block: here the layer study (full
# fine-tuning on `cool`, one part frozen) lost nothing with it frozen (47.06 dB, nothing frozen 46.87, io frozen
# 37.14), and its rank-1 adapters took 10.4 k of the 2 % budget (39.3 k), which the detail path uses better
# (rank_search fills the budget with it: at rank 1 elsewhere, 22 instead of 16). LoRA from the bench's base,
# [15, 15] epochs, validation PSNR (full fine-tuning: cool 52.23, seed 1 51.90; pencil 22.24; cartoon 18.20): with
# the transformer cool 50.68, seed 1 50.59, pencil 21.44, cartoon 17.81; without it 51.64, 51.22, 21.68, 17.92.
# Without it and the detail path left at 16: cool 50.05. The price: cartoon's speckle (invented_colour) at seed 1
# 0.76 % of the validation pixels against 0.21 % (seed 0: 0.22 % against 0.18 %).
CRUCIAL_PARTS = ("sampling", "io")
# Adapters on the detail path's convs get this many times the rank of the others: the path is 32 wide and must
# learn what the base never drew (ink, strokes). Measured on bench/e2gan.py's cpu preset, [6, 6] epochs, PSNR on
# the validation pairs (never the evaluation photos): with bias shifts, `pencil` at rank 2 elsewhere and 8 on the
# path 16.90 dB (41.9 k parameters), at rank 1 elsewhere and 16 on the path 17.15 (39.2 k); `cool` 42.0 at rank 2
# and 8 without shifts, 43.6 at rank 1 and 16 with them. Within a 2 % budget the path's rank pays more than the
# other layers'; so under a budget, rank_search gives the path all the budget the others leave instead.
DETAIL_RANK_SCALE = 16
_DETAIL_LAYERS = ("detail.", "detail_out.")
BEST_WEIGHTS = "best_generator.safetensors"


@dataclass
class E2GANTrainConfig:
    """Settings shared by every E2GAN training run.

    The schedule is pix2pix's: ``epochs`` at the learning rate, then ``epochs_decay`` with it falling linearly
    to zero. LoRA adapters train at ``lora_lr``, those on the detail path at ``detail_lora_lr`` (full fine-tuning
    and pre-training at ``lr``, the detail path at ``detail_lr``). The model passed on is the last epoch's
    (``select_by="last"``, as pix2pix); ``psnr``/``ssim`` keep the best epoch on the validation slice instead."""

    ngf: int = 64
    n_blocks: int = 3
    tb_after: int = 2
    heads: int = 8
    size: int = 256
    batch_size: int = 1
    lr: float = 2e-4
    # measured on bench/e2gan.py's cpu preset (rank 2 on the crucial layers, 12 epochs): at 1e-3 LoRA reached
    # 37.0 dB on `cool` and 11.8 on `pencil`, at 3e-3 38.9 and 12.0 (full fine-tuning at 2e-4: 38.0 and 12.3)
    lora_lr: float = 3e-3
    # LoRA adapters also learn a shift of each adapted layer's bias (nn.lora, bias=True): on `pencil`
    # (bench/e2gan.py cpu preset, rank 2 and 8 on the detail path, [6, 6] epochs) validation PSNR 16.34 -> 16.90 dB
    # for 3.4 k parameters; runs saved before this option trained without
    lora_bias: bool = True
    # The generator's full-resolution detail path (E2GANGeneratorConfig.detail) trains at its own rate in full
    # fine-tuning and pre-training. Measured on bench/e2gan.py's cpu preset pairs, `cartoon` trained from
    # scratch for 12 epochs, PSNR on the validation pairs: no detail path 16.8 dB; the path at the model's rate
    # (2e-4) 16.8; at 1e-3 18.0 (16 wide: 17.4); at 3e-3 17.9 (16 wide: 17.7); 7 convs instead of 5 +0.2 for
    # 2 more full-resolution convs. The evaluation photos agreed (15.5 / 15.4 / 17.2 / 16.8 dB).
    detail_lr: float = 1e-3
    # LoRA adapters on the detail path (rank DETAIL_RANK_SCALE times the others') learn at their own rate. Measured
    # on bench/e2gan.py's cpu preset, LoRA from the base with the searched ranks, [15, 15] epochs, validation
    # pairs, PSNR / invented_colour (metrics.reference; full fine-tuning: cartoon 18.20 / 0.18 %, seed 1 17.88 /
    # 0.22 %): at lora_lr (3e-3) cartoon's outputs had isolated green pixels at the ink edges, 17.65 / 1.17 %
    # (seed 1 17.46 / 1.37 %); at 2.5e-3 17.62 / 1.21 %; at 2e-3 17.81 / 0.18 % (seed 1 17.24 / 0.21 %); at 1e-3
    # 17.56 / 0.46 %. The price is speed: pencil 22.36 -> 21.44 dB (seed 1 22.24 -> 21.27), cool 51.62 -> 50.68
    # at 2e-3, 47.92 at 1e-3. A faster discriminator (1e-3) with adapters at 3e-3 only halved the speckle (0.78 %).
    detail_lora_lr: float = 2e-3
    betas: tuple[float, float] = (0.5, 0.999)
    epochs: int = 10
    epochs_decay: int = 10
    lambda_recon: float = 100.0  # the L1 term's weight (pix2pix's lambda_L1; runs saved before say lambda_l1)
    # "l1": pix2pix's per-channel L1; "pixel_l1": L1 on each pixel's RGB error vector (losses.pixel_l1_loss).
    # Measured as gan_mode below (with hinge): pixel_l1 cut cartoon's invented-colour pixels 0.73 -> 0.49 % (and
    # changed their colour to green) for -0.19 dB of validation PSNR; cool 48.94 -> 49.30. Not the default.
    recon: str = "l1"
    # pix2pix's loss (the paper trains with "the conventional adversarial loss" of pix2pix). Measured on
    # bench/e2gan.py's cpu preset, LoRA from the (hinge-trained) base, [10, 10] epochs, validation pairs: hinge
    # left isolated magenta or green pixels at cartoon's ink edges (output more saturated than any editor pixel
    # within 1 px by > 0.5 in [-1, 1]: 0.73 % of pixels), vanilla 0.14 %; validation PSNR cartoon 17.82 -> 17.65, cool
    # 48.94 -> 49.42. Hinge's generator gradient never fades as D is fooled; BCE's does.
    gan_mode: str = "vanilla"
    ndf: int = 64
    d_layers: int = 3
    val_fraction: float = 0.1
    select_by: str = "last"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("ngf", "size", "batch_size", "epochs", "ndf", "d_layers", "heads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if isinstance(self.epochs_decay, bool) or not isinstance(self.epochs_decay, int) or self.epochs_decay < 0:
            raise ConfigError(f"epochs_decay must be a non-negative integer, got {self.epochs_decay!r}")
        if not isinstance(self.lora_bias, bool):
            raise ConfigError(f"lora_bias must be true or false, got {self.lora_bias!r}")
        for name in ("lr", "lora_lr", "detail_lr", "detail_lora_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.size % 8:
            raise ConfigError(f"size must be a multiple of 8 (three stride-2 stages), got {self.size}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.gan_mode not in ("hinge", "lsgan", "vanilla"):
            raise ConfigError(f"gan_mode must be hinge, lsgan or vanilla, got {self.gan_mode!r}")
        if self.recon not in ("l1", "pixel_l1"):
            raise ConfigError(f"recon must be l1 or pixel_l1, got {self.recon!r}")
        if self.select_by not in ("last", "psnr", "ssim"):
            raise ConfigError(f"select_by must be last, psnr or ssim, got {self.select_by!r}")
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.epochs_decay

    def lr_factor(self, epoch: int) -> float:
        """pix2pix's linear rule: 1 for the first ``epochs`` epochs, then down to 1/(epochs_decay+1) at the end
        (``epoch`` counts from 0)."""
        return 1.0 - max(0, epoch + 1 - self.epochs) / (self.epochs_decay + 1)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d


# ------------------------------------------------------------------------------------------ data


@dataclass
class PairSet:
    """In-memory pairs of one or more concepts: inputs, editor outputs (``[M, 3, S, S]`` in [-1, 1]),
    the concept of each pair, its prompt and its file stem."""

    inputs: torch.Tensor
    targets: torch.Tensor
    concepts: list[str]
    prompts: list[str]
    stems: list[str]

    def __len__(self) -> int:
        return len(self.concepts)

    def take(self, idx: Sequence[int]) -> PairSet:
        i = list(idx)
        return PairSet(
            self.inputs[i],
            self.targets[i],
            [self.concepts[k] for k in i],
            [self.prompts[k] for k in i],
            [self.stems[k] for k in i],
        )

    def split(self, fraction: float, seed: int) -> tuple[PairSet, PairSet | None]:
        """(train, validation) by a fixed seed; validation is None when it would be empty."""
        from edgegan.data.datasets import split_validation

        if len(self) < 2 or fraction <= 0:
            return self, None
        train, val = split_validation(len(self), fraction, seed)
        return self.take(train), (self.take(val) if val else None)


def load_pairs(folder: str | os.PathLike[str], concepts: Sequence[str], size: int) -> PairSet:
    """The pairs of ``concepts`` (names or slugs) made by :func:`edgegan.e2gan.pairs.make_pairs`."""
    index = load_pairs_index(folder)
    known = index["concepts"]
    inputs, targets, names, prompts, stems = [], [], [], [], []
    for concept in concepts:
        slug = concept if concept in known else concept_slug(concept)
        if slug not in known:
            raise ConfigError(f"concept {concept!r} is not in {folder}; it has {', '.join(sorted(known))}")
        b_dir = Path(folder) / slug / "B"
        files = sorted(b_dir.glob("*.png"))
        if not files:
            raise ConfigError(f"concept {concept!r} has no pairs in {b_dir}")
        for b in files:
            a = Path(folder) / slug / "A" / b.name
            inputs.append(load_image(a, size=(size, size)))
            targets.append(load_image(b, size=(size, size)))
            names.append(slug)
            prompts.append(known[slug]["prompt"])
            stems.append(b.stem)
    return PairSet(torch.stack(inputs), torch.stack(targets), names, prompts, stems)


# ------------------------------------------------------------------------------------------ models


def build_generator(cfg: E2GANTrainConfig, text_dim: int) -> E2GANGenerator:
    return E2GANGenerator(ngf=cfg.ngf, n_blocks=cfg.n_blocks, tb_after=cfg.tb_after, text_dim=text_dim, heads=cfg.heads)


def lora_ranks(names: Sequence[str], rank: int, caps: dict[str, int] | None = None) -> dict[str, int]:
    """LoRA ranks for ``names`` at ``rank``: the detail path's convs get ``DETAIL_RANK_SCALE`` times it; each
    capped by ``caps`` (a layer's weight rank) where given."""
    out = {n: rank * (DETAIL_RANK_SCALE if n.startswith(_DETAIL_LAYERS) else 1) for n in names}
    return {n: min(r, caps[n]) for n, r in out.items()} if caps is not None else out


def fill_detail_ranks(
    base: nn.Module, ranks: dict[str, int], caps: dict[str, int], budget: float, bias: bool
) -> dict[str, int] | None:
    """``ranks`` with the detail path's convs raised to the largest rank (each capped by ``caps``) that keeps the
    adapter within ``budget`` parameters, and never below the other layers' rank; None if that does not fit."""
    detail = [n for n in ranks if n.startswith(_DETAIL_LAYERS)]
    floor = max((r for n, r in ranks.items() if n not in detail), default=1)

    def at(d: int) -> dict[str, int]:
        return {**ranks, **{n: min(d, caps[n]) for n in detail}}

    def fits(d: int) -> bool:
        return _adapter_params(base, list(ranks), at(d), None, bias) <= budget

    if not fits(floor):
        return None
    lo, hi = floor, max((caps[n] for n in detail), default=floor)
    while lo < hi:  # the largest d that fits (the count grows with d)
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return at(lo)


def crucial_layer_names(model: E2GANGenerator, parts: Sequence[str] = CRUCIAL_PARTS) -> list[str]:
    """Layer names of the given parts (by default :data:`CRUCIAL_PARTS`)."""
    groups = model.crucial_layers()
    unknown = [p for p in parts if p not in groups]
    if unknown:
        raise ConfigError(f"unknown layer group(s) {unknown}; choose from {', '.join(groups)}")
    return [n for p in parts for n in groups[p]]


# ------------------------------------------------------------------------------------------ the loop


@torch.no_grad()
def evaluate(model: nn.Module, data: PairSet | None, encoder: TextEncoder, batch: int = 8) -> dict[str, float | None]:
    """PSNR/SSIM of the generator's outputs against the editor's outputs (images in [0, 1])."""
    if data is None or len(data) == 0:
        return {"psnr": None, "ssim": None}
    was = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    ps, ss = [], []
    for i in range(0, len(data), batch):
        x = data.inputs[i : i + batch].to(device)
        text, mask = _encode(encoder, data.prompts[i : i + batch], device)
        out = ((model(x, text, mask) + 1) / 2).clamp(0, 1)
        ref = ((data.targets[i : i + batch].to(device) + 1) / 2).clamp(0, 1)
        ps.append(psnr(out, ref).double().clamp(max=100.0).cpu())
        ss.append(ssim(out, ref).double().cpu())
    model.train(was)
    return {"psnr": float(torch.cat(ps).mean()), "ssim": float(torch.cat(ss).mean())}


def _encode(encoder: TextEncoder, prompts: list[str], device: torch.device | str) -> tuple[torch.Tensor, Any]:
    text, mask = encoder.encode(prompts)
    return text.to(device), (mask.to(device) if mask is not None else None)


def _detail_params(module: nn.Module) -> list[nn.Parameter]:
    """The detail path's parameters of an E2GAN generator, also inside a wrapper (none for other models)."""
    return [p for m in module.modules() if isinstance(m, E2GANGenerator) for p in m.detail_parameters()]


def _lora_params(module: nn.Module) -> set[int]:
    return {id(p) for layer in lora_layers(module).values() for p in layer.parameters() if p.requires_grad}


def _param_groups(generator: nn.Module, params: list[nn.Parameter], cfg: E2GANTrainConfig) -> list[dict[str, Any]]:
    """The generator's optimiser groups. LoRA matrices and the detail path learn at their own rates (measured in
    bench/e2gan.py: the full model's rate is too slow for both), and so do the adapters on the detail path."""
    lora_ids = _lora_params(generator)
    detail_ids = {id(p) for p in _detail_params(generator)}  # with the adapters inside the path
    groups = [
        {"params": [p for p in params if id(p) not in lora_ids | detail_ids], "lr": cfg.lr},
        {"params": [p for p in params if id(p) in lora_ids - detail_ids], "lr": cfg.lora_lr},
        {"params": [p for p in params if id(p) in detail_ids - lora_ids], "lr": cfg.detail_lr},
        {"params": [p for p in params if id(p) in lora_ids & detail_ids], "lr": cfg.detail_lora_lr},
    ]
    return [g for g in groups if g["params"]]


def train_loop(
    generator: nn.Module,
    discriminator: nn.Module,
    train: PairSet,
    val: PairSet | None,
    encoder: TextEncoder,
    out: str | os.PathLike[str],
    cfg: E2GANTrainConfig,
    *,
    run_info: dict[str, Any] | None = None,
    resume: bool = False,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train whichever generator parameters require grad (and the whole discriminator) for
    ``cfg.total_epochs`` on pix2pix's schedule (constant, then linear decay).

    Writes ``config.yaml``, ``metrics.jsonl`` and ``checkpoints/`` into ``out``. The generator passed on is the
    last epoch's (``cfg.select_by="last"``) or the best on the validation slice by PSNR or SSIM; a resumed run
    ends on the same weights and numbers as an uninterrupted one (each epoch's batches come from a generator
    seeded by the epoch). Returns ``{"epoch", "val_psnr", "val_ssim", "best_psnr_epoch", "history",
    "train_seconds", "trainable"}``."""
    out = Path(out)
    device = torch.device(device)
    set_seed(cfg.seed)
    generator.to(device)
    discriminator.to(device)
    params = [p for p in generator.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the generator has no trainable parameters")
    gan = GANLoss(cfg.gan_mode)  # type: ignore[arg-type]
    opt_g = torch.optim.Adam(_param_groups(generator, params, cfg), betas=cfg.betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=cfg.lr, betas=cfg.betas)
    sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, cfg.lr_factor)
    sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, cfg.lr_factor)
    objs: dict[str, Any] = {
        "modules": {"G": generator, "D": discriminator},
        "optimizers": {"G": opt_g, "D": opt_d},
        "schedulers": {"G": sched_g, "D": sched_d},
    }
    run = RunDir(out, {"e2gan": cfg.to_dict(), **(run_info or {})}, resume=resume, upgrade=upgrade_run_config)
    ckpt = load_checkpoint(run, **objs, map_location=device)
    state: dict[str, Any] = {"history": [], "best": None, "best_epoch": None, "seconds": 0.0}
    if ckpt is not None and isinstance(ckpt.extra, dict):
        state.update(ckpt.extra)
    start = ckpt.step if ckpt else 0
    # The selected generator lives on disk too, so a resumed run still ends on the selected epoch's weights.
    best_file = out / BEST_WEIGHTS
    best_state = {k: v.clone() for k, v in generator.state_dict().items()}
    if start > 0 and best_file.is_file():
        best_state = load_file(str(best_file), device=str(device))
    n = len(train)
    batches = (n + cfg.batch_size - 1) // cfg.batch_size
    generator.train()
    discriminator.train()
    for epoch in range(start + 1, cfg.total_epochs + 1):
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        order = torch.randperm(n, generator=gen)
        sums = {"d": 0.0, "g_gan": 0.0, "l1": 0.0}
        for b in range(batches):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size].tolist()
            x, y = train.inputs[idx].to(device), train.targets[idx].to(device)
            if torch.rand((), generator=gen) < 0.5:  # the same flip for input and edit
                x, y = x.flip(-1), y.flip(-1)
            text, mask = _encode(encoder, [train.prompts[i] for i in idx], device)
            fake = generator(x, text, mask)

            # D step: (input, editor output) is real, (input, generated) is fake.
            discriminator.requires_grad_(True)
            loss_d = 0.5 * (
                gan(discriminator(torch.cat([x, y], 1)), True)
                + gan(discriminator(torch.cat([x, fake.detach()], 1)), False)
            )
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()

            # G step: fool D and stay close to the editor's output.
            discriminator.requires_grad_(False)
            loss_gan = gan(discriminator(torch.cat([x, fake], 1)), True, for_discriminator=False)
            loss_l1 = pixel_l1_loss(fake, y) if cfg.recon == "pixel_l1" else F.l1_loss(fake, y)
            opt_g.zero_grad(set_to_none=True)
            (loss_gan + cfg.lambda_recon * loss_l1).backward()
            opt_g.step()

            check_finite((epoch - 1) * batches + b + 1, checkpoint=run, d=loss_d, g_gan=loss_gan, l1=loss_l1)
            for k, v in (("d", loss_d), ("g_gan", loss_gan), ("l1", loss_l1)):
                sums[k] += float(v.detach())
            if progress is not None:
                progress(epoch, b + 1, batches)
        lr_now = opt_g.param_groups[0]["lr"]
        sched_g.step()
        sched_d.step()
        state["seconds"] += time.perf_counter() - t0
        scores = evaluate(generator, val, encoder)
        row = {
            "epoch": epoch,
            **{k: v / batches for k, v in sums.items()},
            "val_psnr": scores["psnr"],
            "val_ssim": scores["ssim"],
            "lr": lr_now,
            "train_seconds": state["seconds"],
        }
        key = {"psnr": "val_psnr", "ssim": "val_ssim"}.get(cfg.select_by)
        chosen = key is None or row[key] is None or state["best"] is None or row[key] > state["best"]
        if chosen:
            state["best"], state["best_epoch"] = (row[key] if key else None), epoch
            best_state = {k: v.detach().clone().contiguous() for k, v in generator.state_dict().items()}
            if key is not None:  # "last" needs no copy on disk: the checkpoint holds the last weights
                with atomic_path(best_file) as tmp:
                    save_file(best_state, str(tmp))
        state["history"].append(row)
        run.log(epoch, **row)
        save_checkpoint(run, epoch, **objs, extra=state, keep=1)
        if on_epoch is not None:
            on_epoch(epoch, row)
    generator.load_state_dict(best_state)
    picked = next((r for r in state["history"] if r["epoch"] == state["best_epoch"]), {})
    psnrs = [r for r in state["history"] if r["val_psnr"] is not None]
    return {
        "epoch": state["best_epoch"],
        "select_by": cfg.select_by,
        "val_psnr": picked.get("val_psnr"),
        "val_ssim": picked.get("val_ssim"),
        "best_psnr_epoch": max(psnrs, key=lambda r: r["val_psnr"])["epoch"] if psnrs else None,
        "history": state["history"],
        "train_seconds": state["seconds"],
        "trainable": sum(p.numel() for p in params),
    }


def upgrade_run_config(saved: dict[str, Any]) -> dict[str, Any]:
    """A run's saved ``config.yaml`` in today's spelling (for RunDir): ``lambda_l1`` became ``lambda_recon``;
    runs saved before ``detail_lr`` existed had no detail path, so any value reads the same; runs saved before
    ``lora_bias`` trained adapters without bias shifts; runs saved before ``detail_lora_lr`` trained the detail
    path's adapters at ``lora_lr`` (runs without adapters read the same at any value)."""
    cfg = saved.get("e2gan")
    if not isinstance(cfg, dict):
        return saved
    if "lambda_l1" in cfg and "lambda_recon" not in cfg:
        cfg = {("lambda_recon" if k == "lambda_l1" else k): v for k, v in cfg.items()}
    if "detail_lr" not in cfg:
        cfg = {**cfg, "detail_lr": E2GANTrainConfig.detail_lr}
    if "lora_bias" not in cfg:
        cfg = {**cfg, "lora_bias": False}
    if "recon" not in cfg:
        cfg = {**cfg, "recon": "l1"}
    if "detail_lora_lr" not in cfg:
        adapters = saved.get("recipe") == "finetune-lora" or bool(saved.get("ranks"))
        old = cfg.get("lora_lr", E2GANTrainConfig.lora_lr) if adapters else E2GANTrainConfig.detail_lora_lr
        cfg = {**cfg, "detail_lora_lr": old}
    return {**saved, "e2gan": cfg}


def build_discriminator(cfg: E2GANTrainConfig) -> PatchDiscriminator:
    return PatchDiscriminator(input_nc=6, ndf=cfg.ndf, n_layers=cfg.d_layers)


def base_discriminator(base_dir: str | os.PathLike[str], cfg: E2GANTrainConfig) -> nn.Module:
    """The discriminator saved with the base model by :func:`pretrain` (every adaptation starts from it,
    as the generator does), or a fresh one when the base came without it."""
    d_dir = Path(base_dir).parent / "discriminator"
    return edgegan.load(d_dir) if d_dir.is_dir() else build_discriminator(cfg)


# ------------------------------------------------------------------------------------------ recipes


def pretrain(
    pairs_dir: str | os.PathLike[str],
    concepts: Sequence[str],
    out: str | os.PathLike[str],
    cfg: E2GANTrainConfig,
    encoder: TextEncoder,
    *,
    resume: bool = False,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train the multi-concept base model; saves ``out/base/`` (generator) and ``out/discriminator/``."""
    data = load_pairs(pairs_dir, concepts, cfg.size)
    train, val = data.split(cfg.val_fraction, cfg.seed)
    set_seed(cfg.seed)  # the initial weights are part of what the seed decides
    generator = build_generator(cfg, encoder.dim)
    d = build_discriminator(cfg)
    info = {"recipe": "pretrain", "concepts": list(concepts), "text_encoder": encoder.name, "pairs": len(data)}
    result = train_loop(
        generator, d, train, val, encoder, out, cfg, run_info=info, resume=resume, device=device, progress=progress
    )
    generator.cpu().eval().save(Path(out) / "base")
    d.cpu().save(Path(out) / "discriminator")
    summary = {
        **info,
        **{k: v for k, v in result.items() if k != "history"},
        "base": str(Path(out) / "base"),
        "params": sum(p.numel() for p in generator.parameters()),
    }
    atomic_write_json(Path(out) / "summary.json", {**summary, "history": result["history"]})
    return summary


def choose_base_concepts(
    pairs_dir: str | os.PathLike[str],
    concepts: Sequence[str],
    n: int,
    encoder: ImageEncoder,
    *,
    size: int = 64,
    seed: int = 0,
) -> dict[str, Any]:
    """Pick ``n`` of ``concepts`` for the base model: K-means over each concept's mean embedding of its
    edited images (:func:`edgegan.e2gan.select.select_concepts`). Returns ``{"chosen", "encoder"}``."""
    means = {}
    for concept in concepts:
        data = load_pairs(pairs_dir, [concept], size)
        means[concept] = torch.cat([encoder.embed(data.targets[i : i + 32]) for i in range(0, len(data), 32)]).mean(0)
    return {"chosen": select_concepts(means, n, seed), "encoder": encoder.name, "candidates": list(concepts)}


def _select(
    base: E2GANGenerator, data: PairSet, n: int | None, method: str, seed: int
) -> tuple[PairSet, list[int] | None, dict[str, float] | None]:
    """N training pairs by K-means over the base's un-normalised stem features (standardised), or at random;
    also the features' spread (how much they tell the images apart)."""
    if n is None or n >= len(data):
        return data, None, None
    feats = stem_features(base, list(data.inputs))
    spread = feature_spread(feats)
    if method == "kmeans":
        idx = select_kmeans(standardise(feats), n, seed)
    elif method == "random":
        idx = select_random(len(data), n, seed)
    else:
        raise ConfigError(f"selection must be kmeans or random, got {method!r}")
    return data.take(idx), idx, spread


def finetune(
    base_dir: str | os.PathLike[str],
    pairs_dir: str | os.PathLike[str],
    concept: str,
    out: str | os.PathLike[str],
    cfg: E2GANTrainConfig,
    encoder: TextEncoder,
    *,
    mode: str = "lora",
    ranks: dict[str, int] | None = None,
    parts: Sequence[str] = CRUCIAL_PARTS,
    select: int | None = None,
    selection: str = "kmeans",
    test_stems: Sequence[str] = (),
    resume: bool = False,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Adapt the base model to ``concept``: ``mode="lora"`` trains adapters on ``parts`` with ``ranks``
    (name -> rank; default :func:`lora_ranks` at 4) and saves ``out/adapter/``; ``mode="full"`` trains
    every weight and saves ``out/generator/``. ``select`` keeps N training pairs chosen by ``selection``
    (kmeans or random). Pairs whose stems are in ``test_stems`` are never trained or validated on."""
    if mode not in ("lora", "full"):
        raise ConfigError(f"mode must be lora or full, got {mode!r}")
    base = edgegan.load(base_dir)
    if not isinstance(base, E2GANGenerator):
        raise ConfigError(f"{base_dir} does not hold an e2gan_generator")
    if base.config.text_dim != encoder.dim:
        raise ConfigError(f"the base model expects {base.config.text_dim}-d text, the encoder gives {encoder.dim}-d")
    data = load_pairs(pairs_dir, [concept], cfg.size)
    held = set(test_stems)
    data = data.take([i for i, s in enumerate(data.stems) if s not in held])
    train, val = data.split(cfg.val_fraction, cfg.seed)
    train, chosen, spread = _select(base, train, select, selection, cfg.seed)
    d = base_discriminator(base_dir, cfg)
    set_seed(cfg.seed)  # the adapters' initial draw is part of what the seed decides
    generator = copy.deepcopy(base).train()
    if mode == "lora":
        names = crucial_layer_names(generator, parts)
        ranks = ranks or lora_ranks(names, 4)
        caps = {n: lora_rank_cap(generator.get_submodule(n)) for n in ranks}
        add_lora(generator, {n: min(int(r), caps[n]) for n, r in ranks.items()}, bias=cfg.lora_bias)
        set_lora_trainable(generator)
    info = {
        "recipe": f"finetune-{mode}",
        "concept": concept,
        "text_encoder": encoder.name,
        "ranks": dict(ranks or {}),
        "select": select,
        "selection": selection if select else None,
        "feature_spread": spread,
        "train_pairs": len(train),
    }
    result = train_loop(
        generator, d, train, val, encoder, out, cfg, run_info=info, resume=resume, device=device, progress=progress
    )
    generator.cpu()
    out = Path(out)
    if mode == "lora":
        folder = save_adapter(
            generator,
            out / "adapter",
            extra={"concept": concept, "prompt": data.prompts[0], "base": str(Path(base_dir).resolve())},
        )
        size = sum(f.stat().st_size for f in folder.iterdir())
        saved = {"adapter": str(folder), "adapter_bytes": size}
    else:
        folder = generator.eval().save(out / "generator")
        saved = {"generator": str(folder), "model_bytes": sum(f.stat().st_size for f in folder.iterdir())}
    summary = {**info, **{k: v for k, v in result.items() if k != "history"}, **saved, "chosen": chosen}
    atomic_write_json(out / "summary.json", {**summary, "history": result["history"]})
    return summary


def _rank_run(
    base: E2GANGenerator,
    base_dir: str | os.PathLike[str],
    rank: int,
    ranks: dict[str, int],
    train: PairSet,
    val: PairSet,
    encoder: TextEncoder,
    run_dir: Path,
    cfg: E2GANTrainConfig,
    seed: int,
    device: str | torch.device,
    progress: Callable[[str], None] | None,
) -> dict[str, Any]:
    """One rank-search run: a fresh adapter at ``ranks`` trained on the full schedule. A finished run is read back
    from its checkpoint (``train_loop`` with ``resume``, which refuses a run folder made with other settings)."""
    done = run_dir / "summary.json"
    if progress is not None and not done.is_file():
        progress(f"{run_dir.parent.name}: rank {rank}, seed {seed}")
    set_seed(seed)  # the adapters' initial draw is part of what the seed decides
    g = copy.deepcopy(base).train()
    add_lora(g, ranks, bias=cfg.lora_bias)
    set_lora_trainable(g)
    r = train_loop(
        g,
        base_discriminator(base_dir, cfg),
        train,
        val,
        encoder,
        run_dir,
        dataclasses.replace(cfg, seed=seed),
        run_info={"recipe": "rank-search", "rank": rank, "ranks": dict(ranks)},
        resume=True,
        device=device,
    )
    row = {"rank": rank, "seed": seed, "val_psnr": r["val_psnr"], "trainable": r["trainable"], "ranks": dict(ranks)}
    atomic_write_json(done, row)
    return row


def rank_search(
    base_dir: str | os.PathLike[str],
    pairs_dir: str | os.PathLike[str],
    concepts: Sequence[str],
    out: str | os.PathLike[str],
    cfg: E2GANTrainConfig,
    encoder: TextEncoder,
    *,
    parts: Sequence[str] = CRUCIAL_PARTS,
    max_rank: int | None = None,
    max_params: float | None = None,
    min_margin_db: float = 0.05,
    device: str | torch.device = "cpu",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """E2GAN's rank search over sampled ``concepts``: ranks 1, 2, 4, ... up to ``max_rank`` (as
    :func:`lora_ranks` gives them: each crucial layer capped by its weight's rank); per concept the rank where
    validation PSNR saturates, and over the concepts the largest per layer (the paper's rule), saved to
    ``out/ranks.json``.

    Departure from the paper, which doubles the ranks of one adapter as it trains: there a larger rank also
    means more epochs, and in our first bench every doubling gained from the extra epochs alone. Here each rank
    is a fresh adapter trained for the same ``cfg`` schedule on the same batches. Rank 1 is trained twice (two
    seeds) to measure seed-to-seed noise; a concept's rank is the smallest whose PSNR is within
    ``max(noise, min_margin_db)`` of the best, and the search stops once two doublings in a row gain less than
    that margin. ``max_params`` is a storage budget, a fraction of the base model's parameters (E2GAN stores one
    adapter per concept on the device): under it the detail path's convs take the parameters the other layers
    leave (:func:`fill_detail_ranks`, at least the others' rank) instead of ``DETAIL_RANK_SCALE`` times their rank,
    and ranks double only while that fits; each run records the ranks it trained. Every run is resumable (a
    finished rank is not trained again)."""
    base = edgegan.load(base_dir)
    if not isinstance(base, E2GANGenerator):
        raise ConfigError(f"{base_dir} does not hold an e2gan_generator")
    if not concepts:
        raise ConfigError("the rank search needs at least one concept")
    names = crucial_layer_names(base, parts)
    caps = {n: lora_rank_cap(base.get_submodule(n)) for n in names}
    top = max(caps.values())
    if max_rank is not None:  # caps the searched rank (the detail path's convs get DETAIL_RANK_SCALE times it)
        top = min(top, max_rank)
    budget: float | None = None
    if max_params is not None:
        if not 0 < max_params <= 1:
            raise ConfigError(f"max_params is a fraction of the model's parameters in (0, 1], got {max_params}")
        budget = max_params * sum(p.numel() for p in base.parameters())

    def ranks_at(others: dict[str, int]) -> dict[str, int] | None:
        """The ranks a run trains: under a budget the detail path takes what the other layers leave."""
        if budget is None:
            return others
        return fill_detail_ranks(base, others, caps, budget, cfg.lora_bias)

    if budget is not None:
        fits = [r for r in (2**i for i in range(top.bit_length())) if ranks_at(lora_ranks(names, r, caps)) is not None]
        if not fits:
            need = _adapter_params(base, names, {n: 1 for n in names}, None, cfg.lora_bias)
            raise ConfigError(f"rank 1 on {len(names)} layers needs {need:,} parameters, over the budget {budget:,.0f}")
        top = max(fits)
    per_concept: dict[str, Any] = {}
    for concept in concepts:
        data = load_pairs(pairs_dir, [concept], cfg.size)
        train, val = data.split(cfg.val_fraction, cfg.seed)
        if val is None:
            raise ConfigError(f"the rank search needs validation pairs for {concept!r}")

        def run(rank: int, seed: int, concept: str = concept, train: PairSet = train, val: PairSet = val) -> Any:
            ranks = ranks_at(lora_ranks(names, rank, caps))
            assert ranks is not None  # every searched rank fits (top above)
            run_dir = Path(out) / concept_slug(concept) / f"rank{rank}-seed{seed}"
            return _rank_run(base, base_dir, rank, ranks, train, val, encoder, run_dir, cfg, seed, device, progress)

        first = [run(1, cfg.seed), run(1, cfg.seed + 1)]
        noise = abs(first[0]["val_psnr"] - first[1]["val_psnr"])
        margin = max(noise, min_margin_db)
        trail = [{**first[0], "val_psnr_seeds": [f["val_psnr"] for f in first]}]
        trail[0]["val_psnr"] = statistics.fmean(f["val_psnr"] for f in first)
        rank, stale = 1, 0
        while rank < top and stale < 2:
            rank *= 2
            row = run(rank, cfg.seed)
            best_before = max(t["val_psnr"] for t in trail)
            stale = stale + 1 if row["val_psnr"] < best_before + margin else 0
            trail.append(row)
        best = max(t["val_psnr"] for t in trail)
        chosen = min(t["rank"] for t in trail if t["val_psnr"] >= best - margin)
        per_concept[concept] = {
            "rank": chosen,
            "best_ranks": next(t["ranks"] for t in trail if t["rank"] == chosen),
            "noise_db": noise,
            "margin_db": margin,
            "trail": trail,
        }
    final = {n: max(c["best_ranks"][n] for c in per_concept.values()) for n in names}
    if budget is not None:  # the largest rank per layer over the concepts, then the detail path refilled
        others = {n: r for n, r in final.items() if not n.startswith(_DETAIL_LAYERS)}
        floor = max(others.values(), default=1)
        filled = ranks_at({**others, **{n: min(floor, caps[n]) for n in final if n not in others}})
        assert filled is not None  # the other layers' ranks are one concept's, which fitted
        final = filled
    record = {
        "ranks": final,
        "concepts": per_concept,
        "parts": list(parts),
        "epochs": cfg.total_epochs,
        "min_margin_db": min_margin_db,
        "max_params": max_params,
        "adapter_params": _adapter_params(base, names, final, None, cfg.lora_bias),
        "model_params": sum(p.numel() for p in base.parameters()),
    }
    atomic_write_json(Path(out) / "ranks.json", record)
    return record


def _adapter_params(base: nn.Module, names: Sequence[str], caps: dict[str, int], rank: int | None, bias: bool) -> int:
    """Parameters of LoRA adapters on ``names`` at ``rank`` (scaled as :func:`lora_ranks`, each capped by
    ``caps``; None: ``caps`` are the ranks), with bias shifts if ``bias``, counted on a copy of the model."""
    probe = copy.deepcopy(base)
    add_lora(probe, {n: caps[n] for n in names} if rank is None else lora_ranks(names, rank, caps), bias=bias)
    return sum(p.numel() for layer in lora_layers(probe).values() for n, p in layer.named_parameters() if "lora" in n)


def layer_study(
    base_dir: str | os.PathLike[str],
    pairs_dir: str | os.PathLike[str],
    concept: str,
    out: str | os.PathLike[str],
    cfg: E2GANTrainConfig,
    encoder: TextEncoder,
    *,
    resume: bool = False,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Fine-tune the full base model on ``concept`` with each part frozen in turn (sampling layers,
    transformer block, residual blocks, the full-resolution first and last convs) and with nothing frozen;
    report quality and trainable parameters."""
    base = edgegan.load(base_dir)
    if not isinstance(base, E2GANGenerator):
        raise ConfigError(f"{base_dir} does not hold an e2gan_generator")
    data = load_pairs(pairs_dir, [concept], cfg.size)
    train, val = data.split(cfg.val_fraction, cfg.seed)
    groups = base.crucial_layers()
    rows = {}
    for frozen in ("none", *groups):
        set_seed(cfg.seed)
        generator = copy.deepcopy(base).train()
        if frozen != "none":
            layers = set(groups[frozen])
            for name, p in generator.named_parameters():
                if name.rsplit(".", 1)[0] in layers:
                    p.requires_grad_(False)
        result = train_loop(
            generator,
            base_discriminator(base_dir, cfg),
            train,
            val,
            encoder,
            Path(out) / f"frozen-{frozen}",
            cfg,
            run_info={"recipe": "layer-study", "frozen": frozen},
            resume=resume,
            device=device,
        )
        rows[frozen] = {
            "trainable": result["trainable"],
            "val_psnr": result["val_psnr"],
            "val_ssim": result["val_ssim"],
            "train_seconds": result["train_seconds"],
        }
    record = {"concept": concept, "rows": rows}
    atomic_write_json(Path(out) / "layer_study.json", record)
    return record


@torch.no_grad()
def apply_adapter(
    base_dir: str | os.PathLike[str],
    adapter_dir: str | os.PathLike[str] | None,
    image: torch.Tensor,
    prompt: str,
    encoder: TextEncoder,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Run the base model (with the adapter, when given) on ``image`` ``[3, H, W]`` in [-1, 1] on ``device``;
    any size (padded to a multiple of 8, cropped back); the result comes back on the CPU."""
    from edgegan.nn.lora import load_adapter

    model = edgegan.load(base_dir)
    if adapter_dir is not None:
        load_adapter(model, adapter_dir)
    model.to(device).eval()
    text, mask = _encode(encoder, [prompt], device)
    h, w = image.shape[-2:]
    ph, pw = (-h) % 8, (-w) % 8
    x = F.pad(image[None], (0, pw, 0, ph), mode="reflect") if ph or pw else image[None]
    return model(x.to(device), text, mask)[0, :, :h, :w].cpu()


def adapter_info(adapter_dir: str | os.PathLike[str]) -> dict[str, Any]:
    return json.loads((Path(adapter_dir) / "adapter.json").read_text())
