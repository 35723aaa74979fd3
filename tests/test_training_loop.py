"""The run machinery driving real edgegan networks and losses in a pix2pix-style loop."""

import json

import pytest
import torch

from edgegan.errors import NonFiniteError
from edgegan.losses import GANLoss, l1_loss
from edgegan.models import PatchDiscriminator, ResnetGenerator
from edgegan.runs import RunDir, check_finite, latest_checkpoint, load_checkpoint, save_checkpoint

CONFIG = {"steps": 6, "lr": 2e-4, "lambda_recon": 100.0, "save_every": 2}


class Crash(Exception):
    pass


def train(folder, *, resume=False, crash_at=None, nan_at=None, seed=0):
    data = torch.Generator().manual_seed(0)  # the dataset: the same in every run
    data_a = torch.rand(4, 3, 16, 16, generator=data) * 2 - 1
    data_b = torch.rand(4, 3, 16, 16, generator=data) * 2 - 1
    torch.manual_seed(seed)  # model init: overwritten by the checkpoint when resuming
    g = ResnetGenerator(ngf=4, n_blocks=1, dropout=0.5)  # dropout: the torch RNG must be restored
    d = PatchDiscriminator(input_nc=6, ndf=4, n_layers=1)
    opt_g = torch.optim.Adam(g.parameters(), lr=CONFIG["lr"], betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=CONFIG["lr"], betas=(0.5, 0.999))
    sched = torch.optim.lr_scheduler.LambdaLR(opt_g, lambda s: 1.0 - s / CONFIG["steps"])
    gan = GANLoss("hinge")
    run = RunDir(folder, CONFIG, resume=resume)
    objs = {"modules": {"G": g, "D": d}, "optimizers": {"G": opt_g, "D": opt_d}, "schedulers": {"G": sched}}
    ckpt = load_checkpoint(run, **objs)
    for step in range((ckpt.step if ckpt else 0) + 1, CONFIG["steps"] + 1):
        idx = torch.randint(0, 4, (2,))
        a, b = data_a[idx], data_b[idx]
        if nan_at == step:
            a = a * float("nan")
        fake = g(a)
        # D step
        loss_d = gan(d(torch.cat([a, b], 1)), True) + gan(d(torch.cat([a, fake.detach()], 1)), False)
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        # G step
        loss_g_gan = gan(d(torch.cat([a, fake], 1)), True, for_discriminator=False)
        loss_g = loss_g_gan + CONFIG["lambda_recon"] * l1_loss(fake, b)
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        sched.step()
        check_finite(step, checkpoint=run, loss_G=loss_g, loss_D=loss_d)
        run.log(step, loss_G=loss_g, loss_D=loss_d)
        if crash_at == step:
            raise Crash  # killed after logging, before this step's checkpoint
        if step % CONFIG["save_every"] == 0:
            save_checkpoint(run, step, **objs)
    return g, d, opt_g, sched


def test_killed_and_resumed_run_equals_uninterrupted(tmp_path):
    g_ref, d_ref, opt_ref, sched_ref = train(tmp_path / "ref")
    with pytest.raises(Crash):
        train(tmp_path / "run", crash_at=5)
    g, d, opt, sched = train(tmp_path / "run", resume=True, seed=99)
    for a, b in zip(
        [*g_ref.state_dict().values(), *d_ref.state_dict().values()],
        [*g.state_dict().values(), *d.state_dict().values()],
        strict=True,
    ):
        assert torch.equal(a, b)
    for sa, sb in zip(opt_ref.state_dict()["state"].values(), opt.state_dict()["state"].values(), strict=True):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert sched.last_epoch == sched_ref.last_epoch == CONFIG["steps"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    ref_rows = [json.loads(line) for line in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, CONFIG["steps"] + 1))  # step 5 logged once
    assert [r["loss_G"] for r in rows] == [r["loss_G"] for r in ref_rows]


def test_nan_guard_stops_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(NonFiniteError, match="step 3") as info:
        train(tmp_path / "run", nan_at=3)
    assert "loss_G" in str(info.value) and "loss_D" in str(info.value)
    latest = latest_checkpoint(tmp_path / "run")
    assert latest is not None and latest.name == "step-00000002"
    g = ResnetGenerator(ngf=4, n_blocks=1, dropout=0.5)
    d = PatchDiscriminator(input_nc=6, ndf=4, n_layers=1)
    ckpt = load_checkpoint(tmp_path / "run", modules={"G": g, "D": d}, restore_rng=False)
    assert ckpt.step == 2 and all(torch.isfinite(p).all() for p in g.parameters())
