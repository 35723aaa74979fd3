"""``edgegan ugc``: label split, the whole UGC chain (resumable, stage by stage) and its report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from edgegan.errors import ConfigError
from edgegan.progress import RunBar
from edgegan.runs import check_device

app = typer.Typer(
    help="UGC: label-efficient compression (semi-supervised NAS + online multi-teacher distillation).",
    no_args_is_help=True,
)
console = Console()

OPTION_HELP = "UGC setting key=value (repeatable), e.g. -o ngf=32 -o widths=8_16_24_32 -o budget=1.4G."


def _value(text: str) -> Any:
    """``8_16_24`` -> (8, 16, 24); JSON numbers, booleans, null and lists as such; anything else a string."""
    if "_" in text and all(part.isdigit() for part in text.split("_")):
        return tuple(int(p) for p in text.split("_"))
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    from edgegan.ugc.config import UGCConfig

    names = set(UGCConfig.__dataclass_fields__)
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"-o expects key=value, got {pair!r}")
        if key not in names:
            raise ConfigError(f"unknown UGC setting {key!r}; settings: {', '.join(sorted(names))}")
        out[key] = _value(value)
    return out


@app.command("split")
def split_cmd(
    a: Path = typer.Option(..., "--a", help="A image folder of the training pairs."),
    b: Path = typer.Option(..., "--b", help="B image folder, matched to A by file stem."),
    out: Path = typer.Option(..., "--out", help="Folder to write split.json into."),
    fraction: float = typer.Option(0.25, "--labeled-fraction", help="Share of pairs that keep their labels."),
    seed: int = typer.Option(0, "--seed"),
    direction: str = typer.Option("AtoB", "--direction", help="AtoB or BtoA: which side is the input."),
) -> None:
    """Split paired data into labelled pairs and unlabelled inputs (deterministic by seed)."""
    from edgegan.ugc.data import make_split

    split = make_split(a, b, fraction, seed=seed, direction=direction, out=out)
    console.print(
        f"{len(split.labeled)} labelled pairs, {len(split.unlabeled)} unlabelled inputs -> {out / 'split.json'}"
    )


@app.command("run")
def run_cmd(
    a: Path = typer.Option(..., "--a", help="A image folder of the training pairs."),
    b: Path = typer.Option(..., "--b", help="B image folder, matched to A by file stem."),
    out: Path = typer.Option(..., "--out", help="Run folder; rerun the same command to continue it."),
    preset: str = typer.Option("facades-cpu", "--preset", help="tiny, facades-cpu or facades-gpu."),
    fraction: float | None = typer.Option(None, "--labeled-fraction", help="0.1, 0.25, 0.5 or 1.0 (any in (0, 1])."),
    budget: str | None = typer.Option(None, "--budget", help="Student MAC budget at 256 px, e.g. 1.4G."),
    budget_ms: float | None = typer.Option(
        None,
        "--budget-ms",
        help="Student latency budget instead: ONNX Runtime ms at profile_size, batch 1, latency_threads, this machine.",
    ),
    option: list[str] = typer.Option([], "-o", "--option", help=OPTION_HELP),
    select_by: str | None = typer.Option(
        None, "--select-by", help="Student passed on: last (default), ssim, psnr, lpips, fid or kid (validation)."
    ),
    until: str | None = typer.Option(None, "--until", help="Stop after split, stage1, search, stage2 or export."),
    stage1_from: Path | None = typer.Option(None, "--stage1-from", help="Reuse another run's stage1 folder."),
    device: str = typer.Option("cpu", help="cpu or cuda[:N]."),
) -> None:
    """Split, stage 1 (supernet), search (student + wide/deep teachers), stage 2 (distillation), export."""

    from edgegan.stages import stage_line
    from edgegan.ugc.pipeline import preset as get_preset
    from edgegan.ugc.pipeline import run_ugc

    check_device(device)
    overrides = parse_overrides(option)
    if fraction is not None:
        overrides["labeled_fraction"] = fraction
    if budget is not None:
        overrides["budget"] = budget
    if budget_ms is not None:
        overrides["budget_ms"] = budget_ms
    if select_by is not None:
        overrides["select_by"] = select_by
    cfg = get_preset(preset, **overrides)
    started: dict[str, float] = {}
    bars: dict[str, RunBar] = {}

    def progress(stage: str, event: str, info: dict[str, Any] | None) -> None:
        if event == "done" and stage in bars:
            bars.pop(stage).__exit__(None, None, None)
        console.print(stage_line(stage, event, info, started))

    def batch_progress(stage: str) -> Any:
        total = cfg.total_epochs(1 if stage == "stage1" else 2)
        bars[stage] = RunBar(stage, total, console=console).__enter__()
        return bars[stage].update

    try:
        result = run_ugc(
            a,
            b,
            out,
            cfg,
            stage1_from=stage1_from,
            until=until,
            progress=progress,
            batch_progress=batch_progress,
            device=device,
        )
    finally:
        for b_ in bars.values():
            b_.__exit__(None, None, None)
    stages = result.stages
    if "search" in stages:
        s = stages["search"]
        metric = s.get("metric", "psnr")
        t = Table(title=f"searched sub-networks (MACs at {cfg.profile_size} px, ranked by validation {metric})")
        for col in ("role", "MACs (G)", "ratio to student", f"val {metric}", "val SSIM", "val PSNR"):
            t.add_column(col)
        student_macs = s["student"]["best_macs"]
        for role in ("student", "wide", "deep"):
            r = s[role]
            val = r.get("val", {})
            figures = [val.get(metric), val.get("ssim"), val.get("psnr")]
            t.add_row(
                role,
                f"{r['best_macs'] / 1e9:.3f}",
                f"{r['best_macs'] / student_macs:.1f}x",
                *("-" if v is None else f"{v:.4g}" for v in figures),
            )
        console.print(t)
    if "export" in stages:
        e = stages["export"]
        console.print(
            f"student: {e['model_dir']} ({e['macs_gc'] / 1e9:.3f} G MACs, {e['params']:,} params), "
            f"onnx: {e['onnx']} (max |torch - onnx| {e['max_abs_diff']:.1e})"
        )
    else:
        console.print(f"stopped after {list(stages)[-1]}; rerun without --until to finish")
