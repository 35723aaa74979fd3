"""FID / KID / SIFID / diversity and the FID Inception-v3 (random weights: no downloads here)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from PIL import Image

from edgegan import weights
from edgegan.errors import EdgeganError
from edgegan.metrics.fid import (
    diversity,
    feature_stats,
    fid_from_features,
    frechet_distance,
    kid,
    sifid,
)
from edgegan.metrics.inception import (
    FIDInceptionV3,
    clean_resize,
    extract_features,
    load_fid_inception,
)
from edgegan.weights import WeightsError

PUBLISHED = "pt_inception-2015-12-05-6726825d.pth"

# ---------------------------------------------------------------------------------------------
# Fréchet distance
# ---------------------------------------------------------------------------------------------


def _random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_frechet_diagonal_closed_form():
    rng = np.random.default_rng(1)
    d = 32
    a, b = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2) + np.sum((mu1 - mu2) ** 2)
    got = frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert got == pytest.approx(expected, rel=1e-6)


def test_frechet_full_covariances_match_sqrtm():
    # scipy is only a test-time reference (not a dependency of edgegan).
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(2)
    d = 16
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    assert not np.allclose(s1 @ s2, s2 @ s1)  # non-commuting: the diagonal shortcut would be wrong
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    covmean = scipy_linalg.sqrtm(s1 @ s2)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_few_samples_high_dim_is_real_and_finite():
    rng = np.random.default_rng(3)
    mu1, s1 = feature_stats(rng.standard_normal((10, 2048)))
    mu2, s2 = feature_stats(rng.standard_normal((10, 2048)) + 0.5)
    value = frechet_distance(mu1, s1, mu2, s2)
    assert isinstance(value, float) and math.isfinite(value) and value >= 0


def test_frechet_and_fid_input_errors():
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="at least 2"):
        fid_from_features(np.zeros((1, 4)), np.zeros((5, 4)))
    result = fid_from_features(np.random.default_rng(0).standard_normal((20, 4)), np.ones((3, 4)))
    assert result.to_dict()["n_real"] == 20 and result.n_fake == 3 and result.value > 0


# ---------------------------------------------------------------------------------------------
# KID
# ---------------------------------------------------------------------------------------------


def _poly(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def test_kid_is_unbiased_where_the_v_statistic_is_not():
    rng = np.random.default_rng(4)
    n, d, draws = 30, 8, 300
    unbiased, biased = [], []
    for i in range(draws):
        x, y = rng.standard_normal((n, d)), rng.standard_normal((n, d))
        unbiased.append(kid(x, y, num_subsets=1, subset_size=n, seed=i).mean)
        biased.append(_poly(x, x).mean() + _poly(y, y).mean() - 2 * _poly(x, y).mean())
    u, b = np.array(unbiased), np.array(biased)
    assert abs(u.mean()) < 4 * u.std() / math.sqrt(draws)
    assert b.mean() > 10 * b.std() / math.sqrt(draws)


def test_kid_matches_brute_force():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((12, 5)), rng.standard_normal((12, 5)) + 0.3
    m = 12
    k = lambda a, b: (float(a @ b) / 5 + 1.0) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    result = kid(x, y, num_subsets=1, subset_size=m)
    assert result.mean == pytest.approx(xx + yy - 2 * xy, rel=1e-10)
    assert result.subset_size == 12 and result.std == 0.0
    assert kid(x, y, num_subsets=5, subset_size=1000).subset_size == 12  # capped by the data
    with pytest.raises(ValueError, match="at least 2"):
        kid(x[:1], y)


# ---------------------------------------------------------------------------------------------
# The FID Inception-v3 and its published key layout
# ---------------------------------------------------------------------------------------------


def _reference_convs() -> list[tuple[str, int, int, tuple[int, int]]]:
    """(module, in, out, kernel) of every BasicConv2d in torchvision's Inception3 layout, written
    out from the architecture (not from the module under test)."""
    convs = [
        ("Conv2d_1a_3x3", 3, 32, (3, 3)),
        ("Conv2d_2a_3x3", 32, 32, (3, 3)),
        ("Conv2d_2b_3x3", 32, 64, (3, 3)),
        ("Conv2d_3b_1x1", 64, 80, (1, 1)),
        ("Conv2d_4a_3x3", 80, 192, (3, 3)),
    ]
    for name, cin, pool in (("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)):
        convs += [
            (f"{name}.branch1x1", cin, 64, (1, 1)),
            (f"{name}.branch5x5_1", cin, 48, (1, 1)),
            (f"{name}.branch5x5_2", 48, 64, (5, 5)),
            (f"{name}.branch3x3dbl_1", cin, 64, (1, 1)),
            (f"{name}.branch3x3dbl_2", 64, 96, (3, 3)),
            (f"{name}.branch3x3dbl_3", 96, 96, (3, 3)),
            (f"{name}.branch_pool", cin, pool, (1, 1)),
        ]
    convs += [
        ("Mixed_6a.branch3x3", 288, 384, (3, 3)),
        ("Mixed_6a.branch3x3dbl_1", 288, 64, (1, 1)),
        ("Mixed_6a.branch3x3dbl_2", 64, 96, (3, 3)),
        ("Mixed_6a.branch3x3dbl_3", 96, 96, (3, 3)),
    ]
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        convs += [
            (f"{name}.branch1x1", 768, 192, (1, 1)),
            (f"{name}.branch7x7_1", 768, c7, (1, 1)),
            (f"{name}.branch7x7_2", c7, c7, (1, 7)),
            (f"{name}.branch7x7_3", c7, 192, (7, 1)),
            (f"{name}.branch7x7dbl_1", 768, c7, (1, 1)),
            (f"{name}.branch7x7dbl_2", c7, c7, (7, 1)),
            (f"{name}.branch7x7dbl_3", c7, c7, (1, 7)),
            (f"{name}.branch7x7dbl_4", c7, c7, (7, 1)),
            (f"{name}.branch7x7dbl_5", c7, 192, (1, 7)),
            (f"{name}.branch_pool", 768, 192, (1, 1)),
        ]
    convs += [
        ("Mixed_7a.branch3x3_1", 768, 192, (1, 1)),
        ("Mixed_7a.branch3x3_2", 192, 320, (3, 3)),
        ("Mixed_7a.branch7x7x3_1", 768, 192, (1, 1)),
        ("Mixed_7a.branch7x7x3_2", 192, 192, (1, 7)),
        ("Mixed_7a.branch7x7x3_3", 192, 192, (7, 1)),
        ("Mixed_7a.branch7x7x3_4", 192, 192, (3, 3)),
    ]
    for name, cin in (("Mixed_7b", 1280), ("Mixed_7c", 2048)):
        convs += [
            (f"{name}.branch1x1", cin, 320, (1, 1)),
            (f"{name}.branch3x3_1", cin, 384, (1, 1)),
            (f"{name}.branch3x3_2a", 384, 384, (1, 3)),
            (f"{name}.branch3x3_2b", 384, 384, (3, 1)),
            (f"{name}.branch3x3dbl_1", cin, 448, (1, 1)),
            (f"{name}.branch3x3dbl_2", 448, 384, (3, 3)),
            (f"{name}.branch3x3dbl_3a", 384, 384, (1, 3)),
            (f"{name}.branch3x3dbl_3b", 384, 384, (3, 1)),
            (f"{name}.branch_pool", cin, 192, (1, 1)),
        ]
    return convs


def _published_layout_state(num_batches_tracked: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict in the published file's layout; He-scaled so activations stay finite."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, cin, cout, (kh, kw) in _reference_convs():
        fan_in = cin * kh * kw
        state[f"{name}.conv.weight"] = torch.randn(cout, cin, kh, kw, generator=g) * math.sqrt(2 / fan_in)
        state[f"{name}.bn.weight"] = 1 + 0.1 * torch.randn(cout, generator=g)
        state[f"{name}.bn.bias"] = 0.1 * torch.randn(cout, generator=g)
        state[f"{name}.bn.running_mean"] = 0.1 * torch.randn(cout, generator=g)
        state[f"{name}.bn.running_var"] = 1 + torch.rand(cout, generator=g)
        if num_batches_tracked:
            state[f"{name}.bn.num_batches_tracked"] = torch.tensor(0)
    state["fc.weight"] = 0.01 * torch.randn(1008, 2048, generator=g)
    state["fc.bias"] = torch.zeros(1008)
    return state


def test_module_has_the_published_key_layout():
    model = FIDInceptionV3()
    got = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    expected = {k: tuple(v.shape) for k, v in _published_layout_state(False).items()}
    assert got == expected
    assert got["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
    assert got["Mixed_5b.branch5x5_2.conv.weight"] == (64, 48, 5, 5)
    assert got["Mixed_6e.branch7x7dbl_5.conv.weight"] == (192, 192, 1, 7)
    assert got["Mixed_7c.branch3x3dbl_3b.conv.weight"] == (384, 384, 3, 1)
    assert got["Mixed_7c.branch_pool.bn.running_var"] == (192,)
    assert got["fc.weight"] == (1008, 2048) and got["fc.bias"] == (1008,)
    # torchvision's inception_v3 has 27,161,264 parameters with aux logits and 1000 classes; without
    # the aux head (3,326,696) and with 8 more classes (8 × 2049) that is 23,850,960.
    assert sum(p.numel() for p in model.parameters()) == 23_850_960
    assert model.Conv2d_1a_3x3.bn.eps == pytest.approx(1e-3)


def _trust(monkeypatch: pytest.MonkeyPatch, path) -> None:
    """Make the registry accept ``path`` (random weights cannot carry the published hash)."""
    spec = weights.KNOWN["inception-fid"]
    prefix = weights.sha256_of(path)[: len(spec.sha256_prefix or "6726825d")]
    monkeypatch.setitem(weights.KNOWN, "inception-fid", dataclasses.replace(spec, sha256_prefix=prefix))


@pytest.mark.parametrize("num_batches_tracked", [False, True])
def test_load_published_layout_and_extract(tmp_path, monkeypatch, num_batches_tracked):
    state = _published_layout_state(num_batches_tracked)
    path = tmp_path / PUBLISHED
    torch.save(state, path)
    _trust(monkeypatch, path)
    model = load_fid_inception(path)
    assert not model.training
    assert torch.equal(model.Mixed_6e.branch7x7dbl_5.conv.weight, state["Mixed_6e.branch7x7dbl_5.conv.weight"])
    if num_batches_tracked:
        return  # the forward passes below do not depend on how the file was laid out
    x75 = torch.rand(2, 3, 75, 75)
    with torch.no_grad():
        feats = model(x75)
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all() and feats.abs().sum() > 0
    # Streaming batches gives the same features as one tensor; "bilinear" leaves resizing to the model.
    streamed = extract_features(model, iter([x75[:1], x75[1:]]), resize="bilinear", progress=True)
    assert streamed.dtype == np.float64 and streamed.shape == (2, 2048)
    np.testing.assert_allclose(streamed, feats.double().numpy(), rtol=1e-4, atol=1e-5)
    clean = extract_features(model, torch.rand(1, 3, 299, 299), batch_size=1)
    assert clean.shape == (1, 2048) and np.isfinite(clean).all()
    assert model.spatial_features(torch.rand(1, 3, 75, 75)).shape[1] == 64


def test_load_folder_uses_published_name(tmp_path, monkeypatch):
    path = tmp_path / PUBLISHED
    torch.save(_published_layout_state(False), path)
    _trust(monkeypatch, path)
    assert isinstance(load_fid_inception(tmp_path), FIDInceptionV3)


def test_wrong_hash_is_refused(tmp_path):
    path = tmp_path / PUBLISHED
    torch.save({"x": torch.zeros(3)}, path)
    with pytest.raises(WeightsError, match="sha256") as info:
        load_fid_inception(path)
    assert "6726825d" in str(info.value) and "\n" not in str(info.value)


def test_missing_file_names_it_and_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.delenv(weights.ENV_VAR, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    with pytest.raises(WeightsError) as info:
        load_fid_inception()
    msg = str(info.value)
    assert PUBLISHED in msg and str(tmp_path / "torch-home") in msg and weights.ENV_VAR in msg
    with pytest.raises(WeightsError, match="does not exist"):
        load_fid_inception(tmp_path / "nowhere.pth")


def test_mismatched_state_dict_gives_one_line_error(tmp_path, monkeypatch):
    state = _published_layout_state(False)
    del state["fc.bias"]
    state["Mixed_5b.branch1x1.conv.weight"] = torch.zeros(1, 1, 1, 1)
    path = tmp_path / PUBLISHED
    torch.save(state, path)
    _trust(monkeypatch, path)
    with pytest.raises(EdgeganError) as info:
        load_fid_inception(path)
    msg = str(info.value)
    assert str(path) in msg and "fc.bias" in msg and "Mixed_5b.branch1x1.conv.weight" in msg and "\n" not in msg


# ---------------------------------------------------------------------------------------------
# Clean resize
# ---------------------------------------------------------------------------------------------


def test_clean_resize_matches_pil_float_and_does_not_quantize():
    x = torch.rand(2, 3, 40, 52, dtype=torch.float32)
    out = clean_resize(x)
    assert out.shape == (2, 3, 299, 299) and out.dtype == torch.float32
    channel = x[1, 2].numpy()
    ref = np.asarray(Image.fromarray(channel).resize((299, 299), resample=Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(out[1, 2].numpy(), np.clip(ref, 0, 1))
    scaled = out.double() * 255
    assert (scaled - scaled.round()).abs().max() > 0.1  # not snapped to multiples of 1/255
    same = torch.full((1, 3, 299, 299), 0.123456)
    assert clean_resize(same) is same


# ---------------------------------------------------------------------------------------------
# SIFID and diversity
# ---------------------------------------------------------------------------------------------


def test_sifid_of_image_with_itself_is_zero():
    model = FIDInceptionV3().eval()
    real = torch.rand(1, 3, 64, 64)
    other = torch.rand(1, 3, 48, 80) ** 2
    result = sifid(model, real, torch.cat([real, real]))
    assert len(result.values) == 2 and result.mean == pytest.approx(0.0, abs=1e-6)
    assert sifid(model, real, other).values[0] > 1e-3
    assert set(result.to_dict()) == {"values", "mean"}


def test_diversity():
    real = torch.rand(3, 16, 16)
    assert diversity(real.expand(4, 3, 16, 16), real) == 0.0
    assert diversity(torch.rand(4, 3, 16, 16), real) > 0.1
    with pytest.raises(ValueError, match="at least 2"):
        diversity(real[None], real)
    with pytest.raises(ValueError, match="differ in shape"):
        diversity(torch.rand(4, 3, 8, 8), real)
