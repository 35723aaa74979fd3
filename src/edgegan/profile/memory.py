"""Peak memory of one inference.

On CUDA this is the allocator's peak. On a CPU there is no allocator counter, so the
forward pass runs in a fresh process and we report how much its peak resident set grew
during the pass (activations plus workspace), next to the size of the weights.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import sys
from typing import Any

import torch


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset the kernel's high-water mark to the current RSS (Linux >= 4.0); False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _rss_peak_bytes() -> int:
    hwm = _status_kib("VmHWM")
    if hwm is not None:
        return hwm * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def _measure_in_child(
    arch: str, config: dict[str, Any], shapes: list[tuple[int, ...]], threads: int
) -> dict[str, float]:
    import edgegan

    torch.set_num_threads(threads)
    model = edgegan.build(arch, **config).eval()
    inputs = [torch.randn(*shape) for shape in shapes]
    # No warm-up pass: the first pass's buffers would be reused without growing the RSS.
    # Importing torch leaves a high-water mark above the current RSS, so reset it first.
    before = (_status_kib("VmRSS") or 0) * 1024 if _reset_peak() else _rss_peak_bytes()
    with torch.no_grad():
        model(*inputs)
    after = _rss_peak_bytes()
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return {"weights_mb": weights / 2**20, "activation_peak_mb": (after - before) / 2**20}


def peak_memory(
    model: torch.nn.Module, x: torch.Tensor | tuple[torch.Tensor, ...], threads: int | None = None
) -> dict[str, float]:
    """Peak memory of ``model(x)``: weights and the growth of the peak during one pass, in MiB."""
    inputs = x if isinstance(x, tuple) else (x,)
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    if inputs[0].is_cuda:
        device = inputs[0].device
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        with torch.no_grad():
            model(*inputs)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated(device)
        return {"weights_mb": weights / 2**20, "activation_peak_mb": (peak - base) / 2**20, "method": "cuda-allocator"}
    arch = getattr(model, "arch", "")
    if not arch:
        raise TypeError("CPU peak memory is measured on registered edgegan models only")
    cfg = model.config.to_dict()  # type: ignore[attr-defined]
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        shapes = [tuple(t.shape) for t in inputs]
        out = pool.apply(_measure_in_child, (arch, cfg, shapes, threads or torch.get_num_threads()))
    return {**out, "method": "cpu-rss-growth"}
