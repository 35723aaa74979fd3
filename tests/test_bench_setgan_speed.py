"""bench/setgan_speed.py's CPU path (the same code path its --device cuda[:N,...] run takes on a GPU machine)."""

import json
import runpy
import sys

import numpy as np
import pytest
from PIL import Image

from edgegan.errors import ConfigError

BENCH = "bench/setgan_speed.py"


def _run(monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", [BENCH, *args])
    runpy.run_path(BENCH, run_name="__main__")


def test_setgan_speed_cpu_run_writes_both_modes_and_the_ratio(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    img = tmp_path / "img.png"
    Image.fromarray((rng.random((30, 36, 3)) * 255).astype(np.uint8)).save(img)
    out = tmp_path / "speed.json"
    _run(
        monkeypatch,
        "--image",
        str(img),
        "--max-size",
        "30",
        "--min-size",
        "25",
        "--iters",
        "2",
        "--nfc",
        "8",
        "--max-nfc",
        "8",
        "--workers",
        "2",
        "--out",
        str(out),
    )
    r = json.loads(out.read_text())
    n = len(r["serial"]["sizes"])
    assert n >= 2 and len(r["serial"]["per_scale_s"]) == n == len(r["parallel"]["per_scale_s"])
    assert r["speedup"] == pytest.approx(r["serial"]["total_s"] / r["parallel"]["total_s"])
    assert r["settings"]["devices"] == ["cpu"] and r["workers"] == 2


def test_setgan_speed_refuses_a_missing_gpu_in_one_line(tmp_path, monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="no CUDA device"):
        _run(monkeypatch, "--image", str(tmp_path / "x.png"), "--device", "cuda:0,cuda:1", "--out", str(tmp_path / "o"))
