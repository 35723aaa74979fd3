"""``make demo``: SETGAN end to end on two of SinGAN's own images (shipped with the package, MIT).

* ``balloons``: a pyramid trained in serial mode (SinGAN, cold start per scale) with reduced settings;
  random samples at the training size, twice as wide, and at another aspect ratio; the scale choice for a
  default SSIM threshold, the trade-off plot and the report. Serial, because random samples need scales that
  have learnt to refine what the coarser scales generate: at these settings the paper's parallel mode (each
  scale trained on the real coarser image only) gives washed-out samples with streaks (measured on balloons,
  96 px, 300 iterations: nearest-patch RMSE 0.047 and diversity 0.095 against serial's 0.041 and 0.140, and the
  grids show it; ``bench/setgan_quality.py`` compares the modes).
* ``starry_night``: a second pyramid, trained in parallel mode, for SinGAN's harmonization example: the shipped
  naive composite (a pasted object) and its mask are injected at a middle scale and blended back through the
  mask. Injection feeds each scale a real coarser image, which is what parallel scales are trained on.

Both are reduced from the paper's 250 px / 2000 iterations / up to 128 channels so that a 2-core
laptop finishes in about ten minutes; running it again reuses the finished scales.
"""

from __future__ import annotations

import os
import time
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from edgegan.data.images import load_image, save_image
from edgegan.progress import ScaleBars
from edgegan.report import save_grid
from edgegan.setgan import apps
from edgegan.setgan.config import SETGANConfig
from edgegan.setgan.report import finalize
from edgegan.setgan.train import fit

_REDUCED: dict[str, Any] = {"min_size": 20, "nfc": 32, "max_nfc": 32, "iters": 300, "ckpt_every": 100}
DEMO_CONFIG = SETGANConfig(max_size=96, mode="serial", warm_start=False, **_REDUCED)
# Harmonization feeds the real image in at one scale, what "real" parallel scales are trained on.
HARMONIZE_CONFIG = SETGANConfig(max_size=80, mode="parallel", parallel_inputs="real", **_REDUCED)
DEMO_QUALITY = 0.6
SAMPLE_IMAGE = "balloons.png"
HARMONIZE_IMAGE = "starry_night.png"
HARMONIZE_NAIVE = "starry_night_naive.png"
HARMONIZE_MASK = "starry_night_naive_mask.png"


def asset(name: str) -> Path:
    """Path of a shipped demo image (``edgegan/setgan/assets``)."""
    path = Path(str(resources.files("edgegan.setgan") / "assets" / name))
    if not path.is_file():
        raise FileNotFoundError(f"the demo image {name} is missing from the installed package ({path})")
    return path


def demo_image(name: str = SAMPLE_IMAGE) -> torch.Tensor:
    """A shipped demo image as ``[1, 3, H, W]`` in [-1, 1]."""
    return load_image(asset(name))[None]


def _train(image: torch.Tensor, out: Path, cfg: SETGANConfig, workers: int, quality: float, console: Console) -> Any:
    with ScaleBars(console) as bars:
        return fit(image, out, cfg, workers=workers, resume=True, quality=quality, progress=bars.update)


def run_setgan_demo(
    out: Path,
    *,
    iters: int | None = None,
    workers: int | None = None,
    quality: float = DEMO_QUALITY,
    console: Console | None = None,
) -> dict[str, Any]:
    console = console or Console()
    cfg, h_cfg = DEMO_CONFIG, HARMONIZE_CONFIG
    if iters is not None:
        cfg = SETGANConfig(**{**cfg.to_dict(), "iters": iters})
        h_cfg = SETGANConfig(**{**h_cfg.to_dict(), "iters": iters})
    out.mkdir(parents=True, exist_ok=True)
    workers = workers or max(1, min(os.cpu_count() or 1, 4))
    started = time.perf_counter()

    # 1. Random samples from balloons.
    image = demo_image(SAMPLE_IMAGE)
    save_image(image[0], out / "input.png")
    console.print(f"SETGAN demo 1/2: balloons, {cfg.mode}, {cfg.max_size} px, {cfg.iters} iterations/scale")
    run = _train(image, out / "run", cfg, workers, quality, console)
    console.print(f"training: {time.perf_counter() - started:.1f} s; building the report (export, SSIM, costs)")
    report = finalize(run, quality=quality, repeats=5)
    pyr = run.load_pyramid()
    gen = torch.Generator().manual_seed(0)
    samples = {
        "samples": pyr.sample(4, generator=gen),
        "samples_wide": pyr.sample(2, scale=(1.0, 2.0), generator=gen),
        "samples_tall": pyr.sample(2, scale=(1.5, 0.75), generator=gen),
    }
    reals, _ = run.load_reals()
    save_grid(out / "samples.png", [[reals[-1][0], *samples["samples"]]], cell=160)
    for name in ("samples_wide", "samples_tall"):
        save_grid(out / f"{name}.png", [list(samples[name])], cell=200)

    # 2. SinGAN's harmonization example on starry_night with the shipped composite and mask.
    h_image = demo_image(HARMONIZE_IMAGE)
    console.print(
        f"SETGAN demo 2/2: starry_night for harmonization, {h_cfg.mode}, {h_cfg.max_size} px, {h_cfg.iters} iterations"
    )
    h_run = _train(h_image, out / "harmonize_run", h_cfg, workers, quality, console)
    h_pyr = h_run.load_pyramid()
    naive = demo_image(HARMONIZE_NAIVE)
    mask = apps.load_mask(asset(HARMONIZE_MASK))
    n = max(1, h_pyr.n_scales // 2)
    harmonized = {
        k: apps.harmonize(h_pyr, naive, mask, k, generator=torch.Generator().manual_seed(0)) for k in (n, n + 1)
    }
    size = h_pyr.sizes[-1]
    h_real = torch.nn.functional.interpolate(naive, size=size, mode="bicubic", align_corners=False).clamp(-1, 1)
    save_grid(out / "harmonize.png", [[h_real[0], *(v[0] for v in harmonized.values())]], cell=224)
    console.print(
        f"chosen scales for SSIM >= {quality}: "
        + (
            f"{report['chosen_scales']} of {report['n_scales']} (EDP saving {100 * report['edp_saving']:.1f}%)"
            if report["chosen_scales"]
            else "threshold not reached; all scales used"
        )
    )
    console.print(f"total: {time.perf_counter() - started:.0f} s")
    console.print(f"report:      {run.path / 'report.md'} (+ report.json, tradeoff.png, scales.png)")
    console.print(f"samples:     {out / 'samples.png'} (real, then 4 samples), {out / 'samples_wide.png'}, ")
    console.print(f"             {out / 'samples_tall.png'}")
    console.print(f"harmonize:   {out / 'harmonize.png'} (naive composite | injected at scales {n} and {n + 1})")
    console.print(f"ONNX scales: {run.path / 'onnx'} (manifest.json)")
    return report
