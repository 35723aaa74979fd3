"""UGC: depth-width supernet, label split, sandwich step, OMGD loss, adaptive filter, search, pipeline, CLI."""

import copy
import json
import random
from pathlib import Path

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
from edgegan.ugc.common import fingerprint, make_discriminator, make_omgd, search_metric
from edgegan.ugc.config import UGCConfig
from edgegan.ugc.data import label_split, load_split, make_split
from edgegan.ugc.pipeline import preset, run_ugc
from edgegan.ugc.search import search_all, search_student, search_teachers, subnet_macs
from edgegan.ugc.stage1 import build_supernet, sandwich_step, train_stage1
from edgegan.ugc.stage2 import EMA, adaptive_keep, distill_step, teachers_step, train_stage2
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


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """No VGG16, Inception or LPIPS weights anywhere: the substitutes and SSIM are what run."""
    monkeypatch.setenv("EDGEGAN_WEIGHTS", str(tmp_path / "none"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "none"))


def short_cfg(**kw):
    """The tiny preset with 2 + 1 epochs per stage, random crops (36 -> 32 px) and flips."""
    epochs = dict(stage1_epochs=2, stage1_decay_epochs=1, stage2_epochs=2, stage2_decay_epochs=1)
    return preset("tiny", **{"labeled_fraction": 0.5, **epochs, **kw})


def stage2_inputs(cfg):
    """A freshly built supernet and stage-1 discriminator, and 'searched' genes (no search run)."""
    torch.manual_seed(3)
    net = build_supernet(cfg)
    choices = net.gene_choices(cfg.widths, cfg.depths, cfg.trunk_depths)
    genes = {"student": net.smallest_config(choices), "wide": net.largest_config(choices)}
    genes["deep"] = genes["student"][:10] + genes["wide"][10:]
    searched = {k: {"best_config": list(v)} for k, v in genes.items()}
    return net, make_discriminator(cfg), searched


class Stop(Exception):
    pass


def stop_in(epoch):
    """A progress callback that interrupts a run at the first batch of ``epoch`` (after its previous
    epoch's checkpoint)."""

    def progress(e, i, n):
        if e == epoch:
            raise Stop

    return progress


def states_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def rows(path):
    out = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time"} for r in out]


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


def test_extracted_subnetwork_with_input_paths_equals_supernet():
    torch.manual_seed(0)
    net = tiny_supernet(residual=True, input_skip=True).eval()
    with torch.no_grad():  # the residual head starts at zero (output = input): give it weights to compare
        for p in net.head.parameters():
            p.normal_(0, 0.05)
    choices = net.gene_choices([2, 4, 6, 8], [0, 1, 2], [1, 2, 3])
    x = torch.randn(2, 3, 32, 32).clamp(-1, 1)
    rng = random.Random(1)
    for genes in [net.largest_config(choices), net.smallest_config(choices)] + [
        net.sample_config(rng, choices) for _ in range(4)
    ]:
        net.set_config(genes)
        sub = net.extract(genes).eval()
        assert sub.config.residual and sub.config.input_skip
        out = net(x)
        assert torch.allclose(out, sub(x), atol=1e-6), genes
        assert (out - x).abs().max() > 1e-3


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


def test_perceptual_substitute_is_a_frozen_copy_that_the_d_step_does_not_move(no_weights):
    torch.manual_seed(0)
    cfg = preset("tiny")
    net = tiny_supernet()
    choices = net.gene_choices([4, 8], [0, 1, 2])
    d = make_discriminator(cfg)
    omgd, name = make_omgd(cfg, d, torch.device("cpu"), source="the test's discriminator")
    feat = omgd.perceptual.discriminator
    assert feat is not d and not feat.training
    assert not any(p.requires_grad for p in feat.parameters())
    assert "substitute for VGG16" in name and "frozen copy of the test's discriminator" in name
    assert f"PatchGAN ndf 8, 2 layers, weights sha256 {fingerprint(d)}" in name
    frozen, trained = fingerprint(feat), fingerprint(d)
    opt_g = torch.optim.Adam(net.parameters(), lr=1e-3)
    opt_d = torch.optim.Adam(d.parameters(), lr=1e-3)
    for _ in range(2):
        x_a, y_a, x_u = torch.rand(3, 1, 3, 32, 32) * 2 - 1
        sandwich_step(
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
    assert fingerprint(d) != trained  # the GAN's discriminator trained ...
    assert fingerprint(feat) == frozen and not feat.training  # ... the feature space did not move
    assert all(p.grad is None for p in feat.parameters())


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
    # Eq. 8: Φ = 1 when D[T(x_U)] < D_EMA (less real than the teacher's usual fakes), RandInt({0, 1}) above.
    rng = random.Random(0)
    assert adaptive_keep(0.3, None, rng) == 1  # no running score yet: keep
    assert all(adaptive_keep(s, 0.5, rng) == 1 for s in (-2.0, 0.0, 0.49, 0.5))  # not above the EMA: keep
    draws = [adaptive_keep(0.9, 0.5, rng) for _ in range(400)]  # above the EMA: a fair coin
    assert set(draws) == {0, 1} and 150 < sum(draws) < 250
    # The opposite sign, for the ablation: keeps what D finds more real, flips a coin below.
    assert all(adaptive_keep(s, 0.5, rng, "inverse") == 1 for s in (0.5, 0.51, 3.0))
    draws = [adaptive_keep(0.1, 0.5, rng, "inverse") for _ in range(400)]
    assert set(draws) == {0, 1} and 150 < sum(draws) < 250
    assert UGCConfig().pseudo_label_rule == "paper"
    with pytest.raises(ConfigError, match="pseudo_label_rule"):
        UGCConfig(pseudo_label_rule="best")
    ema = EMA(0.9)
    assert ema.update(1.0) == 1.0 and ema.update(0.0) == pytest.approx(0.9)


def stage2_parts(cfg, lr=1e-3):
    net, d, searched = stage2_inputs(cfg)
    student = net.extract(searched["student"]["best_config"])
    teachers = {t: net.extract(searched[t]["best_config"]) for t in ("wide", "deep")}
    opt_t = {t: torch.optim.Adam(g.parameters(), lr=lr) for t, g in teachers.items()}
    return student, teachers, d, opt_t


def test_stage2_teachers_share_one_discriminator_stepped_once_on_both_losses():
    cfg = preset("tiny")
    _, teachers, d, opt_t = stage2_parts(cfg)
    gan = GANLoss("hinge")
    x, y = torch.rand(2, 1, 3, 32, 32) * 2 - 1
    ref = copy.deepcopy(d)
    with torch.no_grad():
        fakes = {t: g(x) for t, g in teachers.items()}
    real = ref(torch.cat([x, y], 1))
    sum(0.5 * (gan(real, True) + gan(ref(torch.cat([x, f], 1)), False)) for f in fakes.values()).backward()
    expected = {n: p.grad.clone() for n, p in ref.named_parameters()}
    seen = []

    class Recording(torch.optim.Adam):
        def step(self, closure=None):
            seen.append({n: p.grad.clone() for n, p in d.named_parameters()})
            return super().step(closure)

    losses = teachers_step(teachers, d, opt_t, Recording(d.parameters(), lr=1e-3), gan, x, y, 100.0)
    assert len(seen) == 1  # one D step per teacher update (Algorithm 1, line 20) ...
    for n, g in expected.items():  # ... on the sum of both teachers' Eq. 4 losses
        assert torch.allclose(seen[0][n], g, atol=1e-6), n
    assert {"wide_d", "deep_d", "wide_gan", "deep_gan", "wide_recon", "deep_recon"} <= set(losses)


def test_filter_scores_labelled_fakes_and_pseudo_labels_at_the_same_point():
    cfg = preset("tiny")
    student, teachers, d, opt_t = stage2_parts(cfg, lr=1e-2)
    omgd, _ = make_omgd(cfg, d, torch.device("cpu"), source="test")
    x_a, y_a, x_u = torch.rand(3, 1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        before = {t: float(d(torch.cat([x_a, g(x_a)], 1)).mean()) for t, g in teachers.items()}
    teachers_step(teachers, d, opt_t, torch.optim.Adam(d.parameters(), lr=1e-2), GANLoss("hinge"), x_a, y_a, 100.0)
    ema = {t: EMA(0.0) for t in teachers}  # decay 0: the EMA is the last labelled-fake score
    opt_s = torch.optim.Adam(student.parameters(), lr=1e-3)
    losses = distill_step(student, teachers, d, omgd, opt_s, x_a, x_u, ema, random.Random(0))
    with torch.no_grad():  # distill_step moves neither D nor the teachers: these are the scores it saw
        for t, g in teachers.items():
            fake = float(d(torch.cat([x_a, g(x_a)], 1)).mean())
            assert abs(fake - before[t]) > 1e-3  # the teacher step moved the score ...
            assert ema[t].value == pytest.approx(fake, abs=1e-6)  # ... and the EMA took it after that step,
            assert float(losses[f"fake_score_{t}"]) == pytest.approx(fake, abs=1e-6)
            u = float(d(torch.cat([x_u, g(x_u)], 1)).mean())  # as the pseudo label's score
            assert float(losses[f"u_score_{t}"]) == pytest.approx(u, abs=1e-6)
            assert float(losses[f"keep_{t}"]) in (0.0, 1.0)


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


def test_search_ranks_by_ssim_by_default_and_keeps_psnr_in_the_record(no_weights, monkeypatch):
    torch.manual_seed(0)
    net = tiny_supernet().eval()
    cfg = preset("tiny")
    gen = torch.Generator().manual_seed(0)
    pairs = [
        (torch.rand(3, 32, 32, generator=gen) * 2 - 1, torch.rand(3, 32, 32, generator=gen) * 2 - 1) for _ in range(2)
    ]
    record = search_all(net, pairs, cfg)
    assert cfg.search_by == "auto" and record["metric"] == "ssim"
    for role in ("student", "wide", "deep"):
        r = record[role]
        assert r["metric"] == "ssim" and r["best_score"] == r["val"]["ssim"]
        assert r["best_score"] == max(h["val"]["ssim"] for h in r["history"])
        assert all({"psnr", "ssim"} <= set(h["val"]) for h in r["history"])
    assert search_metric(preset("tiny", search_by="psnr"), 5) == "psnr"
    # With the Inception weights found, auto ranks by KID (when the slice holds 2 images or more).
    monkeypatch.setattr("edgegan.weights.available", lambda name, path=None: (Path("found"), None))
    assert search_metric(cfg, 2) == "kid" and search_metric(cfg, 1) == "ssim"
    with pytest.raises(ConfigError, match="search_by"):
        UGCConfig(search_by="best")


def test_stage2_passes_on_the_last_epoch_by_default_or_the_best_by_ssim(folders, tmp_path, no_weights):
    a_dir, b_dir = folders
    split = make_split(a_dir, b_dir, 0.5, seed=0, out=tmp_path / "split")
    last = train_stage2(split, *stage2_inputs(short_cfg()), tmp_path / "last", short_cfg())
    assert last["select_by"] == "last" and last["selected_epoch"] == 3
    assert (
        last["student"] == str(tmp_path / "last" / "last_student") and not (tmp_path / "last" / "best_student").exists()
    )
    by_ssim = train_stage2(split, *stage2_inputs(short_cfg()), tmp_path / "ssim", short_cfg(select_by="ssim"))
    ssims = [row["val_ssim_student"] for row in by_ssim["history"]]
    assert by_ssim["selected_epoch"] == 1 + ssims.index(max(ssims))
    assert by_ssim["student"] == str(tmp_path / "ssim" / "best_student")
    assert all("val_psnr_student" in row for row in by_ssim["history"])  # PSNR stays in the log
    with pytest.raises(ConfigError, match="select_by"):
        UGCConfig(select_by="best")
    with pytest.raises(WeightsError, match="alexnet-owt"):  # a metric without its weights: one clear error
        train_stage2(split, *stage2_inputs(short_cfg()), tmp_path / "lpips", short_cfg(select_by="lpips"))


def test_stopped_and_resumed_stages_end_bit_identical(folders, tmp_path, no_weights):
    a_dir, b_dir = folders
    split = make_split(a_dir, b_dir, 0.5, seed=0, out=tmp_path / "split")
    cfg = short_cfg()
    stage1 = whole = tmp_path / "s1_whole"
    cut = tmp_path / "s1_cut"
    train_stage1(split, whole, cfg)
    with pytest.raises(Stop):
        train_stage1(split, cut, cfg, progress=stop_in(2))
    assert train_stage1(split, cut, cfg, resume=True)["resumed_from"] == 1
    for part in ("supernet", "discriminator"):
        assert states_equal(edgegan.load(whole / part).state_dict(), edgegan.load(cut / part).state_dict()), part
    assert rows(whole / "metrics.jsonl") == rows(cut / "metrics.jsonl")

    def stage2(out, **kw):
        net, d, searched = stage2_inputs(cfg)
        net.load_state_dict(edgegan.load(stage1 / "supernet").state_dict())
        d.load_state_dict(edgegan.load(stage1 / "discriminator").state_dict())
        return train_stage2(split, net, d, searched, out, cfg, **kw)

    whole, cut = tmp_path / "s2_whole", tmp_path / "s2_cut"
    stage2(whole)
    with pytest.raises(Stop):
        stage2(cut, progress=stop_in(3))
    assert stage2(cut, resume=True)["resumed_from"] == 2
    for part in ("last_student", "teacher_wide", "teacher_deep"):
        assert states_equal(edgegan.load(whole / part).state_dict(), edgegan.load(cut / part).state_dict()), part
    assert rows(whole / "metrics.jsonl") == rows(cut / "metrics.jsonl")
    saved = json.loads(next((cut / "checkpoints").glob("step-*/state.json")).read_text())
    assert saved["modules"] == ["student", "T_wide", "T_deep", "D"]  # one discriminator


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
    # A run saved before the latency budget existed is the same run when the budget is off, not when it is on.
    saved = json.loads((out / "ugc.json").read_text())
    for key in ("budget_ms", "latency_threads", "latency_samples"):
        del saved["config"][key]
    (out / "ugc.json").write_text(json.dumps(saved))
    again = run_ugc(a_dir, b_dir, out, cfg)
    assert again["stages"]["export"]["model_dir"] == export["model_dir"]
    with pytest.raises(ConfigError, match="budget_ms"):
        run_ugc(a_dir, b_dir, out, preset("tiny", labeled_fraction=0.5, budget_ms=5.0))


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
