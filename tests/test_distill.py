"""GAN Compression distillation: mapper, loss, the recipe (paired, pseudo-pairs, supernet), resume, errors."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import edgegan
from edgegan.compress.distill import (
    DistillConfig,
    DistillMapper,
    Scorer,
    distill,
    distill_from_folders,
    distill_layers,
    distillation_loss,
    feature_channels,
    inherit_from_teacher,
    make_targets,
)
from edgegan.compress.distill_cli import app
from edgegan.compress.supernet_train import SupernetConfig
from edgegan.data import PairedDataset, save_image
from edgegan.errors import CheckpointError, ConfigError
from edgegan.models import MobileResnetGenerator, MobileResnetSupernet, PatchDiscriminator, ResnetGenerator

TINY = (4,) * 8


def _teacher():
    return ResnetGenerator(ngf=8, n_blocks=3)


def _cfg(**kw):
    base = dict(
        channels="4_4_4_4_4_4_4_4",
        epochs=1,
        decay_epochs=1,
        load_size=32,
        crop_size=32,
        ndf=8,
        d_layers=2,
        val_fraction=0.2,
    )
    return DistillConfig(**{**base, **kw})


@pytest.fixture
def folders(tmp_path):
    """6 pairs of 32×32 images: smooth random A, B = A with colours inverted and channels rolled."""
    gen = torch.Generator().manual_seed(1)
    a_dir, b_dir = tmp_path / "A", tmp_path / "B"
    for i in range(6):
        a = F.interpolate(torch.rand(1, 3, 8, 8, generator=gen) * 2 - 1, size=32, mode="bilinear")[0]
        b = -a.roll(1, dims=0)
        save_image(a, a_dir / f"{i}.png")
        save_image(b, b_dir / f"{i}.png")
    return a_dir, b_dir


@pytest.fixture
def teacher_dir(tmp_path):
    return _teacher().save(tmp_path / "teacher")


def _same_weights(m1, m2):
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys()
    return all(torch.equal(s1[k], s2[k]) for k in s1)


# ------------------------------------------------------------------------ mapper and loss


def test_distillation_loss_decreases_when_optimised_alone():
    teacher = _teacher().eval()
    student = MobileResnetGenerator(channels=TINY, n_blocks=3)
    mapper = DistillMapper.for_models(teacher, student)
    names = distill_layers(teacher, student)
    assert names == ["down2", "block1", "block2", "block3"]
    assert mapper.maps["down2"].in_channels == 16 and mapper.maps["down2"].out_channels == 32
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        _, t_feats = teacher(x, return_features=True)
    opt = torch.optim.Adam(list(student.parameters()) + list(mapper.parameters()), lr=1e-2)
    losses = []
    for _ in range(40):
        _, s_feats = student(x, return_features=True)
        loss = distillation_loss(t_feats, s_feats, mapper, names)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert all(p.grad is None for p in teacher.parameters())


def test_mapper_slices_input_channels_for_a_supernet_student():
    teacher = _teacher()
    sup = MobileResnetSupernet(ngf=8, n_blocks=3)
    sup.set_config(TINY)
    mapper = DistillMapper.for_models(teacher, sup)
    assert sup.active_config == TINY  # probing at full width restored the active config
    assert all(conv.in_channels == 32 for conv in mapper.maps.values())  # the supernet's full trunk width
    names = distill_layers(teacher, sup)
    x = torch.randn(2, 3, 32, 32)
    _, s_feats = sup(x, return_features=True)
    assert s_feats["block3"].shape[1] == 16
    conv = mapper.maps["block3"]
    expected = F.conv2d(s_feats["block3"], conv.weight[:, :16], conv.bias)
    assert torch.allclose(mapper("block3", s_feats["block3"]), expected)
    with torch.no_grad():
        _, t_feats = teacher(x, return_features=True)
    distillation_loss(t_feats, s_feats, mapper, names).backward()
    assert conv.weight.grad[:, 16:].abs().max() == 0
    assert conv.weight.grad[:, :16].abs().max() > 0
    with pytest.raises(ConfigError, match="channels"):
        mapper("block3", torch.randn(1, 33, 8, 8))


def test_supernet_student_distils_and_saves_the_subnetwork(tmp_path, folders):
    sup = MobileResnetSupernet(ngf=8, n_blocks=3)
    sup.set_config(TINY)
    data = PairedDataset.from_folders(*folders, load_size=32, crop_size=32)
    summary = distill(_teacher(), data, tmp_path / "run", _cfg(epochs=1, decay_epochs=0), student=sup)
    best = edgegan.load(summary["best_student"])
    assert type(best) is MobileResnetGenerator and best.config.channels == TINY
    assert summary["student_channels"] == list(TINY)


# ------------------------------------------------------------------------------ the recipe


def test_paired_distillation_writes_loadable_students(tmp_path, folders, teacher_dir):
    d_dir = PatchDiscriminator(input_nc=6, ndf=8, n_layers=2).save(tmp_path / "teacher_d")
    teacher_d = edgegan.load(d_dir)
    seen = []
    summary = distill_from_folders(
        teacher_dir, *folders, tmp_path / "run", _cfg(), discriminator_dir=d_dir, progress=lambda *a: seen.append(a)
    )
    assert summary["epochs"] == 2 and len(summary["history"]) == 2
    assert seen[-1] == (2, 5, 5)  # 5 training pairs, 1 held out
    # By default the student handed on is the last epoch's, as the reference hands on latest_net_G.pth.
    assert summary["select_by"] == "last" and summary["selection"] is None and summary["best_epoch"] == 2
    assert summary["selected_metrics"] == summary["history"][-1]
    assert _same_weights(edgegan.load(summary["best_student"]), edgegan.load(summary["last_student"]))
    for key in ("best_student", "last_student"):
        model = edgegan.load(summary[key])
        assert type(model) is MobileResnetGenerator
        assert model.config.channels == TINY and model.config.n_blocks == 3
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    assert isinstance(edgegan.load(summary["last_discriminator"]), PatchDiscriminator)  # the next stage's critic
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    keys = ("g_gan", "recon", "distill", "d", "val_psnr", "val_psnr_teacher", "teacher_val_psnr", "lr")
    for r in rows:
        for key in (*keys, "val_ssim", "val_ssim_teacher", "teacher_val_ssim"):
            assert isinstance(r[key], float), key
    assert rows[1]["lr"] < rows[0]["lr"]  # the decay epoch
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["best_epoch"] == summary["best_epoch"]
    assert _same_weights(edgegan.load(d_dir), teacher_d)  # the teacher's D was copied, not trained
    with pytest.raises(CheckpointError, match="resume"):
        distill_from_folders(teacher_dir, *folders, tmp_path / "run", _cfg())


def test_unpaired_uses_teacher_outputs_as_targets(tmp_path, folders, teacher_dir):
    teacher = edgegan.load(teacher_dir)
    batch = {"A": torch.randn(2, 3, 32, 32), "B": torch.randn(2, 3, 32, 32)}
    t_out = teacher(batch["A"])
    assert torch.equal(make_targets(batch, t_out, paired=False), t_out)
    assert torch.equal(make_targets(batch, t_out, paired=True), batch["B"])
    assert torch.equal(make_targets({"A": batch["A"]}, t_out, paired=False), t_out)  # no B needed

    cfg = _cfg(paired=False, select_by="ssim")
    summary = distill_from_folders(teacher_dir, folders[0], None, tmp_path / "run", cfg)
    assert summary["selection"] == "val_ssim_teacher"
    for row in summary["history"]:
        # The target of every pseudo-pair is the teacher's output.
        assert row["val_psnr"] == pytest.approx(row["val_psnr_teacher"])
        assert row["val_ssim"] == pytest.approx(row["val_ssim_teacher"])
        assert row["teacher_val_psnr"] == 100.0  # teacher vs itself: identical, capped
        assert row["teacher_val_ssim"] == pytest.approx(1.0)
    assert type(edgegan.load(summary["best_student"])) is MobileResnetGenerator


class Crash(Exception):
    pass


@pytest.mark.parametrize("select_by", ["last", "ssim"])
def test_resume_matches_uninterrupted_run(tmp_path, folders, teacher_dir, select_by):
    cfg = _cfg(select_by=select_by)
    full = distill_from_folders(teacher_dir, *folders, tmp_path / "full", cfg)

    def crash(epoch, done, total):
        if epoch == 2 and done == 2:
            raise Crash

    with pytest.raises(Crash):
        distill_from_folders(teacher_dir, *folders, tmp_path / "cut", cfg, progress=crash)
    resumed = distill_from_folders(teacher_dir, *folders, tmp_path / "cut", cfg, resume=True)
    assert resumed["resumed_from"] == 1
    assert _same_weights(edgegan.load(full["last_student"]), edgegan.load(resumed["last_student"]))
    assert _same_weights(edgegan.load(full["best_student"]), edgegan.load(resumed["best_student"]))
    assert [r["val_psnr"] for r in resumed["history"]] == [r["val_psnr"] for r in full["history"]]
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]
    # Resuming a finished run trains nothing more.
    again = distill_from_folders(teacher_dir, *folders, tmp_path / "cut", cfg, resume=True)
    assert again["resumed_from"] == 2 and len(again["history"]) == 2


def test_select_by_keeps_the_best_epoch_by_its_metric(tmp_path, folders, teacher_dir):
    """select_by ssim hands on the epoch with the highest validation SSIM; psnr likewise; last the last one."""
    for select_by, key in (("ssim", "val_ssim"), ("psnr", "val_psnr")):
        cfg = _cfg(epochs=2, decay_epochs=1, select_by=select_by, lr=2e-3)
        summary = distill_from_folders(teacher_dir, *folders, tmp_path / select_by, cfg)
        scores = [row[key] for row in summary["history"]]
        assert summary["selection"] == key and summary["best_score"] == max(scores)
        assert summary["best_epoch"] == 1 + scores.index(max(scores))
        assert summary["selected_metrics"]["epoch"] == summary["best_epoch"]


def test_default_weights_follow_table_5():
    # GAN Compression's Table 5 (edges→shoes, cityscapes) and the reference's defaults; the later stages inherit.
    for cfg in (DistillConfig(), SupernetConfig()):
        assert (cfg.lambda_recon, cfg.lambda_distill, cfg.select_by) == (100.0, 1.0, "last")


def test_default_student_starts_from_the_teachers_leading_channels(tmp_path, folders):
    teacher = _teacher()
    data = PairedDataset.from_folders(*folders, load_size=32, crop_size=32)
    summary = distill(teacher, data, tmp_path / "run", _cfg(epochs=1, decay_epochs=0, lr=1e-12))
    parts = ["stem", "down.0", "down.1", "up.0", "up.1", "head"]  # a ResNet teacher's blocks do not fit
    assert summary["student_init"] == {"from": "teacher", "parts": parts}
    random = distill(teacher, data, tmp_path / "random", _cfg(epochs=1, decay_epochs=0, student_init="random"))
    assert random["student_init"] == {"from": "random"}
    # With a learning rate of 1e-12 the student is still its starting point: leading slices of the teacher's.
    student = edgegan.load(summary["last_student"]).state_dict()
    t_state = teacher.state_dict()
    for name in ("stem.1.weight", "down.0.0.weight", "up.1.0.weight", "head.1.weight"):
        got = student[name]
        assert torch.allclose(got, t_state[name][tuple(slice(0, n) for n in got.shape)], atol=1e-6), name


def test_inherit_from_teacher_takes_every_part_that_fits():
    mobile_teacher = MobileResnetGenerator(channels=(8,) * 8, n_blocks=3)
    student = MobileResnetGenerator(channels=TINY, n_blocks=3)
    parts = inherit_from_teacher(student, mobile_teacher)
    assert parts == ["stem", "down.0", "down.1", "blocks.0", "blocks.1", "blocks.2", "up.0", "up.1", "head"]
    w = mobile_teacher.state_dict()["blocks.1.conv_block.1.pointwise.weight"]
    assert torch.equal(student.state_dict()["blocks.1.conv_block.1.pointwise.weight"], w[:16, :16])
    wider = MobileResnetGenerator(channels=(16,) * 8, n_blocks=3)
    assert inherit_from_teacher(wider, mobile_teacher) == []  # a wider student is no slice of the teacher
    if "residual" in {f.name for f in dataclasses.fields(MobileResnetGenerator.config_cls)}:
        residual = MobileResnetGenerator(channels=TINY, n_blocks=3, residual=True)
        assert "head" not in inherit_from_teacher(residual, mobile_teacher)  # tanh head vs added correction


def test_select_by_metrics_need_their_weights(monkeypatch):
    import edgegan.compress.distill as distill_mod

    monkeypatch.setattr(distill_mod, "available", lambda name, path=None: (None, f"{name}.pth not found"))
    for metric, weights in (("lpips", "alexnet"), ("fid", "inception-fid"), ("kid", "inception-fid")):
        with pytest.raises(ConfigError, match=f"select_by {metric} needs the {weights} weights") as err:
            _cfg(select_by=metric)
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="select_by must be one of last, ssim, psnr, lpips, fid, kid"):
        _cfg(select_by="best")
    with pytest.raises(ConfigError, match="student_init"):
        _cfg(student_init="copy")


def test_lpips_selection_with_stand_in_weights(tmp_path, folders, teacher_dir, monkeypatch):
    """The LPIPS path end to end, with a randomly initialised LPIPS network standing in for the weights."""
    import edgegan.compress.distill as distill_mod
    import edgegan.metrics.lpips as lpips_mod

    monkeypatch.setattr(distill_mod, "available", lambda name, path=None: (tmp_path / name, None))
    monkeypatch.setattr(lpips_mod, "load_lpips", lambda device="cpu", **kw: lpips_mod.LPIPS().eval())
    summary = distill_from_folders(teacher_dir, *folders, tmp_path / "run", _cfg(select_by="lpips"))
    scores = [row["val_lpips"] for row in summary["history"]]
    assert summary["selection"] == "val_lpips" and all(isinstance(v, float) for v in scores)
    assert summary["best_epoch"] == 1 + scores.index(min(scores))  # lower is better


class _TinyFeatures(torch.nn.Module):
    """Stands in for the FID Inception network: 48 pooled colour features (the real one takes a minute on CPU)."""

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, 4).flatten(1)


def test_scorer_fid_and_kid_with_stand_in_weights(monkeypatch):
    import edgegan.compress.distill as distill_mod
    import edgegan.metrics.inception as inception_mod

    monkeypatch.setattr(distill_mod, "available", lambda name, path=None: (Path(name), None))
    monkeypatch.setattr(inception_mod, "load_fid_inception", lambda path=None, device="cpu": _TinyFeatures())
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(4, 3, 32, 32, generator=gen) * 2 - 1, torch.rand(4, 3, 32, 32, generator=gen) - 1
    for metric in ("fid", "kid"):
        scorer = Scorer(metric)
        same, other = scorer(a, a), scorer(b, a)
        assert same["psnr"] == 100.0 and same["ssim"] == pytest.approx(1.0)
        assert same[metric] < other[metric], metric  # b is darker than a: further from it
        with pytest.raises(ConfigError, match="at least 2"):
            scorer(a[:1], a[:1])


# ------------------------------------------------------------------------------ bad inputs


def test_bad_inputs_raise_config_errors(tmp_path, folders):
    teacher = _teacher()
    data = PairedDataset.from_folders(*folders, load_size=32, crop_size=32)
    deeper = MobileResnetGenerator(channels=TINY, n_blocks=6)
    with pytest.raises(ConfigError, match="n_blocks"):
        distill(teacher, data, tmp_path / "r1", _cfg(), student=deeper)
    with pytest.raises(ConfigError, match="n_blocks"):
        DistillMapper.for_models(teacher, deeper)
    with pytest.raises(ConfigError, match="output_nc"):
        distill_layers(teacher, MobileResnetGenerator(channels=TINY, n_blocks=3, output_nc=1))
    with pytest.raises(ConfigError, match="distillation features"):
        distill(PatchDiscriminator(ndf=8), data, tmp_path / "r2", _cfg())
    with pytest.raises(ConfigError, match="discriminator takes 4"):
        distill(teacher, data, tmp_path / "r3", _cfg(), discriminator=PatchDiscriminator(input_nc=4, ndf=8))
    with pytest.raises(ConfigError, match="8 entries"):
        _cfg(channels="4_4_4")
    with pytest.raises(ConfigError, match="multiple of 4"):
        _cfg(crop_size=30, load_size=30)
    with pytest.raises(ConfigError, match="gan_mode"):
        _cfg(gan_mode="bce")
    with pytest.raises(ConfigError, match="at least 1"):
        _cfg(epochs=0, decay_epochs=0)
    with pytest.raises(ConfigError, match="no layer"):
        feats = {"down2": torch.zeros(1, 32, 8, 8)}
        distillation_loss(feats, feats, DistillMapper({"down2": 32}, {"down2": 32}), ["block1"])
    assert feature_channels(teacher, ["down2"]) == {"down2": (32, 8, 8)}


def test_cli_distills_and_reports_errors(tmp_path, folders, teacher_dir):
    runner = CliRunner()
    args = ["distill", "--teacher", str(teacher_dir), "--a", str(folders[0]), "--b", str(folders[1])]
    args += ["--channels", "4_4_4_4_4_4_4_4", "--epochs", "1", "--decay-epochs", "0"]
    args += ["--load-size", "32", "--crop-size", "32", "--ndf", "8"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "student handed on (epoch 1, select by last)" in result.output
    assert type(edgegan.load(tmp_path / "run" / "best_student")) is MobileResnetGenerator

    bad = runner.invoke(app, [*args, "--out", str(tmp_path / "bad"), "--channels", "4_4"])
    assert isinstance(bad.exception, ConfigError)
    missing_b = runner.invoke(app, ["distill", "--teacher", str(teacher_dir), "--a", str(folders[0])] + ["--out", "x"])
    assert isinstance(missing_b.exception, ConfigError) and "--b" in str(missing_b.exception)
