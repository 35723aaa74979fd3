"""int8 / fp16 quantization of trained generators on a real task: ONNX Runtime latency and PSNR (issue 17).

Usage: python bench/quantize.py [--models NAME=PATH ...] [--size 256] [--threads 1 2] [--calib 32] [--eval 24]
                                [--min-psnr derived|DB] [--rounds 8] [--repeats 3] [--out bench/results/quantize]
                                [--calib-dir DIR] [--eval-dir DIR] [--quick]

The task is the ``cool`` colour grade (:mod:`edgegan.e2gan.editors`): facades photo -> graded photo. Default
models are the trained ones in ``bench/results/gan_compression_cool/onnx`` and ``bench/results/ugc_cool/onnx``.
For each model five variants are built with :mod:`edgegan.export.quantize` and compared with fp32:

* ``int8-pc`` / ``int8-pt``: static QDQ int8 of the Conv/ConvTranspose layers, weights per output channel /
  per tensor, calibrated on facades *train* photos (``quantize_onnx``);
* ``int8-conv``: the same with Conv layers only, in the granularity ``auto`` chose: ONNX Runtime's CPU provider
  has no int8 ConvTranspose kernel and runs a quantized one in float between Q/DQ pairs (error, no speed-up);
* ``auto``: ``quantize_gated`` (int8 with the most sensitive layers kept in float until the PSNR against fp32
  on held-out *train* photos meets ``--min-psnr``); its per-layer sensitivity is reported;
* ``fp16``: ``convert_fp16`` (float32 at the edges), if ONNX Runtime's CPU provider runs it.

Measured on facades *test* photos (evaluation only; nothing is chosen on them), resized to ``--size`` px with
PIL bicubic: mean PSNR against the fp32 model's output and against the target (the grade of the resized photo).
Latency: median ONNX Runtime CPU time at batch 1, all variants of one model timed round-robin
(``onnx_latency_interleaved``) at each ``--threads`` count, so that a busy machine slows them alike; the load
average is recorded around every timing. An ONNX Runtime profile (first ``--threads`` count) of fp32, int8,
int8-conv and auto says where the time goes per operator type and per layer. The goal: int8 at least 1.5x
faster than fp32 (at every thread count) with at most 0.5 dB loss against the target.

``--min-psnr derived`` (default) sets the ``auto`` gate per model from that goal: if the int8 error is
independent of the fp32 model's error, their MSEs add, so a loss of at most 0.5 dB against the target needs
int8-vs-fp32 PSNR >= fp32-vs-target PSNR + 10*log10(1 / (10**0.05 - 1)) = +9.14 dB (fp32-vs-target measured on
the held-out train photos). A fixed gate (e.g. ``quantize_gated``'s 35 dB) would mean a different loss for
every model. Writes ``results.json`` and ``report.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from edgegan.data.shared import shared_data
from edgegan.e2gan.editors import classical_editor
from edgegan.export.quantize import ALL_QUANT_OPS, convert_fp16, psnr, quantize_gated, quantize_onnx
from edgegan.fileio import atomic_write_json, atomic_write_text
from edgegan.profile import machine_info, machine_line
from edgegan.profile.latency import onnx_feed, onnx_latency_interleaved, onnx_session

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = {
    "teacher": "bench/results/gan_compression_cool/onnx/teacher.onnx",
    "compressed": "bench/results/gan_compression_cool/onnx/compressed.onnx",
    "scratch": "bench/results/gan_compression_cool/onnx/scratch.onnx",
    "ugc_f100": "bench/results/ugc_cool/onnx/f100_ugc.onnx",
    "ugc_f025": "bench/results/ugc_cool/onnx/f025_ugc.onnx",
}
EDITOR = "cool"
VARIANTS = ("fp32", "int8-pc", "int8-pt", "int8-conv", "auto", "fp16")
GOAL_SPEEDUP = 1.5
GOAL_LOSS_DB = 0.5
# int8-vs-fp32 PSNR margin over fp32-vs-target PSNR at which independent errors cost GOAL_LOSS_DB (9.14 dB).
GATE_MARGIN_DB = 10 * math.log10(1 / (10 ** (GOAL_LOSS_DB / 10) - 1))
QUICK = {"size": 64, "calib": 4, "eval": 2, "threads": [1], "rounds": 1, "repeats": 2, "profile_runs": 1}
DEFAULTS = {"size": 256, "calib": 32, "eval": 24, "threads": [1, 2], "rounds": 8, "repeats": 3, "profile_runs": 5}
# Operator types in an ONNX Runtime profile, grouped by what they cost in a quantized model.
INT8_KERNELS = {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm", "QLinearConvTranspose"}
QUANT_LAYOUT = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "Transpose", "ReorderInput"}
QUANT_LAYOUT |= {"ReorderOutput"}
FLOAT_LAYERS = {"Conv", "FusedConv", "ConvTranspose", "MatMul", "Gemm", "FusedMatMul", "NhwcFusedConv"}


# ---------------------------------------------------------------------------------------------- data


def _numeric(path: Path) -> tuple[int, str]:
    return (int(path.stem), "") if path.stem.isdigit() else (1 << 30, path.stem)


def load_photos(folder: Path, n: int, size: int) -> list[np.ndarray]:
    """The first ``n`` images of ``folder`` (numeric order) as uint8 RGB [size, size, 3], PIL bicubic."""
    paths = sorted((p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")), key=_numeric)
    if len(paths) < n:
        raise SystemExit(f"{folder} has {len(paths)} images, {n} asked for")
    photos = []
    for p in paths[:n]:
        with Image.open(p) as im:
            photos.append(np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)))
    return photos


def to_model(image: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] -> float32 [1, 3, H, W] in [-1, 1], the models' input (and output) convention."""
    return np.ascontiguousarray((image.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)[None])


def targets_for(photos: Sequence[np.ndarray]) -> list[np.ndarray]:
    editor = classical_editor(EDITOR)
    return [to_model(editor(p, editor.prompt)) for p in photos]


def _outputs(path: Path, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    sess = onnx_session(path, threads=None, spin=False)
    # Clipped as a deployment would before writing an image (the models end in a Clip already).
    return [np.clip(sess.run(None, onnx_feed(sess, x))[0], -1.0, 1.0) for x in inputs]


def mean_psnr(outputs: Sequence[np.ndarray], references: Sequence[np.ndarray]) -> float:
    """Mean per-image PSNR in dB on [-1, 1] images (inf when every image matches exactly)."""
    return float(np.mean([psnr(o, r) for o, r in zip(outputs, references, strict=True)]))


def _finite(x: float | None, digits: int = 3) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


# ------------------------------------------------------------------------------------------ profile


def op_profile(path: Path, x: np.ndarray, layers: Sequence[str], *, threads: int = 1, runs: int = 3) -> dict[str, Any]:
    """Milliseconds per run of each operator type and of each of ``layers`` from ONNX Runtime's profiler
    (the first run, which allocates, is left out). A layer's time is that of the profiled nodes whose name
    starts with its name (its kernel and, when quantized, its output DequantizeLinear)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.log_severity_level = 3
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        feed = onnx_feed(sess, x)
        for _ in range(runs + 1):
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    windows = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[1:]
    by_op: dict[str, float] = defaultdict(float)
    by_layer: dict[str, float] = defaultdict(float)
    # Longest name first, so that "Conv_1" is not counted under "Conv".
    ordered = sorted(layers, key=len, reverse=True)
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        if not any(a <= e["ts"] <= b for a, b in windows):
            continue
        ms = e["dur"] / 1000.0 / len(windows)
        by_op[e["args"]["op_name"]] += ms
        node = e["name"].removesuffix("_kernel_time")
        layer = next((n for n in ordered if node == n or node.startswith(n + "_")), None)
        if layer is not None:
            by_layer[layer] += ms
    total = sum(by_op.values())
    return {
        "threads": threads,
        "runs": len(windows),
        "total_ms": round(total, 3),
        "by_op": {k: round(v, 3) for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])},
        "by_layer": {n: round(by_layer.get(n, 0.0), 3) for n in layers},
    }


def op_groups(by_op: dict[str, float]) -> dict[str, float]:
    """Profile time in four groups: int8 kernels, quantize/layout, float conv layers, other float ops."""
    groups = {"int8 kernels": 0.0, "quantize/layout": 0.0, "float conv": 0.0, "other float": 0.0}
    for op, ms in by_op.items():
        key = (
            "int8 kernels"
            if op in INT8_KERNELS
            else "quantize/layout"
            if op in QUANT_LAYOUT
            else "float conv"
            if op in FLOAT_LAYERS
            else "other float"
        )
        groups[key] += ms
    return {k: round(v, 3) for k, v in groups.items()}


# ------------------------------------------------------------------------------------------- models


def build_variants(
    fp32: Path,
    folder: Path,
    calib: list[np.ndarray],
    held: list[np.ndarray],
    gate: float | None,
    on: str,
) -> tuple[dict[str, Path], dict[str, str], Any]:
    """Every variant's file in ``folder``, the variants that could not be built (with why), and the
    ``auto`` QuantReport."""
    paths: dict[str, Path] = {"fp32": fp32}
    failed: dict[str, str] = {}
    for name, per_channel in (("int8-pc", True), ("int8-pt", False)):
        paths[name] = quantize_onnx(
            fp32,
            folder / f"{name}.onnx",
            mode="static",
            calibration=calib,
            per_channel=per_channel,
            op_types=ALL_QUANT_OPS,
        )
    # force: the auto model is measured even where the gate cannot be met (the report says so).
    auto = quantize_gated(
        fp32,
        folder / "auto.onnx",
        mode="auto",
        calibration=calib,
        held_out=held,
        min_psnr=gate,
        op_types=ALL_QUANT_OPS,  # as the committed table (edgegan's default now leaves ConvTranspose float)
        force=True,
        threads=1,
        latency_rounds=1,
        measure_on=on,
    )
    paths["auto"] = folder / "auto.onnx"
    paths["int8-conv"] = quantize_onnx(
        fp32,
        folder / "int8-conv.onnx",
        mode="static",
        calibration=calib,
        per_channel=bool(auto.per_channel),
        op_types=("Conv",),
    )
    try:
        paths["fp16"] = convert_fp16(fp32, folder / "fp16.onnx")
        onnx_session(paths["fp16"], threads=1)  # ONNX Runtime may refuse it at load time
    except Exception as exc:  # report it in the table rather than end the benchmark
        paths.pop("fp16", None)
        failed["fp16"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return paths, failed, auto


def _loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def time_variants(
    paths: dict[str, Path], x: np.ndarray, threads: Sequence[int], rounds: int, repeats: int
) -> tuple[dict[str, dict[str, float]], list[dict[str, Any]]]:
    """Median ms per variant and thread count (``{variant: {"1": ms}}``) and the load average around each."""
    latency: dict[str, dict[str, float]] = defaultdict(dict)
    loads = []
    for t in threads:
        before = _loadavg()
        timings = onnx_latency_interleaved(paths, x, threads=t, rounds=rounds, repeats=repeats)
        loads.append({"threads": t, "before": before, "after": _loadavg()})
        for name, timing in timings.items():
            latency[name][str(t)] = round(timing.median_ms, 3)
    return dict(latency), loads


def bench_model(
    name: str,
    fp32: Path,
    data: dict[str, Any],
    args: argparse.Namespace,
    console: Console,
) -> dict[str, Any]:
    """Build, evaluate, time and profile every variant of one model."""
    t0 = time.perf_counter()
    calib, held = data["calib"], data["held"]
    fp32_held = _outputs(fp32, held)
    fp32_vs_target_train = mean_psnr(fp32_held, data["held_targets"])
    gate = fp32_vs_target_train + GATE_MARGIN_DB if args.min_psnr == "derived" else float(args.min_psnr)
    with tempfile.TemporaryDirectory() as tmp:
        console.log(f"{name}: quantizing (auto gate {gate:.2f} dB vs fp32 on {len(held)} held-out train photos)")
        paths, failed, auto = build_variants(
            fp32, Path(tmp), calib, held, gate, f"{len(held)} held-out facades train photos"
        )
        console.log(f"{name}: evaluating on {len(data['eval'])} test photos")
        reference = _outputs(fp32, data["eval"])
        rows: dict[str, dict[str, Any]] = {}
        for v in VARIANTS:
            if v in failed:
                rows[v] = {"error": failed[v]}
                continue
            out = reference if v == "fp32" else _outputs(paths[v], data["eval"])
            vs_fp32 = mean_psnr(out, reference)
            rows[v] = {
                "bytes": paths[v].stat().st_size,
                "psnr_vs_fp32_db": _finite(vs_fp32),  # null: identical outputs
                "psnr_vs_target_db": _finite(mean_psnr(out, data["eval_targets"])),
            }
        console.log(f"{name}: timing {len(paths)} variants interleaved at threads {args.threads}")
        latency, loads = time_variants(paths, data["eval"][0], args.threads, args.rounds, args.repeats)
        for v, ms in latency.items():
            rows[v]["latency_ms"] = ms
            rows[v]["speedup"] = {t: round(latency["fp32"][t] / m, 3) for t, m in ms.items()}
        int8 = "int8-pc" if auto.per_channel else "int8-pt"
        profile_threads = args.threads[0]
        console.log(f"{name}: ONNX Runtime profile of fp32, {int8}, int8-conv and auto ({profile_threads} thread(s))")
        profiles = {
            v: op_profile(paths[v], data["eval"][0], auto.quantizable, threads=profile_threads, runs=args.profile_runs)
            for v in ("fp32", int8, "int8-conv", "auto")
        }
    for p in profiles.values():
        p["groups"] = op_groups(p["by_op"])
    result = {
        "path": str(fp32),
        "variants": rows,
        "int8": int8,
        "gate_db": round(gate, 3),
        "fp32_vs_target_train_db": _finite(fp32_vs_target_train),
        "auto": {
            "passed": auto.passed,
            "per_channel": auto.per_channel,
            "per_channel_vs_tensor_db": auto.per_channel_vs_tensor_db,
            "psnr_vs_fp32_held_db": _finite(auto.psnr_db_median),
            "kept_float": auto.kept_float,
            "quantizable": len(auto.quantizable),
            "sensitivity": auto.sensitivity,
            "steps": auto.steps,
            "on": auto.on,
        },
        "profile": profiles,
        "loadavg": loads,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    result["goal"] = goal(result, args.threads)
    return result


# ------------------------------------------------------------------------------------------ verdict


def _short(layer: str) -> str:
    # Export names are module paths ("/model/blocks.0/conv_block/conv_block.1/depthwise/Conv").
    return layer.removeprefix("/model/").removesuffix("/Conv").removesuffix("/ConvTranspose") or layer


def _meets(row: dict[str, Any], fp32: dict[str, Any], threads: Sequence[int]) -> tuple[bool, float | None]:
    if "error" in row or row.get("psnr_vs_target_db") is None or fp32.get("psnr_vs_target_db") is None:
        return False, None
    loss = fp32["psnr_vs_target_db"] - row["psnr_vs_target_db"]
    fast = all(row["speedup"][str(t)] >= GOAL_SPEEDUP for t in threads)
    return fast and loss <= GOAL_LOSS_DB, loss


def goal(r: dict[str, Any], threads: Sequence[int]) -> dict[str, Any]:
    """Whether int8 (and auto) meet the goal, and a sentence on what prevents it."""
    rows, int8 = r["variants"], r["int8"]
    holds, loss = _meets(rows[int8], rows["fp32"], threads)
    auto_holds, auto_loss = _meets(rows["auto"], rows["fp32"], threads)
    conv_holds, conv_loss = _meets(rows["int8-conv"], rows["fp32"], threads)
    speed = " / ".join(f"{rows[int8]['speedup'][str(t)]:.2f}x at {t} thr" for t in threads)
    pc = "per-channel" if int8 == "int8-pc" else "per-tensor"
    parts = [
        f"goal {'holds' if holds else 'does not hold'}: int8 ({pc} weights, chosen on train) is {speed} vs fp32 "
        f"and loses {loss:.2f} dB against the target ({rows[int8]['psnr_vs_fp32_db']:.1f} dB from fp32)."
    ]
    slow = not all(rows[int8]["speedup"][str(t)] >= GOAL_SPEEDUP for t in threads)
    if slow:
        f32, q8 = r["profile"]["fp32"], r["profile"][int8]
        g32, g8 = f32["groups"], q8["groups"]
        worse = sorted(
            ((n, f32["by_layer"].get(n, 0.0), ms) for n, ms in q8["by_layer"].items()),
            key=lambda t: t[1] - t[2],
        )
        worse = [w for w in worse if w[2] > w[1]][:3]
        float_ops = {k: v for k, v in q8["by_op"].items() if k not in INT8_KERNELS and k not in QUANT_LAYOUT}
        top_float = ", ".join(f"{k} {v:.1f}" for k, v in list(float_ops.items())[:3])
        parts.append(
            f"Speed ({f32['threads']}-thread ORT profile, ms per run): fp32 {f32['total_ms']:.1f} "
            f"(float conv {g32['float conv']:.1f}, reorder {g32['quantize/layout']:.1f}, "
            f"other {g32['other float']:.1f}); "
            f"int8 {q8['total_ms']:.1f} = int8 convs {g8['int8 kernels']:.1f} + quantize/dequantize/transpose "
            f"{g8['quantize/layout']:.1f} + float ops {g8['float conv'] + g8['other float']:.1f} ({top_float})."
        )
        if worse:
            parts.append(
                "Layers slower in int8 than in fp32: "
                + ", ".join(f"{_short(n)} {a:.2f}->{b:.2f} ms" for n, a, b in worse)
                + "."
            )
    if loss is not None and loss > GOAL_LOSS_DB:
        top = ", ".join(f"{_short(s['node'])} ({s['gain_db']:+.2f} dB)" for s in r["auto"]["sensitivity"][:3])
        parts.append(f"Accuracy: most sensitive layers (PSNR gained vs fp32 when kept float, train held-out): {top}.")
    conv_speed = " / ".join(f"{rows['int8-conv']['speedup'][str(t)]:.2f}x" for t in threads)
    parts.append(
        f"int8-conv (ConvTranspose left float): {conv_speed}, {conv_loss:.2f} dB loss "
        f"-> goal {'holds' if conv_holds else 'does not hold'}."
    )
    a = r["auto"]
    a_speed = " / ".join(f"{rows['auto']['speedup'][str(t)]:.2f}x" for t in threads)
    parts.append(
        f"auto (gate {r['gate_db']:.1f} dB vs fp32, {'met' if a['passed'] else 'missed'} on train held-out) keeps "
        f"{len(a['kept_float'])} of {a['quantizable']} layers in float"
        + (f" ({', '.join(_short(n) for n in a['kept_float'][:4])}{', ...' if len(a['kept_float']) > 4 else ''})"
           if a["kept_float"] else "")
        + f": {a_speed}, {auto_loss:.2f} dB loss -> goal {'holds' if auto_holds else 'does not hold'}."
    )  # fmt: skip
    return {
        "holds": holds,
        "int8_loss_db": _finite(loss),
        "int8_conv_holds": conv_holds,
        "int8_conv_loss_db": _finite(conv_loss),
        "auto_holds": auto_holds,
        "auto_loss_db": _finite(auto_loss),
        "sentence": " ".join(parts),
    }


# ------------------------------------------------------------------------------------------- report


def _fmt_db(row: dict[str, Any], key: str) -> str:
    if "error" in row:
        return "-"
    v = row.get(key)
    return "inf" if v is None else f"{v:.2f}"


def table_rows(results: dict[str, Any], threads: Sequence[int]) -> list[list[str]]:
    lines = []
    for name, r in results["models"].items():
        for v in VARIANTS:
            row = r["variants"][v]
            label = f"{v} *" if v == r["int8"] else v
            if "error" in row:
                lines.append([name, label, *["failed"] * (2 * len(threads)), "-", "-", "-"])
                continue
            ms = [f"{row['latency_ms'][str(t)]:.1f}" for t in threads]
            up = [f"{row['speedup'][str(t)]:.2f}x" for t in threads]
            size = f"{row['bytes'] / 1e6:.2f} MB"
            lines.append(
                [name, label, *ms, *up, _fmt_db(row, "psnr_vs_fp32_db"), _fmt_db(row, "psnr_vs_target_db"), size]
            )
    return lines


def columns(threads: Sequence[int]) -> list[str]:
    return [
        "model",
        "variant",
        *[f"ms {t} thr" for t in threads],
        *[f"speed-up {t} thr" for t in threads],
        "PSNR vs fp32",
        "PSNR vs target",
        "size",
    ]


def _noise_note(results: dict[str, Any]) -> list[str]:
    """Where auto kept no layer in float it is the chosen int8 model again: how far apart their timings are
    measures the timing noise of this run."""
    same = {n: r for n, r in results["models"].items() if not r["auto"]["kept_float"]}
    if not same:
        return []
    spread = {
        t: max(
            abs(r["variants"]["auto"]["latency_ms"][t] / r["variants"][r["int8"]]["latency_ms"][t] - 1)
            for r in same.values()
        )
        for t in map(str, results["settings"]["threads"])
    }
    where = ", ".join(f"{100 * s:.0f}% at {t} thr" for t, s in spread.items())
    return [
        f"timing noise: auto kept no layer in float for {', '.join(same)}, so its model is the int8 one timed again; "
        f"the two rows differ by up to {where}.",
        "",
    ]


def markdown(results: dict[str, Any]) -> str:
    s, threads = results["settings"], results["settings"]["threads"]
    cols = columns(threads)
    lines = [
        "# int8 / fp16 quantization of trained generators (facades photo -> cool grade)",
        "",
        f"ONNX Runtime CPU, batch 1, {s['size']}x{s['size']}; latency = median of {s['rounds']} rounds x "
        f"{s['repeats']} runs, all variants of a model timed round-robin. PSNR (dB, mean over {s['eval']} facades "
        f"test photos) against the fp32 model's output and against the target (the `cool` grade of the photo). "
        f"int8: static QDQ of {'/'.join(ALL_QUANT_OPS)} layers, calibrated on {s['calib_used']} facades train photos; "
        f"`*` marks the weight granularity quantize_gated chose on {s['held']} held-out train photos (the one the "
        f"goal is judged on). int8-conv: Conv layers only, that granularity (ONNX Runtime's CPU provider runs a "
        f"quantized ConvTranspose in float between Q/DQ pairs). auto: quantize_gated with the gate in each "
        f"model's sentence below.",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "|".join("---" for _ in cols) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(results, threads)]
    load = results["loadavg"]
    lines += [
        "",
        f"machine: {results['machine_line']}",
        "",
        f"load average (1/5/15 min): {load['start']} at the start, {load['end']} at the end; during timing "
        f"(1-min) {load['timing_min']:.2f} to {load['timing_max']:.2f}. With {results['machine']['cores']} cores, "
        "a load above the thread count means the timings are contended; the interleaved ratios are the robust "
        "numbers.",
        "",
        *_noise_note(results),
        f"gate: {s['min_psnr']} "
        + (
            f"(int8-vs-fp32 PSNR >= fp32-vs-target PSNR on held-out train photos + {GATE_MARGIN_DB:.2f} dB: "
            f"independent errors then cost at most {GOAL_LOSS_DB} dB against the target)"
            if s["min_psnr"] == "derived"
            else "dB"
        ),
        "",
        f"## Goal: int8 >= {GOAL_SPEEDUP}x faster than fp32 with <= {GOAL_LOSS_DB} dB loss against the target",
        "",
    ]
    for name, r in results["models"].items():
        lines += [f"**{name}**: {r['goal']['sentence']}", ""]
    lines += ["## Where the time goes (ONNX Runtime profile, ms per run)", ""]
    groups = ["int8 kernels", "quantize/layout", "float conv", "other float"]
    lines += ["| model | variant | total | " + " | ".join(groups) + " | top ops |", "|---" * (4 + len(groups)) + "|"]
    for name, r in results["models"].items():
        for v, p in r["profile"].items():
            top = ", ".join(f"{k} {ms:.1f}" for k, ms in list(p["by_op"].items())[:4])
            cells = [f"{p['groups'][g]:.1f}" for g in groups]
            lines.append(f"| {name} | {v} | {p['total_ms']:.1f} | " + " | ".join(cells) + f" | {top} |")
    lines += ["", "## auto: most sensitive layers (PSNR vs fp32 gained when only that layer is float)", ""]
    for name, r in results["models"].items():
        a = r["auto"]
        top = ", ".join(f"{_short(x['node'])} {x['gain_db']:+.2f}" for x in a["sensitivity"][:5])
        lines.append(
            f"- {name}: all-int8 {a['steps'][0]['psnr_db']} dB vs fp32 ({a['on']}); per-channel vs per-tensor "
            f"{a['per_channel_vs_tensor_db']}; top: {top}; kept in float: {len(a['kept_float'])}/{a['quantizable']}"
        )
    lines += [
        "",
        f"Command: `{results['command']}`; {results['wall_s']:.0f} s. Test photos were used for this report only.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- main


def _parse_models(items: Sequence[str] | None) -> dict[str, Path]:
    if not items:
        found = {n: ROOT / p for n, p in DEFAULT_MODELS.items() if (ROOT / p).is_file()}
        if not found:
            raise SystemExit("none of the default models exists: pass --models NAME=PATH (train them with bench/)")
        return found
    models = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not Path(path).is_file():
            raise SystemExit(f"--models takes NAME=PATH with an existing file, got {item!r}")
        models[name] = Path(path)
    return models


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--models", nargs="+", metavar="NAME=PATH", help="fp32 ONNX models (default: the trained five)")
    ap.add_argument("--size", type=int, help="evaluation and timing size in px (default 256)")
    ap.add_argument("--threads", type=int, nargs="+", help="ONNX Runtime intra-op threads to time (default 1 2)")
    ap.add_argument("--calib", type=int, help="facades train photos: 3/4 calibrate, 1/4 gate auto (default 32)")
    ap.add_argument("--eval", type=int, help="facades test photos to measure PSNR on (default 24)")
    ap.add_argument("--min-psnr", default="derived", help="auto's gate in dB vs fp32, or 'derived' (see above)")
    ap.add_argument("--rounds", type=int, help="interleaved timing rounds (default 8)")
    ap.add_argument("--repeats", type=int, help="runs per model per round (default 3)")
    ap.add_argument("--profile-runs", type=int, help="profiled runs after a warm-up one (default 5)")
    ap.add_argument("--calib-dir", type=Path, help="calibration photos (default facades A/train)")
    ap.add_argument("--eval-dir", type=Path, help="evaluation photos (default facades A/test)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/quantize"))
    ap.add_argument("--quick", action="store_true", help="smoke run: 64 px, 4 calib, 2 eval, 1 thread, few runs")
    args = ap.parse_args(argv)
    for key, default in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:  # an explicit option wins over --quick
            setattr(args, key, default)
    if args.min_psnr != "derived":
        try:
            float(args.min_psnr)
        except ValueError:
            ap.error(f"--min-psnr takes a number of dB or 'derived', got {args.min_psnr!r}")
    if args.calib < 2:
        ap.error("--calib needs at least 2 photos (calibration and a held-out one)")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    t0 = time.perf_counter()
    console = Console(width=max(140, Console().width))  # a wide table: do not wrap at 80
    models = _parse_models(args.models)
    facades = shared_data("facades")
    calib_dir = args.calib_dir or (facades / "A" / "train" if facades else None)  # A = photos, B = label maps
    eval_dir = args.eval_dir or (facades / "A" / "test" if facades else None)
    if calib_dir is None or eval_dir is None:
        raise SystemExit("no facades photos: pass --calib-dir and --eval-dir, or provide ../shared/data/facades")
    train = load_photos(calib_dir, args.calib, args.size)
    test = load_photos(eval_dir, args.eval, args.size)
    # Every 4th train photo gates auto and picks the weight granularity; with fewer than 4, the last one.
    every = 4 if len(train) >= 4 else len(train)
    calib_idx = [i for i in range(len(train)) if i % every != every - 1]
    held_idx = [i for i in range(len(train)) if i % every == every - 1]
    data = {
        "calib": [to_model(train[i]) for i in calib_idx],
        "held": [to_model(train[i]) for i in held_idx],
        "held_targets": targets_for([train[i] for i in held_idx]),
        "eval": [to_model(p) for p in test],
        "eval_targets": targets_for(test),
    }
    start_load = _loadavg()
    results: dict[str, Any] = {
        "settings": {
            "size": args.size,
            "threads": args.threads,
            "calib": args.calib,
            "calib_used": len(calib_idx),
            "held": len(held_idx),
            "eval": args.eval,
            "min_psnr": args.min_psnr,
            "rounds": args.rounds,
            "repeats": args.repeats,
            "calib_dir": str(calib_dir),
            "eval_dir": str(eval_dir),
            "editor": EDITOR,
            "goal": {"speedup": GOAL_SPEEDUP, "loss_db": GOAL_LOSS_DB},
        },
        "models": {},
    }
    for name, path in models.items():
        results["models"][name] = bench_model(name, path, data, args, console)
    timing_loads = [x["before"][0] for r in results["models"].values() for x in r["loadavg"]]
    timing_loads += [x["after"][0] for r in results["models"].values() for x in r["loadavg"]]
    results["loadavg"] = {
        "start": start_load,
        "end": _loadavg(),
        "timing_min": min(timing_loads),
        "timing_max": max(timing_loads),
    }
    results["machine"] = machine_info()
    results["machine"]["loadavg"] = results["loadavg"]
    results["machine_line"] = machine_line(results["machine"])
    results["command"] = "python bench/quantize.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results["wall_s"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(args.out / "results.json", results)
    atomic_write_text(args.out / "report.md", markdown(results))

    table = Table(title=f"quantization at {args.size}x{args.size}, batch 1 (* = int8 granularity chosen on train)")
    for col in columns(args.threads):
        table.add_column(col, justify="left" if col in ("model", "variant") else "right")
    previous = None
    for row in table_rows(results, args.threads):
        if previous is not None and row[0] != previous:
            table.add_section()
        table.add_row(*row)
        previous = row[0]
    console.print(table)
    for name, r in results["models"].items():
        console.print(f"[bold]{name}[/bold]: {r['goal']['sentence']}")
    console.print(f"machine: {results['machine_line']}; load average {results['loadavg']}")
    console.print(f"wrote {args.out / 'results.json'} and {args.out / 'report.md'}")
    return results


if __name__ == "__main__":
    main()
