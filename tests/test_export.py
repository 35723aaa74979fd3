import numpy as np
import pytest
import torch

import edgegan
from edgegan.errors import EdgeganError
from edgegan.export.onnx import export_onnx, onnx_parity, run_onnx
from edgegan.export.quantize import int8_fidelity, psnr, quantize_onnx

TINY = {
    "resnet_generator": {"ngf": 8, "n_blocks": 2},
    "mobile_resnet_generator": {"channels": "8_8_8_8_8_8_8_8", "n_blocks": 3},
    "unet_generator": {"ngf": 8, "num_downs": 5},
    "patch_discriminator": {"ndf": 8, "n_layers": 2},
    "multiscale_discriminator": {"ndf": 8, "n_layers": 2, "num_d": 2},
}


@pytest.mark.parametrize("arch", sorted(TINY))
def test_onnx_parity_and_dynamic_size(arch, tmp_path):
    model = edgegan.build(arch, **TINY[arch]).eval()
    result = export_onnx(model, tmp_path / "m.onnx", size=64)
    assert result.max_abs_diff is not None and result.max_abs_diff <= 1e-4
    # Height, width and batch stay dynamic: another shape runs and still matches.
    assert onnx_parity(model, tmp_path / "m.onnx", torch.randn(2, 3, 96, 64)) <= 1e-4


def test_full_size_teacher_and_student_parity(tmp_path):
    for arch, opts in [("resnet_generator", {}), ("mobile_resnet_generator", {"channels": "16_16_32_16_32_32_16_16"})]:
        result = export_onnx(edgegan.build(arch, **opts), tmp_path / f"{arch}.onnx", size=256)
        assert result.max_abs_diff <= 1e-4


def test_dynamo_exporter_parity(tmp_path):
    model = edgegan.build("resnet_generator", ngf=4, n_blocks=1)
    result = export_onnx(model, tmp_path / "m.onnx", size=32, exporter="dynamo")
    assert result.max_abs_diff <= 1e-4
    assert run_onnx(tmp_path / "m.onnx", torch.randn(1, 3, 48, 40))[0].shape == (1, 3, 48, 40)


def test_failed_export_leaves_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    model = edgegan.build("resnet_generator", ngf=4, n_blocks=1)
    export_onnx(model, path, size=32)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(torch.onnx, "export", boom)
    with pytest.raises(RuntimeError):
        export_onnx(model, path, size=32)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_export_rejects_wrong_suffix(tmp_path):
    with pytest.raises(EdgeganError, match=".onnx"):
        export_onnx(edgegan.build("resnet_generator", ngf=4, n_blocks=1), tmp_path / "m.bin", size=32)


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_int8_quantization(mode, tmp_path):
    torch.manual_seed(0)
    model = edgegan.build("mobile_resnet_generator", channels="8_8_8_8_8_8_8_8", n_blocks=3)
    export_onnx(model, tmp_path / "m.onnx", size=32)
    gen = np.random.default_rng(0)
    inputs = [gen.uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32) for _ in range(3)]
    out = quantize_onnx(tmp_path / "m.onnx", tmp_path / "m8.onnx", mode=mode, calibration=inputs)
    assert out.stat().st_size < (tmp_path / "m.onnx").stat().st_size
    fid = int8_fidelity(tmp_path / "m.onnx", out, inputs)
    assert fid["n"] == 3 and 10 < fid["psnr_db_median"] < 100


def test_static_quantization_needs_calibration(tmp_path):
    export_onnx(edgegan.build("resnet_generator", ngf=4, n_blocks=1), tmp_path / "m.onnx", size=32)
    with pytest.raises(EdgeganError, match="calibration"):
        quantize_onnx(tmp_path / "m.onnx", tmp_path / "m8.onnx", mode="static")
    assert not (tmp_path / "m8.onnx").exists()


def test_psnr():
    a = np.zeros((4, 4))
    assert psnr(a, a) == float("inf")
    assert psnr(a, a + 0.02) == pytest.approx(10 * np.log10(4 / 0.0004))
