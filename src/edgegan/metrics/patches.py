"""Weight-free scores for random samples of a single-image GAN: patch realism and sample diversity.

``patch_realism``: for each k×k patch of a sample, the RMSE to its nearest k×k patch anywhere in
the real image, averaged over the sample's patches. Low means the sample is made of the image's
own patches, which is what a single-image GAN's patch critic asks for. ``sample_diversity``: the
mean pairwise per-pixel RMSE between samples. Read them together: a copy of the real image scores
a perfect 0 on realism and 0 on diversity; noise scores high on both.

Neither needs network weights, so they run where SIFID cannot (no Inception weights).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

_CHUNK_ELEMENTS = 2**24  # query rows x real patches per distance block: 64 MB of float32


def extract_patches(images: Tensor, patch: int = 7, stride: int = 1) -> Tensor:
    """All ``patch``×``patch`` patches of [N, C, H, W] images, ``stride`` apart (no padding), as
    [N, L, C·patch·patch] rows."""
    if images.dim() != 4:
        raise ValueError(f"images must be [N, C, H, W], got shape {tuple(images.shape)}")
    if patch < 1 or stride < 1:
        raise ValueError(f"patch and stride must be >= 1, got {patch} and {stride}")
    h, w = images.shape[-2:]
    if patch > h or patch > w:
        raise ValueError(f"a {patch}x{patch} patch does not fit in a {h}x{w} image")
    return F.unfold(images.float(), patch, stride=stride).transpose(1, 2)


def stride_for(size: tuple[int, int], patch: int = 7, max_patches: int = 4096) -> int:
    """The smallest stride that leaves at most ``max_patches`` patches in an image of ``size``
    (h, w): a way to bound :func:`patch_realism`'s cost on large images."""
    h, w = size
    stride = 1
    while math.ceil((h - patch + 1) / stride) * math.ceil((w - patch + 1) / stride) > max_patches:
        stride += 1
    return stride


@torch.no_grad()
def patch_realism(
    samples: Tensor,
    real: Tensor,
    *,
    patch: int = 7,
    stride: int = 1,
    chunk: int | None = None,
) -> Tensor:
    """Per sample, the mean over its ``patch``×``patch`` patches (taken ``stride`` apart) of the
    RMSE to the nearest patch of ``real`` (every position, stride 1). Returns [N].

    ``samples`` is [N, C, h, w] and ``real`` [1, C, H, W] (sizes may differ); the score is in the
    images' units (RMSE of [0, 1] images is in [0, 1]). The search is exhaustive: distances are
    computed ``chunk`` query patches at a time (default: blocks of about 64 MB), and the
    nearest patch's RMSE is then recomputed exactly, so a patch that occurs in ``real`` scores 0.
    Cost is (sample patches) × (real patches) × C·patch²: a 96-px image against itself at stride 1
    is ~20 GFLOP; use ``stride`` (e.g. :func:`stride_for`) on larger samples.

    What it tells: whether a sample is made of the real image's local structures at this scale
    (colours, edges, textures up to ``patch`` px). What it cannot tell: whether their arrangement
    is plausible (a sample with the sky below the ground, or objects cut and repeated, scores as
    well as a good one, since global layout is invisible to a patch); and whether the sample is
    new: a copy of the real image scores a perfect 0, so read it with :func:`sample_diversity`.
    """
    if real.dim() == 3:
        real = real.unsqueeze(0)
    if real.dim() != 4 or real.shape[0] != 1:
        raise ValueError(f"real must be one image [1, C, H, W], got shape {tuple(real.shape)}")
    if samples.dim() != 4 or samples.shape[1] != real.shape[1]:
        raise ValueError(f"samples must be [N, {real.shape[1]}, h, w], got shape {tuple(samples.shape)}")
    ref = extract_patches(real, patch)[0]  # [M, D]
    ref = ref.to(samples.device)
    centre = ref.mean(0, keepdim=True)  # centring keeps the dot-product distances accurate in float32
    ref_c = ref - centre
    ref_sq = (ref_c * ref_c).sum(1)  # [M]
    rows = chunk or max(1, _CHUNK_ELEMENTS // ref.shape[0])
    scores = []
    for queries in extract_patches(samples, patch, stride):  # [L, D] per sample
        dists = []
        for q in queries.split(rows):
            # argmin over j of |q - r_j|² = |q|² + |r_j|² - 2 q·r_j; |q|² does not change the argmin.
            nearest = torch.addmm(ref_sq[None], q - centre, ref_c.T, alpha=-2).argmin(1)
            dists.append((q - ref[nearest]).pow(2).mean(1).sqrt())
        scores.append(torch.cat(dists).mean())
    return torch.stack(scores)


def sample_diversity(samples: Tensor) -> float:
    """Mean over all pairs of samples of the per-pixel RMSE between them ([N ≥ 2, C, H, W], in the
    images' units). Identical samples, e.g. N copies of the real image, score 0.

    What it tells: how much the samples differ from each other pixel by pixel. What it cannot tell:
    whether they differ in a meaningful way. Noise scores high (read it with
    :func:`patch_realism`), and so does a copy of the real image shifted by a few pixels, which is
    hardly a new image; it says nothing about how far each sample is from the real image.
    """
    if samples.dim() != 4 or samples.shape[0] < 2:
        raise ValueError(f"diversity needs at least 2 samples [N, C, H, W], got shape {tuple(samples.shape)}")
    flat = samples.flatten(1).double()
    return float((torch.pdist(flat) / math.sqrt(flat.shape[1])).mean())  # pdist: direct differences, no Gram trick
