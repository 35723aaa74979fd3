"""UGC's evolutionary search over the trained depth-width supernet: the student under a MAC budget and
two architecturally complementary teachers of about ``teacher_ratio`` × its MACs: a *wider* one (the
student's depths, widths free) and a *deeper* one (the deepest stage choices, widths free). Candidates
keep their inherited weights (no retraining) and are ranked on the labelled validation slice by
``cfg.search_by``: by default KID when the Inception weights are found, else SSIM, never PSNR (PSNR rewards
blur: on facades a constant mean image outscores every trained model). Each record also keeps every
candidate's PSNR and SSIM for the reports. Search: :func:`edgegan.compress.evolution.evolve`; costs are GAN
Compression's MAC convention.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from edgegan.compress.evolution import EvolutionResult, evolve
from edgegan.compress.latency_budget import fit_family, predicted_us, settle
from edgegan.errors import ConfigError
from edgegan.models import DepthWidthSupernet
from edgegan.models.depth_width import N_WIDTH_GENES
from edgegan.profile.latency_model import cost_features, measure_onnx_ms
from edgegan.profile.macs import profile_macs
from edgegan.ugc.common import Judge, search_metric
from edgegan.ugc.config import UGCConfig

__all__ = ["make_judge", "search_all", "search_student", "search_teachers", "subnet_macs"]

_PROBE = 32
_CACHE_ATTR = "_edgegan_dw_macs"
Progress = Callable[[int, int, float], None]


def subnet_macs(supernet: DepthWidthSupernet, genes: Sequence[int], size: int = 256) -> int:
    """MACs (GAN Compression convention) of the sub-network at ``genes`` on a ``size``² input (cached).

    Profiled at 32 px and scaled by ``(size/32)²`` when ``size`` is a multiple of 4 (exact: every layer
    runs at stride 1, 2 or 4)."""
    g = supernet.validate_config(genes)
    cache = supernet.__dict__.setdefault(_CACHE_ATTR, {})
    key = (g, size)
    if key not in cache:
        probe = _PROBE if size % 4 == 0 else size
        sub = supernet.extract(g).eval()
        param = next(sub.parameters())
        x = torch.zeros(1, supernet.config.input_nc, probe, probe, device=param.device, dtype=param.dtype)
        cache[key] = profile_macs(sub, x).macs_gc * size * size // (probe * probe)
    return int(cache[key])


class _Scorer:
    """Ranks sub-networks of ``supernet`` with ``judge`` (cached); ``scores`` keeps every figure."""

    def __init__(self, supernet: DepthWidthSupernet, judge: Judge) -> None:
        self.supernet, self.judge = supernet, judge
        self.cache: dict[tuple[int, ...], dict[str, float]] = {}

    def scores(self, genes: Sequence[int]) -> dict[str, float]:
        key = tuple(genes)
        if key not in self.cache:
            previous = self.supernet.active_config
            self.supernet.set_config(key)
            try:
                self.cache[key] = self.judge(self.supernet)
            finally:
                self.supernet.set_config(previous)
        return self.cache[key]

    def __call__(self, genes: tuple[int, ...]) -> float:
        return self.judge.rank(self.scores(genes))

    def record(self, result: EvolutionResult) -> dict[str, Any]:
        """``result`` as a dict, with the metric it was ranked by and each candidate's validation figures."""
        out = result.to_dict()
        for row in out["history"]:
            row["val"] = self.scores(row["config"])
        return {**out, "metric": self.judge.metric, "val": self.scores(result.best_config)}


def make_judge(
    val_pairs: list[tuple[torch.Tensor, torch.Tensor]], cfg: UGCConfig, device: torch.device | str = "cpu"
) -> Judge:
    """The search's :class:`~edgegan.ugc.common.Judge` (``cfg.search_by``, ``auto`` resolved)."""
    if not val_pairs:
        raise ConfigError("the search needs labelled validation pairs (val_fraction > 0 and at least 2 labelled pairs)")
    return Judge(val_pairs, search_metric(cfg, len(val_pairs)), device=device, weights=cfg.eval_weights)


def _run(
    supernet: DepthWidthSupernet,
    genes: list[tuple[int, ...]],
    score: Callable[[tuple[int, ...]], float],
    cfg: UGCConfig,
    budget: int,
    min_cost: int,
    seed: int,
    progress: Progress | None,
) -> EvolutionResult:
    return evolve(
        genes,
        lambda g: subnet_macs(supernet, g, cfg.profile_size),
        score,
        budget,
        min_cost=min_cost,
        population=cfg.population,
        generations=cfg.generations,
        parents=cfg.parents,
        mutate_prob=cfg.mutate_prob,
        seed=seed,
        progress=progress,
    )


def _student(
    supernet: DepthWidthSupernet,
    genes: list[tuple[int, ...]],
    score: Callable[[tuple[int, ...]], float],
    cfg: UGCConfig,
    progress: Progress | None,
    measure: Callable[[nn.Module], float] | None = None,
) -> EvolutionResult:
    """The student: under ``cfg.budget`` MACs, or under ``cfg.budget_ms`` predicted by a latency model fitted
    on directly measured sub-networks, its winner measured directly (``result.latency``)."""
    if cfg.budget_ms is None:
        return _run(supernet, genes, score, cfg, cfg.budget_macs, 0, cfg.seed, progress)

    def build(g: tuple[int, ...]) -> nn.Module:
        return supernet.extract(supernet.validate_config(g)).eval().cpu()

    size, threads, channels = cfg.profile_size, cfg.latency_threads, supernet.config.input_nc
    model = fit_family(
        build,
        genes,
        size,
        threads=threads,
        samples=cfg.latency_samples,
        seed=cfg.seed,
        in_channels=channels,
        measure=measure,
    )
    features: dict[tuple[int, ...], dict[str, float]] = {}

    def features_of(g: tuple[int, ...]) -> dict[str, float]:
        if g not in features:
            features[g] = cost_features(build(g), size, channels)
        return features[g]

    result = evolve(
        genes,
        predicted_us(model, features_of),
        score,
        round(1000 * cfg.budget_ms),
        population=cfg.population,
        generations=cfg.generations,
        parents=cfg.parents,
        mutate_prob=cfg.mutate_prob,
        seed=cfg.seed,
        progress=progress,
        cost_name="predicted-latency (µs)",
    )
    timer = measure or (lambda m: measure_onnx_ms(m, size, threads=threads, in_channels=channels))
    settle(result, model, build, cfg.budget_ms, lambda g: subnet_macs(supernet, g, size), timer)
    return result


def search_student(
    supernet: DepthWidthSupernet,
    val_pairs: list[tuple[torch.Tensor, torch.Tensor]],
    cfg: UGCConfig,
    *,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    judge: Judge | None = None,
    measure: Callable[[nn.Module], float] | None = None,
) -> EvolutionResult:
    """The best sub-network with at most ``cfg.budget`` MACs, or ``cfg.budget_ms`` measured milliseconds (see
    :func:`search_all` for the record); ``measure`` replaces ONNX Runtime timing (tests)."""
    genes = supernet.gene_choices(cfg.widths, cfg.depths, cfg.trunk_depths)
    score = _Scorer(supernet, judge or make_judge(val_pairs, cfg, device))
    return _student(supernet, genes, score, cfg, progress, measure)


def search_teachers(
    supernet: DepthWidthSupernet,
    val_pairs: list[tuple[torch.Tensor, torch.Tensor]],
    cfg: UGCConfig,
    student: Sequence[int],
    *,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    judge: Judge | None = None,
) -> dict[str, dict[str, Any]]:
    """The wider and the deeper teacher, each in ``[teacher_window, 1] × target`` MACs where the target is
    ``teacher_ratio`` × the student's MACs, capped by the largest network its restricted space holds."""
    full = supernet.gene_choices(cfg.widths, cfg.depths, cfg.trunk_depths)
    student_g = supernet.validate_config(student)
    student_macs = subnet_macs(supernet, student_g, cfg.profile_size)
    spaces = {
        "wide": full[:N_WIDTH_GENES] + [(v,) for v in student_g[N_WIDTH_GENES:]],
        "deep": full[:N_WIDTH_GENES] + [(max(c),) for c in full[N_WIDTH_GENES:]],
    }
    score = _Scorer(supernet, judge or make_judge(val_pairs, cfg, device))
    out: dict[str, dict[str, Any]] = {}
    for i, (name, genes) in enumerate(spaces.items()):
        ceiling = subnet_macs(supernet, tuple(max(c) for c in genes), cfg.profile_size)
        target = min(round(cfg.teacher_ratio * student_macs), ceiling)
        result = _run(
            supernet, genes, score, cfg, target, round(cfg.teacher_window * target), cfg.seed + 1 + i, progress
        )
        out[name] = {
            **score.record(result),
            "target_macs": target,
            "capped": target < round(cfg.teacher_ratio * student_macs),
            "ratio": result.best_macs / student_macs,
        }
    return out


def search_all(
    supernet: DepthWidthSupernet,
    val_pairs: list[tuple[torch.Tensor, torch.Tensor]],
    cfg: UGCConfig,
    *,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Student first, then its two teachers; a JSON-ready record with genes, MACs, ratios, the metric they
    were ranked by (``metric``; ``best_score`` is it made higher-is-better, so KID/FID/LPIPS are negated) and
    their validation figures (``val``: PSNR, SSIM and that metric)."""
    judge = make_judge(val_pairs, cfg, device)
    score = _Scorer(supernet, judge)
    genes = supernet.gene_choices(cfg.widths, cfg.depths, cfg.trunk_depths)
    student = _student(supernet, genes, score, cfg, progress)
    teachers = search_teachers(
        supernet, val_pairs, cfg, student.best_config, device=device, progress=progress, judge=judge
    )
    return {
        "budget_macs": cfg.budget_macs if cfg.budget_ms is None else None,
        "budget_ms": cfg.budget_ms,
        "size": cfg.profile_size,
        "metric": judge.metric,
        "student": score.record(student),
        **teachers,
    }
