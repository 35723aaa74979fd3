"""SETGAN fidelity (issue 15): serial vs parallel vs refresh at equal settings, per image and scale.

Usage:
    python bench/setgan_quality.py                        # 4 images, 96 px, 400 iterations/scale (hours)
    python bench/setgan_quality.py --before               # + the pre-fix penalty on the first image
    python bench/setgan_quality.py --warm-start           # serial warm-starts where widths match
    python bench/setgan_quality.py --quick --out /tmp/q   # smoke run: 40 px, 30 iterations, 2 images
    options: --images NAME... --modes serial parallel refresh --max-size 96 --min-size 25 --iters 400
             --nfc 32 --max-nfc 32 --refresh-at 0.5 --workers 2 --threads N --draws 8 --repeats 10
             --grid-samples 6 --estimator chain|per_scale --seed 0 --out bench/results/setgan_quality

Images come from ``shared_data("singan/images")`` (``../shared/data/singan/images`` or
``$EDGEGAN_DATA/singan/images``). Every mode trains with the same pyramid, iterations per scale
and widths (nfc = max_nfc = 32 by default, so every scale has the same width), and all start cold.

Modes (one run folder each, ``OUT/runs/<image>_<mode>``):

* ``serial``: SinGAN. Coarse to fine; scale i trains on fresh random samples of the trained scales
  0..i-1. ``warm_start`` is OFF by default so that it starts each scale from random weights like the
  parallel modes (parallel scales cannot warm-start: the coarser scale is not trained yet). With
  ``--warm-start`` serial starts scale i from scale i-1 where the widths match (SinGAN's rule; run
  folder ``<image>_serial-warm``) and the results record ``warm_start: true``.
* ``parallel``: SETGAN as in the paper (``parallel_inputs="real"``): scale i always refines the
  up-sampled *real* image of scale i-1, so all scales train at once (``--workers`` processes).
* ``refresh``: parallel, ``parallel_inputs="refresh"``: the first ``refresh_at`` of the iterations as
  ``parallel``; then, after a barrier, each scale finishes on fresh random samples of scales 0..i-1
  as they stood at the barrier, so it also learns to correct what the coarser scales really make.
* ``shuffle``: parallel, ``parallel_inputs="shuffle"``: independent scales whose adversarial steps refine the
  real coarser image flipped and circularly shifted at random (a rearranged layout).
* ``parallel_whole_gp`` (``--before``, first image only): ``parallel`` with ``gp_form="whole_image"``,
  edgegan's gradient penalty before issue 15 (norm over the whole image). It is the "before" row of
  the first image's sample grid; ``parallel`` is the "after".

Columns (per image, mode and k = the first k+1 scales, all from ``setgan.report.finalize``):

* ``SSIM chain``: the chain estimator, samples through scales 0..k (scale 0 on its reconstruction
  noise, fresh noise above) up-sampled to full size, SSIM against the real image, mean over
  ``--draws`` draws. What the device runs. Report key ``ssim`` / ``ssim_chain``.
* ``SSIM per-scale``: the paper's estimator, scale k alone fed the up-sampled *real* image of scale
  k-1 and fresh noise, SSIM against the real image at scale k. ``input`` is its floor: the SSIM of
  the up-sampled real coarser image alone (what a generator that changes nothing scores).
* ``patch RMSE`` (realism of random samples, ``random_patch_rmse``): fully random samples through
  scales 0..k at scale k's size; for each 7x7 patch the RMSE to its nearest patch of the real image
  at that scale, averaged ([0, 1] images; lower = made of the image's own patches). It cannot see
  whether the layout is plausible, and a copy of the image scores 0: read it with diversity.
* ``diversity`` (``random_diversity``): mean pairwise per-pixel RMSE between those random samples
  (0 = all the same, e.g. copies of the image; noise scores high).
* ``EDP norm``: energy x latency of scales 0..k (batch 1, this machine) over that of all scales.
* ``train s``: training seconds of that scale (refresh: both phases), from the scale's marker.
* per mode: ``train s`` = training wall seconds (``training.json`` sessions summed: the makespan for
  the parallel modes, all scales one after another for serial); ``speed-up`` = serial's over the
  mode's, for the same image; marked ``*`` when the two were not trained in one and the same
  invocation of this bench (resumed or cached), so their machines' loads may differ.
* Early exit (by the estimator the report uses, ``chain`` unless ``--estimator``): for each
  threshold T, the fewest scales whose SSIM reaches T (``choose_scales``) and the EDP saving there.
* ``>=56% EDP``: the paper's figure. Among the exits that save at least 56% of the energy-delay
  product (edp_norm[k] <= 0.44), the one with the highest SSIM (for SSIM rising with k, the largest
  such k), and its SSIM loss against all scales, relative ``1 - ssim[k] / ssim[last]`` and absolute
  ``ssim[last] - ssim[k]`` (negative = the exit scores higher than all scales). "not reached" when
  even one scale costs more than 44% of the full EDP.

Sample grids (``OUT/samples_<image>.png``): one row per mode: the real image, then ``--grid-samples``
random samples of the full pyramid, drawn with ``torch.Generator().manual_seed(1000)`` (the same
draws for every mode; never the reconstruction noise).

Resumable: ``fit(..., resume=True)`` skips finished scales (and continues an interrupted one from its
last checkpoint); a finished mode's summary (finalize's report + timing) is cached in
``OUT/runs/<image>_<mode>/bench.json`` and reused while the settings match. ``results.json`` and
``report.md`` are rewritten (atomically) after every finished image and mode; earlier entries with the
same settings are kept, and a complete earlier result with other settings is never replaced by a
partial one (the partial one goes to ``OUT/partial/`` until this invocation completes).

Training time is the sum of the run's finished ``fit`` sessions: a session that was killed is not
counted (its work up to the last checkpoint is kept), so a resumed run reads low; such runs, and pairs
trained by different invocations, carry the ``*`` on their speed-up.

Run time of the default (an ESTIMATE): the --quick run (40 px, 1 thread, 2 cores shared with three other
benchmarks) took 0.038 s + 8.6e-5 s per pixel per iteration and scale; extrapolated to 96 px and 400
iterations that is ~10-12 min of serial training per image and ~5-6 min per parallel mode (2 workers),
about 1.5-2 h for the four images with finalize (~1 min per run). The 96 px / 100-iteration results of the
previous version of this bench (serial ~300 s per image) put it at twice that, so plan for 2-3.5 hours on
2 cores, more while other jobs share them; ``--before`` adds ~10 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from edgegan.data.shared import shared_data
from edgegan.fileio import atomic_write_json
from edgegan.profile.machine import machine_info, machine_line
from edgegan.report import save_grid, write_report
from edgegan.setgan.config import SETGANConfig
from edgegan.setgan.estimate import choose_scales
from edgegan.setgan.report import finalize
from edgegan.setgan.run import SETGANRun
from edgegan.setgan.train import fit

THRESHOLDS = (0.6, 0.7, 0.8, 0.9)
EDP_SAVING = 0.56  # the paper's figure: "saves 56% energy-delay product"
GRID_SEED = 1000  # random samples of the grids: a plain seed, never the reconstruction noise's stream
MODES = ("serial", "parallel", "refresh", "shuffle")
BEFORE = "parallel_whole_gp"
LABELS = {**{m: m for m in MODES}, BEFORE: "whole-img GP"}
CACHE_FORMAT = 1
SCALE_KEYS = (
    "index",
    "ssim_chain",
    "ssim_std",
    "ssim_per_scale",
    "ssim_per_scale_std",
    "ssim_per_scale_input",
    "ssim_random",
    "sifid",
    "sifid_per_scale",
    "random_patch_rmse",
    "random_patch_rmse_std",
    "random_diversity",
    "random_diversity_singan",
    "edp_norm",
    "macs",
    "latency_ms",
    "energy_j",
    "noise_amp",
    "train_seconds",
)
PRESETS: dict[str, dict[str, Any]] = {
    "default": {
        "images": ["balloons", "birds", "starry_night", "colusseum"],
        "max_size": 96,
        "min_size": 25,
        "iters": 400,
        "draws": 8,
        "repeats": 10,
        "grid_samples": 6,
        "before": False,
        "out": Path("bench/results/setgan_quality"),
    },
    # Smoke run of every code path (--before included) in a few minutes: 4 scales of 16..40 px.
    "quick": {
        "images": ["balloons", "birds"],
        "max_size": 40,
        "min_size": 16,
        "iters": 30,
        "draws": 2,
        "repeats": 3,
        "grid_samples": 4,
        "before": True,
        "out": Path(tempfile.gettempdir()) / "setgan_quality_quick",
    },
}

console = Console(width=120)


# ------------------------------------------------------------------------------ settings


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke-run preset: 40 px, 30 iterations, 2 images")
    ap.add_argument("--images", nargs="+", default=None, help="names in singan/images (without .png)")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument(
        "--before", action=argparse.BooleanOptionalAction, default=None, help=f"add {BEFORE} on the first image"
    )
    ap.add_argument("--warm-start", action="store_true", help="serial only: warm-start where widths match")
    ap.add_argument("--max-size", type=int, default=None)
    ap.add_argument("--min-size", type=int, default=None)
    ap.add_argument("--iters", type=int, default=None, help="iterations per scale, every mode")
    ap.add_argument("--nfc", type=int, default=32)
    ap.add_argument("--max-nfc", type=int, default=32)
    ap.add_argument("--refresh-at", type=float, default=SETGANConfig.refresh_at)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2, help="parallel modes: worker processes")
    ap.add_argument("--threads", type=int, default=None, help="total threads (default: torch's); split by workers")
    ap.add_argument("--draws", type=int, default=None, help="noise draws per SSIM estimate")
    ap.add_argument("--repeats", type=int, default=None, help="latency/energy repeats per k")
    ap.add_argument("--grid-samples", type=int, default=None)
    ap.add_argument("--estimator", choices=("chain", "per_scale"), default=None, help="default: the report's")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    for key, value in PRESETS["quick" if args.quick else "default"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.threads = args.threads or torch.get_num_threads()
    if args.workers < 1 or args.threads < 1 or args.grid_samples < 1:
        raise SystemExit("--workers, --threads and --grid-samples must be >= 1")
    return args


def mode_config(mode: str, args: argparse.Namespace) -> SETGANConfig:
    """The one place where the modes differ; everything else is shared."""
    common: dict[str, Any] = {
        "max_size": args.max_size,
        "min_size": args.min_size,
        "iters": args.iters,
        "nfc": args.nfc,
        "max_nfc": args.max_nfc,
        "refresh_at": args.refresh_at,
        "seed": args.seed,
        "quality_draws": args.draws,
        "ckpt_every": 100,  # finer resume points than the default 250
        "warm_start": False,  # parallel scales cannot warm-start; serial only with --warm-start
    }
    if mode == "serial":
        return SETGANConfig(mode="serial", **(common | {"warm_start": args.warm_start}))
    if mode == "parallel":
        return SETGANConfig(mode="parallel", parallel_inputs="real", **common)
    if mode == "refresh":
        return SETGANConfig(mode="parallel", parallel_inputs="refresh", **common)
    if mode == "shuffle":
        return SETGANConfig(mode="parallel", parallel_inputs="shuffle", **common)
    if mode == BEFORE:
        return SETGANConfig(mode="parallel", parallel_inputs="real", gp_form="whole_image", **common)
    raise ValueError(mode)


def run_folder(out: Path, image: str, mode: str, cfg: SETGANConfig) -> Path:
    return out / "runs" / (f"{image}_{mode}" + ("-warm" if cfg.mode == "serial" and cfg.warm_start else ""))


def comparable(args: argparse.Namespace) -> dict[str, Any]:
    """The settings that make two results comparable (results with equal ones are merged)."""
    keys = ("max_size", "min_size", "iters", "nfc", "max_nfc", "refresh_at", "seed", "warm_start", "draws", "repeats")
    return {k: getattr(args, k) for k in keys}


# ------------------------------------------------------------------------------ one run


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def train(image: Path, folder: Path, cfg: SETGANConfig, args: argparse.Namespace, invocation: str) -> None:
    """fit() with resume; the sessions that trained something are logged with this invocation's id."""
    log = folder / "bench_sessions.json"
    before = len(SETGANRun(folder).training_sessions()) if SETGANRun(folder).exists() else 0
    load = os.getloadavg()
    started = time.perf_counter()
    if cfg.mode == "serial":
        run = fit(image, folder, cfg, threads=args.threads, resume=True)
    else:
        run = fit(image, folder, cfg, workers=args.workers, threads=max(1, args.threads // args.workers), resume=True)
    new = run.training_sessions()[before:]
    if any(s.get("scales_trained") for s in new):
        entries = (_load_json(log) or {"sessions": []})["sessions"]
        entries.append(
            {
                "invocation": invocation,
                "wall_seconds": time.perf_counter() - started,
                "loadavg_before": load,
                "loadavg_after": os.getloadavg(),
            }
        )
        atomic_write_json(log, {"sessions": entries})


def summarise(run: SETGANRun, mode: str, cfg: SETGANConfig, args: argparse.Namespace) -> dict[str, Any]:
    """finalize() the run and keep what the bench reports, plus the timing of its training."""
    started = time.perf_counter()
    rep = finalize(run, repeats=args.repeats)
    sessions = run.training_sessions()
    bench_sessions = (_load_json(run.path / "bench_sessions.json") or {"sessions": []})["sessions"]
    return {
        "mode": mode,
        "label": LABELS[mode],
        "run": str(run.path),
        "config": cfg.to_dict(),
        "warm_start": cfg.mode == "serial" and cfg.warm_start,
        "sizes": [list(s) for s in run.spec().sizes],
        "train_seconds": sum(s.get("wall_seconds", 0.0) for s in sessions),
        "train_seconds_scales_sum": sum(s["train_seconds"] for s in rep["scales"]),
        "training_sessions": [s for s in sessions if s.get("scales_trained")],
        "trained_by": sorted({s["invocation"] for s in bench_sessions}),
        "loadavg": [s["loadavg_before"] for s in bench_sessions] + [s["loadavg_after"] for s in bench_sessions],
        "finalize_seconds": time.perf_counter() - started,
        "estimator": rep["estimator"],
        "chosen_scales_by": rep["chosen_scales_by"],
        "energy_label": rep["energy_label"],
        "energy_source": rep["energy_source"],
        "sifid_skipped": rep["sifid_skipped"],
        "scales": [{k: s.get(k) for k in SCALE_KEYS} for s in rep["scales"]],
    }


def run_mode(image: Path, name: str, mode: str, args: argparse.Namespace, invocation: str) -> dict[str, Any]:
    """Train (resuming) and summarise one (image, mode); a valid bench.json skips both."""
    cfg = mode_config(mode, args)
    folder = run_folder(args.out, name, mode, cfg)
    run = SETGANRun(folder)
    key = {"format": CACHE_FORMAT, "config": cfg.to_dict(), "repeats": args.repeats}
    cached = _load_json(folder / "bench.json")
    if cached and cached.get("key") == key and run.exists() and len(run.done_scales()) == run.spec().n_scales:
        console.log(f"{name} {mode}: cached ({folder / 'bench.json'})")
        return cached["summary"]
    if run.exists():
        # quality_draws counts too: fit() resumes with another value, but finalize() reads the saved one.
        saved = {k: v for k, v in run.config().to_dict().items() if k != "ckpt_every"}
        wanted = {k: v for k, v in cfg.to_dict().items() if k != "ckpt_every"}
        if saved != wanted:
            diff = ", ".join(f"{k}: {saved.get(k)} there, {v} now" for k, v in wanted.items() if saved.get(k) != v)
            raise SystemExit(f"{folder} holds a run with other settings ({diff}); remove it or pass another --out")
    console.log(f"{name} {mode}: training ({len(run.done_scales()) if run.exists() else 0} scales done before)")
    train(image, folder, cfg, args, invocation)
    console.log(f"{name} {mode}: finalize")
    summary = summarise(run, mode, cfg, args)
    atomic_write_json(
        folder / "bench.json", {"key": key, "summary": summary, "report": _load_json(folder / "report.json")}
    )
    return summary


@torch.no_grad()
def sample_grid(out: Path, name: str, entries: dict[str, dict[str, Any]], n: int) -> Path:
    """One row per mode: the real image, then ``n`` random samples (seed GRID_SEED, same draws for every mode)."""
    rows, labels = [], []
    for mode, entry in entries.items():
        run = SETGANRun(entry["run"])
        pyr = run.load_pyramid()
        reals, _ = run.load_reals()
        samples = pyr.sample(n, generator=torch.Generator().manual_seed(GRID_SEED)).clamp(-1, 1).cpu()
        rows.append([reals[-1][0], *samples])
        labels.append(LABELS[mode] + (" warm" if entry.get("warm_start") else ""))
    cols = ["real"] + [f"sample {j + 1}" for j in range(n)]
    return save_grid(out / f"samples_{name}.png", rows, row_labels=labels, col_labels=cols)


# ------------------------------------------------------------------------------ derived numbers


def ssims(entry: dict[str, Any], estimator: str) -> list[float]:
    return [s["ssim_chain" if estimator == "chain" else "ssim_per_scale"] for s in entry["scales"]]


def edps(entry: dict[str, Any]) -> list[float]:
    return [s["edp_norm"] if s["edp_norm"] is not None else float("nan") for s in entry["scales"]]


def early_exit(entry: dict[str, Any], estimator: str) -> dict[str, Any]:
    q, e = ssims(entry, estimator), edps(entry)
    out = {}
    for t in THRESHOLDS:
        k = choose_scales(q, t)
        out[str(t)] = None if k is None else {"scales": k + 1, "ssim": q[k], "edp_saving": 1.0 - e[k]}
    return out


def edp_target(entry: dict[str, Any], estimator: str, saving: float = EDP_SAVING) -> dict[str, Any] | None:
    """Among the exits with edp_norm <= 1 - saving, the one with the highest SSIM, and its SSIM loss."""
    q, e = ssims(entry, estimator), edps(entry)
    ok = [k for k in range(len(q)) if e[k] <= 1.0 - saving + 1e-12]
    if not ok:
        return None
    k = max(ok, key=lambda j: (q[j], -j))
    return {
        "scales": k + 1,
        "of": len(q),
        "edp_saving": 1.0 - e[k],
        "ssim": q[k],
        "ssim_all_scales": q[-1],
        "ssim_loss_abs": q[-1] - q[k],
        "ssim_loss_rel": 1.0 - q[k] / q[-1] if q[-1] else None,
    }


def speedups(results: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, modes in results.items():
        ser = modes.get("serial")
        out[name] = {}
        for mode, r in modes.items():
            if mode == "serial" or ser is None or not r["train_seconds"]:
                continue
            same = len(ser["trained_by"]) == 1 and ser["trained_by"] == r["trained_by"]
            out[name][mode] = {"speedup": ser["train_seconds"] / r["train_seconds"], "same_invocation": same}
    return out


# ------------------------------------------------------------------------------ tables


def _f(value: Any, fmt: str = ".3f") -> str:
    return "-" if value is None else format(value, fmt)


def _exit_cell(c: dict[str, Any] | None) -> str:
    return "not met" if c is None else f"{c['scales']} sc, -{100 * c['edp_saving']:.0f}%"


def _target_cell(c: dict[str, Any] | None) -> str:
    if c is None:
        return "not reached"
    rel = "-" if c["ssim_loss_rel"] is None else f"{100 * c['ssim_loss_rel']:.1f}%"
    return f"{c['scales']}/{c['of']} sc, -{100 * c['edp_saving']:.0f}%: {rel} ({c['ssim_loss_abs']:+.3f})"


def build_tables(summary: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]], list[int]]]:
    """(title, header, rows, rows after which a section ends) for every table, shared by console and Markdown."""
    results, est = summary["results"], summary["estimator"]
    tables = []
    for name, modes in results.items():
        rows, ends = [], []
        for r in modes.values():
            for s, size in zip(r["scales"], r["sizes"], strict=True):
                k = s["index"]
                rows.append(
                    [
                        r["label"] + (" warm" if r.get("warm_start") else "") if k == 0 else "",
                        str(k),
                        f"{size[0]}x{size[1]}",
                        _f(s["ssim_chain"]),
                        _f(s["ssim_per_scale"]),
                        _f(s["ssim_per_scale_input"]),
                        _f(s["random_patch_rmse"], ".4f"),
                        _f(s["random_diversity"], ".4f"),
                        _f(s["edp_norm"]),
                        _f(s["train_seconds"], ".1f"),
                    ]
                )
            ends.append(len(rows) - 1)
        header = ["mode", "k", "size", "SSIM chain", "SSIM per-scale", "input", "patch RMSE", "diversity"]
        header += ["EDP norm", "train s"]
        tables.append((f"{name}: per scale k (scales 0..k)", header, rows, ends))
    rows = []
    for name, modes in results.items():
        for mode, r in modes.items():
            sp = summary["speedups"].get(name, {}).get(mode)
            cell = "-" if sp is None else f"{sp['speedup']:.2f}x" + ("" if sp["same_invocation"] else "*")
            last = r["scales"][-1]
            threads = ", ".join(
                sorted({f"{s.get('workers', 1)}x{s.get('threads', '?')}" for s in r["training_sessions"]})
            )
            rows.append(
                [
                    name,
                    r["label"] + (" warm" if r.get("warm_start") else ""),
                    f"{r['train_seconds']:.0f}",
                    threads or "-",
                    cell,
                    _f(last["ssim_chain"]),
                    _f(last["ssim_per_scale"]),
                    _f(last["random_patch_rmse"], ".4f"),
                    _f(last["random_diversity"], ".4f"),
                ]
            )
    header = ["image", "mode", "train s", "workers x thr", "speed-up", "SSIM chain", "SSIM per-scale", "patch RMSE"]
    tables.append(("training time and the finest scale (all scales)", [*header, "diversity"], rows, []))
    rows = []
    for name, modes in results.items():
        for mode, r in modes.items():
            ex = summary["early_exit"][name][mode]
            rows.append(
                [name, r["label"] + (" warm" if r.get("warm_start") else "")]
                + [_exit_cell(ex[str(t)]) for t in THRESHOLDS]
                + [_target_cell(summary["edp_target"][name][mode])]
            )
    header = [
        "image",
        "mode",
        *[f"T = {t}" for t in THRESHOLDS],
        f">={100 * EDP_SAVING:.0f}% EDP: exit, SSIM loss (abs)",
    ]
    title = f"early exit by the {est} estimator: fewest scales with SSIM >= T, and the EDP saving there"
    tables.append((title, header, rows, []))
    return tables


def print_tables(summary: dict[str, Any]) -> None:
    for title, header, rows, ends in build_tables(summary):
        t = Table(title=title)
        for j, col in enumerate(header):
            t.add_column(col, justify="left" if j == 0 or (j == 1 and col == "mode") else "right")
        for i, row in enumerate(rows):
            t.add_row(*row, end_section=i in ends)
        console.print(t)


def markdown_table(title: str, header: list[str], rows: list[list[str]]) -> str:
    lines = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


# ------------------------------------------------------------------------------ results


def assemble(args: argparse.Namespace, done: dict[str, dict[str, Any]], plan: list[tuple[str, str]], meta: dict):
    """The summary of this invocation, merged with an earlier results.json of the same settings."""
    target = args.out / "results.json"
    earlier = _load_json(target)
    same = bool(earlier) and earlier.get("settings", {}).get("comparable") == comparable(args)
    results: dict[str, dict[str, Any]] = {}
    for name, mode in plan:
        if mode in done.get(name, {}):
            results.setdefault(name, {})[mode] = done[name][mode]
    wanted = set(plan)
    if same:
        for name, modes in earlier.get("results", {}).items():
            for mode, r in modes.items():
                wanted.add((name, mode))
                results.setdefault(name, {}).setdefault(mode, r)
    missing = sorted(f"{n} {m}" for n, m in wanted if m not in results.get(n, {}))
    est = args.estimator or next((r["estimator"] for m in results.values() for r in m.values()), "chain")
    summary: dict[str, Any] = {
        **meta,
        "complete": not missing,
        "pending": missing,
        "estimator": est,
        "results": results,
    }
    summary["speedups"] = speedups(results)
    summary["early_exit"] = {n: {m: early_exit(r, est) for m, r in ms.items()} for n, ms in results.items()}
    summary["edp_target"] = {n: {m: edp_target(r, est) for m, r in ms.items()} for n, ms in results.items()}
    summary["grids"] = {n: f"samples_{n}.png" for n in results if (args.out / f"samples_{n}.png").is_file()}
    return summary, earlier, same


def write_results(args: argparse.Namespace, summary: dict[str, Any], earlier: Any, same: bool) -> Path:
    """results.json + report.md, atomically; a complete earlier result with other settings is not replaced by
    a partial one (that goes to OUT/partial/), and is kept as results.previous.json when a complete one is."""
    folder = args.out
    earlier_complete = bool(earlier) and earlier.get("complete", True)  # results without the flag were complete
    if not same and earlier_complete:
        if not summary["complete"]:
            folder = args.out / "partial"
        else:
            atomic_write_json(args.out / "results.previous.json", earlier)
    if summary["complete"]:
        shutil.rmtree(args.out / "partial", ignore_errors=True)  # this bench's own partial copy, now superseded
    atomic_write_json(folder / "results.json", summary)
    est, s = summary["estimator"], summary["settings"]
    notes = [
        ("**Partial**: still to do: " + ", ".join(summary["pending"]) + ".") if summary["pending"] else "Complete.",
        f"Settings: {s['max_size']} px (coarsest side {s['min_size']}), {s['iters']} iterations per scale in "
        f"every mode, widths {s['nfc']}-{s['max_nfc']}, all modes cold"
        + (" except serial (warm start where widths match)" if s["warm_start"] else "")
        + f"; SSIM over {s['draws']} draws; parallel modes: {s['workers']} workers x "
        f"{max(1, s['threads'] // s['workers'])} thread(s), serial: {s['threads']} thread(s). "
        f"Machine: {machine_line(summary['machine'])}.",
        "Definitions: see the docstring of bench/setgan_quality.py. Speed-up = serial training seconds / the "
        "mode's, same image; `*` = not trained in one and the same invocation. Early exit and the "
        f">=56% EDP column use the **{est}** estimator.",
    ]
    notes += [markdown_table(t, h, r) for t, h, r, _ in build_tables(summary)]
    series = [
        {"name": str(k + 1), "group": f"{n} {r['label']}", "edp_norm": e, "ssim": q}
        for n, ms in summary["results"].items()
        for r in ms.values()
        for k, (e, q) in enumerate(zip(edps(r), ssims(r, est), strict=True))
        if e == e
    ]
    write_report(
        folder,
        title="SETGAN fidelity: serial vs parallel vs refresh at equal settings",
        notes=notes,
        grids={f"samples_{n}": (args.out / p).resolve() for n, p in summary["grids"].items()},
        series=series or None,
        x="edp_norm" if series else None,
        y="ssim" if series else None,
        group="group",
    )
    return folder / "results.json"


# ------------------------------------------------------------------------------ main


def main() -> None:
    args = parse_args()
    folder = shared_data("singan/images")
    if folder is None:
        raise SystemExit("needs ../shared/data/singan/images (or $EDGEGAN_DATA/singan/images)")
    for name in args.images:
        if not (folder / f"{name}.png").is_file():
            raise SystemExit(f"no image {folder / name}.png")
    args.out.mkdir(parents=True, exist_ok=True)
    invocation = time.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"
    plan = [(name, mode) for name in args.images for mode in args.modes]
    if args.before:
        plan.insert(len(args.modes), (args.images[0], BEFORE))
    meta = {
        "settings": {
            "comparable": comparable(args),
            **comparable(args),
            "images": args.images,
            "modes": args.modes,
            "before": args.before,
            "workers": args.workers,
            "threads": args.threads,
            "estimator": args.estimator,
            "grid_samples": args.grid_samples,
            "quick": args.quick,
            "out": str(args.out),
        },
        "invocation": invocation,
        "machine": machine_info(),
        "definitions": {
            "ssim_chain": "chain estimator: scales 0..k on scale 0's reconstruction noise, fresh noise above",
            "ssim_per_scale": "paper's estimator: scale k alone on the up-sampled real image of scale k-1",
            "ssim_per_scale_input": "the up-sampled real image of scale k-1 alone (the per-scale floor)",
            "random_patch_rmse": "random samples: mean RMSE of each 7x7 patch to its nearest real patch (lower = "
            "more realistic patches; a copy of the image scores 0)",
            "random_diversity": "random samples: mean pairwise per-pixel RMSE (0 = identical samples)",
            "edp_norm": "energy x latency of scales 0..k / that of all scales, this machine",
            "train_seconds": "per mode: training wall seconds, training.json sessions summed",
            "speedup": "serial train_seconds / the mode's, same image; same_invocation false = resumed or cached",
            "early_exit": "per threshold T: fewest scales with SSIM >= T (by `estimator`) and the EDP saving",
            "edp_target": "among exits with edp_norm <= 0.44 (>= 56% EDP saving), the one with the highest SSIM; "
            "ssim_loss_rel = 1 - ssim[k]/ssim[last], ssim_loss_abs = ssim[last] - ssim[k]",
            "grids": f"real image then random samples, torch.Generator().manual_seed({GRID_SEED})",
        },
    }
    console.log(
        f"{len(plan)} runs: {', '.join(f'{n} {m}' for n, m in plan)}; {args.max_size} px, {args.iters} iterations, "
        f"serial {args.threads} thread(s), parallel {args.workers} workers; out {args.out}"
    )
    started = time.perf_counter()
    done: dict[str, dict[str, Any]] = {}
    written = args.out / "results.json"
    for name, mode in plan:
        done.setdefault(name, {})[mode] = run_mode(folder / f"{name}.png", name, mode, args, invocation)
        sample_grid(args.out, name, done[name], args.grid_samples)
        summary, earlier, same = assemble(args, done, plan, meta)
        written = write_results(args, summary, earlier, same)
        r = done[name][mode]
        console.log(
            f"{name} {mode}: {r['train_seconds']:.0f} s training, finest SSIM chain {r['scales'][-1]['ssim_chain']:.3f}"
            f" / per-scale {r['scales'][-1]['ssim_per_scale']:.3f}, patch RMSE "
            f"{r['scales'][-1]['random_patch_rmse']:.4f}, diversity {r['scales'][-1]['random_diversity']:.4f}"
        )
    summary, _, _ = assemble(args, done, plan, meta)
    print_tables(summary)
    console.print(
        "speed-up: serial training seconds / the mode's, same image (* = not trained in the same invocation); "
        f"early exit and >=56% EDP by the {summary['estimator']} estimator"
    )
    console.print(f"machine: {machine_line(summary['machine'])}")
    console.print(
        f"wrote {written}, {written.parent / 'report.md'} and samples_*.png in {args.out} "
        f"({time.perf_counter() - started:.0f} s)"
    )


if __name__ == "__main__":
    main()
