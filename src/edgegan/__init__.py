"""edgegan: train, compress, adapt and run GANs on edge devices."""

from __future__ import annotations

__version__ = "0.1.0"

import importlib
from typing import TYPE_CHECKING, Any

from edgegan.errors import EdgeganError
from edgegan.registry import architectures, build, load, save_model

if TYPE_CHECKING:
    from edgegan.compress.distill import DistillConfig, distill, distill_from_folders
    from edgegan.compress.pipeline import PipelineConfig, run_pipeline
    from edgegan.compress.teacher import Pix2PixConfig, train_pix2pix
    from edgegan.export.onnx import export_onnx
    from edgegan.profile import profile_model

# The recipes and the exporter pull in ONNX, the data pipeline and the metrics; they are imported on
# first use (``edgegan.train_pix2pix``), so ``import edgegan`` stays as cheap as the registry.
_LAZY = {
    "DistillConfig": "edgegan.compress.distill",
    "PipelineConfig": "edgegan.compress.pipeline",
    "Pix2PixConfig": "edgegan.compress.teacher",
    "distill": "edgegan.compress.distill",
    "distill_from_folders": "edgegan.compress.distill",
    "export_onnx": "edgegan.export.onnx",
    "profile_model": "edgegan.profile",
    "run_pipeline": "edgegan.compress.pipeline",
    "train_pix2pix": "edgegan.compress.teacher",
}

__all__ = [
    "DistillConfig",
    "EdgeganError",
    "PipelineConfig",
    "Pix2PixConfig",
    "__version__",
    "architectures",
    "build",
    "distill",
    "distill_from_folders",
    "export_onnx",
    "load",
    "profile_model",
    "run_pipeline",
    "save_model",
    "train_pix2pix",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edgegan' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
