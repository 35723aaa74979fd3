"""Weight-free patch realism and sample diversity: values on images built in the test."""

from __future__ import annotations

import math

import pytest
import torch

from edgegan.metrics.patches import extract_patches, patch_realism, sample_diversity, stride_for


def _image(h: int = 48, w: int = 48) -> torch.Tensor:
    """Stripes, a ramp and a step: structure at every scale, in [0, 1]."""
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    img = torch.stack([0.5 + 0.4 * torch.sin(9 * x + 3 * y), 0.5 + 0.4 * torch.cos(7 * y), x * y + 0.3 * (x > 0.5)])
    return img[None].clamp(0, 1)


def _tiles(img: torch.Tensor, tile: int) -> list[torch.Tensor]:
    h, w = img.shape[-2:]
    return [img[..., i : i + tile, j : j + tile] for i in range(0, h, tile) for j in range(0, w, tile)]


def _rearranged(img: torch.Tensor, tile: int) -> torch.Tensor:
    """The image's tiles in reverse order: every tile moves, each is the real image's own pixels."""
    tiles = _tiles(img, tile)[::-1]
    per_row = img.shape[-1] // tile
    rows = [torch.cat(tiles[r : r + per_row], dim=-1) for r in range(0, len(tiles), per_row)]
    return torch.cat(rows, dim=-2)


def test_the_real_image_scores_zero_against_itself():
    real = _image()
    assert patch_realism(real, real).tolist() == [0.0]
    assert patch_realism(real, real, stride=3, chunk=5).tolist() == [0.0]  # chunked and strided: still exact
    # Any crop is made of the image's own patches.
    assert patch_realism(real[..., 5:30, 11:40], real).tolist() == [0.0]


def test_realism_is_the_rmse_to_the_nearest_patch():
    # A constant image against another constant: every patch is |a - b| away from every real patch.
    real = torch.full((1, 3, 20, 20), 0.3)
    samples = torch.stack([torch.full((3, 12, 12), 0.5), torch.full((3, 12, 12), 0.25)])
    assert patch_realism(samples, real).tolist() == pytest.approx([0.2, 0.05], abs=1e-6)
    # Against a brute-force nearest-neighbour search in float64.
    real = _image(24, 24)
    samples = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    ref = extract_patches(real.double(), 5)[0]
    brute = [torch.cdist(extract_patches(s[None].double(), 5, 2)[0], ref).min(1).values.mean() for s in samples]
    got = patch_realism(samples, real, patch=5, stride=2, chunk=7)
    assert got.tolist() == pytest.approx([float(b) / math.sqrt(3 * 25) for b in brute], rel=1e-5)


def test_noise_scores_much_worse_than_a_rearrangement_of_the_image():
    real = _image()
    rearranged = _rearranged(real, 24)
    assert not torch.equal(rearranged, real)
    gen = torch.Generator().manual_seed(1)
    mean, std = real.mean((2, 3), keepdim=True), real.std((2, 3), keepdim=True)
    noise = (mean + std * torch.randn(1, 3, 48, 48, generator=gen)).clamp(0, 1)  # the image's colour statistics
    good, bad = patch_realism(torch.cat([rearranged, noise]), real).tolist()
    assert bad > 0.2 and bad > 4 * good  # measured: 0.047 vs 0.29
    # Only the patches across the seams differ from the image: each tile alone scores 0.
    assert all(patch_realism(t, real).item() == 0.0 for t in _tiles(rearranged, 24))


def test_diversity_is_zero_for_copies_and_the_pairwise_rmse_otherwise():
    real = _image()
    assert sample_diversity(real.expand(4, -1, -1, -1)) == 0.0  # copying the image is no diversity
    consts = torch.stack([torch.full((3, 8, 8), v) for v in (0.0, 0.1, 0.3)])
    assert sample_diversity(consts) == pytest.approx((0.1 + 0.3 + 0.2) / 3)
    with pytest.raises(ValueError, match="at least 2"):
        sample_diversity(real)


def test_a_shifted_copy_fools_diversity_but_not_realism_of_a_new_layout():
    # What the docstrings warn about: a copy shifted by 3 px is near-perfect on realism (only the wrapped
    # seam is new) and still looks diverse pixel by pixel. Read the two scores together.
    real = _image()
    shifted = torch.roll(real, 3, dims=-1)
    assert patch_realism(shifted, real).item() < 0.03
    assert sample_diversity(torch.cat([real, shifted])) > 0.1


def test_stride_for_bounds_the_number_of_patches():
    assert stride_for((96, 96), 7, 10_000) == 1  # 90 x 90 = 8100 patches
    stride = stride_for((186, 248), 7, 4096)
    assert math.ceil(180 / stride) * math.ceil(242 / stride) <= 4096
    assert math.ceil(180 / (stride - 1)) * math.ceil(242 / (stride - 1)) > 4096
    with pytest.raises(ValueError, match="does not fit"):
        patch_realism(torch.zeros(1, 3, 5, 5), torch.zeros(1, 3, 20, 20))
