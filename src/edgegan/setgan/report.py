"""After training: export, estimate quality per scale, measure costs, write the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from edgegan.fileio import atomic_write_json
from edgegan.profile.energy import EnergyMeter
from edgegan.profile.machine import machine_info
from edgegan.report import write_report
from edgegan.setgan.costs import pyramid_costs
from edgegan.setgan.estimate import choose_scales, estimate_quality
from edgegan.setgan.export import export_scales
from edgegan.setgan.pyramid import resize
from edgegan.setgan.run import SETGANRun


def _sifid_model(weights: Path | None, device: str) -> tuple[Any, str | None]:
    from edgegan.weights import available

    path, reason = available("inception-fid", weights)
    if path is None:
        return None, reason
    from edgegan.metrics.inception import load_fid_inception

    return load_fid_inception(path, device=device), None


def finalize(
    run: SETGANRun,
    *,
    quality: float | None = None,
    device: str = "cpu",
    repeats: int = 10,
    weights: Path | None = None,
    samples_per_scale: int = 4,
) -> dict[str, Any]:
    """Export every scale, estimate SSIM (and SIFID) per k, measure per-k costs, choose k for
    ``quality`` and write report.json, report.md, tradeoff.png and scales.png into the run."""
    cfg = run.config()
    pyr = run.load_pyramid(device=device)
    export_scales(run, pyr)
    pyr = pyr.to(device)
    reals, _ = run.load_reals()
    real = reals[-1]
    sifid_model, sifid_reason = _sifid_model(weights, device)
    qualities = estimate_quality(pyr, real, draws=cfg.quality_draws, seed=cfg.seed, sifid_model=sifid_model)
    random_q = estimate_quality(pyr, real, draws=cfg.quality_draws, seed=cfg.seed, anchored=False)
    meter = EnergyMeter.detect(device)
    costs = pyramid_costs(run, pyr, device=device, repeats=repeats, meter=meter)
    chosen = choose_scales([q.ssim for q in qualities], quality) if quality is not None else None
    sessions = run.training_sessions()
    scales = []
    for q, rq, c in zip(qualities, random_q, costs, strict=True):
        info = run.scale_info(q.index)
        scales.append(
            {
                **c,
                "ssim": q.ssim,
                "ssim_std": q.ssim_std,
                "ssim_random": rq.ssim,  # all scales random: reported, not used for the early exit
                "sifid": q.sifid,
                "noise_amp": info["noise_amp"],
                "train_seconds": info["train_seconds"],
            }
        )
    report: dict[str, Any] = {
        "mode": cfg.mode,
        "train_seconds": sum(s.get("wall_seconds", 0.0) for s in sessions),
        "training_sessions": sessions,
        "n_scales": run.spec().n_scales,
        "trained_scales": pyr.n_scales,
        "ratio": run.spec().ratio,
        "quality_threshold": quality,
        "ssim_estimator": "samples through scales 0..k with scale 0 on its reconstruction noise, "
        f"fresh noise above, up-sampled to full size, mean SSIM over {cfg.quality_draws} draws",
        "chosen_scales": (chosen + 1) if chosen is not None else None,
        "chosen_index": chosen,
        "threshold_met": chosen is not None if quality is not None else None,
        "edp_saving": (1.0 - scales[chosen]["edp_norm"]) if chosen is not None else None,
        "energy_source": meter.source,
        "energy_label": meter.label,
        "sifid_skipped": sifid_reason,
        "machine": machine_info(device),
        "config": cfg.to_dict(),
        "scales": scales,
    }
    atomic_write_json(run.path / "report.json", report)
    _write_pages(run, report, pyr, real, samples_per_scale)
    return report


def _write_pages(run: SETGANRun, report: dict[str, Any], pyr: Any, real: torch.Tensor, per_scale: int) -> None:
    size = tuple(real.shape[-2:])
    rows, labels = [], []
    for k in range(pyr.n_scales):
        gen = torch.Generator().manual_seed(100 + k)
        samples = resize(pyr.sample(per_scale, k, generator=gen), size).clamp(-1, 1).cpu()  # fully random
        rows.append([real[0], *samples])
        labels.append(f"{k + 1} scales")
    series = [
        {"name": f"{s['scales']}", "scales": s["scales"], "edp_norm": s["edp_norm"], "ssim": s["ssim"]}
        for s in report["scales"]
    ]
    chosen = report["chosen_scales"]
    notes = [
        f"Mode **{report['mode']}**, {report['trained_scales']} of {report['n_scales']} scales trained "
        f"(ratio r = {report['ratio']:.3f}) in {report['train_seconds']:.1f} s.",
        f"Energy: {report['energy_label']} (source `{report['energy_source']}`); EDP = energy × latency, "
        "normalised by the EDP of all scales.",
    ]
    if report["quality_threshold"] is not None:
        notes.append(
            f"Quality threshold SSIM ≥ {report['quality_threshold']}: "
            + (
                f"**{chosen} scales** (EDP saving {100 * report['edp_saving']:.1f}%)."
                if chosen
                else "not met by any scale; all scales are used."
            )
        )
    if report["sifid_skipped"]:
        notes.append(f"SIFID not computed: {report['sifid_skipped']}")
    table = {
        f"scales 0..{s['index']}": (
            f"SSIM {s['ssim']:.3f}, EDP {s['edp_norm']:.3f}, {s['macs'] / 1e6:.1f} MMACs, "
            f"{s['latency_ms']['torch']:.1f} ms torch"
            + (f" / {s['latency_ms']['onnxruntime']:.1f} ms ORT" if "onnxruntime" in s["latency_ms"] else "")
            + f", {s['energy_j'] * 1000:.2f} mJ, trained in {s['train_seconds']:.1f} s"
        )
        for s in report["scales"]
    }
    write_report(
        run.path,
        title=f"SETGAN run {run.path.name}",
        notes=notes,
        metrics=table,
        grids={"scales": rows},
        grid_labels={"scales": labels},
        series=series,
        x="edp_norm",
        y="ssim",
    )
