import pytest
import torch
from torch import nn

import edgegan
from edgegan.profile import profile_macs, profile_model
from edgegan.profile.latency import onnx_latency, onnx_latency_interleaved, torch_latency
from edgegan.profile.memory import peak_memory

X256 = torch.randn(1, 3, 256, 256)


def test_teacher_matches_published_numbers():
    # pix2pix / CycleGAN ResNet teacher as printed by GAN Compression and UGC.
    r = profile_macs(edgegan.build("resnet_generator"), X256)
    assert r.params == 11_378_179
    assert r.macs_gc / 1e9 == pytest.approx(56.83, rel=1e-3)
    assert r.macs / 1e9 == pytest.approx(49.55, rel=1e-3)


@pytest.mark.parametrize(
    ("options", "macs_gc_g", "params_m"),
    [({"ngf": 64}, 18.37, 1.987), ({"channels": "16_16_32_16_32_32_16_16"}, 2.546, 0.357)],
)
def test_mobile_generator_matches_gan_compression(options, macs_gc_g, params_m):
    r = profile_macs(edgegan.build("mobile_resnet_generator", **options), X256)
    assert r.macs_gc / 1e9 == pytest.approx(macs_gc_g, rel=5e-3)
    assert r.params / 1e6 == pytest.approx(params_m, rel=5e-3)


def test_conventions_on_single_layers():
    x = torch.randn(1, 4, 8, 8)
    conv = nn.Conv2d(4, 6, 3, padding=1, groups=2)
    r = profile_macs(conv, x)
    assert r.macs == r.macs_gc == 6 * 8 * 8 * (4 // 2) * 9
    up = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1)
    r = profile_macs(up, x)
    assert r.macs == 4 * 8 * 8 * 6 * 9  # each input value meets every kernel tap once
    assert r.macs_gc == 6 * 16 * 16 * 4 * 9  # output elements x C_in x k^2
    norm = nn.Sequential(nn.Conv2d(4, 4, 1), nn.InstanceNorm2d(4))
    r = profile_macs(norm, x)
    assert r.macs_gc - r.macs == 4 * 8 * 8
    lin = profile_macs(nn.Linear(10, 5), torch.randn(3, 10))
    assert (lin.macs, lin.macs_gc) == (3 * 5 * 10, 0)


def test_attention_counted_once():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(16, 2, batch_first=True)

        def forward(self, x):
            return self.attn(x, x, x)[0]

    r = profile_macs(Block(), torch.randn(1, 10, 16))
    assert r.macs == 4 * 10 * 16 * 16 + 2 * 10 * 10 * 16
    assert [layer.name for layer in r.layers] == ["attn"]


def test_layer_table_adds_up():
    r = profile_macs(edgegan.build("resnet_generator", ngf=8, n_blocks=2), torch.randn(1, 3, 32, 32))
    assert sum(layer.macs for layer in r.layers) == r.macs
    assert any(layer.kind == "ConvTranspose2d" for layer in r.layers)
    assert sum(layer.params for layer in r.layers) == r.params


def test_latency_and_memory_report_positive_numbers():
    model = edgegan.build("mobile_resnet_generator", ngf=8, n_blocks=3)
    x = torch.randn(1, 3, 32, 32)
    t = torch_latency(model, x, warmup=1, repeats=3)
    assert t.median_ms > 0 and t.repeats == 3 and t.threads >= 1
    out = profile_model(model, 32, latency=True, repeats=2, warmup=1, memory=True)
    assert set(out["latency_ms"]) == {"torch", "onnxruntime"} and min(out["latency_ms"].values()) > 0
    assert out["machine"]["cores"] >= 1
    mem = out["memory_mb"]
    assert mem["weights_mb"] == pytest.approx(sum(p.numel() for p in model.parameters()) * 4 / 2**20)
    assert mem["activation_peak_mb"] >= 0


def test_peak_memory_grows_with_input():
    model = edgegan.build("resnet_generator", ngf=8, n_blocks=1)
    small = peak_memory(model, torch.randn(1, 3, 64, 64))["activation_peak_mb"]
    big = peak_memory(model, torch.randn(1, 3, 512, 512))["activation_peak_mb"]
    assert big > small
    assert big > 8 * 512 * 512 * 4 / 2**20  # at least one full-resolution stem activation


def test_onnx_latency_accepts_numpy(tmp_path):
    from edgegan.export.onnx import export_onnx

    model = edgegan.build("resnet_generator", ngf=4, n_blocks=1)
    export_onnx(model, tmp_path / "m.onnx", size=32)
    t = onnx_latency(tmp_path / "m.onnx", torch.randn(1, 3, 32, 32).numpy(), warmup=0, repeats=2)
    assert t.backend == "onnxruntime" and t.median_ms > 0


def test_interleaved_onnx_latency_times_every_model_round_robin(tmp_path):
    from edgegan.export.onnx import export_onnx

    for name, ngf in (("small", 4), ("big", 16)):
        export_onnx(edgegan.build("resnet_generator", ngf=ngf, n_blocks=1), tmp_path / f"{name}.onnx", size=32)
    paths = {n: tmp_path / f"{n}.onnx" for n in ("small", "big")}
    t = onnx_latency_interleaved(paths, torch.randn(1, 3, 32, 32), warmup=1, rounds=3, repeats=2, threads=1)
    assert set(t) == {"small", "big"} and all(v.repeats == 6 and v.median_ms > 0 for v in t.values())
