"""Teacher recipes (pix2pix, CycleGAN) on tiny generated data sets."""

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

import edgegan
from edgegan.compress import teacher
from edgegan.compress.teacher import (
    CycleGANConfig,
    ImagePool,
    Pix2PixConfig,
    linear_decay,
    train_cyclegan,
    train_pix2pix,
)
from edgegan.compress.teacher_cli import app
from edgegan.data.images import save_image
from edgegan.errors import ConfigError, EdgeganError, ImageLoadError, NonFiniteError
from edgegan.models import ResnetGenerator

TINY = {"ngf": 4, "n_blocks": 1}


def tiny_pix2pix(**changes):
    base = dict(
        generator_options=dict(TINY),
        ndf=4,
        n_layers_d=1,
        load_size=36,
        crop_size=32,
        epochs=2,
        decay_epochs=1,
        val_fraction=0.2,
    )
    return Pix2PixConfig(**{**base, **changes})


def smooth_image(gen, size=32):
    """A random low-frequency RGB image in [-1, 1]."""
    coarse = torch.rand(1, 3, 4, 4, generator=gen) * 2 - 1
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)[0]


def make_pairs(root, n=6):
    """A/ and B/ folders where B is the colour-inverted A."""
    gen = torch.Generator().manual_seed(1)
    for i in range(n):
        a = smooth_image(gen)
        save_image(a, root / "A" / f"{i:02d}.png")
        save_image(-a, root / "B" / f"{i:02d}.png")
    return root / "A", root / "B"


def make_unpaired(root, n_a=3, n_b=2):
    gen = torch.Generator().manual_seed(2)
    for i in range(n_a):
        save_image(smooth_image(gen), root / "trainA" / f"a{i}.png")
    for i in range(n_b):
        save_image(smooth_image(gen).flip(0), root / "trainB" / f"b{i}.png")
    return root


def rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return make_pairs(tmp_path_factory.mktemp("pairs"))


@pytest.fixture(scope="module")
def full_run(pairs, tmp_path_factory):
    """One uninterrupted pix2pix run (3 epochs), shared by several tests; ``seen`` records the callbacks."""
    out = tmp_path_factory.mktemp("full") / "run"
    seen = {"progress": [], "on_epoch": []}
    summary = train_pix2pix(
        *pairs,
        out,
        tiny_pix2pix(),
        progress=lambda *args: seen["progress"].append(args),
        on_epoch=lambda epoch, metrics: seen["on_epoch"].append((epoch, metrics)),
    )
    return out, summary, seen


def same_weights(a, b):
    sa, sb = edgegan.load(a).state_dict(), edgegan.load(b).state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_pix2pix_trains_logs_and_hands_on_the_last_generator(full_run):
    out, summary, seen = full_run
    # progress(epoch, batch, batches) after every batch, as in the other recipes; on_epoch with what was logged.
    batches = seen["progress"][0][2]
    assert seen["progress"] == [(e, b, batches) for e in (1, 2, 3) for b in range(1, batches + 1)]
    assert summary["epochs"] == 3 and summary["epochs_run"] == 3 and summary["resumed_from"] is None
    log = rows(out)
    assert [r["step"] for r in log] == [1, 2, 3]
    assert [e for e, _ in seen["on_epoch"]] == [1, 2, 3]
    assert all(m.items() <= r.items() for (_, m), r in zip(seen["on_epoch"], log, strict=True))
    for r in log:  # PSNR stays in the logs; it just never chooses by default
        assert {"loss_D", "loss_G", "loss_G_GAN", "loss_G_L1", "val_psnr", "val_ssim", "lr"} <= r.keys()
    # The default, as the reference: the last epoch's generator is the one handed on.
    assert summary["select_by"] == "last" and summary["best_epoch"] == 3 and summary["best_metric"] is None
    assert same_weights(out / "best_generator", out / "last_generator")
    assert same_weights(out / "best_discriminator", out / "last_discriminator")
    for name in ("best_generator", "last_generator"):
        model = edgegan.load(out / name)
        assert isinstance(model, ResnetGenerator) and model.config.ngf == 4
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    assert summary["best_generator"] == str(out / "best_generator")
    assert summary["discriminator"] == {"n_layers": 1, "patch": 16, "auto": False}


@pytest.mark.parametrize("metric", ["psnr", "ssim"])
def test_pix2pix_select_by_a_metric_keeps_the_best_epoch(pairs, tmp_path, metric):
    out = tmp_path / "run"
    summary = train_pix2pix(*pairs, out, tiny_pix2pix(select_by=metric, epochs=3, decay_epochs=1, lr=2e-3))
    log = rows(out)
    best = max(log, key=lambda r: r[f"val_{metric}"])
    assert summary["select_by"] == metric and summary["best_epoch"] == best["step"]
    assert summary["best_metric"] == pytest.approx(best[f"val_{metric}"])
    assert same_weights(out / "best_generator", out / "last_generator") == (best["step"] == 4)


def test_pix2pix_lower_is_better_metrics_pick_the_lowest(pairs, tmp_path, monkeypatch):
    """LPIPS/FID/KID need weights this machine may lack: a stand-in scorer checks the direction of the choice."""
    lpips = iter([0.5, 0.2, 0.3])

    class FakeScorer:
        def __init__(self, metric, device="cpu"):
            assert metric == "lpips"

        def __call__(self, fakes, refs, *, extra=True):
            return {"psnr": 20.0, "ssim": 0.5, **({"lpips": next(lpips)} if extra else {})}

    monkeypatch.setattr(teacher, "check_metric", lambda name, option, allowed: name)
    monkeypatch.setattr(teacher, "Scorer", FakeScorer)
    summary = train_pix2pix(*pairs, tmp_path / "run", tiny_pix2pix(select_by="lpips"))
    assert summary["best_epoch"] == 2 and summary["best_metric"] == 0.2
    assert [r["val_lpips"] for r in rows(tmp_path / "run")] == [0.5, 0.2, 0.3]


def test_select_by_needs_weights_and_validation(pairs, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEGAN_WEIGHTS", str(tmp_path / "no-weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    for metric, weights in (("lpips", "alexnet"), ("fid", "inception-fid"), ("kid", "inception-fid")):
        with pytest.raises(ConfigError, match=f"select_by {metric} needs the {weights} weights") as err:
            tiny_pix2pix(select_by=metric)
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="select_by fid needs the inception-fid weights"):
        CycleGANConfig(select_by="fid")
    with pytest.raises(ConfigError, match="select_by must be one of last, fid, kid"):
        CycleGANConfig(select_by="ssim")  # no pairs to compare with
    with pytest.raises(ConfigError, match="select_by must be one of"):
        tiny_pix2pix(select_by="best")
    with pytest.raises(ConfigError, match="needs at least 1 validation pair"):
        train_pix2pix(*pairs, tmp_path / "r", tiny_pix2pix(select_by="ssim", val_fraction=0.0))
    assert not (tmp_path / "r").exists()


def test_fresh_run_starts_from_the_reference_init(pairs, tmp_path):
    # One epoch at a negligible learning rate leaves the weights where the init put them.
    cfg = tiny_pix2pix(generator_options={"ngf": 16, "n_blocks": 1}, ndf=16, epochs=1, decay_epochs=0, lr=1e-12)
    train_pix2pix(*pairs, tmp_path / "run", cfg)
    for name in ("last_generator", "last_discriminator"):
        net = edgegan.load(tmp_path / "run" / name)
        convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]
        weights = torch.cat([m.weight.flatten() for m in convs])
        assert float(weights.std()) == pytest.approx(0.02, rel=0.05), name
        assert all(m.bias is None or m.bias.abs().max() < 1e-9 for m in convs), name


def test_discriminator_depth_auto_follows_the_crop(pairs, tmp_path):
    assert [teacher.d_layers(Pix2PixConfig(crop_size=c, load_size=c)) for c in (32, 64, 128, 256)] == [1, 2, 3, 3]
    assert teacher.d_layers(CycleGANConfig(crop_size=64, load_size=72)) == 2
    assert teacher.d_layers(Pix2PixConfig(n_layers_d=3, crop_size=64, load_size=72)) == 3
    summary = train_pix2pix(*pairs, tmp_path / "run", tiny_pix2pix(n_layers_d="auto", epochs=1, decay_epochs=0))
    assert summary["discriminator"] == {"n_layers": 1, "patch": 16, "auto": True}
    assert edgegan.load(tmp_path / "run" / "last_discriminator").config.n_layers == 1
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "discriminator:" in saved and "patch: 16" in saved
    assert Pix2PixConfig().ndf == CycleGANConfig().ndf == 64  # the reference's width
    for bad in (0, "deep", True):
        with pytest.raises(ConfigError, match="n_layers_d"):
            tiny_pix2pix(n_layers_d=bad)


def test_pix2pix_resume_matches_uninterrupted_run(pairs, full_run, tmp_path):
    full_out, full_summary, _ = full_run

    class Stop(Exception):
        pass

    def stop_after_first(epoch, metrics):
        if epoch == 1:
            raise Stop

    out = tmp_path / "run"
    with pytest.raises(Stop):
        train_pix2pix(*pairs, out, tiny_pix2pix(), on_epoch=stop_after_first)
    assert [r["step"] for r in rows(out)] == [1]
    with pytest.raises(EdgeganError, match="--resume"):
        train_pix2pix(*pairs, out, tiny_pix2pix())  # never overwrites a run silently
    torch.manual_seed(123)  # the caller's RNG state must not matter
    summary = train_pix2pix(*pairs, out, tiny_pix2pix(), resume=True)
    assert summary["resumed_from"] == 1 and summary["epochs_run"] == 2
    assert summary["epochs"] == full_summary["epochs"]
    assert summary["best_epoch"] == full_summary["best_epoch"] == 3
    assert [r["step"] for r in rows(out)] == [1, 2, 3]
    for name in ("last_generator", "best_generator"):
        resumed, straight = edgegan.load(out / name).state_dict(), edgegan.load(full_out / name).state_dict()
        for key in straight:
            assert torch.equal(resumed[key], straight[key]), (name, key)
    # Resuming a finished run trains nothing more.
    again = train_pix2pix(*pairs, out, tiny_pix2pix(), resume=True)
    assert again["epochs_run"] == 0 and again["best_epoch"] == full_summary["best_epoch"]


def test_pix2pix_run_saved_with_the_old_names_resumes(pairs, full_run, tmp_path):
    """A run folder whose config.yaml spells beta1/beta2 and lambda_l1 (as before the recipes agreed on betas and
    lambda_recon) resumes to the same weights as an uninterrupted run, and is saved again in today's names."""
    full_out = full_run[0]
    out, config = tmp_path / "run", tmp_path / "run" / "config.yaml"

    def stop(epoch, metrics):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_pix2pix(*pairs, out, tiny_pix2pix(), on_epoch=stop)

    def respell(**train_changes):
        saved = yaml.safe_load(config.read_text())
        train = saved["train"]
        train["beta1"], train["beta2"] = train.pop("betas")
        train["lambda_l1"] = train.pop("lambda_recon")
        train.update(train_changes)
        config.write_text(yaml.safe_dump(saved, sort_keys=False))
        return train

    assert {"beta1": 0.5, "beta2": 0.999, "lambda_l1": 100.0}.items() <= respell().items()
    summary = train_pix2pix(*pairs, out, tiny_pix2pix(), resume=True)
    assert summary["resumed_from"] == 1 and summary["epochs_run"] == 2
    for name in ("last_generator", "last_discriminator"):
        assert same_weights(out / name, full_out / name), name
    train = yaml.safe_load(config.read_text())["train"]
    assert train["betas"] == [0.5, 0.999] and train["lambda_recon"] == 100.0
    assert not {"beta1", "beta2", "lambda_l1"} & train.keys()
    # A value that differs is still refused, whichever spelling the folder has.
    respell(lambda_l1=10.0)
    with pytest.raises(EdgeganError, match="train.lambda_recon: 10.0 -> 100.0"):
        train_pix2pix(*pairs, out, tiny_pix2pix(), resume=True)


def test_configs_load_from_dicts_with_the_old_names():
    p2p = Pix2PixConfig(lambda_recon=10.0, betas=(0.4, 0.99), epochs=3)
    old = {k: v for k, v in vars(p2p).items() if k not in ("betas", "lambda_recon")}
    old |= {"beta1": 0.4, "beta2": 0.99, "lambda_l1": 10.0}
    assert Pix2PixConfig.from_dict(old) == p2p
    assert Pix2PixConfig.from_dict({"betas": [0.4, 0.99]}).betas == (0.4, 0.99)  # as read back from YAML/JSON
    assert CycleGANConfig.from_dict({"beta1": 0.9, "pool_size": 4}) == CycleGANConfig(betas=(0.9, 0.999), pool_size=4)
    with pytest.raises(ConfigError, match="not both"):
        Pix2PixConfig.from_dict({"lambda_l1": 1.0, "lambda_recon": 1.0})
    with pytest.raises(ConfigError, match="unknown option.*lambda_recon"):
        CycleGANConfig.from_dict({"lambda_l1": 1.0})  # CycleGAN never had it
    for bad in ((0.5,), (0.5, 1.0), "ab", 0.5):
        with pytest.raises(ConfigError, match="betas"):
            Pix2PixConfig(betas=bad)


def test_pix2pix_resume_keeps_the_selection_by_a_metric(pairs, tmp_path):
    cfg = tiny_pix2pix(select_by="ssim", generator_options={"ngf": 4, "n_blocks": 1, "residual": True})
    straight = train_pix2pix(*pairs, tmp_path / "straight", cfg)

    def stop(epoch, metrics):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_pix2pix(*pairs, tmp_path / "resumed", cfg, on_epoch=stop)
    resumed = train_pix2pix(*pairs, tmp_path / "resumed", cfg, resume=True)
    assert resumed["resumed_from"] == 2
    assert (resumed["best_epoch"], resumed["best_metric"]) == (straight["best_epoch"], straight["best_metric"])
    for name in ("best_generator", "last_generator", "best_discriminator"):
        assert same_weights(tmp_path / "resumed" / name, tmp_path / "straight" / name), name


def test_pix2pix_aligned_folder_and_string_options(tmp_path):
    gen = torch.Generator().manual_seed(3)
    for i in range(3):
        a = smooth_image(gen)
        save_image(torch.cat([a, -a], dim=2), tmp_path / "data" / f"{i}.png")  # A|B side by side
    cfg = tiny_pix2pix(epochs=1, decay_epochs=0, generator_options={"ngf": "4", "n_blocks": "1"})
    summary = train_pix2pix(None, None, tmp_path / "run", cfg, data_root=tmp_path / "data")
    assert summary["epochs"] == 1 and summary["best_epoch"] == 1
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "ngf: 4" in saved  # options are stored typed, so the API and the CLI resume alike


def test_nan_guard_names_the_global_step(pairs, tmp_path, monkeypatch):
    """The message gives the optimizer step counted over the whole run, not the epoch (as every recipe does)."""
    calls = []

    def l1_nan_on_call_7(x, y):
        calls.append(1)
        return torch.tensor(float("nan") if len(calls) == 7 else 0.5)

    monkeypatch.setattr(teacher, "l1_loss", l1_nan_on_call_7)
    # pix2pix: one L1 per step and 5 training pairs, so step 7 is epoch 2's second batch.
    with pytest.raises(NonFiniteError, match=r"at step 7: loss_G_L1=nan") as err:
        train_pix2pix(*pairs, tmp_path / "run", tiny_pix2pix())
    assert "step-00000001" in str(err.value)  # the last good checkpoint: epoch 1's

    # CycleGAN without the identity loss: two L1s (the cycles) per step, 3 steps an epoch; call 7 is step 4.
    calls.clear()
    cfg = CycleGANConfig(
        generator_options=dict(TINY), ndf=4, n_layers_d=1, pool_size=2, load_size=36, crop_size=32, epochs=2,
        decay_epochs=0, lambda_identity=0.0,
    )  # fmt: skip
    with pytest.raises(NonFiniteError, match=r"at step 4: .*loss_cycle=nan"):
        train_cyclegan(make_unpaired(tmp_path / "data"), tmp_path / "cyc", cfg)


def test_cyclegan_one_epoch_writes_generators(tmp_path):
    root = make_unpaired(tmp_path / "data")
    cfg = CycleGANConfig(
        generator_options=dict(TINY), ndf=4, n_layers_d=1, pool_size=2, load_size=36, crop_size=32, epochs=1,
        decay_epochs=0,
    )  # fmt: skip
    summary = train_cyclegan(root, tmp_path / "run", cfg)
    assert summary["epochs"] == 1 and summary["select_by"] == "last" and summary["best_epoch"] == 1
    assert summary["G_A"] == summary["last_G_A"] == str(tmp_path / "run" / "G_A")
    assert summary["discriminator"] == {"n_layers": 1, "patch": 16, "auto": False}
    (row,) = rows(tmp_path / "run")
    assert {"loss_D_A", "loss_D_B", "loss_G_A", "loss_G_B", "loss_cycle", "loss_idt"} <= row.keys()
    for name in ("G_A", "G_B"):
        assert isinstance(edgegan.load(tmp_path / "run" / name), ResnetGenerator)


def test_image_pool():
    x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 2, 2)
    assert torch.equal(ImagePool(0).query(x), x)  # size 0: pass-through

    pool = ImagePool(4)
    assert torch.equal(pool.query(x), x) and len(pool) == 4  # filling: returns the new images
    from_pool = 0
    for k in range(1, 51):
        new = x + 10 * k  # every batch distinct from all earlier ones
        out = pool.query(new)
        assert out.shape == new.shape and len(pool) == 4
        swapped = (out != new).flatten(1).any(1)
        assert (out[swapped] < new[swapped]).all()  # an earlier image, from the store, replaced it
        from_pool += int(swapped.sum())
    assert 0.35 < from_pool / 200 < 0.65  # once full, about half come from the store

    copy = ImagePool(4)
    copy.load_state_dict(pool.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(copy.images, pool.images, strict=True))
    with pytest.raises(ValueError):
        ImagePool(3).load_state_dict(pool.state_dict())
    with pytest.raises(ConfigError):
        ImagePool(-1)


def test_lr_schedule_constant_then_linear_to_zero():
    factor = linear_decay(epochs=2, decay_epochs=3)
    assert [factor(e) for e in range(6)] == pytest.approx([1, 1, 0.75, 0.5, 0.25, 0.0])

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1, 1, 0.75, 0.5, 0.25]) and opt.param_groups[0]["lr"] == 0


def test_bad_input(pairs, tmp_path):
    a_dir, b_dir = pairs
    with pytest.raises(ImageLoadError, match="not found"):
        train_pix2pix(tmp_path / "nope", b_dir, tmp_path / "r1", tiny_pix2pix())
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageLoadError, match="no image files"):
        train_pix2pix(tmp_path / "empty", b_dir, tmp_path / "r2", tiny_pix2pix())
    other = tmp_path / "other"
    save_image(torch.zeros(3, 8, 8), other / "zz.png")
    with pytest.raises(ConfigError, match="do not match"):
        train_pix2pix(a_dir, other, tmp_path / "r3", tiny_pix2pix())
    with pytest.raises(ConfigError, match="ngf"):
        train_pix2pix(a_dir, b_dir, tmp_path / "r4", tiny_pix2pix(generator_options={"ngf": "many"}))
    with pytest.raises(ConfigError, match="unknown option"):
        train_pix2pix(a_dir, b_dir, tmp_path / "r5", tiny_pix2pix(generator_options={"widht": 3}))
    with pytest.raises(ConfigError, match="crop_size"):
        train_pix2pix(a_dir, b_dir, tmp_path / "r6", tiny_pix2pix(crop_size=64))
    with pytest.raises(ConfigError, match="gan_mode"):
        tiny_pix2pix(gan_mode="wasserstein")
    with pytest.raises(ConfigError, match="generator"):
        tiny_pix2pix(generator="patch_discriminator")
    with pytest.raises(ConfigError, match="epochs"):
        tiny_pix2pix(epochs=0, decay_epochs=0)
    with pytest.raises(ImageLoadError, match="trainA"):
        train_cyclegan(tmp_path, tmp_path / "r7", CycleGANConfig(generator_options=dict(TINY)))
    assert not any((tmp_path / f"r{i}").exists() for i in range(1, 8))  # nothing written for bad input


def test_cli_pix2pix_and_errors(pairs, tmp_path):
    a_dir, b_dir = pairs
    runner = CliRunner()
    args = ["--a", str(a_dir), "--b", str(b_dir), "--load-size", "36", "--crop-size", "32", "--epochs", "1"]
    args += ["--decay-epochs", "0", "--ndf", "4", "-o", "ngf=4", "-o", "n_blocks=1"]
    result = runner.invoke(app, ["pix2pix", *args, "--select-by", "ssim", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "best generator (epoch 1, selected by ssim" in result.output and "best_generator" in result.output
    assert "discriminator: 1 layers, 16x16 patches (auto" in result.output
    assert isinstance(edgegan.load(tmp_path / "run" / "best_generator"), ResnetGenerator)
    assert "pix2pix epoch 1/1" in result.output and "epoch 1/1  loss_D=" in result.output  # bar, epoch's figures
    assert "val_ssim=" in result.output
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]
    assert saved["lambda_recon"] == 100.0 and saved["betas"] == [0.5, 0.999]
    # --lambda-l1, the older name of --lambda-recon, still works.
    extra = ["--n-layers-d", "2", "--lambda-l1", "50"]
    result = runner.invoke(app, ["pix2pix", *args, *extra, "--out", str(tmp_path / "run2")])
    assert result.exit_code == 0, result.output
    assert "selected by last" in result.output and "2 layers, 34x34 patches (--n-layers-d)" in result.output
    assert yaml.safe_load((tmp_path / "run2" / "config.yaml").read_text())["train"]["lambda_recon"] == 50.0

    bad = [
        ["pix2pix", "--a", str(a_dir), "--out", str(tmp_path / "x")],  # no --b
        ["pix2pix", "--a", str(tmp_path / "missing"), "--b", str(b_dir), "--out", str(tmp_path / "x")],
        ["pix2pix", *args, "-o", "ngf", "--out", str(tmp_path / "x")],  # malformed option
        ["pix2pix", *args, "--direction", "sideways", "--out", str(tmp_path / "x")],
        ["pix2pix", *args, "--n-layers-d", "deep", "--out", str(tmp_path / "x")],
        ["pix2pix", *args, "--select-by", "best", "--out", str(tmp_path / "x")],
        ["cyclegan", "--root", str(tmp_path), "--select-by", "psnr", "--out", str(tmp_path / "x")],
        ["cyclegan", "--root", str(tmp_path / "missing"), "--out", str(tmp_path / "x")],
    ]
    for argv in bad:
        result = runner.invoke(app, argv)
        assert isinstance(result.exception, EdgeganError), (argv, result.exception)
        assert "\n" not in str(result.exception)


def test_cyclegan_resume_matches_uninterrupted_run(tmp_path):
    root = make_unpaired(tmp_path / "data")
    cfg = CycleGANConfig(
        generator_options=dict(TINY), ndf=4, n_layers_d=1, pool_size=2, load_size=36, crop_size=32, epochs=1,
        decay_epochs=1,
    )  # fmt: skip
    train_cyclegan(root, tmp_path / "straight", cfg)

    def stop(epoch, metrics):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_cyclegan(root, tmp_path / "resumed", cfg, on_epoch=stop)
    summary = train_cyclegan(root, tmp_path / "resumed", cfg, resume=True)
    assert summary["resumed_from"] == 1 and summary["epochs_run"] == 1
    for name in ("G_A", "G_B"):
        a = edgegan.load(tmp_path / "resumed" / name).state_dict()
        b = edgegan.load(tmp_path / "straight" / name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in b), name
