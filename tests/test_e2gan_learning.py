"""E2GAN learning tests: the generator sees its input's colours, up-samples without a grid, and the recipe's
loop learns a colour grade, two concepts by their prompts, and a new concept with LoRA, in seconds."""

import pytest
import torch
import torch.nn.functional as F

from edgegan.e2gan.text import TinyTextEncoder
from edgegan.e2gan.train import (
    E2GANTrainConfig,
    PairSet,
    build_discriminator,
    crucial_layer_names,
    evaluate,
    train_loop,
)
from edgegan.metrics.reference import psnr
from edgegan.models import E2GANGenerator
from edgegan.nn.lora import add_lora, set_lora_trainable

LEGACY = {"upsample": "transpose", "residual": False, "film": False, "input_skip": False, "detail": 0}
# Fixed per-pixel colour maps on [0, 1] RGB (rows: output channel): a cold grade, a warm one, a sepia-like one.
GRADES = {
    "cool": (torch.tensor([[0.80, 0.05, 0.0], [0.05, 0.90, 0.05], [0.0, 0.10, 1.0]]), torch.tensor([0.0, 0.02, 0.08])),
    "warm": (torch.tensor([[1.0, 0.10, 0.0], [0.05, 0.90, 0.0], [0.0, 0.0, 0.75]]), torch.tensor([0.06, 0.02, 0.0])),
    "sepia": (
        torch.tensor([[0.39, 0.77, 0.19], [0.35, 0.69, 0.17], [0.27, 0.53, 0.13]]),
        torch.tensor([0.0, 0.0, 0.0]),
    ),
}


def smooth_images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random colour images in [-1, 1]: bilinear up-sampling of 6×6 noise (plus a random global tint)."""
    gen = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(n, 3, 6, 6, generator=gen), size=size, mode="bilinear", align_corners=False)
    tint = 0.3 * torch.rand(n, 3, 1, 1, generator=gen) - 0.15
    return ((x + tint).clamp(0, 1) * 2 - 1).contiguous()


def grade(x: torch.Tensor, name: str) -> torch.Tensor:
    m, b = GRADES[name]
    u = (x + 1) / 2
    out = torch.einsum("oc,nchw->nohw", m, u) + b[None, :, None, None]
    return out.clamp(0, 1) * 2 - 1


def pairs(names: list[str], n: int, seed: int) -> PairSet:
    xs, ys, cs = [], [], []
    for k, name in enumerate(names):
        x = smooth_images(n, seed=seed + k)
        xs.append(x)
        ys.append(grade(x, name))
        cs += [name] * n
    return PairSet(
        torch.cat(xs), torch.cat(ys), cs, [f"apply a {c} grade" for c in cs], [str(i) for i in range(len(cs))]
    )


def tiny_cfg(epochs: int, decay: int, **kw) -> E2GANTrainConfig:
    return E2GANTrainConfig(
        ngf=16, heads=4, size=32, batch_size=4, ndf=16, d_layers=2, epochs=epochs, epochs_decay=decay, **kw
    )


def tiny_generator(encoder: TinyTextEncoder, **layout) -> E2GANGenerator:
    torch.manual_seed(0)
    return E2GANGenerator(ngf=16, heads=4, text_dim=encoder.dim, **layout)


def _randomise(model: torch.nn.Module) -> None:
    """Non-zero weights everywhere (the residual head and the FiLM layers start at zero)."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)


@pytest.mark.parametrize("layout", [{}, LEGACY], ids=["default", "legacy"])
def test_generator_sees_the_inputs_global_colour(layout):
    """The paper's layout normalises right after the stem, so G(x) == G(0.5·x + b); ours must not be."""
    enc = TinyTextEncoder(dim=16)
    g = tiny_generator(enc, **layout)
    _randomise(g)
    g.eval()
    x = smooth_images(4)
    text, mask = enc.encode(["a"] * 4)
    with torch.no_grad():
        diff = (g(x, text, mask) - g(0.5 * x + torch.tensor([0.2, -0.1, 0.3])[None, :, None, None], text, mask)).abs()
    if layout:
        assert diff.mean() < 1e-3  # the defect, kept selectable for old models (measured 7.7e-5)
    else:
        assert diff.mean() > 0.05  # measured 0.20


@pytest.mark.parametrize("layout", [{}, LEGACY], ids=["default", "legacy"])
def test_a_constant_image_stays_constant_no_checkerboard(layout):
    """A flat input has flat features everywhere; the up-sampling must not turn them into a grid."""
    enc = TinyTextEncoder(dim=16)
    g = tiny_generator(enc, **layout)
    _randomise(g)
    g.eval()
    x = torch.full((1, 3, 192, 192), 0.3)
    text, mask = enc.encode(["a"])
    with torch.no_grad():
        inner = g(x, text, mask)[..., 64:-64, 64:-64]  # away from the zero-padded borders' reach
    spread = (inner - inner.mean((2, 3), keepdim=True)).abs().max()
    if layout:
        assert spread > 0.1  # the stride-2 kernel-3 transposed convs leave a periodic pattern (measured 0.98)
    else:
        assert spread < 1e-5  # measured 6e-7


def test_recipe_learns_a_colour_grade(tmp_path):
    """The training loop (GAN + L1, pix2pix schedule) learns a fixed per-pixel colour grade at 32 px.
    Measured: the default layout reaches 35.5 dB in 240 steps; the paper's layout (LEGACY) 16.9 dB, below
    doing nothing (identity 20.8 dB)."""
    enc = TinyTextEncoder(dim=16)
    train, test = pairs(["cool"], 24, seed=0), pairs(["cool"], 12, seed=100)
    g = tiny_generator(enc)
    cfg = tiny_cfg(20, 20)  # 6 batches an epoch: 240 steps
    train_loop(g, build_discriminator(cfg), train, None, enc, tmp_path / "run", cfg)
    score = evaluate(g, test, enc)["psnr"]
    identity = float(psnr((test.inputs + 1) / 2, (test.targets + 1) / 2).mean())
    assert score >= 30.0, (score, identity)


@pytest.fixture(scope="module")
def two_concept_base(tmp_path_factory):
    enc = TinyTextEncoder(dim=16)
    g = tiny_generator(enc)
    cfg = tiny_cfg(15, 15)  # 12 batches an epoch: 360 steps
    d = build_discriminator(cfg)
    train_loop(g, d, pairs(["cool", "warm"], 24, seed=0), None, enc, tmp_path_factory.mktemp("base"), cfg)
    return g.eval(), d, enc


def test_base_model_follows_its_prompt(two_concept_base):
    """One base trained on two grades with two prompts: each prompt gives its own grade, and swapping the prompt
    changes the output."""
    g, _, enc = two_concept_base
    x = smooth_images(12, seed=200)
    with torch.no_grad():
        out = {c: g(x, *enc.encode([f"apply a {c} grade"] * 12)) for c in ("cool", "warm")}
    for c, other in (("cool", "warm"), ("warm", "cool")):
        own = float(psnr((out[c] + 1) / 2, (grade(x, c) + 1) / 2).mean())
        cross = float(psnr((out[c] + 1) / 2, (grade(x, other) + 1) / 2).mean())
        assert own >= 28.0 and own >= cross + 5.0, (c, own, cross)
    assert (out["cool"] - out["warm"]).abs().mean() > 0.03


def test_lora_learns_a_new_concept_over_the_base(two_concept_base, tmp_path):
    """LoRA on the default crucial layers (CRUCIAL_PARTS) adapts the base to a grade it has never seen, well
    beyond the base alone."""
    base, d, enc = two_concept_base
    import copy

    g = copy.deepcopy(base).train()
    names = crucial_layer_names(g)
    add_lora(g, {n: 4 for n in names})
    set_lora_trainable(g)
    train, test = pairs(["sepia"], 24, seed=300), pairs(["sepia"], 12, seed=400)
    before = evaluate(g, test, enc)["psnr"]
    cfg = tiny_cfg(10, 10)
    train_loop(g, copy.deepcopy(d), train, None, enc, tmp_path / "lora", cfg)
    after = evaluate(g, test, enc)["psnr"]
    # measured: 12.6 dB -> 27.4 dB (27.1 with the transformer block's layers adapted too; with the paper's two parts
    # and LoRA at 1e-3 it was 16.7; a full fine-tune of the same steps: 22.3 dB; sepia is far from both grades)
    assert after >= before + 8.0, (before, after)
    assert all(not p.requires_grad for n, p in g.named_parameters() if "lora_" not in n)


def textured_images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Colour images with detail at every scale down to 2 px: bilinear up-sampling of 16×16 noise."""
    gen = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(n, 3, 16, 16, generator=gen), size=size, mode="bilinear", align_corners=False)
    return (x * 2 - 1).contiguous()


def ink(x: torch.Tensor) -> torch.Tensor:
    """A cartoon's outlines at pixel precision: black wherever the grey is darker than its 3×3 neighbourhood."""
    gray = ((x + 1) / 2).mean(1, keepdim=True)
    local = F.avg_pool2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return torch.where(gray < local - 0.02, torch.full_like(x, -1.0), x)


def ink_pairs(n: int, seed: int) -> PairSet:
    x = textured_images(n, seed=seed)
    return PairSet(x, ink(x), ["ink"] * n, ["outline it in ink"] * n, [str(i) for i in range(n)])


@pytest.mark.parametrize("layout", [{"detail": 8}, {"detail": 0}], ids=["detail-path", "no-detail-path"])
def test_recipe_learns_pixel_precise_ink(layout, tmp_path):
    """Outlines placed pixel by pixel (the cartoon editor's ink, in miniature) need full-resolution layers: every
    other layer of the generator works at 1/2 resolution or coarser. Measured in 240 steps: with the detail
    path (8 wide here, 32 by default) 18.3 dB, without it 13.6, barely above doing nothing (12.4)."""
    enc = TinyTextEncoder(dim=16)
    train, test = ink_pairs(24, seed=0), ink_pairs(12, seed=100)
    g = tiny_generator(enc, **layout)
    cfg = tiny_cfg(20, 20)
    train_loop(g, build_discriminator(cfg), train, None, enc, tmp_path / "run", cfg)
    score = evaluate(g, test, enc)["psnr"]
    identity = float(psnr((test.inputs + 1) / 2, (test.targets + 1) / 2).mean())
    assert identity < 13.0, identity
    if layout["detail"]:
        assert score >= 16.5, score
    else:
        assert score < 15.0, score  # the defect this path fixes, kept as the old models' layout
