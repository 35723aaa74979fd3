"""Once-for-all supernet training: with/without sandwich, loadable output, sub-networks, exact resume, errors."""

import json

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import edgegan
from edgegan.compress.supernet import extract_subnet
from edgegan.compress.supernet_cli import app
from edgegan.compress.supernet_train import (
    SupernetConfig,
    build_supernet,
    full_width_student,
    init_supernet,
    parse_choices,
    train_supernet_from_folders,
)
from edgegan.data import save_image
from edgegan.errors import ConfigError
from edgegan.models import MobileResnetGenerator, MobileResnetSupernet, PatchDiscriminator, ResnetGenerator


class Crash(Exception):
    pass


def _cfg(**kw):
    base = dict(
        ngf=8,
        choices=[4, 8],
        epochs=1,
        decay_epochs=1,
        load_size=32,
        crop_size=32,
        ndf=8,
        d_layers=2,
        val_fraction=0.2,
    )
    return SupernetConfig(**{**base, **kw})


@pytest.fixture
def folders(tmp_path):
    """6 pairs of 32×32 images: smooth random A, B = A with colours inverted and channels rolled."""
    gen = torch.Generator().manual_seed(1)
    a_dir, b_dir = tmp_path / "A", tmp_path / "B"
    for i in range(6):
        a = F.interpolate(torch.rand(1, 3, 8, 8, generator=gen) * 2 - 1, size=32, mode="bilinear")[0]
        save_image(a, a_dir / f"{i}.png")
        save_image(-a.roll(1, dims=0), b_dir / f"{i}.png")
    return a_dir, b_dir


@pytest.fixture
def teacher_dir(tmp_path):
    return ResnetGenerator(ngf=8, n_blocks=3).save(tmp_path / "teacher")


def _same_weights(m1, m2):
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys()
    return all(torch.equal(s1[k], s2[k]) for k in s1)


@pytest.mark.parametrize("sandwich", [True, False])
def test_trains_and_writes_a_loadable_supernet(tmp_path, folders, teacher_dir, sandwich):
    summary = train_supernet_from_folders(teacher_dir, *folders, tmp_path / "run", _cfg(sandwich=sandwich))
    assert summary["sandwich"] is sandwich and summary["choices"] == [4, 8]
    assert summary["largest_config"] == [8] * 8 and summary["smallest_config"] == [4] * 8
    assert [r["epoch"] for r in summary["history"]] == [1, 2]
    for row in summary["history"]:
        for key in ("g_gan", "recon", "distill", "d", "val_psnr_largest", "val_psnr_smallest"):
            assert isinstance(row[key], float)
        assert 0 < row["val_ssim_largest"] <= 1 and 0 < row["val_ssim_smallest"] <= 1
    # The last epoch's supernet is handed on (select_by "last"), with its discriminator for the fine-tune.
    assert summary["select_by"] == "last" and summary["best_epoch"] == 2 and summary["init"] is None
    assert summary["supernet"] == summary["last_supernet"] == str(tmp_path / "run" / "supernet")
    assert isinstance(edgegan.load(summary["last_discriminator"]), PatchDiscriminator)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["supernet"] == summary["supernet"]

    supernet = edgegan.load(summary["supernet"])
    assert isinstance(supernet, MobileResnetSupernet) and supernet.config.ngf == 8 and supernet.config.n_blocks == 3
    supernet.eval()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    big = extract_subnet(supernet, supernet.largest_config()).eval()
    small = extract_subnet(supernet, supernet.smallest_config([4, 8])).eval()
    assert isinstance(small, MobileResnetGenerator)
    with torch.no_grad():
        y_big, y_small = big(x), small(x)
        supernet.set_config([4] * 8)
        assert torch.allclose(supernet(x), y_small, atol=1e-5)
    assert y_big.shape == y_small.shape == (1, 3, 32, 32)
    assert not torch.allclose(y_big, y_small)
    assert summary["smallest_params"] < summary["largest_params"]


@pytest.mark.parametrize("select_by", ["last", "ssim"])
def test_resume_matches_uninterrupted_run(tmp_path, folders, teacher_dir, select_by):
    cfg = _cfg(select_by=select_by)
    full = train_supernet_from_folders(teacher_dir, *folders, tmp_path / "full", cfg)

    def crash(epoch, done, total):
        if epoch == 2 and done == 2:
            raise Crash

    with pytest.raises(Crash):
        train_supernet_from_folders(teacher_dir, *folders, tmp_path / "cut", cfg, progress=crash)
    resumed = train_supernet_from_folders(teacher_dir, *folders, tmp_path / "cut", cfg, resume=True)
    assert resumed["resumed_from"] == 1
    assert _same_weights(edgegan.load(full["supernet"]), edgegan.load(resumed["supernet"]))
    assert resumed["history"] == full["history"]
    assert (resumed["best_epoch"], resumed["best_score"]) == (full["best_epoch"], full["best_score"])
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]


def test_supernet_starts_from_a_full_width_student(tmp_path, folders, teacher_dir):
    """The paper's chain: the distilled student at the supernet's full width gives the supernet its weights."""
    teacher = ResnetGenerator(ngf=8, n_blocks=3)
    cfg = _cfg()
    student = full_width_student(teacher, cfg)
    assert type(student) is MobileResnetGenerator and student.config.channels == (8,) * 8
    torch.nn.init.normal_(student.head[1].weight)  # a recognisable weight
    supernet = build_supernet(teacher, cfg)
    init_supernet(supernet, student)
    largest = extract_subnet(supernet, supernet.largest_config())
    assert _same_weights(largest, student)
    small = extract_subnet(supernet, supernet.smallest_config([4, 8]))
    assert torch.equal(small.state_dict()["head.1.weight"], student.state_dict()["head.1.weight"][:, :4])

    student_dir = student.save(tmp_path / "student")
    summary = train_supernet_from_folders(teacher_dir, *folders, tmp_path / "run", cfg, init_dir=student_dir)
    assert summary["init"]["arch"] == "mobile_resnet_generator"
    config_text = (tmp_path / "run" / "config.yaml").read_text()
    assert "init:" in config_text and "mobile_resnet_generator" in config_text

    with pytest.raises(ConfigError, match="norm"):
        init_supernet(supernet, MobileResnetGenerator(channels=(8,) * 8, n_blocks=3, norm="batch"))
    with pytest.raises(ConfigError, match="not a slice"):
        init_supernet(supernet, MobileResnetGenerator(channels=(4,) * 8, n_blocks=3))
    with pytest.raises(ConfigError, match="resnet_generator"):
        train_supernet_from_folders(teacher_dir, *folders, tmp_path / "bad", cfg, init_dir=teacher_dir)


def test_select_by_ssim_keeps_the_best_supernet(tmp_path, folders, teacher_dir):
    summary = train_supernet_from_folders(teacher_dir, *folders, tmp_path / "run", _cfg(select_by="ssim"))
    means = [(r["val_ssim_largest"] + r["val_ssim_smallest"]) / 2 for r in summary["history"]]
    assert summary["best_score"] == pytest.approx(max(means))
    assert summary["best_epoch"] == 1 + means.index(max(means))
    assert summary["supernet"] == str(tmp_path / "run" / "best_supernet")
    assert isinstance(edgegan.load(summary["supernet"]), MobileResnetSupernet)


def test_bad_choices_raise_config_errors(tmp_path, folders, teacher_dir):
    assert parse_choices(None, 64) == (16, 24, 32, 40, 48, 56, 64)
    assert parse_choices(None, 20) == (16, 20)
    assert parse_choices("8,4,8", 8) == (4, 8)
    for bad, match in (([], "empty"), ([4, 16], "outside"), ([0], "outside"), ("4,x", "integers"), ([4.0], "integ")):
        with pytest.raises(ConfigError, match=match):
            _cfg(choices=bad)
    with pytest.raises(ConfigError, match="ngf"):
        _cfg(ngf=0)
    with pytest.raises(ConfigError, match="SupernetConfig"):
        from edgegan.compress.distill import DistillConfig
        from edgegan.compress.supernet_train import train_supernet

        train_supernet(ResnetGenerator(ngf=8, n_blocks=3), [], tmp_path / "x", DistillConfig())


def test_cli_trains_and_reports_errors(tmp_path, folders, teacher_dir):
    a_dir, b_dir = folders
    common = ["supernet", "--teacher", str(teacher_dir), "--a", str(a_dir), "--ngf", "8", "--choices", "4,8"]
    sizes = ["--epochs", "1", "--decay-epochs", "0", "--load-size", "32", "--crop-size", "32", "--ndf", "8"]
    student_dir = MobileResnetGenerator(channels=(8,) * 8, n_blocks=3).save(tmp_path / "student")
    ok = CliRunner().invoke(
        app,
        [*common, "--b", str(b_dir), "--out", str(tmp_path / "cli"), "--no-sandwich", *sizes]
        + ["--init", str(student_dir), "--select-by", "ssim"],
        catch_exceptions=False,
    )
    assert ok.exit_code == 0, ok.output
    assert "started from mobile_resnet_generator" in ok.output and "select by ssim" in ok.output
    assert isinstance(edgegan.load(tmp_path / "cli" / "best_supernet"), MobileResnetSupernet)
    unpaired = CliRunner().invoke(app, [*common, "--unpaired", "--out", str(tmp_path / "u"), *sizes])
    assert unpaired.exit_code == 0, unpaired.output
    bad = CliRunner().invoke(app, [*common[:-1], "4,16", "--b", str(b_dir), "--out", str(tmp_path / "bad"), *sizes])
    assert isinstance(bad.exception, ConfigError)
    missing_b = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "m"), *sizes])
    assert isinstance(missing_b.exception, ConfigError) and "--b" in str(missing_b.exception)
