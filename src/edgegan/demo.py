"""``make demo``: the teacher vs compressed-student comparison on an embedded default.

Needs no data: profiles GAN Compression's horse→zebra teacher (ResNet generator, ngf 64,
9 blocks) and its published student (mobile ResNet, channels 16_16_32_16_32_32_16_16),
exports both to ONNX, checks parity, times both backends and writes ``demo.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from edgegan.export.onnx import export_onnx
from edgegan.fileio import atomic_write_json
from edgegan.profile import machine_info, machine_line, onnx_latency, profile_macs, torch_latency
from edgegan.registry import build

MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "teacher": ("resnet_generator", {"ngf": 64, "n_blocks": 9}),
    "student": ("mobile_resnet_generator", {"channels": "16_16_32_16_32_32_16_16"}),
}


def run_demo(out: Path, *, size: int = 256, repeats: int = 5, console: Console | None = None) -> dict[str, Any]:
    console = console or Console()
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    rows: dict[str, dict[str, Any]] = {}
    x = torch.randn(1, 3, size, size)
    with console.status("profiling") as status:
        for role, (arch, opts) in MODELS.items():
            model = build(arch, **opts).eval()
            status.update(f"{role}: counting MACs")
            cost = profile_macs(model, x)
            status.update(f"{role}: exporting to ONNX")
            onnx_path = out / f"{role}.onnx"
            exported = export_onnx(model, onnx_path, example=x)
            status.update(f"{role}: timing PyTorch")
            t_torch = torch_latency(model, x, warmup=2, repeats=repeats)
            status.update(f"{role}: timing ONNX Runtime")
            t_ort = onnx_latency(onnx_path, x, warmup=2, repeats=repeats)
            rows[role] = {
                "arch": arch,
                "options": opts,
                "params": cost.params,
                "macs": cost.macs,
                "macs_gc": cost.macs_gc,
                "onnx": str(onnx_path),
                "max_abs_diff": exported.max_abs_diff,
                "latency_ms": {"torch": t_torch.median_ms, "onnxruntime": t_ort.median_ms},
            }
    teacher, student = rows["teacher"], rows["student"]
    summary = {
        "size": size,
        "repeats": repeats,
        "models": rows,
        "compression": {
            "macs_gc": teacher["macs_gc"] / student["macs_gc"],
            "params": teacher["params"] / student["params"],
            "speedup_torch": teacher["latency_ms"]["torch"] / student["latency_ms"]["torch"],
            "speedup_onnxruntime": teacher["latency_ms"]["onnxruntime"] / student["latency_ms"]["onnxruntime"],
        },
        "machine": machine_info(),
    }
    atomic_write_json(out / "demo.json", summary)

    table = Table(
        title=f"GAN Compression teacher vs student at {size}x{size}",
        caption="teacher: resnet_generator ngf=64 n_blocks=9; student: mobile_resnet_generator 16_16_32_16_32_32_16_16",
    )
    for col in ("model", "params", "MACs GC", "MACs", "torch ms", "ORT ms", "|torch-ORT|"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for role, r in rows.items():
        table.add_row(
            role,
            f"{r['params'] / 1e6:.3f} M",
            f"{r['macs_gc'] / 1e9:.2f} G",
            f"{r['macs'] / 1e9:.2f} G",
            f"{r['latency_ms']['torch']:.1f}",
            f"{r['latency_ms']['onnxruntime']:.1f}",
            f"{r['max_abs_diff']:.1e}",
        )
    c = summary["compression"]
    table.add_row(
        "ratio",
        f"{c['params']:.1f}x",
        f"{c['macs_gc']:.1f}x",
        f"{teacher['macs'] / student['macs']:.1f}x",
        f"{c['speedup_torch']:.1f}x",
        f"{c['speedup_onnxruntime']:.1f}x",
        "",
    )
    console.print(table)
    console.print(f"median of {repeats} runs at batch 1 on {machine_line(summary['machine'])}")
    console.print(f"ONNX models and demo.json in {out}/")
    return summary
