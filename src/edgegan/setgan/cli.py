"""``edgegan setgan``: train a pyramid, sample any size, apply edits, rebuild the report."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from edgegan.errors import ConfigError
from edgegan.progress import ScaleBars

app = typer.Typer(
    help="SETGAN: single-image multi-scale GAN with parallel training and SSIM early exit.", no_args_is_help=True
)
# Tables stay readable in logs and pipes too, where rich would otherwise assume 80 columns.
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 132)
TASKS = ("harmonize", "edit", "paint2image", "superres")


def _devices(device: str) -> list[str]:
    import torch

    devices = [d.strip() for d in device.split(",") if d.strip()]
    for d in devices:
        if d != "cpu" and not d.startswith("cuda"):
            raise ConfigError(f"--device must be cpu, cuda or a list like cuda:0,cuda:1; got {d!r}")
        if d.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"--device {d}: no CUDA device on this machine")
    return devices or ["cpu"]


def _summary(report: dict[str, Any]) -> None:
    t = Table(title=f"SETGAN ({report['mode']}), {report['train_seconds']:.1f} s of training")
    for col in ("scales", "size", "ch", "params", "MMACs", "SSIM", "torch ms", "ORT ms", "energy mJ", "EDP norm"):
        t.add_column(col, justify="right")
    for s in report["scales"]:
        lat = s["latency_ms"]
        t.add_row(
            f"0..{s['index']}",
            "x".join(map(str, s["size"])),
            str(s["channels"]),
            f"{s['params']:,}",
            f"{s['macs'] / 1e6:.1f}",
            f"{s['ssim']:.3f}",
            f"{lat['torch']:.2f}",
            f"{lat.get('onnxruntime', 0):.2f}",
            f"{s['energy_j'] * 1e3:.2f}",
            f"{s['edp_norm']:.3f}",
        )
    console.print(t)
    console.print(f"energy: {report['energy_label']}")
    if report["quality_threshold"] is not None:
        if report["chosen_scales"]:
            console.print(
                f"SSIM >= {report['quality_threshold']}: {report['chosen_scales']} scales, "
                f"EDP saving {100 * report['edp_saving']:.1f}%"
            )
        else:
            console.print(f"SSIM >= {report['quality_threshold']}: not reached by any scale; use all")


@app.command("train")
def train_cmd(
    image: Path = typer.Argument(..., help="The training image."),
    out: Path = typer.Option(..., "--out", help="Run folder."),
    mode: str = typer.Option("parallel", help="parallel (SETGAN) or serial (SinGAN)."),
    parallel_inputs: str = typer.Option(
        "real",
        help="parallel: real (the paper: always the real coarser image; best for apply), refresh (then, after a "
        "barrier, the coarser scales' own samples: random samples keep the layout, blurred) or shuffle.",
    ),
    refresh_at: float = typer.Option(0.5, help="refresh: fraction of iterations on the real coarser image."),
    quality: float | None = typer.Option(None, help="SSIM threshold T: report the fewest scales reaching it."),
    stop_early: bool = typer.Option(False, "--stop-early", help="serial: stop once the threshold is met."),
    iters: int = typer.Option(2000, min=1, help="Iterations per scale."),
    max_size: int = typer.Option(250, min=8, help="Longer side of the finest scale."),
    min_size: int = typer.Option(25, min=8, help="Shorter side of the coarsest scale."),
    factor: float = typer.Option(0.75, help="Nominal down-scaling factor between scales."),
    nfc: int = typer.Option(32, min=1, help="Width of the coarsest scales (doubles every 4 scales)."),
    max_nfc: int = typer.Option(128, min=1, help="Maximum width."),
    alpha: float = typer.Option(10.0, help="Reconstruction weight (100 for super-resolution)."),
    workers: int | None = typer.Option(None, min=1, help="parallel: worker processes (default: one per core)."),
    threads: int | None = typer.Option(None, min=1, help="Threads per worker (default: cores / workers)."),
    device: str = typer.Option("cpu", help="cpu, cuda, or several devices: cuda:0,cuda:1."),
    seed: int = typer.Option(0, help="Random seed."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run (finished scales are kept)."),
    report: bool = typer.Option(True, "--report/--no-report", help="Export, estimate and write the report."),
    repeats: int = typer.Option(10, min=1, help="Timed runs per scale for latency and energy."),
    weights: Path | None = typer.Option(None, help="FID Inception weights (file or folder) for SIFID."),
) -> None:
    """Train a SETGAN pyramid on one image, then export, estimate quality per scale and report."""
    from edgegan.setgan.config import SETGANConfig
    from edgegan.setgan.report import finalize
    from edgegan.setgan.train import fit, prepare_run

    if quality is not None and not 0.0 < quality <= 1.0:
        raise ConfigError(f"--quality is an SSIM threshold in (0, 1], got {quality}")
    devices = _devices(device)
    cfg = SETGANConfig(
        max_size=max_size,
        min_size=min_size,
        factor=factor,
        nfc=nfc,
        max_nfc=max_nfc,
        alpha=alpha,
        iters=iters,
        mode=mode,
        parallel_inputs=parallel_inputs,
        refresh_at=refresh_at,
        seed=seed,
    )  # type: ignore[arg-type]
    # Load and check the image (and the run folder) before any progress display starts.
    prepare_run(image, out, cfg, resume=resume)
    with ScaleBars(console) as bars:
        run = fit(
            image,
            out,
            cfg,
            workers=workers,
            threads=threads,
            devices=devices,
            resume=True,  # the run folder was prepared (and checked) above
            quality=quality,
            stop_early=stop_early,
            progress=bars.update,
        )
    if int(os.environ.get("RANK", "0")) != 0:
        return
    console.print(f"trained {len(run.done_scales())} of {run.spec().n_scales} scales into {run.path}")
    if report:
        rep = finalize(run, quality=quality, device=devices[0], repeats=repeats, weights=weights)
        _summary(rep)
        console.print(f"report: {run.path / 'report.md'} (report.json, tradeoff.png, scales.png, onnx/)")


def _pyramid(run_dir: Path, backend: str, k: int | None) -> Any:
    from edgegan.setgan.export import onnx_pyramid
    from edgegan.setgan.run import SETGANRun

    if backend not in ("onnx", "torch"):
        raise ConfigError(f"--backend must be onnx or torch, got {backend!r}")
    run = SETGANRun(run_dir)
    run.pyramid_info()  # clear error if this is not a run folder
    if backend == "onnx":
        return onnx_pyramid(run.path / "onnx", k=k), run
    return run.load_pyramid(k), run


@app.command("sample")
def sample_cmd(
    run_dir: Path = typer.Argument(..., help="SETGAN run folder."),
    n: int = typer.Option(8, "--n", min=1, help="Number of samples."),
    scales: int | None = typer.Option(None, min=1, help="Use scales 0..k-1 only (default: all)."),
    size: str | None = typer.Option(
        None, help="Output size N or HxW (height x width, as every edgegan command), e.g. --size 150x400."
    ),
    scale_w: float = typer.Option(1.0, help="Width multiplier of the training size."),
    scale_h: float = typer.Option(1.0, help="Height multiplier of the training size."),
    out: Path | None = typer.Option(None, help="Folder for the PNGs (default RUN/samples)."),
    backend: str = typer.Option("onnx", help="onnx (ONNX Runtime) or torch."),
    seed: int = typer.Option(0, help="Noise seed."),
) -> None:
    """Random samples of any size and aspect ratio."""
    import torch

    from edgegan.cli import parse_size
    from edgegan.data.images import save_image

    hw = parse_size(size) if size is not None else None  # one-line ConfigError for a malformed size
    if scale_w <= 0 or scale_h <= 0:
        raise ConfigError("scale factors must be positive")
    k = scales - 1 if scales is not None else None
    pyr, run = _pyramid(run_dir, backend, k)
    out = out or run.path / "samples"
    gen = torch.Generator().manual_seed(seed)
    out_size = hw
    images = pyr.sample(n, k, out_size=out_size, scale=(scale_h, scale_w), generator=gen)
    for j, img in enumerate(images):
        save_image(img, out / f"sample_{j:03d}.png")
    h, w = images.shape[-2:]
    console.print(f"wrote {n} samples of {w}x{h} to {out}")


@app.command("apply")
def apply_cmd(
    run_dir: Path = typer.Argument(..., help="SETGAN run folder."),
    task: str = typer.Option(..., help="harmonize, edit, paint2image or superres."),
    input: Path = typer.Option(..., "--input", help="Input image (composite, edit, paint or low-res image)."),
    mask: Path | None = typer.Option(None, help="Mask of the edited region (harmonize, edit)."),
    inject_scale: int | None = typer.Option(None, help="Scale n at which the input is injected."),
    factor: float = typer.Option(4.0, help="superres: up-scaling factor."),
    out: Path | None = typer.Option(None, help="Output PNG (default RUN/apply_TASK.png)."),
    backend: str = typer.Option("onnx", help="onnx (ONNX Runtime) or torch."),
    seed: int = typer.Option(0, help="Noise seed."),
) -> None:
    """Harmonization, editing, paint-to-image or super-resolution with a trained pyramid."""
    import torch

    from edgegan.data.images import load_image, save_image
    from edgegan.setgan import apps

    if task not in TASKS:
        raise ConfigError(f"--task must be one of {', '.join(TASKS)}, got {task!r}")
    pyr, run = _pyramid(run_dir, backend, None)
    image = load_image(input)[None]
    gen = torch.Generator().manual_seed(seed)
    n = inject_scale if inject_scale is not None else max(1, pyr.n_scales // 2)
    info = ""
    if task in ("harmonize", "edit"):
        if mask is None:
            raise ConfigError(f"--task {task} needs --mask")
        m = apps.load_mask(mask)
        apps.check_mask(m, image)
        apps.validate_inject_scale(pyr, n)
        fn = apps.harmonize if task == "harmonize" else apps.edit
        result = fn(pyr, image, m, n, generator=gen)
    elif task == "paint2image":
        apps.validate_inject_scale(pyr, n)
        reals, _ = run.load_reals()
        result = apps.paint_to_image(pyr, image, n, palette_from=reals[0], generator=gen)
    else:
        if factor <= 1.0:
            raise ConfigError(f"--factor must be > 1, got {factor}")
        if run.config().alpha < 100:
            console.print(
                f"note: this run was trained with alpha={run.config().alpha}; SinGAN's super-resolution "
                "trains with --alpha 100"
            )
        sr = apps.super_resolve(pyr, image, factor, generator=gen)
        result = sr.image
        info = f" ({sr.steps} steps of x{sr.ratio:.3f})"
    out = out or run.path / f"apply_{task}.png"
    save_image(result[0], out)
    h, w = result.shape[-2:]
    console.print(f"wrote {out} ({w}x{h}){info}")


@app.command("report")
def report_cmd(
    run_dir: Path = typer.Argument(..., help="SETGAN run folder."),
    quality: float | None = typer.Option(None, help="SSIM threshold for the early exit."),
    device: str = typer.Option("cpu", help="cpu or cuda[:N]."),
    repeats: int = typer.Option(10, min=1, help="Timed runs per scale."),
    weights: Path | None = typer.Option(None, help="FID Inception weights for SIFID."),
    as_json: bool = typer.Option(False, "--json", help="Print report.json."),
) -> None:
    """(Re)build exports, per-scale quality and costs, and the report of a run."""
    from edgegan.setgan.report import finalize
    from edgegan.setgan.run import SETGANRun

    run = SETGANRun(run_dir)
    run.pyramid_info()
    rep = finalize(run, quality=quality, device=_devices(device)[0], repeats=repeats, weights=weights)
    if as_json:
        print(json.dumps(rep, indent=2, default=lambda o: None if isinstance(o, float) and math.isnan(o) else str(o)))
    else:
        _summary(rep)
        console.print(f"report: {run.path / 'report.md'}")
