"""Settings of a UGC run (both stages, the search and the data), one typed dataclass saved as YAML."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from edgegan.errors import ConfigError

__all__ = ["UGCConfig"]

GAN_MODES = ("hinge", "lsgan", "vanilla")
PERCEPTUAL = ("auto", "vgg16", "discriminator")
# Validation metrics a checkpoint or a searched candidate can be chosen by; lpips, fid and kid need their weights.
METRICS = ("ssim", "psnr", "lpips", "fid", "kid")
SELECT_BY = ("last", *METRICS)
SEARCH_BY = ("auto", *METRICS)
PSEUDO_LABEL_RULES = ("paper", "inverse")
# Integer settings that must be at least 1, and those that may be 0.
_POSITIVE = (
    "crop_size",
    "batch_size",
    "ngf",
    "ndf",
    "d_layers",
    "population",
    "generations",
    "parents",
    "teacher_every",
    "profile_size",
)
_COUNTS = ("n_blocks", "max_inserted", "stage1_epochs", "stage1_decay_epochs", "stage2_epochs", "stage2_decay_epochs")


@dataclass
class UGCConfig:
    """Unified GAN Compression (UGC) settings.

    Data: ``labeled_fraction`` of the training pairs keep their targets (split by ``seed``);
    ``val_fraction`` of the labelled pairs are held out to score checkpoints and search candidates.
    Stage 1 trains a :class:`~edgegan.models.DepthWidthSupernet` (``ngf``, ``n_blocks``,
    ``max_inserted``, and the input paths ``residual``/``input_skip`` of :mod:`edgegan.models.depth_width`,
    off by default as in the paper) with the sandwich rule; gene choices are ``widths`` (every width gene),
    ``depths`` (inserted stages) and ``trunk_depths`` (None: the trunk keeps ``n_blocks``).
    Stage 2 searches a student under ``budget`` (MACs, GAN Compression convention, at ``profile_size``), or
    under ``budget_ms`` (measured ONNX Runtime latency, see :mod:`edgegan.compress.latency_budget`),
    and two teachers of about ``teacher_ratio`` × the student's MACs, then distils online: teachers
    update every ``teacher_every`` steps on labelled pairs, the student every step.
    ``use_unlabeled_stage1``/``use_unlabeled_stage2`` switch the unlabelled data off (ablations).

    Choices, never PSNR by default (PSNR rewards blur): stage 2 passes on its last epoch's student
    (``select_by="last"``, as the reference implementations do) or the best on the validation slice by
    ``ssim``/``psnr``/``lpips``/``fid``/``kid``; the search ranks candidates by ``search_by`` (``auto``:
    KID when the Inception weights are found, else SSIM). ``eval_weights`` is where LPIPS/Inception
    weights are looked up first. ``pseudo_label_rule`` is Eq. 8 as printed (``paper``) or its opposite
    sign (``inverse``, an ablation); see :func:`edgegan.ugc.stage2.adaptive_keep`.
    """

    # data
    labeled_fraction: float = 0.25
    direction: str = "AtoB"
    load_size: int | None = 286
    crop_size: int = 256
    batch_size: int = 1
    val_fraction: float = 0.1
    seed: int = 0
    # networks
    ngf: int = 64
    n_blocks: int = 9
    max_inserted: int = 3
    widths: tuple[int, ...] = (8, 16, 24, 32, 40, 48, 56, 64)
    depths: tuple[int, ...] = (0, 1, 2)
    trunk_depths: tuple[int, ...] | None = None
    residual: bool = False
    input_skip: bool = False
    ndf: int = 64
    d_layers: int = 3
    # losses
    gan_mode: str = "hinge"
    lambda_recon: float = 100.0
    lambda_ssim: float = 1e1
    lambda_feature: float = 1e4
    lambda_style: float = 1e1
    lambda_tv: float = 1e-5
    # The discriminator-feature substitute's activations are not on VGG's scale: at the paper's 1e4 its
    # feature term drowns the supervised loss of the largest sub-network (stage 1 collapses to a constant
    # image), so the substitute uses its own feature and style weights. (That was measured when the substitute
    # was the training discriminator itself; it is now a frozen copy. With the frozen copy of the initial
    # discriminator, on tests/test_learning_ugc.py's task, the weighted feature term at 10 is ~5 against ~4 for
    # the SSIM term and ~0.05 for style; 10 is kept, not re-tuned.)
    lambda_feature_d: float = 1e1
    lambda_style_d: float = 1e1
    perceptual: str = "auto"
    perceptual_weights: str | None = None
    # optimisation (pix2pix rule: constant lr, then linear decay over decay epochs)
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    stage1_epochs: int = 50
    stage1_decay_epochs: int = 50
    stage2_epochs: int = 50
    stage2_decay_epochs: int = 50
    use_unlabeled_stage1: bool = True
    use_unlabeled_stage2: bool = True
    # search
    budget: str | int = "1.4G"
    # A latency budget instead of ``budget`` for the student: ONNX Runtime ms at batch 1, profile_size,
    # latency_threads threads on this machine (edgegan.compress.latency_budget); teachers stay in MACs.
    budget_ms: float | None = None
    latency_threads: int = 1
    latency_samples: int = 24
    profile_size: int = 256
    teacher_ratio: float = 20.0
    teacher_window: float = 0.75
    population: int = 20
    generations: int = 10
    parents: int = 5
    mutate_prob: float = 0.2
    # stage 2
    teacher_every: int = 1
    ema_decay: float = 0.99
    pseudo_label_rule: str = "paper"
    # choices (see the docstring)
    select_by: str = "last"
    search_by: str = "auto"
    eval_weights: str | None = None

    def __post_init__(self) -> None:
        f = self.labeled_fraction
        if isinstance(f, bool) or not isinstance(f, int | float) or not 0.0 < f <= 1.0:
            raise ConfigError(f"labeled_fraction must be in (0, 1], got {f!r}")
        if self.direction not in ("AtoB", "BtoA"):
            raise ConfigError(f"direction must be AtoB or BtoA, got {self.direction!r}")
        self._check_ints(_POSITIVE, 1, "a positive integer")
        self._check_ints(_COUNTS, 0, "an integer >= 0")
        if self.stage1_epochs + self.stage1_decay_epochs < 1 or self.stage2_epochs + self.stage2_decay_epochs < 1:
            raise ConfigError("each stage needs at least one epoch")
        if self.crop_size % 4:
            raise ConfigError(f"crop_size must be a multiple of 4, got {self.crop_size}")
        if self.load_size is not None and self.load_size < self.crop_size:
            raise ConfigError(f"load_size ({self.load_size}) must not be smaller than crop_size ({self.crop_size})")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        self.widths = tuple(sorted(set(int(v) for v in self.widths)))
        self.depths = tuple(sorted(set(int(v) for v in self.depths)))
        if self.trunk_depths is not None:
            self.trunk_depths = tuple(sorted(set(int(v) for v in self.trunk_depths)))
        if not self.widths or self.widths[0] < 1 or self.widths[-1] > self.ngf:
            raise ConfigError(f"width choices must lie in [1, ngf={self.ngf}], got {list(self.widths)}")
        if not self.depths or self.depths[0] < 0 or self.depths[-1] > self.max_inserted:
            raise ConfigError(
                f"depth choices must lie in [0, max_inserted={self.max_inserted}], got {list(self.depths)}"
            )
        if self.gan_mode not in GAN_MODES:
            raise ConfigError(f"gan_mode must be one of {', '.join(GAN_MODES)}, got {self.gan_mode!r}")
        if self.perceptual not in PERCEPTUAL:
            raise ConfigError(f"perceptual must be one of {', '.join(PERCEPTUAL)}, got {self.perceptual!r}")
        for name in (
            "lambda_recon",
            "lambda_ssim",
            "lambda_feature",
            "lambda_style",
            "lambda_tv",
            "lambda_feature_d",
            "lambda_style_d",
            "lr",
        ):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"{name} must be a finite number >= 0, got {v!r}")
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if not self.teacher_ratio >= 1.0:
            raise ConfigError(f"teacher_ratio must be >= 1, got {self.teacher_ratio}")
        if not 0.0 < self.teacher_window <= 1.0:
            raise ConfigError(f"teacher_window must be in (0, 1], got {self.teacher_window}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        for name, allowed in (
            ("select_by", SELECT_BY),
            ("search_by", SEARCH_BY),
            ("pseudo_label_rule", PSEUDO_LABEL_RULES),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.parents > self.population:
            raise ConfigError(f"parents ({self.parents}) cannot exceed population ({self.population})")
        if not 0.0 <= self.mutate_prob <= 1.0:
            raise ConfigError(f"mutate_prob must be in [0, 1], got {self.mutate_prob}")
        from edgegan.compress.search import parse_macs

        parse_macs(self.budget)  # ConfigError for a malformed budget
        if self.budget_ms is not None and (
            isinstance(self.budget_ms, bool) or not isinstance(self.budget_ms, int | float) or not self.budget_ms > 0
        ):
            raise ConfigError(f"budget_ms must be a positive number of milliseconds, got {self.budget_ms!r}")
        self._check_ints(("latency_threads",), 1, "an integer >= 1")
        self._check_ints(("latency_samples",), 3, "an integer >= 3")

    def _check_ints(self, names: tuple[str, ...], low: int, what: str) -> None:
        """ConfigError naming the first of ``names`` that is not an integer >= ``low`` (``what`` says so)."""
        for name in names:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigError(f"{name} must be {what}, got {v!r}")

    @property
    def budget_macs(self) -> int:
        from edgegan.compress.search import parse_macs

        return parse_macs(self.budget)

    def lr_factor(self, stage: int) -> Any:
        """The pix2pix rule for ``stage`` 1 or 2: multiplier of ``lr`` during 0-based epoch ``e``."""
        const, decay = (
            (self.stage1_epochs, self.stage1_decay_epochs)
            if stage == 1
            else (self.stage2_epochs, self.stage2_decay_epochs)
        )
        return lambda e: 1.0 - max(0, e + 1 - const) / float(decay + 1)

    def total_epochs(self, stage: int) -> int:
        return (
            self.stage1_epochs + self.stage1_decay_epochs
            if stage == 1
            else self.stage2_epochs + self.stage2_decay_epochs
        )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UGCConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown UGC option(s): {', '.join(unknown)}")
        kw = dict(d)
        for k in ("widths", "depths", "betas"):
            if k in kw and kw[k] is not None:
                kw[k] = tuple(kw[k])
        if kw.get("trunk_depths") is not None:
            kw["trunk_depths"] = tuple(kw["trunk_depths"])
        return cls(**kw)
