"""UGC's evolutionary search over the trained depth-width supernet: the student under a MAC budget and
two architecturally complementary teachers of about ``teacher_ratio`` × its MACs: a *wider* one (the
student's depths, widths free) and a *deeper* one (the deepest stage choices, widths free). Candidates
are scored by PSNR against the labelled validation pairs with inherited weights (no retraining), using
:func:`edgegan.compress.evolution.evolve`; costs are GAN Compression's MAC convention.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from edgegan.compress.evolution import EvolutionResult, evolve
from edgegan.errors import ConfigError
from edgegan.models import DepthWidthSupernet
from edgegan.models.depth_width import N_WIDTH_GENES
from edgegan.profile.macs import profile_macs
from edgegan.ugc.common import evaluate
from edgegan.ugc.config import UGCConfig

__all__ = ["search_all", "search_student", "search_teachers", "subnet_macs"]

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


def _scorer(
    supernet: DepthWidthSupernet, val_pairs: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device | str
) -> Callable[[tuple[int, ...]], float]:
    if not val_pairs:
        raise ConfigError("the search needs labelled validation pairs (val_fraction > 0 and at least 2 labelled pairs)")

    def score(genes: tuple[int, ...]) -> float:
        previous = supernet.active_config
        supernet.set_config(genes)
        try:
            value = evaluate(supernet, val_pairs, device)["psnr"]
        finally:
            supernet.set_config(previous)
        assert value is not None
        return value

    return score


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


def search_student(
    supernet: DepthWidthSupernet,
    val_pairs: list[tuple[torch.Tensor, torch.Tensor]],
    cfg: UGCConfig,
    *,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> EvolutionResult:
    """The best sub-network with at most ``cfg.budget`` MACs."""
    genes = supernet.gene_choices(cfg.widths, cfg.depths, cfg.trunk_depths)
    return _run(supernet, genes, _scorer(supernet, val_pairs, device), cfg, cfg.budget_macs, 0, cfg.seed, progress)


def search_teachers(
    supernet: DepthWidthSupernet,
    val_pairs: list[tuple[torch.Tensor, torch.Tensor]],
    cfg: UGCConfig,
    student: Sequence[int],
    *,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
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
    score = _scorer(supernet, val_pairs, device)
    out: dict[str, dict[str, Any]] = {}
    for i, (name, genes) in enumerate(spaces.items()):
        ceiling = subnet_macs(supernet, tuple(max(c) for c in genes), cfg.profile_size)
        target = min(round(cfg.teacher_ratio * student_macs), ceiling)
        result = _run(
            supernet, genes, score, cfg, target, round(cfg.teacher_window * target), cfg.seed + 1 + i, progress
        )
        out[name] = {
            **result.to_dict(),
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
    """Student first, then its two teachers; a JSON-ready record with genes, MACs, scores and ratios."""
    student = search_student(supernet, val_pairs, cfg, device=device, progress=progress)
    teachers = search_teachers(supernet, val_pairs, cfg, student.best_config, device=device, progress=progress)
    return {"budget_macs": cfg.budget_macs, "size": cfg.profile_size, "student": student.to_dict(), **teachers}
