"""ONNX export and int8 quantization."""

from edgegan.export.onnx import ExportResult, export_onnx, onnx_parity, run_onnx
from edgegan.export.quantize import int8_fidelity, psnr, quantize_onnx

__all__ = ["ExportResult", "export_onnx", "int8_fidelity", "onnx_parity", "psnr", "quantize_onnx", "run_onnx"]
