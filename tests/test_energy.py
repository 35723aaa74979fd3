import sys
import time
import types
from pathlib import Path

import pytest

from edgegan.profile import energy
from edgegan.profile.energy import (
    DEFAULT_CPU_POWER_W,
    DEFAULT_CUDA_POWER_W,
    POWER_ENV,
    EnergyMeter,
    EnergyResult,
    RaplReader,
    nvml_available,
    rapl_available,
    rapl_domains,
)


@pytest.fixture(autouse=True)
def _no_env_no_nvml(monkeypatch):
    # Each test states its own power and NVML; None in sys.modules makes `import pynvml` fail.
    monkeypatch.delenv(POWER_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "pynvml", None)


def _zone(root: Path, zone: str, name: str, uj: int | None, max_uj: int | None = 2**32) -> Path:
    d = root / zone
    d.mkdir(parents=True)
    (d / "name").write_text(name + "\n")
    if uj is None:
        (d / "energy_uj").mkdir()  # present but unreadable as a file, like a root-only counter
    else:
        (d / "energy_uj").write_text(f"{uj}\n")
    if max_uj is not None:
        (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return d


def _set(zone: Path, uj: int) -> None:
    (zone / "energy_uj").write_text(f"{uj}\n")


# ------------------------------------------------------------------------------------------ detection


def test_detect_on_this_machine_cpu():
    meter = EnergyMeter.detect()
    if rapl_available():  # a developer box with readable RAPL: the real counter must win
        assert meter.source == "rapl" and meter.power_w is None
    else:
        assert meter.source == "estimate"
        assert meter.power_w == DEFAULT_CPU_POWER_W
        assert "estimate" in meter.label and "15.0 W" in meter.label
        assert meter.read_joules() is None


def test_detect_without_counters_is_labelled_estimate(tmp_path):
    meter = EnergyMeter.detect("cpu", rapl_root=tmp_path)
    assert meter.source == "estimate"
    assert meter.power_w == DEFAULT_CPU_POWER_W
    assert meter.power_origin == "default"
    assert meter.label == "estimate: 15.0 W x time"


def test_detect_power_env_and_argument(tmp_path, monkeypatch):
    monkeypatch.setenv(POWER_ENV, "4.5")
    meter = EnergyMeter.detect("cpu", rapl_root=tmp_path)
    assert meter.power_w == 4.5 and meter.label == "estimate: 4.5 W x time"
    assert meter.power_origin == f"env {POWER_ENV}"
    # An explicit argument beats the environment.
    meter = EnergyMeter.detect("cpu", power_w=2.0, rapl_root=tmp_path)
    assert meter.power_w == 2.0 and meter.power_origin == "argument"


@pytest.mark.parametrize("bad", ["watts", "0", "-3"])
def test_detect_rejects_bad_env_power(tmp_path, monkeypatch, bad):
    monkeypatch.setenv(POWER_ENV, bad)
    with pytest.raises(ValueError):
        EnergyMeter.detect("cpu", rapl_root=tmp_path)


def test_detect_cuda_without_nvml_uses_default():
    assert not nvml_available(0)
    meter = EnergyMeter.detect("cuda:0")
    assert meter.source == "estimate" and meter.power_w == DEFAULT_CUDA_POWER_W


# ------------------------------------------------------------------------------------------------ RAPL


def test_rapl_domains_pick_readable_packages_only(tmp_path):
    _zone(tmp_path, "intel-rapl:0", "package-0", 1000)
    _zone(tmp_path, "intel-rapl:0:0", "core", 500)  # sub-zone: part of package 0
    _zone(tmp_path, "intel-rapl:1", "package-1", 2000)
    _zone(tmp_path, "intel-rapl:2", "psys", 9000)  # whole platform: overlaps the packages
    _zone(tmp_path, "intel-rapl:3", "package-3", None)  # root-only counter
    _zone(tmp_path, "intel-rapl-mmio:0", "package-0", 7000)  # second view of package 0
    assert [d.name for d in rapl_domains(tmp_path)] == ["intel-rapl:0", "intel-rapl:1"]
    assert rapl_available(tmp_path)
    assert not rapl_available(tmp_path / "missing")


def test_rapl_reader_sums_packages_and_handles_wrap(tmp_path):
    p0 = _zone(tmp_path, "intel-rapl:0", "package-0", 900_000, max_uj=1_000_000)
    p1 = _zone(tmp_path, "intel-rapl:1", "package-1", 5_000_000)
    reader = RaplReader(tmp_path)
    assert reader() == 0.0
    _set(p0, 950_000)
    _set(p1, 5_250_000)
    assert reader() == pytest.approx(0.3)  # 0.05 J + 0.25 J
    _set(p0, 150_000)  # wrapped: 50_000 up to the range, then 150_000 more
    assert reader() == pytest.approx(0.5)
    assert reader() == pytest.approx(0.5)  # no change, no energy


def test_rapl_reader_without_range_refuses_backwards_counter(tmp_path):
    p0 = _zone(tmp_path, "intel-rapl:0", "package-0", 900, max_uj=None)
    reader = RaplReader(tmp_path)
    _set(p0, 100)
    with pytest.raises(RuntimeError, match="max_energy_range_uj"):
        reader()


def test_detect_picks_rapl_and_measures(tmp_path):
    p0 = _zone(tmp_path, "intel-rapl:0", "package-0", 0)
    meter = EnergyMeter.detect("cpu", power_w=99.0, rapl_root=tmp_path)
    assert meter.source == "rapl" and meter.label == "rapl" and meter.power_w is None
    uj = [0]

    def work() -> None:  # each call "spends" 0.1 J on the fake package counter
        uj[0] += 100_000
        _set(p0, uj[0])

    res = meter.measure(work, warmup=3, repeats=5, min_seconds=0.0)
    assert res.source == "rapl" and res.calls == 5
    assert res.joules_per_call == pytest.approx(0.1)


def test_no_rapl_root_at_all(tmp_path):
    assert not rapl_available(tmp_path / "nope")
    with pytest.raises(RuntimeError):
        RaplReader(tmp_path / "nope")


# ------------------------------------------------------------------------------------------------ NVML


def _fake_nvml(monkeypatch, *, energy_mj: list[int] | None, limit_mw: int | None = 250_000) -> list:
    calls: list = []

    class NVMLError(Exception):
        pass

    def handle_by_index(i):
        calls.append(("index", i))
        return f"gpu{i}"

    def total_energy(handle):
        if energy_mj is None:
            raise NVMLError("Not Supported")
        return energy_mj[0]

    def power_limit(handle):
        if limit_mw is None:
            raise NVMLError("Not Supported")
        return limit_mw

    mod = types.SimpleNamespace(
        NVMLError=NVMLError,
        nvmlInit=lambda: None,
        nvmlDeviceGetHandleByIndex=handle_by_index,
        nvmlDeviceGetHandleByUUID=lambda uuid: f"gpu-{uuid}",
        nvmlDeviceGetTotalEnergyConsumption=total_energy,
        nvmlDeviceGetEnforcedPowerLimit=power_limit,
    )
    monkeypatch.setitem(sys.modules, "pynvml", mod)
    return calls


def test_detect_nvml_counter(monkeypatch):
    counter = [123_456]
    calls = _fake_nvml(monkeypatch, energy_mj=counter)
    assert nvml_available(1)
    meter = EnergyMeter.detect("cuda:1", power_w=50.0)
    assert meter.source == "nvml" and meter.label == "nvml" and meter.power_w is None
    assert ("index", 1) in calls
    assert meter.read_joules() == pytest.approx(123.456)  # NVML counts millijoules


def test_detect_nvml_without_energy_counter_uses_power_limit(monkeypatch):
    _fake_nvml(monkeypatch, energy_mj=None, limit_mw=250_000)
    assert not nvml_available(0)
    meter = EnergyMeter.detect("cuda")
    assert meter.source == "estimate" and meter.power_w == 250.0
    assert meter.power_origin == "nvml power limit"
    _fake_nvml(monkeypatch, energy_mj=None, limit_mw=None)
    assert EnergyMeter.detect("cuda").power_w == DEFAULT_CUDA_POWER_W


# ------------------------------------------------------------------------------------------------ measure


def test_measure_estimate_on_sleep():
    meter = EnergyMeter("estimate", power_w=10.0)
    res = meter.measure(lambda: time.sleep(0.002), warmup=1, repeats=10, min_seconds=0.05)
    assert isinstance(res, EnergyResult)
    assert res.source == "estimate" and "estimate" in res.label
    # The loop ran at least min_seconds; an estimate reports the median call (robust to load).
    assert res.calls >= 10
    assert 0.0019 <= res.seconds_per_call < 0.02
    assert res.median_ms == pytest.approx(res.seconds_per_call * 1000.0)
    assert res.joules_per_call == pytest.approx(10.0 * res.seconds_per_call)
    assert res.edp == pytest.approx(res.joules_per_call * res.seconds_per_call)
    assert res.to_dict()["edp"] == res.edp


def test_measure_runs_at_least_min_seconds():
    n = [0]

    def fn() -> None:
        n[0] += 1

    res = EnergyMeter("estimate", power_w=1.0).measure(fn, warmup=2, repeats=3, min_seconds=0.02)
    assert res.calls > 3  # a no-op takes far less than 0.02 s / 3
    assert n[0] == res.calls + 2


@pytest.mark.parametrize("source", ["rapl", "nvml"])
def test_measure_with_injected_reader(source):
    joules = [100.0]

    def reader() -> float:
        return joules[0]

    def fn() -> None:
        joules[0] += 0.25

    meter = EnergyMeter(source, reader=reader)
    assert meter.source == source and meter.label == source and meter.power_w is None
    res = meter.measure(fn, warmup=4, repeats=8, min_seconds=0.0)
    assert res.calls == 8 and res.source == source and res.label == source
    # Warm-up energy is not counted: delta over the timed loop / calls.
    assert res.joules_per_call == pytest.approx(0.25)
    assert meter.read_joules() == pytest.approx(100.0 + 12 * 0.25)


def test_measure_warns_when_counter_does_not_tick():
    meter = EnergyMeter("rapl", reader=lambda: 5.0)
    with pytest.warns(RuntimeWarning, match="did not advance"):
        res = meter.measure(lambda: None, warmup=0, repeats=2, min_seconds=0.0)
    assert res.joules_per_call == 0.0


def test_sync_called_after_each_call():
    events: list[str] = []
    meter = EnergyMeter("estimate", power_w=1.0)
    meter.measure(lambda: events.append("f"), warmup=1, repeats=2, min_seconds=0.0, sync=lambda: events.append("s"))
    assert events == ["f", "s", "f", "s", "f", "s"]


def test_constructor_validation():
    with pytest.raises(ValueError):
        EnergyMeter("estimate")
    with pytest.raises(ValueError):
        EnergyMeter("estimate", power_w=-1.0)
    with pytest.raises(ValueError):
        EnergyMeter("rapl")
    with pytest.raises(ValueError):
        EnergyMeter("joulemeter", reader=lambda: 0.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        EnergyMeter("estimate", power_w=1.0).measure(lambda: None, repeats=0)
    assert energy.EnergyMeter("estimate", power_w=15.0).label == "estimate: 15.0 W x time"
