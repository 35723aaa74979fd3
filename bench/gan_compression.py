"""GAN Compression on facades labels -> photo: teacher vs compressed student vs the same student from scratch.

Usage: python bench/gan_compression.py [--preset facades-cpu|facades-gpu|tiny] [--data DIR]
                                       [--out bench/results/gan_compression] [--device cpu]

1. Data: ``--data`` or ``shared_data("facades")`` with A/train, B/train, A/test, B/test (A = photo, B = labels).
   Labels -> photo, so every stage reads the pairs with ``direction="BtoA"`` (input B, target A).
2. The whole pipeline (:func:`edgegan.compress.pipeline.run_pipeline`) runs into ``out/pipeline``;
   rerunning skips finished stages and resumes an interrupted one.
3. Baseline: the searched student architecture (channels from the pipeline's export summary), trained
   FROM SCRATCH with the plain pix2pix recipe (GAN + lambda_l1 * L1, the teacher's loss settings, no
   distillation) into ``out/scratch`` (resumable). Its budget is the fine-tune stage's epochs
   (``finetune.epochs`` + ``finetune.decay_epochs``); the supernet epochs the compressed student also
   profited from are *not* added, so the baseline gets the same number of epochs as the fine-tune.
4. Evaluation on A/test, B/test (report only, never used for any selection): MACs (GAN Compression
   convention and true), parameters at 256x256, ONNX Runtime CPU latency at 256x256 (median, batch 1,
   this machine), PSNR/SSIM vs ground truth at the preset's crop size (deterministic resize) and PSNR of
   each student vs the teacher's outputs. Writes ``out/results.json`` and ``out/report.md`` (sample grid).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

import edgegan
from edgegan.compress.pipeline import PRESETS, preset, run_pipeline
from edgegan.compress.teacher import Pix2PixConfig, train_pix2pix
from edgegan.data.datasets import PairedDataset
from edgegan.data.shared import shared_data
from edgegan.export.onnx import export_onnx
from edgegan.fileio import atomic_write_json
from edgegan.metrics.reference import psnr, ssim
from edgegan.profile import machine_info, machine_line, onnx_latency, profile_macs
from edgegan.report import write_report

DIRECTION = "BtoA"  # facades: A = photo, B = labels; labels -> photo
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
        lambda_l1=teacher.lambda_l1,
        lr=teacher.lr,
        beta1=teacher.beta1,
        beta2=teacher.beta2,
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
def _evaluate(models: dict[str, torch.nn.Module], a_test: Path, b_test: Path, size: int) -> tuple[dict, list]:
    data = PairedDataset.from_folders(
        a_test, b_test, direction=DIRECTION, load_size=size, crop_size=size, train=False, flip=False
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
            if n != "teacher":
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="facades-cpu", choices=list(PRESETS))
    ap.add_argument("--data", type=Path, default=None, help="folder with A/train, B/train, A/test, B/test")
    ap.add_argument("--out", type=Path, default=Path("bench/results/gan_compression"))
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    console = Console(width=120)
    dirs = _data_dirs(args.data)
    cfg = preset(args.preset).with_direction(DIRECTION)
    out: Path = args.out
    t0 = time.perf_counter()

    def progress(stage: str, event: str, summary: dict[str, Any] | None) -> None:
        console.log(f"pipeline {stage}: {event} ({time.perf_counter() - t0:.0f} s)")

    console.log(f"preset {args.preset}, direction {DIRECTION}, data {dirs['A_train'].parent.parent}")
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
    models = {"teacher": teacher, "compressed": compressed, "scratch": scratch}

    console.log("evaluating on the test pairs (report only) and timing ONNX Runtime at 256x256")
    quality, grid = _evaluate(models, dirs["A_test"], dirs["B_test"], cfg.finetune.crop_size)
    costs = {n: _costs(n, m, out / "onnx") for n, m in models.items()}
    rows = {n: {**costs[n], **quality[n]} for n in MODELS}
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
    info = machine_info(args.device)
    results = {
        "preset": args.preset,
        "direction": DIRECTION,
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
        "pipeline": {"run": result["run"], "ran": result["ran"], "skipped": result["skipped"]},
        "scratch": scratch_sum,
        "machine": info,
        "machine_line": machine_line(info),
        "wall_s": time.perf_counter() - t0,
    }
    atomic_write_json(out / "results.json", results)

    table = Table(title=f"GAN Compression, facades labels->photo, preset {args.preset}")
    cols = ("model", "MACs (GC)", "MACs", "params", "ORT ms @256", "PSNR", "SSIM", "PSNR vs teacher")
    for col in cols:
        table.add_column(col, justify="right")
    for n in MODELS:
        r = rows[n]
        vs_t = "-" if r["psnr_vs_teacher"] is None else f"{r['psnr_vs_teacher']:.2f}"
        table.add_row(
            n,
            f"{r['macs_gc'] / 1e9:.3f} G",
            f"{r['macs'] / 1e9:.3f} G",
            f"{r['params'] / 1e6:.3f} M",
            f"{r['latency_ms']:.1f}",
            f"{r['psnr']:.2f}",
            f"{r['ssim']:.4f}",
            vs_t,
        )
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
    ]
    for line in lines:
        console.print(line)
    metrics = {f"{n} {k}": rows[n][k] for n in MODELS for k in ("macs_gc", "params", "latency_ms", "psnr", "ssim")}
    metrics |= {f"{n} psnr_vs_teacher": rows[n]["psnr_vs_teacher"] for n in MODELS[1:]}
    metrics["latency speed-up"] = speedup
    write_report(
        out,
        title=f"GAN Compression on facades (labels -> photo), preset {args.preset}",
        metrics=metrics,
        grids={"samples": grid},
        grid_labels={"samples": ["input", "ground truth", "teacher", "compressed", "scratch"]},
        notes=[*lines, f"machine: {machine_line(info)}"],
    )
    console.print(f"machine: {machine_line(info)}; wrote {out / 'results.json'} and {out / 'report.md'}")


if __name__ == "__main__":
    main()
