"""``edgegan eval`` end to end on generated folders."""

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from edgegan import weights
from edgegan.cli import main
from edgegan.metrics.inception import FIDInceptionV3


def _folder(path, n, size=(48, 40), seed=0, noise_from=None, names=None):
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        name = (names or [f"{i:03d}" for i in range(n)])[i]
        if noise_from is not None:
            base = np.asarray(Image.open(noise_from / f"{name}.png"), dtype=np.float64)
            arr = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
        else:
            arr = rng.integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)
        Image.fromarray(arr).save(path / f"{name}.png")
    return path


@pytest.fixture
def inception_file(tmp_path_factory, monkeypatch):
    """Random-weight FID Inception saved under the published name, its hash accepted for the test."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / weights.KNOWN["inception-fid"].filename
    torch.save(FIDInceptionV3().state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    spec = dataclasses.replace(weights.KNOWN["inception-fid"], sha256_prefix=digest[:8])
    monkeypatch.setitem(weights.KNOWN, "inception-fid", spec)
    monkeypatch.setenv("TORCH_HOME", str(path.parent / "empty_cache"))
    monkeypatch.delenv(weights.ENV_VAR, raising=False)
    return path


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_cache"))
    monkeypatch.delenv(weights.ENV_VAR, raising=False)


def _json(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_paired_without_weights_reports_reference_metrics(tmp_path, capsys, no_weights):
    real = _folder(tmp_path / "real", 3, size=(170, 164))
    fake = _folder(tmp_path / "fake", 3, noise_from=real, seed=1)
    data = _json(capsys, "eval", "--real", str(real), "--fake", str(fake), "--json", "--out", str(tmp_path / "o"))
    assert {"psnr", "ssim", "ms_ssim", "l1"} <= set(data)
    assert 15 < data["psnr"] < 30 and 0 < data["ssim"] < 1 and 0 < data["ms_ssim"] <= 1
    assert data["n_pairs"] == 3
    for metric in ("fid", "kid", "lpips"):
        assert "pt_inception" in data["skipped"][metric] or "alexnet" in data["skipped"][metric]
    assert "fid" not in data
    saved = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert saved == data
    page = (tmp_path / "o" / "report.md").read_text()
    assert "samples.png" in page and "Not computed" in page
    assert Image.open(tmp_path / "o" / "samples.png").size[0] > 100


def test_unpaired_with_weights_reports_fid_kid(tmp_path, capsys, inception_file):
    real = _folder(tmp_path / "real", 4, seed=0)
    fake = _folder(tmp_path / "fake", 3, seed=5, names=["x", "y", "z"])
    data = _json(
        capsys,
        "eval",
        "--real",
        str(real),
        "--fake",
        str(fake),
        "--weights",
        str(inception_file),
        "--json",
        "--kid-subset-size",
        "3",
    )
    assert np.isfinite(data["fid"]) and data["fid"] >= 0 and np.isfinite(data["kid"])
    assert (data["n_real"], data["n_fake"], data["n_pairs"]) == (4, 3, 0)
    assert "not paired" in data["skipped"]["psnr"] and "psnr" not in data
    # The same folder against itself: FID 0.
    same = _json(capsys, "eval", "--real", str(real), "--fake", str(real), "--weights", str(inception_file), "--json")
    assert same["fid"] == pytest.approx(0.0, abs=1e-3) and same["ssim"] == pytest.approx(1.0)


def test_single_image_metrics(tmp_path, capsys, inception_file):
    real = _folder(tmp_path / "real", 1, size=(64, 64), names=["balloons"])
    fake = _folder(tmp_path / "fake", 4, size=(64, 64), seed=3)
    data = _json(capsys, "eval", "--real", str(real), "--fake", str(fake), "--weights", str(inception_file), "--json")
    assert data["diversity"] > 0 and np.isfinite(data["sifid"])
    assert "at least 2" in data["skipped"]["fid"]


def test_segmentation_miou(tmp_path, capsys, no_weights):
    fake = _folder(tmp_path / "fake", 2, size=(16, 16))
    labels = tmp_path / "labels"
    labels.mkdir()
    for i in range(2):
        img = np.asarray(Image.open(fake / f"{i:03d}.png"))
        # Label = which channel is brightest; a 1x1 conv model with identity weights predicts exactly that.
        Image.fromarray(img.argmax(axis=2).astype(np.uint8), mode="L").save(labels / f"{i:03d}.png")
    conv = torch.nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(3)[:, :, None, None])
    torch.jit.trace(conv, torch.rand(1, 3, 16, 16)).save(str(tmp_path / "seg.pt"))
    data = _json(
        capsys,
        "eval",
        "--real",
        str(fake),
        "--fake",
        str(fake),
        "--json",
        "--seg-model",
        str(tmp_path / "seg.pt"),
        "--labels",
        str(labels),
        "--num-classes",
        "3",
    )
    assert data["pixel_accuracy"] > 0.99 and data["miou"] > 0.98


@pytest.mark.parametrize(
    "case",
    [
        "missing_real",
        "empty_fake",
        "corrupt",
        "size_mismatch",
        "pairing_name",
        "bad_pairing",
        "seg_no_labels",
        "weights_missing",
    ],
)
def test_eval_bad_inputs_one_line_exit_2(tmp_path, capsys, no_weights, case):
    real = _folder(tmp_path / "real", 2)
    fake = _folder(tmp_path / "fake", 2, seed=1)
    args = ["eval", "--real", str(real), "--fake", str(fake), "--out", str(tmp_path / "o")]
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "metrics.json").write_text('{"earlier": true}')
    if case == "missing_real":
        args[2] = str(tmp_path / "nope")
    elif case == "empty_fake":
        (tmp_path / "empty").mkdir()
        args[4] = str(tmp_path / "empty")
    elif case == "corrupt":
        (fake / "001.png").write_bytes(b"not a png")
    elif case == "size_mismatch":
        _folder(fake, 2, size=(30, 30), seed=2)
    elif case == "pairing_name":
        _folder(tmp_path / "other", 1, names=["zzz"])
        args[4] = str(tmp_path / "other")
        args += ["--pairing", "name"]
    elif case == "bad_pairing":
        args += ["--pairing", "sometimes"]
    elif case == "seg_no_labels":
        (tmp_path / "seg.pt").write_bytes(b"x")
        args += ["--seg-model", str(tmp_path / "seg.pt")]
    elif case == "weights_missing":
        args += ["--weights", str(tmp_path / "nope.pth")]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("edgegan: error: ")
    assert json.loads((tmp_path / "o" / "metrics.json").read_text()) == {"earlier": True}  # earlier results kept
