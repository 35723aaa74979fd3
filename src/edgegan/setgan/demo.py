"""``make demo``: SETGAN end to end on an image that ships with scikit-image.

Trains the pyramid in parallel mode with reduced settings (so a 2-core laptop finishes in
a few minutes), picks the scales for a default SSIM threshold, writes samples of several
sizes, a harmonization-style injection example, the trade-off plot and the report.
Running it again reuses the finished scales.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from edgegan.data.images import save_image
from edgegan.progress import ScaleBars
from edgegan.report import save_grid
from edgegan.setgan import apps
from edgegan.setgan.config import SETGANConfig
from edgegan.setgan.report import finalize
from edgegan.setgan.train import fit

# Reduced from the paper's 250 px / 2000 iterations / 128 channels to fit ~10 CPU-minutes.
DEMO_CONFIG = SETGANConfig(max_size=96, min_size=20, nfc=32, max_nfc=32, iters=300, mode="parallel", ckpt_every=100)
DEMO_QUALITY = 0.6


def demo_image() -> torch.Tensor:
    """scikit-image's Hubble Deep Field (bundled with the package: no download), [1, 3, H, W] in [-1, 1]."""
    from skimage import data

    arr = np.asarray(data.hubble_deep_field(), dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1)[None] / 127.5 - 1.0


def run_setgan_demo(
    out: Path,
    *,
    iters: int | None = None,
    workers: int | None = None,
    quality: float = DEMO_QUALITY,
    console: Console | None = None,
) -> dict[str, Any]:
    console = console or Console()
    cfg = DEMO_CONFIG if iters is None else SETGANConfig(**{**DEMO_CONFIG.to_dict(), "iters": iters})
    image = demo_image()
    out.mkdir(parents=True, exist_ok=True)
    save_image(image[0], out / "input.png")
    workers = workers or max(1, min(os.cpu_count() or 1, 4))
    console.print(f"SETGAN demo: hubble_deep_field, {cfg.max_size} px, {cfg.iters} iterations/scale, {workers} workers")
    started = time.perf_counter()
    with ScaleBars(console) as bars:
        run = fit(image, out / "run", cfg, workers=workers, resume=True, quality=quality, progress=bars.update)
    console.print(f"training: {time.perf_counter() - started:.1f} s; building the report (export, SSIM, costs)")
    report = finalize(run, quality=quality, repeats=5)
    pyr = run.load_pyramid()
    gen = torch.Generator().manual_seed(0)
    samples = {
        "samples": pyr.sample(4, generator=gen),
        "samples_wide": pyr.sample(2, scale=(1.0, 2.0), generator=gen),
        "samples_tall": pyr.sample(2, out_size=(160, 64), generator=gen),
    }
    for name, batch in samples.items():
        save_grid(out / f"{name}.png", [list(batch)], cell=160)
    # Harmonization-style injection: paste a bright patch, inject at a middle scale, blend.
    reals, _ = run.load_reals()
    real = reals[-1]
    h, w = real.shape[-2:]
    naive = real.clone()
    mask = torch.zeros(1, 1, h, w)
    top, left, ph, pw = h // 3, w // 3, h // 5, w // 5
    naive[:, :, top : top + ph, left : left + pw] = torch.tensor([0.9, 0.6, 0.2]).view(1, 3, 1, 1)
    mask[:, :, top : top + ph, left : left + pw] = 1.0
    n = max(1, pyr.n_scales // 2)
    harmonized = apps.harmonize(pyr, naive, mask, n, generator=gen)
    save_grid(out / "harmonize.png", [[real[0], naive[0], harmonized[0]]], cell=192)
    console.print(
        f"chosen scales for SSIM >= {quality}: "
        + (
            f"{report['chosen_scales']} of {report['n_scales']} (EDP saving {100 * report['edp_saving']:.1f}%)"
            if report["chosen_scales"]
            else "threshold not reached; all scales used"
        )
    )
    console.print(f"report:      {run.path / 'report.md'} (+ report.json, tradeoff.png, scales.png)")
    console.print(f"samples:     {out / 'samples.png'}, {out / 'samples_wide.png'}, {out / 'samples_tall.png'}")
    console.print(f"injection:   {out / 'harmonize.png'} (real | naive paste | harmonized at scale {n})")
    console.print(f"ONNX scales: {run.path / 'onnx'} (manifest.json)")
    return report
