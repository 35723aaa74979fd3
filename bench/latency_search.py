"""Latency-budget vs MAC-budget search on the same trained supernet, at the same measured latency (issue 17).

Usage: python bench/latency_search.py [--run bench/results/gan_compression_cool] [--size 256] [--threads 1]
                                      [--samples 24] [--out bench/results/latency_search] [--quick]

1. The supernet, teacher and data of ``bench/gan_compression.py --task cool`` (``RUN/pipeline``, ``RUN/data``);
   candidates are scored on the pipeline's own validation slice of the *training* pairs (16 images at the
   search size, SSIM, as the pipeline's search stage), with the pipeline's search settings.
2. MAC search: the pipeline's MAC budget (scaled to ``--size``: MACs scale with the pixel count). Its winner
   is exported and timed directly in ONNX Runtime at ``--size``×``--size``, batch 1, ``--threads``: that
   measured latency is the latency budget of step 3.
3. Latency search: a latency model fitted on ``--samples`` directly measured sub-networks (a quarter held out:
   its error against direct measurement), the same search under ``--budget-ms`` = step 2's latency, the
   winner measured directly (and the next best while it is over budget).
4. Both winners (supernet weights, no fine-tuning: the comparison is of the searches) on the whole
   validation slice, then on the test pairs (``RUN/data/*/test``, report only), PSNR/SSIM against the
   editor's output; both timed again round-robin so that the machine's load hits both alike.

Writes ``OUT/results.json``, ``OUT/report.md`` and ``OUT/latency_model.png`` (predicted vs measured).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

import edgegan
from edgegan.compress.pipeline import _val_pairs, preset
from edgegan.compress.search import (
    SearchConfig,
    search,
    subnet_macs,
    supernet_latency_model,
)
from edgegan.compress.supernet import extract_subnet
from edgegan.data.datasets import PairedDataset
from edgegan.export.onnx import export_onnx
from edgegan.fileio import atomic_write_json
from edgegan.metrics.reference import psnr, ssim
from edgegan.profile import machine_info, machine_line
from edgegan.profile.latency import onnx_latency_interleaved
from edgegan.profile.latency_model import cost_features, measure_onnx_ms

console = Console()


def _unit(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1) / 2).clamp(0, 1)


@torch.no_grad()
def _score(model: torch.nn.Module, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    model.eval()
    p, s = [], []
    for a, b in pairs:
        y = _unit(model(a[None]))
        p.append(min(float(psnr(y, _unit(b[None]))[0]), 100.0))
        s.append(float(ssim(y, _unit(b[None]))[0]))
    return {"psnr": sum(p) / len(p), "ssim": sum(s) / len(s), "n": len(p)}


def _test_pairs(data: Path, size: int, limit: int | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    ds = PairedDataset.from_folders(
        data / "A" / "test",
        data / "B" / "test",
        direction="AtoB",
        load_size=size,
        crop_size=size,
        train=False,
        flip=False,
    )
    n = len(ds) if limit is None else min(limit, len(ds))
    return [(ds[i]["A"], ds[i]["B"]) for i in range(n)]


def _plot(model_samples: list[dict[str, Any]], winners: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for held, colour, label in ((False, "tab:blue", "fitted on"), (True, "tab:orange", "held out")):
        pts = [s for s in model_samples if s["held_out"] == held]
        ax.scatter([s["measured_ms"] for s in pts], [s["predicted_ms"] for s in pts], s=14, c=colour, label=label)
    for name, w in winners.items():
        ax.scatter([w["measured_ms"]], [w["predicted_ms"]], marker="*", s=120, label=f"{name} winner")
    lo = min(min(s["measured_ms"], s["predicted_ms"]) for s in model_samples)
    hi = max(max(s["measured_ms"], s["predicted_ms"]) for s in model_samples)
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel("measured ms (ONNX Runtime)")
    ax.set_ylabel("predicted ms (latency model)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("bench/results/gan_compression_cool"))
    ap.add_argument("--preset", default="editor-cpu", help="the pipeline preset the run was trained with")
    ap.add_argument("--size", type=int, default=256, help="deployment size the budgets refer to")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads the latency budget refers to")
    ap.add_argument("--samples", type=int, default=24, help="sub-networks measured to fit the latency model")
    ap.add_argument("--rounds", type=int, default=6, help="round-robin rounds of the final timing")
    ap.add_argument("--test-limit", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="smoke run: 64 px, 8 samples, small search")
    ap.add_argument("--out", type=Path, default=Path("bench/results/latency_search"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.size, args.samples, args.rounds, args.test_limit = 64, 8, 2, 8
    pipe = args.run / "pipeline"
    if not (pipe / "search" / "search.json").is_file() or not (pipe / "supernet" / "supernet").is_dir():
        raise SystemExit(f"{args.run} holds no finished GAN Compression run: run bench/gan_compression.py --task cool")
    summary = json.loads((pipe / "search" / "search.json").read_text())
    cfg = preset(args.preset)
    net = edgegan.load(pipe / "supernet" / "supernet").eval()
    data = args.run / "data"
    val = _val_pairs(data / "A" / "train", data / "B" / "train", cfg)
    cfg_all = preset(args.preset)
    cfg_all.val_images = 10**6
    val_all = _val_pairs(data / "A" / "train", data / "B" / "train", cfg_all)
    test = _test_pairs(data, cfg.search_size, args.test_limit)
    search_kw: dict[str, Any] = {
        "size": args.size,
        "choices": tuple(cfg.supernet.choices),
        "population": cfg.population if not args.quick else 4,
        "generations": cfg.generations if not args.quick else 2,
        "parents": cfg.parents if not args.quick else 2,
        "mutate_prob": cfg.mutate_prob,
        "mode": cfg.search_mode,
        "seed": cfg.search_seed,
        "metric": cfg.search_metric,
    }
    scale = (args.size * args.size) / (summary["size"] * summary["size"])
    budget_macs = round(summary["budget_macs"] * scale)
    console.log(f"MAC search: budget {budget_macs / 1e9:.3f} G MACs at {args.size} px")
    t0 = time.perf_counter()
    by_macs = search(net, val, SearchConfig(budget_macs=budget_macs, **search_kw))
    t_macs = time.perf_counter() - t0
    mac_ms = measure_onnx_ms(extract_subnet(net, by_macs.best_config), args.size, threads=args.threads)
    console.log(f"MAC winner {by_macs.best_config}: {by_macs.best_macs / 1e9:.3f} G MACs, {mac_ms:.1f} ms measured")

    console.log(f"latency model: measuring {args.samples} sub-networks at {args.size} px, {args.threads} thread(s)")
    t0 = time.perf_counter()
    lm = supernet_latency_model(
        net, args.size, choices=search_kw["choices"], threads=args.threads, samples=args.samples, seed=0
    )
    t_fit = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    lm.save(args.out / "latency_model.json")
    console.log(f"latency model error on held-out sub-networks: {lm.error}")
    t0 = time.perf_counter()
    by_ms = search(
        net, val, SearchConfig(budget_ms=mac_ms, latency_threads=args.threads, **search_kw), latency_model=lm
    )
    t_ms = time.perf_counter() - t0
    assert by_ms.latency is not None
    console.log(f"latency winner {by_ms.best_config}: {by_ms.latency['measured_ms']:.1f} ms measured")

    winners = {"macs": by_macs.best_config, "latency": by_ms.best_config}
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        x = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
        for name, config in winners.items():
            sub = extract_subnet(net, config).eval()
            paths[name] = Path(tmp) / f"{name}.onnx"
            export_onnx(sub, paths[name], example=x, check=False)
            hist = next(h for h in (by_macs if name == "macs" else by_ms).history if tuple(h["config"]) == config)
            rows[name] = {
                "config": list(config),
                "macs_gc": subnet_macs(net, config, args.size),
                "predicted_ms": lm.predict(cost_features(sub, args.size)),
                "search_val": {k: hist.get(k) for k in ("psnr", "ssim")},
                "val": _score(sub, val_all),
                "test": _score(sub, test),
            }
        timing = onnx_latency_interleaved(paths, x, rounds=args.rounds, repeats=5, threads=args.threads)
    for name in rows:
        rows[name]["measured_ms"] = timing[name].median_ms
    loadavg = os.getloadavg()
    same = tuple(by_macs.best_config) == tuple(by_ms.best_config)
    better = (
        "same student"
        if same
        else ("latency" if rows["latency"]["val"]["ssim"] > rows["macs"]["val"]["ssim"] else "macs")
    )
    results = {
        "settings": {
            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in search_kw.items()},
            "threads": args.threads,
            "samples": args.samples,
            "run": str(args.run),
            "preset": args.preset,
        },
        "machine": machine_info(),
        "loadavg": loadavg,
        "budget_macs": budget_macs,
        "budget_ms": mac_ms,
        "latency_model": lm.to_dict(),
        "search_latency": by_ms.latency,
        "winners": rows,
        "better_on_val": better,
        "seconds": {"mac_search": t_macs, "fit": t_fit, "latency_search": t_ms},
    }
    atomic_write_json(args.out / "results.json", results)
    _plot(lm.samples, rows, args.out / "latency_model.png")

    err = lm.error
    checked = ", ".join(
        f"{c['predicted_ms']:.1f} predicted / {c['measured_ms']:.1f} measured" for c in by_ms.latency["checked"]
    )
    lines = [
        "# Latency-budget vs MAC-budget search on one supernet",
        "",
        f"Supernet, validation slice and search settings of `{args.run}` (preset {args.preset}); budgets at "
        f"{args.size}x{args.size}, batch 1, ONNX Runtime with {args.threads} thread(s). Machine: {machine_line()}; "
        f"load average during the run {loadavg[0]:.2f} / {loadavg[1]:.2f} / {loadavg[2]:.2f}.",
        "",
        f"MAC budget: {budget_macs / 1e9:.3f} G (the pipeline's, scaled to {args.size} px). Its winner measured "
        f"{mac_ms:.1f} ms; that is the latency budget.",
        "",
        f"Latency model: fitted on {args.samples} directly measured sub-networks in {t_fit:.0f} s; on "
        f"{int(err.get('n', 0))} held-out ones its error is {err.get('median_abs_pct', float('nan')):.1f}% "
        f"median, {err.get('max_abs_pct', float('nan')):.1f}% max (fit {err['fit_median_abs_pct']:.1f}% / "
        f"{err['fit_max_abs_pct']:.1f}%). `latency_model.png`: predicted vs measured.",
        "",
        "| search | config | MACs (GC) | predicted ms | measured ms (round-robin) "
        "| val PSNR | val SSIM | test PSNR | test SSIM |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} budget | {'_'.join(map(str, r['config']))} | {r['macs_gc'] / 1e9:.3f} G "
            f"| {r['predicted_ms']:.1f} | "
            f"{r['measured_ms']:.1f} | {r['val']['psnr']:.2f} | {r['val']['ssim']:.4f} | {r['test']['psnr']:.2f} | "
            f"{r['test']['ssim']:.4f} |"
        )
    lines += [
        "",
        f"Winner's check: {len(by_ms.latency['checked'])} candidate(s) measured, within budget: "
        f"{by_ms.latency['within_budget']} ({checked}).",
        "",
        f"Better on the validation slice (SSIM, the search's metric): **{better}**.",
        "",
        "Both students carry the supernet's weights, not fine-tuned; validation = the pipeline's whole slice of "
        f"training pairs ({rows['macs']['val']['n']} images), test = {rows['macs']['test']['n']} test pairs "
        f"(report only). Search time: MACs {t_macs:.0f} s, latency {t_ms:.0f} s + fit {t_fit:.0f} s.",
    ]
    tmp_md = args.out / "report.md.tmp"
    tmp_md.write_text("\n".join(lines) + "\n")
    os.replace(tmp_md, args.out / "report.md")
    console.print("\n".join(lines))


if __name__ == "__main__":
    main()
