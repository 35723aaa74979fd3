"""int8 quantization of an exported ONNX model with ONNX Runtime, and its fidelity (PSNR vs fp32)."""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from edgegan.errors import EdgeganError
from edgegan.export.onnx import run_onnx
from edgegan.fileio import atomic_path

QuantMode = Literal["dynamic", "static"]


class _Calibration:
    """ONNX Runtime's CalibrationDataReader protocol over a list of arrays."""

    def __init__(self, input_name: str, batches: Sequence[np.ndarray]) -> None:
        self._it = iter([{input_name: b.astype(np.float32)} for b in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:  # pragma: no cover - not used by MinMax calibration
        pass


def quantize_onnx(
    fp32_path: str | Path,
    int8_path: str | Path,
    *,
    mode: QuantMode = "dynamic",
    calibration: Sequence[np.ndarray] | None = None,
    per_channel: bool = False,
) -> Path:
    """Write an int8 version of ``fp32_path``.

    ``dynamic`` quantizes weights ahead of time and activations on the fly (no data needed);
    ``static`` fixes activation ranges from ``calibration`` inputs (each [1, C, H, W]) and
    stores QuantizeLinear/DequantizeLinear pairs (QDQ), which runs faster on most CPUs.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    fp32_path, target = Path(fp32_path), Path(int8_path)
    with tempfile.TemporaryDirectory() as tmpdir, atomic_path(target) as tmp:
        prepared = Path(tmpdir) / "prepared.onnx"
        # Shape inference + graph cleanup first, as ONNX Runtime recommends before quantizing.
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        if mode == "dynamic":
            quantize_dynamic(str(prepared), str(tmp), weight_type=QuantType.QInt8, per_channel=per_channel)
        elif mode == "static":
            if not calibration:
                raise EdgeganError("static quantization needs calibration images (--calib DIR)")
            import onnx

            input_name = onnx.load(str(prepared), load_external_data=False).graph.input[0].name
            quantize_static(
                str(prepared),
                str(tmp),
                _Calibration(input_name, calibration),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=per_channel,
            )
        else:
            raise EdgeganError(f"unknown quantization mode {mode!r}; choose dynamic or static")
    return target


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 2.0) -> float:
    """PSNR in dB between two arrays (default range 2 for outputs in [-1, 1])."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def int8_fidelity(fp32_path: str | Path, int8_path: str | Path, inputs: Iterable[np.ndarray]) -> dict[str, float]:
    """Median and worst PSNR of the int8 model's first output against the fp32 model's."""
    scores = [psnr(run_onnx(fp32_path, x)[0], run_onnx(int8_path, x)[0]) for x in inputs]
    if not scores:
        raise EdgeganError("no inputs to compare the int8 model on")
    return {"psnr_db_median": float(np.median(scores)), "psnr_db_min": float(min(scores)), "n": len(scores)}
