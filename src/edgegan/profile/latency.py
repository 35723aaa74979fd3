"""Median inference latency at batch 1 for PyTorch eager and ONNX Runtime."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


@dataclass
class Timing:
    backend: str
    median_ms: float
    min_ms: float
    max_ms: float
    repeats: int
    warmup: int
    threads: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _time_calls(
    fn: Callable[[], Any], warmup: int, repeats: int, sync: Callable[[], None] | None = None
) -> list[float]:
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append((time.perf_counter() - t0) * 1000.0)
    return times


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(old)


def _summary(backend: str, times: list[float], warmup: int, threads: int) -> Timing:
    return Timing(backend, statistics.median(times), min(times), max(times), len(times), warmup, threads)


@torch.no_grad()
def torch_latency(
    model: nn.Module, x: torch.Tensor, *, warmup: int = 3, repeats: int = 10, threads: int | None = None
) -> Timing:
    """Median milliseconds of ``model(x)`` in eager mode, after ``warmup`` calls."""
    model = model.eval()
    sync = torch.cuda.synchronize if x.is_cuda else None
    with torch_threads(threads) as n:
        times = _time_calls(lambda: model(x), warmup, repeats, sync)
    return _summary("torch" if not x.is_cuda else "torch-cuda", times, warmup, n)


def onnx_session(path: str | Path, threads: int | None = None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def onnx_latency(
    path: str | Path, x: torch.Tensor | np.ndarray, *, warmup: int = 3, repeats: int = 10, threads: int | None = None
) -> Timing:
    """Median milliseconds of one ONNX Runtime (CPU) run on ``x``."""
    threads = threads or torch.get_num_threads()
    sess = onnx_session(path, threads)
    feed = {sess.get_inputs()[0].name: (x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x)}
    times = _time_calls(lambda: sess.run(None, feed), warmup, repeats)
    return _summary("onnxruntime", times, warmup, threads)
