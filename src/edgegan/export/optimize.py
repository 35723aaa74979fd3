"""Graph rewrites that make exported generators run faster in ONNX Runtime without changing what they compute.

ONNX Runtime on x86 runs most convolutions in its blocked NCHWc layout, whose kernels work on blocks of 16
output channels (8 without AVX-512) and pad any other count up to the next block. A generator's last
convolution (7×7, a few dozen channels in, 3 out at full resolution) therefore does 16/3 = 5.3 times the work
it needs; in a compressed student that one layer takes about a fifth of the run time. :func:`phase_split_convs`
computes such a convolution as a stride-2 convolution whose 4·3 = 12 output channels are the four output phases
(even/odd row × even/odd column), followed by DepthToSpace(2) that interleaves them. Each output is the same
sum of the same products (the extra kernel taps are zeros), so outputs agree to float rounding (bit for bit
with ONNX Runtime 1.32, which adds the terms in the same order), with 12 useful channels per block of 16
instead of 3. Everything here uses standard ONNX operators, so the file stays portable; ONNX
Runtime still applies its own hardware-specific optimisations when it loads it.

:func:`node_macs` counts each node's multiply-accumulates at a given input size, in both conventions of
:mod:`edgegan.profile.macs`.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgegan.errors import EdgeganError
from edgegan.fileio import atomic_path

NCHWC_BLOCK = 16
"""ONNX Runtime's NCHWc channel block with AVX-512 (8 with AVX2): a convolution's output channels are padded
up to a multiple of it."""

# Ops whose output has their first input's spatial size (so the parity of H and W passes through them).
_SAME_SIZE = {
    "Relu",
    "LeakyRelu",
    "Tanh",
    "Sigmoid",
    "Clip",
    "Identity",
    "InstanceNormalization",
    "BatchNormalization",
    "Dropout",
    "Cast",
}


@dataclass
class OptimizeResult:
    path: str
    nodes_before: int
    nodes_after: int
    phase_split: list[str] = field(default_factory=list)  # names of the convolutions rewritten

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class NodeMacs:
    name: str
    op: str
    kind: str  # conv kinds: "dense", "depthwise", "pointwise", "grouped", "transposed"; otherwise the op type
    macs: int
    macs_gc: int
    output_shape: list[int]
    output: str  # the tensor the node writes (ONNX Runtime names a fused or NCHWc node after it)


def _onnx() -> Any:
    import onnx

    return onnx


def fold_constants(proto: Any) -> Any:
    """The model after ONNX Runtime's *basic* optimisations, which only produce standard ONNX operators:
    constant folding (the tracing exporter computes every reflection pad's amounts at run time from a
    dozen Shape/Slice/Concat/... nodes) and removal of redundant nodes. Opset imports are cut to the
    domains the nodes use and stale ``value_info`` is dropped."""
    onnx = _onnx()
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmpdir:
        folded = Path(tmpdir) / "folded.onnx"
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(folded)
        opts.log_severity_level = 3
        ort.InferenceSession(proto.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
        out = onnx.load(str(folded))
    if any(n.domain not in ("", "ai.onnx") for n in out.graph.node):  # pragma: no cover - not seen with ORT 1.x
        return proto
    # ONNX Runtime lists every domain it knows; keep only those the nodes use.
    used = {n.domain for n in out.graph.node} | {""}
    kept = [o for o in out.opset_import if o.domain in used]
    del out.opset_import[:]
    out.opset_import.extend(kept)
    del out.graph.value_info[:]
    return out


def _attrs(node: Any) -> dict[str, Any]:
    onnx = _onnx()
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _initializers(graph: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in graph.initializer}


def _static_shapes(proto: Any) -> dict[str, list[int | None]]:
    """Tensor name -> dims (None where unknown) from ONNX shape inference."""
    onnx = _onnx()
    inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    shapes: dict[str, list[int | None]] = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        t = vi.type.tensor_type
        if t.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    return shapes


def _even_spatial(
    name: str,
    producers: dict[str, Any],
    inits: dict[str, np.ndarray],
    shapes: dict[str, list[int | None]],
    depth: int = 0,
) -> bool:
    """Whether tensor ``name`` (N, C, H, W) has even H and W for every input size the model accepts: known
    from shape inference, or proved by walking back to a layer that always doubles (a stride-2 transposed
    convolution as in the generators' up-sampling, or DepthToSpace) through layers that keep the size
    or pad it by an even amount. Anything else counts as unknown, so the rewrite is skipped."""
    dims = shapes.get(name)
    if dims and len(dims) == 4 and dims[2] is not None and dims[3] is not None:
        return dims[2] % 2 == 0 and dims[3] % 2 == 0
    node = producers.get(name)
    if node is None or depth > 64:
        return False
    a = _attrs(node)
    if node.op_type in _SAME_SIZE:
        return _even_spatial(node.input[0], producers, inits, shapes, depth + 1)
    if node.op_type in ("Add", "Sub", "Mul", "Div"):
        # Broadcasting pairs a dim only with an equal one or 1, so an input with even H and W fixes the output's.
        return any(_even_spatial(i, producers, inits, shapes, depth + 1) for i in node.input)
    if node.op_type == "Pad":
        pads = inits.get(node.input[1]) if len(node.input) > 1 else None
        if pads is None or pads.size != 8 or (len(node.input) > 3 and node.input[3]):
            return False
        if (pads[2] + pads[6]) % 2 or (pads[3] + pads[7]) % 2:
            return False
        return _even_spatial(node.input[0], producers, inits, shapes, depth + 1)
    if node.op_type == "DepthToSpace":
        return int(a.get("blocksize", 0)) % 2 == 0
    if node.op_type == "ConvTranspose":
        if a.get("output_shape") or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            return False
        w = inits.get(node.input[1])
        if w is None or w.ndim != 4:
            return False
        strides = list(a.get("strides", [1, 1]))
        t_pads = list(a.get("pads", [0, 0, 0, 0]))
        out_pad = list(a.get("output_padding", [0, 0]))
        dil = list(a.get("dilations", [1, 1]))
        # out = stride·(in - 1) + output_padding + (k - 1)·dilation + 1 - pad_begin - pad_end
        for i in range(2):
            rest = out_pad[i] + (w.shape[2 + i] - 1) * dil[i] + 1 - t_pads[i] - t_pads[i + 2]
            if strides[i] % 2 or rest % 2:
                return False
        return True
    return False


def _phase_weights(w: np.ndarray, b: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Weights [4·Co, Ci, kh+1, kw+1] of the stride-2 form of a stride-1 convolution with weights ``w``
    [Co, Ci, kh, kw]: output phase (ry, rx) of channel co, which DepthToSpace (DCR) reads from channel
    (2·ry + rx)·Co + co, is the original kernel shifted by (ry, rx) inside the larger one, zeros elsewhere."""
    co, ci, kh, kw = w.shape
    out = np.zeros((4 * co, ci, kh + 1, kw + 1), dtype=w.dtype)
    for ry in range(2):
        for rx in range(2):
            p = (2 * ry + rx) * co
            out[p : p + co, :, ry : ry + kh, rx : rx + kw] = w
    return out, (np.tile(b, 4) if b is not None else None)


def _worth_phase_split(w: np.ndarray, block: int, gain: float) -> bool:
    """Whether the rewrite cuts the work NCHWc actually does (output channels padded up to ``block``) by
    ``gain`` or more: per output pixel, ⌈Co⌉·Ci·kh·kw before, ⌈4·Co⌉·Ci·(kh+1)·(kw+1)/4 after."""
    co, ci, kh, kw = w.shape

    def up(c: int) -> int:
        return -(-c // block) * block

    return up(co) * kh * kw * 4 >= gain * up(4 * co) * (kh + 1) * (kw + 1)


def phase_split_convs(proto: Any, *, block: int = NCHWC_BLOCK, gain: float = 2.0) -> list[str]:
    """Rewrite, in place, each convolution that wastes most of ONNX Runtime's padded output-channel block as a
    stride-2 convolution of its four output phases followed by DepthToSpace(2) (see the module docstring);
    returns the rewritten node names. ``gain``: the least cut in padded work worth it (the phase form's larger,
    strided kernel runs a little less efficiently); 3.1 for a 7×7 conv to 3 or 4 channels, 1.5 for 8.

    Only plain convolutions qualify: stride 1, dilation 1, group 1, odd kernels, constant weights and bias, and
    an input whose height and width plus the conv's own zero padding are provably even for every input size
    (otherwise the phases would not tile the output)."""
    onnx = _onnx()
    from onnx import helper, numpy_helper

    graph = proto.graph
    inits = _initializers(graph)
    producers = {o: n for n in graph.node for o in n.output}
    shapes = _static_shapes(proto)
    taken = {n.name for n in graph.node} | {o for n in graph.node for o in n.output} | set(inits)

    def fresh(base: str) -> str:
        name, i = base, 0
        while name in taken:
            i += 1
            name = f"{base}_{i}"
        taken.add(name)
        return name

    fed = {i.name for i in graph.input}  # initializers a caller may override (old IR versions) stay as they are
    done: list[str] = []
    new_nodes = []
    for node in graph.node:
        a = _attrs(node)
        conv = node.op_type == "Conv" and len(node.input) > 1 and not fed & set(node.input[1:])
        w = inits.get(node.input[1]) if conv else None
        pads = list(a.get("pads", [0, 0, 0, 0]))
        has_bias = len(node.input) > 2 and bool(node.input[2])
        ok = (
            w is not None
            and w.ndim == 4
            and w.dtype == np.float32
            and int(a.get("group", 1)) == 1
            and list(a.get("strides", [1, 1])) == [1, 1]
            and list(a.get("dilations", [1, 1])) == [1, 1]
            and a.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
            and len(pads) == 4
            and (pads[0] + pads[2]) % 2 == 0
            and (pads[1] + pads[3]) % 2 == 0
            and w.shape[2] % 2 == 1
            and w.shape[3] % 2 == 1
            and (not has_bias or node.input[2] in inits)  # a bias computed at run time: leave the node alone
            and _worth_phase_split(w, block, gain)
            and _even_spatial(node.input[0], producers, inits, shapes)
        )
        if not ok:
            new_nodes.append(node)
            continue
        assert w is not None
        w2, b2 = _phase_weights(w, inits[node.input[2]] if has_bias else None)
        base = node.name or node.output[0]
        w_name, phases = fresh(f"{base}_phases_weight"), fresh(f"{base}_phases_out")
        graph.initializer.append(numpy_helper.from_array(w2, w_name))
        conv_inputs = [node.input[0], w_name]
        if b2 is not None:
            b_name = fresh(f"{base}_phases_bias")
            graph.initializer.append(numpy_helper.from_array(b2, b_name))
            conv_inputs.append(b_name)
        new_nodes += [
            helper.make_node(
                "Conv",
                conv_inputs,
                [phases],
                name=fresh(f"{base}_phases"),
                kernel_shape=[w2.shape[2], w2.shape[3]],
                strides=[2, 2],
                pads=pads,
            ),
            helper.make_node(
                "DepthToSpace", [phases], list(node.output), name=fresh(f"{base}_interleave"), blocksize=2, mode="DCR"
            ),
        ]
        done.append(base)
    if done:
        del graph.node[:]
        graph.node.extend(new_nodes)
        # Drop the original weights (and biases) nothing reads any more.
        used = {i for n in graph.node for i in n.input} | {i.name for i in graph.input}
        keep = [t for t in graph.initializer if t.name in used]
        del graph.initializer[:]
        graph.initializer.extend(keep)
        onnx.checker.check_model(proto)
    return done


def optimize_model(proto: Any, *, fold: bool = True, phase_split: bool = True) -> tuple[Any, list[str]]:
    """The optimised model and the names of the convolutions :func:`phase_split_convs` rewrote.

    ``fold``: constant-fold with ONNX Runtime's basic level (:func:`fold_constants`); ``phase_split``: the
    output-convolution rewrite (it needs ``fold`` to see the tracing exporter's computed pad amounts)."""
    if fold:
        proto = fold_constants(proto)
    return proto, phase_split_convs(proto) if phase_split else []


def optimize_onnx(
    src: str | Path,
    dst: str | Path | None = None,
    *,
    fold: bool = True,
    phase_split: bool = True,
) -> OptimizeResult:
    """Write a faster equivalent of the ONNX file ``src`` to ``dst`` (default: in place), atomically; see
    :func:`optimize_model`. The result holds standard ONNX operators only. Check it with
    :func:`onnx_file_parity`."""
    onnx = _onnx()
    src, dst = Path(src), Path(dst) if dst is not None else Path(src)
    if dst.suffix != ".onnx":
        raise EdgeganError(f"optimised model path must end in .onnx, got {dst}")
    proto = onnx.load(str(src))
    before = len(proto.graph.node)
    proto, rewritten = optimize_model(proto, fold=fold, phase_split=phase_split)
    with atomic_path(dst) as tmp:
        onnx.save(proto, str(tmp))
    return OptimizeResult(str(dst), before, len(proto.graph.node), rewritten)


def onnx_file_parity(a: str | Path, b: str | Path, x: np.ndarray, threads: int | None = None) -> float:
    """Max |output(a) - output(b)| over all outputs of two ONNX files run by ONNX Runtime on input ``x``."""
    from edgegan.profile.latency import onnx_feed, onnx_session

    outs = []
    for path in (a, b):
        sess = onnx_session(path, threads)
        outs.append(sess.run(None, onnx_feed(sess, x)))
    if len(outs[0]) != len(outs[1]):
        raise EdgeganError(f"{a} has {len(outs[0])} outputs, {b} has {len(outs[1])}")
    return max(float(np.max(np.abs(p - q))) for p, q in zip(*outs, strict=True))


def _runtime_shapes(proto: Any, names: set[str], x: np.ndarray) -> dict[str, list[int]]:
    """Shapes of the float tensors ``names`` when ONNX Runtime runs the model on ``x`` (exact where ONNX shape
    inference gives up, e.g. behind an input skip whose channel count is computed at run time)."""
    onnx = _onnx()
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    have = {o.name for o in probe.graph.output}
    wanted = sorted(names - have)
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in wanted)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    opts.log_severity_level = 3
    sess = ort.InferenceSession(probe.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    outs = sess.run(None, {sess.get_inputs()[0].name: x})
    return {o.name: list(v.shape) for o, v in zip(sess.get_outputs(), outs, strict=True) if o.name in names}


def node_macs(model: str | Path | Any, input_shape: tuple[int, ...] = (1, 3, 256, 256)) -> dict[str, NodeMacs]:
    """Node name -> its MACs at ``input_shape`` (the model's single image input), for convolutions,
    transposed convolutions and InstanceNormalization, in both conventions of :mod:`edgegan.profile.macs`:
    ``macs`` true multiply-accumulates, ``macs_gc`` GAN Compression's (a transposed conv counted as output
    elements × C_in/groups × k², plus each InstanceNorm's output elements). Tensor shapes come from one
    ONNX Runtime run on zeros of ``input_shape``."""
    onnx = _onnx()
    proto = onnx.load(str(model)) if isinstance(model, str | Path) else model
    proto = fold_constants(proto)  # the exporter's computed pads become constants; node names stay
    graph = proto.graph
    init_names = {t.name for t in graph.initializer}
    if len([i for i in graph.input if i.name not in init_names]) != 1:
        raise EdgeganError("node_macs needs a model with one input")
    counted = [n for n in graph.node if n.op_type in ("Conv", "ConvTranspose", "InstanceNormalization")]
    shapes = _runtime_shapes(
        proto, {n.input[0] for n in counted} | {n.output[0] for n in counted}, np.zeros(input_shape, np.float32)
    )
    inits = _initializers(graph)
    out: dict[str, NodeMacs] = {}
    for node in counted:
        y = shapes[node.output[0]]
        y_elems = math.prod(y)
        if node.op_type == "InstanceNormalization":
            out[node.name] = NodeMacs(node.name, node.op_type, node.op_type, 0, y_elems, y, node.output[0])
            continue
        w = inits.get(node.input[1])
        if w is None:
            continue  # weights computed at run time: not a layer of these generators
        g = int(_attrs(node).get("group", 1))
        taps = math.prod(w.shape[2:])
        if node.op_type == "Conv":  # weight [Co, Ci/g, k...]
            m = gc = y_elems * w.shape[1] * taps
            c_in = w.shape[1] * g
            if g > 1 and g == c_in and w.shape[0] == c_in:
                kind = "depthwise"
            elif g > 1:
                kind = "grouped"
            else:
                kind = "pointwise" if taps == 1 else "dense"
        else:  # weight [Ci, Co/g, k...]
            m = math.prod(shapes[node.input[0]]) * w.shape[1] * taps
            gc = y_elems * (w.shape[0] // g) * taps
            kind = "transposed"
        out[node.name] = NodeMacs(node.name, node.op_type, kind, int(m), int(gc), y, node.output[0])
    return out
