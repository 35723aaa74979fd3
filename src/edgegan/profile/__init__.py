"""Cost of a network: parameters, MACs (true and GAN-Compression convention), latency, memory."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgegan.errors import EdgeganError
from edgegan.profile.latency import Timing, onnx_latency, torch_latency
from edgegan.profile.machine import machine_info, machine_line
from edgegan.profile.macs import CostReport, LayerCost, count_params, profile_macs
from edgegan.profile.memory import peak_memory

__all__ = [
    "CostReport",
    "LayerCost",
    "Timing",
    "count_params",
    "machine_info",
    "machine_line",
    "onnx_latency",
    "peak_memory",
    "profile_macs",
    "profile_model",
    "torch_latency",
]


def _to(x: torch.Tensor | tuple[torch.Tensor, ...], device: str) -> torch.Tensor | tuple[torch.Tensor, ...]:
    return tuple(t.to(device) for t in x) if isinstance(x, tuple) else x.to(device)


def example_input(
    model: nn.Module, size: int | tuple[int, int], batch: int = 1
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    maker = getattr(model, "example_input", None)
    if callable(maker):
        return maker(size, batch)
    h, w = (size, size) if isinstance(size, int) else size
    return torch.randn(batch, 3, h, w)


def profile_model(
    model: nn.Module,
    size: int | tuple[int, int] = 256,
    *,
    batch: int = 1,
    latency: bool = False,
    onnx: bool = True,
    repeats: int = 10,
    warmup: int = 3,
    threads: int | None = None,
    memory: bool = False,
    layers: bool = False,
    device: str = "cpu",
) -> dict[str, Any]:
    """Profile ``model`` at ``size`` and return a JSON-ready dict.

    Always: ``params``, ``macs``, ``macs_gc``. With ``latency``: ``latency_ms`` per backend
    (PyTorch eager, and ONNX Runtime on CPU when ``onnx``) plus the machine description.
    With ``memory``: peak memory of one inference. With ``layers``: a per-layer table.
    """
    model = model.eval()
    x = example_input(model, size, batch)
    try:
        report: CostReport = profile_macs(model, x)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        shape = tuple((x[0] if isinstance(x, tuple) else x).shape)
        raise EdgeganError(f"input {shape} does not fit {getattr(model, 'arch', 'model')}: {first}") from None
    out: dict[str, Any] = {"arch": getattr(model, "arch", type(model).__name__), **report.to_dict(layers=layers)}
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        out["config"] = config.to_dict()
    if latency:
        dev_model, dev_x = model.to(device), _to(x, device)
        timings = {"torch": torch_latency(dev_model, dev_x, warmup=warmup, repeats=repeats, threads=threads)}
        model.cpu()
        if onnx:
            from edgegan.export.onnx import export_onnx

            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "model.onnx"
                export_onnx(model, path, example=x, check=False)
                timings["onnxruntime"] = onnx_latency(path, x, warmup=warmup, repeats=repeats, threads=threads)
        out["latency_ms"] = {k: t.median_ms for k, t in timings.items()}
        out["latency"] = {k: t.to_dict() for k, t in timings.items()}
        out["machine"] = machine_info(device)
    if memory:
        out["memory_mb"] = peak_memory(model.to(device), _to(x, device), threads)
        model.cpu()
    return out
