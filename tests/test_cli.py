import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import edgegan
from edgegan.cli import main


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_profile_json_teacher(capsys):
    code, out, _ = run(capsys, "profile", "resnet_generator", "--size", "256", "--json", "--no-memory")
    assert code == 0
    data = json.loads(out)
    assert data["params"] == 11_378_179
    assert data["macs_gc"] / 1e9 == pytest.approx(56.83, rel=1e-3)
    assert data["macs"] / 1e9 == pytest.approx(49.55, rel=1e-3)


def test_profile_json_student_with_channels(capsys):
    code, out, _ = run(
        capsys, "profile", "mobile_resnet_generator", "-o", "channels=16_16_32_16_32_32_16_16", "--json", "--no-memory"
    )
    assert code == 0
    data = json.loads(out)
    assert data["macs_gc"] / 1e9 == pytest.approx(2.546, rel=5e-3)
    assert data["config"]["channels"] == [16, 16, 32, 16, 32, 32, 16, 16]


def test_profile_tables_latency_memory_layers(capsys):
    code, out, _ = run(
        capsys,
        "profile",
        "resnet_generator",
        "-o",
        "ngf=8",
        "-o",
        "n_blocks=2",
        "--size",
        "32",
        "--latency",
        "--repeats",
        "2",
        "--warmup",
        "1",
        "--layers",
    )
    assert code == 0
    assert "per layer" in out and "latency torch" in out and "latency onnxruntime" in out
    assert "peak activation memory" in out and "machine:" in out


def test_init_profile_and_export_saved_folder(capsys, tmp_path):
    folder = tmp_path / "student"
    code, _, _ = run(capsys, "init", "mobile_resnet_generator", "-o", "ngf=8", "--out", str(folder))
    assert code == 0 and edgegan.load(folder).config.ngf == 8
    code, out, _ = run(capsys, "profile", str(folder), "--size", "32", "--json", "--no-memory")
    assert code == 0 and json.loads(out)["arch"] == "mobile_resnet_generator"
    onnx = tmp_path / "student.onnx"
    code, out, _ = run(capsys, "export", str(folder), "--out", str(onnx), "--size", "32", "--json")
    data = json.loads(out)
    assert code == 0 and onnx.exists() and data["max_abs_diff"] <= 1e-4
    # Existing folders are not overwritten without --force.
    code, _, err = run(capsys, "init", "resnet_generator", "--out", str(folder))
    assert code == 2 and "--force" in err


def test_export_with_static_int8_on_images(capsys, tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(calib / f"{i}.png")
    onnx = tmp_path / "g.onnx"
    code, out, _ = run(
        capsys,
        "export",
        "resnet_generator",
        "-o",
        "ngf=4",
        "-o",
        "n_blocks=1",
        "--out",
        str(onnx),
        "--size",
        "32",
        "--quantize",
        "static",
        "--calib",
        str(calib),
        "--json",
    )
    assert code == 0, out
    q = json.loads(out)["int8"]
    assert q["n"] == 3 and q["psnr_db_median"] > 10 and (tmp_path / "g.int8.onnx").exists()


def test_demo_runs_on_small_size(capsys, tmp_path):
    code, out, _ = run(capsys, "demo", "compression", "--out", str(tmp_path / "demo"), "--size", "32", "--repeats", "1")
    assert code == 0
    summary = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert summary["compression"]["macs_gc"] == pytest.approx(56.83 / 2.546, rel=1e-2)
    assert (tmp_path / "demo" / "teacher.onnx").exists() and (tmp_path / "demo" / "student.onnx").exists()
    assert "ratio" in out


@pytest.mark.parametrize(
    "args",
    [
        ["profile", "no_such_arch"],
        ["profile", "./no/such/folder"],
        ["profile", "resnet_generator", "-o", "ngf"],
        ["profile", "resnet_generator", "-o", "ngf=abc"],
        ["profile", "resnet_generator", "-o", "width=3"],
        ["profile", "resnet_generator", "-o", "ngf=4", "-o", "ngf=8"],
        ["profile", "resnet_generator", "-o", "norm=group"],
        ["profile", "resnet_generator", "--size", "0"],
        ["profile", "resnet_generator", "--size", "big"],
        ["profile", "resnet_generator", "--repeats", "0"],
        ["profile", "resnet_generator", "--device", "tpu"],
        ["profile", "unet_generator", "--size", "32", "--no-memory"],
        ["profile", "resnet_generator", "--no-such-flag"],
        ["export", "resnet_generator", "--out", "x.bin"],
        ["export", "resnet_generator", "--out", "x.onnx", "--quantize", "int4"],
        ["export", "resnet_generator", "--out", "x.onnx", "--quantize", "static"],
        ["export", "resnet_generator", "--out", "x.onnx", "--exporter", "magic"],
        ["export", "resnet_generator"],
        ["setgan", "sample", "no_run", "--size", "400", "150"],  # sizes are N or HxW everywhere
        ["setgan", "sample", "no_run", "--size", "wide"],
        ["client", "sample", "JOB", "--size", "0x10"],
        ["nosuchcommand"],
    ],
)
def test_bad_input_is_one_line_exit_2(capsys, args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgegan: error: ")
    assert "Traceback" not in err
    assert not (tmp_path / "x.onnx").exists()


def test_bad_model_folders(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("hello")
    broken = edgegan.build("resnet_generator", ngf=4, n_blocks=1).save(tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"\x00" * 10)
    for target in ("empty", "file.txt", "broken"):
        code, _, err = run(capsys, "profile", str(tmp_path / target))
        assert code == 2 and len(err.strip().splitlines()) == 1, err


def test_export_calibration_errors(capsys, tmp_path):
    (tmp_path / "none").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"not an image")
    for folder in ("none", "bad", "missing"):
        code, _, err = run(
            capsys,
            "export",
            "resnet_generator",
            "--out",
            str(tmp_path / "m.onnx"),
            "--quantize",
            "static",
            "--calib",
            str(tmp_path / folder),
        )
        assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "m.onnx").exists()


def test_real_process_help_and_error():
    ok = subprocess.run([sys.executable, "-m", "edgegan.cli", "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "profile" in ok.stdout and "export" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "edgegan.cli", "profile", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
