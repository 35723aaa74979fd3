"""SETGAN's configuration: SinGAN's defaults, every one of them configurable."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from edgegan.errors import ConfigError

Mode = Literal["parallel", "serial"]
ParallelInputs = Literal["real", "refresh", "shuffle"]


@dataclass
class SETGANConfig:
    # Pyramid
    max_size: int = 250  # longer side of the finest scale
    min_size: int = 25  # shorter side of the coarsest scale
    factor: float = 0.75  # nominal down-scaling factor; recomputed so the coarsest side is min_size
    # Networks (width of scale i: min(nfc * 2**(i // 4), max_nfc))
    nfc: int = 32
    max_nfc: int = 128
    num_layers: int = 5
    kernel: int = 3
    # Objective
    alpha: float = 10.0  # reconstruction weight (100 for super-resolution)
    gp_weight: float = 0.1
    # "singan": the gradient's norm per pixel over the channels, one α for the batch (SinGAN's penalty).
    # "whole_image": the norm over the whole image, as edgegan had before issue 15 (kept for the before/after
    # comparison only: it holds the critic ~1000x too tight and the random samples collapse to noise).
    gp_form: Literal["singan", "whole_image"] = "singan"
    noise_amp_init: float = 0.1
    # Optimisation
    iters: int = 2000
    lr: float = 5e-4
    betas: tuple[float, float] = (0.5, 0.999)  # Adam's: SinGAN's beta1 and 0.999 (older runs saved beta1/beta2)
    lr_drop_at: float = 0.8  # lr x 0.1 after this fraction of the iterations (1600 of 2000)
    d_steps: int = 3
    g_steps: int = 3
    # Training procedure
    mode: Mode = "parallel"
    warm_start: bool = True  # serial: start scale i from scale i-1 when the width is unchanged
    # parallel: what scale i refines. "real": the up-sampled real image of scale i-1 throughout (the paper).
    # "refresh": that for the first refresh_at of the iterations; then, after a barrier, fresh random samples
    # through scales 0..i-1 as they stood at that point in its adversarial steps (so scale i learns to correct
    # what they generate); its reconstruction keeps the real image.
    # "shuffle": the adversarial steps see the real coarser image flipped and circularly shifted at random (a
    # rearranged layout, as random samples of the coarser scales have); reconstruction keeps the real one.
    # Default "real", the paper's, measured against "refresh" (bench/results/setgan_quality, 4 SinGAN images,
    # 96 px, 300 iterations): "refresh" gives random samples that keep the image's layout where "real" gives a
    # textured patchwork, patch RMSE 0.039/0.058/0.053 vs 0.059/0.095/0.078 on balloons/colusseum/mountains3
    # (birds 0.078 vs 0.050), but it refines a *real* coarser image worse (per-scale SSIM 0.91-0.95 vs
    # 0.98-0.99; on the learning test's texture its scale 1 gains +1.7 dB over the input vs +8.8, and its scale 2
    # makes the real input worse, 30.7 vs 35.3 dB), and harmonization, editing and
    # super-resolution inject real images, and the server ships each scale as soon as it is trained.
    parallel_inputs: ParallelInputs = "real"
    refresh_at: float = 0.5
    seed: int = 0
    ckpt_every: int = 250  # intra-scale checkpoints, so an interrupted scale resumes mid-way
    # Quality estimator
    quality_draws: int = 4  # noise draws averaged by the SSIM estimator

    def __post_init__(self) -> None:
        if self.mode not in ("parallel", "serial"):
            raise ConfigError(f"mode must be parallel or serial, got {self.mode!r}")
        if self.gp_form not in ("singan", "whole_image"):
            raise ConfigError(f"gp_form must be singan or whole_image, got {self.gp_form!r}")
        if self.parallel_inputs not in ("real", "refresh", "shuffle"):
            raise ConfigError(f"parallel_inputs must be real, refresh or shuffle, got {self.parallel_inputs!r}")
        if not 0.0 < self.refresh_at < 1.0:
            raise ConfigError(f"refresh_at must be in (0, 1), got {self.refresh_at}")
        if self.min_size < 8:
            raise ConfigError(f"min_size must be at least 8 px, got {self.min_size}")
        if self.max_size < self.min_size:
            raise ConfigError(f"max_size ({self.max_size}) must be >= min_size ({self.min_size})")
        if not 0.0 < self.factor < 1.0:
            raise ConfigError(f"factor must be in (0, 1), got {self.factor}")
        for name in ("iters", "nfc", "max_nfc", "d_steps", "g_steps", "ckpt_every", "quality_draws"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or not 0.0 < self.lr_drop_at <= 1.0:
            raise ConfigError("lr must be positive and lr_drop_at in (0, 1]")
        try:
            self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        except (TypeError, ValueError):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {self.betas!r}") from None
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {self.betas!r}")

    def refresh_step(self) -> int:
        """The iteration after which a ``refresh`` scale switches to generated inputs (1..iters-1)."""
        return min(self.iters - 1, max(1, round(self.refresh_at * self.iters)))

    def channels(self, scale: int) -> int:
        return min(self.nfc * 2 ** (scale // 4), self.max_nfc)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SETGANConfig:
        """Rebuild a saved config (``pyramid.json``); runs saved with ``beta1``/``beta2`` load too."""
        data = upgrade_names(data)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown SETGAN option(s): {', '.join(unknown)}")
        return cls(**data)


def upgrade_names(data: dict[str, Any]) -> dict[str, Any]:
    """A saved config in today's spelling: ``beta1``/``beta2`` (before every recipe spelt Adam's ``betas``) become
    ``betas``; ConfigError if both spellings are there."""
    out = dict(data)
    if "beta1" in out or "beta2" in out:
        if "betas" in out:
            raise ConfigError("give betas, or the older beta1/beta2, not both")
        default = SETGANConfig.betas
        out["betas"] = [out.pop("beta1", default[0]), out.pop("beta2", default[1])]
    return out
