"""Search under a measured latency budget (issue 17): the latency model, the search, the winner's check, the CLI."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from edgegan.compress.search import (
    SearchConfig,
    search,
    subnet_features,
    subnet_macs,
    supernet_latency_model,
)
from edgegan.compress.search_cli import app
from edgegan.data import save_image
from edgegan.errors import ConfigError
from edgegan.models import MobileResnetSupernet
from edgegan.profile.latency_model import FEATURES, LatencyModel, cost_features, fit_latency_model, measure_onnx_ms

CHOICES = (4, 6, 8)
SIZE = 32
# A synthetic machine: ms = 2 + 30/G dense MACs + 90/G depthwise + 10/G pointwise + 20/G transposed + 0.5/M elements.
TRUE = {"conv_g": 30.0, "depthwise_g": 90.0, "pointwise_g": 10.0, "transposed_g": 20.0, "elements_m": 0.5}


def _fake_ms(model: nn.Module) -> float:
    f = cost_features(model, SIZE)
    return 2.0 + sum(TRUE.get(k, 0.0) * v for k, v in f.items())


@pytest.fixture(scope="module")
def sup():
    torch.manual_seed(0)
    return MobileResnetSupernet(ngf=8, n_blocks=3).eval()


@pytest.fixture(scope="module")
def val():
    gen = torch.Generator().manual_seed(3)
    pairs = []
    for _ in range(3):
        a = F.interpolate(torch.rand(1, 3, 8, 8, generator=gen) * 2 - 1, size=SIZE, mode="bilinear")[0]
        pairs.append((a, -a.roll(1, dims=0)))
    return pairs


def _cfg(**kw):
    base = {"size": SIZE, "choices": CHOICES, "population": 6, "generations": 3, "parents": 2, "seed": 0}
    return SearchConfig(**{**base, **kw})


def test_cost_features_count_each_convolution_kind():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # dense: 8 * 27 MACs per pixel
        nn.InstanceNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise: 8 * 9
        nn.Conv2d(8, 4, 1),  # pointwise: 4 * 8
        nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1),  # transposed, true MACs: input elements x 2 x 16
    )
    f = cost_features(net, 64)
    px = 64 * 64
    assert f["conv_g"] == pytest.approx(px * 8 * 27 / 1e9)
    assert f["depthwise_g"] == pytest.approx(px * 8 * 9 / 1e9)
    assert f["pointwise_g"] == pytest.approx(px * 4 * 8 / 1e9)
    assert f["transposed_g"] == pytest.approx(px * 4 * 2 * 16 / 1e9)
    assert f["elements_m"] == pytest.approx(2 * px * 8 / 1e6)  # the norm's and the ReLU's outputs
    # Profiled at 32 px and scaled: the same as profiling at full size.
    assert cost_features(net, 36)["conv_g"] == pytest.approx(36 * 36 * 8 * 27 / 1e9)


def test_latency_model_recovers_a_linear_machine_and_reports_its_error(sup):
    configs = [(4,) * 8, (8,) * 8, (6, 4, 8, 4, 6, 8, 6, 4), (8, 6, 4, 8, 4, 6, 8, 6), (4, 8, 6, 6, 8, 4, 4, 8)]
    configs += [(6,) * 8, (8, 8, 4, 4, 6, 6, 8, 8), (4, 6, 4, 6, 4, 6, 4, 6)]
    from edgegan.compress.supernet import extract_subnet

    model = fit_latency_model(lambda c: extract_subnet(sup, c).eval(), configs, SIZE, measure=_fake_ms)
    assert model.error["n"] == 2 and model.error["median_abs_pct"] < 1.0
    for s in model.samples:
        assert s["predicted_ms"] == pytest.approx(s["measured_ms"], rel=1e-3)
    assert all(v >= 0 for v in model.coef.values()) and model.intercept >= 0
    again = LatencyModel.from_dict(json.loads(json.dumps(model.to_dict())))
    f = subnet_features(sup, configs[2], SIZE)
    assert again.predict(f) == pytest.approx(model.predict(f))
    with pytest.raises(ConfigError, match="fitted at"):
        again.check_matches((64, 64), 1)
    with pytest.raises(ConfigError, match="at least 3"):
        fit_latency_model(lambda c: extract_subnet(sup, c), configs[:2], SIZE, measure=_fake_ms)


def test_measure_onnx_ms_times_a_real_export(sup):
    from edgegan.compress.supernet import extract_subnet

    ms = measure_onnx_ms(extract_subnet(sup, (4,) * 8), SIZE, threads=1, warmup=1, repeats=3)
    assert math.isfinite(ms) and 0 < ms < 5000


def test_search_config_takes_exactly_one_budget():
    with pytest.raises(ConfigError, match="one budget"):
        _cfg()
    with pytest.raises(ConfigError, match="one budget"):
        _cfg(budget_macs=10**9, budget_ms=5.0)
    with pytest.raises(ConfigError, match="budget_ms"):
        _cfg(budget_ms=-1.0)
    assert _cfg(budget_ms=3).budget_ms == 3.0


def test_latency_budget_search_stays_under_the_budget_and_checks_the_winner(sup, val):
    lm = supernet_latency_model(sup, SIZE, choices=CHOICES, samples=10, measure=_fake_ms)
    lo = _fake_ms(_extract(sup, (4,) * 8))
    hi = _fake_ms(_extract(sup, (8,) * 8))
    budget = lo + 0.4 * (hi - lo)
    result = search(sup, val, _cfg(budget_ms=budget), latency_model=lm, measure=_fake_ms)
    assert all(h["predicted_ms"] <= budget + 1e-3 for h in result.history)
    assert all(h["macs"] == subnet_macs(sup, h["config"], SIZE) for h in result.history)
    lat = result.latency
    assert lat["within_budget"] and lat["measured_ms"] <= budget
    assert lat["measured_ms"] == pytest.approx(_fake_ms(_extract(sup, result.best_config)))
    assert lat["threads"] == 1 and lat["size"] == [SIZE, SIZE] and "cpu" in lat["machine"]
    # A tighter budget never gives a slower student.
    tight = search(sup, val, _cfg(budget_ms=lo + 0.1 * (hi - lo)), latency_model=lm, measure=_fake_ms)
    assert tight.latency["measured_ms"] <= lat["measured_ms"] + 1e-9


def _extract(sup, config):
    from edgegan.compress.supernet import extract_subnet

    return extract_subnet(sup, config).eval()


def test_winner_measured_over_budget_falls_back_to_the_next_candidate(sup, val):
    lm = supernet_latency_model(sup, SIZE, choices=CHOICES, samples=10, measure=_fake_ms)
    lo, hi = _fake_ms(_extract(sup, (4,) * 8)), _fake_ms(_extract(sup, (8,) * 8))
    cfg = _cfg(budget_ms=lo + 0.5 * (hi - lo))
    plain = search(sup, val, cfg, latency_model=lm, measure=_fake_ms)
    slow = tuple(plain.best_config)

    def measure(model: nn.Module) -> float:  # the predicted winner is twice as slow as predicted on this "machine"
        return 2 * hi if tuple(model.config.channels) == slow else _fake_ms(model)

    result = search(sup, val, cfg, latency_model=lm, measure=measure)
    checked = result.latency["checked"]
    assert tuple(checked[0]["config"]) == slow and checked[0]["measured_ms"] > cfg.budget_ms
    assert result.latency["within_budget"] and tuple(result.best_config) != slow
    assert result.latency["measured_ms"] <= cfg.budget_ms
    assert result.best_score <= plain.best_score


def test_impossible_latency_budget_raises(sup, val):
    lm = supernet_latency_model(sup, SIZE, choices=CHOICES, samples=6, measure=_fake_ms)
    with pytest.raises(ConfigError, match="predicted-latency"):
        search(sup, val, _cfg(budget_ms=0.5), latency_model=lm, measure=_fake_ms)


def test_cli_search_under_a_latency_budget(tmp_path, sup, val):
    a_dir, b_dir = tmp_path / "A", tmp_path / "B"
    for i, (a, b) in enumerate(val):
        save_image(a, a_dir / f"{i}.png")
        save_image(b, b_dir / f"{i}.png")
    sup_dir = sup.save(tmp_path / "sup")
    args = ["search", "--supernet", str(sup_dir), "--a", str(a_dir), "--b", str(b_dir), "--budget-ms", "1000"]
    args += ["--size", str(SIZE), "--choices", "4,6,8", "--population", "4", "--generations", "2", "--parents", "2"]
    args += ["--latency-samples", "6"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "ms measured" in result.output and "latency model:" in result.output
    report = json.loads((tmp_path / "out" / "search.json").read_text())
    lat = report["latency"]
    assert lat["runtime"] == "onnxruntime" and lat["within_budget"] and 0 < lat["measured_ms"] <= 1000
    assert set(lat["model"]["coef"]) == set(FEATURES)
    saved = tmp_path / "out" / "latency_model.json"
    assert LatencyModel.load(saved).threads == 1
    reuse = CliRunner().invoke(app, [*args, "--latency-model", str(saved), "--out", str(tmp_path / "again")])
    assert reuse.exit_code == 0, reuse.output
    assert not (tmp_path / "again" / "latency_model.json").exists()  # reused, not refitted
    both = CliRunner().invoke(app, [*args, "--budget-macs", "1G", "--out", str(tmp_path / "both")])
    assert isinstance(both.exception, ConfigError)


def test_ugc_student_search_under_a_latency_budget():
    from edgegan.models import DepthWidthSupernet
    from edgegan.ugc.config import UGCConfig
    from edgegan.ugc.search import search_student
    from edgegan.ugc.search import subnet_macs as ugc_macs

    torch.manual_seed(0)
    net = DepthWidthSupernet(ngf=8, n_blocks=3, max_inserted=2).eval()
    base = {"ngf": 8, "n_blocks": 3, "max_inserted": 2, "widths": (2, 4, 8), "depths": (0, 1, 2)}
    base |= {"population": 4, "generations": 2, "parents": 2, "profile_size": SIZE, "latency_samples": 8}
    genes = net.gene_choices((2, 4, 8), (0, 1, 2), None)
    small = _fake_ms(net.extract(net.validate_config(tuple(g[0] for g in genes))).eval())
    large = _fake_ms(net.extract(net.validate_config(tuple(g[-1] for g in genes))).eval())
    cfg = UGCConfig(**base, budget_ms=small + 0.3 * (large - small))
    gen = torch.Generator().manual_seed(0)
    pairs = [(torch.rand(3, SIZE, SIZE, generator=gen) * 2 - 1,) * 2 for _ in range(2)]
    result = search_student(net, pairs, cfg, measure=_fake_ms)
    lat = result.latency
    assert lat["within_budget"] and lat["measured_ms"] <= cfg.budget_ms
    assert all(h["predicted_ms"] <= cfg.budget_ms + 1e-3 for h in result.history)
    assert result.best_macs == ugc_macs(net, result.best_config, SIZE)
    assert lat["model_error"]["fit_median_abs_pct"] < 5.0  # the synthetic machine is linear in the features
    with pytest.raises(ConfigError, match="budget_ms"):
        UGCConfig(**base, budget_ms=0)
