"""Energy per inference: from a hardware counter where the machine has one, else a labelled estimate.

Three sources, picked by :meth:`EnergyMeter.detect` in this order:

``nvml``
    On a CUDA device, NVIDIA's cumulative board-energy counter
    (``nvmlDeviceGetTotalEnergyConsumption``, millijoules since the driver loaded; Volta and newer)
    read through ``pynvml`` (the ``nvidia-ml-py`` package). It covers the whole GPU board, so it
    includes idle power and any other process using that GPU during the measurement.
``rapl``
    On CPU under Linux, Intel/AMD RAPL package counters in
    ``/sys/class/powercap/intel-rapl:*/energy_uj`` (microjoules), summed over every package
    (socket). They cover the whole package (all cores, caches, uncore), not just this process,
    and on most current kernels only root may read them.
``estimate``
    Neither counter usable: energy = a stated power (watts) x measured wall time. The power comes
    from the ``power_w`` argument, else the ``EDGEGAN_DEVICE_POWER_W`` environment variable, else a
    default: 15 W on CPU (a laptop/phone-class power budget) or, on CUDA, the GPU's NVML power
    limit when NVML answers, else 300 W. This is a model, not a measurement, and its label says so.
"""

from __future__ import annotations

import math
import os
import re
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

EnergySource = Literal["nvml", "rapl", "estimate"]

RAPL_ROOT = "/sys/class/powercap"
POWER_ENV = "EDGEGAN_DEVICE_POWER_W"
# A laptop/phone-class CPU power budget: the edge devices this package targets, not a server socket.
DEFAULT_CPU_POWER_W = 15.0
# Typical board power of a data-centre/desktop GPU, used only when NVML cannot report the real limit.
DEFAULT_CUDA_POWER_W = 300.0


@dataclass
class EnergyResult:
    """Energy and time of one call, averaged over ``calls`` timed calls.

    ``joules_per_call`` is the counter delta over the timed loop divided by ``calls`` (real sources)
    or ``power_w * seconds_per_call`` (estimate). With a real counter ``seconds_per_call`` is the
    loop's wall time divided by ``calls`` (a mean, to match the energy, which can only be
    averaged); with an estimate there is no counter to match, so it is the median call time,
    which a stray interruption cannot skew. ``median_ms`` is always the median per-call time.
    """

    joules_per_call: float
    seconds_per_call: float
    median_ms: float
    source: EnergySource
    label: str
    calls: int

    @property
    def edp(self) -> float:
        """Energy-delay product of one call, in joule-seconds (lower is better on both axes)."""
        return self.joules_per_call * self.seconds_per_call

    def to_dict(self) -> dict[str, Any]:
        return {
            "joules_per_call": self.joules_per_call,
            "seconds_per_call": self.seconds_per_call,
            "median_ms": self.median_ms,
            "source": self.source,
            "label": self.label,
            "calls": self.calls,
            "edp": self.edp,
        }


# --------------------------------------------------------------------------------------------- RAPL


def rapl_domains(root: str | Path = RAPL_ROOT) -> list[Path]:
    """Package-level RAPL domains under ``root`` whose ``energy_uj`` this process can read.

    Only top-level ``intel-rapl:N`` zones named ``package-*`` count: sub-zones (``core``,
    ``uncore``, ``dram``) are parts of, or beside, a package and would double count, and ``psys``
    (whole platform) overlaps the packages.
    """
    base = Path(root)
    try:
        entries = sorted(base.glob("intel-rapl:*"))
    except OSError:
        return []
    found = []
    for zone in entries:
        # "intel-rapl:0" is a package zone; "intel-rapl:0:1" is one of its sub-zones.
        if not re.fullmatch(r"intel-rapl:\d+", zone.name):
            continue
        try:
            name = (zone / "name").read_text().strip()
            if not name.startswith("package"):
                continue
            int((zone / "energy_uj").read_text())  # the read that fails without root on recent kernels
        except (OSError, ValueError):
            continue
        found.append(zone)
    return found


def rapl_available(root: str | Path = RAPL_ROOT) -> bool:
    """True when at least one RAPL package counter under ``root`` is readable."""
    return bool(rapl_domains(root))


class RaplReader:
    """Cumulative joules over all RAPL packages since this reader was made, wrap-around corrected.

    Each ``energy_uj`` counter rolls over to zero after ``max_energy_range_uj``; a drop between two
    reads is taken as one wrap, so reads must come more often than a full range (minutes to hours
    at package power, far longer than one measurement loop).
    """

    def __init__(self, root: str | Path = RAPL_ROOT) -> None:
        self.domains = rapl_domains(root)
        if not self.domains:
            raise RuntimeError(f"no readable RAPL package counter under {root}")
        self._range = [self._max_range(d) for d in self.domains]
        self._last = [self._raw(d) for d in self.domains]
        self._total_uj = 0

    @staticmethod
    def _raw(zone: Path) -> int:
        return int((zone / "energy_uj").read_text())

    @staticmethod
    def _max_range(zone: Path) -> int | None:
        try:
            return int((zone / "max_energy_range_uj").read_text())
        except (OSError, ValueError):
            return None

    def __call__(self) -> float:
        for i, zone in enumerate(self.domains):
            now = self._raw(zone)
            delta = now - self._last[i]
            if delta < 0:
                # The counter wrapped: it ran from the last value up to its range, then from 0 to now.
                span = self._range[i]
                if span is None:
                    raise RuntimeError(f"RAPL counter {zone} went backwards and has no max_energy_range_uj")
                delta += span
            self._total_uj += delta
            self._last[i] = now
        return self._total_uj / 1e6


# --------------------------------------------------------------------------------------------- NVML


def cuda_index(device: str) -> int:
    """The device index in ``"cuda"`` / ``"cuda:N"`` (``"cuda"`` means torch's current device, else 0)."""
    if ":" in device:
        return int(device.split(":", 1)[1])
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.current_device()
    except Exception:  # pragma: no cover - no usable torch CUDA: index 0 is the only sensible answer
        pass
    return 0


def _nvml_handle(pynvml: Any, index: int) -> Any:
    """NVML handle of torch's CUDA device ``index``.

    NVML numbers GPUs by PCI bus and ignores ``CUDA_VISIBLE_DEVICES``, while CUDA may renumber
    them, so match by UUID when torch can tell it, and fall back to the bare index.
    """
    try:
        import torch

        if torch.cuda.is_available():
            uuid = str(torch.cuda.get_device_properties(index).uuid)
            return pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
    except Exception:
        pass
    return pynvml.nvmlDeviceGetHandleByIndex(index)


def _nvml(index: int) -> tuple[Any, Any] | None:
    """``(pynvml, handle)`` for GPU ``index``, or None when pynvml is missing or NVML fails."""
    try:
        import pynvml  # type: ignore[import-not-found]  # optional: nvidia-ml-py
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()  # reference counted by NVML, so repeated calls are harmless
        return pynvml, _nvml_handle(pynvml, index)
    except Exception:
        return None


def nvml_available(index: int = 0) -> bool:
    """True when pynvml imports and GPU ``index`` answers the total-energy query."""
    nv = _nvml(index)
    if nv is None:
        return False
    pynvml, handle = nv
    try:
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        return True
    except Exception:  # NVMLError_NotSupported on pre-Volta boards, among others
        return False


def nvml_reader(index: int = 0) -> Callable[[], float]:
    """A reader of GPU ``index``'s cumulative board energy in joules (NVML reports millijoules)."""
    nv = _nvml(index)
    if nv is None:
        raise RuntimeError("NVML is not available (install nvidia-ml-py, and check the driver)")
    pynvml, handle = nv

    def read() -> float:
        return pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000.0

    return read


def nvml_power_limit_w(index: int = 0) -> float | None:
    """GPU ``index``'s enforced power limit in watts (NVML reports milliwatts), or None."""
    nv = _nvml(index)
    if nv is None:
        return None
    pynvml, handle = nv
    try:
        return pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0
    except Exception:
        return None


# -------------------------------------------------------------------------------------------- meter


def _check_power(power_w: float, origin: str) -> float:
    if not math.isfinite(power_w) or power_w <= 0:
        raise ValueError(f"power from {origin} must be a positive number of watts, got {power_w}")
    return float(power_w)


class EnergyMeter:
    """Measures joules per call of a function from one energy source.

    Built by :meth:`detect`, or directly: ``EnergyMeter("rapl", reader=f)`` with ``f()`` returning
    cumulative joules (any origin: only differences are used), or
    ``EnergyMeter("estimate", power_w=15.0)``.

    Attributes: ``source`` (``"nvml"``, ``"rapl"`` or ``"estimate"``), ``power_w`` (the assumed power
    for an estimate, None for real counters), ``power_origin`` (where that power came from:
    ``"argument"``, ``"env EDGEGAN_DEVICE_POWER_W"``, ``"nvml power limit"``, ``"default"``, or
    None), ``device`` and ``label`` (``"nvml"``, ``"rapl"`` or ``"estimate: 15.0 W x time"``).
    """

    def __init__(
        self,
        source: EnergySource,
        reader: Callable[[], float] | None = None,
        *,
        power_w: float | None = None,
        power_origin: str | None = None,
        device: str = "cpu",
    ) -> None:
        if source == "estimate":
            if power_w is None:
                raise ValueError("an estimate needs power_w")
            self.power_w: float | None = _check_power(power_w, power_origin or "argument")
            self.power_origin: str | None = power_origin or "argument"
            self._reader = None
        elif source in ("nvml", "rapl"):
            if reader is None:
                raise ValueError(f"source {source!r} needs a reader returning cumulative joules")
            # A real counter measures power; an assumed one would be ignored and only mislead.
            self.power_w = None
            self.power_origin = None
            self._reader = reader
        else:
            raise ValueError(f"unknown energy source {source!r}; expected 'nvml', 'rapl' or 'estimate'")
        self.source: EnergySource = source
        self.device = device

    @property
    def label(self) -> str:
        """How the numbers were obtained, fit to print beside them."""
        if self.source == "estimate":
            return f"estimate: {self.power_w:.1f} W x time"
        return self.source

    def __repr__(self) -> str:
        return f"EnergyMeter({self.label!r}, device={self.device!r})"

    @classmethod
    def detect(
        cls, device: str = "cpu", power_w: float | None = None, *, rapl_root: str | Path = RAPL_ROOT
    ) -> EnergyMeter:
        """The best source for ``device``: NVML on CUDA, RAPL on CPU, else an estimate.

        ``power_w`` is used only for the estimate (a real counter wins over an assumed power); without
        it the estimate takes ``$EDGEGAN_DEVICE_POWER_W``, then the device's default (see module doc).
        """
        cuda = device.startswith("cuda")
        index = cuda_index(device) if cuda else 0
        if cuda:
            if nvml_available(index):
                return cls("nvml", nvml_reader(index), device=device)
        elif rapl_available(rapl_root):
            return cls("rapl", RaplReader(rapl_root), device=device)

        if power_w is not None:
            return cls("estimate", power_w=power_w, power_origin="argument", device=device)
        env = os.environ.get(POWER_ENV, "").strip()
        if env:
            try:
                value = float(env)
            except ValueError:
                raise ValueError(f"{POWER_ENV}={env!r} is not a number of watts") from None
            return cls("estimate", power_w=value, power_origin=f"env {POWER_ENV}", device=device)
        if cuda:
            limit = nvml_power_limit_w(index)
            if limit:
                return cls("estimate", power_w=limit, power_origin="nvml power limit", device=device)
            return cls("estimate", power_w=DEFAULT_CUDA_POWER_W, power_origin="default", device=device)
        return cls("estimate", power_w=DEFAULT_CPU_POWER_W, power_origin="default", device=device)

    def read_joules(self) -> float | None:
        """The cumulative counter in joules for a real source; None for an estimate."""
        return None if self._reader is None else float(self._reader())

    def measure(
        self,
        fn: Callable[[], Any],
        *,
        warmup: int = 2,
        repeats: int = 10,
        min_seconds: float = 0.2,
        sync: Callable[[], None] | None = None,
    ) -> EnergyResult:
        """Joules and seconds per call of ``fn``.

        Runs ``warmup`` untimed calls, then calls ``fn`` until it has run at least ``repeats`` times
        AND for at least ``min_seconds``: counters tick coarsely (RAPL about every millisecond,
        NVML every few to tens of milliseconds), so a short loop would read as zero energy.
        ``sync`` runs after each call so asynchronous work (CUDA kernels) is inside the timing; on a
        CUDA meter it defaults to ``torch.cuda.synchronize``.
        """
        if repeats < 1:
            raise ValueError("repeats must be at least 1")
        if sync is None and self.device.startswith("cuda"):
            import torch

            if torch.cuda.is_available():
                sync = torch.cuda.synchronize
        for _ in range(warmup):
            fn()
        if sync:
            sync()

        times: list[float] = []
        e0 = self.read_joules()
        start = time.perf_counter()
        elapsed = 0.0
        while len(times) < repeats or elapsed < min_seconds:
            t0 = time.perf_counter()
            fn()
            if sync:
                sync()
            t1 = time.perf_counter()
            times.append(t1 - t0)
            elapsed = t1 - start
        e1 = self.read_joules()

        calls = len(times)
        seconds = elapsed / calls
        if e0 is None or e1 is None:
            seconds = statistics.median(times)
            joules = self.power_w * seconds  # type: ignore[operator]  # estimate: power_w is set
        else:
            delta = e1 - e0
            if delta <= 0:
                # The counter did not tick during the loop: raise min_seconds rather than trust a zero.
                warnings.warn(
                    f"{self.source} counter did not advance over {elapsed:.3f} s; increase min_seconds",
                    RuntimeWarning,
                    stacklevel=2,
                )
            joules = delta / calls
        return EnergyResult(
            joules_per_call=joules,
            seconds_per_call=seconds,
            median_ms=statistics.median(times) * 1000.0,
            source=self.source,
            label=self.label,
            calls=calls,
        )
