import json

from edgegan.report.curves import late_gain, plot_curves, read_curve


def test_read_curve_keeps_the_last_row_of_a_resumed_epoch_and_skips_missing_values(tmp_path):
    rows = [
        {"step": 1, "epoch": 1, "val_psnr": 20.0},
        {"step": 2, "epoch": 2, "val_psnr": 24.0},
        {"step": 2, "epoch": 2, "val_psnr": 25.0},  # the resumed run redid epoch 2
        {"step": 3, "epoch": 3, "loss": 1.0},
        {"step": 4, "epoch": 4, "val_psnr": float("nan")},
        {"step": 5, "epoch": 5, "val_psnr": 26.0},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_curve(tmp_path, "val_psnr") == [(1, 20.0), (2, 25.0), (5, 26.0)]
    assert read_curve(tmp_path / "absent", "val_psnr") == []


def test_late_gain_is_the_rise_over_the_last_quarter():
    rising = [(e, float(e)) for e in range(1, 9)]  # still learning: +1 dB per epoch
    assert late_gain(rising) == 2.0  # epoch 6 -> 8
    flat = [(e, 30.0 - 10.0 / e) for e in range(1, 9)]
    assert 0 < late_gain(flat) < 0.5
    assert late_gain([(1, 3.0)]) is None


def test_plot_curves_writes_a_png_only_when_there_is_a_curve(tmp_path):
    assert plot_curves({"teacher": []}, tmp_path / "none.png", ylabel="dB") is None
    path = plot_curves({"teacher": [(1, 20.0), (2, 25.0)]}, tmp_path / "c.png", ylabel="dB", title="t")
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
