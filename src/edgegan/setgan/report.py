"""After training: export, estimate quality per scale, measure costs, write the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from edgegan.fileio import atomic_write_json
from edgegan.metrics.fid import diversity as singan_diversity
from edgegan.metrics.patches import patch_realism, sample_diversity, stride_for
from edgegan.profile.energy import EnergyMeter
from edgegan.profile.machine import machine_info
from edgegan.report import write_report
from edgegan.setgan.costs import pyramid_costs
from edgegan.setgan.estimate import (
    DEFAULT_ESTIMATOR,
    ESTIMATORS,
    Estimator,
    choose_scales,
    estimate_per_scale,
    estimate_quality,
)
from edgegan.setgan.export import export_scales
from edgegan.setgan.pyramid import SETGANPyramid, resize
from edgegan.setgan.run import SETGANRun

PATCH = 7  # patch size of the realism score (px at each scale)
MAX_PATCHES = 4096  # sample patches scored per sample; the stride grows on larger scales to keep the cost bounded
SAMPLE_SEED = 100  # random samples of the report: seed SAMPLE_SEED + k, never the reconstruction noise's stream


def _sifid_model(weights: Path | None, device: str) -> tuple[Any, str | None]:
    from edgegan.weights import available

    path, reason = available("inception-fid", weights)
    if path is None:
        return None, reason
    from edgegan.metrics.inception import load_fid_inception

    return load_fid_inception(path, device=device), None


def _random_samples(pyr: SETGANPyramid, k: int, n: int) -> torch.Tensor:
    """``n`` fully random samples through scales 0..k at scale k's size, in [-1, 1] on the CPU."""
    gen = torch.Generator().manual_seed(SAMPLE_SEED + k)
    return pyr.sample(n, k, generator=gen).clamp(-1, 1).cpu()


def _sample_scores(samples: torch.Tensor, real: torch.Tensor) -> dict[str, Any]:
    """Patch realism and diversity of one scale's random samples (all on [0, 1] images)."""
    s, r = (samples + 1) / 2, (real.cpu() + 1) / 2
    stride = stride_for(tuple(s.shape[-2:]), PATCH, MAX_PATCHES)
    realism = patch_realism(s, r, patch=PATCH, stride=stride)
    return {
        "random_patch_rmse": float(realism.mean()),
        "random_patch_rmse_std": float(realism.std()) if len(realism) > 1 else 0.0,
        "random_patch_stride": stride,
        "random_diversity": sample_diversity(s),
        "random_diversity_singan": _singan_diversity(s, r),
        "random_samples": len(s),
    }


def _singan_diversity(samples: torch.Tensor, real: torch.Tensor) -> float | None:
    try:
        return singan_diversity(samples.numpy(), real.numpy())
    except ValueError:  # a constant real image: SinGAN's normalisation is undefined
        return None


def finalize(
    run: SETGANRun,
    *,
    quality: float | None = None,
    device: str = "cpu",
    repeats: int = 10,
    weights: Path | None = None,
    samples_per_scale: int = 4,
    estimator: Estimator = DEFAULT_ESTIMATOR,
) -> dict[str, Any]:
    """Export every scale, estimate SSIM (and SIFID) per k by both estimators, score random samples
    (patch realism, diversity), measure per-k costs, choose k for ``quality`` by ``estimator``
    ("chain" or "per_scale") and write report.json, report.md, tradeoff.png and scales.png."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}; got {estimator!r}")
    cfg = run.config()
    pyr = run.load_pyramid(device=device)
    export_scales(run, pyr)
    pyr = pyr.to(device)
    reals, _ = run.load_reals()
    real = reals[-1]
    sifid_model, sifid_reason = _sifid_model(weights, device)
    qualities = estimate_quality(pyr, real, draws=cfg.quality_draws, seed=cfg.seed, sifid_model=sifid_model)
    random_q = estimate_quality(pyr, real, draws=cfg.quality_draws, seed=cfg.seed, anchored=False)
    per_scale_q = estimate_per_scale(pyr, reals, draws=cfg.quality_draws, seed=cfg.seed, sifid_model=sifid_model)
    # The random samples shown in scales.png, scored at their own scale against the real image there
    # (at least 2, so that diversity is defined).
    samples = [_random_samples(pyr, k, max(samples_per_scale, 2)) for k in range(pyr.n_scales)]
    sample_scores = [_sample_scores(samples[k], reals[k]) for k in range(pyr.n_scales)]
    meter = EnergyMeter.detect(device)
    costs = pyramid_costs(run, pyr, device=device, repeats=repeats, meter=meter)
    by_estimator = {"chain": [q.ssim for q in qualities], "per_scale": [q.ssim for q in per_scale_q]}
    choices = {name: choose_scales(v, quality) if quality is not None else None for name, v in by_estimator.items()}
    chosen = choices[estimator]
    sessions = run.training_sessions()
    scales = []
    for q, rq, pq, sc, c in zip(qualities, random_q, per_scale_q, sample_scores, costs, strict=True):
        info = run.scale_info(q.index)
        scales.append(
            {
                **c,
                "ssim": q.ssim,  # the chain estimator, whichever estimator chose the scales
                "ssim_std": q.ssim_std,
                "ssim_chain": q.ssim,
                "ssim_random": rq.ssim,  # all scales random: reported, not used for the early exit
                "sifid": q.sifid,
                "ssim_per_scale": pq.ssim,
                "ssim_per_scale_std": pq.ssim_std,
                "ssim_per_scale_input": pq.input_ssim,  # the up-sampled real coarser image alone
                "sifid_per_scale": pq.sifid,
                **sc,
                "noise_amp": info["noise_amp"],
                "train_seconds": info["train_seconds"],
            }
        )
    draws = cfg.quality_draws
    descriptions = {
        "chain": "samples through scales 0..k with scale 0 on its reconstruction noise, "
        f"fresh noise above, up-sampled to full size, mean SSIM over {draws} draws",
        "per_scale": "scale k alone fed the up-sampled real image of scale k-1 (zeros at scale 0) and fresh noise "
        f"at its amplitude, SSIM against the real image of scale k, mean over {draws} draws",
    }
    report: dict[str, Any] = {
        "mode": cfg.mode,
        "train_seconds": sum(s.get("wall_seconds", 0.0) for s in sessions),
        "training_sessions": sessions,
        "n_scales": run.spec().n_scales,
        "trained_scales": pyr.n_scales,
        "ratio": run.spec().ratio,
        "quality_threshold": quality,
        "ssim_estimator": descriptions["chain"],  # what the per-scale "ssim" key holds
        "estimator": estimator,  # the estimator chosen_scales was picked by
        "estimators": descriptions,
        "chosen_scales": (chosen + 1) if chosen is not None else None,
        "chosen_index": chosen,
        "chosen_scales_by": {name: (k + 1) if k is not None else None for name, k in choices.items()},
        "threshold_met": chosen is not None if quality is not None else None,
        "edp_saving": (1.0 - scales[chosen]["edp_norm"]) if chosen is not None else None,
        "sample_scores": "fully random samples through scales 0..k at scale k's size (seed "
        f"{SAMPLE_SEED} + k): random_patch_rmse is the mean RMSE of each {PATCH}x{PATCH} patch to its nearest "
        "patch of the real image at that scale, random_diversity the mean pairwise per-pixel RMSE between "
        "samples, both on [0, 1] images; random_diversity_singan is SinGAN's (per-pixel std over samples / "
        "std of the real image). A copy of the real image scores 0 on realism and 0 on diversity; neither "
        "sees whether the layout is plausible.",
        "energy_source": meter.source,
        "energy_label": meter.label,
        "sifid_skipped": sifid_reason,
        "machine": machine_info(device),
        "config": cfg.to_dict(),
        "scales": scales,
    }
    atomic_write_json(run.path / "report.json", report)
    _write_pages(run, report, real, [s[:samples_per_scale] for s in samples])
    return report


def _write_pages(run: SETGANRun, report: dict[str, Any], real: torch.Tensor, samples: list[torch.Tensor]) -> None:
    size = tuple(real.shape[-2:])
    rows, labels = [], []
    for k, drawn in enumerate(samples):
        rows.append([real[0], *resize(drawn, size).clamp(-1, 1)])  # fully random, shown at full size
        labels.append(f"{k + 1} scales")
    series = [
        {
            "name": f"{s['scales']}",
            "estimator": name,
            "scales": s["scales"],
            "edp_norm": s["edp_norm"],
            "ssim": s[f"ssim_{name}"],
        }
        for name in report["estimators"]
        for s in report["scales"]
    ]
    chosen = report["chosen_scales"]
    notes = [
        f"Mode **{report['mode']}**, {report['trained_scales']} of {report['n_scales']} scales trained "
        f"(ratio r = {report['ratio']:.3f}) in {report['train_seconds']:.1f} s.",
        f"Energy: {report['energy_label']} (source `{report['energy_source']}`); EDP = energy × latency, "
        "normalised by the EDP of all scales.",
        "SSIM estimators: "
        + "; ".join(f"**{name}**: {text}" for name, text in report["estimators"].items())
        + ". `input` is the per-scale floor: the up-sampled real coarser image alone.",
        f"Random samples: {report['sample_scores']}",
    ]
    if report["quality_threshold"] is not None:
        others = ", ".join(
            f"{name}: {k if k else 'not met'}"
            for name, k in report["chosen_scales_by"].items()
            if name != report["estimator"]
        )
        notes.append(
            f"Quality threshold SSIM ≥ {report['quality_threshold']} by the **{report['estimator']}** estimator: "
            + (
                f"**{chosen} scales** (EDP saving {100 * report['edp_saving']:.1f}%)."
                if chosen
                else "not met by any scale; all scales are used."
            )
            + f" (Other estimators: {others}.)"
        )
    if report["sifid_skipped"]:
        notes.append(f"SIFID not computed: {report['sifid_skipped']}")

    def row(s: dict[str, Any]) -> str:
        per_scale = f"SSIM chain {s['ssim']:.3f}, per-scale {s['ssim_per_scale']:.3f}"
        if s["ssim_per_scale_input"] is not None:
            per_scale += f" (input {s['ssim_per_scale_input']:.3f})"
        return (
            per_scale
            + f", random samples: patch RMSE {s['random_patch_rmse']:.4f}, diversity {s['random_diversity']:.4f}"
            + f"; EDP {s['edp_norm']:.3f}, {s['macs'] / 1e6:.1f} MMACs, {s['latency_ms']['torch']:.1f} ms torch"
            + (f" / {s['latency_ms']['onnxruntime']:.1f} ms ORT" if "onnxruntime" in s["latency_ms"] else "")
            + f", {s['energy_j'] * 1000:.2f} mJ, trained in {s['train_seconds']:.1f} s"
        )

    write_report(
        run.path,
        title=f"SETGAN run {run.path.name}",
        notes=notes,
        metrics={f"scales 0..{s['index']}": row(s) for s in report["scales"]},
        grids={"scales": rows},
        grid_labels={"scales": labels},
        series=series,
        x="edp_norm",
        y="ssim",
        group="estimator",
    )
