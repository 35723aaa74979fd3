"""Which scale trains when: the longest start first, coarse scales finish first."""

from __future__ import annotations

from collections.abc import Sequence


def scale_costs(sizes: Sequence[tuple[int, int]], channels: Sequence[int]) -> list[float]:
    """Relative training cost of each scale: pixels × width² (the convolutions dominate)."""
    return [h * w * c * c for (h, w), c in zip(sizes, channels, strict=True)]


def schedule(costs: Sequence[float], workers: int) -> list[int]:
    """Order in which a pool of ``workers`` takes scales from a shared queue.

    The ``workers - 1`` most expensive scales start at once, each on its own worker, since
    the longest jobs bound the total time; the last worker takes the rest from the coarsest
    upwards, so coarse scales finish (and can be shipped) first. Whoever frees up next
    continues with the queue.
    """
    if workers < 1:
        raise ValueError("workers must be >= 1")
    by_cost = sorted(range(len(costs)), key=lambda i: (-costs[i], -i))
    first = by_cost[: max(0, min(workers - 1, len(costs) - 1))]
    rest = sorted(i for i in range(len(costs)) if i not in first)
    return first + rest


def simulate(costs: Sequence[float], order: Sequence[int], workers: int) -> tuple[float, dict[int, float]]:
    """Makespan and finish time of each scale when ``workers`` take ``order`` from a queue."""
    free = [0.0] * workers
    finish: dict[int, float] = {}
    for i in order:
        w = min(range(workers), key=lambda k: free[k])
        free[w] += costs[i]
        finish[i] = free[w]
    return max(free), finish


def rank_share(order: Sequence[int], costs: Sequence[float], world: int, rank: int) -> list[int]:
    """The scales one of ``world`` ranks (machines or GPUs under torchrun) trains, balanced
    greedily by cost in schedule order; each rank keeps the schedule's order."""
    load = [0.0] * world
    owner: dict[int, int] = {}
    for i in sorted(order, key=lambda i: -costs[i]):
        r = min(range(world), key=lambda k: load[k])
        load[r] += costs[i]
        owner[i] = r
    return [i for i in order if owner[i] == rank]
