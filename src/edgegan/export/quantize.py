"""Quantization of an exported ONNX model with ONNX Runtime, and a quality gate on its output.

``quantize_onnx`` writes one int8 model (dynamic, or static QDQ from calibration inputs).
``quantize_gated`` is what ``edgegan export --quantize`` runs: it makes an int8, fp16 or ``auto``
(int8 with the most sensitive layers kept in float) model, measures its PSNR against the fp32
model on held-out images and the latency of both, and writes the model only when the PSNR
meets ``min_psnr`` (or with ``force``), with a JSON report beside it either way.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgegan.errors import EdgeganError
from edgegan.export.onnx import run_onnx
from edgegan.fileio import atomic_path, atomic_write_json

QuantMode = Literal["dynamic", "static"]
GatedMode = Literal["int8", "fp16", "auto", "static", "dynamic"]
GATED_MODES: tuple[str, ...] = ("int8", "fp16", "auto", "static", "dynamic")

# The layers that hold (nearly) all multiply-accumulates of a generator: what int8 is for, and
# the candidates `auto` keeps in float. Everything else (normalisation, activations, Add, Pad)
# stays float between them. ConvTranspose is left out by default: ONNX Runtime's CPU provider has no
# int8 ConvTranspose kernel and runs a quantized one in float between Q/DQ pairs, so it adds error and
# no speed. Measured (bench/quantize.py, cool teacher at 256 px): int8 with ConvTranspose 2.12x faster
# at 22.7 dB against fp32, without it 2.06x at 34.5 dB; the up-sampling ConvTransposes were the two
# most sensitive layers of every model there. ALL_QUANT_OPS opts in (op_types=...).
QUANT_OPS: tuple[str, ...] = ("Conv", "MatMul", "Gemm")
ALL_QUANT_OPS: tuple[str, ...] = ("Conv", "ConvTranspose", "MatMul", "Gemm")


class _Calibration:
    """ONNX Runtime's CalibrationDataReader protocol over a list of arrays."""

    def __init__(self, input_name: str, batches: Sequence[np.ndarray]) -> None:
        self._it = iter([{input_name: b.astype(np.float32)} for b in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:  # pragma: no cover - not used by MinMax calibration
        pass


@contextlib.contextmanager
def _quiet_ort() -> Iterator[None]:
    # The quantizer logs a warning per call (pre-processing advice, per-channel notes).
    loggers = [logging.getLogger(), logging.getLogger("onnxruntime")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def prepare_for_quantization(fp32_path: str | Path, prepared_path: str | Path) -> list[str]:
    """Shape inference and graph clean-up (as ONNX Runtime recommends before quantizing); give every
    node a unique name so that it can be excluded by name. Returns the node names."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with _quiet_ort():
        quant_pre_process(str(fp32_path), str(prepared_path), skip_symbolic_shape=True)
    proto = onnx.load(str(prepared_path))
    seen: set[str] = set()
    for i, node in enumerate(proto.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)
    onnx.save(proto, str(prepared_path))
    return [n.name for n in proto.graph.node]


def quantizable_nodes(path: str | Path, op_types: Sequence[str] = QUANT_OPS) -> list[tuple[str, str]]:
    """``(name, op_type)`` of the nodes of ``path`` whose type is in ``op_types``, in graph order."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [(n.name, n.op_type) for n in graph.node if n.op_type in op_types]


def _static_int8(
    prepared: Path,
    target: Path,
    calibration: Sequence[np.ndarray],
    *,
    per_channel: bool,
    op_types: Sequence[str] | None = None,
    nodes_to_exclude: Sequence[str] = (),
    cache: Path | None = None,
) -> None:
    """Static QDQ int8 (uint8 activations, int8 weights). With ``cache`` (ONNX Runtime ≥ 1.2x), the
    activation ranges are measured on the first call and reused: ranges do not depend on which
    nodes are quantized, so the sensitivity sweep calibrates once."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    kwargs: dict[str, Any] = {}
    if cache is not None and "calibration_cache_path" in inspect.signature(quantize_static).parameters:
        kwargs["calibration_cache_path"] = str(cache)
    input_name = onnx.load(str(prepared), load_external_data=False).graph.input[0].name
    with _quiet_ort():
        quantize_static(
            str(prepared),
            str(target),
            _Calibration(input_name, calibration),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            op_types_to_quantize=list(op_types) if op_types else None,
            nodes_to_exclude=list(nodes_to_exclude),
            **kwargs,
        )


def quantize_onnx(
    fp32_path: str | Path,
    int8_path: str | Path,
    *,
    mode: QuantMode = "dynamic",
    calibration: Sequence[np.ndarray] | None = None,
    per_channel: bool = False,
    op_types: Sequence[str] | None = None,
    nodes_to_exclude: Sequence[str] = (),
) -> Path:
    """Write an int8 version of ``fp32_path``.

    ``dynamic`` quantizes weights ahead of time and activations on the fly (no data needed);
    ``static`` fixes activation ranges from ``calibration`` inputs (each [1, C, H, W]) and
    stores QuantizeLinear/DequantizeLinear pairs (QDQ), which runs faster on most CPUs.
    ``op_types`` limits which operator types are quantized (default: all ONNX Runtime can);
    ``nodes_to_exclude`` names nodes (of the pre-processed graph) that stay float.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32_path, target = Path(fp32_path), Path(int8_path)
    if mode not in ("dynamic", "static"):
        raise EdgeganError(f"unknown quantization mode {mode!r}; choose dynamic or static")
    if mode == "static" and not calibration:
        raise EdgeganError("static quantization needs calibration images (--calib DIR)")
    with tempfile.TemporaryDirectory() as tmpdir, atomic_path(target) as tmp:
        prepared = Path(tmpdir) / "prepared.onnx"
        prepare_for_quantization(fp32_path, prepared)
        if mode == "dynamic":
            with _quiet_ort():
                quantize_dynamic(
                    str(prepared),
                    str(tmp),
                    weight_type=QuantType.QInt8,
                    per_channel=per_channel,
                    op_types_to_quantize=list(op_types) if op_types else None,
                    nodes_to_exclude=list(nodes_to_exclude),
                )
        else:
            assert calibration is not None
            exclude, ops = nodes_to_exclude, op_types
            _static_int8(prepared, tmp, calibration, per_channel=per_channel, op_types=ops, nodes_to_exclude=exclude)
    return target


def convert_fp16(fp32_path: str | Path, fp16_path: str | Path) -> Path:
    """Write a float16 version of ``fp32_path`` whose inputs and outputs stay float32 (Cast nodes at
    the edges), with ONNX Runtime's converter (``onnxruntime.transformers.float16``). Operators it
    blocks (e.g. Resize's scales) stay float32 behind Casts. ONNX Runtime's CPU provider runs float16
    operators it has no kernel for in float32 behind inserted Casts, so fp16 saves memory and file
    size there, not time; GPU and NPU runtimes run it natively."""
    import onnx

    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as exc:  # pragma: no cover - part of every onnxruntime wheel we know
        raise EdgeganError(f"fp16 conversion needs onnxruntime.transformers.float16 ({exc})") from None
    target = Path(fp16_path)
    proto = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
    with atomic_path(target) as tmp:
        onnx.save(proto, str(tmp))
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


def split_calibration(images: Sequence[np.ndarray], every: int = 4) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Every ``every``-th image (the 4th, 8th, ...) is held out for measuring; the rest calibrate.
    With fewer than ``every`` images nothing can be held out: ``([...all], [])``."""
    held = [x for i, x in enumerate(images) if i % every == every - 1]
    calib = [x for i, x in enumerate(images) if i % every != every - 1]
    return calib, held


@dataclass
class QuantReport:
    """What ``quantize_gated`` measured and did; ``to_dict`` is the ``<out>.quant.json`` content."""

    mode: str
    precision: str  # int8, fp16, or int8-dynamic
    path: str
    written: bool
    passed: bool
    min_psnr_db: float | None
    psnr_db_median: float  # against the fp32 model, on ``n`` images (held out when held_out > 0)
    psnr_db_min: float
    n: int
    held_out: int  # images used for measuring only; 0 when measured on the calibration images
    calibration_images: int
    on: str
    per_channel: bool | None = None
    per_channel_vs_tensor_db: dict[str, float] | None = None  # int8 PSNR with each weight granularity
    op_types: list[str] = field(default_factory=list)
    quantizable: list[str] = field(default_factory=list)
    sensitivity: list[dict[str, Any]] = field(default_factory=list)  # auto: per node, most sensitive first
    kept_float: list[str] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)  # auto: PSNR after each node kept in float
    latency_ms: dict[str, float] = field(default_factory=dict)  # median ONNX Runtime latency, fp32 and quantized
    latency_input: list[int] = field(default_factory=list)
    threads: int | None = None
    bytes: dict[str, int] = field(default_factory=dict)
    removed_stale: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("psnr_db_median", "psnr_db_min"):  # JSON has no infinity
            d[k] = _finite(d[k])
        return d


class QualityGateError(EdgeganError):
    """The quantized model missed ``min_psnr``; it was not written. ``report`` says by how much."""

    def __init__(self, message: str, report: QuantReport) -> None:
        super().__init__(message)
        self.report = report


def _finite(x: float | None) -> float | None:
    """Rounded for the report; None for inf (an exact match) and nan (not measured): JSON has neither."""
    return None if x is None or not math.isfinite(x) else round(float(x), 3)


def _outputs(path: Path, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    from edgegan.profile.latency import onnx_feed, onnx_session

    sess = onnx_session(path, threads=None, spin=False)
    return [sess.run(None, onnx_feed(sess, x))[0] for x in inputs]


def _fidelity(reference: Sequence[np.ndarray], path: Path, inputs: Sequence[np.ndarray]) -> tuple[float, float]:
    scores = [psnr(r, y) for r, y in zip(reference, _outputs(path, inputs), strict=True)]
    return float(np.median(scores)), float(min(scores))


def quantize_gated(
    fp32_path: str | Path,
    out_path: str | Path,
    *,
    mode: GatedMode = "int8",
    calibration: Sequence[np.ndarray] | None = None,
    held_out: Sequence[np.ndarray] | None = None,
    min_psnr: float | None = 35.0,
    force: bool = False,
    report_path: str | Path | None = None,
    op_types: Sequence[str] = QUANT_OPS,
    threads: int | None = None,
    latency_rounds: int = 5,
    measure_on: str = "",
) -> QuantReport:
    """Quantize ``fp32_path`` and write it to ``out_path`` only if its output is within ``min_psnr``
    dB (median PSNR over ``held_out``) of the fp32 model's, or with ``force``.

    Modes:

    - ``int8``: static QDQ int8 from ``calibration`` (uint8 activations, int8 weights, the
      ``op_types`` layers). Weights per output channel and per tensor are both tried and the
      one with the higher PSNR kept (both are reported). Without calibration: ``dynamic``.
    - ``static``: ``int8`` that insists on calibration inputs. ``dynamic``: int8 weights,
      activations quantized at run time (ONNX Runtime's ``quantize_dynamic``, no data needed).
    - ``fp16``: float16 weights and activations, float32 inputs and outputs (``convert_fp16``).
    - ``auto``: ``int8``, then the sensitivity of each quantizable node is measured as the PSNR
      *gained* when only that node is kept in float (all others int8), and nodes are kept in
      float, most sensitive first, until the PSNR meets ``min_psnr``. A gate that needs every
      node in float is missed (there would be nothing left in int8).

    ``held_out`` inputs are only measured on (never calibrated on); without them the PSNR is
    measured on ``calibration`` (or on 4 random inputs without either), and the report says so.
    Latency is the median of ONNX Runtime CPU runs of both models at the first input's size,
    timed in turns. The JSON report goes to ``report_path`` whether or not the gate passes; a
    missed gate raises ``QualityGateError`` after removing any older file at ``out_path`` (so
    that it never sits next to a newer fp32 model it does not match).
    """
    import onnx

    from edgegan.profile.latency import onnx_latency_interleaved

    if mode not in GATED_MODES:
        raise EdgeganError(f"unknown quantization mode {mode!r}; choose {', '.join(GATED_MODES)}")
    calibration = list(calibration or [])
    held_out = list(held_out or [])
    if mode in ("static", "auto") and not calibration:
        raise EdgeganError(f"--quantize {mode} needs calibration images (--calib DIR)")
    fp32_path, target = Path(fp32_path), Path(out_path)
    if held_out:
        inputs, n_held = held_out, len(held_out)
        on = measure_on or f"{n_held} held-out images"
    elif calibration:
        inputs, n_held = calibration, 0
        on = measure_on or f"the {len(calibration)} calibration images (too few to hold any out)"
    else:
        rng = np.random.default_rng(0)
        dims = onnx.load(str(fp32_path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
        shape = [1] + [d.dim_value or 64 for d in list(dims)[1:]]  # batch 1; 64 px where H/W are free
        inputs, n_held = [rng.uniform(-1, 1, shape).astype(np.float32) for _ in range(4)], 0
        on = measure_on or "4 random inputs (pass --calib DIR to measure on images)"
    precision = {"fp16": "fp16", "dynamic": "int8-dynamic"}.get(mode, "int8")
    if mode == "int8" and not calibration:
        precision = "int8-dynamic"
    reference = _outputs(fp32_path, inputs)
    report = QuantReport(
        mode=mode,
        precision=precision,
        path=str(target),
        written=False,
        passed=False,
        min_psnr_db=min_psnr,
        psnr_db_median=math.nan,
        psnr_db_min=math.nan,
        n=len(inputs),
        held_out=n_held,
        calibration_images=len(calibration) if precision == "int8" else 0,
        on=on,
        op_types=list(op_types) if precision.startswith("int8") else [],
        threads=threads,
    )

    def meets(db: float) -> bool:
        return min_psnr is None or db >= min_psnr

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        candidate = tmp / "candidate.onnx"
        if precision == "fp16":
            convert_fp16(fp32_path, candidate)
        elif precision == "int8-dynamic":
            quantize_onnx(fp32_path, candidate, mode="dynamic", op_types=op_types)
        else:
            prepared, cache = tmp / "prepared.onnx", tmp / "calibration.json"
            prepare_for_quantization(fp32_path, prepared)
            nodes = quantizable_nodes(prepared, op_types)
            report.quantizable = [name for name, _ in nodes]
            if not nodes:
                raise EdgeganError(f"{fp32_path} has no {'/'.join(op_types)} node to quantize")

            def int8(path: Path, per_channel: bool, exclude: Sequence[str] = ()) -> tuple[float, float]:
                _static_int8(
                    prepared,
                    path,
                    calibration,
                    per_channel=per_channel,
                    op_types=op_types,
                    nodes_to_exclude=exclude,
                    cache=cache,
                )
                return _fidelity(reference, path, inputs)

            # Per-channel weight scales help layers whose output channels differ in range; they
            # can also cost a little. Measure both on the same images and keep the better.
            per_channel_db = int8(tmp / "per_channel.onnx", True)
            per_tensor_db = int8(tmp / "per_tensor.onnx", False)
            report.per_channel_vs_tensor_db = {
                "per_channel": _finite(per_channel_db[0]),
                "per_tensor": _finite(per_tensor_db[0]),
            }
            report.per_channel = per_channel_db[0] >= per_tensor_db[0]
            best = tmp / ("per_channel.onnx" if report.per_channel else "per_tensor.onnx")
            os.replace(best, candidate)
            if mode == "auto":
                full_db = max(per_channel_db[0], per_tensor_db[0])
                probe = tmp / "probe.onnx"
                gains = []
                for name, op in nodes:
                    db = int8(probe, report.per_channel, [name])[0]
                    gains.append({"node": name, "op": op, "psnr_db_kept_float": _finite(db), "gain_db": db - full_db})
                # The gain of a node whose float copy gives an exact output is infinite: most sensitive.
                gains.sort(key=lambda g: -g["gain_db"])
                for g in gains:
                    g["gain_db"] = _finite(g["gain_db"])
                report.sensitivity = gains
                report.steps = [{"kept_float": [], "psnr_db": _finite(full_db)}]
                # Keep nodes in float, most sensitive first, until the gate is met; never all of
                # them (that model is the fp32 one with extra steps), so the last one stays int8.
                current_db = full_db
                for g in gains[:-1]:
                    if meets(current_db):
                        break
                    report.kept_float.append(g["node"])
                    current_db = int8(candidate, report.per_channel, report.kept_float)[0]
                    report.steps.append({"kept_float": list(report.kept_float), "psnr_db": _finite(current_db)})
        report.psnr_db_median, report.psnr_db_min = _fidelity(reference, candidate, inputs)
        report.passed = meets(report.psnr_db_median)
        timings = onnx_latency_interleaved(
            {"fp32": fp32_path, report.precision: candidate}, inputs[0], threads=threads, rounds=latency_rounds
        )
        report.latency_ms = {k: round(t.median_ms, 4) for k, t in timings.items()}
        report.threads = next(iter(timings.values())).threads
        report.latency_input = list(inputs[0].shape)
        report.bytes = {"fp32": fp32_path.stat().st_size, report.precision: candidate.stat().st_size}
        if report.passed or force:
            with atomic_path(target) as out:
                os.replace(candidate, out)
            report.written = True
        elif target.exists():
            target.unlink()
            report.removed_stale = True
    if report_path is not None:
        atomic_write_json(report_path, report.to_dict())
    if not report.written:
        why = f"{report.precision} PSNR vs fp32 {report.psnr_db_median:.2f} dB < --min-psnr {min_psnr:g} dB"
        if mode == "auto":
            why += f" with {len(report.kept_float)} of {len(report.quantizable)} layers in float"
        where = f"; report: {report_path}" if report_path is not None else ""
        stale = " (an older one there was removed)" if report.removed_stale else ""
        raise QualityGateError(f"{why} on {on}; {target} not written{stale} (--force writes it){where}", report)
    return report
