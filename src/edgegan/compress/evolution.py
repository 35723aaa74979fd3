"""Evolutionary (or random) search over integer genes under a cost window.

Shared by GAN Compression's channel search (:mod:`edgegan.compress.search`) and UGC's depth-width search
(:mod:`edgegan.ugc.search`). A candidate is a tuple of genes, each drawn from its own sorted choice list.
Every candidate (initial, mutated or crossed over) is checked against ``min_cost <= cost <= budget``
before it is scored and redrawn when outside; scores are cached, higher is better, and the search is
deterministic given its seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from edgegan.errors import ConfigError

__all__ = ["Candidate", "EvolutionResult", "evolve"]

Candidate = tuple[int, ...]
SearchMode = Literal["evolution", "random"]
Progress = Callable[[int, int, float], None]

# Redraws before an infeasible candidate is repaired by stepping genes down (or up) one choice at a time.
MAX_TRIES = 20


@dataclass
class EvolutionResult:
    best_config: Candidate
    best_score: float
    best_macs: int
    history: list[dict[str, Any]] = field(default_factory=list)
    evaluated: int = 0
    # A latency-budget search's record (edgegan.compress.search): the latency model and the winner's check.
    latency: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["best_config"] = list(self.best_config)
        return out


class _Evolver:
    def __init__(
        self,
        genes: Sequence[Sequence[int]],
        cost: Callable[[Candidate], int],
        score: Callable[[Candidate], float],
        budget: int,
        min_cost: int,
        seed: int,
        mutate_prob: float,
    ) -> None:
        self.genes = [sorted(set(int(v) for v in g)) for g in genes]
        if not self.genes or any(not g for g in self.genes):
            raise ConfigError("every gene needs at least one choice")
        self.cost_fn, self.score_fn = cost, score
        self.budget, self.min_cost = budget, min_cost
        self.rng = random.Random(seed)
        self.mutate_prob = mutate_prob
        self.scores: dict[Candidate, float] = {}
        self.history: list[dict[str, Any]] = []

    def feasible(self, c: Candidate) -> bool:
        return self.min_cost <= self.cost_fn(c) <= self.budget

    def repair(self, c: Candidate) -> Candidate | None:
        """Step random genes one choice down while over budget (up while under ``min_cost``)."""
        ch = list(c)
        for _ in range(sum(len(g) for g in self.genes) * 2):
            cost = self.cost_fn(tuple(ch))
            if self.min_cost <= cost <= self.budget:
                return tuple(ch)
            down = cost > self.budget
            movable = [i for i, v in enumerate(ch) if (v > self.genes[i][0] if down else v < self.genes[i][-1])]
            if not movable:
                return None
            i = self.rng.choice(movable)
            options = [v for v in self.genes[i] if (v < ch[i] if down else v > ch[i])]
            ch[i] = max(options) if down else min(options)
        return None

    def draw(self, make: Callable[[], Candidate]) -> Candidate:
        c = make()
        for _ in range(MAX_TRIES):
            if self.feasible(c):
                return c
            c = make()
        fixed = self.repair(c)
        for _ in range(MAX_TRIES * 10):
            if fixed is not None:
                return fixed
            fixed = self.repair(self.sample_any())
        raise ConfigError(f"no candidate found with cost in [{self.min_cost:,}, {self.budget:,}]")

    def sample_any(self) -> Candidate:
        return tuple(self.rng.choice(g) for g in self.genes)

    def sample(self) -> Candidate:
        return self.draw(self.sample_any)

    def mutate(self, parent: Candidate) -> Candidate:
        def make() -> Candidate:
            p = self.mutate_prob
            return tuple(
                self.rng.choice(g) if self.rng.random() < p else v for g, v in zip(self.genes, parent, strict=True)
            )

        return self.draw(make)

    def crossover(self, a: Candidate, b: Candidate) -> Candidate:
        return self.draw(lambda: tuple(self.rng.choice((x, y)) for x, y in zip(a, b, strict=True)))

    def score(self, c: Candidate, generation: int) -> float:
        if c not in self.scores:
            self.scores[c] = float(self.score_fn(c))
        cost = self.cost_fn(c)
        assert self.min_cost <= cost <= self.budget, f"scored a candidate outside the cost window: {c} ({cost:,})"
        value = self.scores[c]
        self.history.append({"generation": generation, "config": list(c), "macs": cost, "score": value})
        return value


def evolve(
    genes: Sequence[Sequence[int]],
    cost: Callable[[Candidate], int],
    score: Callable[[Candidate], float],
    budget: int,
    *,
    min_cost: int = 0,
    population: int = 20,
    generations: int = 10,
    parents: int = 5,
    mutate_prob: float = 0.2,
    seed: int = 0,
    mode: SearchMode = "evolution",
    progress: Progress | None = None,
    cost_name: str = "MAC",
) -> EvolutionResult:
    """Best-scoring candidate with ``min_cost <= cost(c) <= budget``.

    ``mode="evolution"`` keeps the best ``parents`` of each generation and fills the rest half by
    mutation (each gene redrawn with ``mutate_prob``) and half by uniform crossover of two parents;
    ``mode="random"`` scores ``population`` fresh feasible samples per generation. ConfigError when the
    smallest candidate is over ``budget`` or no candidate fits the window. ``cost_name`` names the cost in
    that message (MACs, or predicted latency in µs). ``history`` records the cost under ``macs``.
    """
    if parents > population:
        raise ConfigError(f"parents ({parents}) cannot exceed population ({population})")
    if min_cost > budget:
        raise ConfigError(f"min_cost {min_cost:,} is above the budget {budget:,}")
    s = _Evolver(genes, cost, score, budget, min_cost, seed, mutate_prob)
    smallest = tuple(g[0] for g in s.genes)
    floor = cost(smallest)
    if floor > budget:
        raise ConfigError(
            f"{cost_name} budget {budget:,} is below the smallest candidate's cost {floor:,} "
            f"({'_'.join(map(str, smallest))}); raise the budget or add smaller choices"
        )
    best: tuple[float, Candidate] | None = None

    def consider(c: Candidate, value: float) -> None:
        nonlocal best
        if best is None or value > best[0]:
            best = (value, c)

    if mode == "random":
        for gen in range(generations):
            for _ in range(population):
                c = s.sample()
                consider(c, s.score(c, gen))
            if progress is not None:
                progress(gen + 1, generations, best[0] if best else float("nan"))
    else:
        pop = [s.sample() for _ in range(population)]
        for gen in range(generations):
            scored = [(s.score(c, gen), c) for c in pop]
            for value, c in scored:
                consider(c, value)
            if progress is not None:
                progress(gen + 1, generations, best[0] if best else float("nan"))
            if gen == generations - 1:
                break
            # Stable sort: ties keep their order, so the run is deterministic.
            ranked = sorted(range(len(scored)), key=lambda i: -scored[i][0])
            kept = [scored[i][1] for i in ranked[:parents]]
            n_children = population - len(kept)
            n_mutate = n_children // 2
            children = [s.mutate(s.rng.choice(kept)) for _ in range(n_mutate)]
            for _ in range(n_children - n_mutate):
                a, b = s.rng.sample(kept, 2) if len(kept) > 1 else (kept[0], kept[0])
                children.append(s.crossover(a, b))
            pop = kept + children

    assert best is not None
    best_score, best_config = best
    best_cost = cost(best_config)
    assert min_cost <= best_cost <= budget, f"best candidate {best_config} is outside the window ({best_cost:,})"
    return EvolutionResult(best_config, best_score, best_cost, s.history, len(s.scores))
