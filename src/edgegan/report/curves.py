"""Validation curves of training runs: read from a run folder's ``metrics.jsonl``, plotted, summarised."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

from edgegan.fileio import atomic_write_bytes

__all__ = ["late_gain", "plot_curves", "read_curve"]

Curve = list[tuple[int, float]]


def read_curve(run_dir: str | os.PathLike[str], key: str) -> Curve:
    """``[(epoch, value)]`` of ``key`` in ``run_dir/metrics.jsonl`` (rows without a finite value are skipped;
    a resumed run's repeated epochs keep the last row). Empty when the file is absent."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    rows: dict[int, float] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        value = row.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            rows[int(row.get("epoch", row["step"]))] = float(value)
    return sorted(rows.items())


def late_gain(curve: Curve, fraction: float = 0.25) -> float | None:
    """How much the value rose over the last ``fraction`` of the epochs (last value minus the value at the
    start of that stretch): near zero when the run has levelled off. None with fewer than two points."""
    if len(curve) < 2:
        return None
    start = max(0, min(len(curve) - 2, round(len(curve) * (1 - fraction)) - 1))
    return curve[-1][1] - curve[start][1]


def plot_curves(
    curves: Mapping[str, Curve], path: str | os.PathLike[str], *, ylabel: str, title: str = ""
) -> Path | None:
    """One line per named curve against the epoch, written atomically as a PNG; None if nothing to plot."""
    curves = {name: c for name, c in curves.items() if c}
    if not curves:
        return None
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, curve in curves.items():
        xs, ys = zip(*curve, strict=True)
        ax.plot(xs, ys, marker="o", markersize=3, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    out = Path(path)
    atomic_write_bytes(out, buf.getvalue())
    return out
