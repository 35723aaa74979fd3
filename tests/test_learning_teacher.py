"""Learning tests for the teacher recipes (issue 13): on tiny deterministic mappings made here, the real
recipe functions must reach a stated PSNR on held-out images within a bounded number of steps.

The images are smooth (bilinear up-sampling of 6×6 noise) at 32 px, each with a random global tint, so the
overall colour varies from image to image and a model has to read it to get the mapping right. Every number
quoted below was measured with these exact settings (torch 2.13 CPU, one thread); runs are deterministic.
"""

import time

import torch
import torch.nn.functional as F

import edgegan
from edgegan.compress.teacher import CycleGANConfig, Pix2PixConfig, train_cyclegan, train_pix2pix
from edgegan.data.images import save_image

SIZE = 32
BAR_DB = 30.0  # the colour grade must be learnt to 30 dB; doing nothing (output = input) scores 20.6 dB

# A fixed per-pixel colour grade on [0, 1] colours: a 3×3 colour mix, an offset, then a 0.8 gamma. Targets
# stay inside (0, 1), so a tanh output can reach them.
GRADE_MIX = torch.tensor([[0.70, 0.15, 0.05], [0.08, 0.72, 0.08], [0.04, 0.12, 0.62]])
GRADE_OFFSET = torch.tensor([0.06, 0.04, 0.03]).view(1, 3, 1, 1)


def smooth_images(n: int, seed: int) -> torch.Tensor:
    """``n`` smooth RGB images in [-1, 1]: 6×6 noise up-sampled, plus a random tint and brightness per image."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 6, 6, generator=g) * 2 - 1
    detail = F.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    tint = (torch.rand(n, 3, 1, 1, generator=g) * 2 - 1) * 0.3
    brightness = (torch.rand(n, 1, 1, 1, generator=g) * 2 - 1) * 0.2
    return (0.5 + 0.3 * detail + tint + brightness).clamp(0, 1) * 2 - 1


def colour_grade(x: torch.Tensor) -> torch.Tensor:
    u = (x + 1) / 2
    v = (torch.einsum("ij,njhw->nihw", GRADE_MIX, u) + GRADE_OFFSET).clamp(0, 1) ** 0.8
    return v * 2 - 1


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean PSNR in dB of [-1, 1] image batches, on [0, 1]."""
    mse = (((x - y) / 2) ** 2).flatten(1).mean(1)
    return float((10 * torch.log10(1 / mse)).mean())


def write_pairs(root, a: torch.Tensor, b: torch.Tensor):
    for i in range(len(a)):
        save_image(a[i], root / "A" / f"{i:03d}.png")
        save_image(b[i], root / "B" / f"{i:03d}.png")
    return root / "A", root / "B"


@torch.no_grad()
def held_out_psnr(model_dir, x: torch.Tensor, target: torch.Tensor) -> float:
    return psnr(edgegan.load(model_dir).eval()(x), target)


def pix2pix_colour_grade(tmp_path, generator: str, options: dict, *, n_train: int, epochs: int, lr: float):
    """Train pix2pix through :func:`train_pix2pix` on ``n_train`` graded pairs (batch 4, ``epochs`` at ``lr``
    then as many decaying to 0; the default ``select_by="last"``) and return (held-out PSNR, identity PSNR,
    steps, seconds)."""
    a = smooth_images(n_train, seed=1)
    a_dir, b_dir = write_pairs(tmp_path / "data", a, colour_grade(a))
    cfg = Pix2PixConfig(
        generator=generator,
        generator_options=options,
        ndf=8,  # n_layers_d "auto": 1 layer, 16×16 patches, at 32 px
        lr=lr,
        epochs=epochs,
        decay_epochs=epochs,
        batch_size=4,
        load_size=SIZE,
        crop_size=SIZE,
        val_fraction=0.0,
    )
    start = time.perf_counter()
    summary = train_pix2pix(a_dir, b_dir, tmp_path / "run", cfg)
    seconds = time.perf_counter() - start
    assert summary["discriminator"]["n_layers"] == 1 and summary["best_epoch"] == 2 * epochs
    held = smooth_images(32, seed=99)
    target = colour_grade(held)
    steps = 2 * epochs * n_train // 4
    return held_out_psnr(summary["best_generator"], held, target), psnr(held, target), steps, seconds


def test_pix2pix_resnet_with_input_paths_learns_a_colour_grade(tmp_path):
    # Measured with these settings: 35.12 dB after 128 steps (identity 20.64 dB). The same run with the residual
    # only reaches 23.65 dB, with the input skip only 28.78 dB, and the papers' layout 16.31 dB (test below);
    # the mobile generator with both options, ngf 8 and 3 blocks: 35.06 dB.
    options = {"ngf": 8, "n_blocks": 2, "residual": True, "input_skip": True}
    score, identity, steps, _ = pix2pix_colour_grade(
        tmp_path, "resnet_generator", options, n_train=32, epochs=8, lr=1e-3
    )
    assert steps == 128
    assert score >= BAR_DB, f"{score:.2f} dB (identity {identity:.2f} dB)"


def test_pix2pix_unet_learns_a_colour_grade(tmp_path):
    # The U-Net (the pix2pix reference's default generator) carries un-normalised features through its outer
    # skip, and has no residual option. Measured with these settings: 31.84 dB after 128 steps (identity 20.64 dB).
    options = {"ngf": 16, "num_downs": 5}
    score, identity, steps, _ = pix2pix_colour_grade(tmp_path, "unet_generator", options, n_train=64, epochs=4, lr=2e-3)
    assert steps == 128
    assert score >= BAR_DB, f"{score:.2f} dB (identity {identity:.2f} dB)"


def test_pix2pix_old_default_resnet_fails_the_colour_grade(tmp_path):
    """The defect this guards against (issue 13, point 2): the papers' ResNet layout with instance norm
    normalises the input's colour away right after the stem, so it cannot learn a global colour grade."""
    options = {"ngf": 8, "n_blocks": 2}  # instance norm, residual=False, input_skip=False: the old teacher
    score, identity, steps, _ = pix2pix_colour_grade(
        tmp_path, "resnet_generator", options, n_train=32, epochs=8, lr=1e-3
    )
    # Measured: 16.31 dB after the same 128 steps as the test above, below doing nothing (identity 20.64 dB).
    # BatchNorm instead of instance norm: 22.00 dB; BatchNorm with the residual: 26.56 dB.
    assert score < identity + 1.0 < BAR_DB, f"{score:.2f} dB (identity {identity:.2f} dB)"


# ------------------------------------------------------------------------------------------ CycleGAN

# Domain A: smooth images whose channels have different levels and spreads; the unpaired target domain B is
# A under a fixed per-channel colour balance (an invertible, monotone map per channel), so matching B's colour
# distribution from A determines the map. Identity scores 13.2 dB.
A_LEVEL = torch.tensor([0.60, 0.45, 0.30]).view(1, 3, 1, 1)
A_SPREAD = torch.tensor([0.25, 0.20, 0.12]).view(1, 3, 1, 1)


def domain_a(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 6, 6, generator=g) * 2 - 1
    detail = F.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    tint = (torch.rand(n, 3, 1, 1, generator=g) * 2 - 1) * 0.05
    return (A_LEVEL + A_SPREAD * detail + tint).clamp(0, 1) * 2 - 1


def colour_balance(x: torch.Tensor) -> torch.Tensor:
    """R' = 0.7 R - 0.05, G' = G ** 0.7, B' = 1.6 B + 0.1 on [0, 1] colours (inside (0, 1) on domain A)."""
    u = (x + 1) / 2
    return torch.stack([0.7 * u[:, 0] - 0.05, u[:, 1] ** 0.7, 1.6 * u[:, 2] + 0.1], 1) * 2 - 1


CYCLE_BAR_DB = 25.0


def test_cyclegan_learns_an_invertible_colour_map_unpaired(tmp_path):
    n = 32
    a, b = domain_a(n, seed=1), colour_balance(domain_a(n, seed=2))  # different images: unpaired
    for i in range(n):
        save_image(a[i], tmp_path / "data" / "trainA" / f"{i:03d}.png")
        save_image(b[i], tmp_path / "data" / "trainB" / f"{i:03d}.png")
    cfg = CycleGANConfig(
        generator_options={"ngf": 8, "n_blocks": 2, "residual": True, "input_skip": True},
        ndf=16,
        lr=2e-3,
        epochs=8,
        decay_epochs=7,
        batch_size=4,
        load_size=SIZE,
        crop_size=SIZE,
        # The identity loss (CycleGAN paper, section 5.2: it keeps a painting's colours in the photo) asks G_A to
        # leave B images unchanged, the opposite of a colour map. With the default 0.5: G_A 13.34 dB, the identity.
        lambda_identity=0.0,
    )
    summary = train_cyclegan(tmp_path / "data", tmp_path / "run", cfg)
    held = domain_a(32, seed=99)
    target = colour_balance(held)
    # Measured with these settings after 120 steps: G_A 29.02 dB, G_B 30.52 dB (identity 13.17 dB). The papers'
    # layout: G_A 17.65 dB, G_B 17.09 dB; residual only: 29.10 / 29.06 dB (the tints here are small, so a
    # correction that cannot see the image's mean colour costs little); without the image pool: 27.19 / 29.08.
    assert psnr(held, target) < 14.0
    score_a = held_out_psnr(summary["G_A"], held, target)
    score_b = held_out_psnr(summary["G_B"], target, held)  # and back
    assert score_a >= CYCLE_BAR_DB and score_b >= CYCLE_BAR_DB, (score_a, score_b)
