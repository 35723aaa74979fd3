import pytest
import torch

from edgegan.losses import GANLoss, gradient_penalty, l1_loss, pixel_l1_loss, ssim_loss, total_variation
from edgegan.models import PatchDiscriminator


@pytest.mark.parametrize("mode", ["vanilla", "lsgan", "hinge", "wgangp"])
def test_gan_losses_prefer_correct_scores(mode):
    loss = GANLoss(mode)
    good_real, bad_real = torch.full((2, 1, 4, 4), 3.0), torch.full((2, 1, 4, 4), -3.0)
    if mode == "lsgan":  # least squares targets are 1 (real) and 0 (fake)
        good_real, bad_real = torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    # The discriminator is rewarded for high scores on real data and low scores on fakes.
    assert loss(good_real, True) < loss(bad_real, True)
    assert loss(bad_real, False) < loss(good_real, False)
    # The generator is rewarded when the discriminator scores its fakes high.
    assert loss(good_real, True, for_discriminator=False) < loss(bad_real, True, for_discriminator=False)
    for value in (loss(good_real, True), loss(bad_real, False)):
        assert torch.isfinite(value)
    if mode in ("vanilla", "lsgan", "hinge"):
        assert loss(bad_real, True) >= 0


@pytest.mark.parametrize("mode", ["vanilla", "lsgan", "hinge", "wgangp"])
def test_gan_loss_gradient_flows_and_accepts_lists(mode):
    pred = torch.randn(2, 1, 4, 4, requires_grad=True)
    loss = GANLoss(mode)([pred, pred[:, :, :2, :2]], True)
    loss.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_hinge_and_wgan_generator_need_real_target():
    with pytest.raises(ValueError):
        GANLoss("hinge")(torch.zeros(1), False, for_discriminator=False)


def test_gradient_penalty_is_positive_and_differentiable():
    d = PatchDiscriminator(ndf=8, n_layers=2, norm="none")
    real, fake = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    gp = gradient_penalty(d, real, fake, weight=0.1)
    assert gp.item() > 0 and torch.isfinite(gp)
    gp.backward()
    grads = [p.grad for p in d.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_gradient_penalty_zero_for_unit_slope_critic():
    # D(x) = sum(x * w) with ||w|| = 1 has gradient norm exactly 1 everywhere.
    w = torch.randn(1, 3, 8, 8)
    w = w / w.norm()
    gp = gradient_penalty(lambda x: (x * w).flatten(1).sum(1), torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8))
    assert gp.item() < 1e-8


def _conv_critic(w: torch.Tensor):
    # A linear critic: a bias-free conv (no padding) to one channel; its input gradient does not depend on x.
    return lambda x: torch.nn.functional.conv2d(x, w)


@pytest.mark.parametrize(("per_pixel", "expected"), [(False, 75.52368540194628), (True, 0.009)])
def test_gradient_penalty_1x1_conv_critic_closed_form(per_pixel, expected):
    # D(x) = Σ_pixels w·x(p) with w = (0.3, 0.4, 1.2), ‖w‖ = 1.3, on 20x24 images (480 pixels):
    # every pixel's gradient is w, so the whole-image norm is 1.3·√480 and the per-pixel norm is 1.3.
    # weight 0.1: whole image 0.1·(1.3·√480 − 1)² = 75.5237 (WGAN-GP), per pixel 0.1·0.3² = 0.009 (SinGAN).
    w = torch.tensor([0.3, 0.4, 1.2], dtype=torch.float64).view(1, 3, 1, 1)
    real, fake = torch.randn(2, 3, 20, 24, dtype=torch.float64), torch.randn(2, 3, 20, 24, dtype=torch.float64)
    gp = gradient_penalty(_conv_critic(w), real, fake, weight=0.1, per_pixel=per_pixel)
    assert gp.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("per_pixel", [False, True])
def test_gradient_penalty_3x3_conv_critic_matches_hand_gradient(per_pixel):
    # D(x) = Σ valid 3x3 conv of x: pixel (y, x) of channel c has gradient Σ w[c, i, j] over the taps
    # (i, j) whose output position (y − i, x − j) lies in the 18x22 output, so border pixels differ.
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(1, 3, 3, 3, generator=gen, dtype=torch.float64)
    h, wd = 20, 24
    grad = [[[0.0] * wd for _ in range(h)] for _ in range(3)]
    for c in range(3):
        for y in range(h):
            for x in range(wd):
                grad[c][y][x] = sum(
                    w[0, c, i, j].item()
                    for i in range(3)
                    for j in range(3)
                    if 0 <= y - i < h - 2 and 0 <= x - j < wd - 2
                )
    if per_pixel:  # mean over pixels of (‖g(p)‖ over channels − 1)²
        pix = [sum(grad[c][y][x] ** 2 for c in range(3)) ** 0.5 for y in range(h) for x in range(wd)]
        expected = 0.1 * sum((n - 1) ** 2 for n in pix) / len(pix)
    else:  # (‖g‖ over the whole image − 1)²
        expected = 0.1 * (sum(v**2 for ch in grad for row in ch for v in row) ** 0.5 - 1) ** 2
    real, fake = torch.randn(3, 3, h, wd, dtype=torch.float64), torch.randn(3, 3, h, wd, dtype=torch.float64)
    gp = gradient_penalty(_conv_critic(w), real, fake, weight=0.1, per_pixel=per_pixel)
    assert gp.item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("shared_alpha", [False, True])
def test_gradient_penalty_alpha_per_sample_or_shared(shared_alpha):
    seen = []

    def critic(x):
        seen.append(x.detach().clone())
        return x.sum()

    # real = 1, fake = 0, so each interpolate is filled with its α.
    gradient_penalty(critic, torch.ones(4, 3, 5, 6), torch.zeros(4, 3, 5, 6), shared_alpha=shared_alpha)
    alphas = seen[0].flatten(1)
    assert torch.equal(alphas, alphas[:, :1].expand_as(alphas))  # one α per sample
    assert (alphas[:, 0] == alphas[0, 0]).all().item() is shared_alpha


def test_image_losses():
    x = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    y = torch.rand(2, 3, 32, 32) * 2 - 1
    assert l1_loss(x, x).item() == 0
    assert ssim_loss(y, y).item() == pytest.approx(0.0, abs=1e-5)
    losses = [l1_loss(x, y), ssim_loss(x, y), total_variation(x), total_variation(x, "sum")]
    for value in losses:
        assert torch.isfinite(value) and value.item() > 0
    sum(losses).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    flat = torch.zeros(1, 3, 16, 16)
    assert total_variation(flat).item() == 0
    assert ssim_loss(y, -y).item() > 0.5


def test_pixel_l1_equals_l1_for_grey_errors_and_moves_channels_together():
    y = torch.rand(2, 3, 4, 4)
    e = torch.randn(2, 1, 4, 4)
    assert pixel_l1_loss(y + e, y, eps=0.0).item() == pytest.approx(l1_loss(y + e, y).item(), rel=1e-5)
    # an error in one channel only: per-channel L1 counts a third of it, the pixel norm its length / sqrt(3)
    x = y.clone()
    x[:, 1] += 0.6
    assert pixel_l1_loss(x, y, eps=0.0).item() == pytest.approx(0.6 / 3**0.5, rel=1e-5)
    # each pixel's gradient is parallel to its error vector
    x = (y + torch.randn_like(y)).requires_grad_(True)
    pixel_l1_loss(x, y).backward()
    err = (x - y).detach()
    cos = torch.nn.functional.cosine_similarity(x.grad, err, dim=1)
    assert cos.min().item() > 0.9999
    with pytest.raises(ValueError):
        pixel_l1_loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 3))


def test_pixel_l1_does_not_accept_a_colour_neither_target_has():
    """Two equally likely targets, ink and paper (an edge the model cannot place). Per-channel L1 is minimal
    anywhere in the box between them, including a magenta corner neither target has; the pixel norm is minimal
    only on the segment between them, so training from that corner moves back to it (the cartoon speckle)."""
    ink = torch.tensor([-1.0, -1.0, -1.0])
    paper = torch.tensor([0.6, 0.4, 0.2])
    targets = torch.stack([ink, paper]).view(2, 3, 1, 1)
    corner = torch.tensor([0.6, -1.0, 0.2])  # paper's R and B, ink's G
    for loss, moves in ((l1_loss, False), (pixel_l1_loss, True)):
        o = corner.clone().requires_grad_(True)
        opt = torch.optim.SGD([o], lr=0.05)
        for _ in range(2000):
            opt.zero_grad()
            loss(o.view(1, 3, 1, 1).expand(2, 3, 1, 1), targets).backward()
            opt.step()
        # distance from the ink-paper segment
        d = paper - ink
        t = ((o.detach() - ink) @ d / (d @ d)).clamp(0, 1)
        off = (o.detach() - (ink + t * d)).norm().item()
        assert (off < 0.05) if moves else (off > 0.5), (loss.__name__, off)


def test_vanilla_generator_gradient_fades_once_d_is_fooled_and_hinge_does_not():
    """E2GAN trains with pix2pix's BCE: its generator gradient shrinks as D calls the fake real, so near the target
    the L1 term decides; hinge's stays at 1 per logit and kept pushing colour noise into cartoon's ink edges."""
    grads = {}
    for mode in ("vanilla", "hinge"):
        pred = torch.tensor([-2.0, 0.0, 4.0, 8.0], requires_grad=True)  # D's logits for fakes, fooled to the right
        GANLoss(mode)(pred, True, for_discriminator=False).backward()
        grads[mode] = pred.grad.abs() * pred.numel()
    assert torch.allclose(grads["hinge"], torch.ones(4))
    assert grads["vanilla"][0] > 0.85 and grads["vanilla"][-1] < 1e-3
    assert (grads["vanilla"].diff() < 0).all()
