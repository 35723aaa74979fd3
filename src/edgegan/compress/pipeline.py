"""GAN Compression end to end: one resumable chain from paired image folders to a small ONNX student.

Stages, each in its own subfolder of the run folder ``out``::

    teacher/    train_pix2pix                          (skipped when an existing teacher is given)
    distill/    distill_from_folders(student=...)      a student at the supernet's full width, started
                                                       from the teacher's leading channels, distilled
    supernet/   train_supernet_from_folders(init=...)  once-for-all supernet started from that student
    search/     search + finalize_student              best sub-network under the MAC budget
    finetune/   distill_from_folders(student=...)      the searched student fine-tuned by distillation
    export/     student/, student.onnx, summary.json   costs of teacher and student, compression ratio

This is the paper's appendix 6.1 chain and the reference's scripts (``distill.sh``,
``train_supernet.sh``, ``finetune.sh``): each stage starts from the models the previous one ended on,
the generator *and* the discriminator, and what it hands on is its last epoch's model
(``latest_net_G.pth``/``latest_net_D.pth`` there; ``select_by="last"`` here). Each stage's summary has
an ``init`` entry saying which model folders it started from; ``export/summary.json`` collects them
as ``lineage``.

A stage is complete when its ``stage.json`` marker exists (written atomically, last). Rerunning the
pipeline skips complete stages and resumes an interrupted one: its trainer is called with
``resume=True`` when the stage folder already holds something, continuing from the last epoch checkpoint
(:func:`edgegan.stages.run_stage`, which UGC's pipeline shares).
A run folder whose ``supernet`` stage completed without a ``distill`` stage (made before that stage
existed, or seeded with another run's supernet) skips ``distill``.

The search ranks candidates by ``search_metric`` (SSIM by default; PSNR stays in the report) on a
validation slice of the *training* folders (the pairs the supernet held out with its
``val_fraction``/``seed``); a test folder is never read. ``budget_macs="auto"`` means a tenth of the
teacher's cost (GAN Compression's MAC convention) at ``search_size``.

Presets (:data:`PRESETS`):

* ``"tiny"``: 32 px, a few epochs of a tiny teacher; for tests and smoke runs (seconds).
* ``"facades-cpu"``: labels -> photo on the facades pairs (A = photo, B = labels, so ``direction="BtoA"``),
  64 px crops from 72 px loads, teacher ``resnet_generator`` ngf 32 with 9 blocks (0.91 G MACs at 64 px),
  distilled student and supernet ngf 32 with choices 8..32, budget auto (teacher / 10). Estimate for 400
  pairs (360 trained, 40 held out), batch 1, 2 CPU threads (measured: a teacher step 0.08 s; a sandwich
  supernet step, three sub-networks plus the frozen teacher, ~0.26 s; a distillation step ~0.07 s):
  teacher 20+20 epochs (~14400 steps, ~20 min), distillation of the full-width student 8+8 epochs
  (~5800 steps, ~10 min, estimated), supernet 8+8 epochs (~5800 steps, ~25 min), search 8 x 8
  candidates on 16 held-out training pairs (~1 min), fine-tune 8+8 epochs (~5800 steps, ~7 min), export
  (seconds): measured before the distill stage existed: the teacher ~27 min and the supernet ~25 min
  alone, about 80 minutes in all on this 2-core machine (about 90 with it). Time scales linearly with the
  epochs (:func:`scaled`) and the number of pairs, and roughly with the square of the crop size
  (96 px ~2.3x, 128 px ~4x).
* ``"editor-cpu"``: a deterministic task at 64 px (``direction="AtoB"``: photo -> an editor's output, prepared
  at 64 px by ``bench/gan_compression.py --task``), no crop jitter (``load_size == crop_size``). Teacher
  ``resnet_generator`` ngf 32, 9 blocks, with ``residual`` and ``input_skip`` (the papers' layout cannot see the
  input's overall colour, issue 13), which the student and supernet inherit. Teacher 8+8 epochs, distillation,
  supernet and fine-tune 4+4 each: about 30 minutes on this 2-core machine for 360 training pairs.
* ``"facades-gpu"``: the papers' setting at 256 px (286 px loads), teacher ngf 64 with 9 blocks for
  100+100 epochs, distillation and fine-tune 100+100 epochs, supernet ngf 64 with choices 16..64
  (hours on one GPU).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import edgegan
from edgegan.compress.distill import (
    METRICS,
    DistillConfig,
    check_metric,
    distill_from_folders,
    inherit_from_teacher,
    json_safe,
)
from edgegan.compress.results import DistillResult, PipelineResult, SupernetResult
from edgegan.compress.search import SearchConfig, finalize_student, parse_macs, search
from edgegan.compress.supernet_train import SupernetConfig, full_width_student, train_supernet_from_folders
from edgegan.compress.teacher import Pix2PixConfig, train_pix2pix
from edgegan.errors import ConfigError
from edgegan.fileio import atomic_write_json
from edgegan.nn.layers import init_gan_weights
from edgegan.runs import set_seed
from edgegan.stages import MARKER, StageFn, StageProgress, run_stage, stage_done, stage_range

__all__ = [
    "MARKER",
    "PRESETS",
    "STAGES",
    "PipelineConfig",
    "PipelineResult",
    "StageProgress",
    "preset",
    "resolve_budget",
    "run_pipeline",
    "scaled",
    "stage_done",
]

PathLike = str | os.PathLike[str]
STAGES: tuple[str, ...] = ("teacher", "distill", "supernet", "search", "finetune", "export")
STAGE_CONFIGS = ("teacher", "distill", "supernet", "finetune")


@dataclass
class PipelineConfig:
    """Per-stage settings of :func:`run_pipeline`.

    ``teacher``/``distill``/``supernet``/``finetune`` are the trainers' own configs (``distill``'s
    ``channels``/``n_blocks`` are not used: its student is the supernet's full width); the search fields
    mirror :class:`~edgegan.compress.search.SearchConfig` (the choices are the supernet's, the metric is
    ``search_metric``). ``budget_macs`` is a MAC count (``"2.5G"``, an int) or ``"auto"`` (teacher's
    ``macs_gc`` at ``search_size`` / 10). ``val_images`` caps the held-out training pairs the search scores
    candidates on.
    """

    teacher: Pix2PixConfig = field(default_factory=Pix2PixConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    supernet: SupernetConfig = field(default_factory=SupernetConfig)
    finetune: DistillConfig = field(default_factory=DistillConfig)
    budget_macs: str | int = "auto"
    search_size: int = 256
    population: int = 20
    generations: int = 10
    parents: int = 5
    mutate_prob: float = 0.2
    search_mode: str = "evolution"
    search_seed: int = 0
    search_metric: str = "ssim"
    val_images: int = 16

    def __post_init__(self) -> None:
        if not isinstance(self.teacher, Pix2PixConfig):
            raise ConfigError(f"teacher must be a Pix2PixConfig, got {type(self.teacher).__name__}")
        if not isinstance(self.supernet, SupernetConfig):
            raise ConfigError(f"supernet must be a SupernetConfig, got {type(self.supernet).__name__}")
        for name in ("distill", "finetune"):
            value = getattr(self, name)
            if not isinstance(value, DistillConfig) or isinstance(value, SupernetConfig):
                raise ConfigError(f"{name} must be a DistillConfig, got {type(value).__name__}")
        check_metric(self.search_metric, "search_metric", METRICS)
        if not (isinstance(self.budget_macs, str) and self.budget_macs.strip().lower() == "auto"):
            self.budget_macs = parse_macs(self.budget_macs)
        for name in ("search_size", "val_images", "population", "generations", "parents"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.search_size % 4:
            raise ConfigError(f"search_size must be a multiple of 4, got {self.search_size}")
        directions = {self.teacher.direction, self.distill.direction, self.supernet.direction, self.finetune.direction}
        if len(directions) != 1:
            raise ConfigError(f"all stages must use one direction, got {sorted(directions)}; use with_direction()")
        if not (self.distill.paired and self.supernet.paired and self.finetune.paired):
            raise ConfigError("the pipeline trains a pix2pix teacher: distill, supernet and finetune must be paired")

    @property
    def direction(self) -> str:
        return self.teacher.direction

    def with_direction(self, direction: str) -> PipelineConfig:
        """A copy with every stage reading the pairs in ``direction`` (AtoB or BtoA)."""
        return dataclasses.replace(
            self,
            teacher=dataclasses.replace(self.teacher, direction=direction),
            distill=dataclasses.replace(self.distill, direction=direction),
            supernet=dataclasses.replace(self.supernet, direction=direction),
            finetune=dataclasses.replace(self.finetune, direction=direction),
        )

    def search_config(self, budget_macs: int, device: str) -> SearchConfig:
        return SearchConfig(
            budget_macs=budget_macs,
            size=self.search_size,
            choices=self.supernet.choice_list,
            population=self.population,
            generations=self.generations,
            parents=min(self.parents, self.population),
            mutate_prob=self.mutate_prob,
            seed=self.search_seed,
            mode=self.search_mode,  # type: ignore[arg-type]
            target="B",
            device=device,
            metric=self.search_metric,
        )

    def to_dict(self) -> dict[str, Any]:
        stages = {"teacher": dataclasses.asdict(self.teacher)}
        stages |= {name: getattr(self, name).to_dict() for name in ("distill", "supernet", "finetune")}
        rest = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in STAGE_CONFIGS}
        return json_safe({**stages, **rest})


# ---------------------------------------------------------------------------------- presets


def _chain(
    data: dict[str, Any],
    generator: dict[str, Any],
    supernet: dict[str, Any],
    *,
    teacher_epochs: tuple[int, int],
    epochs: tuple[int, int],
    distill_epochs: tuple[int, int] | None = None,
    ndf: int | None = None,
    d_layers: int | None = None,
    **search: Any,
) -> PipelineConfig:
    """A preset: ``data`` (sizes, direction, validation split) for every stage, the teacher's ``generator``
    options, the ``supernet``'s ``ngf``/``choices``, ``(epochs, decay_epochs)`` of the teacher and of the three
    student stages (``distill_epochs`` where distillation differs), the discriminators' ``ndf``/``d_layers``
    (the trainers' defaults when None) and the search fields of :class:`PipelineConfig`."""
    critic: dict[str, Any] = {k: v for k, v in (("ndf", ndf), ("d_layers", d_layers)) if v is not None}
    teacher_critic: dict[str, Any] = {"n_layers_d" if k == "d_layers" else k: v for k, v in critic.items()}

    def timing(e: tuple[int, int]) -> dict[str, Any]:
        return {"epochs": e[0], "decay_epochs": e[1], **data}

    return PipelineConfig(
        teacher=Pix2PixConfig(generator_options=generator, **teacher_critic, **timing(teacher_epochs)),
        distill=DistillConfig(**critic, **timing(distill_epochs or epochs)),
        supernet=SupernetConfig(**supernet, **critic, **timing(epochs)),
        finetune=DistillConfig(**critic, **timing(epochs)),
        **search,
    )


_CPU_SEARCH: dict[str, Any] = {"search_size": 64, "population": 8, "generations": 8, "parents": 3, "val_images": 16}
_CPU_SUPERNET: dict[str, Any] = {"ngf": 32, "choices": (8, 16, 24, 32)}


def _tiny() -> PipelineConfig:
    return _chain(
        {"load_size": 32, "crop_size": 32, "val_fraction": 0.2, "batch_size": 1},
        {"ngf": 16, "n_blocks": 2},
        {"ngf": 8, "choices": (4, 8)},
        teacher_epochs=(2, 1),
        epochs=(1, 1),
        distill_epochs=(1, 0),
        ndf=8,
        d_layers=2,
        search_size=32,
        population=4,
        generations=2,
        parents=2,
        val_images=4,
    )


def _facades_cpu() -> PipelineConfig:
    # labels -> photo: facades' A folder holds photos, B the label maps, so the input is B.
    # Table 5 gives distillation and fine-tuning the same epochs (its "Training Epochs").
    data = {"load_size": 72, "crop_size": 64, "direction": "BtoA", "val_fraction": 0.1}
    generator = {"ngf": 32, "n_blocks": 9}
    return _chain(data, generator, _CPU_SUPERNET, teacher_epochs=(20, 20), epochs=(8, 8), ndf=32, **_CPU_SEARCH)


def _editor_cpu() -> PipelineConfig:
    data = {"load_size": 64, "crop_size": 64, "direction": "AtoB", "val_fraction": 0.1}
    generator = {"ngf": 32, "n_blocks": 9, "residual": True, "input_skip": True}
    return _chain(data, generator, _CPU_SUPERNET, teacher_epochs=(8, 8), epochs=(4, 4), ndf=32, **_CPU_SEARCH)


def _facades_gpu() -> PipelineConfig:
    data = {"load_size": 286, "crop_size": 256, "direction": "BtoA", "val_fraction": 0.1}
    search: dict[str, Any] = {"search_size": 256, "population": 20, "generations": 10, "parents": 5, "val_images": 40}
    return _chain(data, {"ngf": 64, "n_blocks": 9}, {"ngf": 64}, teacher_epochs=(100, 100), epochs=(100, 100), **search)


PRESETS: dict[str, Callable[[], PipelineConfig]] = {
    "tiny": _tiny,
    "facades-cpu": _facades_cpu,
    "editor-cpu": _editor_cpu,
    "facades-gpu": _facades_gpu,
}


def preset(name: str) -> PipelineConfig:
    """A fresh :class:`PipelineConfig` of the named preset; ConfigError for an unknown name."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()


# ---------------------------------------------------------------------------------- helpers


def handed_on(summary: dict[str, Any], kind: str) -> str | None:
    """The teacher stage's ``generator`` or ``discriminator`` folder the next stages start from.

    A trainer's own choice when it names one (``summary[kind]``); else the one its ``select_by`` picked:
    the last epoch's (``last_<kind>``) by default, as the reference's stages restore ``latest_net_G.pth``
    and ``latest_net_D.pth``, the best one (``best_<kind>``) otherwise. None: no discriminator (an
    external teacher), so the student's starts fresh.
    """
    named = summary.get(kind)
    if isinstance(named, str) and Path(named).is_dir():
        return named
    if summary.get("external"):
        return str(summary["best_generator"]) if kind == "generator" else None
    keys = [f"last_{kind}", f"best_{kind}"]
    if summary.get("select_by", "last") != "last":
        keys.reverse()
    for key in keys:
        # A key the summary lacks may still be a folder of its run (pix2pix saves last_discriminator/).
        path = summary.get(key) or (Path(summary["run"]) / key if summary.get("run") else None)
        if path and Path(path).is_dir():
            return str(path)
    return None


def _brief(result: DistillResult | SupernetResult) -> dict[str, Any]:
    """A trainer's summary for the stage marker: its last three history rows only."""
    return result.to_dict() | {"history": result.history[-3:]}


def _costs(model: torch.nn.Module, size: int) -> dict[str, int]:
    from edgegan.profile.macs import profile_macs

    model = model.eval().cpu()
    report = profile_macs(model, model.example_input(size))  # type: ignore[operator]
    return {"macs_gc": report.macs_gc, "macs": report.macs, "params": report.params}


def resolve_budget(budget: str | int, teacher_dir: PathLike, size: int) -> int:
    """``budget`` as a MAC count; ``"auto"`` is the teacher's ``macs_gc`` at ``size``×``size`` / 10."""
    if isinstance(budget, str) and budget.strip().lower() == "auto":
        return max(1, _costs(edgegan.load(teacher_dir), size)["macs_gc"] // 10)
    return parse_macs(budget)


def _val_pairs(a_dir: PathLike, b_dir: PathLike, cfg: PipelineConfig) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Held-out *training* pairs (the supernet's validation slice), resized to ``search_size``."""
    from edgegan.data.datasets import PairedDataset, split_validation

    size = cfg.search_size
    data = PairedDataset.from_folders(
        a_dir, b_dir, direction=cfg.direction, load_size=size, crop_size=size, train=False, flip=False
    )
    fraction = cfg.supernet.val_fraction or 0.1
    _, val_idx = split_validation(len(data), fraction, cfg.supernet.seed)
    if not val_idx:  # a single pair: score on it rather than on nothing
        val_idx = [0]
    return [(data[i]["A"], data[i]["B"]) for i in val_idx[: cfg.val_images]]


# ---------------------------------------------------------------------------------- pipeline


def run_pipeline(
    a_dir: PathLike,
    b_dir: PathLike,
    out: PathLike,
    cfg: PipelineConfig | str | None = None,
    *,
    teacher_dir: PathLike | None = None,
    until: str | None = None,
    only: str | None = None,
    progress: StageProgress | None = None,
    device: str = "cpu",
) -> PipelineResult:
    """Run (or continue) GAN Compression on the pairs in ``a_dir``/``b_dir`` into the run folder ``out``.

    ``cfg`` is a :class:`PipelineConfig` or a preset name. ``teacher_dir`` replaces the ``teacher`` stage
    with an existing generator folder. ``until`` stops after that stage; ``only`` runs just that one
    (its predecessors must be complete). Returns a :class:`~edgegan.compress.results.PipelineResult`: ``run``,
    ``stages`` (``{stage: summary}``), ``ran``, ``skipped`` and, once ``export`` is complete, ``summary`` (the
    contents of ``export/summary.json``: costs, compression, validation PSNR/SSIM, and ``lineage``, the model
    folders every stage started from; else None). It still reads as the dict returned before, which had the
    ``"summary"`` key only once ``export`` was complete.
    """
    if cfg is None:
        cfg = PipelineConfig()
    elif isinstance(cfg, str):
        cfg = preset(cfg)
    if not isinstance(cfg, PipelineConfig):
        raise ConfigError(f"cfg must be a PipelineConfig or a preset name, got {type(cfg).__name__}")
    wanted = stage_range(STAGES, until, only)
    out = Path(out)
    a_dir, b_dir = Path(a_dir), Path(b_dir)
    for name, folder in (("A", a_dir), ("B", b_dir)):
        if not folder.is_dir():
            raise ConfigError(f"the {name} folder {folder} does not exist")
    if teacher_dir is not None and not Path(teacher_dir).is_dir():
        raise ConfigError(f"the teacher folder {teacher_dir} does not exist")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        out / "pipeline.json", {"a_dir": str(a_dir.resolve()), "b_dir": str(b_dir.resolve()), "config": cfg.to_dict()}
    )

    stages: dict[str, dict[str, Any]] = {}
    ran: list[str] = []
    skipped: list[str] = []

    def need(stage: str) -> dict[str, Any]:
        """A predecessor's summary, which must be complete."""
        if stage not in stages:
            done = stage_done(out, stage)
            if done is None:
                raise ConfigError(f"stage {stage!r} has not completed in {out}; run it first")
            stages[stage] = done
        return stages[stage]

    def completed() -> dict[str, dict[str, Any]]:
        """Every completed stage before export (``distill`` is absent from older run folders)."""
        return {name: need(name) for name in STAGES[:-1] if name in stages or stage_done(out, name) is not None}

    runners: dict[str, StageFn] = {}

    def teacher_stage(folder: Path, resume: bool) -> dict[str, Any]:
        if teacher_dir is not None:
            path = str(Path(teacher_dir).resolve())
            return {"external": True, "generator": path, "best_generator": path}
        result = train_pix2pix(a_dir, b_dir, folder, cfg.teacher, resume=resume, device=device)
        return {"external": False, **result.to_dict()}

    def teacher_model(kind: str) -> str | None:
        return handed_on(need("teacher"), kind)

    def distill_stage(folder: Path, resume: bool) -> dict[str, Any]:
        teacher_path, critic = teacher_model("generator"), teacher_model("discriminator")
        assert teacher_path is not None
        teacher = edgegan.load(teacher_path)
        # The student the supernet will start from: its full width, seeded so a rerun builds the same one
        # (a resumed run then restores its checkpoint over it).
        set_seed(cfg.distill.seed)
        student = init_gan_weights(full_width_student(teacher, cfg.supernet))  # the reference's init_net first
        inherited = inherit_from_teacher(student, teacher)
        result = distill_from_folders(
            teacher_path,
            a_dir,
            b_dir,
            folder,
            cfg.distill,
            discriminator_dir=critic,
            student=student,
            resume=resume,
            device=device,
        )
        init = {"teacher": teacher_path, "student": f"teacher's leading channels ({', '.join(inherited)})"}
        return _brief(result) | {"init": init | {"discriminator": critic or "fresh"}}

    def supernet_stage(folder: Path, resume: bool) -> dict[str, Any]:
        teacher_path = teacher_model("generator")
        done = need("distill")
        student, critic = done["best_student"], done.get("last_discriminator")
        result = train_supernet_from_folders(
            teacher_path,  # type: ignore[arg-type]
            a_dir,
            b_dir,
            folder,
            cfg.supernet,
            discriminator_dir=critic,
            init_dir=student,
            resume=resume,
            device=device,
        )
        init = {"teacher": teacher_path, "supernet": student, "discriminator": critic or "fresh"}
        return _brief(result) | {"init": init}

    def search_stage(folder: Path, resume: bool) -> dict[str, Any]:
        from edgegan.models.mobile_supernet import MobileResnetSupernet

        teacher_path = teacher_model("generator")
        assert teacher_path is not None
        supernet_path = need("supernet")["supernet"]
        budget = resolve_budget(cfg.budget_macs, teacher_path, cfg.search_size)
        net = edgegan.load(supernet_path, map_location=device)
        if not isinstance(net, MobileResnetSupernet):
            raise ConfigError(f"{supernet_path} holds a {type(net).__name__}, not a mobile_resnet_supernet")
        teacher = edgegan.load(teacher_path, map_location=device)
        scfg = cfg.search_config(budget, device)
        result = search(net, _val_pairs(a_dir, b_dir, cfg), scfg, teacher=teacher)
        net.cpu()
        student = finalize_student(net, result.best_config, folder, size=cfg.search_size)
        best = next(h for h in result.history if tuple(h["config"]) == tuple(result.best_config))
        report = {
            "budget_macs": budget,
            "budget": "auto" if isinstance(cfg.budget_macs, str) else "given",
            "size": cfg.search_size,
            "metric": scfg.metric,
            "best_config": list(result.best_config),
            "best_score": result.best_score,
            "best_metrics": {k: best.get(k) for k in ("psnr", "ssim", scfg.metric)},
            "best_macs": result.best_macs,
            "evaluated": result.evaluated,
            "student": student,
            "init": {"supernet": supernet_path},
        }
        atomic_write_json(folder / "search.json", json_safe({**report, "history": result.history}))
        return report

    def finetune_stage(folder: Path, resume: bool) -> dict[str, Any]:
        teacher_path = teacher_model("generator")
        student_path = need("search")["student"]["model_dir"]
        critic = need("supernet").get("last_discriminator")
        result = distill_from_folders(
            teacher_path,  # type: ignore[arg-type]
            a_dir,
            b_dir,
            folder,
            cfg.finetune,
            discriminator_dir=critic,
            student=edgegan.load(student_path),
            resume=resume,
            device=device,
        )
        init = {"teacher": teacher_path, "student": student_path, "discriminator": critic or "fresh"}
        return _brief(result) | {"init": init}

    def export_stage(folder: Path, resume: bool) -> dict[str, Any]:
        from edgegan.export.onnx import export_onnx

        size = cfg.search_size
        teacher_path = teacher_model("generator")
        assert teacher_path is not None
        search_sum, fine_sum = need("search"), need("finetune")
        teacher = edgegan.load(teacher_path)
        student = edgegan.load(fine_sum["best_student"]).eval()
        model_dir = student.save(folder / "student")
        exported = export_onnx(student, folder / "student.onnx", size=size, check=True)
        t_cost, s_cost = _costs(teacher, size), _costs(student, size)
        chosen = fine_sum.get("selected_metrics") or (fine_sum.get("history") or [{}])[-1]
        summary = {
            "size": size,
            "teacher": {"path": teacher_path, "arch": teacher.arch, **t_cost},
            "student": {
                "path": str(model_dir),
                "onnx": exported.path,
                "onnx_max_abs_diff": exported.max_abs_diff,
                "arch": student.arch,
                "channels": list(getattr(student.config, "channels", []) or []),
                **s_cost,
            },
            "budget_macs": search_sum["budget_macs"],
            "compression": {
                "macs_gc": t_cost["macs_gc"] / max(s_cost["macs_gc"], 1),
                "macs": t_cost["macs"] / max(s_cost["macs"], 1),
                "params": t_cost["params"] / max(s_cost["params"], 1),
            },
            # On the validation slice of the training pairs (the fine-tune's held-out items).
            "val_psnr": {
                "student": chosen.get("val_psnr"),
                "teacher": chosen.get("teacher_val_psnr"),
                "search_best": (search_sum.get("best_metrics") or {}).get("psnr"),
            },
            "val_ssim": {
                "student": chosen.get("val_ssim"),
                "teacher": chosen.get("teacher_val_ssim"),
                "search_best": (search_sum.get("best_metrics") or {}).get("ssim"),
            },
            "lineage": {
                **{name: stage.get("init") for name, stage in completed().items() if name != "teacher"},
                "export": {"student": fine_sum["best_student"]},
            },
            "stages": completed(),
        }
        summary = json_safe(summary)
        atomic_write_json(folder / "summary.json", summary)
        return {k: v for k, v in summary.items() if k != "stages"}

    runners.update(
        teacher=teacher_stage,
        distill=distill_stage,
        supernet=supernet_stage,
        search=search_stage,
        finetune=finetune_stage,
        export=export_stage,
    )

    for stage in wanted:
        done = stage_done(out, stage)
        if stage == "teacher" and done is not None and teacher_dir is not None:
            given = str(Path(teacher_dir).resolve())
            if done.get("best_generator") != given:
                raise ConfigError(f"{out} was built from the teacher {done.get('best_generator')}, not {given}")
        if stage == "distill" and done is None and stage_done(out, "supernet") is not None:
            # The supernet it would initialise already exists (a run folder from before this stage, or
            # seeded with another run's supernet): nothing to distil for.
            skipped.append(stage)
            if progress is not None:
                progress(stage, "skip", None)
            continue
        stages[stage], ran_now = run_stage(out, stage, runners[stage], progress)
        (ran if ran_now else skipped).append(stage)

    final = out / "export" / "summary.json"
    finished = final.is_file() and stage_done(out, "export") is not None
    return PipelineResult(
        run=out, stages=stages, ran=ran, skipped=skipped, summary=json.loads(final.read_text()) if finished else None
    )


def scaled(cfg: PipelineConfig, factor: float) -> PipelineConfig:
    """A copy with every stage's epochs multiplied by ``factor`` (at least one epoch per stage)."""
    new = copy.deepcopy(cfg)
    for stage in (new.teacher, new.distill, new.supernet, new.finetune):
        stage.epochs = max(1, round(stage.epochs * factor))
        stage.decay_epochs = max(0, round(stage.decay_epochs * factor))
    return new
