"""SETGAN's two quality estimators (chain and the paper's per-scale) and what the report records."""

from __future__ import annotations

import json

import pytest
import torch

from edgegan.metrics.patches import patch_realism
from edgegan.metrics.ssim import ssim
from edgegan.setgan.config import SETGANConfig
from edgegan.setgan.estimate import choose_scales, estimate_per_scale, estimate_quality
from edgegan.setgan.pyramid import SETGANPyramid, compute_pyramid, real_pyramid, resize
from edgegan.setgan.report import SAMPLE_SEED, finalize
from edgegan.setgan.train import fit

TINY = dict(max_size=36, min_size=25, iters=4, nfc=8, max_nfc=8, ckpt_every=2)  # 3 scales, 32x36 px
AMPS = [1.0, 0.2, 0.1]


def _image(h: int = 32, w: int = 36) -> torch.Tensor:
    """Smooth waves plus a fine pattern and a step, so the coarser scales lose detail; in [-1, 1]."""
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    fine = torch.sin(60 * x) * torch.sin(50 * y)
    img = torch.stack([0.6 * torch.sin(7 * x) + 0.4 * fine, torch.cos(5 * y), x * y * 2 - 1 + 0.5 * (x > 0.5)])
    return img[None].clamp(-1, 1)


def _reals() -> tuple[list[torch.Tensor], list[tuple[int, int]]]:
    spec = compute_pyramid(32, 36, max_size=36, min_size=25)
    assert spec.n_scales == 3
    return real_pyramid(_image(), spec), list(spec.sizes)


def _pyramid(make) -> tuple[SETGANPyramid, list[torch.Tensor]]:
    """A pyramid of hand-written generators ``make(i, reals)(prev, noise)``."""
    reals, sizes = _reals()
    z_rec = torch.randn(1, 1, *sizes[0], generator=torch.Generator().manual_seed(123))
    gens = [make(i, reals) for i in range(len(reals))]
    return SETGANPyramid(gens, AMPS, sizes, 0.75, z_rec), reals


def _unit(x: torch.Tensor) -> torch.Tensor:
    return (x + 1) / 2


def test_per_scale_is_one_when_every_scale_makes_the_real_image():
    def perfect(i, reals):
        return lambda prev, noise: reals[i].expand(prev.shape[0], -1, -1, -1)

    pyr, reals = _pyramid(perfect)
    for noise in ("random", "reconstruction"):
        q = estimate_per_scale(pyr, reals, draws=3, noise=noise)
        assert [x.index for x in q] == [0, 1, 2]
        assert [x.ssim for x in q] == pytest.approx([1.0, 1.0, 1.0], abs=1e-6)
        assert all(x.ssim_std == pytest.approx(0.0, abs=1e-6) for x in q)
    # The chain estimator sees the coarser scales' images up-sampled to full size: only k = N is exact.
    chain = estimate_quality(pyr, reals[-1], draws=2)
    assert chain[-1].ssim == pytest.approx(1.0, abs=1e-6) and chain[0].ssim < 0.97  # measured 0.958


def test_per_scale_feeds_the_up_sampled_real_coarser_image():
    # A generator that passes its input through scores exactly the up-sampled real coarser image.
    pyr, reals = _pyramid(lambda i, reals: lambda prev, noise: prev)
    q = estimate_per_scale(pyr, reals, draws=2)
    assert q[0].input_ssim is None
    for k in (1, 2):
        up = resize(reals[k - 1], reals[k].shape[-2:]).clamp(-1, 1)  # bicubic overshoots; samples are clamped
        by_hand = float(ssim(_unit(up), _unit(reals[k])))
        assert q[k].ssim == pytest.approx(by_hand, abs=1e-6) and q[k].input_ssim == pytest.approx(by_hand, abs=1e-6)
        assert 0.5 < by_hand < 0.99  # measured 0.982 and 0.985
    # Only the chosen scales are estimated, with the same values.
    assert estimate_per_scale(pyr, reals, draws=2, ks=[2])[0].ssim == pytest.approx(q[2].ssim)


def test_per_scale_noise_is_fresh_at_the_scale_amplitude_or_the_reconstruction_noise():
    seen: dict[int, list[torch.Tensor]] = {0: [], 1: [], 2: []}

    def record(i, reals):
        def g(prev, noise):
            seen[i].append(noise.clone())
            return prev + noise

        return g

    pyr, reals = _pyramid(record)
    estimate_per_scale(pyr, reals, draws=64, seed=5)
    for k, amp in enumerate(AMPS):
        z = seen[k][-1]
        assert z.shape[0] == 64 and z.std().item() == pytest.approx(amp, rel=0.1)
    z_rec = pyr.z_rec.expand(1, 3, *pyr.sizes[0])
    assert not torch.allclose(seen[0][-1][:1], z_rec)  # random samples never reuse the reconstruction noise
    estimate_per_scale(pyr, reals, noise="reconstruction")
    assert torch.equal(seen[0][-1], z_rec)
    assert seen[1][-1].abs().max() == 0 and seen[2][-1].abs().max() == 0
    with pytest.raises(ValueError, match="noise must be"):
        estimate_per_scale(pyr, reals, noise="fixed")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return fit(_image(), tmp_path_factory.mktemp("est") / "run", SETGANConfig(mode="serial", **TINY))


def test_report_holds_both_estimators_and_names_the_one_it_chose_by(run):
    report = finalize(run, quality=0.0, repeats=1, samples_per_scale=2)
    assert report["estimator"] == "chain" and set(report["estimators"]) == {"chain", "per_scale"}
    scales = report["scales"]
    chain = [s["ssim_chain"] for s in scales]
    per_scale = [s["ssim_per_scale"] for s in scales]
    assert [s["ssim"] for s in scales] == chain  # the old key keeps the chain estimator
    pyr = run.load_pyramid()
    reals, _ = run.load_reals()
    cfg = run.config()
    expected = estimate_per_scale(pyr, reals, draws=cfg.quality_draws, seed=cfg.seed)
    assert per_scale == pytest.approx([q.ssim for q in expected])
    assert scales[0]["ssim_per_scale_input"] is None and all(0 < s["ssim_per_scale_input"] < 1 for s in scales[1:])
    assert report["chosen_index"] == 0 and report["chosen_scales_by"] == {"chain": 1, "per_scale": 1}

    # Choosing by the per-scale estimator: the first scale that reaches its best value.
    threshold = max(per_scale)
    by_per_scale = finalize(run, quality=threshold, repeats=1, samples_per_scale=2, estimator="per_scale")
    k = choose_scales(per_scale, threshold)
    assert by_per_scale["estimator"] == "per_scale" and by_per_scale["chosen_index"] == k
    assert by_per_scale["chosen_scales_by"]["per_scale"] == k + 1
    assert by_per_scale["chosen_scales_by"]["chain"] == (
        None if choose_scales(chain, threshold) is None else choose_scales(chain, threshold) + 1
    )
    saved = json.loads((run.path / "report.json").read_text())
    assert saved["estimator"] == "per_scale"
    page = (run.path / "report.md").read_text()
    assert "by the **per_scale** estimator" in page and "**chain**" in page and "patch RMSE" in page
    with pytest.raises(ValueError, match="estimator must be"):
        finalize(run, estimator="best")  # type: ignore[arg-type]


def test_report_scores_the_random_samples_it_shows(run):
    report = finalize(run, repeats=1, samples_per_scale=3)
    pyr = run.load_pyramid()
    reals, _ = run.load_reals()
    for k, s in enumerate(report["scales"]):
        samples = pyr.sample(3, k, generator=torch.Generator().manual_seed(SAMPLE_SEED + k)).clamp(-1, 1)
        realism = patch_realism(_unit(samples), _unit(reals[k]), stride=s["random_patch_stride"])
        assert s["random_samples"] == 3 and s["random_patch_rmse"] == pytest.approx(float(realism.mean()))
        assert s["random_patch_rmse"] > 0 and s["random_diversity"] > 0 and s["random_diversity_singan"] > 0
    # The scale-0 samples are not the reconstruction (which a reused z_rec would give).
    first = pyr.sample(1, 0, generator=torch.Generator().manual_seed(SAMPLE_SEED))
    assert not torch.allclose(first, pyr.reconstruct(0), atol=1e-3)
