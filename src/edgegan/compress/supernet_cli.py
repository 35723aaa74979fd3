"""``supernet``: GAN Compression's once-for-all training of a mobile ResNet supernet from a teacher."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from edgegan.cli_options import DistillInputs, DistillTraining, shared, with_shared_options
from edgegan.progress import RunBar
from edgegan.runs import check_device

if TYPE_CHECKING:
    from edgegan.compress.results import SupernetResult

app = typer.Typer(help="GAN Compression: train a once-for-all supernet from a teacher.", no_args_is_help=True)
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 132)


@app.callback()
def _group() -> None:
    """GAN Compression: train a once-for-all supernet from a teacher."""


def _fmt(value: Any, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _print_summary(result: SupernetResult) -> None:
    ref = result.val_reference
    t = Table(
        title=f"supernet, {result.epochs} epochs ({'sandwich' if result.sandwich else 'one config'} per step, "
        f"{'paired' if result.paired else 'pseudo-pairs'})"
    )
    sizes = ("largest", "smallest")
    for col in ("epoch", "lr", "g_gan", "recon", "distill", "d"):
        t.add_column(col, justify="right")
    for size in sizes:
        t.add_column(f"SSIM {size} vs {ref}", justify="right")
        t.add_column(f"PSNR {size} vs {ref}", justify="right")
    for row in result.history:
        t.add_row(
            str(row["epoch"]),
            f"{row['lr']:.2e}",
            _fmt(row["g_gan"], ".3f"),
            _fmt(row["recon"], ".3f"),
            _fmt(row["distill"], ".3f"),
            _fmt(row["d"], ".3f"),
            *(_fmt(row.get(f"val_{m}_{size}"), f) for size in sizes for m, f in (("ssim", ".4f"), ("psnr", ".2f"))),
        )
    console.print(t)
    console.print(
        f"choices {','.join(map(str, result.choices))}: sub-networks from {result.smallest_params:,} to "
        f"{result.largest_params:,} params (teacher {result.teacher_params:,})"
    )
    start = result.init["arch"] if result.init else "random weights"
    console.print(f"supernet (started from {start}; epoch {result.best_epoch}, select by {result.select_by}): ")
    console.print(f"  {result.supernet}")


@app.command("supernet")
@with_shared_options
def supernet_cmd(
    inputs: DistillInputs = shared(DistillInputs),
    discriminator: Path | None = typer.Option(
        None, "--discriminator", help="Discriminator folder training's D starts from (the distilled student's)."
    ),
    init: Path | None = typer.Option(
        None, "--init", help="Distilled student folder the supernet starts from (its leading slices)."
    ),
    ngf: int = typer.Option(64, min=1, help="Supernet width: the largest choice of every channel entry."),
    choices: str | None = typer.Option(
        None, help="Comma-separated width choices per entry (default 16,24,...,64 clipped to --ngf)."
    ),
    sandwich: bool = typer.Option(
        True, "--sandwich/--no-sandwich", help="Train largest + smallest + one random config per step."
    ),
    n_blocks: int | None = typer.Option(None, min=0, help="Supernet residual blocks (default: the teacher's)."),
    train: DistillTraining = shared(
        DistillTraining,
        val_fraction=typer.Option(0.1, help="Share of the pairs held out for validation."),
        select_by=typer.Option(
            "last", "--select-by", help="Supernet to hand on: last, or the best by ssim, psnr, lpips, fid or kid."
        ),
    ),
) -> None:
    """Train a once-for-all MobileResnetSupernet from a teacher generator (GAN Compression, step 2)."""

    from edgegan.compress.supernet_train import SupernetConfig, train_supernet_from_folders

    check_device(train.device)
    inputs.check_targets(train.paired)
    cfg = SupernetConfig(ngf=ngf, choices=choices, sandwich=sandwich, n_blocks=n_blocks, **train.config_fields())
    bar = RunBar("training supernet", cfg.total_epochs, console)

    with bar:
        result = train_supernet_from_folders(
            inputs.teacher,
            inputs.a,
            inputs.b,
            inputs.out,
            cfg,
            discriminator_dir=discriminator,
            init_dir=init,
            resume=train.resume,
            progress=bar.update,
            device=train.device,
        )
    _print_summary(result)
