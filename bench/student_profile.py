"""Where a compressed student's time goes in ONNX Runtime, per operator, before and after the export-side rewrites.

Usage: python bench/student_profile.py [--size 256] [--threads 1 2] [--rounds 8] [--quick]
                                       [--out bench/results/student_profile]

For the horse→zebra-sized pair (ResNet teacher ngf64 and the 16_16_32_16_32_32_16_16 mobile student, random
weights) and the trained colour-grade models (GAN Compression and UGC runs; teachers ngf32), each model runs as
exported ("before") and after :func:`edgegan.export.optimize.optimize_onnx` ("after"), whose outputs must
match the original within 1e-4 on [-1, 1] images. Whole-model latency is timed round-robin over every model and
variant at once (a busy machine slows them alike; the load average and the CPU time per run are recorded), per
thread count. ONNX Runtime's profiler, on runs that alternate between a model's two variants, gives each
operator's time: by op kind (dense, depthwise, pointwise 1×1 and transposed convolutions with their G MAC/s, then
padding, InstanceNorm, NCHWc reorders, ...) and by node. Last, one round-robin compares session options for the
main pair: 1 or 2 threads, graph optimisation level, spinning.

MACs: ``macs`` are true multiply-accumulates (the convention of the issue's 49.6 G vs 1.85 G), ``macs_gc``
GAN Compression's (transposed convs by output size, plus InstanceNorm elements); both are reported. A student's
ratio speed-up ÷ MAC reduction equals its G MAC/s ÷ its teacher's: 1 when it runs as efficiently as the teacher.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from rich.console import Console
from rich.table import Table

from edgegan.errors import EdgeganError
from edgegan.export.onnx import export_onnx
from edgegan.export.optimize import fold_constants, node_macs, onnx_file_parity, optimize_onnx
from edgegan.fileio import atomic_write_json, atomic_write_text
from edgegan.profile import machine_info, machine_line
from edgegan.registry import build

PARITY_LIMIT = 1e-4
TOP_NODES = 40  # slowest nodes kept per profile in results.json
ACTIVATIONS = {"Relu", "Tanh", "Clip", "Sigmoid", "LeakyRelu", "Add", "Sum"}  # ORT fuses these into a conv


@dataclass
class Model:
    label: str
    role: str  # "teacher" or "student"
    pair: str
    source: str  # an ONNX file, or "arch:<name>" built with random weights
    options: dict[str, Any] = field(default_factory=dict)


MAIN_PAIR = "horse2zebra-sized (random weights)"
MODELS = [
    Model("teacher resnet ngf64", "teacher", MAIN_PAIR, "arch:resnet_generator", {"ngf": 64, "n_blocks": 9}),
    Model(
        "student 16_16_32_16_32_32_16_16",
        "student",
        MAIN_PAIR,
        "arch:mobile_resnet_generator",
        {"channels": "16_16_32_16_32_32_16_16"},
    ),
    Model("gc_cool teacher", "teacher", "gan_compression_cool", "bench/results/gan_compression_cool/onnx/teacher.onnx"),
    Model(
        "gc_cool compressed",
        "student",
        "gan_compression_cool",
        "bench/results/gan_compression_cool/onnx/compressed.onnx",
    ),
    Model("ugc_cool f100 teacher", "teacher", "ugc_cool f100", "bench/results/ugc_cool/onnx/f100_teacher.onnx"),
    Model("ugc_cool f100 ugc", "student", "ugc_cool f100", "bench/results/ugc_cool/onnx/f100_ugc.onnx"),
    Model(
        "ugc_cool f100 gan_compression",
        "student",
        "ugc_cool f100",
        "bench/results/ugc_cool/onnx/f100_gan_compression.onnx",
    ),
]
VARIANTS = ("before", "after")


# ---------------------------------------------------------------------------------------------------------------
# sessions and timing


def session(path: str | Path, threads: int, *, spin: bool = False, level: str = "all", profile: str | None = None):
    """A CPU session; ``spin=False`` by default so that idle workers of one model never steal the cores of the
    next one in a round-robin (see :func:`edgegan.profile.latency.onnx_latency_interleaved`)."""
    levels = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = levels[level]
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if profile:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def interleaved(
    sessions: dict[str, Any], x: np.ndarray, *, rounds: int, budget_ms: float = 300.0
) -> dict[str, dict[str, float]]:
    """Median ms per session, timed round-robin: each round runs every session about ``budget_ms`` worth of
    times (a 1 s teacher once, a 50 ms student six times), every other round in reverse order. Also the median
    process CPU time per run: on one thread it counts only the time the run was on a core, so a busy machine
    barely moves it."""
    feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
    reps: dict[str, int] = {}
    for k, s in sessions.items():
        s.run(None, feeds[k])
        t0 = time.perf_counter()
        s.run(None, feeds[k])
        reps[k] = max(1, min(20, round(budget_ms / ((time.perf_counter() - t0) * 1e3))))
    times: dict[str, list[float]] = {k: [] for k in sessions}
    cpu: dict[str, list[float]] = {k: [] for k in sessions}
    order = list(sessions)
    for r in range(rounds):
        for k in order if r % 2 == 0 else order[::-1]:
            s, f = sessions[k], feeds[k]
            for _ in range(reps[k]):
                c0, t0 = time.process_time(), time.perf_counter()
                s.run(None, f)
                times[k].append((time.perf_counter() - t0) * 1e3)
                cpu[k].append((time.process_time() - c0) * 1e3)
    return {
        k: {
            "median_ms": statistics.median(v),
            "min_ms": min(v),
            "max_ms": max(v),
            "cpu_median_ms": statistics.median(cpu[k]),
            "n": len(v),
        }
        for k, v in times.items()
    }


# ---------------------------------------------------------------------------------------------------------------
# profiling


@dataclass
class MacTable:
    """Per-node MACs of one model file and how to find a profiled node among them."""

    nodes: dict[str, Any]  # node name -> NodeMacs
    producer: dict[str, tuple[str, str, str]]  # tensor -> (node name, op type, first input)

    def lookup(self, profiled: str) -> Any | None:
        if profiled in self.nodes:
            return self.nodes[profiled]
        if not profiled.endswith("_nchwc"):
            return None
        # ORT names an NCHWc conv after the tensor it writes, which after a Conv+activation fusion is the
        # activation's output: walk back to the convolution.
        tensor = profiled[: -len("_nchwc")]
        for _ in range(4):
            if tensor not in self.producer:
                return None
            name, op, first = self.producer[tensor]
            if name in self.nodes:
                return self.nodes[name]
            if op not in ACTIVATIONS:
                return None
            tensor = first
        return None


def mac_table(path: Path, size: int, original: MacTable | None = None) -> MacTable:
    proto = fold_constants(onnx.load(str(path)))
    nodes = node_macs(proto, (1, 3, size, size))
    if original is not None:
        # A phase-split convolution does the original's work (plus multiplications by zero taps): count the original.
        for name in list(nodes):
            if name.endswith("_phases") and name[: -len("_phases")] in original.nodes:
                nodes[name] = original.nodes[name[: -len("_phases")]]
    producer = {o: (n.name, n.op_type, n.input[0] if n.input else "") for n in proto.graph.node for o in n.output}
    return MacTable(nodes, producer)


def profile_ops(
    paths: dict[str, Path], x: np.ndarray, threads: int, macs: dict[str, MacTable], *, warmup: int, runs: int
) -> dict[str, dict[str, Any]]:
    """Per-op-kind and per-node median ms per run from ONNX Runtime's profiler, with G MAC/s where known, for
    several files (before and after) whose runs alternate, so that the machine's load hits them alike."""
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {
            k: session(p, threads, profile=str(Path(tmp) / f"trace{i}")) for i, (k, p) in enumerate(paths.items())
        }
        feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
        for _ in range(warmup + runs):
            for k, s in sessions.items():
                s.run(None, feeds[k])
        traces = {k: json.loads(Path(s.end_profiling()).read_text()) for k, s in sessions.items()}
    return {k: _parse_trace(events, macs[k], warmup, threads) for k, events in traces.items()}


def _parse_trace(events: list[dict[str, Any]], macs: MacTable, warmup: int, threads: int) -> dict[str, Any]:
    run_spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[warmup:]
    per_kind: list[dict[str, float]] = [defaultdict(float) for _ in run_spans]
    per_node: list[dict[str, float]] = [defaultdict(float) for _ in run_spans]
    info: dict[str, dict[str, Any]] = {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        i = next((j for j, (a, b) in enumerate(run_spans) if a <= e["ts"] <= b), None)
        if i is None:
            continue
        name = e["name"][: -len("_kernel_time")]
        op = e["args"]["op_name"]
        hit = macs.lookup(name) if op in ("Conv", "FusedConv", "ConvTranspose") else None
        kind = f"conv {hit.kind}" if hit is not None else op
        per_kind[i][kind] += e["dur"] / 1e3
        per_node[i][name] += e["dur"] / 1e3
        info[name] = {
            "op": op,
            "kind": kind,
            "macs": hit.macs if hit else 0,
            "macs_gc": hit.macs_gc if hit else 0,
            "output_shape": e["args"].get("output_type_shape"),
        }
    walls = [(b - a) / 1e3 for a, b in run_spans]
    kind_macs: dict[str, int] = defaultdict(int)
    for meta in info.values():
        kind_macs[meta["kind"]] += meta["macs"]
    kernel_ms = statistics.median(sum(r.values()) for r in per_kind)
    kinds: dict[str, dict[str, Any]] = {}
    for kind in {k for r in per_kind for k in r}:
        ms = statistics.median(r.get(kind, 0.0) for r in per_kind)
        kinds[kind] = {
            "ms": ms,
            "pct": 100.0 * ms / kernel_ms if kernel_ms else 0.0,
            "macs": kind_macs[kind],
            "gmacs_per_s": kind_macs[kind] / ms / 1e6 if kind_macs[kind] and ms else None,
        }
    nodes = []
    for name, meta in info.items():
        ms = statistics.median(r.get(name, 0.0) for r in per_node)
        g = meta["macs"] / ms / 1e6 if meta["macs"] and ms else None
        nodes.append({"name": name, **meta, "ms": ms, "gmacs_per_s": g})
    nodes.sort(key=lambda n: -n["ms"])
    return {
        "threads": threads,
        "runs": len(run_spans),
        "wall_ms": statistics.median(walls),
        "kernel_ms": kernel_ms,
        "kinds": dict(sorted(kinds.items(), key=lambda kv: -kv[1]["ms"])),
        "n_nodes": len(nodes),
        "nodes": nodes[:TOP_NODES],
    }


# ---------------------------------------------------------------------------------------------------------------
# the run


def prepare(models: list[Model], workdir: Path, size: int, console: Console) -> dict[str, dict[str, Any]]:
    """Export the random-weight models, write every model's optimised twin, check parity, count MACs."""
    rng = np.random.default_rng(0)
    checks = [rng.uniform(-1, 1, (1, 3, size, size)).astype(np.float32)]
    # another batch and shape; multiples of 4, which the residual generators need
    other = (2, 3, (size // 2 + 4) // 4 * 4, max(8, (size // 2 - 12) // 4 * 4))
    checks.append(rng.uniform(-1, 1, other).astype(np.float32))
    out: dict[str, dict[str, Any]] = {}
    for i, m in enumerate(models):
        src = workdir / f"m{i}.onnx"
        if m.source.startswith("arch:"):
            torch.manual_seed(0)
            model = build(m.source.removeprefix("arch:"), **m.options).eval()
            exported = export_onnx(model, src, size=size)
            export_diff = exported.max_abs_diff
        else:
            src = Path(m.source)
            export_diff = None
        opt = workdir / f"m{i}.opt.onnx"
        result = optimize_onnx(src, opt)
        diff = max(onnx_file_parity(src, opt, x) for x in checks)
        console.log(f"{m.label}: rewrote {result.phase_split or 'nothing'}; |after - before| = {diff:.1e}")
        if diff > PARITY_LIMIT:
            raise EdgeganError(f"{m.label}: optimised model differs by {diff:.2e} > {PARITY_LIMIT}")
        before = mac_table(src, size)
        after = mac_table(opt, size, before)
        out[m.label] = {
            "model": m,
            "paths": {"before": src, "after": opt},
            "optimize": result.to_dict() | {"path": None},
            "parity_max_abs_diff": diff,
            "export_max_abs_diff": export_diff,
            "macs": sum(n.macs for n in before.nodes.values()),
            "macs_gc": sum(n.macs_gc for n in before.nodes.values()),
            "tables": {"before": before, "after": after},
        }
    return out


def summarise(prep: dict[str, dict[str, Any]], timings: dict[int, dict[str, dict[str, float]]]) -> list[dict[str, Any]]:
    """Rows: model, variant, threads, ms, G MAC/s and, for students, speed-up, MAC reduction and their ratio."""
    rows = []
    teachers = {p["model"].pair: label for label, p in prep.items() if p["model"].role == "teacher"}
    for threads, timing in timings.items():
        for label, p in prep.items():
            t_label = teachers[p["model"].pair]
            t = prep[t_label]
            for v in VARIANTS:
                ms = timing[f"{label}|{v}"]["median_ms"]
                t_ms = timing[f"{t_label}|{v}"]["median_ms"]
                cpu_ms = timing[f"{label}|{v}"]["cpu_median_ms"]
                t_cpu_ms = timing[f"{t_label}|{v}"]["cpu_median_ms"]
                row = {
                    "model": label,
                    "pair": p["model"].pair,
                    "role": p["model"].role,
                    "variant": v,
                    "threads": threads,
                    "ms": ms,
                    "gmacs_per_s": p["macs"] / ms / 1e6,
                    "gmacs_gc_per_s": p["macs_gc"] / ms / 1e6,
                    "cpu_ms": cpu_ms,
                    "teacher": t_label,
                    "teacher_ms": t_ms,
                }
                if p["model"].role == "student":
                    speedup = t_ms / ms
                    row |= {
                        "speedup": speedup,
                        "mac_reduction": t["macs"] / p["macs"],
                        "mac_reduction_gc": t["macs_gc"] / p["macs_gc"],
                        "ratio": speedup / (t["macs"] / p["macs"]),
                        "ratio_gc": speedup / (t["macs_gc"] / p["macs_gc"]),
                        # the same from CPU time: robust to a busy machine on one thread, not a latency on two
                        "ratio_cpu": t_cpu_ms / cpu_ms / (t["macs"] / p["macs"]),
                    }
                rows.append(row)
    return rows


def experiments(prep: dict[str, dict[str, Any]], x: np.ndarray, rounds: int) -> list[dict[str, Any]]:
    """Session-side choices (threads, graph optimisation level, spinning) for the main pair, all timed in one
    round-robin so that they compare under the same load."""
    label = next(k for k, p in prep.items() if p["model"].pair == MAIN_PAIR and p["model"].role == "student")
    teacher = next(k for k, p in prep.items() if p["model"].pair == MAIN_PAIR and p["model"].role == "teacher")
    s, t = prep[label]["paths"], prep[teacher]["paths"]
    configs: dict[str, tuple[Path, int, dict[str, Any]]] = {
        "student before, 1 thread": (s["before"], 1, {}),
        "student before, 2 threads": (s["before"], 2, {}),
        "student before, 2 threads, spinning": (s["before"], 2, {"spin": True}),
        "student before, 1 thread, EXTENDED (no NCHWc)": (s["before"], 1, {"level": "extended"}),
        "student before, 1 thread, BASIC": (s["before"], 1, {"level": "basic"}),
        "student after, 1 thread": (s["after"], 1, {}),
        "student after, 2 threads": (s["after"], 2, {}),
        "student after, 2 threads, spinning": (s["after"], 2, {"spin": True}),
        "teacher before, 1 thread": (t["before"], 1, {}),
        "teacher before, 2 threads": (t["before"], 2, {}),
    }
    sessions = {k: session(path, n, **kw) for k, (path, n, kw) in configs.items()}
    load = os.getloadavg()
    res = interleaved(sessions, x, rounds=rounds, budget_ms=200.0)
    loads = [load, os.getloadavg()]
    base = {
        "student": res["student before, 1 thread"]["median_ms"],
        "teacher": res["teacher before, 1 thread"]["median_ms"],
    }
    return [
        {"config": k, "threads": configs[k][1], **r, "vs_1_thread_before": base[k.split()[0]] / r["median_ms"]}
        | ({"loadavg": loads} if i == 0 else {})
        for i, (k, r) in enumerate(res.items())
    ]


def kinds_table(prof: dict[tuple[str, int], Any], keys: list[tuple[str, int]]) -> list[str]:
    """Markdown rows: op kind, then ms / % / G MAC/s for each (variant, threads)."""
    kinds = sorted(
        {k for key in keys for k in prof[key]["kinds"]},
        key=lambda k: -max(prof[key]["kinds"].get(k, {"ms": 0})["ms"] for key in keys),
    )
    head = "| op kind | " + " | ".join(f"{v} {t}t ms (%) | G MAC/s" for v, t in keys) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(keys))]
    for k in kinds:
        cells = []
        for key in keys:
            d = prof[key]["kinds"].get(k)
            if d is None:
                cells += ["–", ""]
                continue
            g = f"{d['gmacs_per_s']:.1f}" if d["gmacs_per_s"] else ""
            cells += [f"{d['ms']:.2f} ({d['pct']:.0f}%)", g]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    totals = []
    for key in keys:
        totals += [f"{prof[key]['kernel_ms']:.1f} (wall {prof[key]['wall_ms']:.1f})", ""]
    lines.append("| **all kernels** | " + " | ".join(totals) + " |")
    return lines


def write_report(result: dict[str, Any], path: Path) -> None:
    lines = [
        "# Where a compressed student's time goes in ONNX Runtime",
        "",
        f"Generated by `bench/student_profile.py` at {result['size']}×{result['size']}, batch 1, "
        f"threads {result['threads']}. Machine: {result['machine_line']}.",
        "",
        "MACs: **plain** = true multiply-accumulates (the issue's 49.6 G teacher vs 1.85 G student); **GC** = GAN "
        "Compression's convention (transposed convs by output size, plus InstanceNorm elements). "
        "ratio = speed-up ÷ MAC reduction = student G MAC/s ÷ teacher G MAC/s (goal: ≥ 0.5). "
        "before = the file as exported; after = `optimize_onnx` (constant folding, and the output conv split into its "
        "four output phases). "
        "Latency: medians of round-robin timing of all models and variants together (ALL graph optimisation, "
        "no spinning). CPU ms: process CPU time per run; on one thread it leaves out the time other programs held "
        "the core, so its ratio is the check on a busy machine (on two threads it sums both threads' work).",
        "",
        "## Whole models",
        "",
        "| model | thr | variant | ms | CPU ms | G MAC/s | G MAC/s GC | speed-up | MAC red. | ratio | MAC red. GC "
        "| ratio GC | ratio (CPU time) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["summary"]:
        s = r["role"] == "student"
        lines.append(
            f"| {r['model']} | {r['threads']} | {r['variant']} | {r['ms']:.1f} | {r['cpu_ms']:.1f} | "
            f"{r['gmacs_per_s']:.1f} | {r['gmacs_gc_per_s']:.1f} | "
            + (
                f"{r['speedup']:.1f}× | {r['mac_reduction']:.1f}× | **{r['ratio']:.2f}** | "
                f"{r['mac_reduction_gc']:.1f}× | {r['ratio_gc']:.2f} | {r['ratio_cpu']:.2f} |"
                if s
                else "| | | | | |"
            )
        )
    lines += ["", "Load average (1, 5, 15 min) before/after each timing block:", ""]
    for n, la in result["loadavg"].items():
        lines.append(
            f"- {n} thread(s): {', '.join(f'{v:.2f}' for v in la[0])} → {', '.join(f'{v:.2f}' for v in la[1])}"
        )
    lines += ["", "## Per operator (ONNX Runtime profiler; median ms per run)", ""]
    prof = result["profiles"]
    for label in result["models"]:
        keys = [(v, t) for t in result["threads"] for v in VARIANTS]
        lines += [f"### {label}", ""]
        lines += kinds_table({(v, t): prof[label][v][str(t)] for v, t in keys}, keys)
        lines.append("")
        top = prof[label]["before"][str(result["threads"][0])]["nodes"][:8]
        lines += [f"Slowest nodes, before, {result['threads'][0]} thread(s):", ""]
        lines += ["| node | kind | ms | G MAC/s |", "|---|---|---|---|"]
        for n in top:
            g = f"{n['gmacs_per_s']:.1f}" if n["gmacs_per_s"] else ""
            lines.append(f"| `{n['name']}` | {n['kind']} | {n['ms']:.2f} | {g} |")
        lines.append("")
    if result["experiments"]:
        la = result["experiments"][0]["loadavg"]
        lines += [
            "## Session options, main pair (one round-robin; speed relative to the same model, before, 1 thread)",
            "",
            f"Load average {', '.join(f'{v:.2f}' for v in la[0])} → {', '.join(f'{v:.2f}' for v in la[1])}.",
            "",
            "| config | ms | CPU ms | speed |",
            "|---|---|---|---|",
        ]
        for e in result["experiments"]:
            lines.append(
                f"| {e['config']} | {e['median_ms']:.1f} | {e['cpu_median_ms']:.1f} | {e['vs_1_thread_before']:.2f}× |"
            )
        lines.append("")
    atomic_write_text(path, "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="main pair only, fewer rounds and runs")
    ap.add_argument("--no-experiments", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("bench/results/student_profile"))
    args = ap.parse_args()
    console = Console(width=max(120, Console().width))
    models = [m for m in MODELS if m.pair == MAIN_PAIR] if args.quick else MODELS
    rounds = 3 if args.quick else args.rounds
    x = np.random.default_rng(1).uniform(-1, 1, (1, 3, args.size, args.size)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        prep = prepare(models, Path(tmp), args.size, console)
        timings: dict[int, dict[str, dict[str, float]]] = {}
        loads: dict[str, Any] = {}
        profiles: dict[str, dict[str, dict[str, Any]]] = {k: {v: {} for v in VARIANTS} for k in prep}
        for n in args.threads:
            console.log(f"{n} thread(s): round-robin timing of {len(prep) * 2} models")
            sessions = {f"{k}|{v}": session(p["paths"][v], n) for k, p in prep.items() for v in VARIANTS}
            load = os.getloadavg()
            timings[n] = interleaved(sessions, x, rounds=rounds)
            loads[str(n)] = [load, os.getloadavg()]
            del sessions
            console.log(f"{n} thread(s): per-operator profiles")
            for k, p in prep.items():
                teacher = p["model"].role == "teacher"
                runs = (2 if args.quick else 3) if teacher else (4 if args.quick else 10)
                both = profile_ops(p["paths"], x, n, p["tables"], warmup=1 if teacher else 2, runs=runs)
                for v in VARIANTS:
                    profiles[k][v][str(n)] = both[v]
        exps = [] if args.no_experiments else experiments(prep, x, max(3, rounds // 2))
    summary = summarise(prep, timings)
    result = {
        "size": args.size,
        "batch": 1,
        "threads": args.threads,
        "mac_conventions": {
            "macs": "true multiply-accumulates (transposed conv: input elements × C_out/groups × k²)",
            "macs_gc": "GAN Compression's: conv and transposed conv by output elements × C_in/groups × k², "
            "plus InstanceNorm output elements",
        },
        "timing": "median of round-robin runs of every model and variant (ORT_ENABLE_ALL, spinning off)",
        "models": {
            k: {
                "role": p["model"].role,
                "pair": p["model"].pair,
                "source": p["model"].source,
                "options": p["model"].options,
                "macs": p["macs"],
                "macs_gc": p["macs_gc"],
                "optimize": p["optimize"],
                "parity_max_abs_diff": p["parity_max_abs_diff"],
                "export_max_abs_diff": p["export_max_abs_diff"],
            }
            for k, p in prep.items()
        },
        "timings": {str(n): t for n, t in timings.items()},
        "loadavg": loads,
        "summary": summary,
        "profiles": profiles,
        "experiments": exps,
        "machine": machine_info(),
    }
    result["machine_line"] = machine_line(result["machine"])
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "results.json", result)
    write_report(result, args.out / "report.md")

    table = Table(title=f"student efficiency at {args.size}×{args.size}, batch 1 (plain MACs; GC in results.json)")
    for col in ("model", "thr", "variant", "ms", "CPU ms", "G MAC/s", "speed-up", "MAC red.", "ratio", "ratio CPU"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in summary:
        s = r["role"] == "student"
        table.add_row(
            r["model"],
            str(r["threads"]),
            r["variant"],
            f"{r['ms']:.1f}",
            f"{r['cpu_ms']:.1f}",
            f"{r['gmacs_per_s']:.1f}",
            f"{r['speedup']:.1f}x" if s else "",
            f"{r['mac_reduction']:.1f}x" if s else "",
            f"{r['ratio']:.2f}" if s else "",
            f"{r['ratio_cpu']:.2f}" if s else "",
        )
    console.print(table)
    main_student = next(k for k, p in prep.items() if p["model"].pair == MAIN_PAIR and p["model"].role == "student")
    for n in args.threads:
        kinds = profiles[main_student]["before"][str(n)]["kinds"]
        t = Table(title=f"{main_student}, before, {n} thread(s): time per op kind")
        for col in ("op kind", "ms", "%", "G MAC/s"):
            t.add_column(col, justify="left" if col == "op kind" else "right")
        for k, d in kinds.items():
            t.add_row(k, f"{d['ms']:.2f}", f"{d['pct']:.0f}", f"{d['gmacs_per_s']:.1f}" if d["gmacs_per_s"] else "")
        console.print(t)
    console.print(f"machine: {result['machine_line']}; load {os.getloadavg()}")
    console.print(f"wrote {args.out / 'results.json'} and {args.out / 'report.md'}")


if __name__ == "__main__":
    main()
