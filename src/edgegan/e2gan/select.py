"""Training-data reduction: keep the sample nearest each of N K-means centres (E2GAN), or N at random.

Features are any ``[M, D]`` embedding of the training inputs. By default E2GAN uses the base generator's stem
features *before* its instance norm, pooled to their mean and spread per channel (:func:`stem_features`), so no
extra weights are needed. Features taken after a normalised layer are nearly the same for every image (their
per-channel mean and spread are fixed by the norm; measured on the bench's base: 0.387 ± 0.014), and K-means
over them is no better than random; :func:`feature_spread` reports how much a set of features varies.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from edgegan.errors import ConfigError

__all__ = [
    "bottleneck_features",
    "feature_spread",
    "kmeans",
    "select_concepts",
    "select_kmeans",
    "select_random",
    "standardise",
    "stem_features",
]


def kmeans(features: torch.Tensor, n: int, seed: int = 0, iters: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's K-means with k-means++ seeding (deterministic by ``seed``): ``(centres [n, D], labels [M])``."""
    x = features.double()
    m = x.shape[0]
    if not 1 <= n <= m:
        raise ConfigError(f"cannot pick {n} clusters from {m} samples")
    gen = torch.Generator().manual_seed(seed)
    centres = x[torch.randint(m, (1,), generator=gen)]
    for _ in range(1, n):
        d2 = torch.cdist(x, centres).pow(2).min(1).values
        probs = d2 / d2.sum() if d2.sum() > 0 else torch.full_like(d2, 1.0 / m)
        centres = torch.cat([centres, x[torch.multinomial(probs, 1, generator=gen)]])
    labels = torch.zeros(m, dtype=torch.long)
    for it in range(iters):
        new_labels = torch.cdist(x, centres).argmin(1)
        if it > 0 and torch.equal(new_labels, labels):
            break
        labels = new_labels
        for k in range(n):
            members = x[labels == k]
            if len(members):
                centres[k] = members.mean(0)
    return centres.float(), labels


def select_kmeans(features: torch.Tensor, n: int, seed: int = 0) -> list[int]:
    """``n`` distinct sample indices, the one nearest each K-means centre (ties and repeats resolved by
    taking the next-nearest sample not already chosen)."""
    centres, _ = kmeans(features, n, seed)
    dist = torch.cdist(centres.double(), features.double())  # [n, M]
    chosen: list[int] = []
    for k in range(n):
        for idx in dist[k].argsort().tolist():
            if idx not in chosen:
                chosen.append(int(idx))
                break
    return chosen


def standardise(features: torch.Tensor) -> torch.Tensor:
    """Each dimension to zero mean and unit spread, so that no one statistic dominates the distances."""
    return (features - features.mean(0)) / features.std(0, unbiased=False).clamp_min(1e-8)


def feature_spread(features: torch.Tensor) -> dict[str, float]:
    """How much features vary between images: the mean over dimensions of their spread across images, of
    their absolute mean, and the ratio (near 0: every image looks the same to K-means)."""
    f = features.double()
    spread = float(f.std(0, unbiased=False).mean())
    level = float(f.mean(0).abs().mean())
    return {"spread": spread, "mean_abs": level, "relative_spread": spread / max(level, 1e-12), "dims": f.shape[1]}


def select_concepts(embeddings: dict[str, torch.Tensor], n: int, seed: int = 0) -> list[str]:
    """E2GAN's choice of base concepts: K-means over the per-concept mean image embeddings
    (``{concept: [D]}``), keeping the concept nearest each of ``n`` centres, in the input order."""
    names = list(embeddings)
    if not 1 <= n <= len(names):
        raise ConfigError(f"cannot pick {n} base concepts from {len(names)}")
    feats = standardise(torch.stack([embeddings[k].flatten().float() for k in names]))
    chosen = set(select_kmeans(feats, n, seed))
    return [k for i, k in enumerate(names) if i in chosen]


def select_random(n_items: int, n: int, seed: int = 0) -> list[int]:
    if not 1 <= n <= n_items:
        raise ConfigError(f"cannot pick {n} samples from {n_items}")
    return sorted(int(i) for i in np.random.default_rng(seed).permutation(n_items)[:n])


@torch.no_grad()
def bottleneck_features(
    generator: nn.Module, images: Sequence[torch.Tensor] | torch.Tensor, batch: int = 8
) -> torch.Tensor:
    """Global-average-pooled trunk features (after the downsampling layers) of ``generator`` for each image
    (``[3, H, W]`` in [-1, 1]); works for generators with ``stem`` and ``down`` like E2GAN's. They come after
    instance norms and barely vary between images (see :func:`feature_spread`); kept for comparison."""
    stem, down = getattr(generator, "stem", None), getattr(generator, "down", None)
    if stem is None or down is None:
        raise ConfigError(f"{type(generator).__name__} has no stem/down layers to take bottleneck features from")
    stem_norm = getattr(generator, "stem_norm", nn.Identity())
    was = generator.training
    generator.eval()
    feats = []
    items = list(images)
    for i in range(0, len(items), batch):
        h = stem_norm(stem(torch.stack(items[i : i + batch])))
        for layer in down:
            h = layer(h)
        feats.append(h.mean((2, 3)))
    generator.train(was)
    return torch.cat(feats)


@torch.no_grad()
def stem_features(generator: nn.Module, images: Sequence[torch.Tensor] | torch.Tensor, batch: int = 8) -> torch.Tensor:
    """Mean and spread per channel of the generator's stem conv output, before any normalisation
    (``[M, 2·ngf]``): colour, tone and local texture, which vary between images. Needs a ``stem`` conv whose
    output is not yet normalised (E2GAN's generator)."""
    stem = getattr(generator, "stem", None)
    if stem is None:
        raise ConfigError(f"{type(generator).__name__} has no stem layer to take features from")
    device = next(generator.parameters()).device
    was = generator.training
    generator.eval()
    feats = []
    items = list(images)
    for i in range(0, len(items), batch):
        h = stem(torch.stack(items[i : i + batch]).to(device))
        feats.append(torch.cat([h.mean((2, 3)), h.std((2, 3))], 1).cpu())
    generator.train(was)
    return torch.cat(feats)
