"""What the GAN Compression recipes return: one small frozen dataclass per recipe, with the paths and figures it
produced (:class:`Pix2PixResult`, :class:`CycleGANResult`, :class:`DistillResult`, :class:`SupernetResult`,
:class:`PipelineResult`).

The recipes returned plain dicts before. Scripts written against those keep working: every result also reads as
that dict (``result["best_generator"]``, ``"best_epoch" in result``, ``result.get(...)``, ``result.items()``,
``{**result}``), with the paths as ``str`` there as before, while the attributes hold :class:`~pathlib.Path`.
:meth:`RecipeResult.to_dict` is exactly the old dict; the ``summary.json`` a recipe writes is
``json_safe(result.to_dict())``, as before.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

__all__ = ["CycleGANResult", "DistillResult", "Pix2PixResult", "PipelineResult", "RecipeResult", "SupernetResult"]


class RecipeResult(Mapping[str, Any]):
    """The shared part of the results: read-only dict access to the keys the recipes returned before.

    Kept for scripts written before the dataclasses; new code reads the attributes. The old dict's keys are the
    field names, in field order; ``Path`` fields read as ``str``."""

    _omit_when_none: ClassVar[tuple[str, ...]] = ()
    """Keys the old dict had only when set: left out of :meth:`to_dict` while their field is None."""

    def to_dict(self) -> dict[str, Any]:
        """The dict the recipe returned before (paths as ``str``); nested values are shared, not copied."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]  # every subclass is a dataclass
            value = getattr(self, f.name)
            if value is None and f.name in self._omit_when_none:
                continue
            out[f.name] = str(value) if isinstance(value, Path) else value
        return out

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


@dataclass(frozen=True, eq=True)
class Pix2PixResult(RecipeResult):
    """What :func:`~edgegan.compress.teacher.train_pix2pix` produced.

    ``best_generator`` is the one ``select_by`` picked (the last epoch's for ``last``, and then ``best_metric`` is
    None); ``discriminator`` is the PatchGAN's ``{"n_layers", "patch", "auto"}``; ``last_metrics`` the last epoch's
    losses, ``lr`` and validation scores (empty when a resumed run had no epoch left)."""

    run: Path
    epochs: int
    epochs_run: int
    resumed_from: int | None
    select_by: str
    best_epoch: int | None
    best_metric: float | None
    best_generator: Path
    last_generator: Path
    best_discriminator: Path
    discriminator: dict[str, Any]
    last_metrics: dict[str, float]


@dataclass(frozen=True, eq=True)
class CycleGANResult(RecipeResult):
    """What :func:`~edgegan.compress.teacher.train_cyclegan` produced.

    ``G_A`` (A to B) and ``G_B`` (B to A) are the generators ``select_by`` picked; with ``last`` the ``last_G_*``
    paths name the same folders."""

    run: Path
    epochs: int
    epochs_run: int
    resumed_from: int | None
    select_by: str
    best_epoch: int | None
    best_metric: float | None
    G_A: Path
    G_B: Path
    last_G_A: Path
    last_G_B: Path
    discriminator: dict[str, Any]
    last_metrics: dict[str, float]


@dataclass(frozen=True, eq=True)
class DistillResult(RecipeResult):
    """What :func:`~edgegan.compress.distill.distill` produced; ``summary.json`` holds it.

    ``selection`` is the validation score ``select_by`` ranks epochs by (None for ``last``), ``best_score`` that
    score at ``best_epoch``, ``selected_metrics`` that epoch's ``history`` row. ``student_init`` says where the
    student's weights came from, ``layers`` the distilled feature layers; ``history`` has one row per epoch."""

    run: Path
    epochs: int
    resumed_from: int | None
    paired: bool
    select_by: str
    selection: str | None
    best_epoch: int | None
    best_score: float | None
    selected_metrics: dict[str, Any] | None
    best_student: Path
    last_student: Path
    last_discriminator: Path
    student_init: dict[str, Any]
    layers: list[str]
    teacher_params: int
    student_params: int
    student_channels: list[int]
    history: list[dict[str, Any]]


@dataclass(frozen=True, eq=True)
class SupernetResult(RecipeResult):
    """What :func:`~edgegan.compress.supernet_train.train_supernet` produced; ``summary.json`` holds it.

    ``supernet`` is the one ``select_by`` picked (``last_supernet`` for ``last``); ``best_score`` the mean of the
    largest and smallest sub-networks' selection scores at ``best_epoch`` (None for ``last``); ``init`` describes
    the student it started from (None: random weights); ``val_reference`` is ``target`` or ``teacher``."""

    run: Path
    epochs: int
    resumed_from: int | None
    paired: bool
    val_reference: str
    select_by: str
    best_epoch: int | None
    best_score: float | None
    init: dict[str, Any] | None
    sandwich: bool
    ngf: int
    choices: list[int]
    largest_config: list[int]
    smallest_config: list[int]
    supernet: Path
    last_supernet: Path
    last_discriminator: Path
    layers: list[str]
    teacher_params: int
    largest_params: int
    smallest_params: int
    history: list[dict[str, Any]]


@dataclass(frozen=True, eq=True)
class PipelineResult(RecipeResult):
    """What :func:`~edgegan.compress.pipeline.run_pipeline` produced.

    ``stages`` maps each stage visited to its recorded summary (a JSON dict, as in its ``stage.json``); ``summary``
    is ``export/summary.json`` once the export stage is complete, else None (and then absent from the dict view)."""

    _omit_when_none: ClassVar[tuple[str, ...]] = ("summary",)

    run: Path
    stages: dict[str, dict[str, Any]]
    ran: list[str]
    skipped: list[str]
    summary: dict[str, Any] | None = None
