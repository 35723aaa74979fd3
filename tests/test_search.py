import json

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import edgegan
from edgegan.compress.search import (
    SearchConfig,
    evaluate_config,
    evaluate_metrics,
    finalize_student,
    parse_macs,
    search,
    subnet_macs,
)
from edgegan.compress.search_cli import app
from edgegan.compress.supernet import extract_subnet
from edgegan.data import save_image
from edgegan.errors import ConfigError
from edgegan.models import MobileResnetGenerator, MobileResnetSupernet
from edgegan.profile.macs import profile_macs

CHOICES = (4, 6, 8)
SIZE = 32


def _supernet(seed=0):
    torch.manual_seed(seed)
    return MobileResnetSupernet(ngf=8, n_blocks=3).eval()


@pytest.fixture(scope="module")
def sup():
    return _supernet()


@pytest.fixture(scope="module")
def val():
    gen = torch.Generator().manual_seed(3)
    pairs = []
    for _ in range(3):
        a = F.interpolate(torch.rand(1, 3, 8, 8, generator=gen) * 2 - 1, size=SIZE, mode="bilinear")[0]
        pairs.append((a, -a.roll(1, dims=0)))
    return pairs


@pytest.fixture(scope="module")
def bounds(sup):
    lo = subnet_macs(sup, sup.smallest_config(CHOICES), SIZE)
    hi = subnet_macs(sup, sup.largest_config(), SIZE)
    return lo, hi


def _cfg(budget, **kw):
    base = {"size": SIZE, "choices": CHOICES, "population": 6, "generations": 3, "parents": 2, "seed": 0}
    return SearchConfig(budget_macs=int(budget), **{**base, **kw})


def test_parse_macs():
    assert parse_macs("2.5G") == 2_500_000_000
    assert parse_macs("800M") == 800_000_000
    assert parse_macs("120k") == 120_000
    assert parse_macs("1500") == 1500
    assert parse_macs(3e9) == 3_000_000_000
    for bad in ("", "abc", "2.5X", "-1G", "0"):
        with pytest.raises(ConfigError):
            parse_macs(bad)


def test_subnet_macs_matches_profile_of_extracted_subnet(sup):
    for ch in [sup.smallest_config(CHOICES), (8, 6, 4, 8, 6, 4, 6, 8), sup.largest_config()]:
        for size in (SIZE, 64, 36):
            sub = extract_subnet(sup, ch).eval()
            expected = profile_macs(sub, torch.zeros(1, 3, size, size)).macs_gc
            assert subnet_macs(sup, ch, size) == expected
    assert subnet_macs(sup, sup.smallest_config(CHOICES), SIZE) < subnet_macs(sup, sup.largest_config(), SIZE)


def test_evaluate_config_scores_ssim_by_default_and_restores_state(sup, val):
    ch = (8, 6, 4, 8, 6, 4, 6, 8)
    sup.set_config(sup.largest_config())
    score = evaluate_config(sup, ch, val)
    both = evaluate_metrics(sup, ch, val)
    assert isinstance(score, float) and -1 <= score <= 1 and score == both["ssim"]
    assert evaluate_config(sup, ch, val, metric="psnr") == both["psnr"] > 0
    assert sup.active_config == sup.largest_config()
    # Against a "teacher" that is the sub-network itself: SSIM 1, PSNR at the cap.
    teacher = extract_subnet(sup, ch).eval()
    assert evaluate_config(sup, ch, val, target="teacher", teacher=teacher) == pytest.approx(1.0)
    assert evaluate_config(sup, ch, val, target="teacher", teacher=teacher, metric="psnr") > 60
    with pytest.raises(ConfigError):
        evaluate_config(sup, ch, val, target="teacher")
    with pytest.raises(ConfigError, match="metric must be one of ssim, psnr, lpips, fid, kid"):
        evaluate_config(sup, ch, val, metric="last")


@pytest.mark.parametrize("mode", ["evolution", "random"])
def test_search_never_evaluates_over_budget(sup, val, bounds, mode):
    lo, hi = bounds
    for frac in (0.3, 0.8):
        budget = lo + frac * (hi - lo)
        for seed in (0, 1):
            res = search(sup, val, _cfg(budget, seed=seed, mode=mode, population=5, generations=2))
            assert res.best_macs <= budget
            assert res.best_macs == subnet_macs(sup, res.best_config, SIZE)
            assert res.history and all(h["macs"] <= budget for h in res.history)
            assert all(subnet_macs(sup, h["config"], SIZE) == h["macs"] for h in res.history)
            assert all(set(h["config"]) <= set(CHOICES) for h in res.history)
            assert res.best_score == max(h["score"] for h in res.history)
            assert 1 <= res.evaluated <= len(res.history)
    # A tight budget forces small winners: the smallest config only.
    tight = search(sup, val, _cfg(lo, mode=mode, population=3, generations=2))
    assert tight.best_config == sup.smallest_config(CHOICES) and tight.best_macs == lo


def test_tighter_budget_gives_smaller_or_equal_macs(sup, val, bounds):
    lo, hi = bounds
    budgets = [lo, lo + 0.4 * (hi - lo), hi]
    best_macs = [search(sup, val, _cfg(b, population=4, generations=2)).best_macs for b in budgets]
    # The best found under a budget is within it, and budgets form a chain of feasible sets.
    for b, m in zip(budgets, best_macs, strict=True):
        assert m <= b
    assert best_macs[0] == lo


def test_impossible_budget_raises(sup, val, bounds):
    lo, _ = bounds
    with pytest.raises(ConfigError, match="below the smallest"):
        search(sup, val, _cfg(lo - 1))
    with pytest.raises(ConfigError):
        _cfg(0)
    with pytest.raises(ConfigError):
        _cfg(lo, parents=10)
    with pytest.raises(ConfigError):
        search(sup, val, _cfg(lo, choices=(4, 16)))


def test_search_is_deterministic(sup, val, bounds):
    lo, hi = bounds
    budget = lo + 0.6 * (hi - lo)
    a = search(sup, val, _cfg(budget, seed=5))
    b = search(sup, val, _cfg(budget, seed=5))
    assert a.history == b.history
    assert (a.best_config, a.best_score, a.best_macs, a.evaluated) == (
        b.best_config,
        b.best_score,
        b.best_macs,
        b.evaluated,
    )
    c = search(sup, val, _cfg(budget, seed=6))
    assert c.history != a.history


def test_evolution_improves_on_initial_population(sup, val, bounds):
    lo, hi = bounds
    budget = lo + 0.7 * (hi - lo)
    calls = []
    res = search(sup, val, _cfg(budget, generations=4), progress=lambda g, n, s: calls.append((g, n, s)))
    initial = max(h["score"] for h in res.history if h["generation"] == 0)
    assert res.best_score >= initial
    per_gen = [max(h["score"] for h in res.history if h["generation"] == g) for g in range(4)]
    assert per_gen == sorted(per_gen)  # the parents survive, so no generation is worse
    assert [c[0] for c in calls] == [1, 2, 3, 4] and calls[-1][2] == res.best_score


def test_search_ranks_by_ssim_and_keeps_psnr_in_the_history(sup, val, bounds):
    lo, hi = bounds
    budget = lo + 0.7 * (hi - lo)
    res = search(sup, val, _cfg(budget, generations=2))
    for h in res.history:
        assert h["score"] == h["ssim"] and isinstance(h["psnr"], float)
        assert h["ssim"] == evaluate_metrics(sup, h["config"], val)["ssim"]
    by_psnr = search(sup, val, _cfg(budget, generations=2, metric="psnr"))
    assert all(h["score"] == h["psnr"] for h in by_psnr.history)
    assert by_psnr.best_score == max(h["psnr"] for h in by_psnr.history)
    with pytest.raises(ConfigError, match="metric"):
        _cfg(budget, metric="mse")


def test_lower_is_better_metrics_are_negated(sup, val, bounds, monkeypatch):
    """LPIPS (a stand-in network here) ranks the lowest distance first; the score is its negative."""
    import edgegan.compress.distill as distill_mod
    import edgegan.metrics.lpips as lpips_mod

    monkeypatch.setattr(distill_mod, "available", lambda name, path=None: (name, None))
    monkeypatch.setattr(lpips_mod, "load_lpips", lambda device="cpu", **kw: lpips_mod.LPIPS().eval())
    lo, hi = bounds
    res = search(sup, val, _cfg(lo + 0.7 * (hi - lo), population=3, generations=1, metric="lpips"))
    assert all(h["score"] == -h["lpips"] for h in res.history)
    assert -res.best_score == min(h["lpips"] for h in res.history)


def test_finalize_student(sup, val, tmp_path):
    ch = (6, 4, 8, 4, 6, 8, 6, 4)
    info = finalize_student(sup, ch, tmp_path / "final", size=SIZE)
    model = edgegan.load(info["model_dir"])
    assert type(model) is MobileResnetGenerator and model.config.channels == ch
    x = torch.randn(2, 3, SIZE, SIZE)
    sup.set_config(ch)
    with torch.no_grad():
        assert (model.eval()(x) - sup(x)).abs().max().item() < 1e-5
    assert info["max_abs_diff"] <= 1e-4
    assert (tmp_path / "final" / "student.onnx").is_file() and info["onnx"].endswith("student.onnx")
    assert info["macs_gc"] == subnet_macs(sup, ch, SIZE)
    assert info["params"] == sum(p.numel() for p in model.parameters())
    assert info["macs"] > 0


def test_cli_search(tmp_path, sup, val, bounds):
    a_dir, b_dir = tmp_path / "A", tmp_path / "B"
    for i, (a, b) in enumerate(val):
        save_image(a, a_dir / f"{i}.png")
        save_image(b, b_dir / f"{i}.png")
    sup_dir = sup.save(tmp_path / "sup")
    lo, hi = bounds
    budget = f"{(lo + 0.5 * (hi - lo)) / 1e3:.3f}K"
    args = ["search", "--supernet", str(sup_dir), "--a", str(a_dir), "--b", str(b_dir), "--budget-macs", budget]
    args += ["--size", str(SIZE), "--choices", "4,6,8", "--population", "4", "--generations", "2", "--parents", "2"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "by ssim: SSIM" in result.output and "PSNR" in result.output
    report = json.loads((tmp_path / "out" / "search.json").read_text())
    assert report["settings"]["metric"] == "ssim" and set(report["best_metrics"]) == {"psnr", "ssim"}
    assert report["best_macs"] <= parse_macs(budget)
    assert all(h["macs"] <= parse_macs(budget) for h in report["history"])
    assert type(edgegan.load(report["student"]["model_dir"])) is MobileResnetGenerator
    assert (tmp_path / "out" / "student.onnx").is_file()
    missing = CliRunner().invoke(app, [a for a in args if a not in ("--b", str(b_dir))] + ["--out", "x"])
    assert isinstance(missing.exception, ConfigError)
    by_psnr = CliRunner().invoke(app, [*args, "--metric", "psnr", "--out", str(tmp_path / "psnr")])
    assert by_psnr.exit_code == 0 and "by psnr" in by_psnr.output
    bad = CliRunner().invoke(app, [*args, "--metric", "mse", "--out", str(tmp_path / "bad")])
    assert isinstance(bad.exception, ConfigError)
