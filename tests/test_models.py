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


# ---------------------------------------------------------------- input paths (issue 13, point 2)

INPUT_PATH_ARCHS = {
    "resnet_generator": {"ngf": 8, "n_blocks": 2},
    "mobile_resnet_generator": {"channels": "8_8_8_4_4_4_8_8", "n_blocks": 3},
}


@pytest.mark.parametrize("arch", sorted(INPUT_PATH_ARCHS))
@pytest.mark.parametrize("skip", [False, True])
def test_residual_generator_starts_as_identity_and_clamps_only_in_eval(arch, skip):
    g = edgegan.build(arch, **INPUT_PATH_ARCHS[arch], residual=True, input_skip=skip)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(g.train()(x), x) and torch.equal(g.eval()(x), x)  # zero head: output = input
    assert not any(isinstance(m, torch.nn.Tanh) for m in g.modules())
    conv = g.head[-1]
    with torch.no_grad():
        conv.bias.fill_(0.5)  # push every pixel up by 0.5
    y = g.train()(x)
    assert y.max() > 1.0  # training: unclamped ...
    y.sum().backward()
    assert torch.equal(conv.bias.grad, torch.full_like(conv.bias, 32 * 32 * 2))  # ... so every pixel has a gradient
    out = g.eval()(x)
    assert out.max() <= 1.0 and torch.allclose(out, (x + 0.5).clamp(-1, 1))  # evaluation and export: clamped
    y, feats = g(x, return_features=True)
    assert torch.equal(y, out) and list(feats) == list(g.feature_names)


SUPERNET_PATH_ARCHS = {
    "mobile_resnet_supernet": {"ngf": 8, "n_blocks": 3},
    "depth_width_generator": {"widths": [8, 8, 8, 8, 4], "hidden": [8, 8, 8, 8, 8], "depths": [1, 0, 2, 0, 1]},
    "depth_width_supernet": {"ngf": 8, "n_blocks": 2, "max_inserted": 1},
}


@pytest.mark.parametrize("arch", sorted(SUPERNET_PATH_ARCHS))
def test_residual_supernets_and_depth_width_start_as_identity(arch):
    g = edgegan.build(arch, **SUPERNET_PATH_ARCHS[arch], residual=True, input_skip=True)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.equal(g.train()(x), x) and torch.equal(g.eval()(x), x)
    with torch.no_grad():
        g.head[-1].bias.fill_(0.5)
    assert torch.allclose(g.eval()(x), (x + 0.5).clamp(-1, 1))


@pytest.mark.parametrize("arch", sorted(INPUT_PATH_ARCHS) + sorted(SUPERNET_PATH_ARCHS))
def test_input_paths_keep_parameter_names(arch):
    options = INPUT_PATH_ARCHS.get(arch) or SUPERNET_PATH_ARCHS[arch]
    names = set(edgegan.build(arch, **options).state_dict())
    for paths in ({"residual": True}, {"input_skip": True}, {"residual": True, "input_skip": True}):
        assert set(edgegan.build(arch, **options, **paths).state_dict()) == names


def test_input_skip_lets_the_global_colour_through():
    """The papers' layout normalises right after the stem: its output barely depends on a global gain and
    offset of the input (issue 13). With the input skip the head sees the stem's un-normalised output."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    shifted = 0.5 * x + torch.tensor([0.3, -0.2, 0.1]).view(1, 3, 1, 1)
    plain = ResnetGenerator(ngf=8, n_blocks=2).eval()
    assert (plain(x) - plain(shifted)).abs().max() < 1e-3
    skip = ResnetGenerator(ngf=8, n_blocks=2, input_skip=True).eval()
    skip.load_state_dict(plain.state_dict())  # the same weights, one more path
    assert (skip(x) - skip(shifted)).abs().max() > 1e-2


def test_input_path_options_are_checked_and_old_configs_load(tmp_path):
    with pytest.raises(ConfigError, match="input_nc == output_nc"):
        ResnetGenerator(input_nc=1, output_nc=3, residual=True)
    with pytest.raises(ConfigError, match="input_nc == output_nc"):
        MobileResnetGenerator(input_nc=1, output_nc=3, ngf=8, residual=True)
    for channels in ("8_8_8_4_4_4_8_16", "16_8_8_4_4_4_8_8"):  # the skip feeds min(c0, c7) channels
        g = MobileResnetGenerator(channels=channels, n_blocks=3, input_skip=True)
        assert g(torch.zeros(1, 3, 16, 16)).shape == (1, 3, 16, 16)
    assert ResnetGenerator(input_nc=1, output_nc=3, ngf=4, n_blocks=1)(torch.zeros(1, 1, 8, 8)).shape[1] == 3
    # A model folder saved before the options existed loads with the papers' layout.
    for arch, options in INPUT_PATH_ARCHS.items():
        folder = edgegan.build(arch, **options).save(tmp_path / arch)
        meta = json.loads((folder / "config.json").read_text())
        for key in ("residual", "input_skip"):
            del meta["config"][key]
        (folder / "config.json").write_text(json.dumps(meta))
        loaded = edgegan.load(folder)
        assert loaded.config.residual is False and loaded.config.input_skip is False


# ---------------------------------------------------------------- initialisation (issue 13, point 6)


def test_init_gan_weights_is_the_references_normal_init():
    from edgegan.nn.layers import init_gan_weights

    torch.manual_seed(0)
    g = init_gan_weights(UnetGenerator(ngf=32, num_downs=5))  # convs, transposed convs, BatchNorm
    convs = [m for m in g.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert abs(float(weights.mean())) < 1e-3 and float(weights.std()) == pytest.approx(0.02, rel=0.02)
    assert all(m.bias is None or not m.bias.any() for m in convs)
    bn = [m for m in g.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    bn_w = torch.cat([m.weight for m in bn])
    assert float(bn_w.mean()) == pytest.approx(1.0, abs=0.01) and float(bn_w.std()) == pytest.approx(0.02, rel=0.1)
    assert not torch.cat([m.bias for m in bn]).any()
    # A residual generator's zero head survives, so it still starts as the identity.
    r = init_gan_weights(ResnetGenerator(ngf=8, n_blocks=2, residual=True, input_skip=True))
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    assert float(r.stem[1].weight.std()) == pytest.approx(0.02, rel=0.1) and torch.equal(r(x), x)


# ---------------------------------------------------------------- PatchGAN size (issue 13, point 5)


@pytest.mark.parametrize("n_layers", [1, 2, 3, 4])
def test_patch_receptive_field_matches_the_network(n_layers):
    from edgegan.models.discriminators import patch_receptive_field

    d = PatchDiscriminator(n_layers=n_layers, ndf=4, norm="none")  # instance norm would see the whole image
    x = torch.randn(1, 3, 200, 200, requires_grad=True)
    y = d(x)
    y[0, 0, y.shape[-2] // 2, y.shape[-1] // 2].backward()
    seen = x.grad.abs().sum((0, 1)) > 0
    rows, cols = seen.any(1).nonzero(), seen.any(0).nonzero()
    side = patch_receptive_field(n_layers)
    assert int(rows.max() - rows.min() + 1) == int(cols.max() - cols.min() + 1) == side
    assert side == {1: 16, 2: 34, 3: 70, 4: 142}[n_layers]


def test_patch_layers_for_crop_keeps_the_reference_at_128_px_and_up():
    from edgegan.models.discriminators import patch_layers_for

    assert [patch_layers_for(c) for c in (16, 32, 48, 60, 64, 96, 127, 128, 256, 512)] == [1, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    with pytest.raises(ConfigError, match="crop_size"):
        patch_layers_for(0)
