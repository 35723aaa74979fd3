"""GAN Compression on facades: teacher vs compressed student vs the same student from scratch.

Usage: python bench/gan_compression.py [--task labels2photo|cool|sepia|warm|...] [--preset NAME] [--data DIR]
                                       [--out DIR] [--device cpu] [--threads N] [--teacher-only]

Two tasks:

* ``labels2photo`` (default; preset facades-cpu, out ``bench/results/gan_compression``): labels -> photo. It
  has many right answers, so PSNR/SSIM against one photo reward blur and cannot judge fidelity at this
  scale (a constant mean image beats trained models); it is kept for its sample grid and SSIM.
  ``--teacher-only`` trains and reports the teacher alone (the CPU-friendly part of this run).
* an editor name (preset editor-cpu, out ``bench/results/gan_compression_<editor>``): facades photos ->
  that classical editor's output (:mod:`edgegan.e2gan.editors`), both prepared at 64 px as lossless PNGs
  in ``out/data`` (photos from A/train and A/test only). The target is a function of the input, so PSNR and
  SSIM against it measure fidelity; the identity row (output = input) is the do-nothing baseline.

1. Data: ``--data`` or ``shared_data("facades")`` with A/train, B/train, A/test, B/test (A = photo, B = labels).
   Labels -> photo reads the pairs with ``direction="BtoA"`` (input B, target A); an editor task with AtoB.
2. The whole pipeline (:func:`edgegan.compress.pipeline.run_pipeline`) runs into ``out/pipeline``;
   rerunning skips finished stages and resumes an interrupted one.
3. Baseline: the searched student architecture (channels from the pipeline's export summary), trained
   FROM SCRATCH with the plain pix2pix recipe (GAN + lambda_recon * L1, the teacher's loss settings, no
   distillation) into ``out/scratch`` (resumable). Its budget is the fine-tune stage's epochs
   (``finetune.epochs`` + ``finetune.decay_epochs``); the supernet epochs the compressed student also
   profited from are *not* added, so the baseline gets the same number of epochs as the fine-tune.
4. Evaluation on A/test, B/test (report only, never used for any selection): MACs (GAN Compression
   convention and true), parameters at 256x256, ONNX Runtime CPU latency at 256x256 (median, batch 1,
   this machine), PSNR/SSIM vs ground truth at the preset's crop size (deterministic resize) and PSNR of
   each student vs the teacher's outputs. Writes ``out/results.json`` and ``out/report.md`` (sample grid,
   ``curves.png``: validation PSNR per epoch of every stage, and how much each rose over its last quarter).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.table import Table

import edgegan
from edgegan.compress.pipeline import PRESETS, preset, run_pipeline
from edgegan.compress.teacher import Pix2PixConfig, train_pix2pix
from edgegan.data.datasets import PairedDataset
from edgegan.data.shared import shared_data
from edgegan.e2gan.editors import CLASSICAL, classical_editor
from edgegan.export.onnx import export_onnx
from edgegan.fileio import atomic_write_json
from edgegan.metrics.reference import psnr, ssim
from edgegan.profile import machine_info, machine_line, onnx_latency, profile_macs
from edgegan.report import write_report
from edgegan.report.curves import late_gain, plot_curves, read_curve

DIRECTION = "BtoA"  # facades: A = photo, B = labels; labels -> photo
EDITOR_SIZE = 64
TASKS = ("labels2photo", *CLASSICAL)
PROFILE_SIZE = 256
PSNR_CAP_DB = 100.0
GRID_IMAGES = 6
MODELS = ("teacher", "compressed", "scratch")
CLAIM_DB = 0.5  # the compressed student should stay within ~0.5 dB of the teacher and beat scratch


def _unit(x: torch.Tensor) -> torch.Tensor:
    return ((x.float() + 1) / 2).clamp(0, 1)


def _capped(x: torch.Tensor) -> torch.Tensor:
    return torch.nan_to_num(x.double(), posinf=PSNR_CAP_DB).clamp(max=PSNR_CAP_DB)


def _data_dirs(data: Path | None) -> dict[str, Path]:
    root = data or shared_data("facades")
    if root is None:
        raise SystemExit("no facades data: pass --data DIR or provide ../shared/data/facades (or $EDGEGAN_DATA)")
    dirs = {f"{side}_{split}": Path(root) / side / split for side in "AB" for split in ("train", "test")}
    missing = [str(d) for d in dirs.values() if not d.is_dir()]
    if missing:
        raise SystemExit(f"facades data in {root} is incomplete, missing: {', '.join(missing)}")
    return dirs


def task_data(dirs: dict[str, Path], task: str, out: Path, size: int = EDITOR_SIZE) -> dict[str, Path]:
    """The folders a task trains and tests on. ``labels2photo``: facades as it is. An editor: ``out/data``
    with A = the facades photo resized to ``size`` px, B = the editor's output on that image (lossless PNG,
    so the target is exactly a function of the input); written once (``done.json`` marks it)."""
    if task == "labels2photo":
        return dirs
    editor = classical_editor(task)
    marker = out / "done.json"
    result = {f"{side}_{split}": out / side / split for side in "AB" for split in ("train", "test")}
    if marker.is_file():
        return result
    for split in ("train", "test"):
        paths = sorted(p for p in dirs[f"A_{split}"].iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        for side in "AB":
            result[f"{side}_{split}"].mkdir(parents=True, exist_ok=True)
        for path in paths:
            with Image.open(path) as im:
                photo = np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.LANCZOS))
            Image.fromarray(photo).save(result[f"A_{split}"] / f"{path.stem}.png")
            Image.fromarray(editor(photo, editor.prompt)).save(result[f"B_{split}"] / f"{path.stem}.png")
    atomic_write_json(marker, {"task": task, "size": size, "source": str(dirs["A_train"].parent.parent)})
    return result


def stage_curves(runs: dict[str, Path], metric: str = "psnr") -> dict[str, list[tuple[int, float]]]:
    """Validation ``metric`` per epoch of each run folder (the supernet's largest sub-network)."""
    curves = {}
    for name, run in runs.items():
        curve = read_curve(run, f"val_{metric}") or read_curve(run, f"val_{metric}_largest")
        if curve:
            curves[name] = curve
    return curves


def _scratch(cfg: Any, student_cfg: dict[str, Any], a_dir: Path, b_dir: Path, out: Path, device: str) -> dict:
    """Train the student architecture from scratch with pix2pix (resumable; ``stage.json`` marks it done)."""
    marker = out / "stage.json"
    if marker.is_file():
        return json.loads(marker.read_text())["summary"]
    ft, teacher = cfg.finetune, cfg.teacher
    options = {k: v for k, v in student_cfg.items() if k not in ("input_nc", "output_nc")}
    p2p = Pix2PixConfig(
        generator="mobile_resnet_generator",
        generator_options=options,
        ndf=ft.ndf,
        n_layers_d=ft.d_layers,
        gan_mode=teacher.gan_mode,
        lambda_recon=teacher.lambda_recon,
        lr=teacher.lr,
        betas=teacher.betas,
        epochs=ft.epochs,
        decay_epochs=ft.decay_epochs,
        batch_size=ft.batch_size,
        load_size=ft.load_size,
        crop_size=ft.crop_size,
        direction=cfg.direction,
        val_fraction=ft.val_fraction,
        seed=ft.seed,
    )
    resume = out.is_dir()
    summary = train_pix2pix(a_dir, b_dir, out, p2p, resume=resume, device=device)
    summary = {k: v for k, v in summary.items() if k != "last_metrics"} | {"last_metrics": summary["last_metrics"]}
    atomic_write_json(marker, {"stage": "scratch", "completed": True, "summary": summary})
    return summary


@torch.no_grad()
def _evaluate(
    models: dict[str, torch.nn.Module], a_test: Path, b_test: Path, size: int, direction: str = DIRECTION
) -> tuple[dict, list]:
    """PSNR/SSIM of every model against the targets of the test pairs (and of each student against the
    teacher's outputs); the first ``GRID_IMAGES`` pairs as grid rows (input, target, one row per model)."""
    data = PairedDataset.from_folders(
        a_test, b_test, direction=direction, load_size=size, crop_size=size, train=False, flip=False
    )
    scores: dict[str, dict[str, list[torch.Tensor]]] = {
        n: {"psnr": [], "ssim": [], "psnr_vs_teacher": []} for n in models
    }
    grid: list[list[torch.Tensor]] = [[] for _ in range(2 + len(models))]
    for i in range(len(data)):
        item = data[i]
        x, y = item["A"][None], item["B"][None]
        outs = {n: m(x) for n, m in models.items()}
        for n, fake in outs.items():
            scores[n]["psnr"].append(_capped(psnr(_unit(fake), _unit(y))))
            scores[n]["ssim"].append(ssim(_unit(fake), _unit(y)).double())
            if n != "teacher" and "teacher" in outs:
                scores[n]["psnr_vs_teacher"].append(_capped(psnr(_unit(fake), _unit(outs["teacher"]))))
        if i < GRID_IMAGES:
            for row, img in zip(grid, [x, y, *outs.values()], strict=True):
                row.append(img[0].clamp(-1, 1))
    result = {
        n: {k: float(torch.cat(v).mean()) if v else None for k, v in s.items()} | {"test_images": len(data)}
        for n, s in scores.items()
    }
    return result, grid


def _costs(name: str, model: torch.nn.Module, onnx_dir: Path) -> dict[str, Any]:
    model = model.eval().cpu()
    x = torch.randn(1, 3, PROFILE_SIZE, PROFILE_SIZE)
    report = profile_macs(model, x)
    exported = export_onnx(model, onnx_dir / f"{name}.onnx", size=PROFILE_SIZE, check=True)
    timing = onnx_latency(exported.path, x, warmup=3, repeats=10)
    return {
        "arch": model.arch,
        "macs_gc": report.macs_gc,
        "macs": report.macs,
        "params": report.params,
        "onnx": exported.path,
        "onnx_max_abs_diff": exported.max_abs_diff,
        "latency_ms": timing.median_ms,
        "latency": timing.to_dict(),
    }


class Identity(torch.nn.Module):
    """The do-nothing baseline of an editor task: output = input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _curves_note(curves: dict[str, list[tuple[int, float]]]) -> list[str]:
    out = []
    for name, curve in curves.items():
        gain = late_gain(curve)
        best = max(curve, key=lambda r: r[1])
        out.append(
            f"{name}: validation PSNR {curve[-1][1]:.2f} dB at the last epoch {curve[-1][0]} (best {best[1]:.2f} at "
            f"epoch {best[0]}); {gain:+.2f} dB over the last quarter of its epochs"
        )
    return out


def _teacher_only(args: argparse.Namespace, dirs: dict[str, Path], cfg: Any, out: Path, console: Console) -> None:
    """Train (or resume) the pipeline's teacher alone and report its test PSNR/SSIM and sample grid."""
    t0 = time.perf_counter()
    result = run_pipeline(dirs["A_train"], dirs["B_train"], out / "pipeline", cfg, until="teacher", device=args.device)
    teacher_sum = result["stages"]["teacher"]
    teacher = edgegan.load(teacher_sum["best_generator"]).eval().cpu()
    size = cfg.teacher.crop_size
    quality, grid = _evaluate({"teacher": teacher}, dirs["A_test"], dirs["B_test"], size, cfg.direction)
    curves = stage_curves({"teacher": out / "pipeline" / "teacher"})
    plot_curves(curves, out / "curves.png", ylabel="validation PSNR (dB)", title=f"{args.task}: teacher")
    ssim_curves = stage_curves({"teacher": out / "pipeline" / "teacher"}, "ssim")
    plot_curves(ssim_curves, out / "curves_ssim.png", ylabel="validation SSIM", title=f"{args.task}: teacher")
    info = machine_info(args.device)
    q = quality["teacher"]
    notes = [
        f"teacher only ({cfg.teacher.generator} {cfg.teacher.generator_options}, "
        f"{cfg.teacher.epochs}+{cfg.teacher.decay_epochs} epochs, select_by {cfg.teacher.select_by}): "
        f"test PSNR {q['psnr']:.2f} dB, SSIM {q['ssim']:.4f} on {q['test_images']} pairs at {cfg.teacher.crop_size} px",
        *_curves_note(curves),
        "curves.png and curves_ssim.png: validation PSNR and SSIM per epoch (labels -> photo: PSNR rewards blur)",
        f"machine: {machine_line(info)}",
    ]
    results = {
        "task": args.task,
        "preset": args.preset,
        "teacher_only": True,
        "models": {"teacher": quality["teacher"]},
        "teacher": teacher_sum,
        "curves": curves,
        "curves_ssim": ssim_curves,
        "machine": info,
        "wall_s": time.perf_counter() - t0,
    }
    atomic_write_json(out / "results.json", results)
    write_report(
        out,
        title=f"GAN Compression teacher on facades ({args.task}), preset {args.preset}",
        metrics={"teacher psnr": q["psnr"], "teacher ssim": q["ssim"]},
        grids={"samples": grid},
        grid_labels={"samples": ["input", "ground truth", "teacher"]},
        notes=notes,
    )
    for line in notes:
        console.print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="labels2photo", choices=TASKS, help="labels2photo, or an editor's output")
    ap.add_argument("--preset", default=None, choices=list(PRESETS), help="default: facades-cpu / editor-cpu")
    ap.add_argument("--data", type=Path, default=None, help="folder with A/train, B/train, A/test, B/test")
    ap.add_argument("--out", type=Path, default=None, help="default: bench/results/gan_compression[_<editor>]")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--teacher-only", action="store_true", help="train and report the teacher alone")
    ap.add_argument(
        "--epochs-scale",
        type=float,
        default=1.0,
        help="multiply the distillation and fine-tune epochs (constant and decay; scratch follows fine-tune), "
        "for a longer budget; use a new --out",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console(width=120)
    editor_task = args.task != "labels2photo"
    args.preset = args.preset or ("editor-cpu" if editor_task else "facades-cpu")
    out: Path = args.out or Path("bench/results") / ("gan_compression" + (f"_{args.task}" if editor_task else ""))
    dirs = task_data(_data_dirs(args.data), args.task, out / "data")
    cfg = preset(args.preset).with_direction("AtoB" if editor_task else DIRECTION)
    if args.epochs_scale != 1.0:
        for stage in (cfg.distill, cfg.finetune):
            stage.epochs = max(1, round(stage.epochs * args.epochs_scale))
            stage.decay_epochs = max(0, round(stage.decay_epochs * args.epochs_scale))
    if args.teacher_only:
        _teacher_only(args, dirs, cfg, out, console)
        return
    t0 = time.perf_counter()

    def progress(stage: str, event: str, summary: dict[str, Any] | None) -> None:
        console.log(f"pipeline {stage}: {event} ({time.perf_counter() - t0:.0f} s)")

    console.log(f"task {args.task}, preset {args.preset}, direction {cfg.direction}, data {dirs['A_train'].parent}")
    result = run_pipeline(
        dirs["A_train"],
        dirs["B_train"],
        out / "pipeline",
        cfg,
        progress=progress,
        device=args.device,
    )
    summary = result["summary"]
    teacher = edgegan.load(summary["teacher"]["path"]).eval().cpu()
    compressed = edgegan.load(summary["student"]["path"]).eval().cpu()
    student_cfg = compressed.config.to_dict()
    console.log(
        f"scratch: {'done, skipping' if (out / 'scratch' / 'stage.json').is_file() else 'training'} "
        f"mobile_resnet_generator {summary['student']['channels']} from scratch, "
        f"{cfg.finetune.epochs}+{cfg.finetune.decay_epochs} epochs (the fine-tune stage's)"
    )
    scratch_sum = _scratch(cfg, student_cfg, dirs["A_train"], dirs["B_train"], out / "scratch", args.device)
    scratch = edgegan.load(scratch_sum["best_generator"]).eval().cpu()
    models: dict[str, torch.nn.Module] = {"teacher": teacher, "compressed": compressed, "scratch": scratch}
    names = MODELS + (("identity",) if editor_task else ())
    if editor_task:
        models["identity"] = Identity()

    console.log("evaluating on the test pairs (report only) and timing ONNX Runtime at 256x256")
    quality, grid = _evaluate(models, dirs["A_test"], dirs["B_test"], cfg.finetune.crop_size, cfg.direction)
    costs = {n: _costs(n, models[n], out / "onnx") for n in MODELS}
    rows = {n: {**costs.get(n, {}), **quality[n]} for n in names}
    t, c, s = rows["teacher"], rows["compressed"], rows["scratch"]
    speedup = t["latency_ms"] / c["latency_ms"]
    gap_db = t["psnr"] - c["psnr"]
    claim = {
        "within_db_of_teacher": CLAIM_DB,
        "teacher_minus_compressed_psnr_db": gap_db,
        "compressed_within_of_teacher": gap_db <= CLAIM_DB,
        "compressed_minus_scratch_psnr_db": c["psnr"] - s["psnr"],
        "compressed_beats_scratch": c["psnr"] > s["psnr"],
    }
    if editor_task:
        claim["min_trained_minus_identity_psnr_db"] = min(rows[n]["psnr"] for n in MODELS) - rows["identity"]["psnr"]
    runs = {n: out / "pipeline" / n for n in ("teacher", "distill", "supernet", "finetune")}
    curves = stage_curves({**runs, "scratch": out / "scratch"})
    plot_curves(curves, out / "curves.png", ylabel="validation PSNR (dB)", title=f"{args.task}: every stage")
    info = machine_info(args.device)
    results = {
        "task": args.task,
        "preset": args.preset,
        "epochs_scale": args.epochs_scale,
        "direction": cfg.direction,
        "data": str(dirs["A_train"].parent.parent),
        "profile_size": PROFILE_SIZE,
        "eval_size": cfg.finetune.crop_size,
        "scratch_epochs": {"epochs": cfg.finetune.epochs, "decay_epochs": cfg.finetune.decay_epochs},
        "scratch_epochs_rule": "the fine-tune stage's epochs + decay_epochs; supernet epochs not added",
        "models": rows,
        "compression": summary["compression"],
        "student_channels": summary["student"]["channels"],
        "latency_speedup_cpu": speedup,
        "claim": claim,
        "curves": curves,
        "pipeline": {"run": result["run"], "ran": result["ran"], "skipped": result["skipped"]},
        "scratch": scratch_sum,
        "machine": info,
        "machine_line": machine_line(info),
        "wall_s": time.perf_counter() - t0,
    }
    atomic_write_json(out / "results.json", results)

    table = Table(title=f"GAN Compression, facades {args.task}, preset {args.preset}")
    cols = ("model", "MACs (GC)", "MACs", "params", "ORT ms @256", "PSNR", "SSIM", "PSNR vs teacher")
    for col in cols:
        table.add_column(col, justify="right")
    for n in names:
        r = rows[n]
        vs_t = "-" if r.get("psnr_vs_teacher") is None else f"{r['psnr_vs_teacher']:.2f}"
        cost = ("-",) * 4
        if "macs" in r:
            cost = (f"{r['macs_gc'] / 1e9:.3f} G", f"{r['macs'] / 1e9:.3f} G", f"{r['params'] / 1e6:.3f} M")
            cost += (f"{r['latency_ms']:.1f}",)
        table.add_row(n, *cost, f"{r['psnr']:.2f}", f"{r['ssim']:.4f}", vs_t)
    console.print(table)
    lines = [
        f"student channels {summary['student']['channels']}; compression {summary['compression']['macs_gc']:.1f}x "
        f"MACs (GC), {summary['compression']['params']:.1f}x params",
        f"measured CPU latency speed-up (ONNX Runtime, batch 1, {PROFILE_SIZE}x{PROFILE_SIZE}): {speedup:.2f}x",
        f"claim: compressed within ~{CLAIM_DB} dB of the teacher -> gap {gap_db:+.2f} dB "
        f"({'holds' if claim['compressed_within_of_teacher'] else 'does not hold'}); "
        f"beats scratch -> {claim['compressed_minus_scratch_psnr_db']:+.2f} dB "
        f"({'holds' if claim['compressed_beats_scratch'] else 'does not hold'})",
        f"scratch baseline: {cfg.finetune.epochs}+{cfg.finetune.decay_epochs} epochs (fine-tune stage's; "
        f"supernet epochs not added); test set used for this report only ({t['test_images']} pairs at "
        f"{cfg.finetune.crop_size} px)",
        *_curves_note(curves),
    ]
    if editor_task:
        lines.append(
            f"identity (output = input): {rows['identity']['psnr']:.2f} dB; every trained model is "
            f"{claim['min_trained_minus_identity_psnr_db']:+.2f} dB or more above it"
        )
    if not editor_task:
        lines.insert(0, "labels -> photo has many right answers: PSNR/SSIM here reward blur; judge by the grid")
    for line in lines:
        console.print(line)
    metrics = {f"{n} {k}": rows[n][k] for n in MODELS for k in ("macs_gc", "params", "latency_ms", "psnr", "ssim")}
    metrics |= {f"{n} psnr_vs_teacher": rows[n]["psnr_vs_teacher"] for n in MODELS[1:]}
    if editor_task:
        metrics |= {"identity psnr": rows["identity"]["psnr"], "identity ssim": rows["identity"]["ssim"]}
    metrics["latency speed-up"] = speedup
    write_report(
        out,
        title=f"GAN Compression on facades ({args.task}), preset {args.preset}",
        metrics=metrics,
        grids={"samples": grid},
        grid_labels={"samples": ["input", "target", *names]},
        notes=[*lines, "curves.png: validation PSNR per epoch of every stage", f"machine: {machine_line(info)}"],
    )
    console.print(f"machine: {machine_line(info)}; wrote {out / 'results.json'} and {out / 'report.md'}")


if __name__ == "__main__":
    main()
