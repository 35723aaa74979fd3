"""A tiny evaluation run that exercises the whole report path: metrics, grid and trade-off plot.

Re-encodes real images as JPEG at several qualities (a real size/quality trade-off), evaluates
each setting against the originals with ``evaluate_folders``, and writes a Markdown report
with a sample grid and an SSIM-vs-kilobytes plot.

Usage: python bench/eval_report.py [--data DIR] [--count 16] [--out bench/results/eval_report]
``--data`` defaults to $EDGEGAN_DATA/facades/A/train, then ../shared/data/facades/A/train,
then synthetic images (so it also runs on a fresh clone).
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console

from edgegan.data import list_images, load_image
from edgegan.data.shared import shared_data
from edgegan.fileio import atomic_write_json
from edgegan.metrics.folders import EvalOptions, evaluate_folders
from edgegan.report import write_report

QUALITIES = (5, 10, 20, 40, 70, 95)


def _synthetic(folder: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:192, 0:192] / 192.0
    for i in range(count):
        f = rng.uniform(2, 8, 3)
        img = np.stack([np.sin(f[c] * (xx + yy * (c + 1)) + i) for c in range(3)], axis=2)
        Image.fromarray(((img + 1) * 127.5).astype(np.uint8)).save(folder / f"{i:03d}.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--count", type=int, default=16)
    ap.add_argument("--out", type=Path, default=Path("bench/results/eval_report"))
    args = ap.parse_args()
    console = Console(width=120)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        real = tmp / "real"
        real.mkdir()
        data = args.data or shared_data("facades/A/train")
        if data is None:
            _synthetic(real, args.count)
            source = "synthetic images"
        else:
            for p in list_images(data)[: args.count]:
                Image.open(p).convert("RGB").save(real / f"{p.stem}.png")
            source = str(data)
        series = []
        for q in QUALITIES:
            fake = tmp / f"q{q}"
            fake.mkdir()
            total = 0
            for p in list_images(real):
                buf = io.BytesIO()
                Image.open(p).save(buf, format="JPEG", quality=q)
                total += buf.tell()
                Image.open(io.BytesIO(buf.getvalue())).save(fake / p.name)
            res = evaluate_folders(real, fake, EvalOptions(lpips=False))
            n = res.counts["n_pairs"]
            point = {"name": f"q={q}", "quality": q, "kb_per_image": total / n / 1024, **res.metrics}
            series.append(point)
            kb, psnr_db, ssim_v = point["kb_per_image"], point["psnr"], point["ssim"]
            console.log(f"JPEG q={q}: {kb:.1f} kB, PSNR {psnr_db:.2f}, SSIM {ssim_v:.4f}")
        reals = list_images(real)[:5]
        rows = [[load_image(p) for p in reals]] + [
            [load_image(tmp / f"q{q}" / p.name) for p in reals] for q in (5, 20, 95)
        ]
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.out / "series.json", series)
        page = write_report(
            args.out,
            title="JPEG size vs quality (tiny evaluation run)",
            notes=[
                f"{len(list_images(real))} images from {source}, re-encoded as JPEG at qualities {QUALITIES} "
                "and compared with the originals by `edgegan.metrics.folders.evaluate_folders`.",
            ],
            metrics={f"ssim at q={p['quality']}": p["ssim"] for p in series},
            grids={"samples": rows},
            grid_labels={"samples": ["original", "q=5", "q=20", "q=95"]},
            series=series,
            x="kb_per_image",
            y="ssim",
        )
    console.print(f"wrote {page}, {args.out / 'samples.png'}, {args.out / 'tradeoff.png'}")


if __name__ == "__main__":
    main()
