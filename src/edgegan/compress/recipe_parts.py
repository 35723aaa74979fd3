"""Parts the GAN Compression distillation recipes share (:func:`~edgegan.compress.distill.distill`,
:func:`~edgegan.compress.supernet_train.train_supernet`, and fine-tuning through ``distill``).

Bookkeeping only: loading a run's inputs from folders, the optimisers and their learning-rate rule, the
discriminator, the held-out validation slice, and what a run records about its networks. Each recipe keeps
its D and G steps in its own loop.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from edgegan.data.datasets import PairedDataset, UnpairedDataset, split_validation, subset
from edgegan.errors import ConfigError
from edgegan.models.discriminators import PatchDiscriminator
from edgegan.models.mobile_supernet import MobileResnetSupernet
from edgegan.nn.layers import init_gan_weights
from edgegan.registry import load

__all__ = [
    "Progress",
    "RecipeConfig",
    "check_generator",
    "count_params",
    "describe",
    "eval_view",
    "json_safe",
    "load_from_folders",
    "make_discriminator",
    "make_optimizers",
    "split_train_val",
    "to01",
]

Progress = Callable[[int, int, int], None]
"""``progress(epoch, batches_done, batches_per_epoch)``; epochs count from 1."""


class RecipeConfig(Protocol):
    """The settings these parts read: what :class:`~edgegan.compress.distill.DistillConfig` and
    :class:`~edgegan.compress.supernet_train.SupernetConfig` both have."""

    lr: float
    betas: tuple[float, float]
    load_size: int | None
    crop_size: int
    direction: str
    paired: bool
    val_fraction: float
    seed: int

    def lr_factor(self, epoch: int) -> float: ...


def to01(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] mapped to [0, 1] (clamped)."""
    return ((x + 1) / 2).clamp(0, 1)


def count_params(model: nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


def describe(model: nn.Module) -> dict[str, Any]:
    """What a run's config records about a network: its architecture, config and (supernet) active config."""
    config = getattr(model, "config", None)
    return {
        "arch": getattr(model, "arch", type(model).__name__),
        "config": config.to_dict() if config is not None and hasattr(config, "to_dict") else None,
        "active_config": list(model.active_config) if isinstance(model, MobileResnetSupernet) else None,
    }


def json_safe(obj: Any) -> Any:
    """``obj`` with non-finite floats replaced by None, tuples by lists and other mappings (a recipe's result) by
    dicts, ready for strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def check_generator(model: nn.Module, role: str) -> None:
    """ConfigError unless ``model`` exposes distillation features (a ResNet or mobile ResNet generator)."""
    if not callable(getattr(model, "distill_feature_names", None)):
        raise ConfigError(
            f"the {role} is a {type(model).__name__}, which exposes no distillation features; "
            "use a resnet_generator, mobile_resnet_generator or mobile_resnet_supernet"
        )


def load_from_folders(
    teacher_dir: str | os.PathLike[str],
    a_dir: str | os.PathLike[str],
    b_dir: str | os.PathLike[str] | None,
    cfg: RecipeConfig,
    discriminator_dir: str | os.PathLike[str] | None,
    *,
    task: str,
) -> tuple[nn.Module, nn.Module | None, Dataset[Any]]:
    """The teacher, the discriminator (None without ``discriminator_dir``) and the data set of a run read from folders.

    Paired (``cfg.paired``): ``a_dir``/``b_dir`` images matched by file stem. Unpaired: the inputs are ``a_dir``'s
    images (``b_dir``'s with ``direction="BtoA"``) and ``b_dir`` may be None. ``task`` names the run in the error
    for a missing B folder.
    """
    teacher = load(teacher_dir)
    check_generator(teacher, f"teacher in {teacher_dir}")
    discriminator = load(discriminator_dir) if discriminator_dir is not None else None
    if discriminator is not None and not hasattr(getattr(discriminator, "config", None), "ndf"):
        raise ConfigError(f"{discriminator_dir} holds a {discriminator.arch}, not a discriminator")
    kw: dict[str, Any] = {"direction": cfg.direction, "load_size": cfg.load_size, "crop_size": cfg.crop_size}
    if cfg.paired:
        if b_dir is None:
            raise ConfigError(f"paired {task} needs a B (target) folder; pass paired=False for unpaired data")
        data: Dataset[Any] = PairedDataset.from_folders(a_dir, b_dir, **kw)
    else:
        # Only the inputs are read: the targets will be the teacher's outputs.
        inputs = a_dir if cfg.direction == "AtoB" else b_dir
        if inputs is None:
            raise ConfigError("direction BtoA takes the inputs from the B folder; give one")
        kw["direction"] = "AtoB"
        data = UnpairedDataset.from_folders(inputs, inputs, serial_b=True, **kw)
    return teacher, discriminator, data


def make_optimizers(
    generator_side: Sequence[nn.Module], d: nn.Module, cfg: RecipeConfig
) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer, Any, Any]:
    """Adam for the student side (student + mappers) and for D, each with the pix2pix lr rule."""
    g_params = [p for m in generator_side for p in m.parameters()]
    opt_g = torch.optim.Adam(g_params, lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr, betas=cfg.betas)
    return (
        opt_g,
        opt_d,
        torch.optim.lr_scheduler.LambdaLR(opt_g, cfg.lr_factor),
        torch.optim.lr_scheduler.LambdaLR(opt_d, cfg.lr_factor),
    )


def eval_view(data: Dataset[Any]) -> Dataset[Any]:
    """The same items without random crops/flips (for validation), where the data set supports it."""
    if isinstance(data, Subset):
        return Subset(eval_view(data.dataset), list(data.indices))
    if isinstance(data, PairedDataset | UnpairedDataset) and data.train:
        view = copy.copy(data)
        view.train = False
        return view
    return data


def split_train_val(data: Dataset[Any], n_items: int, cfg: RecipeConfig) -> tuple[Dataset[Any], Dataset[Any] | None]:
    """The training subset and a fixed held-out validation slice (deterministic view), by cfg.seed."""
    train_idx, val_idx = split_validation(n_items, cfg.val_fraction, cfg.seed) if n_items > 1 else ([0], [])
    return subset(data, train_idx), (subset(eval_view(data), val_idx) if val_idx else None)


def make_discriminator(
    discriminator: nn.Module | None, input_nc: int, output_nc: int, ndf: int, n_layers: int, device: torch.device
) -> tuple[nn.Module, bool]:
    """A trainable copy of the teacher's discriminator, or a fresh conditional PatchGAN; also
    whether it is conditional (sees input and image) or judges the image alone (CycleGAN's)."""
    if discriminator is not None:
        d = copy.deepcopy(discriminator).to(device)
        for p in d.parameters():
            p.requires_grad_(True)
    else:  # fresh, with the references' N(0, 0.02) initialisation
        d = init_gan_weights(PatchDiscriminator(input_nc=input_nc + output_nc, ndf=ndf, n_layers=n_layers)).to(device)
    d_input_nc = getattr(getattr(d, "config", None), "input_nc", None)
    if d_input_nc == input_nc + output_nc:
        conditional = True
    elif d_input_nc == output_nc:
        conditional = False
    else:
        raise ConfigError(
            f"the discriminator takes {d_input_nc} channels; expected {input_nc + output_nc} (conditional, input "
            f"and image) or {output_nc} (the generated image only)"
        )
    return d.train(), conditional
