"""bench/quantize.py end to end on a tiny random generator and synthetic photos (no ../shared data)."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import edgegan
from edgegan.e2gan.editors import classical_editor
from edgegan.export.onnx import export_onnx, run_onnx
from edgegan.export.quantize import psnr

BENCH = Path(__file__).resolve().parents[1] / "bench" / "quantize.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_quantize", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _photos(folder: Path, n: int, seed: int) -> Path:
    """Photo-like PNGs: smooth random colour fields, 48 px (the bench resizes them)."""
    folder.mkdir()
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 5, 5, generator=gen)
    fine = torch.nn.functional.interpolate(coarse, size=(48, 48), mode="bicubic", align_corners=False).clamp(0, 1)
    for i, x in enumerate(fine):
        Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(folder / f"{i + 1}.png")
    return folder


def test_gate_margin_costs_half_a_db_for_independent_errors():
    bench = _bench()
    # fp32 error MSE e and int8 error MSE e * 10**(-margin/10) add up to e * 10**(0.5/10).
    margin = bench.GATE_MARGIN_DB
    assert 1 + 10 ** (-margin / 10) == pytest.approx(10**0.05)
    assert margin == pytest.approx(9.14, abs=0.01)


def test_quick_run_measures_every_variant(tmp_path):
    bench = _bench()
    torch.manual_seed(0)
    model = tmp_path / "tiny.onnx"
    export_onnx(edgegan.build("resnet_generator", ngf=8, n_blocks=2), model, size=32)
    calib, test = _photos(tmp_path / "train", 4, 0), _photos(tmp_path / "test", 2, 1)
    out = tmp_path / "out"
    # A gate no int8 model reaches: auto keeps layers in float (all but one) and says it missed.
    argv = ["--models", f"tiny={model}", "--quick", "--calib-dir", calib, "--eval-dir", test, "--out", out]
    results = bench.main([str(a) for a in [*argv, "--min-psnr", "200"]])

    saved = json.loads((out / "results.json").read_text())
    assert saved["settings"]["size"] == 64 and saved["settings"]["threads"] == [1]
    assert saved["settings"]["calib_used"] == 3 and saved["settings"]["held"] == 1
    r = saved["models"]["tiny"]
    rows = r["variants"]
    assert set(rows) == set(bench.VARIANTS)
    fp32 = rows["fp32"]
    assert fp32["psnr_vs_fp32_db"] is None and fp32["speedup"] == {"1": 1.0}  # null: identical to itself
    # PSNR against the target, recomputed here from the files and the editor.
    editor = classical_editor("cool")
    expected = []
    for p in sorted(test.iterdir()):
        photo = np.asarray(Image.open(p).convert("RGB").resize((64, 64), Image.Resampling.BICUBIC))
        y = np.clip(run_onnx(model, bench.to_model(photo))[0], -1, 1)
        expected.append(psnr(y, bench.to_model(editor(photo, ""))))
    assert fp32["psnr_vs_target_db"] == pytest.approx(float(np.mean(expected)), abs=1e-3)
    for v in ("int8-pc", "int8-pt", "int8-conv", "auto"):
        assert 15 < rows[v]["psnr_vs_fp32_db"] < 80, v
        assert rows[v]["latency_ms"]["1"] > 0 and rows[v]["bytes"] > 0
    assert "error" in rows["fp16"] or rows["fp16"]["psnr_vs_fp32_db"] is None or rows["fp16"]["psnr_vs_fp32_db"] > 50
    # auto: every layer but one kept in float, so it is closer to fp32 than all-int8; the gate was missed.
    a = r["auto"]
    assert a["passed"] is False and len(a["kept_float"]) == a["quantizable"] - 1 == 9
    assert rows["auto"]["psnr_vs_fp32_db"] > rows[r["int8"]]["psnr_vs_fp32_db"]
    assert [s["gain_db"] for s in a["sensitivity"]] == sorted((s["gain_db"] for s in a["sensitivity"]), reverse=True)
    # The goal verdict agrees with the table.
    loss = fp32["psnr_vs_target_db"] - rows[r["int8"]]["psnr_vs_target_db"]
    assert r["goal"]["int8_loss_db"] == pytest.approx(loss, abs=1e-3)
    assert r["goal"]["holds"] == (rows[r["int8"]]["speedup"]["1"] >= 1.5 and loss <= 0.5)
    # The profile sees int8 kernels only in the int8 model.
    prof = r["profile"]
    assert prof["fp32"]["groups"]["int8 kernels"] == 0 and prof[r["int8"]]["groups"]["int8 kernels"] > 0
    assert prof["fp32"]["total_ms"] > 0 and set(prof["fp32"]["by_layer"]) == set(prof["auto"]["by_layer"])
    assert math.isfinite(saved["loadavg"]["timing_max"]) and saved["machine"]["loadavg"] == saved["loadavg"]
    assert results["models"]["tiny"]["gate_db"] == 200.0

    report = (out / "report.md").read_text()
    assert "| tiny | fp32 | " in report and "| tiny | fp16 | " in report and "**tiny**: goal " in report
