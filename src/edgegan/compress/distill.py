"""GAN Compression step 1: distil a small mobile ResNet generator from a trained teacher generator.

The student G learns from the teacher G' with (paper eq. 4)::

    L = L_cGAN + λ_recon · L1(G(x), y) + λ_distill · Σ_t MSE(f_t(G_t(x)), G'_t(x))

over the teacher's distillation layers (end of down-sampling, then every third of the residual
trunk: ``down2, block3, block6, block9`` for nine blocks); ``f_t`` is a learnable 1×1 conv from the
student's channels to the teacher's (:class:`DistillMapper`). ``y`` is the ground truth for paired
(pix2pix) data; for unpaired (CycleGAN) data it is the teacher's output, so every input becomes a
pseudo-pair. The discriminator starts from a copy of the teacher's discriminator when one is given
(the paper's "keep D"), else from scratch; it is conditional (sees input and image) when its
``input_nc`` is input + output channels, unconditional when it equals the output channels.

The default student starts from the teacher's weights: every part whose tensors are leading slices of
the teacher's (stem, down- and up-sampling, head; the residual blocks too when the teacher is a mobile
generator) takes the teacher's first channels (:func:`inherit_from_teacher`), as the reference's
``distill.sh`` restores the student from the teacher (``--restore_pretrained_G_path``).

One epoch of :func:`distill`, top to bottom: for every batch a D step, then a G step (student and
mappers together); then the mean losses are logged, the student is scored on a held-out slice
(PSNR and SSIM against the target and against the teacher's output, plus LPIPS/FID/KID when
``select_by`` asks for one), the last student (and, with ``select_by`` other than ``last``, the best
one by that metric) and the last discriminator are saved as plain model folders, and a resumable
checkpoint is written. The student handed on is the last epoch's by default, as the reference's
next stage restores ``latest_net_G.pth``: validation PSNR rewards blur, so it never picks by default.

A once-for-all :class:`~edgegan.models.MobileResnetSupernet` works as the student too: its mappers
are sized for the supernet's full widths and use the first ``c`` input channels of their weights
when the active sub-network is narrower; the saved students are then the extracted sub-network.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

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
    to01,
)  # json_safe is also imported from here by compress/pipeline.py and ugc/pipeline.py
from edgegan.compress.results import DistillResult
from edgegan.compress.supernet import extract_subnet
from edgegan.data.datasets import DIRECTIONS
from edgegan.errors import ConfigError
from edgegan.fileio import atomic_write_json
from edgegan.losses import GANLoss
from edgegan.metrics.reference import psnr
from edgegan.metrics.ssim import ssim
from edgegan.models.mobile_resnet import MobileResnetGenerator
from edgegan.models.mobile_supernet import MobileResnetSupernet
from edgegan.nn.dynamic import load_leading_slices
from edgegan.nn.layers import init_gan_weights
from edgegan.registry import EdgeModel
from edgegan.runs import RunDir, check_finite, load_checkpoint, save_checkpoint, set_seed
from edgegan.weights import available

if TYPE_CHECKING:
    from edgegan.compress.supernet_train import SupernetConfig

__all__ = [
    "LOWER_IS_BETTER",
    "METRICS",
    "METRIC_WEIGHTS",
    "SELECT_BY",
    "DistillConfig",
    "DistillMapper",
    "DistillResult",
    "Scorer",
    "better",
    "check_metric",
    "check_training_fields",
    "distill",
    "distill_from_folders",
    "distill_layers",
    "distillation_loss",
    "feature_channels",
    "inherit_from_teacher",
    "make_targets",
    "parse_channels",
]

GAN_MODES = ("vanilla", "lsgan", "hinge", "wgangp")
PROBE_SIZE = 32  # spatial size of the dummy input used to read feature widths
STUDENT_INITS = ("teacher", "random")

SELECT_BY = ("last", "ssim", "psnr", "lpips", "fid", "kid")
"""Which epoch's model a trainer hands on: the last one (the reference: every next stage restores
``latest_net_G.pth``), or the best on the validation slice by a metric. PSNR rewards blur (issue 13: a
constant image outscored every trained model on facades), so it is never the default."""
METRICS = SELECT_BY[1:]
LOWER_IS_BETTER = frozenset({"lpips", "fid", "kid"})
METRIC_WEIGHTS: dict[str, tuple[str, ...]] = {
    "lpips": ("alexnet", "lpips-alex"),
    "fid": ("inception-fid",),
    "kid": ("inception-fid",),
}
PSNR_CAP = 100.0  # identical images score inf; capped so means stay finite and JSON-friendly
SSIM_MIN_SIZE = 11  # the SSIM window


# ------------------------------------------------------------------------------------- config


def parse_channels(channels: str | Sequence[int]) -> tuple[int, ...]:
    """``"16_16_32_16_32_32_16_16"`` (or ``,``-separated, or a sequence) -> 8 positive ints."""
    if isinstance(channels, str):
        sep = "_" if "_" in channels else ","
        parts = [p.strip() for p in channels.split(sep) if p.strip()]
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise ConfigError(f"channels must be 8 integers like 16_16_32_16_32_32_16_16, got {channels!r}") from None
    else:
        values = list(channels)
        if any(isinstance(v, bool) or not isinstance(v, int) for v in values):
            raise ConfigError(f"channels must be 8 integers, got {channels!r}")
    if len(values) != 8:
        raise ConfigError(f"channels needs 8 entries c0_c1_..._c7, got {len(values)} in {channels!r}")
    if min(values) < 1:
        raise ConfigError(f"channels must be positive, got {channels!r}")
    return tuple(int(v) for v in values)


@dataclass
class DistillConfig:
    """Settings of one distillation run.

    ``channels`` is the default student's c0..c7 (see ``MobileResnetGeneratorConfig``);
    ``n_blocks`` its residual blocks (None: the teacher's); ``student_init`` whether that default
    student starts from the teacher's leading channels (``teacher``) or from its own random weights.
    The learning rate is constant for ``epochs`` epochs, then decays linearly towards zero over
    ``decay_epochs`` more. ``ndf``/``d_layers`` size a fresh discriminator (ignored when the teacher's
    is given). ``select_by`` picks the student handed on (see :data:`SELECT_BY`); ``lpips``, ``fid``
    and ``kid`` need their weights (:mod:`edgegan.weights`).
    """

    channels: str | tuple[int, ...] = "16_16_32_16_32_32_16_16"
    n_blocks: int | None = None
    # λ_recon 100, λ_distill 1: GAN Compression's Table 5 for pix2pix on edges→shoes and cityscapes, and
    # the reference's defaults (distillers/base_resnet_distiller.py). Table 5 has 10 / 0.01 for
    # map→aerial photo and CycleGAN; set them per task. SupernetConfig and fine-tuning use the same defaults.
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
    student_init: str = "teacher"

    def __post_init__(self) -> None:
        self.channels = parse_channels(self.channels)
        check_metric(self.select_by, "select_by", SELECT_BY)
        if self.student_init not in STUDENT_INITS:
            raise ConfigError(f"student_init must be one of {', '.join(STUDENT_INITS)}, got {self.student_init!r}")
        check_training_fields(self)

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.decay_epochs

    @property
    def channels_str(self) -> str:
        return "_".join(str(c) for c in self.channels)

    def lr_factor(self, epoch: int) -> float:
        """Multiplier of ``lr`` during 0-based ``epoch`` (pix2pix's linear decay rule)."""
        return 1.0 - max(0, epoch + 1 - self.epochs) / float(self.decay_epochs + 1)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["channels"] = self.channels_str
        d["betas"] = list(self.betas)
        return d


def check_training_fields(cfg: DistillConfig | SupernetConfig) -> None:
    """The checks :class:`DistillConfig` and :class:`~edgegan.compress.supernet_train.SupernetConfig` share (their
    training fields, ``n_blocks`` to ``seed``); ConfigError on the first bad one. Also turns ``betas`` into a tuple."""
    if cfg.n_blocks is not None and (isinstance(cfg.n_blocks, bool) or cfg.n_blocks < 0):
        raise ConfigError(f"n_blocks must be >= 0 or None, got {cfg.n_blocks!r}")
    for name in ("lambda_recon", "lambda_distill"):
        value = getattr(cfg, name)
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
    if cfg.gan_mode not in GAN_MODES:
        raise ConfigError(f"gan_mode must be one of {', '.join(GAN_MODES)}, got {cfg.gan_mode!r}")
    if cfg.gan_mode == "wgangp":
        raise ConfigError("gan_mode wgangp needs a gradient penalty this recipe does not add; use hinge or lsgan")
    if not (math.isfinite(cfg.lr) and cfg.lr > 0):
        raise ConfigError(f"lr must be positive, got {cfg.lr!r}")
    cfg.betas = tuple(float(b) for b in cfg.betas)  # type: ignore[assignment]
    if len(cfg.betas) != 2 or not all(0.0 <= b < 1.0 for b in cfg.betas):
        raise ConfigError(f"betas must be two numbers in [0, 1), got {cfg.betas!r}")
    for name in ("epochs", "decay_epochs"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
    if cfg.total_epochs < 1:
        raise ConfigError("epochs + decay_epochs must be at least 1")
    for name in ("batch_size", "crop_size", "ndf", "d_layers"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if cfg.crop_size % 4:
        raise ConfigError(f"crop_size must be a multiple of 4 (two stride-2 downs), got {cfg.crop_size}")
    if cfg.load_size is not None and cfg.load_size < cfg.crop_size:
        raise ConfigError(f"load_size ({cfg.load_size}) must not be smaller than crop_size ({cfg.crop_size})")
    if cfg.direction not in DIRECTIONS:
        raise ConfigError(f"direction must be one of {', '.join(DIRECTIONS)}, got {cfg.direction!r}")
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {cfg.val_fraction!r}")
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {cfg.seed!r}")


# ------------------------------------------------------------------------ validation metrics


def check_metric(name: str, option: str = "metric", allowed: Sequence[str] = METRICS) -> str:
    """``name`` if it is one of ``allowed`` and its weights are present, else a one-line ConfigError."""
    if name not in allowed:
        raise ConfigError(f"{option} must be one of {', '.join(allowed)}, got {name!r}")
    for weights_name in METRIC_WEIGHTS.get(name, ()):
        path, reason = available(weights_name)
        if path is None:
            raise ConfigError(f"{option} {name} needs the {weights_name} weights: {reason}")
    return name


def better(metric: str, new: float, old: float | None) -> bool:
    """Whether score ``new`` beats ``old`` (None: nothing yet) by ``metric``'s direction."""
    if old is None:
        return True
    return new < old if metric in LOWER_IS_BETTER else new > old


class Scorer:
    """Scores generated images against references, both ``[N, C, H, W]`` in [-1, 1], over a validation slice.

    PSNR (dB on [0, 1], each image capped at :data:`PSNR_CAP`) and SSIM are always computed (the mean
    over images; SSIM None below :data:`SSIM_MIN_SIZE` px); ``metric`` adds LPIPS (the mean distance),
    FID or KID (between the two sets). The LPIPS or Inception network is loaded once, when the scorer
    is made; the references' Inception features are kept while the same references come back.
    """

    def __init__(self, metric: str = "ssim", device: str | torch.device = "cpu") -> None:
        self.metric = check_metric(metric)
        self.device = torch.device(device)
        self._lpips: nn.Module | None = None
        self._inception: nn.Module | None = None
        self._real: tuple[torch.Tensor, Any] | None = None
        if metric == "lpips":
            from edgegan.metrics.lpips import load_lpips

            self._lpips = load_lpips(device=self.device)
        elif metric in ("fid", "kid"):
            from edgegan.metrics.inception import load_fid_inception

            self._inception = load_fid_inception(device=self.device)

    def __call__(self, fakes: torch.Tensor, refs: torch.Tensor, *, extra: bool = True) -> dict[str, float | None]:
        """``{"psnr", "ssim"}`` and, when ``extra``, the scorer's ``metric`` too."""
        if fakes.shape != refs.shape or fakes.dim() != 4:
            raise ConfigError(f"cannot score images {tuple(fakes.shape)} against {tuple(refs.shape)}")
        x, y = to01(fakes.float()), to01(refs.float())
        out: dict[str, float | None] = {
            "psnr": float(psnr(x, y).double().clamp(max=PSNR_CAP).mean()),
            "ssim": float(ssim(x, y).double().mean()) if min(x.shape[-2:]) >= SSIM_MIN_SIZE else None,
        }
        if extra and self._lpips is not None:
            out["lpips"] = float(self._lpips(fakes.clamp(-1, 1).to(self.device), refs.to(self.device)).mean())
        if extra and self._inception is not None:
            out[self.metric] = self._distribution(x, y)
        return out

    def _distribution(self, fakes01: torch.Tensor, refs01: torch.Tensor) -> float:
        from edgegan.metrics.fid import fid_from_features, kid
        from edgegan.metrics.inception import extract_features

        if fakes01.shape[0] < 2:
            raise ConfigError(f"{self.metric} needs at least 2 validation images, got {fakes01.shape[0]}")
        assert self._inception is not None
        if self._real is None or not torch.equal(self._real[0], refs01):
            real = extract_features(self._inception, refs01, device=self.device)  # type: ignore[arg-type]
            self._real = (refs01.clone(), real)
        fake = extract_features(self._inception, fakes01, device=self.device)  # type: ignore[arg-type]
        if self.metric == "fid":
            return float(fid_from_features(self._real[1], fake).value)
        return float(kid(self._real[1], fake, num_subsets=100, subset_size=1000).mean)


# ----------------------------------------------------------------------- distillation layers


def distill_layers(teacher: nn.Module, student: nn.Module) -> list[str]:
    """The layer names both networks distil at; ConfigError if they do not line up."""
    check_generator(teacher, "teacher")
    check_generator(student, "student")
    t_names = list(teacher.distill_feature_names())  # type: ignore[operator]
    s_names = list(student.distill_feature_names())  # type: ignore[operator]
    if t_names != s_names:
        t_blocks = len(getattr(teacher, "blocks", ()))
        s_blocks = len(getattr(student, "blocks", ()))
        raise ConfigError(
            f"student and teacher features do not line up: teacher distils {', '.join(t_names)} "
            f"({t_blocks} blocks), student {', '.join(s_names)} ({s_blocks} blocks); "
            f"give the student the teacher's n_blocks ({t_blocks})"
        )
    if not t_names:
        raise ConfigError("the teacher has no layers to distil")
    for key in ("input_nc", "output_nc"):
        t_val = getattr(getattr(teacher, "config", None), key, None)
        s_val = getattr(getattr(student, "config", None), key, None)
        if t_val is not None and s_val is not None and t_val != s_val:
            raise ConfigError(f"student and teacher differ in {key}: {s_val} vs {t_val}")
    return t_names


@torch.no_grad()
def feature_channels(model: nn.Module, names: Sequence[str], size: int = PROBE_SIZE) -> dict[str, tuple[int, ...]]:
    """Shape ``(channels, h, w)`` of each named feature for a ``size``² input, read with a dummy pass.

    A supernet is probed at its largest config (its full widths), then set back to its active one.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    input_nc = getattr(getattr(model, "config", None), "input_nc", 3)
    x = torch.zeros(1, input_nc, size, size, device=device)
    supernet = model if isinstance(model, MobileResnetSupernet) else None
    active = supernet.active_config if supernet is not None else None
    if supernet is not None:
        supernet.set_config(supernet.largest_config())
    was_training = model.training
    try:
        model.eval()
        _, feats = model(x, return_features=True)
    finally:
        model.train(was_training)
        if supernet is not None and active is not None:
            supernet.set_config(active)
    missing = [n for n in names if n not in feats]
    if missing:
        raise ConfigError(f"{type(model).__name__} returns no feature {missing[0]!r}")
    return {n: tuple(feats[n].shape[1:]) for n in names}


class DistillMapper(nn.Module):
    """One learnable 1×1 conv per distilled layer, from the student's channels to the teacher's.

    ``student_channels`` are the widest widths the student can produce (a supernet's full
    widths); when a narrower sub-network feeds ``c`` channels, the first ``c`` input channels of the
    weight are used, matching the supernet's leading-slice weight sharing.
    """

    def __init__(self, student_channels: Mapping[str, int], teacher_channels: Mapping[str, int]) -> None:
        super().__init__()
        if list(student_channels) != list(teacher_channels):
            raise ConfigError(
                f"mapper layers differ: student {', '.join(student_channels)} vs teacher {', '.join(teacher_channels)}"
            )
        if not student_channels:
            raise ConfigError("a DistillMapper needs at least one layer")
        self.names = list(student_channels)
        self.maps = nn.ModuleDict(
            {name: nn.Conv2d(int(student_channels[name]), int(teacher_channels[name]), 1) for name in self.names}
        )

    @classmethod
    def for_models(cls, teacher: nn.Module, student: nn.Module) -> DistillMapper:
        """Mappers for ``distill_layers(teacher, student)``, sized by probing both networks."""
        names = distill_layers(teacher, student)
        t_shapes = feature_channels(teacher, names)
        s_shapes = feature_channels(student, names)
        for n in names:
            if t_shapes[n][1:] != s_shapes[n][1:]:
                raise ConfigError(
                    f"feature {n!r} has spatial size {s_shapes[n][1:]} in the student, {t_shapes[n][1:]} in the teacher"
                )
        return cls({n: s_shapes[n][0] for n in names}, {n: t_shapes[n][0] for n in names})

    def forward(self, name: str, x: torch.Tensor) -> torch.Tensor:
        if name not in self.maps:
            raise ConfigError(f"no mapper for layer {name!r}; have {', '.join(self.names)}")
        conv = self.maps[name]
        assert isinstance(conv, nn.Conv2d)
        c = x.shape[1]
        if c > conv.in_channels:
            raise ConfigError(
                f"layer {name!r}: student feature has {c} channels, the mapper takes at most {conv.in_channels}"
            )
        weight = conv.weight if c == conv.in_channels else conv.weight[:, :c]
        return F.conv2d(x, weight, conv.bias)


def distillation_loss(
    teacher_feats: Mapping[str, torch.Tensor],
    student_feats: Mapping[str, torch.Tensor],
    mapper: DistillMapper,
    names: Sequence[str],
) -> torch.Tensor:
    """Σ_t MSE(f_t(student_t), teacher_t) over ``names``; teacher features get no gradient."""
    if not names:
        raise ConfigError("distillation_loss needs at least one layer name")
    total: torch.Tensor | None = None
    for name in names:
        if name not in teacher_feats or name not in student_feats:
            side = "teacher" if name not in teacher_feats else "student"
            raise ConfigError(f"the {side} features have no layer {name!r}")
        mapped = mapper(name, student_feats[name])
        target = teacher_feats[name].detach()
        if mapped.shape != target.shape:
            raise ConfigError(
                f"layer {name!r}: mapped student feature {tuple(mapped.shape)} vs teacher {tuple(target.shape)}"
            )
        term = F.mse_loss(mapped, target)
        total = term if total is None else total + term
    assert total is not None
    return total


# ------------------------------------------------------------------------ student initialisation


def _is_leading_slice(part: nn.Module, source: nn.Module) -> bool:
    """Whether every tensor of ``part`` has a same-named tensor in ``source`` that it is a leading slice of."""
    dst, src = part.state_dict(), source.state_dict()
    if not dst or set(dst) != set(src):
        return False
    return all(
        d.dim() == src[k].dim() and all(a <= b for a, b in zip(d.shape, src[k].shape, strict=True))
        for k, d in dst.items()
    )


@torch.no_grad()
def inherit_from_teacher(student: nn.Module, teacher: nn.Module) -> list[str]:
    """Copy into ``student`` the leading channels of ``teacher``'s weights, part by part; return the parts copied.

    The parts are the top-level layers (``stem``, ``head``) and each entry of a layer list (``down.0``,
    ``blocks.3``, ``up.1``). A part is copied when it has the teacher's tensor names and every tensor is a
    leading slice of the teacher's (first ``c`` entries along every dimension, the supernet's weight
    sharing rule, :func:`~edgegan.nn.dynamic.load_leading_slices`); any other part keeps its weights. A
    ResNet teacher's blocks (full 3×3 convs) do not fit a mobile student's separable blocks, so those stay
    as initialised; a mobile teacher gives every part, as in the reference (where teacher and student
    are both mobile; it keeps the channels of largest L1 norm, we keep the leading ones, which are the
    channels a once-for-all network trains most). The head is left alone when one model adds the input
    to its output (``residual``) and the other does not: the same weights would mean different things.
    """
    t_children = dict(teacher.named_children())
    same_output = bool(getattr(getattr(student, "config", None), "residual", False)) == bool(
        getattr(getattr(teacher, "config", None), "residual", False)
    )
    copied: list[str] = []
    for name, part in student.named_children():
        source = t_children.get(name)
        if source is None or (name == "head" and not same_output):
            continue
        if isinstance(part, nn.ModuleList) and isinstance(source, nn.ModuleList):
            pairs = [(f"{name}.{i}", p, q) for i, (p, q) in enumerate(zip(part, source, strict=False))]
        else:
            pairs = [(name, part, source)]
        for label, p, q in pairs:
            if _is_leading_slice(p, q):
                load_leading_slices(p, q)
                copied.append(label)
    return copied


# ------------------------------------------------------------------------------ data helpers


def make_targets(batch: Mapping[str, Any], teacher_out: torch.Tensor, paired: bool) -> torch.Tensor:
    """What the student reconstructs: the ground truth ``B`` (paired) or the teacher's output (pseudo-pair)."""
    if not paired:
        return teacher_out.detach()
    if "B" not in batch:
        raise ConfigError(
            "paired distillation needs items with a target image 'B'; pass paired=False for unpaired data"
        )
    target = batch["B"].to(teacher_out.device)
    if target.shape != teacher_out.shape:
        raise ConfigError(
            f"target images {tuple(target.shape)} and generator outputs {tuple(teacher_out.shape)} differ"
        )
    return target


def _export(student: nn.Module) -> EdgeModel:
    """The student as a standalone model folder-able network (a supernet's active sub-network)."""
    if isinstance(student, MobileResnetSupernet):
        return extract_subnet(student, student.active_config)
    if not isinstance(student, EdgeModel):
        raise ConfigError(f"the student must be an edgegan model to be saved, got {type(student).__name__}")
    return student


def _save_student(student: nn.Module, path: Path) -> None:
    was_training = student.training
    model = _export(student).eval()
    model.save(path)
    student.train(was_training)


# ------------------------------------------------------------------------------------ recipe


def distill(
    teacher: nn.Module,
    data: Dataset[Any],
    out: str | os.PathLike[str],
    cfg: DistillConfig,
    *,
    discriminator: nn.Module | None = None,
    student: nn.Module | None = None,
    resume: bool = False,
    progress: Progress | None = None,
    device: str | torch.device = "cpu",
) -> DistillResult:
    """Distil ``student`` (default ``MobileResnetGenerator(channels=cfg.channels)``) from ``teacher``.

    ``data`` yields items with ``"A"`` (input) and, when ``cfg.paired``, ``"B"`` (target); with
    ``cfg.paired=False`` the targets are the teacher's outputs. ``cfg.val_fraction`` of the items
    (a fixed seeded slice) are held out for validation. Writes into the run folder ``out``:
    ``config.yaml``, ``metrics.jsonl`` (one line per epoch), ``checkpoints/``, ``last_student/``,
    ``best_student/`` (the student ``cfg.select_by`` picks: the last epoch's by default),
    ``last_discriminator/`` (all ``edgegan.load``-able) and ``summary.json``; returns the summary as a
    :class:`~edgegan.compress.results.DistillResult` (which still reads as the dict returned before).
    The default student starts from the teacher's leading channels (``cfg.student_init``); a given
    ``student`` keeps its weights and is trained in place. The teacher is put in eval mode and never
    updated; ``discriminator`` (the teacher's) is copied, never modified. ``progress(epoch, batch,
    batches)`` is called after each batch.
    """
    if not isinstance(cfg, DistillConfig):
        raise ConfigError(f"cfg must be a DistillConfig, got {type(cfg).__name__}")
    check_generator(teacher, "teacher")
    check_metric(cfg.select_by, "select_by", SELECT_BY)  # the weights may have gone since cfg was made
    n_items = len(data)  # type: ignore[arg-type]
    if n_items < 1:
        raise ConfigError("the data set is empty")
    dist_info = init_distributed(str(device))  # torchrun: one process per device; else single-process
    dev = local_device(device, dist_info)
    main = is_main(dist_info)
    out = Path(out)
    set_seed(cfg.seed)

    # ---- networks: frozen teacher, student, mappers, discriminator
    teacher = teacher.to(dev).eval()  # frozen: only ever run under no_grad
    t_cfg = getattr(teacher, "config", None)
    input_nc = int(getattr(t_cfg, "input_nc", 3))
    output_nc = int(getattr(t_cfg, "output_nc", 3))
    student_init: dict[str, Any] = {"from": "given"}
    if student is None:
        n_blocks = cfg.n_blocks if cfg.n_blocks is not None else len(getattr(teacher, "blocks", ()))
        student = MobileResnetGenerator(
            input_nc=input_nc,
            output_nc=output_nc,
            channels=cfg.channels,
            n_blocks=n_blocks,
            norm=getattr(t_cfg, "norm", "instance"),
            padding_type=getattr(t_cfg, "padding_type", "reflect"),
            **_residual_like(t_cfg),
        )
        init_gan_weights(student)  # the reference's init_net (N(0, 0.02)), then the teacher's weights over it
        student_init = {"from": "random"}
        if cfg.student_init == "teacher":
            student_init = {"from": "teacher", "parts": inherit_from_teacher(student, teacher)}
    student = student.to(dev).train()
    names = distill_layers(teacher, student)
    mapper = init_gan_weights(DistillMapper.for_models(teacher, student)).to(dev)  # the reference's netA init

    d, conditional = make_discriminator(discriminator, input_nc, output_nc, cfg.ndf, cfg.d_layers, dev)

    def d_input(a: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return torch.cat([a, image], 1) if conditional else image

    gan = GANLoss(cfg.gan_mode)  # type: ignore[arg-type]
    opt_g, opt_d, sched_g, sched_d = make_optimizers([student, mapper], d, cfg)
    objs: dict[str, Any] = {
        "modules": {"student": student, "mapper": mapper, "D": d},
        "optimizers": {"G": opt_g, "D": opt_d},
        "schedulers": {"G": sched_g, "D": sched_d},
    }

    # ---- data: a fixed held-out slice for validation
    train_set, val_set = split_train_val(data, n_items, cfg)
    sampler = distributed_sampler(train_set, dist_info, shuffle=True, seed=cfg.seed)  # this rank's shard
    if sampler is None:
        loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, num_workers=0)
    else:
        loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler, num_workers=0)
    # The score select_by ranks epochs by (None: the last epoch): against the target, or the teacher's output.
    selection = None if cfg.select_by == "last" else f"val_{cfg.select_by}" + ("" if cfg.paired else "_teacher")
    scorer = Scorer(cfg.select_by if selection is not None else "ssim", dev) if main else None
    if selection is not None and cfg.select_by in ("fid", "kid") and (val_set is None or len(val_set) < 2):
        raise ConfigError(f"select_by {cfg.select_by} needs at least 2 validation items; raise val_fraction")

    # ---- run folder, resume
    run_config = {
        "distill": cfg.to_dict(),
        "teacher": describe(teacher),
        "student": {**describe(student), "init": student_init},
        "discriminator": {**describe(d), "inherited": discriminator is not None},
        "data": {"items": n_items, "train": len(train_set), "val": len(val_set) if val_set is not None else 0},
    }
    # Only the main rank owns the run folder; every rank restores the checkpoint.
    run = run_on_main(lambda: RunDir(out, run_config, resume=resume), dist_info)
    run_ref = run if run is not None else out
    ckpt = load_checkpoint(run_ref, **objs, map_location=dev)
    state: dict[str, Any] = {"best": None, "best_epoch": None, "history": []}
    if ckpt is not None and isinstance(ckpt.extra, dict):
        state.update(ckpt.extra)
    start = ckpt.step if ckpt else 0
    # DDP wrappers (the modules themselves when single-process); checkpoints hold the unwrapped ones.
    # A supernet's narrower sub-networks leave some weights unused.
    student_t = wrap_ddp(student, dist_info, find_unused_parameters=isinstance(student, MobileResnetSupernet))
    mapper_t, d_t = wrap_ddp(mapper, dist_info), wrap_ddp(d, dist_info)

    for epoch in range(start + 1, cfg.total_epochs + 1):
        if sampler is not None:
            sampler.set_epoch(epoch)
        sums = {"g_gan": 0.0, "recon": 0.0, "distill": 0.0, "d": 0.0}
        n_batches = len(loader)
        for i, batch in enumerate(loader):
            a = batch["A"].to(dev)
            with torch.no_grad():
                t_out, t_feats = teacher(a, return_features=True)
            target = make_targets(batch, t_out, cfg.paired)
            s_out, s_feats = student_t(a, return_features=True)

            # D step: real (input, target) pairs against the student's (input, output).
            d.requires_grad_(True)
            loss_d_real = gan(d_t(d_input(a, target)), True)
            loss_d_fake = gan(d_t(d_input(a, s_out.detach())), False)
            loss_d = 0.5 * (loss_d_real + loss_d_fake)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()

            # G step: fool D (frozen, so unwrapped), reconstruct the target, match the teacher's features.
            d.requires_grad_(False)
            loss_g_gan = gan(d(d_input(a, s_out)), True, for_discriminator=False)
            loss_recon = F.l1_loss(s_out, target)
            loss_distill = distillation_loss(t_feats, s_feats, mapper_t, names)  # type: ignore[arg-type]
            loss_g = loss_g_gan + cfg.lambda_recon * loss_recon + cfg.lambda_distill * loss_distill
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()

            step = (epoch - 1) * n_batches + i + 1
            check_finite(step, checkpoint=run_ref, g_gan=loss_g_gan, recon=loss_recon, distill=loss_distill, d=loss_d)
            for key, value in (("g_gan", loss_g_gan), ("recon", loss_recon), ("distill", loss_distill), ("d", loss_d)):
                sums[key] += float(value.detach())
            if progress is not None and main:
                progress(epoch, i + 1, n_batches)
        lr = opt_g.param_groups[0]["lr"]
        sched_g.step()
        sched_d.step()

        # Validation: the student against the target and against the teacher, on the held-out slice
        # (by the main rank; the others take its scores). Losses are averaged over ranks.
        val = broadcast_object(_validate(teacher, student, val_set, cfg, dev, scorer) if main else {}, dist_info)
        losses = {k: all_reduce_mean(v / max(n_batches, 1), dist_info) for k, v in sums.items()}
        row = {"epoch": epoch, "lr": lr, **losses, **val}
        state["history"].append(row)
        # The last epoch always wins under select_by "last" (and without a validation slice).
        score = val.get(selection) if selection is not None else None
        improved = score is None or better(cfg.select_by, score, state["best"])
        if improved:
            state["best"] = score
            state["best_epoch"] = epoch
        if run is not None:
            run.log(epoch, **row)
            if improved:
                _save_student(student, out / "best_student")
            _save_student(student, out / "last_student")
            d.save(out / "last_discriminator")  # the next stage's critic starts from it (reference: latest_net_D)
            save_checkpoint(run, epoch, **objs, extra=json_safe(state), keep=2)
        barrier(dist_info)  # the other ranks wait until the epoch is committed

    if main and not (out / "last_student").is_dir():  # resumed a finished run whose folders were removed
        _save_student(student, out / "last_student")
    if main and not (out / "best_student").is_dir():
        _save_student(student, out / "best_student")
    if main and not (out / "last_discriminator").is_dir():
        d.save(out / "last_discriminator")
    exported = _export(student)
    selected = next((r for r in state["history"] if r["epoch"] == state["best_epoch"]), None)
    result = DistillResult(
        run=out,
        epochs=cfg.total_epochs,
        resumed_from=start if ckpt is not None else None,
        paired=cfg.paired,
        select_by=cfg.select_by,
        selection=selection,
        best_epoch=state["best_epoch"],
        best_score=state["best"],
        selected_metrics=selected,
        best_student=out / "best_student",
        last_student=out / "last_student",
        last_discriminator=out / "last_discriminator",
        student_init=student_init,
        layers=names,
        teacher_params=count_params(teacher),
        student_params=count_params(exported),
        student_channels=list(getattr(exported.config, "channels", None) or []),
        history=state["history"],
    )
    if main:
        atomic_write_json(out / "summary.json", json_safe(result.to_dict()))
    barrier(dist_info)
    return result


def _residual_like(t_cfg: Any) -> dict[str, bool]:
    """The teacher's ``residual`` and ``input_skip``: the student keeps the teacher's input path."""
    return {k: bool(getattr(t_cfg, k, False)) for k in ("residual", "input_skip")}


@torch.no_grad()
def _validate(
    teacher: nn.Module,
    student: nn.Module,
    val_set: Dataset[Any] | None,
    cfg: DistillConfig,
    dev: torch.device,
    scorer: Scorer | None,
) -> dict[str, float | None]:
    """The student's scores against the target (``val_<m>``) and against the teacher's output
    (``val_<m>_teacher``), and the teacher's against the target (``teacher_val_<m>``), for PSNR and SSIM;
    the student's also for ``select_by``'s metric when that is LPIPS, FID or KID."""
    extra = [cfg.select_by] if cfg.select_by in METRIC_WEIGHTS else []
    keys = [f"val_{n}{side}" for n in ["psnr", "ssim", *extra] for side in ("", "_teacher")]
    keys += ["teacher_val_psnr", "teacher_val_ssim"]
    if val_set is None or scorer is None:
        return dict.fromkeys(keys)
    was_training = student.training
    student.eval()
    s_outs, t_outs, targets = [], [], []
    try:
        for batch in DataLoader(val_set, batch_size=cfg.batch_size, shuffle=False, num_workers=0):
            a = batch["A"].to(dev)
            t_out = teacher(a)
            targets.append(make_targets(batch, t_out, cfg.paired))
            t_outs.append(t_out)
            s_outs.append(student(a))
    finally:
        student.train(was_training)
    s_out, t_out, target = torch.cat(s_outs), torch.cat(t_outs), torch.cat(targets)
    vs_teacher = scorer(s_out, t_out)
    vs_target = scorer(s_out, target) if cfg.paired else vs_teacher
    teacher_score = scorer(t_out, target, extra=False)
    row: dict[str, float | None] = {}
    for n in ["psnr", "ssim", *extra]:
        row[f"val_{n}"] = vs_target[n]
        row[f"val_{n}_teacher"] = vs_teacher[n]
    row["teacher_val_psnr"], row["teacher_val_ssim"] = teacher_score["psnr"], teacher_score["ssim"]
    return row


def distill_from_folders(
    teacher_dir: str | os.PathLike[str],
    a_dir: str | os.PathLike[str],
    b_dir: str | os.PathLike[str] | None,
    out: str | os.PathLike[str],
    cfg: DistillConfig,
    *,
    discriminator_dir: str | os.PathLike[str] | None = None,
    student: nn.Module | None = None,
    resume: bool = False,
    progress: Progress | None = None,
    device: str | torch.device = "cpu",
) -> DistillResult:
    """:func:`distill` with the teacher (and optionally its discriminator) loaded from model folders, and the
    images read by :func:`~edgegan.compress.recipe_parts.load_from_folders` (``b_dir`` may be None for unpaired data).
    """
    teacher, discriminator, data = load_from_folders(
        teacher_dir, a_dir, b_dir, cfg, discriminator_dir, task="distillation"
    )
    return distill(
        teacher,
        data,
        out,
        cfg,
        discriminator=discriminator,
        student=student,
        resume=resume,
        progress=progress,
        device=device,
    )
