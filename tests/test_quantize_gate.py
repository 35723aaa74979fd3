"""Quantization behind a PSNR gate (int8, fp16, auto) and exports strict runtimes accept."""

import json

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

import edgegan
from edgegan.cli import main
from edgegan.errors import EdgeganError
from edgegan.export.onnx import export_onnx, onnx_operators, onnx_parity, run_onnx
from edgegan.export.quantize import int8_fidelity, quantize_gated, split_calibration

TINY = {"ngf": 8, "n_blocks": 2}


def smooth_images(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """Photo-like inputs in [-1, 1]: random 5x5 colour fields upsampled bicubically."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 5, 5, generator=gen) * 2 - 1
    fine = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return [x[None].clamp(-1, 1).numpy() for x in fine]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny ResNet generator (InstanceNorm, reflection pads, transposed convs) at 32 px and 8 images."""
    folder = tmp_path_factory.mktemp("gate")
    torch.manual_seed(0)
    export_onnx(edgegan.build("resnet_generator", **TINY), folder / "g.onnx", size=32)
    return folder / "g.onnx", smooth_images(8, 32)


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def write_calib(folder, images):
    folder.mkdir()
    for i, x in enumerate(images):
        rgb = ((x[0].transpose(1, 2, 0) + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(folder / f"{i}.png")
    return folder


def test_auto_keeps_more_layers_in_float_for_a_higher_gate(exported, tmp_path):
    fp32, images = exported
    calib, held = split_calibration(images)
    assert len(calib) == 6 and len(held) == 2
    low = quantize_gated(fp32, tmp_path / "low.onnx", mode="auto", calibration=calib, held_out=held, min_psnr=20)
    full_db = max(low.per_channel_vs_tensor_db.values())
    assert low.kept_float == [] and low.psnr_db_median == pytest.approx(full_db, abs=1e-3)
    # Sensitivity: one entry per quantizable layer, most sensitive (largest PSNR gain when float) first.
    assert (
        sorted(s["node"] for s in low.sensitivity) == sorted(low.quantizable) and len(low.quantizable) == 8
    )  # ConvTranspose stays float
    gains = [s["gain_db"] for s in low.sensitivity]
    assert gains == sorted(gains, reverse=True) and gains[0] > 0.3

    gate = full_db + 3.0
    high = quantize_gated(
        fp32, tmp_path / "high.onnx", mode="auto", calibration=calib, held_out=held, min_psnr=gate, latency_rounds=2
    )
    assert 0 < len(high.kept_float) < len(high.quantizable)
    assert high.kept_float == [s["node"] for s in high.sensitivity[: len(high.kept_float)]]
    # The written file meets the gate on the held-out images, measured independently.
    fid = int8_fidelity(fp32, tmp_path / "high.onnx", held)
    assert fid["psnr_db_median"] >= gate and fid["psnr_db_median"] == pytest.approx(high.psnr_db_median, abs=1e-6)
    assert high.steps[-1]["psnr_db"] >= gate - 1e-3 and high.steps[-2]["psnr_db"] < gate  # stopped once met
    assert high.latency_ms["fp32"] > 0 and high.latency_ms["int8"] > 0 and high.latency_input == [1, 3, 32, 32]


def test_gate_that_cannot_be_met_fails_in_one_line_and_writes_nothing(exported, capsys, tmp_path):
    _, images = exported
    calib = write_calib(tmp_path / "calib", images)
    out = tmp_path / "m.onnx"
    int8 = tmp_path / "m.int8.onnx"
    int8.write_bytes(b"an older int8 model that no longer matches m.onnx")
    args = ["export", "resnet_generator", "-o", "ngf=8", "-o", "n_blocks=2", "--size", "32", "--out", out]
    code, stdout, err = run(capsys, *args, "--quantize", "int8", "--calib", calib, "--min-psnr", "80")
    assert code == 1 and out.exists() and not int8.exists()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgegan: error: int8 PSNR vs fp32") and "--force" in lines[0]
    report = json.loads((tmp_path / "m.int8.quant.json").read_text())
    assert report["passed"] is False and report["written"] is False and report["removed_stale"] is True
    assert report["held_out"] == 2 and report["calibration_images"] == 6 and report["psnr_db_median"] < 80
    # Both weight granularities were measured and the better one kept.
    pc = report["per_channel_vs_tensor_db"]
    assert report["per_channel"] == (pc["per_channel"] >= pc["per_tensor"])
    assert report["psnr_db_median"] == pytest.approx(max(pc.values()), abs=1e-3)

    code, stdout, err = run(capsys, *args, "--quantize", "int8", "--calib", calib, "--min-psnr", "80", "--force")
    assert code == 0 and int8.exists() and err == ""
    assert "forced" in stdout
    report = json.loads((tmp_path / "m.int8.quant.json").read_text())
    assert report["passed"] is False and report["written"] is True


def test_auto_on_the_command_line_writes_its_report(exported, capsys, tmp_path):
    _, images = exported
    calib = write_calib(tmp_path / "calib", images)
    out = tmp_path / "m.onnx"
    torch.manual_seed(0)  # the same weights as `exported`: all int8 gives 37 dB on the held-out images
    code, stdout, err = run(
        capsys, "export", "resnet_generator", "-o", "ngf=8", "-o", "n_blocks=2", "--size", "32", "--out", out,
        "--quantize", "auto", "--calib", calib, "--min-psnr", "42", "--json",
    )  # fmt: skip
    assert code == 0, err
    q = json.loads(stdout)["int8"]
    assert q["passed"] and q["written"] and q["psnr_db_median"] >= 42 and q["kept_float"]
    assert max(q["per_channel_vs_tensor_db"].values()) < 42
    assert json.loads((tmp_path / "m.int8.quant.json").read_text()) == {k: v for k, v in q.items() if k != "report"}
    assert int8_fidelity(out, tmp_path / "m.int8.onnx", split_calibration(images)[1])["psnr_db_median"] >= 42 - 0.5


def test_fp16_runs_on_cpu_close_to_fp32(exported, tmp_path):
    fp32, images = exported
    report = quantize_gated(fp32, tmp_path / "h.onnx", mode="fp16", held_out=images, min_psnr=50, latency_rounds=2)
    assert report.written and report.psnr_db_median >= 50
    fp16 = onnx.load(str(tmp_path / "h.onnx"))
    # Float16 weights inside, float32 at the edges.
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in fp16.graph.initializer)
    assert fp16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert fp16.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    x = images[0]
    y32, y16 = run_onnx(fp32, x)[0], run_onnx(tmp_path / "h.onnx", x)[0]
    assert y16.dtype == np.float32 and np.max(np.abs(y32 - y16)) < 1e-2


def test_auto_needs_calibration_and_bad_modes_are_refused(exported, capsys, tmp_path):
    with pytest.raises(EdgeganError, match="calib"):
        quantize_gated(exported[0], tmp_path / "x.onnx", mode="auto")
    for args in (["--quantize", "auto"], ["--quantize", "int4"]):
        code, _, err = run(capsys, "export", "resnet_generator", "--out", tmp_path / "x.onnx", *args)
        assert code == 2 and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()


def test_static_shape_export_has_integer_dims_and_standard_operators(capsys, tmp_path):
    out = tmp_path / "s.onnx"
    code, stdout, _ = run(
        capsys, "export", "resnet_generator", "-o", "ngf=8", "-o", "n_blocks=2", "--size", "32x48", "--static-shape",
        "--out", out, "--json",
    )  # fmt: skip
    assert code == 0 and json.loads(stdout)["max_abs_diff"] <= 1e-4
    graph = onnx.load(str(out)).graph
    for value in (graph.input[0], graph.output[0]):
        dims = value.type.tensor_type.shape.dim
        assert [d.dim_value for d in dims] == [1, 3, 32, 48] and not any(d.dim_param for d in dims)
    # The pad amounts are folded: no run-time shape arithmetic is left for a strict runtime to reject.
    assert onnx_operators(out) == ["Add", "Conv", "ConvTranspose", "InstanceNormalization", "Pad", "Relu", "Tanh"]
    assert {o.domain for o in onnx.load(str(out)).opset_import} == {""}


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic", "static"])
def test_opsets_export_with_parity(opset, dynamic, tmp_path):
    torch.manual_seed(0)
    model = edgegan.build("mobile_resnet_generator", channels="8_8_8_8_8_8_8_8", n_blocks=3)
    result = export_onnx(model, tmp_path / "m.onnx", size=(32, 48), opset=opset, dynamic=dynamic)
    assert result.max_abs_diff <= 1e-4
    assert onnx.load(str(tmp_path / "m.onnx")).opset_import[0].version == opset
    if dynamic:  # height and width stay free
        assert result.output_shapes == [["batch", 3, "height", "width"]]
        assert onnx_parity(model, tmp_path / "m.onnx", torch.randn(1, 3, 40, 24)) <= 1e-4
    else:
        assert result.output_shapes == [[1, 3, 32, 48]]


def test_instance_norm_exports_and_matches_torch_at_a_non_square_size(tmp_path):
    torch.manual_seed(0)
    model = edgegan.build("resnet_generator", **TINY).eval()
    assert model.config.norm == "instance"
    # Affine parameters away from 1/0 and inputs far from zero mean, so a wrong normalisation shows.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.InstanceNorm2d) and m.affine:
                m.weight.uniform_(0.5, 2.0)
                m.bias.uniform_(-0.5, 0.5)
    export_onnx(model, tmp_path / "g.onnx", size=(24, 56))
    assert "InstanceNormalization" in onnx_operators(tmp_path / "g.onnx")
    x = torch.rand(2, 3, 40, 72) * 3 + 2
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.std(expected) > 0.05  # not a constant image: the comparison has something to compare
    assert np.max(np.abs(run_onnx(tmp_path / "g.onnx", x)[0] - expected)) <= 1e-4


def test_dynamo_static_export_is_one_self_contained_file(tmp_path):
    model = edgegan.build("resnet_generator", ngf=4, n_blocks=1)
    result = export_onnx(model, tmp_path / "d.onnx", size=(32, 48), exporter="dynamo", dynamic=False)
    assert result.max_abs_diff <= 1e-4 and result.output_shapes == [[1, 3, 32, 48]]
    # The exporter's side file of weights is folded in and removed.
    assert [p.name for p in tmp_path.iterdir()] == ["d.onnx"]
