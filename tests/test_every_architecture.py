"""Every registered architecture, tested the day it is registered: tiny build, save/load equality, ONNX parity,
MAC counts that scale with the pixel count, and a clear error for a bad option.

A new architecture must get a tiny config in ``TINY`` (the first test fails until it does), as timm's tests
are parametrised over ``list_models()``.
"""

import pytest
import torch

import edgegan
from edgegan.errors import ConfigError, EdgeganError
from edgegan.export.onnx import export_onnx, run_onnx
from edgegan.profile.macs import profile_macs

TINY = {
    "resnet_generator": {"ngf": 8, "n_blocks": 2},
    "mobile_resnet_generator": {"channels": "8_8_8_8_8_8_8_8", "n_blocks": 3},
    "mobile_resnet_supernet": {"ngf": 8, "n_blocks": 3},
    "unet_generator": {"ngf": 8, "num_downs": 5},
    "depth_width_supernet": {"ngf": 8, "n_blocks": 3, "max_inserted": 1},
    "e2gan_generator": {"ngf": 8, "text_dim": 12, "heads": 2},
    "singan_generator": {"channels": 8, "num_layers": 3},
    "patch_discriminator": {"ndf": 8, "n_layers": 2},
    "multiscale_discriminator": {"ndf": 8, "n_layers": 2, "num_d": 2},
    "singan_discriminator": {"channels": 8, "num_layers": 3},
}
# The depth-width generator is what the supernet extracts: take the config of its largest sub-network.
_dw = edgegan.build("depth_width_supernet", **TINY["depth_width_supernet"])
TINY["depth_width_generator"] = _dw.extract(_dw.largest_config()).config.to_dict()
ARCHS = sorted(edgegan.architectures())
SIZE = 32


def _build(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = edgegan.build(arch, **TINY[arch]).eval()
    with torch.no_grad():  # zero-initialised heads (residual outputs, FiLM) would make outputs input-independent
        for p in model.parameters():
            if p.dim() > 0 and not p.abs().sum():
                p.normal_(0, 0.05)
    return model


def _inputs(model: torch.nn.Module, size: int = SIZE) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(1)
    x = model.example_input(size)
    return x if isinstance(x, tuple) else (x,)


def _flat(y) -> list[torch.Tensor]:
    return list(y) if isinstance(y, list | tuple) else [y]


def test_every_registered_architecture_has_a_tiny_config():
    assert set(ARCHS) == set(TINY), f"add a tiny config for {sorted(set(ARCHS) - set(TINY))}"


@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_rebuilds_the_same_function(arch, tmp_path):
    model = _build(arch)
    xs = _inputs(model)
    with torch.no_grad():
        before = _flat(model(*xs))
    assert all(torch.isfinite(y).all() for y in before)
    loaded = edgegan.load(model.save(tmp_path / arch)).eval()
    assert type(loaded) is type(model) and loaded.config == model.config
    with torch.no_grad():
        after = _flat(loaded(*xs))
    for a, b in zip(before, after, strict=True):
        assert torch.equal(a, b)
    if arch.endswith(("generator", "supernet")) and arch != "singan_generator":
        other = tuple(x.flip(-1) for x in xs[:1]) + xs[1:]
        with torch.no_grad():
            assert not torch.allclose(_flat(model(*other))[0], before[0]), "output ignores its input"


@pytest.mark.parametrize("arch", ARCHS)
def test_onnx_export_matches_pytorch(arch, tmp_path):
    model = _build(arch)
    xs = _inputs(model)
    if arch.endswith("supernet"):  # deployed as an extracted sub-network (supernet tests check it is the same)
        with pytest.raises(EdgeganError, match="is a supernet"):
            export_onnx(model, tmp_path / f"{arch}.onnx", example=xs[0])
        return
    result = export_onnx(model, tmp_path / f"{arch}.onnx", example=xs if len(xs) > 1 else xs[0])
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-4
    # Dynamic height and width: a second size runs and matches too.
    xs2 = _inputs(model, 64)
    with torch.no_grad():
        want = _flat(model(*xs2))
    got = run_onnx(tmp_path / f"{arch}.onnx", xs2 if len(xs2) > 1 else xs2[0])
    for w, g in zip(want, got, strict=True):
        assert abs(w.numpy() - g).max() < 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_macs_scale_with_the_pixel_count(arch):
    model = _build(arch)
    small, large = profile_macs(model, _inputs(model, 32)), profile_macs(model, _inputs(model, 64))
    assert small.params == sum(p.numel() for p in model.parameters()) > 0
    assert small.macs > small.params / 10  # convolutions run at every pixel
    # Convolutions cost 4x at twice the side; attention over pixels and the fixed text tokens make it differ.
    ratio = large.macs / small.macs
    assert 3.5 < ratio < 4.6, ratio


@pytest.mark.parametrize("arch", ARCHS)
def test_unknown_option_is_a_clear_error(arch):
    with pytest.raises(ConfigError):
        edgegan.build(arch, **TINY[arch], not_an_option=1)
