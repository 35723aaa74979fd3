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


def export_scales(run: SETGANRun, pyr: SETGANPyramid | None = None) -> dict[str, Any]:
    """Export every trained scale to ``RUN/onnx/scale_XX.onnx`` and write ``RUN/onnx/manifest.json``
    (sizes, noise amplitudes, bytes and sha256 of each file: what a client needs to run them)."""
    pyr = pyr or run.load_pyramid()
    out = run.path / "onnx"
    out.mkdir(parents=True, exist_ok=True)
    scales = []
    for i, g in enumerate(pyr.generators):
        path = out / f"scale_{i:02d}.onnx"
        result = export_onnx(g.cpu().eval(), path, size=pyr.sizes[i])
        weights = run.scale_dir(i) / "model.safetensors"
        scales.append(
            {
                "index": i,
                "file": path.name,
                "bytes": path.stat().st_size,
                "sha256": _sha256(path),
                "weights_file": str(weights.relative_to(run.path)),
                "weights_sha256": _sha256(weights),
                "size": [pyr.sizes[i][1], pyr.sizes[i][0]],  # [w, h] as the report shows sizes
                "channels": g.config.channels,  # type: ignore[attr-defined]
                "noise_amp": pyr.noise_amps[i],
                "noise_channels": 1 if i == 0 else 3,
                "max_abs_diff": result.max_abs_diff,
            }
        )
    spec = run.spec()
    manifest = {
        "format": "edgegan.setgan.manifest/1",
        "n_scales": spec.n_scales,
        "available": len(scales),
        "factor": spec.factor,
        "sizes": [[w, h] for h, w in spec.sizes],
        "inputs": ["prev", "noise"],
        "z_rec_shape": list(pyr.z_rec.shape) if pyr.z_rec is not None else None,
        "scales": scales,
    }
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


class OnnxGenerator:
    """One exported scale run by ONNX Runtime, called like ``SinGANGenerator(prev, noise)``."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        self.path = path
        self.session = onnx_session(path, threads)

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
    entries = sorted(manifest["scales"], key=lambda e: e["index"])
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
