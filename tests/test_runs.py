"""Tests for run folders, checkpoints (incl. bit-exact resume) and training guards."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
import yaml
from torch import nn

from edgegan import runs
from edgegan.errors import CheckpointError, EdgeganError, NonFiniteError
from edgegan.runs import (
    RunDir,
    check_finite,
    decode_state,
    encode_state,
    latest_checkpoint,
    load_checkpoint,
    load_torch_weights,
    save_checkpoint,
    set_seed,
)


@pytest.fixture(autouse=True)
def _one_thread():
    # Single-threaded CPU kernels make the bit-exact comparisons independent of the machine.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def assert_same(a, b, path="root"):
    """Recursive exact equality, tensors by torch.equal (and dtype), containers by type too."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert list(a.keys()) == list(b.keys()), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and a != a:
        assert b != b, path
    else:
        assert a == b, path


# ---------------------------------------------------------------------------------------------
# codec


def test_codec_round_trip():
    obj = {
        "state": {
            0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2, 3)},
            1: {"step": torch.tensor(3.0), "exp_avg": torch.randn(4, dtype=torch.float64)},
        },
        "param_groups": [{"lr": 2e-4, "betas": (0.5, 0.999), "params": [0, 1], "foreach": None, "fused": False}],
        "nested": [[1, [2.5, "x"]], (True, (None,)), []],
        (1, "a"): "tuple key",
        2.5: "float key",
        None: "none key",
        False: 0,
        "__looks_like_a_tag__": {"__tensor__": "not a tensor"},
        "1": torch.tensor([1]),
        "nonfinite": [float("nan"), float("inf"), -float("inf")],
        "dtypes": {
            "f16": torch.randn(3).half(),
            "bf16": torch.randn(3).bfloat16(),
            "i64": torch.arange(5),
            "u8": torch.arange(4, dtype=torch.uint8),
            "bool": torch.tensor([True, False]),
            "scalar": torch.tensor(7, dtype=torch.int32),
            "empty": torch.zeros(0, 2),
        },
        "big_int": 2**40,
        "int_vs_float": [1, 1.0],
    }
    # Tensor with int key 1 and str key "1" at the same level must not collide.
    obj["state"]["1"] = torch.tensor([9.0])
    enc, tensors = encode_state(obj)
    text = json.dumps(enc, allow_nan=False)  # strict JSON
    back = decode_state(json.loads(text), tensors)
    assert_same(back, obj)
    # The tensors also survive a safetensors round trip with their dtypes.
    blob = safetensors.torch.save(runs._for_safetensors(tensors))
    assert_same(decode_state(json.loads(text), safetensors.torch.load(blob)), obj)


def test_codec_rejects_unknown_objects():
    with pytest.raises(TypeError, match="object"):
        encode_state({"a": [object()]})
    with pytest.raises(TypeError, match="tensor used as a dict key"):
        encode_state({torch.tensor(1): 1})


# ---------------------------------------------------------------------------------------------
# resume equivalence with a tiny GAN


class TinyG(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 4 * 4 * 4)
        self.net = nn.Sequential(
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Dropout(0.3),
            nn.ConvTranspose2d(4, 4, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(4, 1, 3, padding=1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(-1, 4, 4, 4))


class TinyD(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 4, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Dropout(0.3),
            nn.Conv2d(4, 8, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(8 * 2 * 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_gan():
    G, D = TinyG(), TinyD()
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-3, betas=(0.5, 0.999))
    sched_g = torch.optim.lr_scheduler.StepLR(opt_g, step_size=4, gamma=0.5)
    sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, lambda s: 0.9**s)
    return {
        "modules": {"G": G, "D": D},
        "optimizers": {"G": opt_g, "D": opt_d},
        "schedulers": {"G": sched_g, "D": sched_d},
    }


def train(objs, start: int, end: int, run=None, every: int = 3, keep: int | None = 3) -> int:
    G, D = objs["modules"]["G"], objs["modules"]["D"]
    opt_g, opt_d = objs["optimizers"]["G"], objs["optimizers"]["D"]
    bce = nn.BCEWithLogitsLoss()
    step = start
    for step in range(start + 1, end + 1):
        # Data from numpy's RNG, latent codes from torch's, label smoothing from python's.
        real = torch.from_numpy(np.random.uniform(-1, 1, size=(4, 1, 8, 8)).astype(np.float32))
        z = torch.randn(4, 8)
        real_label = 0.9 + 0.1 * random.random()
        fake = G(z)
        loss_d = bce(D(real), torch.full((4, 1), real_label)) + bce(D(fake.detach()), torch.zeros(4, 1))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        loss_g = bce(D(fake), torch.ones(4, 1))
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        for s in objs["schedulers"].values():
            s.step()
        check_finite(step, checkpoint=run, loss_G=loss_g, loss_D=loss_d)
        if run is not None:
            run.log(step, loss_G=loss_g, loss_D=loss_d)
            if step % every == 0:
                save_checkpoint(run, step, **objs, extra={"epoch": step // 5}, keep=keep)
    return step


def snapshot(objs, step: int):
    return {
        "step": step,
        "modules": {n: m.state_dict() for n, m in objs["modules"].items()},
        "optimizers": {n: o.state_dict() for n, o in objs["optimizers"].items()},
        "schedulers": {n: (s.last_epoch, s.get_last_lr()) for n, s in objs["schedulers"].items()},
        "rng": (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].tolist()),
    }


def test_resume_is_bit_exact(tmp_path):
    set_seed(0)
    ref = build_gan()
    ref_step = train(ref, 0, 10)
    expected = snapshot(ref, ref_step)
    del ref

    set_seed(0)
    objs = build_gan()
    run = RunDir(tmp_path / "run", {"lr": 2e-3})
    train(objs, 0, 6, run=run)
    del objs, run  # "crash": nothing survives but the folder

    set_seed(123)  # different init and RNG: everything must come from the checkpoint
    objs = build_gan()
    run = RunDir(tmp_path / "run", {"lr": 2e-3}, resume=True)
    assert run.resume_step == 6
    ckpt = load_checkpoint(run, **objs)
    assert ckpt is not None and ckpt.step == 6 and ckpt.extra == {"epoch": 1}
    assert ckpt.path == tmp_path / "run" / "checkpoints" / "step-00000006"
    step = train(objs, ckpt.step, 10, run=run)
    got = snapshot(objs, step)

    assert_same(got["modules"], expected["modules"])
    assert_same(got["optimizers"], expected["optimizers"])
    assert got["schedulers"] == expected["schedulers"]
    assert got["step"] == expected["step"] == 10
    assert_same(got["rng"][0], expected["rng"][0])
    assert got["rng"][1:] == expected["rng"][1:]
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 11))


def test_save_does_not_consume_randomness(tmp_path):
    set_seed(5)
    objs = build_gan()
    before = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    save_checkpoint(tmp_path, 1, **objs)
    assert torch.equal(before[0], torch.get_rng_state())
    assert before[1] == random.getstate()
    assert np.array_equal(before[2], np.random.get_state()[1])


# ---------------------------------------------------------------------------------------------
# crash safety and checkpoint housekeeping


def small():
    torch.manual_seed(0)
    m = nn.Linear(3, 2)
    return {"modules": {"m": m}, "optimizers": {"m": torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)}}


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    objs = small()
    save_checkpoint(tmp_path, 3, **objs)

    real_save = safetensors.torch.save_file
    calls = {"n": 0}

    def flaky_save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_save(*args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", flaky_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 6, **objs)
    monkeypatch.setattr(safetensors.torch, "save_file", real_save)

    ckpt_dir = tmp_path / "checkpoints"
    assert not (ckpt_dir / "step-00000006").exists()
    assert json.loads((ckpt_dir / "latest.json").read_text()) == {"step": 3, "path": "step-00000003"}
    # A kill -9 mid-save would leave the hidden temp folder behind: simulate one, half written.
    stray = ckpt_dir / ".step-00000006.abc123.tmp"
    stray.mkdir()
    (stray / "weights.safetensors").write_bytes(b"\x00" * 10)
    (ckpt_dir / ".latest.json.xyz.tmp").write_text("{")
    (ckpt_dir / "latest.json").unlink()  # even falling back must ignore the stray folder

    fresh = small()
    ckpt = load_checkpoint(tmp_path, **fresh)
    assert ckpt is not None and ckpt.step == 3

    save_checkpoint(tmp_path, 6, **objs)
    assert not stray.exists() and not (ckpt_dir / ".latest.json.xyz.tmp").exists()
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["latest.json", "step-00000003", "step-00000006"]


def test_latest_missing_falls_back_and_keep_prunes(tmp_path):
    objs = small()
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, **objs, keep=2)
    ckpt_dir = tmp_path / "checkpoints"
    assert sorted(p.name for p in ckpt_dir.glob("step-*")) == ["step-00000002", "step-00000003"]

    (ckpt_dir / "latest.json").unlink()
    assert latest_checkpoint(tmp_path) == ckpt_dir / "step-00000003"
    assert load_checkpoint(tmp_path, **small()).step == 3

    # latest.json pointing at a deleted folder also falls back.
    (ckpt_dir / "latest.json").write_text(json.dumps({"step": 9, "path": "step-00000009"}))
    assert load_checkpoint(ckpt_dir, **small()).step == 3
    # A specific checkpoint folder can be loaded directly.
    assert load_checkpoint(ckpt_dir / "step-00000002", **small()).step == 2


def test_resaving_after_resume_replaces_newer_leftovers(tmp_path):
    objs = small()
    for step in (3, 6, 9):
        save_checkpoint(tmp_path, step, **objs, keep=None)
    # Resumed from 3 (say latest.json was lost with 6 and 9 unusable): saving 6 supersedes 6 and 9.
    save_checkpoint(tmp_path, 6, **objs, keep=None)
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*"))
    assert names == ["step-00000003", "step-00000006"]


def test_no_checkpoint_returns_none(tmp_path):
    assert load_checkpoint(tmp_path, **small()) is None
    assert latest_checkpoint(tmp_path) is None


def test_corrupt_and_missing_files_raise(tmp_path):
    objs = small()
    folder = save_checkpoint(tmp_path, 1, **objs)
    weights = folder / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:20])
    with pytest.raises(CheckpointError, match="weights.safetensors") as info:
        load_checkpoint(tmp_path, **small())
    assert "\n" not in str(info.value)
    weights.unlink()
    with pytest.raises(CheckpointError, match="weights.safetensors is missing"):
        load_checkpoint(tmp_path, **small())


def test_name_and_architecture_mismatch_raise(tmp_path):
    objs = small()
    save_checkpoint(tmp_path, 1, **objs)
    fresh = small()
    with pytest.raises(CheckpointError, match="in the checkpoint but not passed: m"):
        load_checkpoint(tmp_path, modules={}, optimizers=fresh["optimizers"])
    with pytest.raises(CheckpointError, match="passed but not in the checkpoint: extra"):
        load_checkpoint(
            tmp_path, modules={**fresh["modules"], "extra": nn.Linear(1, 1)}, optimizers=fresh["optimizers"]
        )
    # No optimizers at all: a weights-only load (evaluation, export) is allowed.
    assert load_checkpoint(tmp_path, modules=fresh["modules"], restore_rng=False).step == 1
    with pytest.raises(CheckpointError, match="optimizers"):
        load_checkpoint(tmp_path, modules=fresh["modules"], optimizers={"other": fresh["optimizers"]["m"]})
    with pytest.raises(CheckpointError, match="missing none; unexpected bias") as info:
        load_checkpoint(tmp_path, modules={"m": nn.Linear(3, 2, bias=False)}, optimizers=fresh["optimizers"])
    assert "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match="size mismatch"):
        load_checkpoint(tmp_path, modules={"m": nn.Linear(4, 2)}, optimizers=fresh["optimizers"])


def test_extra_must_be_json(tmp_path):
    with pytest.raises(TypeError, match="JSON"):
        save_checkpoint(tmp_path, 1, **small(), extra={"path": Path("x")})
    assert not (tmp_path / "checkpoints" / "step-00000001").exists()


def test_tied_weights_save_and_load(tmp_path):
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(2, 2, bias=False)
            self.b = nn.Linear(2, 2, bias=False)
            self.b.weight = self.a.weight

    m = Tied()
    save_checkpoint(tmp_path, 1, modules={"t": m})
    m2 = Tied()
    load_checkpoint(tmp_path, modules={"t": m2})
    assert torch.equal(m2.a.weight, m.a.weight) and m2.b.weight is m2.a.weight


# ---------------------------------------------------------------------------------------------
# RunDir


@dataclasses.dataclass
class Cfg:
    lr: float = 2e-4
    size: tuple[int, int] = (64, 64)
    name: str = "pix2pix"


def test_rundir_writes_config_and_refuses_overwrite(tmp_path):
    run = RunDir(tmp_path / "r", Cfg())
    text = (tmp_path / "r" / "config.yaml").read_text()
    assert "size:\n- 64\n- 64" in text
    assert run.config == {"lr": 2e-4, "size": [64, 64], "name": "pix2pix"}
    assert (tmp_path / "r" / "checkpoints").is_dir()
    # Nothing logged or saved yet: reusing the folder is fine.
    run = RunDir(tmp_path / "r", Cfg())
    run.log(1, loss=torch.tensor(0.5), acc=np.float32(0.25), note="ok")
    row = json.loads((tmp_path / "r" / "metrics.jsonl").read_text())
    assert row["step"] == 1 and row["loss"] == 0.5 and row["acc"] == 0.25 and row["note"] == "ok" and "time" in row
    with pytest.raises(CheckpointError, match="--resume") as info:
        RunDir(tmp_path / "r", Cfg())
    assert isinstance(info.value, EdgeganError)


def test_rundir_refuses_existing_checkpoints(tmp_path):
    save_checkpoint(tmp_path / "r", 1, **small())
    with pytest.raises(CheckpointError, match="already holds a run"):
        RunDir(tmp_path / "r", {"a": 1})


def test_resume_with_changed_config(tmp_path):
    run = RunDir(tmp_path / "r", Cfg())
    save_checkpoint(run, 1, **small())
    with pytest.raises(CheckpointError, match=r"lr: 0.0002 -> 0.001") as info:
        RunDir(tmp_path / "r", Cfg(lr=1e-3, name="x"), resume=True)
    assert "name: 'pix2pix' -> 'x'" in str(info.value) and "size" not in str(info.value)
    run = RunDir(tmp_path / "r", Cfg(lr=1e-3), resume=True, allow_config_change=True)
    assert run.resume_step == 1
    assert "lr: 0.001" in (tmp_path / "r" / "config.yaml").read_text()
    # Same config resumes silently.
    RunDir(tmp_path / "r", Cfg(lr=1e-3), resume=True)


def test_resume_upgrades_a_config_saved_with_old_names(tmp_path):
    """A recipe that renamed config fields passes ``upgrade``: the old folder resumes and is saved in the new names."""
    run = RunDir(tmp_path / "r", {"train": {"lambda_l1": 100.0, "lr": 2e-4}})
    save_checkpoint(run, 1, **small())
    today = {"train": {"lambda_recon": 100.0, "lr": 2e-4}}
    with pytest.raises(CheckpointError, match=r"train.lambda_l1: 100.0 -> <absent>"):
        RunDir(tmp_path / "r", today, resume=True)

    def upgrade(saved):
        train = {("lambda_recon" if k == "lambda_l1" else k): v for k, v in saved["train"].items()}
        return {**saved, "train": train}

    assert RunDir(tmp_path / "r", today, resume=True, upgrade=upgrade).resume_step == 1
    assert yaml.safe_load((tmp_path / "r" / "config.yaml").read_text()) == today
    with pytest.raises(CheckpointError, match=r"train.lr: 0.0002 -> 0.001"):  # a changed value is still refused
        RunDir(tmp_path / "r", {"train": {"lambda_recon": 100.0, "lr": 1e-3}}, resume=True, upgrade=upgrade)


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    run = RunDir(tmp_path / "r", {"a": 1}, resume=True)
    assert run.resume_step is None
    run.log(1, loss=1.0)
    run = RunDir(tmp_path / "r", {"a": 1}, resume=True)  # crashed before the first checkpoint
    assert run.resume_step is None
    assert (tmp_path / "r" / "metrics.jsonl").read_text() == ""


def test_resume_truncates_metrics_past_checkpoint(tmp_path):
    run = RunDir(tmp_path / "r", {"a": 1})
    for step in range(1, 8):
        run.log(step, loss=float(step))
        if step == 4:
            save_checkpoint(run, step, **small())
    with open(tmp_path / "r" / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 8, "lo')  # line cut short by the crash
    run = RunDir(tmp_path / "r", {"a": 1}, resume=True)
    assert run.resume_step == 4
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    run.log(5, loss=5.5)
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5] and rows[-1]["loss"] == 5.5


# ---------------------------------------------------------------------------------------------
# guards, seeding, foreign weights


def test_check_finite(tmp_path):
    check_finite(3, loss_G=torch.tensor(0.5), loss_D=0.41)
    check_finite(3)
    with pytest.raises(NonFiniteError, match=r"non-finite loss at step 57: loss_G=nan \(loss_D=0.41\); stopped$"):
        check_finite(57, loss_G=torch.tensor(float("nan")), loss_D=0.41)
    with pytest.raises(NonFiniteError, match=r"loss_G=inf, loss_D=-inf; stopped, no checkpoint was saved yet"):
        check_finite(2, checkpoint=tmp_path, loss_G=float("inf"), loss_D=torch.tensor([-float("inf")]))
    folder = save_checkpoint(tmp_path, 50, **small())
    with pytest.raises(NonFiniteError, match=f"last good checkpoint kept at {folder}"):
        check_finite(57, checkpoint=tmp_path, loss=torch.tensor(float("nan"), requires_grad=True))


def test_set_seed_is_reproducible():
    set_seed(7)
    a = (random.random(), np.random.rand(), torch.rand(1))
    set_seed(7)
    b = (random.random(), np.random.rand(), torch.rand(1))
    assert a[:2] == b[:2] and torch.equal(a[2], b[2])


class Evil:
    """A custom class: unpickling it is exactly what weights_only loading must refuse."""

    def __init__(self) -> None:
        self.payload = "should never be unpickled"


def test_load_torch_weights(tmp_path):
    sd = nn.Linear(3, 2).state_dict()
    torch.save(sd, tmp_path / "plain.pth")
    assert_same(load_torch_weights(tmp_path / "plain.pth"), dict(sd))
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "wrapped.pt")
    assert_same(load_torch_weights(tmp_path / "wrapped.pt"), dict(sd))
    torch.save({"model": sd}, tmp_path / "model.pth")
    assert_same(load_torch_weights(tmp_path / "model.pth"), dict(sd))
    safetensors.torch.save_file(dict(sd), tmp_path / "w.safetensors")
    loaded = load_torch_weights(tmp_path / "w.safetensors")  # safetensors sorts keys
    assert_same({k: loaded[k] for k in sd}, dict(sd))

    torch.save({"state_dict": sd, "obj": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="evil.pth") as info:
        load_torch_weights(tmp_path / "evil.pth")
    assert "weights_only" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match="missing"):
        load_torch_weights(tmp_path / "nope.pth")
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_torch_weights(tmp_path / "bad.safetensors")
    torch.save({"G": sd, "D": sd}, tmp_path / "nested.pth")
    with pytest.raises(CheckpointError, match="non-tensor entries: G, D"):
        load_torch_weights(tmp_path / "nested.pth")
