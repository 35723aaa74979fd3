"""Progressive model delivery (SETGAN mode 3) vs one-shot transfer (mode 2), on loopback.

Usage: python bench/serve_progressive.py [--image PATH] [--max-size 64] [--iters 60]

Starts the service, submits the same image in mode 2 and in mode 3, and records when the
client could first download a usable model (scales 0..k for each k) and when the full model
was available. Prints a table and writes JSON. (Paper: editing can start at about half the
full training time.)
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgegan.data.shared import shared_data
from edgegan.fileio import atomic_write_json
from edgegan.profile.machine import machine_info, machine_line
from edgegan.serve.app import ServerConfig
from edgegan.serve.live import LiveServer

TOKEN = "bench-token-0123456789abcdef"


def follow(client, job_id: str, poll: float = 0.1) -> tuple[dict[int, float], float, dict]:
    """Seconds from submission until each count of available scales, and until done."""
    start = time.monotonic()
    seen: dict[int, float] = {}
    while True:
        st = client.get(f"/v1/jobs/{job_id}").json()
        now = time.monotonic() - start
        for k in range(1, st["available"] + 1):
            seen.setdefault(k, now)
        if st["status"] in ("done", "failed", "cancelled"):
            if st["status"] != "done":
                raise SystemExit(f"job {job_id} ended as {st['status']}: {st['error']}")
            return seen, now, st
        time.sleep(poll)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", type=Path, default=None)
    ap.add_argument("--max-size", type=int, default=64)
    ap.add_argument("--min-size", type=int, default=25)
    ap.add_argument("--iters", type=int, default=60)
    ap.add_argument("--nfc", type=int, default=32)
    ap.add_argument("--quality", type=float, default=0.6)
    ap.add_argument("--job-workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", type=Path, default=Path("bench/results/serve_progressive.json"))
    args = ap.parse_args()
    image = args.image or shared_data("singan/images/balloons.png")
    if image is None:
        raise SystemExit("no image: pass --image or provide ../shared/data/singan/images/balloons.png")
    console = Console(width=120)
    options = {
        "max_size": args.max_size,
        "min_size": args.min_size,
        "iters": args.iters,
        "nfc": args.nfc,
        "max_nfc": args.nfc,
        "quality": args.quality,
    }
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = ServerConfig(
            data_dir=Path(tmp),
            tokens=[TOKEN],
            workers=1,
            threads_per_job=os.cpu_count() or 1,
            job_workers=args.job_workers,
        )
        with LiveServer(cfg) as live, live.client(TOKEN, timeout=60) as c:
            for mode in (2, 3):
                console.log(f"mode {mode}: submitting {image.name}")
                files = {"image": (image.name, image.read_bytes(), "image/png")}
                job_id = c.post("/v1/jobs", files=files, data={"options": json.dumps({**options, "mode": mode})})
                job_id.raise_for_status()
                seen, total, st = follow(c, job_id.json()["id"])
                results[mode] = {
                    "available_at_s": {str(k): v for k, v in seen.items()},
                    "done_s": total,
                    "n_scales": st["n_scales"],
                    "chosen_scales": st["chosen_scales"],
                    "published": st["available"],
                }
    m2, m3 = results[2], results[3]
    first3 = m3["available_at_s"]["1"]
    summary = {
        "image": str(image),
        "options": options,
        "job_workers": args.job_workers,
        "modes": results,
        "mode3_first_model_fraction": first3 / m3["done_s"],
        "machine": machine_info(),
    }
    chosen = m3["chosen_scales"]
    if chosen and str(chosen) in m3["available_at_s"]:
        summary["mode3_chosen_model_fraction"] = m3["available_at_s"][str(chosen)] / m3["done_s"]
    atomic_write_json(args.out, summary)

    t = Table(title=f"time from submission to a usable model, {image.name}, {args.max_size} px, {args.iters} iters")
    for col in ("scales 0..k-1", "mode 3 (progressive) s", "mode 2 (one-shot) s"):
        t.add_column(col, justify="right")
    for k in range(1, m3["n_scales"] + 1):
        at3 = m3["available_at_s"].get(str(k))
        at2 = m2["available_at_s"].get(str(k))
        t.add_row(f"k = {k}", "-" if at3 is None else f"{at3:.1f}", "-" if at2 is None else f"{at2:.1f}")
    t.add_row("job done", f"{m3['done_s']:.1f}", f"{m2['done_s']:.1f}")
    console.print(t)
    console.print(
        f"mode 3: first model after {100 * summary['mode3_first_model_fraction']:.0f}% of the job"
        + (
            f", the {chosen} scales meeting SSIM >= {args.quality} after "
            f"{100 * summary['mode3_chosen_model_fraction']:.0f}%"
            if "mode3_chosen_model_fraction" in summary
            else ""
        )
    )
    console.print(f"mode 2 publishes {m2['published']} scales (0..best) at the end; machine: {machine_line()}")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
