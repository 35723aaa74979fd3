"""UGC: depth-width supernet, label split, sandwich step, OMGD loss, adaptive filter, search, pipeline, CLI."""

import json
import random

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import edgegan
from edgegan.compress.evolution import evolve
from edgegan.data import save_image
from edgegan.errors import ConfigError
from edgegan.losses import GANLoss, OMGDLoss, gram_matrix
from edgegan.models import DepthWidthGenerator, DepthWidthSupernet, PatchDiscriminator
from edgegan.models.depth_width import N_GENES
from edgegan.nn.perceptual import VGG16Features, build_perceptual
from edgegan.ugc.config import UGCConfig
from edgegan.ugc.data import label_split, load_split, make_split
from edgegan.ugc.pipeline import preset, run_ugc
from edgegan.ugc.search import search_student, search_teachers, subnet_macs
from edgegan.ugc.stage1 import sandwich_step
from edgegan.ugc.stage2 import EMA, adaptive_keep
from edgegan.weights import WeightsError


@pytest.fixture
def folders(tmp_path):
    """8 pairs of 32×32 images: smooth random A, B = A with colours inverted and channels rolled."""
    gen = torch.Generator().manual_seed(1)
    a_dir, b_dir = tmp_path / "A", tmp_path / "B"
    for i in range(8):
        a = F.interpolate(torch.rand(1, 3, 8, 8, generator=gen) * 2 - 1, size=32, mode="bilinear")[0]
        save_image(a, a_dir / f"{i}.png")
        save_image(-a.roll(1, dims=0), b_dir / f"{i}.png")
    return a_dir, b_dir


def tiny_supernet(**kw):
    return DepthWidthSupernet(ngf=8, n_blocks=3, max_inserted=2, **kw)


# ------------------------------------------------------------------ the depth-width supernet


def test_extracted_subnetwork_equals_supernet_at_that_config():
    torch.manual_seed(0)
    net = tiny_supernet().eval()
    choices = net.gene_choices([2, 4, 6, 8], [0, 1, 2], [1, 2, 3])
    rng = random.Random(0)
    x = torch.randn(2, 3, 32, 32)
    configs = [net.largest_config(choices), net.smallest_config(choices)] + [
        net.sample_config(rng, choices) for _ in range(6)
    ]
    for genes in configs:
        net.set_config(genes)
        sub = net.extract(genes).eval()
        assert isinstance(sub, DepthWidthGenerator)
        assert sub.config.depths == list(genes[10:])
        assert torch.allclose(net(x), sub(x), atol=1e-6), genes
        assert sum(len(s) for s in sub.stages) == sum(genes[10:])


def test_static_subnetwork_round_trips_and_validates(tmp_path):
    net = tiny_supernet()
    genes = (4, 4, 8, 2, 6, 4, 8, 2, 2, 4, 1, 0, 2, 2, 0)
    sub = net.extract(genes).eval()
    loaded = edgegan.load(sub.save(tmp_path / "sub")).eval()
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(sub(x), loaded(x))
    assert loaded(torch.randn(1, 3, 36, 20)).shape == (1, 3, 36, 20)
    with pytest.raises(ConfigError, match="genes"):
        net.validate_config(genes[:-1])
    with pytest.raises(ConfigError, match="width_stem"):
        net.set_config((9,) + genes[1:])
    with pytest.raises(ConfigError, match="depth_down1"):
        net.set_config(genes[:10] + (3,) + genes[11:])
    assert len(genes) == N_GENES


# ------------------------------------------------------------------ label split


def test_label_split_is_deterministic_disjoint_and_complete():
    for n, f in ((400, 0.25), (400, 0.1), (7, 0.5), (5, 1.0), (3, 0.01)):
        lab, unl = label_split(n, f, seed=3)
        assert (lab, unl) == label_split(n, f, seed=3)
        assert not set(lab) & set(unl) and sorted(lab + unl) == list(range(n))
        assert len(lab) >= 1
    assert len(label_split(400, 0.25)[0]) == 100
    assert label_split(400, 0.25, seed=0) != label_split(400, 0.25, seed=1)
    with pytest.raises(ConfigError):
        label_split(10, 0.0)


def test_make_split_saves_inputs_only_for_unlabelled(folders, tmp_path):
    a_dir, b_dir = folders
    split = make_split(a_dir, b_dir, 0.25, seed=0, direction="BtoA", out=tmp_path / "run")
    assert len(split.labeled) == 2 and len(split.unlabeled) == 6
    assert all("/B/" in p for p in split.unlabeled)  # BtoA: the input side is B
    again = load_split(tmp_path / "run")
    assert again.labeled == split.labeled and again.unlabeled == split.unlabeled
    data = split.unlabeled_set(load_size=36, crop_size=32)
    assert set(data[0]) == {"A", "path"} and data[0]["A"].shape == (3, 32, 32)
    with pytest.raises(ConfigError, match="different split"):
        make_split(a_dir, b_dir, 0.5, seed=0, direction="BtoA", out=tmp_path / "run")


# ------------------------------------------------------------------ losses and perceptual nets


def test_omgd_loss_terms_and_gradients():
    d = PatchDiscriminator(input_nc=6, ndf=8, n_layers=2)
    net, name = build_perceptual("discriminator", discriminator=d)
    assert "discriminator" in name
    loss = OMGDLoss(net)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    t = torch.rand(2, 3, 32, 32) * 2 - 1
    total, terms = loss(t.clone(), t, x)
    for k in ("ssim", "feature", "style"):
        assert terms[k].abs() < 1e-5, k
    assert torch.isclose(total, terms["tv"]) and terms["tv"] > 0
    s = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    total, terms = loss(s, t, x)
    assert torch.isfinite(total) and all(v > 0 for v in terms.values())
    total.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    g = gram_matrix(torch.ones(1, 2, 4, 4))
    assert torch.allclose(g, torch.full((1, 2, 2), 1 / 2))


def test_vgg16_loads_torchvision_layout_and_auto_falls_back(tmp_path, monkeypatch):
    vgg = VGG16Features()
    state = {k: torch.randn_like(v) for k, v in vgg.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # the classifier is ignored
    vgg.load_torchvision(state)
    feats = vgg(torch.rand(1, 3, 32, 32) * 2 - 1)
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512]
    monkeypatch.setenv("EDGEGAN_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsError, match="vgg16-397923af.pth"):
        build_perceptual("vgg16")
    _, name = build_perceptual("auto", discriminator=PatchDiscriminator(input_nc=6, ndf=8, n_layers=2))
    assert name.startswith("discriminator features (substitute for VGG16")


# ------------------------------------------------------------------ sandwich rule


class RecordingSupernet(DepthWidthSupernet):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x):
        self.seen.append(self.active_config)
        return super().forward(x)


def test_sandwich_step_trains_largest_smallest_and_a_random_subnetwork():
    torch.manual_seed(0)
    net = RecordingSupernet(ngf=8, n_blocks=2, max_inserted=2)
    choices = net.gene_choices([2, 4, 8], [0, 1, 2], [1, 2])
    d = PatchDiscriminator(input_nc=6, ndf=8, n_layers=2)
    omgd = OMGDLoss(build_perceptual("discriminator", discriminator=d)[0])
    opt_g = torch.optim.Adam(net.parameters(), lr=1e-3)
    opt_d = torch.optim.Adam(d.parameters(), lr=1e-3)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x_a, y_a, x_u = torch.rand(3, 1, 3, 32, 32) * 2 - 1
    out = sandwich_step(
        net,
        d,
        x_a,
        y_a,
        x_u,
        choices=choices,
        rng=random.Random(1),
        gan=GANLoss("hinge"),
        omgd=omgd,
        opt_g=opt_g,
        opt_d=opt_d,
        lambda_recon=10.0,
    )
    largest, smallest = net.largest_config(choices), net.smallest_config(choices)
    assert out["configs"]["largest"] == largest and out["configs"]["smallest"] == smallest
    assert out["configs"]["random"] in net.seen
    assert {largest, smallest, out["configs"]["random"]} <= set(net.seen)
    assert all(torch.isfinite(v) for v in out["losses"].values())
    # The second inserted block of every stage is only in the largest sub-network: it was trained.
    assert not torch.equal(
        before["stages.0.1.conv_block.1.pointwise.weight"], net.state_dict()["stages.0.1.conv_block.1.pointwise.weight"]
    )
    # Weights every sub-network shares were trained too.
    assert not torch.equal(before["stem.1.weight"], net.state_dict()["stem.1.weight"])


# ------------------------------------------------------------------ adaptive filter


def test_adaptive_filter_follows_its_rule():
    rng = random.Random(0)
    assert adaptive_keep(0.3, None, rng) == 1  # no running score yet: keep
    assert all(adaptive_keep(s, 0.5, rng) == 1 for s in (-2.0, 0.0, 0.49, 0.5))  # not above the EMA: keep
    draws = [adaptive_keep(0.9, 0.5, rng) for _ in range(400)]  # above the EMA: a fair coin
    assert set(draws) == {0, 1} and 150 < sum(draws) < 250
    ema = EMA(0.9)
    assert ema.update(1.0) == 1.0 and ema.update(0.0) == pytest.approx(0.9)


# ------------------------------------------------------------------ search


def test_evolve_never_leaves_the_cost_window():
    genes = [list(range(1, 9))] * 4

    def cost(c):
        return sum(c) * 10

    result = evolve(
        genes, cost, lambda c: -abs(sum(c) - 20), 200, min_cost=150, population=8, generations=4, parents=3, seed=0
    )
    assert all(150 <= h["macs"] <= 200 for h in result.history)
    assert 150 <= result.best_macs <= 200
    with pytest.raises(ConfigError, match="below the smallest"):
        evolve(genes, cost, lambda c: 0.0, 30)


def test_searched_teachers_are_about_20x_the_student_and_student_is_in_budget():
    torch.manual_seed(0)
    net = DepthWidthSupernet(ngf=16, n_blocks=3, max_inserted=2).eval()
    cfg = UGCConfig(
        ngf=16,
        n_blocks=3,
        max_inserted=2,
        widths=(2, 4, 8, 12, 16),
        depths=(0, 1, 2),
        budget="58M",
        population=6,
        generations=3,
        parents=2,
        teacher_ratio=20.0,
        teacher_window=0.75,
    )
    gen = torch.Generator().manual_seed(0)
    pairs = [
        (torch.rand(3, 32, 32, generator=gen) * 2 - 1, torch.rand(3, 32, 32, generator=gen) * 2 - 1) for _ in range(2)
    ]
    student = search_student(net, pairs, cfg)
    assert student.best_macs <= cfg.budget_macs
    assert all(h["macs"] <= cfg.budget_macs for h in student.history)
    teachers = search_teachers(net, pairs, cfg, student.best_config)
    for name, rec in teachers.items():
        assert not rec["capped"], name
        assert 15.0 <= rec["ratio"] <= 20.0, (name, rec["ratio"])
        assert rec["best_macs"] == subnet_macs(net, rec["best_config"], 256)
    assert list(teachers["wide"]["best_config"][10:]) == list(student.best_config[10:])  # the student's depths
    assert teachers["deep"]["best_config"][10:] == [2, 2, 3, 2, 2]  # the deepest stages


# ------------------------------------------------------------------ the pipeline and the CLI


def test_pipeline_runs_resumes_and_exports_a_standalone_student(folders, tmp_path):
    a_dir, b_dir = folders
    out = tmp_path / "ugc"
    cfg = preset("tiny", labeled_fraction=0.5)
    first = run_ugc(a_dir, b_dir, out, cfg, until="stage1")
    assert set(first["stages"]) == {"split", "stage1"}
    assert first["stages"]["stage1"]["unlabeled_used"] and "substitute" in first["stages"]["stage1"]["perceptual"]
    rows = [json.loads(line) for line in (out / "stage1" / "metrics.jsonl").read_text().splitlines()]
    assert {"od_random", "od_smallest", "val_psnr_largest"} <= set(rows[-1])
    result = run_ugc(a_dir, b_dir, out, cfg)
    assert set(result["stages"]) == {"split", "stage1", "search", "stage2", "export"}
    export = result["stages"]["export"]
    assert export["macs_gc"] <= cfg.budget_macs and export["max_abs_diff"] < 1e-4
    student = edgegan.load(export["model_dir"])  # no supernet code needed
    assert isinstance(student, DepthWidthGenerator)
    assert student(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    stage2_rows = [json.loads(line) for line in (out / "stage2" / "metrics.jsonl").read_text().splitlines()]
    assert {"keep_wide", "keep_deep", "od_a_wide", "val_psnr_student"} <= set(stage2_rows[-1])
    with pytest.raises(ConfigError, match="other settings"):
        run_ugc(a_dir, b_dir, out, preset("tiny", labeled_fraction=0.25))


def test_stage2_ablation_reuses_stage1_and_skips_unlabelled(folders, tmp_path):
    a_dir, b_dir = folders
    base = tmp_path / "base"
    run_ugc(a_dir, b_dir, base, preset("tiny", labeled_fraction=0.5), until="stage1")
    abl = tmp_path / "no_u2"
    result = run_ugc(
        a_dir,
        b_dir,
        abl,
        preset("tiny", labeled_fraction=0.5, use_unlabeled_stage2=False),
        stage1_from=base / "stage1",
        until="stage2",
    )
    assert result["stages"]["stage1"]["reused_from"].endswith("stage1")
    assert result["stages"]["stage2"]["unlabeled_used"] is False
    rows = [json.loads(line) for line in (abl / "stage2" / "metrics.jsonl").read_text().splitlines()]
    assert not any(k.startswith("keep_") for k in rows[-1])


def test_cli_runs_end_to_end_and_reports_bad_options(folders, tmp_path):
    from edgegan.cli import main

    a_dir, b_dir = folders
    out = tmp_path / "cli"
    assert (
        main(
            [
                "ugc",
                "run",
                "--a",
                str(a_dir),
                "--b",
                str(b_dir),
                "--out",
                str(out),
                "--preset",
                "tiny",
                "--labeled-fraction",
                "0.5",
            ]
        )
        == 0
    )
    assert (out / "export" / "student.onnx").is_file()
    assert (
        main(
            [
                "ugc",
                "split",
                "--a",
                str(a_dir),
                "--b",
                str(b_dir),
                "--out",
                str(tmp_path / "s"),
                "--labeled-fraction",
                "0.25",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "s" / "split.json").read_text())["fraction"] == 0.25
    for argv, message in (
        (["-o", "nope=1"], "unknown UGC setting"),
        (["--labeled-fraction", "0"], "labeled_fraction"),
        (["--preset", "huge"], "unknown UGC preset"),
        (["--budget", "lots"], "not a MAC count"),
    ):
        runner = CliRunner()
        res = runner.invoke(
            edgegan.cli.app, ["ugc", "run", "--a", str(a_dir), "--b", str(b_dir), "--out", str(tmp_path / "bad"), *argv]
        )
        assert res.exit_code != 0 and message in str(res.exception or res.output), (argv, res.output)
