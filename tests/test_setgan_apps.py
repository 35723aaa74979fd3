"""SinGAN/SETGAN editing applications on a tiny trained pyramid."""

from __future__ import annotations

import math

import pytest
import torch

from edgegan.data.images import save_image
from edgegan.errors import ConfigError
from edgegan.setgan.apps import (
    BLUR_SIGMA,
    HARMONIZE_DILATE,
    SuperResolution,
    blend_mask,
    check_mask,
    edit,
    harmonize,
    kmeans_palette,
    load_mask,
    paint_to_image,
    quantize_to_palette,
    sr_schedule,
    super_resolve,
    validate_inject_scale,
)
from edgegan.setgan.config import SETGANConfig
from edgegan.setgan.pyramid import SETGANPyramid, resize
from edgegan.setgan.train import prepare_run, train_serial


def _structured_image(h: int = 40, w: int = 32) -> torch.Tensor:
    """Smooth gradients plus stripes: something with structure at every scale, in [-1, 1]."""
    y = torch.linspace(-1, 1, h)[:, None].expand(h, w)
    x = torch.linspace(-1, 1, w)[None, :].expand(h, w)
    img = torch.stack([y, x, torch.sin(6 * (x + y))]) * 0.9
    return img[None].clamp(-1, 1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[SETGANPyramid, torch.Tensor]:
    torch.manual_seed(0)
    cfg = SETGANConfig(max_size=40, min_size=20, iters=5, nfc=8, max_nfc=8, ckpt_every=100, mode="serial")
    image = _structured_image()
    run = prepare_run(image, tmp_path_factory.mktemp("setgan_apps") / "run", cfg)
    train_serial(run, cfg)
    return run.load_pyramid(), image


@pytest.fixture
def pyr(trained: tuple[SETGANPyramid, torch.Tensor]) -> SETGANPyramid:
    return trained[0]


def _center_mask(h: int, w: int, box: int) -> torch.Tensor:
    m = torch.zeros(1, 1, h, w)
    top, left = (h - box) // 2, (w - box) // 2
    m[..., top : top + box, left : left + box] = 1.0
    return m


def test_pyramid_shape(pyr: SETGANPyramid) -> None:
    assert pyr.n_scales == 4
    assert pyr.sizes[-1] == (40, 32)


@pytest.mark.parametrize("app", [harmonize, edit])
def test_harmonize_and_edit_blend_only_near_the_mask(trained: tuple[SETGANPyramid, torch.Tensor], app: object) -> None:
    pyr, real = trained
    # A composite at another size (twice the training size): it is resized first.
    composite = resize(real, (80, 64)).clone()
    mask = _center_mask(80, 64, 16)
    composite[..., 32:48, 24:40] = torch.tensor([0.8, -0.8, 0.2]).view(1, 3, 1, 1)
    out = app(pyr, composite, mask, 2, generator=torch.Generator().manual_seed(1))  # type: ignore[operator]
    assert out.shape == (1, 3, 40, 32)
    assert torch.isfinite(out).all()
    expected = resize(composite, (40, 32))
    # Blend weights at the training size (the 16 px box shrinks to 8 px, antialiasing spreads it
    # by 1 px on each side); far from the object they are exactly zero.
    weights = blend_mask(_center_mask(40, 32, 10), HARMONIZE_DILATE, BLUR_SIGMA)
    if app is harmonize:
        outside = (weights == 0).expand_as(out)
        assert outside.sum() > 0.5 * out.numel()
        assert torch.allclose(out[outside], expected[outside], atol=1e-5)
    # Corners are far outside any dilation either entry point uses.
    for ys, xs in [(slice(0, 4), slice(0, 4)), (slice(-4, None), slice(-4, None))]:
        assert torch.allclose(out[..., ys, xs], expected[..., ys, xs], atol=1e-5)
    # Inside the object the generator's output is used.
    assert not torch.allclose(out[..., 18:22, 14:18], expected[..., 18:22, 14:18], atol=1e-3)


def test_harmonize_is_reproducible_with_a_generator(pyr: SETGANPyramid) -> None:
    img = torch.rand(1, 3, 40, 32) * 2 - 1
    mask = _center_mask(40, 32, 10)
    a = harmonize(pyr, img, mask, 1, generator=torch.Generator().manual_seed(3))
    b = harmonize(pyr, img, mask, 1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_blend_mask_dilates_and_blurs() -> None:
    m = _center_mask(100, 100, 10)
    dilated = blend_mask(m, 0.03, 0.0)  # radius 3 px
    assert dilated.sum() == 16 * 16
    soft = blend_mask(m, 0.03, 0.02)  # sigma 2 px: soft edge, values in [0, 1]
    assert soft.min() >= 0 and soft.max() <= 1
    assert ((soft > 0) & (soft < 1)).any()
    assert soft[0, 0, 0, 0] == 0 and soft[0, 0, 50, 50] == pytest.approx(1.0)
    assert torch.equal(blend_mask(m, 0.0, 0.0), m)
    with pytest.raises(ConfigError):
        blend_mask(m, -1.0, 0.0)


def test_paint_quantization_and_paint_to_image(trained: tuple[SETGANPyramid, torch.Tensor]) -> None:
    pyr, real = trained
    palette = kmeans_palette(real, 5)
    assert palette.shape == (5, 3)
    assert torch.equal(palette, kmeans_palette(real, 5))  # deterministic
    paint = torch.rand(1, 3, 20, 16) * 2 - 1
    quantized = quantize_to_palette(paint, palette)
    colours = torch.unique(quantized.permute(0, 2, 3, 1).reshape(-1, 3), dim=0)
    assert len(colours) <= 5
    # Fewer distinct colours than K: the palette is those colours.
    two = torch.zeros(1, 3, 4, 4)
    two[..., :2] = 0.5
    assert kmeans_palette(two, 5).shape == (2, 3)

    out = paint_to_image(pyr, paint, 1, palette_from=real, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 40, 32) and torch.isfinite(out).all()
    plain = paint_to_image(pyr, paint, 1, quantize=False, palette_from=real, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(out, plain)


def test_sr_schedule() -> None:
    singan = 2 ** (-1 / 3)  # SinGAN's SR pyramid: ratio 2 ** (1/3) ~ 1.26
    k, r = sr_schedule(4, singan)
    assert k == 6 and r == pytest.approx(4 ** (1 / 6))
    k, r = sr_schedule(2, singan)
    assert k == 3 and r == pytest.approx(2 ** (1 / 3))
    assert sr_schedule(1.01, singan)[0] == 1
    with pytest.raises(ConfigError, match="factor must be > 1"):
        sr_schedule(1.0, singan)


@pytest.mark.parametrize("factor", [2, 4])
def test_super_resolve(trained: tuple[SETGANPyramid, torch.Tensor], factor: int) -> None:
    pyr, real = trained
    res = super_resolve(pyr, real, factor, generator=torch.Generator().manual_seed(0))
    assert isinstance(res, SuperResolution)
    assert res.image.shape == (1, 3, 40 * factor, 32 * factor)
    assert torch.isfinite(res.image).all()
    expected_k = max(1, round(math.log(factor) / math.log(1 / pyr.factor)))
    assert res.steps == expected_k == len(res.sizes)
    assert res.ratio == pytest.approx(factor ** (1 / expected_k))
    assert res.sizes[-1] == (40 * factor, 32 * factor)
    # Without noise the result is deterministic.
    a = super_resolve(pyr, real, factor, noise=False).image
    assert torch.equal(a, super_resolve(pyr, real, factor, noise=False).image)


def test_super_resolve_odd_factor_size(pyr: SETGANPyramid) -> None:
    img = torch.rand(1, 3, 21, 17) * 2 - 1
    res = super_resolve(pyr, img, 1.5, noise=False)
    assert res.image.shape[-2:] == (round(21 * 1.5), round(17 * 1.5))


def test_bad_inject_scale_messages(pyr: SETGANPyramid) -> None:
    n = pyr.n_scales
    validate_inject_scale(pyr, 1)
    validate_inject_scale(pyr, n - 1)
    for bad in (0, n):
        with pytest.raises(ConfigError, match=f"inject scale must be between 1 and {n - 1}.*got {bad}") as exc:
            validate_inject_scale(pyr, bad)
        assert "\n" not in str(exc.value)
    img = torch.zeros(1, 3, 40, 32)
    with pytest.raises(ConfigError, match="inject scale"):
        harmonize(pyr, img, torch.zeros(1, 1, 40, 32), 0)
    with pytest.raises(ConfigError, match="inject scale"):
        paint_to_image(pyr, img, n)


def test_mask_size_mismatch(pyr: SETGANPyramid) -> None:
    img = torch.zeros(1, 3, 40, 32)
    with pytest.raises(ConfigError, match="^mask is 30x20 but the image is 32x40$"):
        check_mask(torch.zeros(1, 1, 20, 30), img)
    check_mask(torch.zeros(1, 1, 40, 32), img)
    with pytest.raises(ConfigError, match="mask is 30x20 but the image is 32x40"):
        edit(pyr, img, torch.zeros(1, 1, 20, 30), 1)


def test_load_mask(tmp_path) -> None:
    m = torch.full((1, 3, 12, 10), -1.0)
    m[..., 4:8, 3:6] = 1.0
    path = save_image(m, tmp_path / "mask.png")
    mask = load_mask(path)
    assert mask.shape == (1, 1, 12, 10)
    assert mask.min() == 0 and mask.max() == 1
    assert mask.sum() == 4 * 3
    check_mask(mask, torch.zeros(1, 3, 12, 10))


def test_shipped_demo_images_load_with_their_licence() -> None:
    from edgegan.setgan import demo

    balloons = demo.demo_image(demo.SAMPLE_IMAGE)
    assert balloons.shape == (1, 3, 186, 248) and -1.0 <= balloons.min() < balloons.max() <= 1.0
    naive = demo.demo_image(demo.HARMONIZE_NAIVE)
    mask = load_mask(demo.asset(demo.HARMONIZE_MASK))
    check_mask(mask, naive)  # the composite and its mask line up
    assert 0.02 < (mask > 0.5).float().mean() < 0.5  # a pasted object, not an empty or full mask
    assert "MIT License" in demo.asset("LICENSE").read_text()
