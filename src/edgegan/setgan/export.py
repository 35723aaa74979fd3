"""Per-scale ONNX export, the manifest a client downloads from, and an ONNX Runtime pyramid."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgegan.errors import CheckpointError, EdgeganError
from edgegan.export.onnx import export_onnx
from edgegan.fileio import atomic_write_json
from edgegan.profile.latency import onnx_session
from edgegan.setgan.pyramid import SETGANPyramid
from edgegan.setgan.run import SETGANRun

MANIFEST = "manifest.json"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export_scale(run: SETGANRun, i: int, generator: Any = None) -> dict[str, Any]:
    """Export finished scale ``i`` to ``RUN/onnx/scale_XX.onnx`` and record its manifest entry."""
    g = generator if generator is not None else run.load_generator(i)
    info = run.scale_info(i)
    size = run.spec().sizes[i]
    out = run.path / "onnx"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"scale_{i:02d}.onnx"
    result = export_onnx(g.cpu().eval(), path, size=size)
    weights = run.scale_dir(i) / "model.safetensors"
    entry = {
        "index": i,
        "file": path.name,
        "bytes": path.stat().st_size,
        "sha256": _sha256(path),
        "weights_file": str(weights.relative_to(run.path)),
        "weights_sha256": _sha256(weights),
        "size": [size[1], size[0]],  # [w, h] as the report shows sizes
        "channels": g.config.channels,
        "noise_amp": info["noise_amp"],
        "noise_channels": 1 if i == 0 else 3,
        "max_abs_diff": result.max_abs_diff,
    }
    atomic_write_json(out / f"scale_{i:02d}.json", entry)
    return entry


def write_manifest(run: SETGANRun, limit: int | None = None) -> dict[str, Any]:
    """(Re)write ``RUN/onnx/manifest.json`` from the scales exported so far.

    ``available`` counts the scales 0..k-1 that can run now (a contiguous prefix: a client
    cannot use scale 5 before scales 0..4 exist); ``limit`` publishes at most that many.
    """
    out = run.path / "onnx"
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for f in sorted(out.glob("scale_*.json")):
        entry = json.loads(f.read_text())
        if (out / entry["file"]).is_file():
            entries.append(entry)
    entries.sort(key=lambda e: e["index"])
    available = 0
    while available < len(entries) and entries[available]["index"] == available:
        available += 1
    if limit is not None:
        available = min(available, limit)
    entries = entries[:available]
    spec = run.spec()
    _, z_rec = run.load_reals()
    manifest = {
        "format": "edgegan.setgan.manifest/1",
        "n_scales": spec.n_scales,
        "available": available,
        "factor": spec.factor,
        "sizes": [[w, h] for h, w in spec.sizes],
        "inputs": ["prev", "noise"],
        "z_rec_shape": list(z_rec.shape),
        "scales": entries,
    }
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def is_exported(run: SETGANRun, i: int) -> bool:
    """Scale ``i`` has an ONNX file made from its current weights (so it need not be redone:
    a client may already hold it, and re-exporting could change its bytes)."""
    entry_path = run.path / "onnx" / f"scale_{i:02d}.json"
    if not entry_path.is_file():
        return False
    entry = json.loads(entry_path.read_text())
    onnx_file = run.path / "onnx" / entry["file"]
    weights = run.scale_dir(i) / "model.safetensors"
    return onnx_file.is_file() and weights.is_file() and entry["weights_sha256"] == _sha256(weights)


def export_scales(run: SETGANRun, pyr: SETGANPyramid | None = None, limit: int | None = None) -> dict[str, Any]:
    """Export every trained scale not exported yet and write the manifest (what a client downloads)."""
    pyr = pyr or run.load_pyramid()
    for i, g in enumerate(pyr.generators):
        if not is_exported(run, i):
            export_scale(run, i, g)
    return write_manifest(run, limit)


class OnnxGenerator:
    """One exported scale run by ONNX Runtime, called like ``SinGANGenerator(prev, noise)``."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        self.path = path
        self.session = onnx_session(path, threads, spin=False)

    def __call__(self, prev: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        feed = {"prev": prev.cpu().numpy().astype(np.float32), "noise": noise.cpu().numpy().astype(np.float32)}
        return torch.from_numpy(self.session.run(None, feed)[0])


def read_manifest(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{folder} has no {MANIFEST}; train the run first (or export it)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None


def onnx_pyramid(
    folder: str | Path, *, k: int | None = None, threads: int | None = None, verify: bool = True
) -> SETGANPyramid:
    """A pyramid whose scales 0..k (default: all exported) run with ONNX Runtime.

    Each file is checked against the manifest's sha256 before it is loaded.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    entries = sorted(manifest["scales"], key=lambda e: e["index"])[: manifest["available"]]
    if k is not None:
        if not 0 <= k < len(entries):
            raise EdgeganError(f"{folder}: scales 0..{k} requested, {len(entries)} exported")
        entries = entries[: k + 1]
    gens = []
    for entry in entries:
        f = folder / entry["file"]
        if not f.is_file():
            raise CheckpointError(f"{f} listed in the manifest is missing")
        if verify and _sha256(f) != entry["sha256"]:
            raise CheckpointError(f"{f} does not match the sha256 in {MANIFEST}")
        gens.append(OnnxGenerator(f, threads))
    sizes = [(h, w) for w, h in manifest["sizes"]]
    z_rec = None
    reals = folder.parent / "reals.safetensors"
    if reals.is_file():
        from safetensors.torch import load_file

        z_rec = load_file(str(reals))["z_rec"]
    return SETGANPyramid(gens, [e["noise_amp"] for e in entries], sizes, manifest["factor"], z_rec)
