"""A SETGAN run folder: config, real pyramid, per-scale generators and their markers.

    RUN/
        config.yaml          SETGANConfig plus the training image's description
        pyramid.json         scale sizes, factor, noise amplitudes as scales finish
        reals.safetensors    the real image at every scale and the reconstruction noise
        scales/scale_03/     a finished generator (config.json + model.safetensors)
        scales/scale_03.json marker written after the folder: noise amplitude, timing
        work/scale_03/       intra-scale checkpoints and metrics while a scale trains
        phase1/scale_03/     parallel "refresh" mode: the generator at the refresh point, and phase1.json

A scale is finished when its marker exists; finished scales are never retrained.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from edgegan.errors import CheckpointError, EdgeganError
from edgegan.fileio import atomic_path, atomic_write_json
from edgegan.models.singan import SinGANGenerator
from edgegan.registry import load as load_model
from edgegan.setgan.config import SETGANConfig
from edgegan.setgan.pyramid import PyramidSpec, SETGANPyramid


class SETGANRun:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # ------------------------------------------------------------------ paths
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def pyramid_path(self) -> Path:
        return self.path / "pyramid.json"

    @property
    def reals_path(self) -> Path:
        return self.path / "reals.safetensors"

    def scale_dir(self, i: int) -> Path:
        return self.path / "scales" / f"scale_{i:02d}"

    def marker(self, i: int) -> Path:
        return self.path / "scales" / f"scale_{i:02d}.json"

    def work_dir(self, i: int) -> Path:
        return self.path / "work" / f"scale_{i:02d}"

    def discriminator_dir(self, i: int) -> Path:
        return self.work_dir(i) / "discriminator"

    # ------------------------------------------------------------------ state
    def exists(self) -> bool:
        return self.pyramid_path.is_file()

    def pyramid_info(self) -> dict[str, Any]:
        if not self.pyramid_path.is_file():
            raise CheckpointError(f"{self.path} is not a SETGAN run (no pyramid.json)")
        try:
            return json.loads(self.pyramid_path.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{self.pyramid_path} is not valid JSON: {exc}") from None

    def config(self) -> SETGANConfig:
        return SETGANConfig.from_dict(self.pyramid_info()["config"])

    def update_config(self, cfg: SETGANConfig) -> None:
        """Record settings that may change between sessions (checkpoint interval, estimator draws)."""
        info = self.pyramid_info()
        atomic_write_json(self.pyramid_path, {**info, "config": cfg.to_dict()})

    def spec(self) -> PyramidSpec:
        info = self.pyramid_info()
        return PyramidSpec(tuple(tuple(s) for s in info["sizes"]), info["factor"], tuple(info["input_size"]))

    def write_info(self, spec: PyramidSpec, cfg: SETGANConfig, image: dict[str, Any]) -> None:
        info = {
            "format": "edgegan.setgan/1",
            "sizes": [list(s) for s in spec.sizes],
            "factor": spec.factor,
            "ratio": spec.ratio,
            "input_size": list(spec.input_size),
            "n_scales": spec.n_scales,
            "image": image,
            "config": cfg.to_dict(),
        }
        atomic_write_json(self.pyramid_path, info)

    def save_reals(self, reals: list[torch.Tensor], z_rec: torch.Tensor) -> None:
        tensors = {f"real_{i:02d}": r.contiguous() for i, r in enumerate(reals)}
        tensors["z_rec"] = z_rec.contiguous()
        with atomic_path(self.reals_path) as tmp:
            save_file(tensors, str(tmp))

    def load_reals(self) -> tuple[list[torch.Tensor], torch.Tensor]:
        if not self.reals_path.is_file():
            raise CheckpointError(f"{self.reals_path} is missing")
        t = load_file(str(self.reals_path))
        n = len([k for k in t if k.startswith("real_")])
        return [t[f"real_{i:02d}"] for i in range(n)], t["z_rec"]

    def phase1_dir(self, i: int) -> Path:
        """``refresh`` mode: scale i's generator as it stood when its inputs switched (see SETGANConfig)."""
        return self.path / "phase1" / f"scale_{i:02d}"

    def phase1_done(self, i: int) -> bool:
        return (self.phase1_dir(i) / "phase1.json").is_file()

    def finish_phase1(self, i: int, generator: SinGANGenerator, noise_amp: float, seconds: float) -> None:
        generator.cpu().eval().save(self.phase1_dir(i))
        info = {"index": i, "noise_amp": noise_amp, "train_seconds": seconds}
        atomic_write_json(self.phase1_dir(i) / "phase1.json", info)

    def phase1_info(self, i: int) -> dict[str, Any]:
        return json.loads((self.phase1_dir(i) / "phase1.json").read_text())

    def load_phase1_pyramid(self, k: int, device: str = "cpu") -> SETGANPyramid:
        """Scales 0..k as they stood at the refresh point (every one must have reached it)."""
        missing = [i for i in range(k + 1) if not self.phase1_done(i)]
        if missing:
            raise EdgeganError(f"{self.path}: scales {missing} have not reached the refresh point")
        gens, amps = [], []
        for i in range(k + 1):
            model = load_model(self.phase1_dir(i))
            if not isinstance(model, SinGANGenerator):
                raise CheckpointError(f"{self.phase1_dir(i)} does not hold a SinGAN generator")
            gens.append(model)
            amps.append(self.phase1_info(i)["noise_amp"])
        _, z_rec = self.load_reals()
        return SETGANPyramid(gens, amps, self.spec().sizes, self.spec().factor, z_rec).to(device)

    def is_done(self, i: int) -> bool:
        return self.marker(i).is_file() and (self.scale_dir(i) / "model.safetensors").is_file()

    def done_scales(self) -> list[int]:
        return [i for i in range(self.spec().n_scales) if self.is_done(i)]

    def scale_info(self, i: int) -> dict[str, Any]:
        return json.loads(self.marker(i).read_text())

    def finish_scale(self, i: int, generator: SinGANGenerator, info: dict[str, Any]) -> None:
        """Save a finished generator, then its marker: the marker's presence means 'done'."""
        generator.cpu().eval().save(self.scale_dir(i))
        digest = hashlib.sha256((self.scale_dir(i) / "model.safetensors").read_bytes()).hexdigest()
        atomic_write_json(self.marker(i), {"index": i, **info, "sha256": digest})

    def load_generator(self, i: int) -> SinGANGenerator:
        model = load_model(self.scale_dir(i))
        if not isinstance(model, SinGANGenerator):
            raise CheckpointError(f"{self.scale_dir(i)} does not hold a SinGAN generator")
        return model

    def record_training(self, entry: dict[str, Any]) -> None:
        """Append one training session (mode, wall seconds, workers...) to ``training.json``."""
        sessions = self.training_sessions()
        atomic_write_json(self.path / "training.json", {"sessions": [*sessions, entry]})

    def training_sessions(self) -> list[dict[str, Any]]:
        path = self.path / "training.json"
        return json.loads(path.read_text())["sessions"] if path.is_file() else []

    def load_pyramid(self, k: int | None = None, device: str = "cpu") -> SETGANPyramid:
        """Generators 0..k (default: every finished scale from 0 upwards without a gap)."""
        spec = self.spec()
        done = set(self.done_scales())
        if 0 not in done:
            raise EdgeganError(f"{self.path}: scale 0 has not finished training yet")
        last = 0
        while last + 1 in done and last + 1 < spec.n_scales:
            last += 1
        if k is not None:
            if not 0 <= k <= last:
                raise EdgeganError(f"{self.path}: scales 0..{k} requested, but only 0..{last} are trained")
            last = k
        gens = [self.load_generator(i) for i in range(last + 1)]
        amps = [self.scale_info(i)["noise_amp"] for i in range(last + 1)]
        _, z_rec = self.load_reals()
        return SETGANPyramid(gens, amps, spec.sizes, spec.factor, z_rec).to(device)
