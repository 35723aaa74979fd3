"""FID, KID, SIFID and SinGAN's diversity measure, on feature arrays or Inception features.

The Fréchet distance is computed through symmetric eigen-decompositions, so it is real and
finite even for rank-deficient covariances (fewer samples than feature dimensions).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from edgegan.metrics.inception import FIDInceptionV3

ArrayLike = np.ndarray | Tensor


def _as_array(x: ArrayLike) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _as_features(x: ArrayLike, what: str) -> np.ndarray:
    arr = _as_array(x)
    if arr.ndim != 2:
        raise ValueError(f"{what} features must be [N, D], got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} features contain NaN or inf")
    return arr


def feature_stats(feats: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and covariance [D, D] (float64, unbiased) of features [N, D], N ≥ 2."""
    arr = _as_features(feats, "the")
    if arr.shape[0] < 2:
        raise ValueError(f"need at least 2 samples for a covariance, got {arr.shape[0]}")
    return arr.mean(axis=0), np.atleast_2d(np.cov(arr, rowvar=False, ddof=1))


def _trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """tr((S1 S2)^{1/2}) = Σ sqrt(eig(S1^{1/2} S2 S1^{1/2})): that matrix is symmetric PSD, so its
    eigenvalues are real; tiny negatives from rounding are clipped.

    With S1 = V W V^T restricted to its numerically non-zero eigenvalues (V: d×k), the non-zero
    eigenvalues of S1^{1/2} S2 S1^{1/2} are those of the k×k matrix W^{1/2} V^T S2 V W^{1/2}; for
    covariances of fewer samples than dimensions k is small, which makes this much cheaper.
    """
    w, v = np.linalg.eigh(s1)
    keep = w > max(float(w[-1]), 0.0) * w.shape[0] * np.finfo(np.float64).eps
    if not keep.any():
        return 0.0  # S1 = 0
    vh = v[:, keep] * np.sqrt(w[keep])
    m = vh.T @ s2 @ vh
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(ev, 0.0, None)).sum())


def frechet_distance(
    mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike, ridge: float = 1e-6
) -> float:
    """||mu1 - mu2||² + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2}), always real and ≥ 0.

    Falls back to adding ``ridge·I`` to both covariances if the eigen-decomposition fails or the
    result is not finite (singular covariances alone need no ridge with this method).
    """
    m1, m2 = np.atleast_1d(_as_array(mu1)), np.atleast_1d(_as_array(mu2))
    s1, s2 = np.atleast_2d(_as_array(sigma1)), np.atleast_2d(_as_array(sigma2))
    d = m1.shape[0]
    if m1.ndim != 1 or m1.shape != m2.shape or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(
            f"shape mismatch: mu1 {m1.shape}, sigma1 {s1.shape}, mu2 {m2.shape}, sigma2 {s2.shape}; "
            "need means [D] and covariances [D, D] of one D"
        )
    if not all(np.isfinite(a).all() for a in (m1, m2, s1, s2)):
        raise ValueError("means or covariances contain NaN or inf")
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    diff = m1 - m2
    base = float(diff @ diff)

    def attempt(a: np.ndarray, b: np.ndarray) -> float:
        try:
            return base + float(np.trace(a) + np.trace(b)) - 2 * _trace_sqrt_product(a, b)
        except np.linalg.LinAlgError:
            return float("nan")

    value = attempt(s1, s2)
    if not np.isfinite(value):
        eye = ridge * np.eye(d)
        value = attempt(s1 + eye, s2 + eye)
    if not np.isfinite(value):
        raise ValueError("the Fréchet distance is not finite even with a ridge added to the covariances")
    # Mathematically ≥ 0; rounding can leave a tiny negative for (nearly) equal statistics.
    return max(value, 0.0)


@dataclass
class FIDResult:
    value: float
    n_real: int
    n_fake: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def fid_from_features(real: ArrayLike, fake: ArrayLike) -> FIDResult:
    """FID between two feature sets [N, D] (each N ≥ 2)."""
    r, f = _as_features(real, "real"), _as_features(fake, "fake")
    for what, arr in (("real", r), ("fake", f)):
        if arr.shape[0] < 2:
            raise ValueError(f"FID needs at least 2 {what} samples, got {arr.shape[0]}")
    if r.shape[1] != f.shape[1]:
        raise ValueError(f"real and fake features differ in dimension: {r.shape[1]} vs {f.shape[1]}")
    mu1, s1 = feature_stats(r)
    mu2, s2 = feature_stats(f)
    return FIDResult(frechet_distance(mu1, s1, mu2, s2), r.shape[0], f.shape[0])


@dataclass
class KIDResult:
    mean: float
    std: float
    n_real: int
    n_fake: int
    subset_size: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray, gamma: float, coef0: float, degree: int) -> float:
    m = x.shape[0]
    kxx = (gamma * (x @ x.T) + coef0) ** degree
    kyy = (gamma * (y @ y.T) + coef0) ** degree
    kxy = (gamma * (x @ y.T) + coef0) ** degree
    # Leaving out the diagonals (k(x, x)) is what makes the estimator unbiased.
    off_xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    off_yy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(off_xx + off_yy - 2 * kxy.mean())


def kid(
    real: ArrayLike,
    fake: ArrayLike,
    *,
    num_subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    seed: int = 0,
) -> KIDResult:
    """Kernel Inception Distance: unbiased MMD² with k(x, y) = (gamma x·y + coef0)^degree
    (gamma = 1/D by default), averaged over ``num_subsets`` subsets of
    m = min(subset_size, n_real, n_fake) samples drawn without replacement from each set.
    ``std`` is the population standard deviation over subsets."""
    r, f = _as_features(real, "real"), _as_features(fake, "fake")
    if r.shape[1] != f.shape[1]:
        raise ValueError(f"real and fake features differ in dimension: {r.shape[1]} vs {f.shape[1]}")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be positive, got {num_subsets}")
    m = min(subset_size, r.shape[0], f.shape[0])
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {r.shape[0]} real and {f.shape[0]} fake")
    g = 1.0 / r.shape[1] if gamma is None else gamma
    rng = np.random.default_rng(seed)
    values = np.array(
        [
            _mmd2_unbiased(
                r[rng.choice(r.shape[0], m, replace=False)],
                f[rng.choice(f.shape[0], m, replace=False)],
                g,
                coef0,
                degree,
            )
            for _ in range(num_subsets)
        ]
    )
    return KIDResult(float(values.mean()), float(values.std()), r.shape[0], f.shape[0], m)


@dataclass
class SIFIDResult:
    values: list[float]  # one per fake image
    mean: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _positions(feat: Tensor) -> np.ndarray:
    """[C, h, w] -> [h*w, C]: each spatial position is one sample."""
    return feat.double().cpu().flatten(1).T.numpy()


def sifid(model: FIDInceptionV3, real: Tensor, fake: Tensor) -> SIFIDResult:
    """Single-image FID (SinGAN): Fréchet distance between the statistics of the 64-channel early
    Inception features of ``real`` [1, 3, H, W] and of each ``fake`` [N, 3, H', W'], all in [0, 1]."""
    if real.dim() == 3:
        real = real.unsqueeze(0)
    if fake.dim() == 3:
        fake = fake.unsqueeze(0)
    if real.dim() != 4 or real.shape[0] != 1:
        raise ValueError(f"real must be one image [1, 3, H, W], got shape {tuple(real.shape)}")
    if fake.dim() != 4 or fake.shape[0] < 1:
        raise ValueError(f"fake must be images [N, 3, H, W], got shape {tuple(fake.shape)}")
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        real_feat = model.spatial_features(real.to(device, torch.float32))[0]
        if real_feat.shape[1] * real_feat.shape[2] < 2:
            raise ValueError(f"real image {tuple(real.shape[-2:])} is too small for SIFID")
        mu_r, s_r = feature_stats(_positions(real_feat))
        values = []
        for img in fake:
            feat = model.spatial_features(img.unsqueeze(0).to(device, torch.float32))[0]
            if feat.shape[1] * feat.shape[2] < 2:
                raise ValueError(f"fake image {tuple(img.shape[-2:])} is too small for SIFID")
            mu_f, s_f = feature_stats(_positions(feat))
            values.append(frechet_distance(mu_r, s_r, mu_f, s_f))
    return SIFIDResult(values, float(np.mean(values)))


def diversity(samples: ArrayLike, real: ArrayLike) -> float:
    """SinGAN's diversity: per-pixel std over N samples [N, 3, H, W], averaged over pixels and
    channels, divided by the std of the real image's values [3, H, W] (population stds)."""
    s, r = _as_array(samples), _as_array(real)
    if r.ndim == 4 and r.shape[0] == 1:
        r = r[0]
    if s.ndim != 4 or s.shape[0] < 2:
        raise ValueError(f"diversity needs at least 2 samples [N, C, H, W], got shape {s.shape}")
    if s.shape[1:] != r.shape:
        raise ValueError(f"samples {s.shape[1:]} and the real image {r.shape} differ in shape")
    ref = float(r.std())
    if ref == 0.0:
        raise ValueError("the real image is constant (std 0); diversity is undefined")
    return float(s.std(axis=0).mean() / ref)
