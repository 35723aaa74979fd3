"""Multi-process training: the helpers single-process, and 2-process CPU runs under torchrun (gloo)."""

import hashlib
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import edgegan
from edgegan.compress import distributed as D
from edgegan.data.images import save_image

TIMEOUT_S = 120


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(tmp_path, script, *args, nproc=2):
    """Run ``script`` (source text) under torchrun with ``nproc`` CPU processes on 127.0.0.1."""
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(script))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", f"--nproc_per_node={nproc}"]
    cmd += ["--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(path), *map(str, args)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def state_hash(module):
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- single process


def test_helpers_are_no_ops_without_torchrun(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = D.init_distributed("cpu")
    assert info == D.DistInfo(rank=0, world_size=1, local_rank=0, backend=None, enabled=False)
    assert D.is_main(info)
    D.barrier(info)
    model = nn.Linear(2, 2)
    assert D.wrap_ddp(model, info) is model
    assert D.unwrap(model) is model
    assert D.distributed_sampler(list(range(5)), info, shuffle=True, seed=0) is None
    assert D.all_reduce_mean(torch.tensor(2.5), info) == 2.5
    assert D.all_reduce_mean(1.5, info) == 1.5
    assert D.broadcast_object({"a": 1}, info) == {"a": 1}
    D.cleanup(info)


# ----------------------------------------------------------------------------- two processes

TOY_SCRIPT = """
    import hashlib, json, sys
    import torch
    from torch import nn
    from edgegan.compress import distributed as D

    out = sys.argv[1]
    info = D.init_distributed("cpu")
    assert info.enabled and info.world_size == 2 and info.backend == "gloo", info
    torch.manual_seed(100 + info.rank)  # different initial weights: DDP must broadcast rank 0's
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    ddp = D.wrap_ddp(model, info)
    assert D.unwrap(ddp) is model
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    x = torch.randn(8, 4)  # each rank its own batch: gradients must be averaged
    loss = ddp(x).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    changed = any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(info.world_size)]
    torch.distributed.all_gather(gathered, flat)
    result = {
        "rank": info.rank,
        "changed": changed,
        "equal": all(torch.equal(g, gathered[0]) for g in gathered),
        "hash": hashlib.sha256(flat.numpy().tobytes()).hexdigest(),
        "mean": D.all_reduce_mean(float(info.rank), info),
        "broadcast": D.broadcast_object({"from": info.rank}, info),
        "shard": list(D.distributed_sampler(list(range(5)), info, shuffle=False, seed=0)),
    }
    D.barrier(info)
    with open(f"{out}/rank{info.rank}.json", "w") as f:
        json.dump(result, f)
    # a module-level DDP would keep gloo's process group alive into interpreter teardown, where its worker
    # threads can abort the process ("terminate called without an active exception")
    del ddp, opt, loss
    D.cleanup(info)
"""


def test_ddp_step_keeps_ranks_identical(tmp_path):
    torchrun(tmp_path, TOY_SCRIPT, tmp_path)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["changed"] and r1["changed"]
    assert r0["equal"] and r1["equal"]
    assert r0["hash"] == r1["hash"]
    assert r0["mean"] == r1["mean"] == 0.5
    assert r0["broadcast"] == r1["broadcast"] == {"from": 0}
    assert r0["shard"] == [0, 2, 4] and r1["shard"] == [1, 3, 0]  # padded so both ranks take 3 steps


PIX2PIX_SCRIPT = """
    import hashlib, json, sys
    import torch
    import edgegan
    from edgegan.compress.teacher import Pix2PixConfig, train_pix2pix
    from edgegan.compress import distributed as D

    a_dir, b_dir, out, hashes = sys.argv[1:5]
    built = []
    real_build = edgegan.build

    def build(arch, **kw):  # keep this rank's generator to hash its final weights
        model = real_build(arch, **kw)
        built.append((arch, model))
        return model

    edgegan.build = build

    def state_hash(module):
        h = hashlib.sha256()
        for name, t in sorted(module.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    cfg = Pix2PixConfig(
        generator_options={"ngf": 4, "n_blocks": 1}, ndf=4, n_layers_d=1, load_size=36, crop_size=32,
        epochs=1, decay_epochs=0, val_fraction=0.25,
    )
    summary = train_pix2pix(a_dir, b_dir, out, cfg)
    info = D.init_distributed("cpu")  # the group train_pix2pix joined
    G = next(m for arch, m in built if arch == "resnet_generator")
    with open(f"{hashes}/rank{info.rank}.json", "w") as f:
        json.dump({"hash": state_hash(G), "summary": summary.to_dict(), "world_size": info.world_size}, f)
    D.cleanup(info)
"""


def test_pix2pix_under_torchrun_two_processes(tmp_path):
    gen = torch.Generator().manual_seed(3)
    for i in range(4):
        coarse = torch.rand(1, 3, 4, 4, generator=gen) * 2 - 1
        a = nn.functional.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False)[0]
        save_image(a, tmp_path / "A" / f"{i:02d}.png")
        save_image(-a, tmp_path / "B" / f"{i:02d}.png")
    out = tmp_path / "run"
    torchrun(tmp_path, PIX2PIX_SCRIPT, tmp_path / "A", tmp_path / "B", out, tmp_path)

    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["hash"] == r1["hash"]  # both ranks end with the same generator
    assert r0["summary"]["best_epoch"] == r1["summary"]["best_epoch"] == 1
    assert r0["summary"]["last_metrics"] == r1["summary"]["last_metrics"]  # losses and validation agreed
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1]  # logged once, by rank 0
    assert {"loss_D", "loss_G", "val_psnr", "val_ssim"} <= rows[0].keys()
    for name in ("best_generator", "last_generator"):
        model = edgegan.load(out / name)
        assert model.config.ngf == 4
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    assert state_hash(edgegan.load(out / "last_generator")) == r0["hash"]  # saved unwrapped, as trained
    assert (out / "checkpoints").is_dir()


@pytest.mark.parametrize("name", ["WORLD_SIZE"])
def test_world_size_one_stays_single_process(monkeypatch, name):
    monkeypatch.setenv(name, "1")
    assert not D.init_distributed("cpu").enabled


DISTILL_SCRIPT = """
    import hashlib, json, sys
    import torch
    from edgegan.compress import distributed as D
    from edgegan.compress.distill import DistillConfig, distill
    from edgegan.data.datasets import PairedDataset
    from edgegan.models import MobileResnetGenerator, ResnetGenerator

    a_dir, b_dir, out, hashes = sys.argv[1:5]
    torch.manual_seed(0)
    teacher = ResnetGenerator(ngf=4, n_blocks=3)
    student = MobileResnetGenerator(channels=(4,) * 8, n_blocks=3)
    data = PairedDataset.from_folders(a_dir, b_dir, load_size=36, crop_size=32)
    cfg = DistillConfig(channels="4_4_4_4_4_4_4_4", epochs=1, decay_epochs=0, load_size=36, crop_size=32,
                        ndf=4, d_layers=1, val_fraction=0.25)
    summary = distill(teacher, data, out, cfg, student=student)
    info = D.init_distributed("cpu")
    flat = torch.cat([t.reshape(-1).float() for _, t in sorted(student.state_dict().items())])
    with open(f"{hashes}/distill{info.rank}.json", "w") as f:
        json.dump({"hash": hashlib.sha256(flat.numpy().tobytes()).hexdigest(), "history": summary["history"]}, f)
    D.cleanup(info)
"""


def test_distill_under_torchrun_two_processes(tmp_path):
    gen = torch.Generator().manual_seed(4)
    for i in range(4):
        a = torch.rand(3, 32, 32, generator=gen) * 2 - 1
        save_image(a, tmp_path / "A" / f"{i:02d}.png")
        save_image(-a, tmp_path / "B" / f"{i:02d}.png")
    out = tmp_path / "run"
    torchrun(tmp_path, DISTILL_SCRIPT, tmp_path / "A", tmp_path / "B", out, tmp_path)
    r0, r1 = (json.loads((tmp_path / f"distill{r}.json").read_text()) for r in (0, 1))
    assert r0["hash"] == r1["hash"]
    assert r0["history"] == r1["history"] and len(r0["history"]) == 1
    assert json.loads((out / "summary.json").read_text())["best_epoch"] == 1
    for name in ("best_student", "last_student"):
        assert edgegan.load(out / name)(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)
