"""A description of the machine a measurement ran on, printed with every timing."""

from __future__ import annotations

import os
import platform
from functools import cache
from typing import Any

import torch


@cache
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str = "cpu") -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:  # pragma: no cover - a core dependency, but keep the report usable
        info["onnxruntime"] = None
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def machine_line(info: dict[str, Any] | None = None) -> str:
    info = info or machine_info()
    gpu = f", {info['gpu']}" if info.get("gpu") else ""
    return (
        f"{info['cpu']} ({info['cores']} cores{gpu}), torch {info['torch']} with {info['torch_threads']} threads, "
        f"onnxruntime {info['onnxruntime']}"
    )
