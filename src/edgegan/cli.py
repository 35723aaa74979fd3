"""The ``edgegan`` command line.

Every bad input (missing file, unknown architecture, bad option) ends with a one-line
``edgegan: error: ...`` on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import traceback
import typing
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from edgegan import __version__
from edgegan.cli_options import parse_options, parse_size  # other CLIs import these two from here too
from edgegan.errors import ConfigError, EdgeganError

app = typer.Typer(
    name="edgegan",
    help="Train, compress, adapt and run GANs on edge devices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
console = Console(soft_wrap=True)  # paths and messages stay on one line; tables still fit
err_console = Console(stderr=True)

OPTION_HELP = "Architecture option key=value (repeatable), e.g. -o ngf=32 -o channels=16_16_32_16_32_32_16_16."


# ----------------------------------------------------------------------------- helpers


def resolve_model(target: str, options: dict[str, str]) -> Any:
    """A saved model folder (loaded, options not allowed) or a built-in architecture name."""
    from edgegan.registry import architectures, build, load

    path = Path(target)
    looks_like_path = os.sep in target or target.startswith(".") or path.exists()
    if looks_like_path:
        if options:
            raise ConfigError("-o options apply to built-in architectures, not to a saved model folder")
        return load(path)
    if target.replace("-", "_") in architectures():
        return build(target, **options)
    raise ConfigError(f"{target!r} is neither a saved model folder nor an architecture ({', '.join(architectures())})")


def _fmt_count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3f}{unit}"
    return f"{n:.0f}"


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


# ----------------------------------------------------------------------------- commands


@app.command("archs")
def archs_cmd() -> None:
    """List the built-in architectures and their options (defaults in brackets)."""
    from edgegan.registry import architectures

    table = Table(title="built-in architectures")
    table.add_column("name")
    table.add_column("options")
    for name, cls in architectures().items():
        fields = dataclasses.fields(cls.config_cls)
        hints = typing.get_type_hints(cls.config_cls)
        opts = ", ".join(f"{f.name}[{f.default}]" for f in fields if f.name in hints)
        table.add_row(name, opts)
    console.print(table)


@app.command("init")
def init_cmd(
    arch: str = typer.Argument(..., help="Architecture name (see `edgegan archs`)."),
    out: Path = typer.Option(..., "--out", help="Folder to write config.json + model.safetensors to."),
    option: list[str] = typer.Option([], "-o", "--option", help=OPTION_HELP),
    seed: int = typer.Option(0, help="Seed of the random initialisation."),
    force: bool = typer.Option(False, help="Replace an existing model folder."),
) -> None:
    """Save a freshly initialised model folder (loadable by every other command)."""
    import torch

    from edgegan.registry import build

    if out.exists() and not force:
        raise EdgeganError(f"{out} already exists; pass --force to replace it")
    torch.manual_seed(seed)
    model = build(arch, **parse_options(option))
    model.save(out)
    console.print(f"saved {model.arch} to {out}")


@app.command("profile")
def profile_cmd(
    target: str = typer.Argument(..., help="Architecture name or saved model folder."),
    option: list[str] = typer.Option([], "-o", "--option", help=OPTION_HELP),
    size: str = typer.Option("256", help="Input size N or HxW."),
    batch: int = typer.Option(1, min=1, help="Batch size for MAC counting (latency is always batch 1)."),
    latency: bool = typer.Option(False, "--latency", help="Time PyTorch eager and ONNX Runtime (median ms)."),
    repeats: int = typer.Option(10, min=1, help="Timed runs for --latency."),
    warmup: int = typer.Option(3, min=0, help="Untimed warm-up runs for --latency."),
    threads: int | None = typer.Option(None, min=1, help="CPU threads (default: torch's)."),
    memory: bool = typer.Option(True, "--memory/--no-memory", help="Measure peak memory of one inference."),
    layers: bool = typer.Option(False, "--layers", help="Print a per-layer table."),
    device: str = typer.Option("cpu", help="cpu or cuda[:N] for the PyTorch timing and memory."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Count parameters and MACs; optionally time inference and measure peak memory."""
    from edgegan.profile import machine_line, profile_model

    _check_device(device)
    model = resolve_model(target, parse_options(option))
    result = profile_model(
        model,
        parse_size(size),
        batch=batch,
        latency=latency,
        repeats=repeats,
        warmup=warmup,
        threads=threads,
        memory=memory,
        layers=layers,
        device=device,
    )
    if as_json:
        _print_json(result)
        return
    if layers:
        lt = Table(title="per layer")
        for col in ("layer", "type", "output", "params", "MACs", "MACs (GC)"):
            lt.add_column(col, justify="right" if col in ("params", "MACs", "MACs (GC)") else "left")
        for row in result["layers"]:
            lt.add_row(
                row["name"],
                row["kind"],
                "x".join(map(str, row["output_shape"])),
                f"{row['params']:,}",
                _fmt_count(row["macs"]),
                _fmt_count(row["macs_gc"]),
            )
        console.print(lt)
    t = Table(title=f"{result['arch']} at {'x'.join(map(str, result['input_shape']))}")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_row("params", f"{result['params']:,}")
    t.add_row("MACs (true)", _fmt_count(result["macs"]))
    t.add_row("MACs (GAN Compression convention)", _fmt_count(result["macs_gc"]))
    if "memory_mb" in result:
        t.add_row("weights (MiB)", f"{result['memory_mb']['weights_mb']:.1f}")
        t.add_row("peak activation memory (MiB)", f"{result['memory_mb']['activation_peak_mb']:.1f}")
    for backend, ms in result.get("latency_ms", {}).items():
        t.add_row(f"latency {backend} (median ms)", f"{ms:.2f}")
    console.print(t)
    if "machine" in result:
        console.print(f"machine: {machine_line(result['machine'])}")


@app.command("export")
def export_cmd(
    target: str = typer.Argument(..., help="Architecture name or saved model folder."),
    out: Path = typer.Option(..., "--out", help="Output .onnx file."),
    option: list[str] = typer.Option([], "-o", "--option", help=OPTION_HELP),
    size: str = typer.Option("256", help="Example input size N or HxW (H and W stay dynamic without --static-shape)."),
    opset: int = typer.Option(17, min=13, help="ONNX opset."),
    exporter: str = typer.Option("torchscript", help="torchscript (fast) or dynamo (torch.export)."),
    static_shape: bool = typer.Option(
        False, "--static-shape", help="Fix batch 1 and --size in the graph: every input and output dim a number."
    ),
    tolerance: float = typer.Option(1e-4, help="Fail if max |torch - onnxruntime| exceeds this."),
    optimize: bool = typer.Option(
        False,
        "--optimize",
        help="Fold constants and split the 3-channel output convolution into its 4 phases (+DepthToSpace), "
        "which ONNX Runtime runs without padding 3 channels to 16; outputs unchanged (parity-checked).",
    ),
    quantize: str | None = typer.Option(
        None,
        help="Also write a quantized model: int8 (static with --calib, else dynamic), fp16, auto (int8 with the "
        "layers that break --min-psnr kept in float), static (int8 needing --calib) or dynamic.",
    ),
    min_psnr: float = typer.Option(
        35.0, "--min-psnr", help="Quality gate: PSNR (dB) of the quantized output against fp32 on held-out images."
    ),
    force: bool = typer.Option(False, "--force", help="Write the quantized model even if it misses --min-psnr."),
    calib: Path | None = typer.Option(
        None, help="Folder of calibration images; every 4th is held out to measure PSNR against fp32."
    ),
    calib_count: int = typer.Option(16, min=1, help="At most this many calibration images."),
    threads: int | None = typer.Option(None, min=1, help="CPU threads for the latency of fp32 vs quantized."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Export to ONNX (dynamic H/W), check parity with PyTorch, optionally quantize behind a PSNR gate."""
    from edgegan.export.onnx import export_onnx
    from edgegan.export.quantize import GATED_MODES

    if exporter not in ("torchscript", "dynamo"):
        raise ConfigError(f"--exporter must be torchscript or dynamo, got {exporter!r}")
    if quantize is not None and quantize not in GATED_MODES:
        raise ConfigError(f"--quantize must be one of {', '.join(GATED_MODES)}, got {quantize!r}")
    if quantize in ("static", "auto") and calib is None:
        raise ConfigError(f"--quantize {quantize} needs --calib DIR with calibration images")
    if out.suffix != ".onnx":
        raise ConfigError(f"--out must end in .onnx, got {out}")
    hw = parse_size(size)
    calib_arrays = _calibration_arrays(calib, hw, calib_count) if calib is not None else None
    model = resolve_model(target, parse_options(option))
    result = export_onnx(
        model,
        out,
        size=hw,
        opset=opset,
        dynamic=not static_shape,
        exporter=exporter,
        optimize=optimize,  # type: ignore[arg-type]
    )
    report: dict[str, Any] = {"arch": getattr(model, "arch", ""), **result.to_dict(), "tolerance": tolerance}
    gate_error = None
    if quantize:
        q, gate_error = _quantize_export(out, quantize, calib_arrays, calib, hw, min_psnr, force, threads)
        report["fp16" if quantize == "fp16" else "int8"] = q
    if as_json:
        _print_json(report)
    else:
        console.print(f"wrote {result.path} (opset {result.opset}, {result.exporter}, input {result.input_shape})")
        if static_shape:
            console.print(f"output shape {result.output_shapes[0] if result.output_shapes else '?'} (static)")
        console.print(f"max |torch - onnxruntime| = {result.max_abs_diff:.3g} (tolerance {tolerance:g})")
        if optimize:
            console.print(f"optimized: {', '.join(result.optimized or []) or 'nothing to rewrite'}")
        if quantize:
            _print_quant(report["fp16" if quantize == "fp16" else "int8"])
    if gate_error:
        _one_line(gate_error)
        raise typer.Exit(1)
    if result.max_abs_diff is not None and result.max_abs_diff > tolerance:
        # Rich would wrap a long message; errors stay on one line.
        _one_line(f"ONNX output differs from PyTorch by {result.max_abs_diff:.3g} > tolerance {tolerance:g}")
        raise typer.Exit(1)


def _quantize_export(
    fp32: Path,
    mode: str,
    calib_arrays: list[Any] | None,
    calib: Path | None,
    hw: tuple[int, int],
    min_psnr: float,
    force: bool,
    threads: int | None,
) -> tuple[dict[str, Any], str | None]:
    """Run ``quantize_gated`` for ``export``; returns the report (also written to ``<model>.quant.json``)
    and the gate's one-line error, if missed."""
    import numpy as np

    from edgegan.export.quantize import QualityGateError, quantize_gated, split_calibration

    path = fp32.with_name(f"{fp32.stem}.{'fp16' if mode == 'fp16' else 'int8'}.onnx")
    report_path = path.with_suffix(".quant.json")
    if not calib_arrays:
        rng = np.random.default_rng(0)
        calibration, held = [], [rng.uniform(-1, 1, (1, 3, *hw)).astype(np.float32) for _ in range(4)]
        on = "4 random inputs (pass --calib DIR to measure on images)"
    elif mode == "fp16":  # nothing to calibrate: measure on every image
        calibration, held = [], calib_arrays
        on = f"{len(held)} images from {calib}"
    else:
        calibration, held = split_calibration(calib_arrays)
        on = (
            f"{len(held)} held-out images from {calib}"
            if held
            else f"the {len(calibration)} calibration images from {calib} (4 or more hold some out)"
        )
    try:
        q = quantize_gated(
            fp32,
            path,
            mode=mode,  # type: ignore[arg-type]
            calibration=calibration,
            held_out=held,
            min_psnr=min_psnr,
            force=force,
            report_path=report_path,
            threads=threads,
            measure_on=on,
        )
        error = None
    except QualityGateError as exc:
        q, error = exc.report, str(exc)
    return {**q.to_dict(), "report": str(report_path)}, error


def _print_quant(q: dict[str, Any]) -> None:
    def db(x: float | None) -> str:
        return "exact" if x is None else f"{x:.2f} dB"

    verdict = f"wrote {q['path']}" if q["written"] else f"did not write {q['path']}"
    flavour = q["precision"] if q["mode"] == q["precision"] else f"{q['mode']}: {q['precision']}"
    if q["per_channel"] is not None:
        flavour += ", per-channel weights" if q["per_channel"] else ", per-tensor weights"
    console.print(
        f"{verdict} ({flavour}): PSNR vs fp32 {db(q['psnr_db_median'])} "
        f"(gate {q['min_psnr_db']:g} dB{', forced' if q['written'] and not q['passed'] else ''}) on {q['on']}"
    )
    if q["per_channel_vs_tensor_db"]:
        pc = q["per_channel_vs_tensor_db"]
        console.print(f"  all int8: per-channel weights {db(pc['per_channel'])}, per-tensor {db(pc['per_tensor'])}")
    if q["sensitivity"]:
        # Plain lines, not a table: layer names are long and a table would fold them.
        console.print("  per-layer sensitivity: PSNR if only this layer stays float (gain), * = kept in float")
        for row in q["sensitivity"]:
            mark = "*" if row["node"] in q["kept_float"] else " "
            name = row["node"].removeprefix("/model/")
            gain = "(exact)" if row["gain_db"] is None else f"({row['gain_db']:+.2f})"
            console.print(f"  {mark} {db(row['psnr_db_kept_float']):>9} {gain}  {row['op']:<13} {name}")
        console.print(f"  kept in float: {len(q['kept_float'])} of {len(q['quantizable'])} layers")
    lat = q["latency_ms"]
    if lat:
        fp32_ms, q_ms = lat["fp32"], lat[q["precision"]]
        shape = "x".join(map(str, q["latency_input"]))
        console.print(
            f"  ONNX Runtime median latency ({shape}, threads: {q['threads']}): fp32 {fp32_ms:.2f} ms, "
            f"{q['precision']} {q_ms:.2f} ms ({fp32_ms / q_ms:.2f}x)"
        )
    console.print(f"  report: {q['report']}")


@app.command("demo")
def demo_cmd(
    which: str = typer.Argument("setgan", help="setgan (default) or compression."),
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Output folder."),
    iters: int | None = typer.Option(None, min=1, help="setgan: iterations per scale (default 300)."),
    workers: int | None = typer.Option(None, min=1, help="setgan: worker processes."),
    size: int = typer.Option(256, min=16, help="compression: input size."),
    repeats: int = typer.Option(5, min=1, help="compression: timed runs per backend."),
) -> None:
    """setgan: train SETGAN on a bundled image and report; compression: teacher vs student costs."""
    if which == "setgan":
        from edgegan.setgan.demo import run_setgan_demo

        run_setgan_demo(out, iters=iters, workers=workers, console=console)
    elif which == "compression":
        from edgegan.demo import run_demo

        run_demo(out, size=size, repeats=repeats, console=console)
    else:
        raise ConfigError(f"demo must be setgan or compression, got {which!r}")


@app.command("eval")
def eval_cmd(
    real: Path = typer.Option(..., "--real", help="Folder of real images."),
    fake: Path = typer.Option(..., "--fake", help="Folder of generated images."),
    out: Path | None = typer.Option(None, "--out", help="Write metrics.json, report.md and samples.png here."),
    pairing: str = typer.Option("auto", help="auto (pair by file name when every name matches), name, or none."),
    size: str | None = typer.Option(None, help="Resize both sides to N or HxW before paired metrics."),
    weights: Path | None = typer.Option(None, help="Inception weights file, or a folder with all weights files."),
    device: str = typer.Option("cpu", help="cpu or cuda[:N]."),
    batch_size: int = typer.Option(16, min=1, help="Images per Inception batch."),
    kid_subset_size: int = typer.Option(1000, min=2, help="KID subset size (capped at the sample count)."),
    lpips: bool = typer.Option(True, "--lpips/--no-lpips", help="LPIPS for paired folders when weights exist."),
    seg_model: Path | None = typer.Option(None, help="Segmentation model (TorchScript .pt or .onnx) for mIoU."),
    labels: Path | None = typer.Option(None, help="Folder of label maps named like the generated images."),
    num_classes: int | None = typer.Option(None, min=1, help="Number of segmentation classes."),
    seg_input: str = typer.Option("unit", help="Segmentation model input range: unit, signed or imagenet."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object keyed by metric name."),
) -> None:
    """Compare generated images with real ones: PSNR, SSIM, MS-SSIM, L1, FID, KID, LPIPS, SIFID, mIoU."""
    from edgegan.fileio import atomic_write_json
    from edgegan.metrics.folders import EvalOptions, evaluate_folders

    _check_device(device)
    if pairing not in ("auto", "name", "none"):
        raise ConfigError(f"--pairing must be auto, name or none, got {pairing!r}")
    if seg_input not in ("unit", "signed", "imagenet"):
        raise ConfigError(f"--seg-input must be unit, signed or imagenet, got {seg_input!r}")
    if weights is not None and not weights.exists():
        raise ConfigError(f"--weights {weights} does not exist")
    opts = EvalOptions(
        pairing=pairing,  # type: ignore[arg-type]
        size=parse_size(size) if size else None,
        weights=weights,
        device=device,
        batch_size=batch_size,
        kid_subset_size=kid_subset_size,
        lpips=lpips,
        seg_model=seg_model,
        labels=labels,
        num_classes=num_classes,
        seg_input_range=seg_input,
    )
    result = evaluate_folders(real, fake, opts, progress=not as_json)
    report = result.to_dict()
    if out is not None:
        atomic_write_json(out / "metrics.json", report)
        _eval_report(out, real, fake, result)
    if as_json:
        _print_json(report)
        return
    t = Table(title=f"{fake} vs {real}")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in result.metrics.items():
        t.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    console.print(t)
    console.print(", ".join(f"{k} {v}" for k, v in result.counts.items()))
    for k, why in result.skipped.items():
        console.print(f"skipped {k}: {why}")
    if out is not None:
        console.print(f"wrote {out / 'metrics.json'} and {out / 'report.md'}")


def _eval_report(out: Path, real: Path, fake: Path, result: Any) -> None:
    from edgegan.data import load_image
    from edgegan.report import write_report

    if result.pairs:
        shown = result.pairs[:6]
        rows = [[load_image(r) for r, _ in shown], [load_image(f) for _, f in shown]]
    else:
        rows = [[load_image(p) for p in result.real_files[:6]], [load_image(p) for p in result.fake_files[:6]]]
    write_report(
        out,
        title=f"Evaluation of {fake.name or fake}",
        notes=[f"Generated images in `{fake}`, real images in `{real}`; counts: {result.counts}."],
        metrics=result.metrics,
        skipped=result.skipped,
        grids={"samples": rows},
        grid_labels={"samples": ["real", "generated"]},
    )


@app.command("report")
def report_cmd(
    series: Path = typer.Argument(..., help="JSON list (or JSONL) of points, each with a name and numbers."),
    x: str = typer.Option(..., "--x", help="Field on the x axis, e.g. macs_gc or energy_j."),
    y: str = typer.Option(..., "--y", help="Field on the y axis, e.g. fid or ssim."),
    out: Path = typer.Option(..., "--out", help="Folder for report.md and tradeoff.png."),
    title: str = typer.Option("Trade-off", help="Report title."),
    log_x: bool = typer.Option(False, "--log-x", help="Logarithmic x axis."),
    group: str | None = typer.Option(None, help="Field whose values split the points into lines."),
) -> None:
    """Plot a quality/cost trade-off from a series of measurements and write a Markdown page."""
    from edgegan.report import write_report

    points = _read_series(series)
    path = write_report(out, title=title, series=points, x=x, y=y, log_x=log_x, group=group)
    console.print(f"wrote {path} and {out / 'tradeoff.png'} ({len(points)} points)")


def _read_series(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise EdgeganError(f"series file not found: {path}")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise EdgeganError(f"{path} is neither JSON nor JSON lines: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("points"), list):
        data = data["points"]
    if not isinstance(data, list) or not data or not all(isinstance(p, dict) for p in data):
        raise EdgeganError(f"{path} must hold a non-empty list of objects (or {{'points': [...]}})")
    return data


@app.command("serve")
def serve_cmd(
    host: str = typer.Option("127.0.0.1", help="Address to bind."),
    port: int = typer.Option(8000, min=1, max=65535, help="Port."),
    token: list[str] = typer.Option([], help="Bearer token(s) clients must send (or EDGEGAN_TOKEN)."),
    data: Path = typer.Option(Path("serve-data"), help="Folder for job state and files."),
    workers: int = typer.Option(1, min=1, help="Jobs trained at once (others wait in the queue)."),
    threads_per_job: int = typer.Option(2, min=1, help="CPU threads per job."),
    job_workers: int = typer.Option(2, min=1, help="Processes per parallel-mode job."),
    max_upload_mb: float = typer.Option(20.0, min=0.01, help="Largest upload in MiB."),
    max_pixels: int = typer.Option(4_000_000, min=1, help="Largest upload in pixels."),
    max_iters: int = typer.Option(2000, min=1, help="Largest iterations per scale a client may ask for."),
    max_running: int = typer.Option(2, min=1, help="Running jobs per token."),
    max_queued: int = typer.Option(8, min=1, help="Queued jobs per token."),
    insecure_local: bool = typer.Option(False, "--insecure-local", help="No token; binds to loopback only."),
) -> None:
    """Run the SETGAN training service (needs the `server` extra: fastapi, uvicorn)."""
    import ipaddress

    try:
        import uvicorn

        from edgegan.serve.app import ServerConfig, create_app
    except ImportError as exc:
        raise EdgeganError(f"the server needs the 'server' extra (pip install 'edgegan[server]'): {exc}") from None
    tokens = [t for t in token if t] or [t for t in os.environ.get("EDGEGAN_TOKEN", "").split(",") if t]
    if not tokens:
        if not insecure_local:
            raise ConfigError(
                "refusing to start without a token: pass --token or set EDGEGAN_TOKEN "
                "(or --insecure-local to bind to loopback with no token)"
            )
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ConfigError(f"--insecure-local only binds to loopback, not {host}")
    if any(len(t) < 16 for t in tokens):
        raise ConfigError("tokens must be at least 16 characters")
    cfg = ServerConfig(
        data_dir=data,
        tokens=tokens,
        workers=workers,
        threads_per_job=threads_per_job,
        job_workers=job_workers,
        max_upload_bytes=int(max_upload_mb * 2**20),
        max_pixels=max_pixels,
        max_iters=max_iters,
        max_running_per_token=max_running,
        max_queued_per_token=max_queued,
        insecure_local=insecure_local,
    )
    console.print(f"edgegan service on http://{host}:{port} (docs: /docs), data in {data}, {workers} job worker(s)")
    uvicorn.run(create_app(cfg), host=host, port=port, log_level="warning")


def _add_subcommands() -> None:
    from edgegan.compress.distill_cli import app as compress_app
    from edgegan.compress.teacher_cli import app as teacher_app
    from edgegan.serve.client_cli import app as client_app
    from edgegan.setgan.cli import app as setgan_app

    app.add_typer(setgan_app, name="setgan")
    app.add_typer(teacher_app, name="train", help="Train teacher generators: pix2pix and CycleGAN.")
    # One `compress` group: distil, train the once-for-all supernet, search it under a MACs budget.
    from edgegan.compress.search_cli import search_cmd
    from edgegan.compress.supernet_cli import supernet_cmd

    compress_app.command("supernet")(supernet_cmd)
    compress_app.command("search")(search_cmd)
    app.add_typer(compress_app, name="compress", help="GAN Compression: distillation, supernet, search, export.")
    app.add_typer(client_app, name="client", help="Talk to an edgegan service: train remotely, render locally.")
    from edgegan.ugc.cli import app as ugc_app

    app.add_typer(ugc_app, name="ugc", help="UGC: label-efficient compression with semi-supervised NAS.")
    from edgegan.e2gan.cli import app as e2gan_app

    app.add_typer(e2gan_app, name="e2gan", help="E2GAN: editing GANs distilled from editors, LoRA per concept.")
    from edgegan.translate_cli import translate_cmd

    app.command("translate")(translate_cmd)


_add_subcommands()

weights_app = typer.Typer(help="Pretrained weights: list, check and (explicitly) fetch.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")


@weights_app.command("list")
def weights_list_cmd(
    path: Path | None = typer.Option(None, "--weights", help="A file or folder to look in first."),
) -> None:
    """Show each known weights file, what it is for, and whether it was found and verified."""
    from edgegan.weights import KNOWN, available, cache_dir

    t = Table(title=f"weights (cache: {cache_dir()})")
    for col in ("name", "file", "used for", "status"):
        t.add_column(col)
    for name, spec in KNOWN.items():
        found, reason = available(name, path)
        status = f"ok: {found}" if found else ("wrong file" if reason and "sha256" in reason else "missing")
        t.add_row(name, spec.filename, spec.used_for, status)
    console.print(t)


@weights_app.command("fetch")
def weights_fetch_cmd(
    name: str = typer.Argument(..., help="Known weights name (see `edgegan weights list`)."),
    dest: Path | None = typer.Option(None, help="Folder to save to (default: torch hub cache)."),
) -> None:
    """Download a published weights file and verify its hash (needs internet)."""
    from edgegan.weights import fetch

    console.print(f"saved {fetch(name, dest)}")


@app.command("version")
def version_cmd() -> None:
    """Print the edgegan version."""
    console.print(__version__)


def _check_device(device: str) -> None:
    import torch

    if device == "cpu":
        return
    if not device.startswith("cuda"):
        raise ConfigError(f"--device must be cpu or cuda[:N], got {device!r}")
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device on this machine")


def _calibration_arrays(folder: Path, hw: tuple[int, int], limit: int) -> list[Any]:
    from edgegan.data import list_images, load_image

    return [load_image(p, size=hw)[None].numpy() for p in list_images(folder)[:limit]]


# ----------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    """Console entry point: map user errors to one line and exit code 2."""
    command = typer.main.get_command(app)
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        rv = command.main(args=args or ["--help"], prog_name="edgegan", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err_console.print("edgegan: aborted")
        return 130
    except EdgeganError as exc:
        _one_line(str(exc))
        return 2
    except KeyboardInterrupt:
        err_console.print("edgegan: interrupted")
        return 130
    except Exception as exc:
        if _is_usage_error(exc):
            _one_line(exc.format_message())  # type: ignore[attr-defined]
            return 2
        # A bug, not bad input: say so in one line; the traceback is one variable away.
        if os.environ.get("EDGEGAN_DEBUG"):
            traceback.print_exc()
        _one_line(f"internal error: {type(exc).__name__}: {exc} (set EDGEGAN_DEBUG=1 for the traceback)")
        return 1
    return rv if isinstance(rv, int) else 0


def _is_usage_error(exc: Exception) -> bool:
    # typer vendors click, whose exceptions are private classes; they all carry these two.
    return hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int)


def _one_line(message: str) -> None:
    text = " ".join(str(message).split())
    sys.stderr.write(f"edgegan: error: {text}\n")


if __name__ == "__main__":
    sys.exit(main())
