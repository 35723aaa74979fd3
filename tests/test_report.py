import json

import pytest
import torch
from PIL import Image

from edgegan.cli import main
from edgegan.errors import EdgeganError
from edgegan.report import image_grid, tradeoff_plot, write_report


def test_grid_handles_mixed_sizes():
    rows = [[torch.rand(3, 20, 30) * 2 - 1, torch.rand(3, 40, 10) * 2 - 1], [torch.zeros(3, 8, 8)]]
    img = image_grid(rows, row_labels=["real", "fake"], col_labels=["a", "b"], cell=32)
    assert img.size[1] > 2 * 32 and img.mode == "RGB"
    with pytest.raises(EdgeganError):
        image_grid([])


def test_tradeoff_plot_and_report(tmp_path):
    series = [
        {"name": "teacher", "macs_gc": 56.8e9, "fid": 61.5, "family": "resnet"},
        {"name": "student", "macs_gc": 2.55e9, "fid": 65.0, "family": "mobile"},
        {"name": "tiny", "macs_gc": 1.2e9, "fid": 80.0, "family": "mobile"},
    ]
    png = tradeoff_plot(tmp_path / "t.png", series, "macs_gc", "fid", log_x=True, group="family")
    assert Image.open(png).size[0] > 300
    page = write_report(
        tmp_path / "r",
        title="demo",
        metrics={"psnr": 21.5, "dist": {"a": 1.0}},
        skipped={"fid": "no weights"},
        grids={"samples": [[torch.zeros(3, 16, 16)]]},
        series=series,
        x="macs_gc",
        y="fid",
    )
    text = page.read_text()
    assert "![samples](samples.png)" in text and "![trade-off](tradeoff.png)" in text and "no weights" in text
    assert (tmp_path / "r" / "samples.png").exists() and (tmp_path / "r" / "tradeoff.png").exists()
    with pytest.raises(EdgeganError, match="lacks"):
        tradeoff_plot(tmp_path / "bad.png", [{"name": "x", "fid": 1}], "macs_gc", "fid")
    assert not (tmp_path / "bad.png").exists()


def test_report_cli(tmp_path, capsys):
    points = [{"name": f"k={k}", "scales": k, "ssim": 0.5 + 0.05 * k} for k in range(1, 6)]
    (tmp_path / "s.json").write_text(json.dumps(points))
    (tmp_path / "s.jsonl").write_text("\n".join(json.dumps(p) for p in points))
    for f in ("s.json", "s.jsonl"):
        code = main(["report", str(tmp_path / f), "--x", "scales", "--y", "ssim", "--out", str(tmp_path / f"o_{f}")])
        assert code == 0 and (tmp_path / f"o_{f}" / "tradeoff.png").exists()
    (tmp_path / "bad.json").write_text("{oops")
    for args in (
        ["report", str(tmp_path / "bad.json"), "--x", "a", "--y", "b", "--out", str(tmp_path / "o")],
        ["report", str(tmp_path / "missing.json"), "--x", "a", "--y", "b", "--out", str(tmp_path / "o")],
        ["report", str(tmp_path / "s.json"), "--x", "nope", "--y", "ssim", "--out", str(tmp_path / "o")],
    ):
        capsys.readouterr()
        assert main(args) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
