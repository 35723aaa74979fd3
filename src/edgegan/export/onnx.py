"""ONNX export with dynamic batch/height/width and a torch-vs-ONNX Runtime parity check."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from edgegan.errors import EdgeganError
from edgegan.export.optimize import fold_constants, optimize_model
from edgegan.fileio import atomic_path
from edgegan.profile.latency import onnx_feed, onnx_session

Exporter = Literal["torchscript", "dynamo"]


@dataclass
class ExportResult:
    path: str
    input_shape: list[int]
    output_names: list[str]
    opset: int
    exporter: str
    max_abs_diff: float | None
    output_shapes: list[list[int | str]] | None = None  # ints where fixed, names where dynamic
    optimized: list[str] | None = None  # with optimize=True: the convolutions optimize_model rewrote

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Plain(nn.Module):
    """Exposes only the tensor output(s) of an edgegan model to the exporter."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *xs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        out = self.model(*xs)
        return tuple(out) if isinstance(out, list | tuple) else out


def _as_list(out: Any) -> list[np.ndarray]:
    if isinstance(out, torch.Tensor):
        return [out.detach().cpu().numpy()]
    return [t.detach().cpu().numpy() for t in out]


def run_onnx(path: str | Path, x: Any, threads: int | None = None) -> list[np.ndarray]:
    """Run an ONNX file with ONNX Runtime (CPU) on one input or a tuple of inputs; returns every output."""
    sess = onnx_session(path, threads)
    return sess.run(None, onnx_feed(sess, x))


@torch.no_grad()
def onnx_parity(model: nn.Module, path: str | Path, x: torch.Tensor | tuple[torch.Tensor, ...]) -> float:
    """Max |torch - onnxruntime| over all outputs for input ``x`` (a tensor or a tuple of inputs)."""
    expected = _as_list(_Plain(model.eval())(*(x if isinstance(x, tuple) else (x,))))
    got = run_onnx(path, x)
    if len(expected) != len(got):
        raise EdgeganError(f"{path}: {len(got)} outputs, torch model gives {len(expected)}")
    return max(float(np.max(np.abs(e - g))) for e, g in zip(expected, got, strict=True))


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    example: torch.Tensor | tuple[torch.Tensor, ...] | None = None,
    size: int | tuple[int, int] = 256,
    opset: int = 17,
    dynamic: bool = True,
    exporter: Exporter = "torchscript",
    check: bool = True,
    optimize: bool = False,
) -> ExportResult:
    """Export ``model`` (in eval mode, on CPU) to ``path``; the file appears only when complete.

    ``torchscript`` is the tracing exporter (fast, stable for conv nets); ``dynamo`` is
    torch.export-based and needs onnxscript. With ``check``, ONNX Runtime and PyTorch run on
    the same random input and the max absolute difference is reported. With ``dynamic=False``
    every shape in the graph is fixed to the example's (see ``_make_static``). With ``optimize`` the file is
    rewritten by :func:`edgegan.export.optimize.optimize_model` (constant folding, and the output convolution
    split into its four output phases so that ONNX Runtime does not pad its 3 channels to 16) before the
    parity check; it holds standard ONNX operators only.
    """
    if hasattr(model, "active_config") and hasattr(model, "largest_config"):
        # Its channel slicing is dynamic; the deployable network is a sub-network extracted from it.
        raise EdgeganError(
            f"{type(model).__name__} is a supernet: export a sub-network of it (`edgegan compress search` or "
            "UGC's export stage extract one; from Python, edgegan.compress.supernet.extract_subnet or .extract)"
        )
    model = model.eval().cpu()
    if example is None:
        maker = getattr(model, "example_input", None)
        example = (
            maker(size) if callable(maker) else torch.randn(1, 3, *((size, size) if isinstance(size, int) else size))
        )
    inputs = example if isinstance(example, tuple) else (example,)
    wrapped = _Plain(model)
    with torch.no_grad():
        expected = _as_list(wrapped(*inputs))
    n_out = len(expected)
    out_names = ["output"] if n_out == 1 else [f"output{i}" for i in range(n_out)]
    # A model with several inputs names them (e.g. SinGAN's ("prev", "noise")).
    in_names = list(getattr(model, "input_names", None) or (["input"] if len(inputs) == 1 else []))
    if len(in_names) != len(inputs):
        in_names = [f"input{i}" for i in range(len(inputs))]
    axes = {0: "batch", 2: "height", 3: "width"}
    # Image inputs and outputs vary in batch, height and width; other inputs (text tokens [N, T, D])
    # in batch and length.
    dyn_axes = {
        n: axes if t.dim() == 4 else {0: "batch", 1: f"{n}_length"} for n, t in zip(in_names, inputs, strict=True)
    }
    dyn_axes.update({n: axes for n in out_names})
    target = Path(path)
    if target.suffix != ".onnx":
        raise EdgeganError(f"export path must end in .onnx, got {target}")
    with atomic_path(target) as tmp, warnings.catch_warnings(), _quiet_exporter():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(
                wrapped,
                inputs,
                str(tmp),
                dynamo=False,
                opset_version=opset,
                input_names=in_names,
                output_names=out_names,
                dynamic_axes=dyn_axes if dynamic else None,
            )
        elif exporter == "dynamo":
            shapes = None
            if dynamic:
                dims = {i: torch.export.Dim.AUTO for i in axes}
                shapes = {"xs": tuple(dims for _ in inputs)}
            torch.onnx.export(
                wrapped,
                inputs,
                str(tmp),
                dynamo=True,
                opset_version=max(opset, 18),
                input_names=in_names,
                output_names=out_names,
                dynamic_shapes=shapes,
                verbose=False,
            )
        else:
            raise EdgeganError(f"unknown exporter {exporter!r}; choose torchscript or dynamo")
        if not dynamic:
            _make_static(tmp, [list(e.shape) for e in expected])
        rewritten = _optimize(tmp) if optimize else None
    diff = onnx_parity(model, target, example) if check else None
    return ExportResult(
        str(target), list(inputs[0].shape), out_names, opset, exporter, diff, output_dims(target), rewritten
    )


def output_dims(path: str | Path) -> list[list[int | str]]:
    """Each graph output's dims as written in the file: an int where fixed, the symbol (or "?") where not."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [
        [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in o.type.tensor_type.shape.dim]
        for o in graph.output
    ]


def onnx_operators(path: str | Path) -> list[str]:
    """The sorted set of operator types an ONNX file uses (what a target runtime must support)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return sorted({n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}" for n in graph.node})


def _make_static(path: Path, out_shapes: list[list[int]]) -> None:
    """Rewrite a fixed-shape export so that strict runtimes see no unknown dims.

    The tracing exporter computes reflection-pad amounts at run time (Shape/Slice/Concat/...) and
    then cannot infer the output size, so even a fixed-input export names its output dims
    symbolically. ONNX Runtime's *basic* optimisations (constant folding and other rewrites into
    standard ONNX operators) fold those computations; the output dims are then set to the ones
    PyTorch produced and checked by ONNX shape inference. The parity check runs on the result.
    """
    import onnx

    external = _external_files(path)
    proto = fold_constants(onnx.load(str(path)))
    for out, shape in zip(proto.graph.output, out_shapes, strict=True):
        out.type.tensor_type.ClearField("shape")
        for d in shape:
            out.type.tensor_type.shape.dim.add().dim_value = int(d)
    proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    for file in external:
        file.unlink(missing_ok=True)
    dims = output_dims(path)
    if any(not isinstance(d, int) for shape in dims for d in shape):  # pragma: no cover - guarded by the above
        raise EdgeganError(f"static export left unknown output dims {dims}")


def _external_files(path: Path) -> list[Path]:
    """The dynamo exporter writes the weights to a file beside the model; those named after this export's
    temporary file, to remove once the weights are folded into the model."""
    import onnx

    refs = onnx.load(str(path), load_external_data=False).graph.initializer
    locations = {e.value for t in refs for e in t.external_data if e.key == "location"}
    return [path.parent / name for name in locations if Path(name).name.startswith(path.name)]


def _optimize(path: Path) -> list[str]:
    """Rewrite the export at ``path`` with :func:`edgegan.export.optimize.optimize_model`, weights folded in."""
    import onnx

    external = _external_files(path)
    proto, rewritten = optimize_model(onnx.load(str(path)))
    onnx.save(proto, str(path))
    for file in external:
        file.unlink(missing_ok=True)
    return rewritten


@contextlib.contextmanager
def _quiet_exporter():
    # The dynamo exporter prints progress lines and logs about optional torchvision ops.
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)
