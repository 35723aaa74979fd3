"""LoRA: merge/unmerge equivalence per layer type, rank growth, adapter save/load, trainable set, export."""

import json

import pytest
import torch
from torch import nn

from edgegan.errors import CheckpointError, ConfigError
from edgegan.nn.lora import (
    LoRALayer,
    add_lora,
    count_trainable,
    load_adapter,
    lora_layers,
    lora_rank_cap,
    merge_lora,
    save_adapter,
    set_lora_trainable,
)

LAYERS = {
    "conv": (lambda: nn.Conv2d(6, 10, 3, stride=2, padding=1), lambda: torch.randn(2, 6, 17, 15)),
    "conv1x1": (lambda: nn.Conv2d(8, 4, 1), lambda: torch.randn(2, 8, 9, 9)),
    "convT": (
        lambda: nn.ConvTranspose2d(6, 5, 3, stride=2, padding=1, output_padding=1),
        lambda: torch.randn(2, 6, 8, 7),
    ),
    "linear": (lambda: nn.Linear(12, 7), lambda: torch.randn(3, 5, 12)),
}


def _randomise(layer: LoRALayer) -> None:
    with torch.no_grad():
        layer.lora_B.normal_(0, 0.5)  # B starts at zero; make the update visible


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("kind", list(LAYERS))
def test_merge_and_unmerge_are_exact(kind, bias):
    torch.manual_seed(0)
    make, data = LAYERS[kind]
    base = make()
    x = data()
    plain = base(x).detach()
    bias_before = base.bias.detach().clone()
    layer = LoRALayer(base, rank=3, alpha=6.0, bias=bias)
    assert torch.allclose(layer(x), plain, atol=1e-6)  # B = 0 and a zero shift: no change yet
    _randomise(layer)
    if bias:
        with torch.no_grad():
            layer.lora_bias.normal_(0, 1.0)
        # the shift adds its value per output channel, unscaled
        shift = (layer(x) - base(x) - layer.scale * layer._update(x)).detach()
        per_channel = shift.movedim(1 if kind != "linear" else -1, -1).reshape(-1, layer.lora_bias.numel())
        assert torch.allclose(per_channel, layer.lora_bias.detach().expand_as(per_channel), atol=1e-5)
    else:
        assert layer.lora_bias is None
    adapted = layer(x).detach()
    assert (adapted - plain).abs().max() > 1e-3
    assert torch.equal(base.bias, bias_before)  # the frozen base is not trained in place
    layer.merge()
    assert (layer(x) - adapted).abs().max() <= 1e-5
    layer.unmerge()
    assert (layer(x) - adapted).abs().max() <= 1e-5
    assert (layer.base(x) - plain).abs().max() <= 1e-5
    assert torch.allclose(base.bias, bias_before, atol=1e-6)


@pytest.mark.parametrize("kind", list(LAYERS))
def test_growing_the_rank_keeps_the_output(kind):
    torch.manual_seed(1)
    make, data = LAYERS[kind]
    layer = LoRALayer(make(), rank=2)
    _randomise(layer)
    x = data()
    before = layer(x).detach()
    layer.grow(4)
    assert layer.rank == 4 and layer.lora_A.shape[0] == 4
    assert (layer(x) - before).abs().max() <= 1e-5
    with pytest.raises(ConfigError):
        layer.grow(2)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.mid = nn.Conv2d(8, 8, 3, padding=1)
        self.up = nn.ConvTranspose2d(8, 3, 3, stride=2, padding=1, output_padding=1)
        self.proj = nn.Linear(3, 3)

    def forward(self, x):
        h = self.up(torch.relu(self.mid(torch.relu(self.down(x)))))
        return self.proj(h.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


@pytest.mark.parametrize("bias", [False, True])
def test_only_adapter_weights_get_gradients_and_adapters_round_trip(tmp_path, bias):
    torch.manual_seed(2)
    model = Tiny()
    add_lora(model, {"down": 2, "up": 4, "proj": 1}, bias=bias)
    set_lora_trainable(model)
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    shifts = (8 + 3 + 3) if bias else 0  # one per output channel of down, up and proj
    assert count_trainable(model) == 2 * 3 * 9 + 8 * 2 + 4 * 8 + 4 * 3 * 9 + 3 + 3 + shifts
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x = torch.randn(2, 3, 16, 16)
    for _ in range(3):
        loss = (model(x) - 1).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
        opt.step()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    if bias:
        assert model.up.lora_bias.abs().min() > 0  # the shifts trained
    out = model(x).detach()

    folder = save_adapter(model, tmp_path / "adapter", extra={"concept": "sketch"})
    assert (folder / "adapter.safetensors").stat().st_size < 50_000
    fresh = Tiny()
    fresh.load_state_dict({k.replace(".base", ""): v for k, v in model.state_dict().items() if "lora_" not in k})
    config = load_adapter(fresh, folder)
    assert config["concept"] == "sketch" and set(lora_layers(fresh)) == {"down", "up", "proj"}
    assert all((layer.lora_bias is not None) == bias for layer in lora_layers(fresh).values())
    assert torch.allclose(fresh(x), out, atol=1e-6)

    merged = merge_lora(fresh)
    assert not lora_layers(merged) and isinstance(merged.up, nn.ConvTranspose2d)
    assert (merged(x) - out).abs().max() <= 1e-5
    with pytest.raises(CheckpointError):
        load_adapter(Tiny(), tmp_path)
    with pytest.raises(ConfigError, match="no layer named"):
        add_lora(Tiny(), {"nope": 2})


def test_rank_cap_follows_the_weight_shape():
    assert lora_rank_cap(nn.Linear(12, 7)) == 7
    assert lora_rank_cap(nn.Conv2d(3, 64, 7)) == 64
    assert lora_rank_cap(nn.Conv2d(2, 64, 1)) == 2
    assert lora_rank_cap(nn.ConvTranspose2d(256, 128, 3)) == 256


def test_merged_model_exports_to_onnx(tmp_path):
    import onnxruntime as ort

    torch.manual_seed(3)
    model = Tiny()
    for layer in add_lora(model, {"down": 2, "up": 2}).values():
        _randomise(layer)
    x = torch.randn(1, 3, 16, 16)
    want = model(x).detach()
    merged = merge_lora(model).eval()
    torch.onnx.export(merged, (x,), str(tmp_path / "m.onnx"), input_names=["x"], dynamo=False)
    got = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"x": x.numpy()})[0]
    assert abs(got - want.numpy()).max() < 1e-4


def test_adapters_saved_before_bias_shifts_still_load(tmp_path):
    torch.manual_seed(6)
    model = Tiny()
    for layer in add_lora(model, {"down": 2}).values():
        _randomise(layer)
    x = torch.randn(1, 3, 16, 16)
    want = model(x).detach()
    folder = save_adapter(model, tmp_path / "old")
    config = json.loads((folder / "adapter.json").read_text())
    del config["layers"]["down"]["bias"]  # the format before bias shifts
    (folder / "adapter.json").write_text(json.dumps(config))
    again = Tiny()
    again.load_state_dict({k.replace(".base", ""): v for k, v in model.state_dict().items() if "lora_" not in k})
    load_adapter(again, folder)
    assert again.down.lora_bias is None and torch.allclose(again(x), want, atol=1e-6)
