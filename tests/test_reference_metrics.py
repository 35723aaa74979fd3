import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from edgegan.metrics.reference import invented_colour, l1, paired_metrics, psnr
from edgegan.metrics.ssim import ms_ssim, ms_ssim_min_size, ssim


def _pair(n=3, h=48, w=40, noise=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, h, w, generator=g, dtype=torch.float64)
    y = (x + noise * torch.randn(n, 3, h, w, generator=g, dtype=torch.float64)).clamp(0, 1)
    return x, y


def test_ssim_and_psnr_match_scikit_image():
    x, y = _pair()
    ours_ssim, ours_psnr = ssim(x, y), psnr(x, y)
    for i in range(x.shape[0]):
        a, b = x[i].permute(1, 2, 0).numpy(), y[i].permute(1, 2, 0).numpy()
        ref = structural_similarity(
            a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=2
        )
        assert ours_ssim[i].item() == pytest.approx(ref, abs=1e-3)
        assert ours_psnr[i].item() == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1.0), abs=1e-3)


def test_float32_batch_agrees_with_float64():
    x, y = _pair()
    assert torch.allclose(ssim(x.float(), y.float()).double(), ssim(x, y), atol=1e-4)


def test_identity_and_ordering():
    x, y_small = _pair(noise=0.02)
    _, y_big = _pair(noise=0.2)
    assert torch.allclose(ssim(x, x), torch.ones(3, dtype=x.dtype))
    assert torch.isinf(psnr(x, x)).all()
    assert (ssim(x, y_small) > ssim(x, y_big)).all()
    assert (l1(x, y_small) < l1(x, y_big)).all()
    assert l1(x, x).abs().max() == 0


def test_ms_ssim():
    side = ms_ssim_min_size()
    assert side == 161
    x, y_small = _pair(n=2, h=side, w=170, noise=0.02)
    _, y_big = _pair(n=2, h=side, w=170, noise=0.2)
    assert torch.allclose(ms_ssim(x, x), torch.ones(2, dtype=x.dtype))
    a, b = ms_ssim(x, y_small), ms_ssim(x, y_big)
    assert (a > b).all() and torch.isfinite(b).all() and (b >= 0).all()
    with pytest.raises(ValueError, match="161"):
        ms_ssim(x[..., :100, :100], x[..., :100, :100])


def test_paired_metrics_keys():
    x, y = _pair(h=32, w=32)
    assert set(paired_metrics(x, y)) == {"psnr", "ssim", "l1"}
    x, y = _pair(h=170, w=170)
    assert set(paired_metrics(x, y)) == {"psnr", "ssim", "l1", "ms_ssim"}


def test_bad_shapes():
    with pytest.raises(ValueError):
        ssim(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 17))
    with pytest.raises(ValueError, match="11"):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))


def test_invented_colour_counts_speckle_not_blur():
    beige, ink = torch.tensor([0.8, 0.7, 0.6]), torch.zeros(3)
    target = beige.view(1, 3, 1, 1).repeat(1, 1, 8, 8)
    target[:, :, :, 4:] = 0.0  # an ink region on the right
    out = target.clone()
    assert invented_colour(out, target).item() == 0.0
    out[:, :, :, 3] = 0.5 * (beige + ink).view(1, 3, 1)  # a blurred edge: a mix of the two colours
    assert invented_colour(out, target).item() == 0.0
    out[0, :, 2, 4] = torch.tensor([0.9, 0.1, 0.9])  # one magenta pixel on the ink
    assert invented_colour(out, target).item() == pytest.approx(1 / 64)
    far = target.clone()
    far[0, :, 2, 7] = torch.tensor([0.9, 0.1, 0.9])  # 3 px from any beige: still more than beige's saturation
    assert invented_colour(far, target).item() == pytest.approx(1 / 64)
    assert invented_colour(out, target, margin=0.9).item() == 0.0
    with pytest.raises(ValueError):
        invented_colour(out[0], target[0])
