"""A latency model for a family of networks, fitted on direct ONNX Runtime measurements on this machine.

MACs are a poor proxy for CPU latency: a depthwise or a narrow pointwise convolution runs far below the
machine's peak MAC rate, and normalisation, padding and activations cost memory traffic that MACs do not
count. A search under a *latency* budget must nevertheless rank thousands of candidates, and exporting and
timing each one takes seconds. So we measure a few dozen members of the family directly (export to ONNX,
time in ONNX Runtime at the deployment size and thread count) and fit

    ms ≈ intercept + Σ_kind  coef[kind] · feature[kind]

with non-negative coefficients (a cost never makes a network faster), where the features are the MACs of
each convolution kind (dense, depthwise, pointwise, transposed, linear) in G and the elements written by
every other layer (normalisation, activations, padding) in M. Every feature scales with the pixel count,
so they are computed once at a small proxy size and scaled. The fit is checked on held-out members
(``error``): how far prediction is from direct measurement, which a search's report must quote.
"""

from __future__ import annotations

import math
import random
import statistics
import tempfile
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgegan.errors import ConfigError
from edgegan.fileio import atomic_write_json
from edgegan.profile.latency import onnx_latency
from edgegan.profile.machine import machine_info
from edgegan.profile.macs import profile_macs

__all__ = [
    "FEATURES",
    "LatencyModel",
    "cost_features",
    "fit_latency_model",
    "measure_onnx_ms",
]

FEATURES = ("conv_g", "depthwise_g", "pointwise_g", "transposed_g", "linear_g", "elements_m")

_PROXY = 32  # features are profiled at this size and scaled by the pixel count


def _kind(module: nn.Module) -> str:
    if isinstance(module, nn.ConvTranspose1d | nn.ConvTranspose2d | nn.ConvTranspose3d):
        return "transposed_g"
    if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        if module.groups > 1:
            return "depthwise_g"
        return "pointwise_g" if math.prod(module.kernel_size) == 1 else "conv_g"
    if isinstance(module, nn.Linear | nn.MultiheadAttention):
        return "linear_g"
    return "elements_m"


@torch.no_grad()
def cost_features(model: nn.Module, size: int | tuple[int, int], in_channels: int = 3) -> dict[str, float]:
    """The latency model's features of ``model`` on a 1×``in_channels``×H×W input (see the module doc).

    Profiled at 32 px and scaled by the pixel count when both sides are multiples of 4 (exact for the
    strided convolutional generators here: each layer's output has (H/s)·(W/s) pixels), at full size
    otherwise.
    """
    h, w = (size, size) if isinstance(size, int) else size
    if h < 1 or w < 1:
        raise ConfigError(f"size must be positive, got {size!r}")
    ph, pw = (_PROXY, _PROXY) if h % 4 == 0 and w % 4 == 0 else (h, w)
    param = next(model.parameters(), None)
    x = torch.zeros(1, in_channels, ph, pw, device=param.device if param is not None else "cpu")
    report = profile_macs(model, x)
    modules = dict(model.named_modules())
    scale = (h * w) / (ph * pw)
    out = dict.fromkeys(FEATURES, 0.0)
    for layer in report.layers:
        kind = _kind(modules[layer.name]) if layer.name in modules else "elements_m"
        if kind == "elements_m":
            out[kind] += math.prod(layer.output_shape) * layer.calls * scale / 1e6
        else:
            out[kind] += layer.macs * scale / 1e9
    return out


def measure_onnx_ms(
    model: nn.Module,
    size: int | tuple[int, int],
    *,
    threads: int = 1,
    warmup: int = 3,
    repeats: int = 10,
    in_channels: int = 3,
) -> float:
    """Median ONNX Runtime (CPU) milliseconds of ``model`` at batch 1 on an H×W input, exported to a temp file."""
    from edgegan.export.onnx import export_onnx

    h, w = (size, size) if isinstance(size, int) else size
    x = torch.randn(1, in_channels, h, w, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory(prefix="edgegan-latency-") as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(model.eval().cpu(), path, example=x, check=False)
        return onnx_latency(path, x, warmup=warmup, repeats=repeats, threads=threads).median_ms


@dataclass
class LatencyModel:
    """Predicted ONNX Runtime milliseconds from :func:`cost_features`; see the module doc."""

    coef: dict[str, float]
    intercept: float
    size: tuple[int, int]
    threads: int
    runtime: str = "onnxruntime"
    machine: dict[str, Any] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, float] = field(default_factory=dict)

    def predict(self, features: dict[str, float]) -> float:
        return self.intercept + sum(self.coef.get(k, 0.0) * features.get(k, 0.0) for k in FEATURES)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["size"] = list(self.size)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatencyModel:
        try:
            return cls(
                coef={k: float(v) for k, v in d["coef"].items()},
                intercept=float(d["intercept"]),
                size=tuple(d["size"]),  # type: ignore[arg-type]
                threads=int(d["threads"]),
                runtime=str(d.get("runtime", "onnxruntime")),
                machine=dict(d.get("machine", {})),
                samples=list(d.get("samples", [])),
                error=dict(d.get("error", {})),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"not a latency model: {e}") from None

    def save(self, path: str | Path) -> Path:
        atomic_write_json(Path(path), self.to_dict())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> LatencyModel:
        import json

        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"cannot read the latency model {path}: {e}") from None

    def check_matches(self, size: tuple[int, int], threads: int) -> None:
        """ConfigError when the model was fitted for another size, thread count or CPU."""
        here = machine_info().get("cpu")
        if tuple(self.size) != tuple(size) or self.threads != threads:
            raise ConfigError(
                f"the latency model was fitted at {self.size[0]}x{self.size[1]} with {self.threads} thread(s), "
                f"not {size[0]}x{size[1]} with {threads}; fit a new one"
            )
        if self.machine.get("cpu") and here and self.machine["cpu"] != here:
            raise ConfigError(f"the latency model was measured on {self.machine['cpu']!r}, this is {here!r}")


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Non-negative least squares with a free (non-negative) intercept, columns scaled for conditioning."""
    from scipy.optimize import nnls

    a = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    scale = np.maximum(np.abs(a).max(axis=0), 1e-12)
    sol, _ = nnls(a / scale, y)
    sol = sol / scale
    return sol[:-1], float(sol[-1])


def _errors(pred: Sequence[float], meas: Sequence[float]) -> dict[str, float]:
    rel = [abs(p - m) / m for p, m in zip(pred, meas, strict=True)]
    return {
        "median_abs_pct": 100 * statistics.median(rel),
        "max_abs_pct": 100 * max(rel),
        "n": float(len(rel)),
    }


def fit_latency_model(
    build: Callable[[Hashable], nn.Module],
    configs: Sequence[Hashable],
    size: int | tuple[int, int],
    *,
    threads: int = 1,
    holdout: float = 0.25,
    seed: int = 0,
    warmup: int = 3,
    repeats: int = 10,
    in_channels: int = 3,
    measure: Callable[[nn.Module], float] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LatencyModel:
    """Measure ``build(c)`` for every config directly and fit a :class:`LatencyModel`.

    A random ``holdout`` fraction (at least 2 configs when there are 6 or more) is kept out of a first fit
    to measure the prediction error (``error``: median and max absolute % error against direct
    measurement); the returned model is then refitted on all of them. ``measure`` replaces ONNX Runtime
    timing (tests). ``samples`` records every config's features, measured and predicted milliseconds.
    """
    if len(configs) < 3:
        raise ConfigError(f"fitting a latency model needs at least 3 measured networks, got {len(configs)}")
    if not 0.0 <= holdout < 1.0:
        raise ConfigError(f"holdout must be in [0, 1), got {holdout}")
    hw = (size, size) if isinstance(size, int) else tuple(size)
    timer = measure or (
        lambda m: measure_onnx_ms(m, hw, threads=threads, warmup=warmup, repeats=repeats, in_channels=in_channels)
    )
    feats, ms = [], []
    for i, c in enumerate(configs):
        model = build(c)
        feats.append(cost_features(model, hw, in_channels))
        ms.append(float(timer(model)))
        if progress is not None:
            progress(i + 1, len(configs))
    x = np.array([[f[k] for k in FEATURES] for f in feats])
    y = np.array(ms)
    order = list(range(len(configs)))
    random.Random(seed).shuffle(order)
    n_out = max(2, round(holdout * len(configs))) if holdout > 0 and len(configs) >= 6 else 0
    held, kept = sorted(order[:n_out]), sorted(order[n_out:])
    error: dict[str, float] = {}
    if held:
        coef, icpt = _fit(x[kept], y[kept])
        error = _errors([float(x[i] @ coef + icpt) for i in held], [ms[i] for i in held])
    coef, icpt = _fit(x, y)
    model = LatencyModel(
        coef=dict(zip(FEATURES, map(float, coef), strict=True)),
        intercept=icpt,
        size=hw,  # type: ignore[arg-type]
        threads=threads,
        machine=machine_info(),
    )
    model.samples = [
        {
            "config": list(c) if isinstance(c, tuple | list) else c,
            "features": f,
            "measured_ms": m,
            "predicted_ms": model.predict(f),
            "held_out": i in held,
        }
        for i, (c, f, m) in enumerate(zip(configs, feats, ms, strict=True))
    ]
    model.error = {
        **error,
        **{f"fit_{k}": v for k, v in _errors([s["predicted_ms"] for s in model.samples], ms).items()},
    }
    return model
