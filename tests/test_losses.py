import pytest
import torch

from edgegan.losses import GANLoss, gradient_penalty, l1_loss, ssim_loss, total_variation
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
