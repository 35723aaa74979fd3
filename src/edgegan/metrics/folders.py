"""Evaluate a folder of generated images against a folder of real ones (``edgegan eval``).

Paired metrics (PSNR, SSIM, MS-SSIM, L1, LPIPS) need files matched by name; distribution
metrics (FID, KID) need the FID Inception weights; single-image metrics (SIFID, diversity)
apply when the real folder holds one image. Whatever cannot be computed is listed under
``skipped`` with the reason, never silently left out.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from edgegan.data.images import list_images, load_image
from edgegan.errors import ConfigError, EdgeganError
from edgegan.metrics.reference import paired_metrics
from edgegan.metrics.ssim import ms_ssim_min_size

Pairing = Literal["auto", "name", "none"]


@dataclass
class EvalOptions:
    pairing: Pairing = "auto"
    size: tuple[int, int] | None = None  # resize both sides before paired metrics
    weights: Path | None = None  # Inception weights file, or a folder holding all weights
    device: str = "cpu"
    batch_size: int = 16
    kid_subset_size: int = 1000
    kid_subsets: int = 100
    lpips: bool = True
    seg_model: Path | None = None
    labels: Path | None = None
    num_classes: int | None = None
    seg_input_range: str = "unit"
    max_pixels: int | None = None


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    skipped: dict[str, str]
    counts: dict[str, int]
    pairs: list[tuple[Path, Path]] = field(default_factory=list)
    real_files: list[Path] = field(default_factory=list)
    fake_files: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**self.metrics, **self.counts, "skipped": dict(self.skipped)}


def _load01(path: Path, opts: EvalOptions, size: tuple[int, int] | None = None) -> torch.Tensor:
    kw: dict[str, Any] = {"size": size}
    if opts.max_pixels is not None:
        kw["max_pixels"] = opts.max_pixels
    return (load_image(path, **kw) + 1) / 2


def match_pairs(reals: list[Path], fakes: list[Path], pairing: Pairing) -> tuple[list[tuple[Path, Path]], str | None]:
    """Pairs (real, fake) by file stem, or ([], reason) when the folders are not paired."""
    if pairing == "none":
        return [], "pairing disabled (--pairing none)"
    by_stem = {p.stem: p for p in reals}
    pairs = [(by_stem[f.stem], f) for f in fakes if f.stem in by_stem]
    unmatched = len(fakes) - len(pairs)
    if unmatched == 0 and pairs:
        return pairs, None
    reason = f"folders are not paired by file name ({unmatched} of {len(fakes)} generated files have no real file)"
    if pairing == "name":
        raise EdgeganError(reason)
    return [], reason


def _paired(pairs: list[tuple[Path, Path]], opts: EvalOptions, skipped: dict[str, str]) -> dict[str, float]:
    sums: dict[str, list[float]] = {}
    small = 0
    for real_path, fake_path in pairs:
        real = _load01(real_path, opts, opts.size)
        fake = _load01(fake_path, opts, opts.size)
        if real.shape != fake.shape:
            raise EdgeganError(
                f"{fake_path.name} is {fake.shape[2]}x{fake.shape[1]} but {real_path.name} is "
                f"{real.shape[2]}x{real.shape[1]}; pass --size to compare them at one size"
            )
        if min(real.shape[-2:]) < 11:
            raise EdgeganError(f"{real_path.name} is smaller than 11 px; SSIM needs an 11x11 window")
        values = paired_metrics(real[None].to(opts.device), fake[None].to(opts.device))
        small += "ms_ssim" not in values
        for k, v in values.items():
            sums.setdefault(k, []).append(float(v[0]))
    out = {k: float(np.mean(v)) for k, v in sums.items() if k != "ms_ssim" or not small}
    if small:
        skipped["ms_ssim"] = f"{small} image pair(s) smaller than {ms_ssim_min_size()} px a side (5-scale MS-SSIM)"
    return out


def _inception_batches(files: list[Path], opts: EvalOptions) -> Iterator[torch.Tensor]:
    from edgegan.metrics.inception import clean_resize

    batch: list[torch.Tensor] = []
    for path in files:
        batch.append(clean_resize(_load01(path, opts)[None])[0])
        if len(batch) == opts.batch_size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)


def _weights_folder(opts: EvalOptions) -> Path | None:
    return opts.weights if opts.weights is not None and opts.weights.is_dir() else None


def _distribution(
    reals: list[Path], fakes: list[Path], opts: EvalOptions, skipped: dict[str, str], progress: bool
) -> dict[str, Any]:
    from edgegan.weights import available

    path, reason = available("inception-fid", opts.weights)
    names = ["fid", "kid"] + (["sifid"] if len(reals) == 1 else [])
    if path is None:
        for n in names:
            skipped[n] = f"no Inception weights: {reason}"
        return {}
    from edgegan.metrics.fid import fid_from_features, kid, sifid
    from edgegan.metrics.inception import extract_features, load_fid_inception

    model = load_fid_inception(path, device=opts.device)
    out: dict[str, Any] = {}
    if len(reals) == 1:
        real = _load01(reals[0], opts)[None]
        fakes_t = [_load01(f, opts)[None] for f in fakes]
        res = sifid(model, real.to(opts.device), torch.cat(fakes_t).to(opts.device)) if _same_size(fakes_t) else None
        if res is None:
            skipped["sifid"] = "generated images differ in size"
        else:
            out["sifid"] = float(res.mean)
    if len(reals) < 2 or len(fakes) < 2:
        for n in ("fid", "kid"):
            skipped[n] = f"needs at least 2 images on each side (real {len(reals)}, generated {len(fakes)})"
        return out
    kw = {"batch_size": opts.batch_size, "device": opts.device, "resize": "clean", "progress": progress}
    f_real = extract_features(model, _inception_batches(reals, opts), **kw)
    f_fake = extract_features(model, _inception_batches(fakes, opts), **kw)
    out["fid"] = float(fid_from_features(f_real, f_fake).value)
    k = kid(f_real, f_fake, num_subsets=opts.kid_subsets, subset_size=opts.kid_subset_size)
    out["kid"], out["kid_std"] = float(k.mean), float(k.std)
    if k.subset_size < opts.kid_subset_size:
        out["kid_subset_size"] = int(k.subset_size)
    return out


def _same_size(tensors: list[torch.Tensor]) -> bool:
    return len({tuple(t.shape) for t in tensors}) == 1


def _lpips(pairs: list[tuple[Path, Path]], opts: EvalOptions, skipped: dict[str, str]) -> dict[str, float]:
    from edgegan.weights import available

    folder = _weights_folder(opts)
    missing = [r for r in (available("alexnet", folder)[1], available("lpips-alex", folder)[1]) if r]
    if missing:
        skipped["lpips"] = f"no LPIPS weights: {missing[0]}"
        return {}
    from edgegan.metrics.lpips import load_lpips

    net = load_lpips(backbone_path=folder, heads_path=folder, device=opts.device)
    values = []
    with torch.no_grad():
        for real_path, fake_path in pairs:
            real = _load01(real_path, opts, opts.size)[None].to(opts.device) * 2 - 1
            fake = _load01(fake_path, opts, opts.size)[None].to(opts.device) * 2 - 1
            values.append(float(net(fake, real)[0]))
    return {"lpips": float(np.mean(values))}


def _segmentation(fakes: list[Path], opts: EvalOptions) -> dict[str, Any]:
    from edgegan.metrics.segmentation import SegmentationModel, confusion_matrix, load_label_map, segmentation_scores

    if opts.labels is None or opts.num_classes is None:
        raise ConfigError("--seg-model needs --labels DIR and --num-classes N")
    labels = {p.stem: p for p in list_images(opts.labels)}
    missing = [f.name for f in fakes if f.stem not in labels]
    if missing:
        raise EdgeganError(f"{len(missing)} generated image(s) have no label map in {opts.labels} (e.g. {missing[0]})")
    model = SegmentationModel.load(opts.seg_model, input_range=opts.seg_input_range, device=opts.device)
    total: torch.Tensor | None = None
    for fake_path in fakes:
        label = load_label_map(labels[fake_path.stem])
        image = load_image(fake_path)[None]
        if image.shape[-2:] != label.shape:
            image = F.interpolate(image, size=tuple(label.shape), mode="bicubic", antialias=True).clamp(-1, 1)
        pred = model(image)
        cm = confusion_matrix(pred[0].cpu(), label, opts.num_classes)
        total = cm if total is None else total + cm
    assert total is not None  # list_images never returns an empty list
    scores = segmentation_scores(total)
    return {"miou": float(scores["miou"]), "pixel_accuracy": float(scores["pixel_accuracy"])}


def _diversity(reals: list[Path], fakes: list[Path], opts: EvalOptions, skipped: dict[str, str]) -> dict[str, float]:
    from edgegan.metrics.fid import diversity

    real = _load01(reals[0], opts)
    samples = [_load01(f, opts) for f in fakes]
    if not _same_size(samples) or samples[0].shape != real.shape:
        skipped["diversity"] = "generated images must all have the real image's size"
        return {}
    return {"diversity": float(diversity(torch.stack(samples), real))}


def evaluate_folders(
    real_dir: str | Path, fake_dir: str | Path, opts: EvalOptions | None = None, *, progress: bool = False
) -> EvalResult:
    """Compute every metric the inputs and available weights allow; say why for the rest."""
    opts = opts or EvalOptions()
    reals, fakes = list_images(real_dir), list_images(fake_dir)
    skipped: dict[str, str] = {}
    metrics: dict[str, Any] = {}
    pairs, reason = match_pairs(reals, fakes, opts.pairing)
    if pairs:
        metrics.update(_paired(pairs, opts, skipped))
    else:
        for n in ("psnr", "ssim", "ms_ssim", "l1"):
            skipped[n] = str(reason)
    metrics.update(_distribution(reals, fakes, opts, skipped, progress))
    if pairs and opts.lpips:
        metrics.update(_lpips(pairs, opts, skipped))
    elif not opts.lpips:
        skipped["lpips"] = "disabled (--no-lpips)"
    else:
        skipped["lpips"] = str(reason)
    if len(reals) == 1 and len(fakes) >= 2:
        metrics.update(_diversity(reals, fakes, opts, skipped))
    if opts.seg_model is not None:
        metrics.update(_segmentation(fakes, opts))
    else:
        skipped["miou"] = "no segmentation model (--seg-model with --labels and --num-classes)"
    metrics = {k: (v if not isinstance(v, float) or math.isfinite(v) else str(v)) for k, v in metrics.items()}
    counts = {"n_real": len(reals), "n_fake": len(fakes), "n_pairs": len(pairs)}
    return EvalResult(metrics, skipped, counts, pairs, reals, fakes)
