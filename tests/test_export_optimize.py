"""The export-side rewrites keep every output (values, shapes) of the models they speed up."""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import edgegan
from edgegan.export.onnx import export_onnx, onnx_parity
from edgegan.export.optimize import node_macs, onnx_file_parity, optimize_onnx
from edgegan.profile import profile_macs

TINY = {"channels": "8_8_8_8_8_8_8_8", "n_blocks": 3}
HEAD = "/model/head/head.1/Conv"


def _images(*shapes: tuple[int, ...]) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.uniform(-1, 1, s).astype(np.float32) for s in shapes]


@pytest.mark.parametrize("options", [{}, {"residual": True, "input_skip": True}], ids=["tanh", "residual-skip"])
def test_optimised_student_matches_original(options, tmp_path):
    model = edgegan.build("mobile_resnet_generator", **TINY, **options).eval()
    src, dst = tmp_path / "m.onnx", tmp_path / "m.opt.onnx"
    export_onnx(model, src, size=64)
    result = optimize_onnx(src, dst)
    # The 3-channel output conv is the one rewritten; constant folding removes the pad-amount arithmetic.
    assert result.phase_split == [HEAD]
    assert result.nodes_after < result.nodes_before
    proto = onnx.load(str(dst))
    assert {n.domain for n in proto.graph.node} <= {""}  # standard ONNX only: portable
    assert "DepthToSpace" in {n.op_type for n in proto.graph.node}
    # Same values at the export size and at another size and batch (dynamic axes kept); without the residual
    # connections any size runs, a multiple of 4 or not (the up-sampling still makes the head's input even).
    sizes = [(1, 3, 64, 64), (2, 3, 96, 48)] + ([] if options else [(1, 3, 50, 38)])
    for x in _images(*sizes):
        assert onnx_file_parity(src, dst, x) <= 1e-5
    for x in _images((1, 3, 64, 64), (2, 3, 48, 80)):
        assert onnx_parity(model, dst, torch.from_numpy(x)) <= 1e-4


def test_export_with_optimize_flag(tmp_path):
    model = edgegan.build("mobile_resnet_generator", **TINY).eval()
    dynamic = export_onnx(model, tmp_path / "d.onnx", size=64, optimize=True)
    assert dynamic.optimized == [HEAD] and dynamic.max_abs_diff <= 1e-4
    assert dynamic.output_shapes == [["batch", 3, "height", "width"]]
    static = export_onnx(model, tmp_path / "s.onnx", size=64, dynamic=False, optimize=True)
    assert static.optimized == [HEAD] and static.max_abs_diff <= 1e-4
    assert static.output_shapes == [[1, 3, 64, 64]]
    assert export_onnx(model, tmp_path / "p.onnx", size=64).optimized is None


def _lone_conv(height: int | None, width: int | None) -> onnx.ModelProto:
    """input -> 7×7 conv to 3 channels with zero padding 3: no layer before it proves its input size even."""
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.normal(0, 0.1, (3, 16, 7, 7)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(0, 0.1, (3,)).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", kernel_shape=[7, 7], pads=[3, 3, 3, 3])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, height, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, height, width])],
        [w, b],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(("height", "width", "rewritten"), [(None, None, False), (20, 12, True), (21, 12, False)])
def test_rewrite_only_where_input_size_is_provably_even(height, width, rewritten, tmp_path):
    src, dst = tmp_path / "c.onnx", tmp_path / "c.opt.onnx"
    onnx.save(_lone_conv(height, width), str(src))
    result = optimize_onnx(src, dst)
    assert result.phase_split == (["conv"] if rewritten else [])
    x = _images((1, 16, height or 18, width or 10))[0]
    assert onnx_file_parity(src, dst, x) <= 1e-5


def test_node_macs_match_the_torch_profiler(tmp_path):
    model = edgegan.build("mobile_resnet_generator", **TINY).eval()
    export_onnx(model, tmp_path / "m.onnx", size=64, check=False)
    nodes = node_macs(tmp_path / "m.onnx", (1, 3, 64, 64))
    cost = profile_macs(model, torch.randn(1, 3, 64, 64))
    assert sum(n.macs for n in nodes.values()) == cost.macs
    assert sum(n.macs_gc for n in nodes.values()) == cost.macs_gc
    kinds = {n.kind for n in nodes.values()}
    assert {"dense", "depthwise", "pointwise", "transposed", "InstanceNormalization"} <= kinds


def test_cli_export_optimize_rewrites_the_head_and_keeps_parity(capsys, tmp_path):
    import json

    from edgegan.cli import main
    from edgegan.export.onnx import onnx_operators

    out = tmp_path / "s.onnx"
    code = main(["export", "mobile_resnet_generator", "-o", "channels=8_8_8_8_8_8_8_8", "-o", "n_blocks=3",
                 "--size", "32", "--optimize", "--out", str(out), "--json"])  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["max_abs_diff"] <= 1e-4 and report["optimized"]
    assert "DepthToSpace" in onnx_operators(out)
