"""``distill``: GAN Compression's distillation of a small mobile generator from a trained teacher."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from edgegan.cli_options import DistillInputs, DistillTraining, shared, with_shared_options
from edgegan.errors import ConfigError
from edgegan.progress import RunBar
from edgegan.runs import check_device

if TYPE_CHECKING:
    from edgegan.compress.results import DistillResult

app = typer.Typer(help="GAN Compression: distil a compact student generator from a teacher.", no_args_is_help=True)
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 132)


@app.callback()
def _group() -> None:
    """GAN Compression: distil a compact student generator from a teacher."""


def _fmt(value: Any, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _print_summary(result: DistillResult) -> None:
    t = Table(title=f"distillation, {result.epochs} epochs ({'paired' if result.paired else 'pseudo-pairs'})")
    cols = ("epoch", "lr", "g_gan", "recon", "distill", "d", "SSIM vs target", "PSNR vs target", "PSNR vs teacher")
    for col in cols:
        t.add_column(col, justify="right")
    for row in result.history:
        t.add_row(
            str(row["epoch"]),
            f"{row['lr']:.2e}",
            _fmt(row["g_gan"], ".3f"),
            _fmt(row["recon"], ".3f"),
            _fmt(row["distill"], ".3f"),
            _fmt(row["d"], ".3f"),
            _fmt(row.get("val_ssim"), ".4f"),
            _fmt(row.get("val_psnr")),
            _fmt(row.get("val_psnr_teacher")),
        )
    console.print(t)
    last = result.history[-1] if result.history else {}
    init = result.student_init or {}
    start = "the teacher's leading channels" if init.get("from") == "teacher" else f"{init.get('from')} weights"
    console.print(
        f"student {result.student_params:,} params ({'_'.join(map(str, result.student_channels))}, "
        f"from {start}) vs teacher {result.teacher_params:,}; teacher vs target: "
        f"PSNR {_fmt(last.get('teacher_val_psnr'))} dB, SSIM {_fmt(last.get('teacher_val_ssim'), '.4f')}"
    )
    chosen = f"epoch {result.best_epoch}, select by {result.select_by}"
    console.print(f"student handed on ({chosen}): {result.best_student}")
    console.print(f"last student: {result.last_student}")


@app.command("distill")
@with_shared_options
def distill_cmd(
    inputs: DistillInputs = shared(DistillInputs),
    discriminator: Path | None = typer.Option(
        None, "--discriminator", help="The teacher's discriminator folder: the student's D starts from it."
    ),
    student: Path | None = typer.Option(
        None, "--student", help="Fine-tune this MobileResnetGenerator folder (e.g. a searched student) instead."
    ),
    channels: str = typer.Option("16_16_32_16_32_32_16_16", help="Student channel config c0_c1_..._c7."),
    n_blocks: int | None = typer.Option(None, min=0, help="Student residual blocks (default: the teacher's)."),
    student_init: str = typer.Option(
        "teacher", "--student-init", help="teacher (its leading channels) or random; ignored with --student."
    ),
    train: DistillTraining = shared(DistillTraining),
) -> None:
    """Distil a MobileResnetGenerator student from a teacher generator (GAN Compression, step 1)."""

    from edgegan.compress.distill import DistillConfig, distill_from_folders
    from edgegan.models import MobileResnetGenerator
    from edgegan.registry import load

    check_device(train.device)
    inputs.check_targets(train.paired)
    student_model = None
    if student is not None:
        student_model = load(student)
        if not isinstance(student_model, MobileResnetGenerator):
            raise ConfigError(f"--student {student} holds a {student_model.arch}, not a mobile_resnet_generator")
    cfg = DistillConfig(channels=channels, n_blocks=n_blocks, student_init=student_init, **train.config_fields())
    bar = RunBar("distilling", cfg.total_epochs, console)

    with bar:
        result = distill_from_folders(
            inputs.teacher,
            inputs.a,
            inputs.b,
            inputs.out,
            cfg,
            discriminator_dir=discriminator,
            student=student_model,
            resume=train.resume,
            progress=bar.update,
            device=train.device,
        )
    _print_summary(result)


def _print_pipeline_summary(summary: dict[str, Any]) -> None:
    t = Table(title=f"GAN Compression at {summary['size']}px (budget {summary['budget_macs'] / 1e9:.3f}G MACs)")
    for col in ("model", "MACs (GC)", "MACs", "params", "val SSIM", "val PSNR"):
        t.add_column(col, justify="right")
    psnr, ssim = summary.get("val_psnr") or {}, summary.get("val_ssim") or {}
    for role in ("teacher", "student"):
        cost = summary[role]
        t.add_row(
            f"{role} ({cost['arch']})",
            f"{cost['macs_gc'] / 1e9:.3f}G",
            f"{cost['macs'] / 1e9:.3f}G",
            f"{cost['params']:,}",
            _fmt(ssim.get(role), ".4f"),
            _fmt(psnr.get(role)),
        )
    ratio = summary["compression"]
    t.add_row("compression", f"{ratio['macs_gc']:.1f}x", f"{ratio['macs']:.1f}x", f"{ratio['params']:.1f}x", "", "")
    console.print(t)
    for stage, init in (summary.get("lineage") or {}).items():
        console.print(f"{stage} started from: " + ", ".join(f"{k} {v}" for k, v in (init or {}).items()))
    console.print(f"student: {summary['student']['path']}  onnx: {summary['student']['onnx']}")


@app.command("run")
def run_cmd(
    a: Path = typer.Option(..., "--a", help="Input (A) image folder of the training pairs."),
    b: Path = typer.Option(..., "--b", help="Target (B) image folder, matched to A by file stem."),
    out: Path = typer.Option(..., "--out", help="Run folder; rerun the same command to continue it."),
    preset: str = typer.Option("facades-cpu", "--preset", help="facades-cpu, facades-gpu or tiny."),
    teacher: Path | None = typer.Option(None, "--teacher", help="Use this trained teacher instead of training one."),
    budget_macs: str | None = typer.Option(
        None, "--budget-macs", help="auto (teacher / 10) or a MAC count such as 2.5G (default: the preset's)."
    ),
    until: str | None = typer.Option(None, "--until", help="Stop after this stage."),
    stage: str | None = typer.Option(None, "--stage", help="Run only this stage (earlier ones must be complete)."),
    direction: str | None = typer.Option(None, "--direction", help="AtoB or BtoA (default: the preset's)."),
    search_metric: str = typer.Option(
        "ssim", "--search-metric", help="What ranks the searched sub-networks: ssim, psnr, lpips, fid or kid."
    ),
    device: str = typer.Option("cpu", help="cpu or cuda[:N]."),
) -> None:
    """The whole GAN Compression chain: teacher, distill, supernet, search, fine-tune, export (resumable)."""
    import dataclasses
    import time

    from edgegan.compress.pipeline import preset as get_preset
    from edgegan.compress.pipeline import run_pipeline

    check_device(device)
    cfg = get_preset(preset)
    if direction is not None:
        cfg = cfg.with_direction(direction)
    if budget_macs is not None:
        cfg = dataclasses.replace(cfg, budget_macs=budget_macs)
    cfg = dataclasses.replace(cfg, search_metric=search_metric)
    started: dict[str, float] = {}

    def progress(name: str, event: str, info: dict[str, Any] | None) -> None:
        if event == "skip":
            console.print(f"stage {name}: complete, skipped")
        elif event == "start":
            started[name] = time.monotonic()
            console.print(f"stage {name}: {'resuming' if info and info.get('resume') else 'starting'}")
        else:
            console.print(f"stage {name}: done in {time.monotonic() - started.get(name, time.monotonic()):.1f}s")

    result = run_pipeline(
        a, b, out, cfg, teacher_dir=teacher, until=until, only=stage, progress=progress, device=device
    )
    if result.summary is not None:
        _print_pipeline_summary(result.summary)
    else:
        console.print(f"stopped after {list(result.stages)[-1]}; rerun without --until to finish")
