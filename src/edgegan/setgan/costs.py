"""Cost of running scales 0..k: parameters, bytes, MACs, latency, energy and normalised EDP."""

from __future__ import annotations

import zlib
from typing import Any

import torch

from edgegan.profile.energy import EnergyMeter
from edgegan.profile.latency import time_function
from edgegan.profile.macs import count_params, profile_macs
from edgegan.setgan.export import onnx_pyramid
from edgegan.setgan.pyramid import SETGANPyramid
from edgegan.setgan.run import SETGANRun


@torch.no_grad()
def pyramid_costs(
    run: SETGANRun,
    pyr: SETGANPyramid,
    *,
    device: str = "cpu",
    repeats: int = 10,
    warmup: int = 2,
    onnx: bool = True,
    meter: EnergyMeter | None = None,
) -> list[dict[str, Any]]:
    """One row per k, cumulative over scales 0..k, batch 1 at the training sizes.

    Latency is measured for PyTorch (on ``device``) and ONNX Runtime (CPU, the on-device
    path); energy comes from ``meter`` on the PyTorch run (a real counter where the machine
    has one, else a labelled estimate); ``edp_norm`` = EDP_k / EDP of all scales.
    """
    meter = meter or EnergyMeter.detect(device)
    pyr = pyr.to(device)
    sizes = pyr.sizes
    gen = torch.Generator().manual_seed(0)
    noises = pyr.noises(1, sizes, pyr.n_scales - 1, generator=gen)
    per_scale_macs, per_scale_params, per_bytes, per_zip = [], [], [], []
    for i, g in enumerate(pyr.generators):
        # MACs depend on shapes only: the up-sampled input has the scale's own size.
        per_scale_macs.append(profile_macs(g, (torch.zeros_like(noises[i]), noises[i])).macs)
        per_scale_params.append(count_params(g))
        data = (run.scale_dir(i) / "model.safetensors").read_bytes()
        per_bytes.append(len(data))
        per_zip.append(len(zlib.compress(data, 9)))
    ort = onnx_pyramid(run.path / "onnx") if onnx and (run.path / "onnx" / "manifest.json").is_file() else None
    cuda = device.startswith("cuda")
    rows = []
    for k in range(pyr.n_scales):
        nk = noises[: k + 1]

        def torch_run(nk=nk) -> None:
            pyr.run(nk, sizes)

        t_torch = time_function(torch_run, backend="torch", warmup=warmup, repeats=repeats, cuda=cuda)
        row: dict[str, Any] = {
            "index": k,
            "scales": k + 1,
            "size": [sizes[k][1], sizes[k][0]],
            "channels": int(pyr.generators[k].config.channels),  # type: ignore[union-attr]
            "params": sum(per_scale_params[: k + 1]),
            "bytes_fp32": sum(per_bytes[: k + 1]),
            "bytes_compressed": sum(per_zip[: k + 1]),
            "macs": sum(per_scale_macs[: k + 1]),
            "latency_ms": {"torch": t_torch.median_ms},
        }
        if ort is not None:
            nk_cpu = [z.cpu() for z in nk]

            def ort_run(nk_cpu=nk_cpu) -> None:
                ort.run(nk_cpu, sizes)

            row["latency_ms"]["onnxruntime"] = time_function(
                ort_run, backend="onnxruntime", warmup=warmup, repeats=repeats
            ).median_ms
        energy = meter.measure(torch_run, warmup=1, repeats=repeats, sync=torch.cuda.synchronize if cuda else None)
        row["energy_j"] = energy.joules_per_call
        row["energy_source"] = energy.source
        row["energy_label"] = energy.label
        row["edp"] = energy.joules_per_call * energy.seconds_per_call
        rows.append(row)
    full = rows[-1]["edp"]
    for row in rows:
        row["edp_norm"] = row["edp"] / full if full > 0 else None
    return rows
