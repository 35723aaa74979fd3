"""Write a Markdown report with PNG sample grids and a matplotlib trade-off plot.

Everything is written to temporary files and renamed into place, so an interrupted report
never leaves a half-written page next to earlier results.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from edgegan.data.images import to_pil
from edgegan.errors import EdgeganError
from edgegan.fileio import atomic_path, atomic_write_text

Tensor = torch.Tensor


def _fit(img: Tensor, cell: int) -> Tensor:
    """Resize a [3, H, W] image in [-1, 1] so its longer side is ``cell`` and pad it to a square."""
    h, w = img.shape[-2:]
    scale = cell / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = F.interpolate(img[None].float(), size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)[0]
    out = torch.ones(3, cell, cell)  # white padding
    top, left = (cell - nh) // 2, (cell - nw) // 2
    out[:, top : top + nh, left : left + nw] = small.clamp(-1, 1)
    return out


def image_grid(
    rows: Sequence[Sequence[Tensor]],
    *,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    cell: int = 128,
    pad: int = 4,
) -> Image.Image:
    """A grid image: each row a sequence of [3, H, W] tensors in [-1, 1] (any sizes)."""
    if not rows or not any(rows):
        raise EdgeganError("image_grid needs at least one image")
    ncols = max(len(r) for r in rows)
    label_w = 90 if row_labels else 0
    label_h = 18 if col_labels else 0
    width = label_w + ncols * (cell + pad) + pad
    height = label_h + len(rows) * (cell + pad) + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for j, name in enumerate(col_labels or []):
        draw.text((label_w + pad + j * (cell + pad), 3), str(name)[: cell // 6], fill="black")
    for i, row in enumerate(rows):
        y = label_h + pad + i * (cell + pad)
        if row_labels and i < len(row_labels):
            draw.text((4, y + cell // 2 - 6), str(row_labels[i])[:14], fill="black")
        for j, img in enumerate(row):
            canvas.paste(to_pil(_fit(img, cell)), (label_w + pad + j * (cell + pad), y))
    return canvas


def save_grid(path: str | os.PathLike[str], rows: Sequence[Sequence[Tensor]], **kwargs: Any) -> Path:
    grid = image_grid(rows, **kwargs)
    with atomic_path(path) as tmp:
        grid.save(tmp, format="PNG")
    return Path(path)


def _points(series: Sequence[Mapping[str, Any]], x: str, y: str) -> list[tuple[float, float, str]]:
    pts = []
    for i, point in enumerate(series):
        if x not in point or y not in point:
            raise EdgeganError(f"series point {i} lacks {x!r} or {y!r} (has {', '.join(map(str, point))})")
        try:
            px, py = float(point[x]), float(point[y])
        except (TypeError, ValueError):
            raise EdgeganError(f"series point {i}: {x} and {y} must be numbers") from None
        if math.isfinite(px) and math.isfinite(py):
            pts.append((px, py, str(point.get("name", point.get("label", i)))))
    if not pts:
        raise EdgeganError(f"no finite ({x}, {y}) points to plot")
    return pts


def tradeoff_plot(
    path: str | os.PathLike[str],
    series: Sequence[Mapping[str, Any]],
    x: str,
    y: str,
    *,
    title: str | None = None,
    log_x: bool = False,
    group: str | None = None,
) -> Path:
    """Scatter-and-line plot of ``y`` against ``x`` (e.g. FID vs MACs, SSIM vs energy).

    Points with the same ``group`` value are joined by a line in order of ``x``; each point is
    labelled with its ``name``.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    groups: dict[str, list[Mapping[str, Any]]] = {}
    for point in series:
        groups.setdefault(str(point.get(group, "")) if group else "", []).append(point)
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    try:
        for gname, members in groups.items():
            pts = sorted(_points(members, x, y))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=gname or None)
            for px, py, label in pts:
                ax.annotate(label, (px, py), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        if log_x:
            ax.set_xscale("log")
        ax.grid(True, alpha=0.3)
        ax.set_title(title or f"{y} vs {x}")
        if group:
            ax.legend()
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return Path(path)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return str(value)


def write_report(
    out_dir: str | os.PathLike[str],
    *,
    title: str,
    metrics: Mapping[str, Any] | None = None,
    skipped: Mapping[str, str] | None = None,
    grids: Mapping[str, Sequence[Sequence[Tensor]] | Path] | None = None,
    grid_labels: Mapping[str, Sequence[str]] | None = None,
    series: Sequence[Mapping[str, Any]] | None = None,
    x: str | None = None,
    y: str | None = None,
    log_x: bool = False,
    group: str | None = None,
    notes: Sequence[str] = (),
    name: str = "report.md",
) -> Path:
    """Write ``report.md`` (plus one PNG per grid and ``tradeoff.png``) into ``out_dir``.

    ``grids`` maps a name to rows of images (or to an existing PNG); ``grid_labels`` optionally
    names the rows of a grid. With ``series``, ``x`` and ``y`` a trade-off plot is added.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", ""]
    for note in notes:
        lines += [note, ""]  # one paragraph each
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in metrics.items()]
        lines.append("")
    if skipped:
        lines += ["Not computed:", ""] + [f"- **{k}**: {reason}" for k, reason in skipped.items()] + [""]
    for gname, rows in (grids or {}).items():
        fname = f"{gname}.png"
        if isinstance(rows, Path):
            fname = os.path.relpath(rows, out)
        else:
            save_grid(out / fname, rows, row_labels=(grid_labels or {}).get(gname))
        lines += [f"## {gname}", "", f"![{gname}]({fname})", ""]
    if series is not None:
        if not x or not y:
            raise EdgeganError("a trade-off plot needs the x and y field names")
        tradeoff_plot(out / "tradeoff.png", series, x, y, log_x=log_x, group=group)
        cols = sorted({k for p in series for k in p}, key=lambda k: (k != "name", k))
        lines += [f"## {y} vs {x}", "", "![trade-off](tradeoff.png)", ""]
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(_fmt(p.get(c, "")) for c in cols) + " |" for p in series]
        lines.append("")
    path = out / name
    atomic_write_text(path, "\n".join(lines))
    return path
