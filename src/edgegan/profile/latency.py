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


Inputs = torch.Tensor | tuple[torch.Tensor, ...]


def time_function(
    fn: Callable[[], Any],
    *,
    backend: str,
    warmup: int = 3,
    repeats: int = 10,
    cuda: bool = False,
) -> Timing:
    """Median milliseconds of ``fn()`` after ``warmup`` calls (any pipeline, not just one model)."""
    sync = torch.cuda.synchronize if cuda else None
    times = _time_calls(fn, warmup, repeats, sync)
    return _summary(backend, times, warmup, torch.get_num_threads())


@torch.no_grad()
def torch_latency(
    model: nn.Module, x: Inputs, *, warmup: int = 3, repeats: int = 10, threads: int | None = None
) -> Timing:
    """Median milliseconds of ``model(x)`` (``x`` a tensor or a tuple of inputs) in eager mode."""
    model = model.eval()
    inputs = x if isinstance(x, tuple) else (x,)
    cuda = inputs[0].is_cuda
    sync = torch.cuda.synchronize if cuda else None
    with torch_threads(threads) as n:
        times = _time_calls(lambda: model(*inputs), warmup, repeats, sync)
    return _summary("torch-cuda" if cuda else "torch", times, warmup, n)


def onnx_session(path: str | Path, threads: int | None = None, spin: bool = True) -> Any:
    """A CPU session. ``spin=False`` stops idle worker threads from busy-waiting after a run:
    needed when several sessions run one after another (a pyramid), where spinning threads
    of one session would steal cores from the next."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def onnx_feed(sess: Any, x: Inputs | np.ndarray | tuple[np.ndarray, ...]) -> dict[str, np.ndarray]:
    """Map one input or a tuple of inputs, in order, to the session's input names."""
    items = x if isinstance(x, tuple) else (x,)
    arrays = [(t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t).astype(np.float32) for t in items]
    names = [i.name for i in sess.get_inputs()]
    if len(names) != len(arrays):
        raise ValueError(f"ONNX model takes {len(names)} input(s) ({', '.join(names)}), got {len(arrays)}")
    return dict(zip(names, arrays, strict=True))


def onnx_latency(
    path: str | Path,
    x: Inputs | np.ndarray | tuple[np.ndarray, ...],
    *,
    warmup: int = 3,
    repeats: int = 10,
    threads: int | None = None,
) -> Timing:
    """Median milliseconds of one ONNX Runtime (CPU) run on ``x``."""
    threads = threads or torch.get_num_threads()
    sess = onnx_session(path, threads)
    feed = onnx_feed(sess, x)
    times = _time_calls(lambda: sess.run(None, feed), warmup, repeats)
    return _summary("onnxruntime", times, warmup, threads)


def onnx_latency_interleaved(
    paths: dict[str, str | Path],
    x: Inputs | np.ndarray | tuple[np.ndarray, ...] | dict[str, Any],
    *,
    warmup: int = 3,
    rounds: int = 6,
    repeats: int = 5,
    threads: int | None = None,
) -> dict[str, Timing]:
    """Median milliseconds per model of several ONNX models timed round-robin: each round runs every model
    ``repeats`` times in turn, so a slow spell of a shared machine hits all models alike and their ratios hold.
    ``x`` is one input for every model or ``{name: input}``."""
    threads = threads or torch.get_num_threads()
    # no spinning: an idle session's busy-waiting threads would slow the next model down
    sessions = {n: onnx_session(p, threads, spin=False) for n, p in paths.items()}
    feeds = {n: onnx_feed(s, x[n] if isinstance(x, dict) else x) for n, s in sessions.items()}
    times: dict[str, list[float]] = {n: [] for n in sessions}
    for n, sess in sessions.items():
        _time_calls(lambda s=sess, f=feeds[n]: s.run(None, f), warmup, 0)
    for _ in range(rounds):
        for n, sess in sessions.items():
            times[n] += _time_calls(lambda s=sess, f=feeds[n]: s.run(None, f), 0, repeats)
    return {n: _summary("onnxruntime", t, warmup, threads) for n, t in times.items()}
