"""SETGAN quality: parallel vs serial models per scale, and the early exit at several thresholds.

Usage: python bench/setgan_quality.py [--images balloons birds starry_night] [--max-size 96] [--iters 100]

For each image, trains both modes at equal settings, estimates SSIM per scale (samples
through scales 0..k against the real image) and the normalised EDP per scale, then reports
the chosen scale count and EDP saving for thresholds 0.6, 0.7 and 0.8. Writes JSON and a
Markdown report with a plot under bench/results/setgan_quality/.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgegan.data.shared import shared_data
from edgegan.fileio import atomic_write_json
from edgegan.profile.machine import machine_info
from edgegan.report import write_report
from edgegan.setgan.config import SETGANConfig
from edgegan.setgan.estimate import choose_scales
from edgegan.setgan.report import finalize
from edgegan.setgan.train import fit

THRESHOLDS = (0.6, 0.7, 0.8, 0.9)


def _fmt(choice: dict) -> str:
    if choice["chosen_scales"] is None:
        return "not met"
    return f"{choice['chosen_scales']} sc, {-100 * choice['edp_saving']:+.0f}% EDP"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", nargs="+", default=["balloons", "birds", "starry_night"])
    ap.add_argument("--max-size", type=int, default=96)
    ap.add_argument("--min-size", type=int, default=25)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--nfc", type=int, default=32)
    ap.add_argument("--max-nfc", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--draws", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("bench/results/setgan_quality"))
    args = ap.parse_args()
    folder = shared_data("singan/images")
    if folder is None:
        raise SystemExit("needs ../shared/data/singan/images (or $EDGEGAN_DATA/singan/images)")
    console = Console(width=120)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, dict]] = {}
    for name in args.images:
        results[name] = {}
        for mode in ("serial", "parallel"):
            cfg = SETGANConfig(
                max_size=args.max_size,
                min_size=args.min_size,
                iters=args.iters,
                nfc=args.nfc,
                max_nfc=args.max_nfc,
                mode=mode,
                quality_draws=args.draws,
            )
            console.log(f"{name}: {mode}")
            run = fit(
                folder / f"{name}.png", args.out / "runs" / f"{name}_{mode}", cfg, workers=args.workers, resume=True
            )
            rep = finalize(run, repeats=5)
            results[name][mode] = {
                "ssim": [s["ssim"] for s in rep["scales"]],
                "edp_norm": [s["edp_norm"] for s in rep["scales"]],
                "train_seconds": rep["train_seconds"],
                "energy_label": rep["energy_label"],
            }
    choices = {}
    for name, modes in results.items():
        choices[name] = {}
        for mode, r in modes.items():
            per_t = {}
            for t in THRESHOLDS:
                k = choose_scales(r["ssim"], t)
                per_t[str(t)] = {
                    "chosen_scales": None if k is None else k + 1,
                    "edp_saving": None if k is None else 1.0 - r["edp_norm"][k],
                }
            choices[name][mode] = per_t
    summary = {
        "settings": vars(args) | {"out": str(args.out)},
        "results": results,
        "thresholds": choices,
        "machine": machine_info(),
    }
    atomic_write_json(args.out / "results.json", summary)

    for name, modes in results.items():
        t = Table(title=f"{name}: SSIM of samples through scales 0..k vs the real image")
        for col in ("k", "serial SSIM", "parallel SSIM", "difference", "EDP norm (parallel)"):
            t.add_column(col, justify="right")
        for k, (a, b) in enumerate(zip(modes["serial"]["ssim"], modes["parallel"]["ssim"], strict=True)):
            t.add_row(str(k), f"{a:.3f}", f"{b:.3f}", f"{b - a:+.3f}", f"{modes['parallel']['edp_norm'][k]:.3f}")
        console.print(t)
    t = Table(title="early exit: scales chosen and EDP saving (parallel models; serial in brackets)")
    t.add_column("image")
    for th in THRESHOLDS:
        t.add_column(f"T = {th}", justify="right")
    rows = []
    for name in results:
        cells = []
        for th in THRESHOLDS:
            par, ser = choices[name]["parallel"][str(th)], choices[name]["serial"][str(th)]
            cells.append(f"{_fmt(par)} ({_fmt(ser)})")
        t.add_row(name, *cells)
        rows.append({"image": name, **{f"T={th}": c for th, c in zip(THRESHOLDS, cells, strict=True)}})
    console.print(t)
    series = [
        {"name": f"{k}", "group": f"{name} {mode}", "scale": k, "ssim": v}
        for name, modes in results.items()
        for mode, r in modes.items()
        for k, v in enumerate(r["ssim"])
    ]
    write_report(
        args.out,
        title="SETGAN: parallel vs serial quality, and the early exit",
        notes=[
            f"Settings: {args.max_size} px, {args.iters} iterations per scale, widths {args.nfc}-{args.max_nfc}, "
            f"SSIM averaged over {args.draws} noise draws. "
            f"Energy: {results[args.images[0]]['parallel']['energy_label']}."
        ],
        metrics={r["image"]: "; ".join(f"{k}: {v}" for k, v in r.items() if k != "image") for r in rows},
        series=series,
        x="scale",
        y="ssim",
        group="group",
    )
    console.print(f"wrote {args.out / 'results.json'} and {args.out / 'report.md'}")


if __name__ == "__main__":
    main()
