"""Resumable stage chains, the bookkeeping GAN Compression's and UGC's pipelines share.

A pipeline is a list of named stages, each writing into ``out/<stage>/``. A stage is complete when its
``stage.json`` marker exists (written atomically, last, with the stage's summary); :func:`run_stage` skips
a complete stage and resumes an interrupted one. The methods themselves stay in the pipelines' stage
functions; this module only decides whether to call them and records what they return. It also holds
:func:`stage_line`, the console line of a progress event for the pipelines' commands, and
:func:`save_student`, the hand-over of a finished student as a model folder plus a checked ONNX file.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from edgegan.compress.recipe_parts import json_safe
from edgegan.errors import ConfigError
from edgegan.fileio import atomic_write_json

__all__ = [
    "MARKER",
    "StageFn",
    "StageProgress",
    "mark_done",
    "run_stage",
    "save_student",
    "stage_done",
    "stage_line",
    "stage_range",
]

PathLike = str | os.PathLike[str]
MARKER = "stage.json"
StageFn = Callable[[Path, bool], dict[str, Any]]
"""``fn(folder, resume)``: run one stage into ``folder`` and return its summary."""
StageProgress = Callable[[str, str, dict[str, Any] | None], None]
"""``progress(stage, event, summary)`` with event ``"start"`` (summary ``{"resume": bool}``), ``"skip"``
(summary from the marker, or None when the pipeline had nothing for the stage to do) or ``"done"``."""


def stage_done(out: PathLike, stage: str) -> dict[str, Any] | None:
    """The summary recorded in ``out/<stage>/stage.json``, or None when the stage has not completed."""
    marker = Path(out) / stage / MARKER
    if not marker.is_file():
        return None
    return dict(json.loads(marker.read_text()).get("summary") or {})


def mark_done(out: PathLike, stage: str, summary: dict[str, Any]) -> dict[str, Any]:
    """Record ``summary`` (made JSON-safe, and returned so) as the completed ``stage`` of ``out``."""
    summary = json_safe(summary)
    atomic_write_json(Path(out) / stage / MARKER, {"stage": stage, "completed": True, "summary": summary})
    return summary


def stage_range(stages: Sequence[str], until: str | None = None, only: str | None = None) -> list[str]:
    """The stages to visit: all of ``stages``, those up to ``until``, or just ``only``."""
    for name, value in (("until", until), ("only", only)):
        if value is not None and value not in stages:
            raise ConfigError(f"{name} must be one of {', '.join(stages)}, got {value!r}")
    if until is not None and only is not None:
        raise ConfigError("give until or only, not both")
    if only is not None:
        return [only]
    return list(stages[: stages.index(until) + 1]) if until is not None else list(stages)


def run_stage(
    out: PathLike, stage: str, fn: StageFn, progress: StageProgress | None = None
) -> tuple[dict[str, Any], bool]:
    """Run ``fn(out/<stage>, resume)`` unless the stage is complete; returns its summary and whether it ran.

    ``resume`` is true when the stage folder already holds something: an interrupted run, which the stage's
    trainer continues from its last checkpoint. The marker is written only after ``fn`` returns."""
    done = stage_done(out, stage)
    if done is not None:
        if progress is not None:
            progress(stage, "skip", done)
        return done, False
    folder = Path(out) / stage
    resume = folder.is_dir() and any(folder.iterdir())
    if progress is not None:
        progress(stage, "start", {"resume": resume})
    folder.mkdir(parents=True, exist_ok=True)
    summary = mark_done(out, stage, fn(folder, resume))
    if progress is not None:
        progress(stage, "done", summary)
    return summary, True


def stage_line(stage: str, event: str, info: dict[str, Any] | None, started: dict[str, float]) -> str:
    """The console line for one progress event; ``started`` keeps each stage's start time for its ``done`` line."""
    if event == "skip":
        return f"stage {stage}: complete, skipped"
    if event == "start":
        started[stage] = time.monotonic()
        return f"stage {stage}: {'resuming' if info and info.get('resume') else 'starting'}"
    return f"stage {stage}: done in {time.monotonic() - started.get(stage, time.monotonic()):.1f}s"


def save_student(model: nn.Module, out: PathLike, *, size: int = 256, check: bool = True) -> dict[str, Any]:
    """Save ``model`` (put in eval mode, on the CPU) as ``out/student/`` (``edgegan.load``-able) and
    ``out/student.onnx``, checked against PyTorch on a random ``size``×``size`` input when ``check``.

    Returns the paths, the costs at ``size`` (GAN Compression's ``macs_gc``, true ``macs``, ``params``) and the
    ONNX parity ``max_abs_diff``."""
    from edgegan.export.onnx import export_onnx
    from edgegan.profile.macs import profile_macs

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    model_dir = model.save(out / "student")  # type: ignore[operator]
    cost = profile_macs(model, model.example_input(size))  # type: ignore[operator]
    exported = export_onnx(model, out / "student.onnx", size=size, check=check)
    return {
        "model_dir": str(model_dir),
        "onnx": exported.path,
        "size": size,
        "macs_gc": cost.macs_gc,
        "macs": cost.macs,
        "params": cost.params,
        "max_abs_diff": exported.max_abs_diff,
    }
