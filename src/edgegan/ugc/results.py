"""What the UGC recipes return: one small frozen dataclass per recipe, with the paths and figures it produced
(:class:`UGCStage1Result`, :class:`UGCStage2Result`, :class:`UGCPipelineResult`).

They are :class:`~edgegan.compress.results.RecipeResult` s, like the GAN Compression results: scripts written
against the plain dicts the recipes returned before keep working (``result["student"]``, ``result.get(...)``,
``{**result}``, paths as ``str`` there), while the attributes hold :class:`~pathlib.Path`. ``to_dict()`` is exactly
the old dict, and the ``summary.json`` a stage writes is that dict, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from edgegan.compress.results import RecipeResult
from edgegan.models import DepthWidthGenerator

__all__ = ["UGCPipelineResult", "UGCStage1Result", "UGCStage2Result"]


@dataclass(frozen=True, eq=True)
class UGCStage1Result(RecipeResult):
    """What :func:`~edgegan.ugc.stage1.train_stage1` produced; ``summary.json`` holds it.

    ``epochs`` counts both the full-rate and the decaying ones; ``data`` is the split's sizes
    (``labeled_train``, ``labeled_val``, ``unlabeled``); ``perceptual`` says which network the OMGD feature
    terms used. ``supernet`` is left at its largest sub-network; ``history`` has one row per epoch."""

    run: Path
    epochs: int
    resumed_from: int | None
    data: dict[str, int]
    unlabeled_used: bool
    perceptual: str
    supernet: Path
    discriminator: Path
    history: list[dict[str, Any]]


@dataclass(frozen=True, eq=True)
class UGCStage2Result(RecipeResult):
    """What :func:`~edgegan.ugc.stage2.train_stage2` produced; ``summary.json`` holds it.

    ``student`` is the folder of the student passed on (``last_student`` for ``select_by="last"``, else
    ``best_student``) and ``selected_epoch`` its epoch (None when a resumed run with no epoch left never ranked
    one); ``genes`` are the student's and the wide and deep teachers' configs as the search gave them; ``last``
    is the last ``history`` row (None when no epoch ran)."""

    run: Path
    epochs: int
    resumed_from: int | None
    unlabeled_used: bool
    perceptual: str
    pseudo_label_rule: str
    genes: dict[str, Sequence[int]]
    select_by: str
    selected_epoch: int | None
    student: Path
    last_student: Path
    last: dict[str, Any] | None
    history: list[dict[str, Any]]


@dataclass(frozen=True, eq=True)
class UGCPipelineResult(RecipeResult):
    """What :func:`~edgegan.ugc.pipeline.run_ugc` produced.

    ``stages`` maps each stage visited to its recorded summary (a JSON dict, as in its ``stage.json``);
    ``student`` is the exported student, loaded, once the export stage is complete, else None (and then absent
    from the dict view)."""

    _omit_when_none: ClassVar[tuple[str, ...]] = ("student",)

    run: Path
    stages: dict[str, dict[str, Any]]
    student: DepthWidthGenerator | None = None
