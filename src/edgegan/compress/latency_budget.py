"""Search under a measured latency budget, shared by GAN Compression's and UGC's searches.

A candidate's cost is the latency a :class:`~edgegan.profile.latency_model.LatencyModel` predicts for it
(fitted on a few dozen sub-networks measured directly in ONNX Runtime); the winner is then measured
directly, and while it is over the budget the next best candidates are (:func:`check_winner`). The search
result records the runtime, threads, size and machine the budget refers to (:func:`latency_record`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from edgegan.compress.evolution import EvolutionResult
from edgegan.profile.latency_model import LatencyModel, fit_latency_model

__all__ = ["check_winner", "fit_family", "latency_record", "predicted_us", "sample_configs", "settle"]

Config = tuple[int, ...]


def sample_configs(genes: Sequence[Sequence[int]], n: int, seed: int = 0) -> list[Config]:
    """``n`` distinct configs (fewer when the space is smaller): the smallest, the largest, then random ones."""
    choices = [sorted(set(g)) for g in genes]
    configs: list[Config] = [tuple(g[0] for g in choices), tuple(g[-1] for g in choices)]
    configs = list(dict.fromkeys(configs))
    rng = random.Random(seed)
    for _ in range(n * 50):
        if len(configs) >= n:
            break
        c = tuple(rng.choice(g) for g in choices)
        if c not in configs:
            configs.append(c)
    return configs[:n]


def fit_family(
    build: Callable[[Config], nn.Module],
    genes: Sequence[Sequence[int]],
    size: int,
    *,
    threads: int = 1,
    samples: int = 24,
    seed: int = 0,
    in_channels: int = 3,
    measure: Callable[[nn.Module], float] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LatencyModel:
    """A latency model of the sub-networks ``build(config)``, fitted on ``samples`` of them measured directly
    (:func:`sample_configs`; a quarter held out to measure the prediction error)."""
    return fit_latency_model(
        build,
        sample_configs(genes, samples, seed),
        size,
        threads=threads,
        seed=seed,
        in_channels=in_channels,
        measure=measure,
        progress=progress,
    )


def check_winner(
    result: EvolutionResult,
    build: Callable[[Config], nn.Module],
    budget_ms: float,
    timer: Callable[[nn.Module], float],
    *,
    top: int = 5,
) -> dict[str, Any]:
    """Measure the winner of a latency-budget search; while it is over ``budget_ms``, the next best distinct
    candidates (``top`` in all), and make the first that fits the winner.

    The history's entries need ``predicted_ms``. Updates ``result`` in place (``best_config``, ``best_score``,
    ``best_macs``) and returns every checked config with its predicted and measured milliseconds, the winner's
    ``measured_ms`` and ``within_budget`` (False when none of them measured under budget: the best-scoring
    one is kept, and the report must say so).
    """
    ranked: list[dict[str, Any]] = []
    for entry in sorted(result.history, key=lambda h: -h["score"]):
        if all(tuple(e["config"]) != tuple(entry["config"]) for e in ranked):
            ranked.append(entry)
    checked: list[dict[str, Any]] = []
    chosen: dict[str, Any] | None = None
    for entry in ranked[:top]:
        config = tuple(entry["config"])
        ms = float(timer(build(config)))
        checked.append({"config": list(config), "predicted_ms": entry["predicted_ms"], "measured_ms": ms})
        if ms <= budget_ms:
            chosen = entry
            break
    fits = chosen is not None
    chosen = chosen or ranked[0]
    result.best_config = tuple(chosen["config"])
    result.best_score = float(chosen["score"])
    result.best_macs = int(chosen["macs"])
    measured = next(c["measured_ms"] for c in checked if tuple(c["config"]) == result.best_config)
    return {"checked": checked, "within_budget": fits, "measured_ms": measured}


def latency_record(model: LatencyModel, budget_ms: float, check: dict[str, Any]) -> dict[str, Any]:
    """What a latency-budget search result records: the budget, where it was measured, the model and its error."""
    return {
        "budget_ms": budget_ms,
        "runtime": model.runtime,
        "threads": model.threads,
        "size": list(model.size),
        "machine": model.machine,
        "model": {"coef": model.coef, "intercept": model.intercept},
        "model_error": model.error,
        **check,
    }


def predicted_us(model: LatencyModel, features: Callable[[Config], dict[str, float]]) -> Callable[[Config], int]:
    """A search's cost: the latency ``model`` predicts from ``features(config)``, in integer microseconds
    (evolve compares integer costs)."""
    return lambda config: max(0, round(1000 * model.predict(features(config))))


def settle(
    result: EvolutionResult,
    model: LatencyModel,
    build: Callable[[Config], nn.Module],
    budget_ms: float,
    macs: Callable[[Config], int],
    timer: Callable[[nn.Module], float],
    *,
    top: int = 5,
) -> None:
    """Finish a search run with :func:`predicted_us` as its cost: each history entry gets ``predicted_ms`` and its
    real ``macs``, the winner is measured directly (:func:`check_winner`) and ``result.latency`` is recorded."""
    for entry in result.history:
        entry["predicted_ms"] = entry["macs"] / 1000
        entry["macs"] = macs(tuple(entry["config"]))
    result.latency = latency_record(model, budget_ms, check_winner(result, build, budget_ms, timer, top=top))
