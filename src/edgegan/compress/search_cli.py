"""``search``: GAN Compression's search for the best sub-network of a supernet under a MAC budget."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from edgegan.errors import ConfigError
from edgegan.runs import check_device

app = typer.Typer(
    help="GAN Compression: search a supernet for the best sub-network under a budget.", no_args_is_help=True
)
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 132)


@app.callback()
def _group() -> None:
    """GAN Compression: search a supernet for the best sub-network under a budget."""


def _parse_choices(text: str) -> tuple[int, ...]:
    parts = [p for p in text.replace(",", " ").replace("_", " ").split() if p]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--choices must be integers separated by commas, got {text!r}") from None
    if not values:
        raise ConfigError("--choices must not be empty")
    return values


def _val_pairs(a: Path, b: Path | None, size: int, limit: int, direction: str) -> list[tuple[Any, Any]]:
    from edgegan.data import PairedDataset, UnpairedDataset

    kw: dict[str, Any] = {"load_size": None, "crop_size": size, "train": False, "flip": False}
    if b is not None:
        data: Any = PairedDataset.from_folders(a, b, direction=direction, **kw)
        n = min(limit, len(data))
        return [(data[i]["A"], data[i]["B"]) for i in range(n)]
    data = UnpairedDataset.from_folders(a, a, serial_b=True, **kw)
    n = min(limit, len(data))
    return [(data[i]["A"], None) for i in range(n)]


@app.command("search")
def search_cmd(
    supernet: Path = typer.Option(..., "--supernet", help="Trained supernet folder (edgegan model)."),
    a: Path = typer.Option(..., "--a", help="Validation input (A) image folder."),
    b: Path | None = typer.Option(None, "--b", help="Validation target (B) folder; without it, the teacher's output."),
    teacher: Path | None = typer.Option(None, "--teacher", help="Teacher folder: scores against its outputs."),
    budget_macs: str | None = typer.Option(
        None, "--budget-macs", help="MAC budget (GAN Compression convention): 2.5G, 800M."
    ),
    budget_ms: float | None = typer.Option(
        None,
        "--budget-ms",
        help="Latency budget instead: ONNX Runtime ms at batch 1, --size, --latency-threads, on this machine.",
    ),
    latency_threads: int = typer.Option(1, min=1, help="Threads the latency budget refers to."),
    latency_samples: int = typer.Option(24, min=3, help="Sub-networks measured to fit the latency model."),
    latency_model: Path | None = typer.Option(
        None, "--latency-model", help="Reuse a latency_model.json from an earlier search (same size, threads, CPU)."
    ),
    size: int = typer.Option(256, min=4, help="Input size the budget and the evaluation refer to."),
    choices: str = typer.Option("16,24,32,40,48,56,64", help="Channel choices per entry, comma separated."),
    population: int = typer.Option(20, min=1, help="Candidates per generation."),
    generations: int = typer.Option(10, min=1, help="Generations (random mode: population × generations samples)."),
    parents: int = typer.Option(5, min=1, help="Best candidates kept as parents each generation."),
    mutate_prob: float = typer.Option(0.2, min=0.0, max=1.0, help="Probability of redrawing each entry."),
    mode: str = typer.Option("evolution", help="evolution or random."),
    metric: str = typer.Option(
        "ssim",
        "--metric",
        help="What ranks the candidates: ssim, psnr, lpips, fid or kid (the last 3 need weights).",
    ),
    val_images: int = typer.Option(16, min=1, help="Validation images used to score candidates."),
    direction: str = typer.Option("AtoB", help="AtoB or BtoA."),
    seed: int = typer.Option(0, min=0, help="Random seed."),
    device: str = typer.Option("cpu", help="cpu or cuda[:N]."),
    out: Path = typer.Option(..., "--out", help="Output folder: search.json, student/ and student.onnx."),
) -> None:
    """Search the supernet under --budget-macs and export the best sub-network (GAN Compression, step 3)."""

    from edgegan.compress.search import SearchConfig, finalize_student, parse_macs, search
    from edgegan.models.mobile_supernet import MobileResnetSupernet
    from edgegan.registry import load

    check_device(device)
    if (budget_macs is None) == (budget_ms is None):
        raise ConfigError("give one budget: --budget-macs or --budget-ms")
    if b is None and teacher is None:
        raise ConfigError("give --b (validation targets) or --teacher (score against the teacher's outputs)")
    net = load(supernet, map_location=device)
    if not isinstance(net, MobileResnetSupernet):
        raise ConfigError(f"{supernet} holds a {type(net).__name__}, not a mobile_resnet_supernet")
    teacher_model = load(teacher, map_location=device) if teacher is not None else None
    cfg = SearchConfig(
        budget_macs=parse_macs(budget_macs) if budget_macs is not None else None,
        budget_ms=budget_ms,
        latency_threads=latency_threads,
        latency_samples=latency_samples,
        size=size,
        choices=_parse_choices(choices),
        population=population,
        generations=generations,
        parents=min(parents, population),
        mutate_prob=mutate_prob,
        seed=seed,
        mode=mode,  # type: ignore[arg-type]
        target="B" if b is not None else "teacher",
        device=device,
        metric=metric,
    )
    val = _val_pairs(a, b, size, val_images, direction)
    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )
    task = bar.add_task("searching", total=cfg.generations)

    def progress(gen: int, total: int, best: float) -> None:
        bar.update(task, description=f"generation {gen}/{total}, best {cfg.metric} {abs(best):.4g}", completed=gen)

    lm = None
    out.mkdir(parents=True, exist_ok=True)
    if budget_ms is not None:
        from edgegan.compress.search import supernet_latency_model
        from edgegan.profile.latency_model import LatencyModel

        if latency_model is not None:
            lm = LatencyModel.load(latency_model)
        else:
            with Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
            ) as fit_bar:
                fit_task = fit_bar.add_task("measuring sub-networks (latency model)", total=latency_samples)
                lm = supernet_latency_model(
                    net,
                    size,
                    choices=cfg.choices,
                    threads=latency_threads,
                    samples=latency_samples,
                    seed=seed,
                    progress=lambda i, n: fit_bar.update(fit_task, completed=i),
                )
            lm.save(out / "latency_model.json")
        err = lm.error
        if err.get("n"):
            console.print(
                f"latency model: {err['median_abs_pct']:.1f}% median, {err['max_abs_pct']:.1f}% max error "
                f"on {int(err['n'])} held-out sub-networks"
            )
    with bar:
        result = search(net, val, cfg, teacher=teacher_model, progress=progress, latency_model=lm)
    net.cpu()
    student = finalize_student(net, result.best_config, out, size=size)
    best = next(h for h in result.history if tuple(h["config"]) == tuple(result.best_config))
    report = {
        "supernet": str(supernet),
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()},
        **result.to_dict(),
        "best_metrics": {k: best.get(k) for k in ("psnr", "ssim", cfg.metric)},
        "student": student,
    }
    (out / "search.json").write_text(json.dumps(report, indent=2))
    ssim_text = "-" if best.get("ssim") is None else f"{best['ssim']:.4f}"
    if result.latency is not None:
        lat = result.latency
        cost_text = (
            f"{lat['measured_ms']:.1f} ms measured, {best['predicted_ms']:.1f} predicted (budget {budget_ms:g} ms, "
            f"{latency_threads} thread(s)){'' if lat['within_budget'] else ' OVER BUDGET'}, "
            f"{result.best_macs / 1e9:.3f}G MACs"
        )
    else:
        assert cfg.budget_macs is not None
        cost_text = f"{result.best_macs / 1e9:.3f}G MACs (budget {cfg.budget_macs / 1e9:.3f}G)"
    console.print(
        f"best {'_'.join(map(str, result.best_config))} by {cfg.metric}: SSIM {ssim_text}, PSNR {best['psnr']:.2f} dB"
        + (f", {cfg.metric} {best[cfg.metric]:.4g}" if cfg.metric not in ("ssim", "psnr") else "")
        + f"; {cost_text}, {result.evaluated} evaluated"
    )
    if result.latency is not None and not result.latency["within_budget"]:
        console.print(
            f"[yellow]none of the {len(result.latency['checked'])} best candidates measured under the budget; "
            "kept the best-scoring one (the latency model under-predicts here: raise --latency-samples)[/]"
        )
    console.print(f"student: {student['model_dir']}  onnx: {student['onnx']} (max |diff| {student['max_abs_diff']})")
    console.print(f"report: {out / 'search.json'}")
