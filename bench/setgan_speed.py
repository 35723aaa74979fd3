"""SETGAN training speed: serial (SinGAN) vs parallel (SETGAN) at equal settings, one invocation.

Usage: python bench/setgan_speed.py [--image PATH] [--max-size 128] [--iters 40] [--workers N]
       python bench/setgan_speed.py --paper --device cuda   # 250 px, 2000 iterations (GPU)

Prints per-scale training times in both modes, the serial and parallel totals, the speed-up,
and the ideal speed-up on this machine with how it is computed; writes JSON.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from edgegan.data.shared import shared_data
from edgegan.fileio import atomic_write_json
from edgegan.profile.machine import machine_info, machine_line
from edgegan.runs import check_device
from edgegan.setgan.config import SETGANConfig
from edgegan.setgan.train import fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", type=Path, default=None)
    ap.add_argument("--max-size", type=int, default=128)
    ap.add_argument("--min-size", type=int, default=25)
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--nfc", type=int, default=32)
    ap.add_argument("--max-nfc", type=int, default=128)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument(
        "--device",
        default="cpu",
        help="cpu, cuda, cuda:N, or several GPUs comma-separated (cuda:0,cuda:1): parallel scales go to them "
        "round-robin (several worker processes may share one GPU); serial runs on the first",
    )
    ap.add_argument("--paper", action="store_true", help="the paper's settings: 250 px, 2000 iterations")
    ap.add_argument("--out", type=Path, default=Path("bench/results/setgan_speed.json"))
    args = ap.parse_args()
    if args.paper:
        args.max_size, args.iters = 250, 2000
    image = args.image or shared_data("singan/images/balloons.png")
    if image is None:
        raise SystemExit("no image: pass --image or provide ../shared/data/singan/images/balloons.png")
    console = Console(width=120)
    cores = os.cpu_count() or 1
    devices = [d.strip() for d in args.device.split(",") if d.strip()]
    for d in devices:
        check_device(d)
    # One process per scale at most; on GPUs the workers share the devices round-robin.
    workers = args.workers or cores
    threads = torch.get_num_threads()
    results = {}
    tmp = Path(tempfile.mkdtemp(prefix="setgan_speed_"))
    try:
        for mode in ("serial", "parallel"):
            cfg = SETGANConfig(
                max_size=args.max_size,
                min_size=args.min_size,
                iters=args.iters,
                nfc=args.nfc,
                max_nfc=args.max_nfc,
                mode=mode,
                ckpt_every=10**6,
            )
            console.log(f"{mode}: training {image.name} ({args.max_size} px, {args.iters} iterations/scale)")
            kw = {"workers": workers} if mode == "parallel" else {"threads": threads}
            run = fit(image, tmp / mode, cfg, devices=devices if mode == "parallel" else devices[:1], **kw)
            n = run.spec().n_scales
            results[mode] = {
                "total_s": run.training_sessions()[-1]["wall_seconds"],
                "per_scale_s": [run.scale_info(i)["train_seconds"] for i in range(n)],
                "threads_per_scale": run.scale_info(0)["threads"],
                "sizes": [list(s) for s in run.spec().sizes],
            }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    s, p = results["serial"], results["parallel"]
    serial_sum = sum(s["per_scale_s"])
    par_sum, par_max = sum(p["per_scale_s"]), max(p["per_scale_s"])
    ideal_from_serial = serial_sum / max(max(s["per_scale_s"]), serial_sum / cores)
    makespan_bound = max(par_max, par_sum / workers)  # no schedule of these jobs on `workers` can beat this
    ideal = s["total_s"] / makespan_bound
    speedup = s["total_s"] / p["total_s"]
    summary = {
        "image": str(image),
        "settings": {
            "max_size": args.max_size,
            "min_size": args.min_size,
            "iters": args.iters,
            "nfc": args.nfc,
            "max_nfc": args.max_nfc,
            "devices": devices,
        },
        "workers": workers,
        "cores": cores,
        "serial": s,
        "parallel": p,
        "speedup": speedup,
        "ideal_speedup": ideal,
        "ideal_speedup_from_serial_times": ideal_from_serial,
        "efficiency": speedup / ideal,
        "ideal_definition": "serial total / max(longest parallel scale, sum of parallel scale times / workers); "
        "each scale time measured inside the mode that ran it (serial: one scale at a time with all threads; "
        "parallel: one thread per worker, workers running at once)",
        "machine": machine_info(devices[0]),
    }
    atomic_write_json(args.out, summary)

    table = Table(title=f"SETGAN training time, {image.name}, {args.max_size} px, {args.iters} iterations per scale")
    for col in ("scale", "size (h x w)", "serial s", "parallel s"):
        table.add_column(col, justify="right")
    for i, size in enumerate(s["sizes"]):
        table.add_row(str(i), "x".join(map(str, size)), f"{s['per_scale_s'][i]:.1f}", f"{p['per_scale_s'][i]:.1f}")
    table.add_row("total", "", f"{s['total_s']:.1f}", f"{p['total_s']:.1f}")
    console.print(table)
    console.print(
        f"serial: one scale at a time, {s['threads_per_scale']} threads; "
        f"parallel: {workers} workers x {p['threads_per_scale']} thread(s)"
    )
    console.print(
        f"speed-up {speedup:.2f}x; ideal on this machine {ideal:.2f}x "
        f"= {s['total_s']:.1f} s / max({par_max:.1f} s longest scale, {par_sum:.1f} s / {workers} workers)"
    )
    console.print(
        f"parallel reaches {100 * speedup / ideal:.0f}% of the ideal "
        f"(ideal from serial per-scale times, sum / max(longest, sum / {cores} cores): {ideal_from_serial:.2f}x)"
    )
    console.print(f"machine: {machine_line(summary['machine'])}; wrote {args.out}")


if __name__ == "__main__":
    main()
