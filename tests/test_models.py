import json

import pytest
import torch

import edgegan
from edgegan.errors import CheckpointError, ConfigError
from edgegan.models import (
    MobileResnetGenerator,
    MultiScaleDiscriminator,
    PatchDiscriminator,
    ResnetGenerator,
    UnetGenerator,
)

TINY = {
    "resnet_generator": {"ngf": 16, "n_blocks": 3},
    "mobile_resnet_generator": {"channels": "16_16_16_8_8_8_16_16", "n_blocks": 3},
    "unet_generator": {"ngf": 8, "num_downs": 5},
    "patch_discriminator": {"ndf": 16, "n_layers": 2},
    "multiscale_discriminator": {"ndf": 8, "n_layers": 2, "num_d": 2},
}


def _outputs(y):
    return y if isinstance(y, list) else [y]


@pytest.mark.parametrize("arch", sorted(TINY))
def test_tiny_models_forward_shapes_and_finite(arch):
    model = edgegan.build(arch, **TINY[arch]).eval()
    x = torch.randn(2, 3, 32, 32)
    y = model(x)
    for out in _outputs(y):
        assert torch.isfinite(out).all()
    if arch.endswith("generator"):
        assert y.shape == (2, 3, 32, 32)
        assert y.abs().max() <= 1.0  # tanh output
    elif arch == "patch_discriminator":
        assert y.shape == (2, 1, 6, 6)  # 32 -> 16 -> 8 -> 7 -> 6 patches
    else:
        assert [o.shape for o in y] == [(2, 1, 6, 6), (2, 1, 2, 2)]


@pytest.mark.parametrize("arch", sorted(TINY))
def test_features_are_named_and_shaped(arch):
    model = edgegan.build(arch, **TINY[arch]).eval()
    x = torch.randn(1, 3, 32, 32)
    plain = model(x)
    y, feats = model(x, return_features=True)
    assert list(feats) == list(model.feature_names)
    for a, b in zip(_outputs(plain), _outputs(y), strict=True):
        assert torch.equal(a, b)
    if hasattr(model, "distill_feature_names"):
        assert set(model.distill_feature_names()) <= set(feats)


def test_resnet_feature_shapes_and_distill_points():
    g = ResnetGenerator(ngf=16, n_blocks=9)
    _, feats = g(torch.randn(1, 3, 32, 32), return_features=True)
    assert g.distill_feature_names() == ["down2", "block3", "block6", "block9"]
    assert feats["down2"].shape == (1, 64, 8, 8)
    assert feats["up2"].shape == (1, 16, 32, 32)


def test_mobile_channel_config_sets_widths():
    g = MobileResnetGenerator(channels=(16, 16, 32, 16, 32, 32, 16, 16))
    assert g.stem[1].out_channels == 16
    assert g.down[0][0].out_channels == 32 and g.down[1][0].out_channels == 128
    assert [b.conv_block[1].pointwise.out_channels for b in g.blocks] == [64] * 3 + [128] * 6
    assert g.up[0][0].out_channels == 32 and g.up[1][0].out_channels == 16
    assert g.config.channels_str == "16_16_32_16_32_32_16_16"
    # A plain ngf sets all eight.
    assert MobileResnetGenerator(ngf=24).config.channels == (24,) * 8


def test_mobile_block_uses_separable_convs():
    g = MobileResnetGenerator(ngf=8, n_blocks=3)
    convs = [m for m in g.blocks[0].modules() if isinstance(m, torch.nn.Conv2d)]
    depthwise = [c for c in convs if c.groups > 1]
    assert len(depthwise) == 2 and all(c.groups == c.in_channels for c in depthwise)
    assert all(c.kernel_size == (1, 1) for c in convs if c.groups == 1)


def test_unet_256_matches_pix2pix_size():
    g = UnetGenerator()  # unet_256
    assert round(sum(p.numel() for p in g.parameters()) / 1e6, 3) == 54.414


def test_discriminator_defaults_are_70x70_patchgan():
    d = PatchDiscriminator(input_nc=6)
    assert d(torch.randn(1, 6, 256, 256)).shape == (1, 1, 30, 30)
    ms = MultiScaleDiscriminator(num_d=3, ndf=8)
    assert [o.shape[-1] for o in ms(torch.randn(1, 3, 128, 128))] == [14, 6, 2]


@pytest.mark.parametrize("arch", sorted(TINY))
def test_save_load_round_trip(arch, tmp_path):
    model = edgegan.build(arch, **TINY[arch])
    if arch == "unet_generator":
        model.train()(torch.randn(2, 3, 32, 32))  # move BatchNorm running stats off their init
    model.eval()
    folder = model.save(tmp_path / "m")
    meta = json.loads((folder / "config.json").read_text())
    assert meta["arch"] == arch
    loaded = edgegan.load(folder)
    assert type(loaded) is type(model) and loaded.config == model.config
    x = torch.randn(1, 3, 32, 32)
    for a, b in zip(_outputs(model(x)), _outputs(loaded(x)), strict=True):
        assert torch.equal(a, b)


def test_save_replaces_existing_folder_without_leftovers(tmp_path):
    a = ResnetGenerator(ngf=4, n_blocks=1)
    a.save(tmp_path / "m")
    b = ResnetGenerator(ngf=8, n_blocks=2)
    b.save(tmp_path / "m")
    assert edgegan.load(tmp_path / "m").config.ngf == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        edgegan.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json"):
        edgegan.load(tmp_path / "empty")
    folder = ResnetGenerator(ngf=4, n_blocks=1).save(tmp_path / "m")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        edgegan.load(folder)
    folder = ResnetGenerator(ngf=4, n_blocks=1).save(tmp_path / "m2")
    (folder / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read"):
        edgegan.load(folder)
    # Weights of another width than config.json says.
    ResnetGenerator(ngf=8, n_blocks=1).save(tmp_path / "m3")
    meta = json.loads((tmp_path / "m3" / "config.json").read_text())
    meta["config"]["ngf"] = 4
    (tmp_path / "m3" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not match"):
        edgegan.load(tmp_path / "m3")


def test_config_options_are_typed_and_validated():
    cfg = ResnetGenerator.config_cls.from_options({"ngf": "32", "dropout": "0.5", "norm": "batch"})
    assert cfg.ngf == 32 and cfg.dropout == 0.5 and cfg.norm == "batch"
    with pytest.raises(ConfigError, match="integer"):
        ResnetGenerator.config_cls.from_options({"ngf": "3.5"})
    with pytest.raises(ConfigError, match="not one of"):
        ResnetGenerator.config_cls.from_options({"norm": "group"})
    with pytest.raises(ConfigError, match="unknown option"):
        ResnetGenerator.config_cls.from_options({"width": "3"})
    with pytest.raises(ConfigError, match="8 entries"):
        MobileResnetGenerator(channels="16_16")
    with pytest.raises(ConfigError, match="unknown architecture"):
        edgegan.build("resnet_9000")
