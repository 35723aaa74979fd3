"""Teacher training recipes: pix2pix (paired) and CycleGAN (unpaired).

GAN Compression starts from a trained full-size generator, the *teacher*. These recipes train one
with the original papers' objectives and schedules, written so each loop reads top to bottom:
one batch, a discriminator step, a generator step.

* :func:`train_pix2pix` -- a generator conditioned on the input image, a conditional PatchGAN that
  sees ``concat(input, image)``, GAN + ``lambda_recon`` * L1 loss. A held-out validation slice is scored with
  PSNR/SSIM (and LPIPS/FID/KID when ``select_by`` asks for one) after every epoch.
* :func:`train_cyclegan` -- two ResNet generators ``G_A: A -> B`` and ``G_B: B -> A``, two PatchGANs,
  LSGAN loss, cycle consistency and identity losses, and an :class:`ImagePool` of past fakes for the
  discriminators. There is no ground truth: ``select_by`` ``fid``/``kid`` score ``valA``/``valB``.

The generator handed on (``best_generator/``, CycleGAN's ``G_A/``/``G_B/``) is the last epoch's by default
(``select_by="last"``), as the reference passes its latest generator to the next stage; ``select_by`` may
instead keep the best epoch by SSIM, PSNR, LPIPS, FID or KID. PSNR rewards blur (issue 13: on facades a
single constant image outscored every trained model), so it is logged but never the default chooser.

The generators are the papers' by default; for tasks that change the global colour, pass the ResNet
generators' ``residual`` and ``input_skip`` options in ``generator_options`` (:mod:`edgegan.models.resnet` has
the measurements). As in the references (``init_weights(net, "normal", 0.02)``), a fresh run initialises G and D with
:func:`~edgegan.nn.layers.init_gan_weights`. The PatchGAN's depth is ``n_layers_d``; ``"auto"`` keeps the
reference's 3 layers (70×70 patches) at crops of 128 px and up and uses fewer at smaller crops (2 layers,
34×34 patches, at 64 px), where a 70×70 patch would see the whole crop
(:func:`~edgegan.models.discriminators.patch_layers_for`); the choice is written to ``config.yaml`` under
``discriminator`` and returned in the result.

Both use Adam (``betas``), a constant learning rate for ``epochs`` epochs and then a linear decay to 0 over
``decay_epochs`` more (:func:`linear_decay`). After every epoch the losses (and validation metrics)
are appended to ``metrics.jsonl`` with ``step`` = epoch, and a checkpoint with weights, optimizers,
schedulers, image pools and RNG states is saved atomically through :mod:`edgegan.runs`; ``resume``
continues from it and gives the same weights as a run that was never interrupted. All randomness
(initialisation, shuffling, crops, flips, dropout, the pool) comes from torch's global RNG, which is
seeded from the config and restored with the checkpoint.

As in the other recipes, ``progress(epoch, batch, batches)`` is called after every batch and the NaN guard
names the global step (``(epoch - 1) * batches + batch``); ``on_epoch(epoch, metrics)`` is called once an
epoch is committed, with what was logged for it. The configs spell the Adam and L1 weights as the other recipes
do (``betas``, ``lambda_recon``); configs saved with the earlier ``beta1``/``beta2`` and ``lambda_l1`` still load
(:meth:`Pix2PixConfig.from_dict`) and their run folders still resume.

Output folder::

    out/
        config.yaml  metrics.jsonl  checkpoints/
        best_generator/  last_generator/      pix2pix (edgegan.load-able model folders); best = the selected one
        best_discriminator/ last_discriminator/  its critic, which distillation starts from
        G_A/  G_B/                            CycleGAN, the selected generators
        last_G_A/  last_G_B/                  CycleGAN, the last ones (only when select_by is not "last")
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

import edgegan
from edgegan.compress.distill import METRIC_WEIGHTS, SELECT_BY, Scorer, better, check_metric
from edgegan.compress.distributed import (
    all_reduce_mean,
    barrier,
    broadcast_object,
    distributed_sampler,
    init_distributed,
    is_main,
    local_device,
    run_on_main,
    wrap_ddp,
)
from edgegan.compress.recipe_parts import Progress, to01
from edgegan.compress.results import CycleGANResult, Pix2PixResult
from edgegan.data.datasets import PairedDataset, UnpairedDataset, split_validation, subset
from edgegan.errors import ConfigError
from edgegan.losses import GANLoss, l1_loss
from edgegan.models.discriminators import patch_layers_for, patch_receptive_field
from edgegan.nn.layers import init_gan_weights
from edgegan.registry import EdgeModel, get_architecture
from edgegan.runs import RunDir, check_finite, load_checkpoint, save_checkpoint, set_seed

__all__ = [
    "GENERATORS",
    "CycleGANConfig",
    "CycleGANResult",
    "ImagePool",
    "OnEpoch",
    "Pix2PixConfig",
    "Pix2PixResult",
    "linear_decay",
    "train_cyclegan",
    "train_pix2pix",
    "upgrade_names",
]

PathLike = str | os.PathLike[str]
OnEpoch = Callable[[int, dict[str, float]], None]
"""``on_epoch(epoch, metrics)``, called after each epoch's checkpoint is saved with the losses, ``lr`` and
validation scores logged for it."""

GENERATORS: tuple[str, ...] = ("resnet_generator", "unet_generator", "mobile_resnet_generator")
PIX2PIX_GAN_MODES: tuple[str, ...] = ("hinge", "vanilla", "lsgan")
CYCLEGAN_SELECT_BY: tuple[str, ...] = ("last", "fid", "kid")  # no pairs: only distribution metrics
KEEP_CHECKPOINTS = 2

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- configs


def _check_schedule(cfg: Any) -> None:
    """Checks shared by both configs (sizes and direction are checked by the data sets)."""
    for name in ("epochs", "decay_epochs"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{name} must be a non-negative int, got {value!r}")
    if cfg.epochs + cfg.decay_epochs < 1:
        raise ConfigError("epochs + decay_epochs must be at least 1")
    if isinstance(cfg.batch_size, bool) or not isinstance(cfg.batch_size, int) or cfg.batch_size < 1:
        raise ConfigError(f"batch_size must be a positive int, got {cfg.batch_size!r}")
    if not cfg.lr > 0:
        raise ConfigError(f"lr must be positive, got {cfg.lr!r}")
    try:
        cfg.betas = tuple(float(b) for b in cfg.betas)
    except (TypeError, ValueError):
        raise ConfigError(f"betas must be two numbers in [0, 1), got {cfg.betas!r}") from None
    if len(cfg.betas) != 2 or not all(0.0 <= b < 1.0 for b in cfg.betas):
        raise ConfigError(f"betas must be two numbers in [0, 1), got {cfg.betas!r}")
    if not isinstance(cfg.generator_options, dict):
        raise ConfigError(f"generator_options must be a dict, got {type(cfg.generator_options).__name__}")
    n = cfg.n_layers_d
    if n != "auto" and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ConfigError(f"n_layers_d must be a positive int or 'auto', got {n!r}")


def upgrade_names(data: Mapping[str, Any]) -> dict[str, Any]:
    """A saved teacher config in today's spelling: ``beta1``/``beta2`` become ``betas`` and ``lambda_l1``
    becomes ``lambda_recon`` (the names the other recipes use); ConfigError if a dict has both spellings."""
    out = dict(data)
    if "beta1" in out or "beta2" in out:
        if "betas" in out:
            raise ConfigError("give betas, or the older beta1/beta2, not both")
        default = Pix2PixConfig.betas
        out["betas"] = [out.pop("beta1", default[0]), out.pop("beta2", default[1])]
    if "lambda_l1" in out:
        if "lambda_recon" in out:
            raise ConfigError("give lambda_recon, or its older name lambda_l1, not both")
        out["lambda_recon"] = out.pop("lambda_l1")
    return out


def _upgrade_run_config(saved: dict[str, Any]) -> dict[str, Any]:
    """A teacher run's saved ``config.yaml`` with its ``train`` section in today's spelling (for RunDir)."""
    if isinstance(saved.get("train"), Mapping):
        return {**saved, "train": upgrade_names(saved["train"])}
    return saved


def _from_dict(cls: Any, data: Mapping[str, Any]) -> Any:
    kwargs = upgrade_names(data)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(kwargs) - names)
    if unknown:
        valid = ", ".join(sorted(names))
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for {cls.__name__}; valid: {valid}")
    return cls(**kwargs)


def d_layers(cfg: Any) -> int:
    """The PatchGAN depth a config asks for: ``n_layers_d``, or for ``"auto"`` the one sized to the crop."""
    return patch_layers_for(cfg.crop_size) if cfg.n_layers_d == "auto" else int(cfg.n_layers_d)


@dataclass
class Pix2PixConfig:
    """pix2pix recipe. ``epochs`` at constant ``lr``, then ``decay_epochs`` of linear decay to 0.

    ``n_layers_d``: PatchGAN depth, or ``"auto"`` (sized to ``crop_size``, see the module docs). ``select_by``:
    which epoch's generator ``best_generator/`` holds, ``last`` or the best on the validation slice by
    ``ssim``, ``psnr``, ``lpips``, ``fid`` or ``kid`` (the last three need their weights).
    """

    generator: str = "resnet_generator"
    generator_options: dict[str, Any] = field(default_factory=dict)
    ndf: int = 64
    n_layers_d: int | str = "auto"
    gan_mode: str = "hinge"
    lambda_recon: float = 100.0  # weight of the L1 loss to the target (pix2pix's lambda_L1)
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    epochs: int = 100
    decay_epochs: int = 100
    batch_size: int = 1
    load_size: int = 286
    crop_size: int = 256
    direction: str = "AtoB"
    val_fraction: float = 0.1
    seed: int = 0
    select_by: str = "last"

    def __post_init__(self) -> None:
        if self.generator not in GENERATORS:
            raise ConfigError(f"generator must be one of {', '.join(GENERATORS)}, got {self.generator!r}")
        if self.gan_mode not in PIX2PIX_GAN_MODES:
            raise ConfigError(f"gan_mode must be one of {', '.join(PIX2PIX_GAN_MODES)}, got {self.gan_mode!r}")
        check_metric(self.select_by, "select_by", SELECT_BY)
        if not self.lambda_recon >= 0:
            raise ConfigError(f"lambda_recon must be >= 0, got {self.lambda_recon!r}")
        _check_schedule(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Pix2PixConfig:
        """Rebuild a saved config (``config.yaml``'s ``train`` section, ``pipeline.json``'s ``teacher``); the
        earlier names ``beta1``/``beta2`` and ``lambda_l1`` are accepted (:func:`upgrade_names`)."""
        return _from_dict(cls, data)


@dataclass
class CycleGANConfig:
    """CycleGAN recipe: ResNet generators (``generator_options`` e.g. ``ngf``, ``n_blocks``), LSGAN.

    The identity loss weight is ``lambda_identity * lambda_cycle``; ``pool_size`` 0 disables the pool.
    ``n_layers_d`` as in :class:`Pix2PixConfig`. ``select_by``: ``last``, or ``fid``/``kid`` (needs the
    Inception weights and ``valA``/``valB`` folders: ``G_A(valA)`` is scored against ``valB`` and
    ``G_B(valB)`` against ``valA``, and the epoch with the lower sum is kept).
    """

    generator_options: dict[str, Any] = field(default_factory=dict)
    ndf: int = 64
    n_layers_d: int | str = "auto"
    gan_mode: str = "lsgan"
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5
    pool_size: int = 50
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    epochs: int = 100
    decay_epochs: int = 100
    batch_size: int = 1
    load_size: int = 286
    crop_size: int = 256
    direction: str = "AtoB"
    seed: int = 0
    select_by: str = "last"

    def __post_init__(self) -> None:
        check_metric(self.select_by, "select_by", CYCLEGAN_SELECT_BY)
        if self.gan_mode not in PIX2PIX_GAN_MODES:
            raise ConfigError(f"gan_mode must be one of {', '.join(PIX2PIX_GAN_MODES)}, got {self.gan_mode!r}")
        if not self.lambda_cycle >= 0 or not self.lambda_identity >= 0:
            raise ConfigError("lambda_cycle and lambda_identity must be >= 0")
        if isinstance(self.pool_size, bool) or not isinstance(self.pool_size, int) or self.pool_size < 0:
            raise ConfigError(f"pool_size must be a non-negative int, got {self.pool_size!r}")
        _check_schedule(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CycleGANConfig:
        """Rebuild a saved config (``config.yaml``'s ``train`` section); ``beta1``/``beta2`` are accepted."""
        return _from_dict(cls, data)


# --------------------------------------------------------------------------- building blocks


def linear_decay(epochs: int, decay_epochs: int) -> Callable[[int], float]:
    """Learning-rate factor for ``LambdaLR`` stepped once per epoch (``e`` = epochs completed).

    1.0 during the first ``epochs`` epochs, then ``decay_epochs / (decay_epochs + 1)``, ...,
    ``1 / (decay_epochs + 1)`` for the decay epochs, and 0 once they are all done.
    """

    def factor(e: int) -> float:
        return max(0.0, 1.0 - max(0, e + 1 - epochs) / (decay_epochs + 1))

    return factor


class ImagePool:
    """A buffer of generated images shown to a discriminator (Shrivastava et al.).

    Until ``size`` images are stored, :meth:`query` stores and returns the new ones. Once full,
    each new image is returned as is with probability 0.5; otherwise a random stored image is
    returned and the new one takes its place. ``size`` 0 returns its input unchanged. Randomness
    comes from torch's global RNG (or ``generator``). Has ``state_dict``/``load_state_dict`` so
    training checkpoints hold the pool (:func:`edgegan.runs.save_checkpoint` takes it as a
    scheduler-like object).
    """

    def __init__(self, size: int = 50, generator: torch.Generator | None = None) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ConfigError(f"image pool size must be a non-negative int, got {size!r}")
        self.size = size
        self.generator = generator
        self.images: list[Tensor] = []

    def __len__(self) -> int:
        return len(self.images)

    def query(self, images: Tensor) -> Tensor:
        """A batch like ``images`` (detached), mixing new and stored images as described above."""
        images = images.detach()
        if self.size == 0:
            return images
        out = []
        for image in images:
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand((), generator=self.generator).item() < 0.5:
                i = int(torch.randint(self.size, (1,), generator=self.generator).item())
                out.append(self.images[i].to(image.device))
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict[str, Any]:
        return {"size": self.size, "images": list(self.images)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("size") != self.size:
            raise ValueError(f"image pool of size {state.get('size')} cannot be loaded into one of size {self.size}")
        self.images = list(state["images"])


def _typed_options(arch: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` (CLI strings or values) converted to the architecture's field types, RGB checked."""
    config = get_architecture(arch).config_cls.from_dict(dict(options))
    typed = {k: v for k, v in config.to_dict().items() if k in options}
    if getattr(config, "input_nc", 3) != 3 or getattr(config, "output_nc", 3) != 3:
        raise ConfigError("teacher generators map RGB to RGB: input_nc and output_nc must be 3")
    return typed


def _adam(params: Iterable[nn.Parameter], cfg: Any) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas)


def _scheduler(opt: torch.optim.Optimizer, cfg: Any) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(opt, linear_decay(cfg.epochs, cfg.decay_epochs))


def _requires_grad(net: nn.Module, flag: bool) -> None:
    for p in net.parameters():
        p.requires_grad_(flag)


def _train_loader(dataset: Dataset[Any], batch_size: int) -> DataLoader[Any]:
    # num_workers=0 with shuffle=True: the sampler draws its seed from torch's global RNG each
    # epoch, and crops/flips come from it too, so a resumed run sees the same batches.
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0)


def _resolved(path: PathLike | None) -> str | None:
    return None if path is None else str(Path(path).resolve())


def _mean(totals: dict[str, float], n: int) -> dict[str, float]:
    return {k: v / max(n, 1) for k, v in totals.items()}


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _selects(select_by: str, score: float | None, best_metric: float | None, best_epoch: int | None) -> bool:
    """Whether this epoch's generator becomes the selected one: always for ``last``; else when its score
    beats the best so far (or nothing is selected yet, e.g. every score so far was not finite)."""
    if select_by == "last" or best_epoch is None:
        return True
    return score is not None and better(select_by, score, best_metric)


def _discriminator(input_nc: int, cfg: Any, device: torch.device) -> EdgeModel:
    return edgegan.build("patch_discriminator", input_nc=input_nc, ndf=cfg.ndf, n_layers=d_layers(cfg)).to(device)


def _describe_d(cfg: Any) -> dict[str, Any]:
    """What the run log records about the discriminator: depth, patch side, and whether ``auto`` chose it."""
    n = d_layers(cfg)
    return {"n_layers": n, "patch": patch_receptive_field(n), "auto": cfg.n_layers_d == "auto"}


def _log_d(d: dict[str, Any], crop_size: int) -> None:
    how = f"auto at {crop_size} px crops" if d["auto"] else "n_layers_d"
    log.info("discriminator: %d-layer PatchGAN, %dx%d patches (%s)", d["n_layers"], d["patch"], d["patch"], how)


@torch.no_grad()
def _validate(
    generator: nn.Module, loader: DataLoader[Any], device: torch.device, scorer: Scorer, select_by: str
) -> dict[str, float]:
    """PSNR (capped at 100 dB) and SSIM of ``G(input)`` against the target, and ``select_by``'s LPIPS/FID/KID
    when it asks for one, over the whole validation slice."""
    generator.eval()
    fakes, targets = [], []
    for batch in loader:
        fakes.append(generator(batch["A"].to(device)).float().cpu())
        targets.append(batch["B"].float())
    generator.train()
    scores = scorer(torch.cat(fakes), torch.cat(targets), extra=select_by in METRIC_WEIGHTS)
    return {f"val_{k}": float(v) for k, v in scores.items() if v is not None}


# --------------------------------------------------------------------------- pix2pix


def _pix2pix_data(
    a_dir: PathLike | None, b_dir: PathLike | None, data_root: PathLike | None, cfg: Pix2PixConfig
) -> tuple[PairedDataset, PairedDataset]:
    """(training, evaluation-mode) views of the same pairs."""
    kw: dict[str, Any] = {"direction": cfg.direction, "load_size": cfg.load_size, "crop_size": cfg.crop_size}
    if data_root is not None:
        if a_dir is not None or b_dir is not None:
            raise ConfigError("give either A and B folders or one aligned data folder, not both")
        return PairedDataset(data_root, train=True, **kw), PairedDataset(data_root, train=False, **kw)
    if a_dir is None or b_dir is None:
        raise ConfigError("pix2pix needs an A folder and a B folder (or one aligned A|B data folder)")
    train = PairedDataset.from_folders(a_dir, b_dir, train=True, **kw)
    return train, PairedDataset.from_folders(a_dir, b_dir, train=False, **kw)


def train_pix2pix(
    a_dir: PathLike | None,
    b_dir: PathLike | None,
    out: PathLike,
    cfg: Pix2PixConfig | None = None,
    *,
    data_root: PathLike | None = None,
    resume: bool = False,
    progress: Progress | None = None,
    on_epoch: OnEpoch | None = None,
    device: str | torch.device = "cpu",
) -> Pix2PixResult:
    """Train a pix2pix teacher on pairs matched by file stem in ``a_dir``/``b_dir`` (or on aligned
    ``A|B`` images in ``data_root``, passing ``None`` for both folders); see the module docs.

    Returns a :class:`~edgegan.compress.results.Pix2PixResult` (which still reads as the dict returned before);
    ``best_generator`` is the generator ``cfg.select_by`` picked (the last epoch's for ``last``, and then
    ``best_metric`` is None) and ``discriminator`` says how deep the PatchGAN is. A metric other than ``last``
    needs a validation slice (``val_fraction`` > 0; two pairs or more for FID and KID). Raises
    :class:`~edgegan.errors.EdgeganError` subclasses for bad input, before the run folder is touched, and
    :class:`~edgegan.errors.NonFiniteError` if a loss becomes NaN/inf.
    """
    cfg = cfg or Pix2PixConfig()
    cfg = dataclasses.replace(cfg, generator_options=_typed_options(cfg.generator, cfg.generator_options))
    dist_info = init_distributed(str(device))  # torchrun: one process per device; else single-process
    device = local_device(device, dist_info)
    main = is_main(dist_info)
    out = Path(out)
    total_epochs = cfg.epochs + cfg.decay_epochs

    # Data: a fixed validation slice, scored in evaluation mode (resize only, no randomness).
    # Under torchrun each rank trains on its shard of the training slice.
    train_full, eval_full = _pix2pix_data(a_dir, b_dir, data_root, cfg)
    train_idx, val_idx = split_validation(len(train_full), cfg.val_fraction, cfg.seed)
    need = {"last": 0, "fid": 2, "kid": 2}.get(cfg.select_by, 1)  # FID/KID compare two sets of >= 2 images
    if len(val_idx) < need:
        raise ConfigError(
            f"select_by {cfg.select_by} needs at least {need} validation pair(s), got {len(val_idx)}; "
            "raise val_fraction (or use last)"
        )
    train_set = subset(train_full, train_idx)
    sampler = distributed_sampler(train_set, dist_info, shuffle=True, seed=cfg.seed)
    if sampler is None:
        train_loader = _train_loader(train_set, cfg.batch_size)
    else:
        train_loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler, num_workers=0)
    val_loader = DataLoader(subset(eval_full, val_idx), batch_size=cfg.batch_size) if val_idx else None

    scorer = Scorer("ssim" if cfg.select_by in ("last", "psnr") else cfg.select_by, device=device)

    # Models, losses, optimizers; everything random is seeded here and restored on resume. A fresh run
    # starts from the references' N(0, 0.02) init; a resumed one then loads its checkpoint over it.
    set_seed(cfg.seed)
    G = init_gan_weights(edgegan.build(cfg.generator, **cfg.generator_options)).to(device)
    D = init_gan_weights(_discriminator(6, cfg, device))
    gan_loss = GANLoss(cfg.gan_mode)  # type: ignore[arg-type]
    opt_g, opt_d = _adam(G.parameters(), cfg), _adam(D.parameters(), cfg)
    sched_g, sched_d = _scheduler(opt_g, cfg), _scheduler(opt_d, cfg)
    state = {
        "modules": {"G": G, "D": D},
        "optimizers": {"G": opt_g, "D": opt_d},
        "schedulers": {"G": sched_g, "D": sched_d},
    }

    d_info = _describe_d(cfg)
    run_config = {
        "recipe": "pix2pix",
        "data": {"a_dir": _resolved(a_dir), "b_dir": _resolved(b_dir), "data_root": _resolved(data_root)},
        "train": cfg,
        "discriminator": d_info,
    }
    # Only the main rank owns the run folder; every rank restores the checkpoint on resume.
    run = run_on_main(lambda: RunDir(out, run_config, resume=resume, upgrade=_upgrade_run_config), dist_info)
    run_ref = run if run is not None else out  # where the last good checkpoint is, for error messages
    if main:
        _log_d(d_info, cfg.crop_size)
    ckpt = load_checkpoint(run_ref, **state) if resume else None
    start_epoch = ckpt.step if ckpt else 0
    best = (ckpt.extra or {}) if ckpt else {}
    best_epoch: int | None = best.get("best_epoch")
    best_metric: float | None = best.get("best_metric")
    best_dir, last_dir = out / "best_generator", out / "last_generator"
    metrics: dict[str, float] = {}
    # DDP wrappers (the modules themselves when single-process) average gradients across ranks;
    # checkpoints and model folders always hold the unwrapped G and D.
    G_train, D_train = wrap_ddp(G, dist_info), wrap_ddp(D, dist_info)

    G.train()
    D.train()
    batches = len(train_loader)  # this rank's share under torchrun
    for epoch in range(start_epoch + 1, total_epochs + 1):
        if sampler is not None:
            sampler.set_epoch(epoch)
        totals = {"loss_D": 0.0, "loss_G": 0.0, "loss_G_GAN": 0.0, "loss_G_L1": 0.0}
        for i, batch in enumerate(train_loader):
            real_a, real_b = batch["A"].to(device), batch["B"].to(device)
            fake_b = G_train(real_a)

            # D step: real pairs (input, target) against fake pairs (input, G(input)).
            _requires_grad(D, True)
            pred_real = D_train(torch.cat([real_a, real_b], 1))
            pred_fake = D_train(torch.cat([real_a, fake_b.detach()], 1))
            loss_d = 0.5 * (gan_loss(pred_real, True) + gan_loss(pred_fake, False))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()

            # G step: fool D and stay close to the target. D is frozen here, so the unwrapped D
            # is used (no DDP gradient sync to wait for).
            _requires_grad(D, False)
            loss_g_gan = gan_loss(D(torch.cat([real_a, fake_b], 1)), True, for_discriminator=False)
            loss_g_l1 = cfg.lambda_recon * l1_loss(fake_b, real_b)
            loss_g = loss_g_gan + loss_g_l1
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()

            step = (epoch - 1) * batches + i + 1
            check_finite(step, checkpoint=run_ref, loss_D=loss_d, loss_G_GAN=loss_g_gan, loss_G_L1=loss_g_l1)
            totals["loss_D"] += loss_d.item()
            totals["loss_G"] += loss_g.item()
            totals["loss_G_GAN"] += loss_g_gan.item()
            totals["loss_G_L1"] += loss_g_l1.item()
            if progress is not None and main:
                progress(epoch, i + 1, batches)
        _requires_grad(D, True)
        lr = opt_g.param_groups[0]["lr"]  # the rate this epoch trained with
        sched_g.step()
        sched_d.step()

        # Validation, logging, model folders, then the checkpoint (the commit point of the epoch).
        # Losses are averaged over ranks; the main rank validates and every rank takes its result.
        metrics = {k: all_reduce_mean(v, dist_info) for k, v in _mean(totals, batches).items()}
        metrics["lr"] = lr
        if val_loader is not None:
            scores = _validate(G, val_loader, device, scorer, cfg.select_by) if main else {}
            metrics.update(broadcast_object(scores, dist_info))
        # The generator handed on: the last one, or the best so far by select_by's metric.
        score = None if cfg.select_by == "last" else _finite_or_none(metrics.get(f"val_{cfg.select_by}"))
        improved = _selects(cfg.select_by, score, best_metric, best_epoch)
        if improved:
            best_epoch, best_metric = epoch, score
        if run is not None:
            run.log(epoch, epoch=epoch, **metrics)
            if improved:
                G.save(best_dir)
                D.save(out / "best_discriminator")  # students start from the teacher's critic (GAN Compression)
            G.save(last_dir)
            D.save(out / "last_discriminator")
            save_checkpoint(
                run,
                epoch,
                **state,
                extra={"best_epoch": best_epoch, "best_metric": best_metric},
                keep=KEEP_CHECKPOINTS,
            )
            if on_epoch is not None:
                on_epoch(epoch, metrics)
        barrier(dist_info)  # the other ranks wait until the epoch is committed

    return Pix2PixResult(
        run=out,
        epochs=total_epochs,
        epochs_run=total_epochs - start_epoch,
        resumed_from=start_epoch if ckpt else None,
        select_by=cfg.select_by,
        best_epoch=best_epoch,
        best_metric=best_metric,
        best_generator=best_dir,
        last_generator=last_dir,
        best_discriminator=out / "best_discriminator",
        discriminator=d_info,
        last_metrics=metrics,
    )


# --------------------------------------------------------------------------- CycleGAN


def train_cyclegan(
    root: PathLike,
    out: PathLike,
    cfg: CycleGANConfig | None = None,
    *,
    resume: bool = False,
    progress: Progress | None = None,
    on_epoch: OnEpoch | None = None,
    device: str | torch.device = "cpu",
) -> CycleGANResult:
    """Train CycleGAN teachers on ``root/trainA`` and ``root/trainB``; see the module docs.

    ``G_A`` maps A to B, ``G_B`` maps B to A (``direction="BtoA"`` swaps the folders). Returns a
    :class:`~edgegan.compress.results.CycleGANResult` (which still reads as the dict returned before);
    ``G_A``/``G_B`` are the generators ``cfg.select_by`` picked (the last ones for ``last``, and then ``last_G_*``
    name the same folders).
    """
    cfg = cfg or CycleGANConfig()
    cfg = dataclasses.replace(cfg, generator_options=_typed_options("resnet_generator", cfg.generator_options))
    device = torch.device(device)
    out = Path(out)
    total_epochs = cfg.epochs + cfg.decay_epochs
    lambda_idt = cfg.lambda_identity * cfg.lambda_cycle

    dataset = UnpairedDataset(
        root, phase="train", direction=cfg.direction, load_size=cfg.load_size, crop_size=cfg.crop_size
    )
    loader = _train_loader(dataset, cfg.batch_size)
    scorer = _CycleGANScorer(root, cfg, device) if cfg.select_by != "last" else None

    set_seed(cfg.seed)
    G_A = init_gan_weights(edgegan.build("resnet_generator", **cfg.generator_options)).to(device)  # A -> B
    G_B = init_gan_weights(edgegan.build("resnet_generator", **cfg.generator_options)).to(device)  # B -> A
    D_A = init_gan_weights(_discriminator(3, cfg, device))  # real B?
    D_B = init_gan_weights(_discriminator(3, cfg, device))  # real A?
    gan_loss = GANLoss(cfg.gan_mode)  # type: ignore[arg-type]
    opt_g = _adam(itertools.chain(G_A.parameters(), G_B.parameters()), cfg)
    opt_d = _adam(itertools.chain(D_A.parameters(), D_B.parameters()), cfg)
    sched_g, sched_d = _scheduler(opt_g, cfg), _scheduler(opt_d, cfg)
    pool_a, pool_b = ImagePool(cfg.pool_size), ImagePool(cfg.pool_size)  # past fake A / fake B images
    state = {
        "modules": {"G_A": G_A, "G_B": G_B, "D_A": D_A, "D_B": D_B},
        "optimizers": {"G": opt_g, "D": opt_d},
        "schedulers": {"G": sched_g, "D": sched_d, "pool_A": pool_a, "pool_B": pool_b},
    }

    d_info = _describe_d(cfg)
    run_config = {"recipe": "cyclegan", "data": {"root": _resolved(root)}, "train": cfg, "discriminator": d_info}
    run = RunDir(out, run_config, resume=resume, upgrade=_upgrade_run_config)
    _log_d(d_info, cfg.crop_size)
    ckpt = load_checkpoint(run, **state) if resume else None
    start_epoch = ckpt.step if ckpt else 0
    best = (ckpt.extra or {}) if ckpt else {}
    best_epoch: int | None = best.get("best_epoch")
    best_metric: float | None = best.get("best_metric")
    last_a, last_b = (out / "G_A", out / "G_B") if cfg.select_by == "last" else (out / "last_G_A", out / "last_G_B")
    metrics: dict[str, float] = {}

    for net in (G_A, G_B, D_A, D_B):
        net.train()
    batches = len(loader)
    for epoch in range(start_epoch + 1, total_epochs + 1):
        totals = dict.fromkeys(("loss_D_A", "loss_D_B", "loss_G_A", "loss_G_B", "loss_cycle", "loss_idt"), 0.0)
        for i, batch in enumerate(loader):
            real_a, real_b = batch["A"].to(device), batch["B"].to(device)
            fake_b = G_A(real_a)
            rec_a = G_B(fake_b)
            fake_a = G_B(real_b)
            rec_b = G_A(fake_a)

            # D step: D_A tells real B from (pooled) fake B, D_B real A from fake A.
            _requires_grad(D_A, True)
            _requires_grad(D_B, True)
            pooled_b, pooled_a = pool_b.query(fake_b), pool_a.query(fake_a)
            loss_d_a = 0.5 * (gan_loss(D_A(real_b), True) + gan_loss(D_A(pooled_b), False))
            loss_d_b = 0.5 * (gan_loss(D_B(real_a), True) + gan_loss(D_B(pooled_a), False))
            opt_d.zero_grad(set_to_none=True)
            (loss_d_a + loss_d_b).backward()
            opt_d.step()

            # G step: fool both Ds, reconstruct through the cycle, leave target-domain images alone.
            _requires_grad(D_A, False)
            _requires_grad(D_B, False)
            loss_g_a = gan_loss(D_A(fake_b), True, for_discriminator=False)
            loss_g_b = gan_loss(D_B(fake_a), True, for_discriminator=False)
            loss_cycle = cfg.lambda_cycle * (l1_loss(rec_a, real_a) + l1_loss(rec_b, real_b))
            if lambda_idt > 0:
                loss_idt = lambda_idt * (l1_loss(G_A(real_b), real_b) + l1_loss(G_B(real_a), real_a))
            else:
                loss_idt = torch.zeros((), device=device)
            loss_g = loss_g_a + loss_g_b + loss_cycle + loss_idt
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()

            losses = {
                "loss_D_A": loss_d_a,
                "loss_D_B": loss_d_b,
                "loss_G_A": loss_g_a,
                "loss_G_B": loss_g_b,
                "loss_cycle": loss_cycle,
                "loss_idt": loss_idt,
            }
            check_finite((epoch - 1) * batches + i + 1, checkpoint=run, **losses)
            for name, value in losses.items():
                totals[name] += value.item()
            if progress is not None:
                progress(epoch, i + 1, batches)
        _requires_grad(D_A, True)
        _requires_grad(D_B, True)
        lr = opt_g.param_groups[0]["lr"]
        sched_g.step()
        sched_d.step()

        # No ground truth: keep the latest generators, or the pair whose outputs are nearest the other
        # domain's validation images (valA/valB, held out by the user; never the test folders) by FID/KID (select_by).
        metrics = {**_mean(totals, batches), "lr": lr}
        score = None
        if scorer is not None:
            metrics.update(scorer(G_A, G_B))
            score = _finite_or_none(metrics[f"val_{cfg.select_by}"])
        improved = _selects(cfg.select_by, score, best_metric, best_epoch)
        if improved:
            best_epoch, best_metric = epoch, score
        run.log(epoch, epoch=epoch, **metrics)
        if improved and cfg.select_by != "last":
            G_A.save(out / "G_A")
            G_B.save(out / "G_B")
        G_A.save(last_a)
        G_B.save(last_b)
        save_checkpoint(
            run, epoch, **state, extra={"best_epoch": best_epoch, "best_metric": best_metric}, keep=KEEP_CHECKPOINTS
        )
        if on_epoch is not None:
            on_epoch(epoch, metrics)

    return CycleGANResult(
        run=out,
        epochs=total_epochs,
        epochs_run=total_epochs - start_epoch,
        resumed_from=start_epoch if ckpt else None,
        select_by=cfg.select_by,
        best_epoch=best_epoch,
        best_metric=best_metric,
        G_A=out / "G_A",
        G_B=out / "G_B",
        last_G_A=last_a,
        last_G_B=last_b,
        discriminator=d_info,
        last_metrics=metrics,
    )


class _CycleGANScorer:
    """CycleGAN's ``select_by`` (FID or KID): ``G_A(valA)`` against ``valB`` plus ``G_B(valB)`` against
    ``valA`` (``direction`` swaps the folders), all at ``crop_size``. The validation images, the Inception network
    and the real images' features are loaded once."""

    def __init__(self, root: PathLike, cfg: CycleGANConfig, device: torch.device) -> None:
        from edgegan.metrics.inception import load_fid_inception

        size: dict[str, Any] = {"load_size": cfg.load_size, "crop_size": cfg.crop_size}
        data = UnpairedDataset(root, phase="val", direction=cfg.direction, train=False, serial_b=True, **size)
        self.val = {
            "A": torch.stack([data[i]["A"] for i in range(len(data.files_a))]),
            "B": torch.stack([data[i]["B"] for i in range(len(data.files_b))]),
        }
        for side, images in self.val.items():
            if images.shape[0] < 2:
                raise ConfigError(f"select_by {cfg.select_by} needs at least 2 images in val{side}")
        self.metric = cfg.select_by
        self.device = device
        self.inception = load_fid_inception(device=device)
        self.real = {side: self._features(images) for side, images in self.val.items()}

    def _features(self, images: Tensor) -> Any:
        from edgegan.metrics.inception import extract_features

        return extract_features(self.inception, to01(images.float()), device=self.device)

    def _distance(self, real: Any, fake: Any) -> float:
        from edgegan.metrics.fid import fid_from_features, kid

        if self.metric == "fid":
            return float(fid_from_features(real, fake).value)
        return float(kid(real, fake).mean)

    @torch.no_grad()
    def __call__(self, g_a: nn.Module, g_b: nn.Module) -> dict[str, float]:
        """``{"val_<metric>_A": G_A's, "val_<metric>_B": G_B's, "val_<metric>": their sum}``."""
        out = {}
        for side, g, source, target in (("A", g_a, "A", "B"), ("B", g_b, "B", "A")):
            g.eval()
            fake = torch.cat([g(x.to(self.device)).cpu() for x in self.val[source].split(8)])
            g.train()
            out[f"val_{self.metric}_{side}"] = self._distance(self.real[target], self._features(fake))
        out[f"val_{self.metric}"] = out[f"val_{self.metric}_A"] + out[f"val_{self.metric}_B"]
        return out
