"""Latency of the GAN Compression teacher and students at batch 1, PyTorch eager vs ONNX Runtime.

Usage: python bench/latency.py [--size 256] [--repeats 20] [--threads N] [--out bench/results/latency.json]

All models are timed in one run on one machine; the table reports medians and the
teacher/model ratios, and the JSON carries every timing plus the machine description.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from edgegan.export.onnx import export_onnx
from edgegan.fileio import atomic_write_json
from edgegan.profile import machine_info, machine_line, onnx_latency, profile_macs, torch_latency
from edgegan.registry import build

MODELS = {
    "teacher resnet ngf64": ("resnet_generator", {"ngf": 64, "n_blocks": 9}),
    "mobile resnet ngf64": ("mobile_resnet_generator", {"ngf": 64}),
    "student 16_16_32_16_32_32_16_16": ("mobile_resnet_generator", {"channels": "16_16_32_16_32_32_16_16"}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("bench/results/latency.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console(width=max(120, Console().width))  # a table, not a paragraph: do not wrap at 80
    torch.manual_seed(0)
    x = torch.randn(1, 3, args.size, args.size)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, (arch, opts) in MODELS.items():
            console.log(f"{label}: export + parity")
            model = build(arch, **opts).eval()
            cost = profile_macs(model, x)
            path = Path(tmp) / "m.onnx"
            exported = export_onnx(model, path, example=x)
            console.log(f"{label}: timing ({args.repeats} runs per backend)")
            t_torch = torch_latency(model, x, warmup=args.warmup, repeats=args.repeats)
            t_ort = onnx_latency(path, x, warmup=args.warmup, repeats=args.repeats)
            rows[label] = {
                "arch": arch,
                "options": opts,
                "params": cost.params,
                "macs": cost.macs,
                "macs_gc": cost.macs_gc,
                "max_abs_diff": exported.max_abs_diff,
                "torch": t_torch.to_dict(),
                "onnxruntime": t_ort.to_dict(),
            }
    result = {"size": args.size, "batch": 1, "models": rows, "machine": machine_info()}
    atomic_write_json(args.out, result)

    base = rows["teacher resnet ngf64"]
    table = Table(title=f"latency at {args.size}x{args.size}, batch 1 (median of {args.repeats})")
    for col in ("model", "MACs GC", "torch ms", "ORT ms", "ORT/torch", "speed-up torch", "speed-up ORT", "|torch-ORT|"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for label, r in rows.items():
        tt, to = r["torch"]["median_ms"], r["onnxruntime"]["median_ms"]
        table.add_row(
            label,
            f"{r['macs_gc'] / 1e9:.2f} G",
            f"{tt:.1f}",
            f"{to:.1f}",
            f"{to / tt:.2f}",
            f"{base['torch']['median_ms'] / tt:.1f}x",
            f"{base['onnxruntime']['median_ms'] / to:.1f}x",
            f"{r['max_abs_diff']:.1e}",
        )
    console.print(table)
    console.print(f"machine: {machine_line(result['machine'])}")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
