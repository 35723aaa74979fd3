"""The whole UGC chain in one resumable call: split -> stage1 -> search -> stage2 -> export.

Each stage writes ``out/<stage>/stage.json`` when it completes; a rerun skips completed stages and
resumes an interrupted training stage from its last checkpoint. The run's config is saved as
``out/ugc.json`` and must not change between reruns (a new fraction or budget needs a new folder).

Presets:

* ``"tiny"``: 32 px, ngf 8, one epoch per stage (tests and smoke runs).
* ``"facades-cpu"``: labels -> photo at 64 px crops from 72 px loads; supernet ngf 32 with widths
  8..32 step 8, inserted depths 0..2 and a 9-block trunk (largest sub-network 6.2G MACs at 256 px,
  so teachers are capped there: ~4.5x a 1.4G student rather than 20x); budget 1.4G at 256 px (about
  1/40 of the pix2pix ResNet teacher); teachers updated every 2nd step; 3+3 epochs per stage
  (measured on 2 CPU threads: a stage-1 step ~0.3 s, a stage-2 step ~0.4 s at 64 px).
* ``"facades-gpu"``: the paper's space at 256 px (286 px loads): ngf 64 with widths 8..64 step 8
  (largest 23.1G, still short of 20x a 1.4G student), 50+50 epochs per stage.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import edgegan
from edgegan.compress.distill import json_safe
from edgegan.errors import ConfigError
from edgegan.fileio import atomic_write_json
from edgegan.models import DepthWidthGenerator
from edgegan.stages import MARKER, StageFn, StageProgress, run_stage, stage_done, stage_range
from edgegan.ugc.common import UGCData
from edgegan.ugc.config import UGCConfig
from edgegan.ugc.data import load_split, make_split
from edgegan.ugc.results import UGCPipelineResult, UGCStage1Result, UGCStage2Result
from edgegan.ugc.search import search_all
from edgegan.ugc.stage1 import load_stage1, train_stage1
from edgegan.ugc.stage2 import export_student, train_stage2

__all__ = ["PRESETS", "STAGES", "preset", "run_ugc"]

PathLike = str | os.PathLike[str]
STAGES = ("split", "stage1", "search", "stage2", "export")
BatchProgress = Callable[[int, int, int], None]


def _epochs(n: int, decay: int | None = None) -> dict[str, int]:
    """Both stages' ``n`` epochs at the full learning rate and ``decay`` (default ``n``) decaying ones."""
    decay = n if decay is None else decay
    return {"stage1_epochs": n, "stage1_decay_epochs": decay, "stage2_epochs": n, "stage2_decay_epochs": decay}


_FACADES: dict[str, Any] = {"direction": "BtoA", "n_blocks": 9, "budget": "1.4G"}  # labels (B) -> photo (A)
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        load_size=36,
        crop_size=32,
        ngf=8,
        n_blocks=3,
        max_inserted=2,
        widths=(4, 8),
        depths=(0, 1),
        ndf=8,
        d_layers=2,
        **_epochs(1, 0),
        budget="200M",
        population=4,
        generations=2,
        parents=2,
        teacher_ratio=4.0,
        teacher_window=0.5,
    ),
    "facades-cpu": dict(
        _FACADES,
        load_size=72,
        crop_size=64,
        ngf=32,
        widths=(8, 16, 24, 32),
        depths=(0, 1, 2),
        ndf=32,
        d_layers=3,
        **_epochs(3),
        teacher_every=2,
        population=12,
        generations=6,
        parents=4,
    ),
    "facades-gpu": dict(_FACADES, load_size=286, crop_size=256, ngf=64, **_epochs(50)),
}


def preset(name: str, **overrides: Any) -> UGCConfig:
    """The named preset as a :class:`UGCConfig`, with ``overrides`` applied."""
    if name not in PRESETS:
        raise ConfigError(f"unknown UGC preset {name!r}; choose one of {', '.join(PRESETS)}")
    return UGCConfig.from_dict({**PRESETS[name], **overrides})


SEARCH_FIELDS = (
    "budget",
    "profile_size",
    "widths",
    "depths",
    "trunk_depths",
    "teacher_ratio",
    "teacher_window",
    "population",
    "generations",
    "parents",
    "mutate_prob",
    "seed",
    "val_fraction",
    "crop_size",
    "load_size",
    "direction",
    "search_by",
    "eval_weights",
)


def _reusable_search(stage1_from: PathLike | None, cfg: UGCConfig) -> dict[str, Any] | None:
    """The completed search of the run that ``stage1_from`` belongs to, when its settings match ``cfg``."""
    if stage1_from is None:
        return None
    source = Path(stage1_from).parent
    done = stage_done(source, "search")
    saved = source / "ugc.json"
    if done is None or not saved.is_file():
        return None
    theirs = json.loads(saved.read_text())["config"]
    mine = cfg.to_dict()
    if any(theirs.get(k) != mine.get(k) for k in SEARCH_FIELDS):
        return None
    return {**done, "reused_from": str((source / "search").resolve())}


def _brief(result: UGCStage1Result | UGCStage2Result) -> dict[str, Any]:
    """A trainer's summary for the stage marker: its last history row (``last``) instead of the history."""
    history = result.history
    return {k: v for k, v in result.to_dict().items() if k != "history"} | {"last": history[-1] if history else None}


_NEUTRAL_NEW_SETTINGS: dict[str, Any] = {"budget_ms": None, "latency_threads": 1, "latency_samples": 24}


def run_ugc(
    a_dir: PathLike,
    b_dir: PathLike,
    out: PathLike,
    cfg: UGCConfig | str,
    *,
    stage1_from: PathLike | None = None,
    until: str | None = None,
    progress: StageProgress | None = None,
    batch_progress: Callable[[str], BatchProgress | None] | None = None,
    device: str = "cpu",
) -> UGCPipelineResult:
    """Run (or continue) UGC on the pairs in ``a_dir``/``b_dir`` into ``out``; returns a
    :class:`~edgegan.ugc.results.UGCPipelineResult`: ``run``, every stage's summary (``stages``) and, once
    exported, the ``student`` loaded (it still reads as the dict returned before).

    ``stage1_from`` reuses the stage-1 folder of another run with the same split (for the stage-2
    ablation); ``until`` stops after that stage.
    """
    cfg = preset(cfg) if isinstance(cfg, str) else cfg
    if not isinstance(cfg, UGCConfig):
        raise ConfigError(f"cfg must be a UGCConfig or a preset name, got {type(cfg).__name__}")
    wanted = stage_range(STAGES, until)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "ugc.json"
    record: dict[str, Any] = {
        "a_dir": str(Path(a_dir).resolve()),
        "b_dir": str(Path(b_dir).resolve()),
        "config": cfg.to_dict(),
    }
    if saved.is_file():
        old = json.loads(saved.read_text())
        # Settings added later whose value here means exactly the old behaviour: a run saved without them
        # is the same run (the latency budget is off unless budget_ms is set).
        for key, neutral in _NEUTRAL_NEW_SETTINGS.items():
            if key not in old.get("config", {}) and record["config"].get(key) == neutral:
                old.setdefault("config", {})[key] = neutral
        if old != record:
            # A run saved before a setting existed is refused too: it was trained by other code (for example
            # its search ranked by PSNR), and continuing it would mix the two in one result.
            theirs, mine = old.get("config", {}), cfg.to_dict()
            keys = sorted(k for k in set(theirs) | set(mine) if theirs.get(k, "<absent>") != mine.get(k, "<absent>"))
            keys += [k for k in ("a_dir", "b_dir") if old.get(k) != record[k]]
            raise ConfigError(
                f"{out} holds a UGC run with other settings ({', '.join(keys)}; see {saved}); use a new folder"
            )
    else:
        atomic_write_json(saved, record)
    stages: dict[str, dict[str, Any]] = {}

    def bar(stage: str) -> BatchProgress | None:
        return batch_progress(stage) if batch_progress is not None else None

    def split_stage(folder: Path, resume: bool) -> dict[str, Any]:
        split = make_split(a_dir, b_dir, cfg.labeled_fraction, seed=cfg.seed, direction=cfg.direction, out=folder)
        return {
            "fraction": split.fraction,
            "labeled": len(split.labeled),
            "unlabeled": len(split.unlabeled),
            "split": str(folder / "split.json"),
        }

    def stage1(folder: Path, resume: bool) -> dict[str, Any]:
        if stage1_from is not None:
            src = Path(stage1_from)
            done = stage_done(src.parent, src.name) if (src / MARKER).is_file() else None
            if done is None:
                raise ConfigError(f"{stage1_from} is not a completed UGC stage-1 folder")
            theirs = load_split(src.parent / "split").record
            if theirs["labeled"] != load_split(out / "split").record["labeled"]:
                raise ConfigError(f"{stage1_from} was trained on a different label split")
            return {**done, "reused_from": str(src.resolve())}
        s = train_stage1(load_split(out / "split"), folder, cfg, resume=resume, progress=bar("stage1"), device=device)
        return _brief(s)

    def search_stage(folder: Path, resume: bool) -> dict[str, Any]:
        reused = _reusable_search(stage1_from, cfg)
        if reused is not None:  # same supernet, split and search settings: the search is deterministic
            return reused
        supernet, _ = load_stage1(Path(stages["stage1"]["supernet"]).parent)
        supernet.to(device).eval()
        data = UGCData(load_split(out / "split"), cfg)
        record = search_all(supernet, data.val_pairs(), cfg, device=device)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / "search.json", json_safe(record))
        brief = {
            k: {kk: vv for kk, vv in v.items() if kk != "history"} for k, v in record.items() if isinstance(v, dict)
        }
        return {
            "budget_macs": record["budget_macs"],
            "budget_ms": record.get("budget_ms"),
            "size": record["size"],
            "metric": record["metric"],
            **brief,
            "search": str(folder / "search.json"),
        }

    def stage2(folder: Path, resume: bool) -> dict[str, Any]:
        supernet, d = load_stage1(Path(stages["stage1"]["supernet"]).parent)
        searched = json.loads(Path(stages["search"]["search"]).read_text())
        s = train_stage2(
            load_split(out / "split"),
            supernet,
            d,
            searched,
            folder,
            cfg,
            resume=resume,
            progress=bar("stage2"),
            device=device,
        )
        return _brief(s)

    def export_stage(folder: Path, resume: bool) -> dict[str, Any]:
        done = stages["stage2"]  # a stage 2 completed before students were chosen by `select_by` names best_student
        return export_student(done.get("student") or done["best_student"], folder, size=cfg.profile_size)

    runners: dict[str, StageFn] = {
        "split": split_stage,
        "stage1": stage1,
        "search": search_stage,
        "stage2": stage2,
        "export": export_stage,
    }
    for stage in wanted:
        stages[stage], _ = run_stage(out, stage, runners[stage], progress)
    student: DepthWidthGenerator | None = None
    if "export" in stages:
        loaded = edgegan.load(stages["export"]["model_dir"])
        if not isinstance(loaded, DepthWidthGenerator):
            raise ConfigError(f"{stages['export']['model_dir']} does not hold a DepthWidthGenerator")
        student = loaded
    return UGCPipelineResult(run=out, stages=stages, student=student)
