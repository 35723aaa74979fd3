"""GAN Compression's sub-network search over a trained once-for-all supernet, and the final student.

Every candidate is a channel config ``c0..c7`` drawn from ``choices``. Candidates whose cost
(GAN Compression's MAC convention, :func:`subnet_macs`) exceeds the budget are rejected before
they are evaluated; the rest are ranked on the validation slice by the supernet run at that config
(weights shared, no retraining), by SSIM by default (``metric``; LPIPS, FID or KID when their weights
are present; PSNR only when asked: it rewards blur, and the paper and the reference rank by FID or
mIoU). Every candidate's PSNR and SSIM stay in the history. ``mode="evolution"`` keeps the best
``parents`` of each generation and breeds the next one by mutation and crossover; ``mode="random"``
samples feasible configs only.
The winner is extracted as a standalone ``MobileResnetGenerator`` (:func:`finalize_student`) and
can then be fine-tuned by distillation (:func:`finetune`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import Dataset

from edgegan.compress.distill import LOWER_IS_BETTER, METRICS, Scorer, check_metric
from edgegan.compress.evolution import EvolutionResult, evolve
from edgegan.compress.latency_budget import fit_family, predicted_us, settle
from edgegan.compress.results import DistillResult
from edgegan.compress.supernet import extract_subnet
from edgegan.errors import ConfigError
from edgegan.models.mobile_supernet import MobileResnetSupernet
from edgegan.profile.latency_model import LatencyModel, cost_features, measure_onnx_ms
from edgegan.profile.macs import profile_macs

__all__ = [
    "SearchConfig",
    "SearchResult",
    "evaluate_config",
    "evaluate_metrics",
    "finalize_student",
    "finetune",
    "parse_macs",
    "search",
    "subnet_features",
    "subnet_macs",
    "supernet_latency_model",
]

SearchMode = Literal["evolution", "random"]
Config = tuple[int, ...]
Progress = Callable[[int, int, float], None]

# MACs are profiled at this size and scaled: each layer's output has (size / stride)^2 pixels.
_PROXY_SIZE = 32

_MACS_CACHE_ATTR = "_edgegan_macs_cache"
_FEATURES_CACHE_ATTR = "_edgegan_latency_features_cache"


def parse_macs(text: str | int | float) -> int:
    """``"2.5G"`` -> 2_500_000_000; accepts K, M, G, T suffixes (case-insensitive) or a plain number."""
    if isinstance(text, bool):
        raise ConfigError(f"not a MAC count: {text!r}")
    if isinstance(text, int | float):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgGtT]?)\s*", str(text))
        if not m:
            raise ConfigError(f"not a MAC count: {text!r} (use e.g. 2.5G, 800M, 120000K or 1500000)")
        scale = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}[m.group(2).lower()]
        value = float(m.group(1)) * scale
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"the MAC budget must be positive, got {text!r}")
    return round(value)


def _cache(supernet: MobileResnetSupernet) -> dict[tuple[Config, int], int]:
    cache = supernet.__dict__.get(_MACS_CACHE_ATTR)
    if cache is None:
        cache = {}
        supernet.__dict__[_MACS_CACHE_ATTR] = cache
    return cache


def subnet_macs(supernet: MobileResnetSupernet, config: Sequence[int], size: int = 256) -> int:
    """MACs (GAN Compression convention) of the sub-network at ``config`` on a ``size``×``size`` input.

    The sub-network is extracted and profiled; results are cached per supernet by (config, size).
    For sizes that are multiples of 4 it is profiled at 32 px and scaled by ``(size/32)²``, which is
    exact: every layer's output has ``(size/s)²`` pixels for its stride ``s`` in {1, 2, 4}.
    """
    ch = supernet.validate_config(config)
    if isinstance(size, bool) or not isinstance(size, int) or size < 4:
        raise ConfigError(f"size must be an integer >= 4, got {size!r}")
    cache = _cache(supernet)
    key = (ch, size)
    if key not in cache:
        probe = _PROXY_SIZE if size % 4 == 0 else size
        sub = extract_subnet(supernet, ch).eval()
        param = next(sub.parameters())
        x = torch.zeros(1, supernet.config.input_nc, probe, probe, device=param.device, dtype=param.dtype)
        gc = profile_macs(sub, x).macs_gc
        cache[key] = gc * size * size // (probe * probe)
    return cache[key]


def _batch(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(0) if x.dim() == 3 else x


@torch.no_grad()
def evaluate_metrics(
    supernet: MobileResnetSupernet,
    config: Sequence[int],
    val_data: Sequence[tuple[torch.Tensor, torch.Tensor | None]],
    *,
    target: Literal["B", "teacher"] = "B",
    teacher: nn.Module | None = None,
    device: str | torch.device = "cpu",
    scorer: Scorer | None = None,
) -> dict[str, float | None]:
    """Validation scores of ``supernet`` run at ``config``: PSNR (dB on [0, 1], capped at 100 per image),
    SSIM, and ``scorer``'s LPIPS/FID/KID when it has one (:class:`~edgegan.compress.distill.Scorer`).

    ``val_data`` holds ``(input, target)`` pairs in [-1, 1] (``[3, H, W]`` or ``[N, 3, H, W]``).
    ``target="teacher"`` scores against ``teacher``'s output instead (the pair's target may be None).
    Runs in eval mode without gradients; the supernet's mode and active config are restored.
    """
    if target not in ("B", "teacher"):
        raise ConfigError(f"target must be 'B' or 'teacher', got {target!r}")
    if target == "teacher" and teacher is None:
        raise ConfigError("target='teacher' needs a teacher model")
    if not val_data:
        raise ConfigError("the validation data is empty")
    dev = torch.device(device)
    scorer = scorer or Scorer("ssim", dev)
    was_training, previous = supernet.training, supernet.active_config
    supernet.to(dev).eval()
    if teacher is not None:
        teacher.to(dev).eval()
    supernet.set_config(config)
    outs: list[torch.Tensor] = []
    refs: list[torch.Tensor] = []
    try:
        for item in val_data:
            x, y = item[0], item[1]
            x = _batch(x).to(dev)
            if target == "teacher":
                assert teacher is not None
                ref = teacher(x)
            elif y is None:
                raise ConfigError("a validation pair has no target; use target='teacher'")
            else:
                ref = _batch(y).to(dev)
            outs.append(supernet(x).float())
            refs.append(ref.float())
    finally:
        supernet.set_config(previous)
        supernet.train(was_training)
    return scorer(torch.cat(outs), torch.cat(refs))


def evaluate_config(
    supernet: MobileResnetSupernet,
    config: Sequence[int],
    val_data: Sequence[tuple[torch.Tensor, torch.Tensor | None]],
    *,
    metric: str = "ssim",
    target: Literal["B", "teacher"] = "B",
    teacher: nn.Module | None = None,
    device: str | torch.device = "cpu",
) -> float:
    """One validation score of ``supernet`` run at ``config``: ``metric`` (default SSIM; higher is better for
    SSIM and PSNR, lower for LPIPS, FID and KID). See :func:`evaluate_metrics` for the arguments."""
    scorer = Scorer(check_metric(metric), device)
    value = evaluate_metrics(supernet, config, val_data, target=target, teacher=teacher, device=device, scorer=scorer)
    if value.get(metric) is None:
        raise ConfigError(f"{metric} cannot score these images (SSIM needs at least 11 px a side)")
    return float(value[metric])  # type: ignore[arg-type]


@dataclass
class SearchConfig:
    """Settings of :func:`search`; ``metric`` ranks the candidates (ssim, psnr, lpips, fid or kid; the last
    three need their weights).

    The budget is one of ``budget_macs`` (GAN Compression's convention at ``size``) or ``budget_ms``: ONNX
    Runtime milliseconds at batch 1, ``size``×``size``, ``latency_threads`` threads on this machine, predicted
    for every candidate by a :class:`~edgegan.profile.latency_model.LatencyModel` fitted on
    ``latency_samples`` directly measured sub-networks, and the winner measured directly (``verify_top``).
    """

    budget_macs: int | None = None
    budget_ms: float | None = None
    latency_threads: int = 1
    latency_samples: int = 24
    verify_top: int = 5
    size: int = 256
    choices: tuple[int, ...] = (16, 24, 32, 40, 48, 56, 64)
    population: int = 20
    generations: int = 10
    parents: int = 5
    mutate_prob: float = 0.2
    seed: int = 0
    mode: SearchMode = "evolution"
    target: Literal["B", "teacher"] = "B"
    device: str = "cpu"
    metric: str = "ssim"

    def __post_init__(self) -> None:
        check_metric(self.metric, "metric", METRICS)
        if (self.budget_macs is None) == (self.budget_ms is None):
            raise ConfigError("give one budget: budget_macs (MACs) or budget_ms (measured latency)")
        if isinstance(self.budget_macs, str):
            self.budget_macs = parse_macs(self.budget_macs)
        if self.budget_macs is not None and (
            isinstance(self.budget_macs, bool) or not isinstance(self.budget_macs, int) or self.budget_macs <= 0
        ):
            raise ConfigError(f"budget_macs must be a positive integer, got {self.budget_macs!r}")
        if self.budget_ms is not None:
            if isinstance(self.budget_ms, bool) or not isinstance(self.budget_ms, int | float):
                raise ConfigError(f"budget_ms must be a number, got {self.budget_ms!r}")
            if not math.isfinite(self.budget_ms) or self.budget_ms <= 0:
                raise ConfigError(f"budget_ms must be positive, got {self.budget_ms!r}")
            self.budget_ms = float(self.budget_ms)
        for name in ("latency_threads", "latency_samples", "verify_top"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.latency_samples < 3:
            raise ConfigError(f"latency_samples must be at least 3, got {self.latency_samples}")
        self.choices = tuple(sorted(set(self.choices)))
        if not self.choices:
            raise ConfigError("choices must not be empty")
        for name in ("size", "population", "generations", "parents"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.parents > self.population:
            raise ConfigError(f"parents ({self.parents}) cannot exceed population ({self.population})")
        if not 0.0 <= self.mutate_prob <= 1.0:
            raise ConfigError(f"mutate_prob must be in [0, 1], got {self.mutate_prob}")
        if self.mode not in ("evolution", "random"):
            raise ConfigError(f"mode must be 'evolution' or 'random', got {self.mode!r}")
        if self.target not in ("B", "teacher"):
            raise ConfigError(f"target must be 'B' or 'teacher', got {self.target!r}")


SearchResult = EvolutionResult


def _features_cache(supernet: MobileResnetSupernet) -> dict[tuple[Config, int], dict[str, float]]:
    cache = supernet.__dict__.get(_FEATURES_CACHE_ATTR)
    if cache is None:
        cache = {}
        supernet.__dict__[_FEATURES_CACHE_ATTR] = cache
    return cache


def _subnet(supernet: MobileResnetSupernet, config: Sequence[int]) -> nn.Module:
    return extract_subnet(supernet, supernet.validate_config(config)).eval().cpu()


def subnet_features(supernet: MobileResnetSupernet, config: Sequence[int], size: int = 256) -> dict[str, float]:
    """The latency model's features (:func:`~edgegan.profile.latency_model.cost_features`) of the sub-network
    at ``config`` on a ``size``×``size`` input; cached per supernet."""
    key = (supernet.validate_config(config), size)
    cache = _features_cache(supernet)
    if key not in cache:
        cache[key] = cost_features(_subnet(supernet, key[0]), size, supernet.config.input_nc)
    return cache[key]


def supernet_latency_model(
    supernet: MobileResnetSupernet,
    size: int,
    *,
    choices: Sequence[int],
    threads: int = 1,
    samples: int = 24,
    seed: int = 0,
    measure: Callable[[nn.Module], float] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LatencyModel:
    """Fit a latency model on ``samples`` sub-networks measured directly in ONNX Runtime: the smallest, the
    largest and random configs over ``choices`` (a quarter held out to measure the prediction error)."""
    genes = list(supernet._check_choices(choices))
    return fit_family(
        lambda c: _subnet(supernet, c),
        [genes] * len(supernet.largest_config()),
        size,
        threads=threads,
        samples=samples,
        seed=seed,
        in_channels=supernet.config.input_nc,
        measure=measure,
        progress=progress,
    )


def search(
    supernet: MobileResnetSupernet,
    val_data: Sequence[tuple[torch.Tensor, torch.Tensor | None]],
    cfg: SearchConfig,
    *,
    teacher: nn.Module | None = None,
    progress: Progress | None = None,
    latency_model: LatencyModel | None = None,
    measure: Callable[[nn.Module], float] | None = None,
) -> SearchResult:
    """Find the config under the budget with the best validation ``cfg.metric`` (deterministic given
    ``cfg.seed``, apart from measured latencies).

    Every candidate (initial, mutated or crossed over) is checked against the budget before it is
    evaluated and redrawn when over it; ConfigError if even the smallest config exceeds the budget.
    ``history`` has one entry per candidate per generation (``generation``, ``config``, ``macs``,
    ``score``, and the candidate's ``psnr``, ``ssim`` and metric); ``score`` is the metric, negated for
    LPIPS, FID and KID so that higher is always better (``best_score`` likewise). ``evaluated`` counts
    distinct configs scored. ``progress(generation, generations, best_score)`` is called after each
    generation. The search itself is :func:`edgegan.compress.evolution.evolve`.

    Under ``cfg.budget_ms`` the cost of a candidate is its latency predicted by ``latency_model`` (fitted
    here by :func:`supernet_latency_model` when not given; it must match ``cfg.size`` and
    ``cfg.latency_threads``); each history entry also has ``predicted_ms``, and ``result.latency`` holds the
    model's fit, its error against direct measurement and the winner's check
    (:func:`~edgegan.compress.latency_budget.settle`).
    ``measure`` replaces ONNX Runtime timing (tests).
    """
    if not isinstance(supernet, MobileResnetSupernet):
        raise ConfigError(f"search needs a MobileResnetSupernet, got {type(supernet).__name__}")
    if not isinstance(cfg, SearchConfig):
        raise ConfigError(f"cfg must be a SearchConfig, got {type(cfg).__name__}")
    if cfg.target == "teacher" and teacher is None:
        raise ConfigError("target='teacher' needs a teacher model")
    choices = supernet._check_choices(cfg.choices)  # raises ConfigError for choices outside [1, ngf]
    if cfg.metric in ("fid", "kid") and len(val_data) < 2:
        raise ConfigError(f"metric {cfg.metric} needs at least 2 validation images, got {len(val_data)}")
    scorer = Scorer(cfg.metric, cfg.device)
    sign = -1.0 if cfg.metric in LOWER_IS_BETTER else 1.0
    seen: dict[Config, dict[str, float | None]] = {}

    def score(config: Config) -> float:
        seen[config] = evaluate_metrics(
            supernet, config, val_data, target=cfg.target, teacher=teacher, device=cfg.device, scorer=scorer
        )
        value = seen[config][cfg.metric]
        if value is None:
            raise ConfigError(f"{cfg.metric} cannot score these images (SSIM needs at least 11 px a side)")
        return sign * value

    if cfg.budget_ms is None:
        assert cfg.budget_macs is not None
        cost, budget, cost_name = (lambda config: subnet_macs(supernet, config, cfg.size)), cfg.budget_macs, "MAC"
    else:
        if latency_model is None:
            latency_model = supernet_latency_model(
                supernet,
                cfg.size,
                choices=choices,
                threads=cfg.latency_threads,
                samples=cfg.latency_samples,
                seed=cfg.seed,
                measure=measure,
            )
        latency_model.check_matches((cfg.size, cfg.size), cfg.latency_threads)
        cost = predicted_us(latency_model, lambda config: subnet_features(supernet, config, cfg.size))
        budget, cost_name = round(1000 * cfg.budget_ms), "predicted-latency (µs)"

    result = evolve(
        [choices] * len(supernet.largest_config()),
        cost,
        score,
        budget,
        population=cfg.population,
        generations=cfg.generations,
        parents=cfg.parents,
        mutate_prob=cfg.mutate_prob,
        seed=cfg.seed,
        mode=cfg.mode,
        progress=progress,
        cost_name=cost_name,
    )
    for entry in result.history:  # PSNR stays in the report, next to the metric that ranked
        entry.update(seen[tuple(entry["config"])])
    if cfg.budget_ms is not None:
        assert latency_model is not None
        timer = measure or (
            lambda m: measure_onnx_ms(m, cfg.size, threads=cfg.latency_threads, in_channels=supernet.config.input_nc)
        )
        macs = lambda config: subnet_macs(supernet, config, cfg.size)  # noqa: E731
        settle(result, latency_model, lambda c: _subnet(supernet, c), cfg.budget_ms, macs, timer, top=cfg.verify_top)
    return result


def finalize_student(
    supernet: MobileResnetSupernet,
    config: Sequence[int],
    out_dir: str | os.PathLike[str],
    *,
    size: int = 256,
    check: bool = True,
) -> dict[str, Any]:
    """Extract the sub-network at ``config`` and save it as ``out_dir/student/`` plus ``out_dir/student.onnx``.

    The folder is an ``edgegan.load``-able ``MobileResnetGenerator``; the ONNX export is checked against
    PyTorch on a random ``size``×``size`` input (``max_abs_diff``). Returns the paths and the costs.
    """
    from edgegan.stages import save_student

    ch = supernet.validate_config(config)
    return {"config": list(ch), **save_student(extract_subnet(supernet, ch), out_dir, size=size, check=check)}


def finetune(
    teacher: nn.Module,
    data: Dataset[Any],
    out: str | os.PathLike[str],
    cfg: Any,
    student: nn.Module,
    **kw: Any,
) -> DistillResult:
    """Fine-tune the extracted ``student`` by distillation from ``teacher``: ``distill(..., student=student)``.

    ``cfg`` is a :class:`~edgegan.compress.distill.DistillConfig`; further keywords (``discriminator``,
    ``resume``, ``progress``, ``device``) go to :func:`~edgegan.compress.distill.distill`.
    """
    from edgegan.compress.distill import distill

    return distill(teacher, data, out, cfg, student=student, **kw)
