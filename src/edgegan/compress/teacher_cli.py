"""``edgegan train pix2pix`` and ``edgegan train cyclegan``: the full-size teachers that compression starts from."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from edgegan.cli_options import TeacherTraining, shared, with_shared_options
from edgegan.errors import ConfigError
from edgegan.progress import RunBar
from edgegan.runs import check_device

if TYPE_CHECKING:
    from edgegan.compress.results import CycleGANResult, Pix2PixResult

app = typer.Typer(help="Train teacher generators: pix2pix (paired) and CycleGAN (unpaired).", no_args_is_help=True)
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 132)


def _show_epochs(bar: RunBar) -> Callable[[int, dict[str, float]], None]:
    """A recipe's ``on_epoch`` that prints each epoch's losses and validation scores above ``bar``."""

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        bar.epoch_done(epoch, {k: v for k, v in metrics.items() if k.startswith(("loss_D", "loss_G", "val_"))})

    return on_epoch


def _check_folder(path: Path | None, flag: str) -> None:
    if path is not None and not path.is_dir():
        raise ConfigError(f"{flag} {path}: {'not a folder' if path.exists() else 'folder not found'}")


def _print_run(result: Pix2PixResult | CycleGANResult) -> None:
    d = result.discriminator
    how = "auto, sized to the crop" if d["auto"] else "--n-layers-d"
    console.print(f"discriminator: {d['n_layers']} layers, {d['patch']}x{d['patch']} patches ({how})")


@app.command("pix2pix")
@with_shared_options
def pix2pix_cmd(
    a: Path | None = typer.Option(None, "--a", help="Folder of input (A) images."),
    b: Path | None = typer.Option(None, "--b", help="Folder of target (B) images, matched to A by file stem."),
    data_root: Path | None = typer.Option(None, "--data-root", help="Instead of --a/--b: aligned A|B images."),
    out: Path = typer.Option(..., "--out", help="Run folder."),
    generator: str = typer.Option("resnet_generator", help="resnet_generator or unet_generator."),
    lambda_recon: float = typer.Option(
        100.0, "--lambda-recon", "--lambda-l1", help="Weight of the L1 loss to the target (--lambda-l1: older name)."
    ),
    val_fraction: float = typer.Option(0.1, help="Share of the pairs held out for validation."),
    train: TeacherTraining = shared(TeacherTraining),
) -> None:
    """Train a pix2pix teacher on paired images; hands on the last generator (or the best by --select-by)."""
    from edgegan.compress.teacher import Pix2PixConfig, train_pix2pix

    if data_root is None and (a is None or b is None):
        raise ConfigError("pix2pix needs --a and --b image folders (or --data-root with aligned A|B images)")
    if data_root is not None and (a is not None or b is not None):
        raise ConfigError("give either --a/--b or --data-root, not both")
    for path, flag in ((a, "--a"), (b, "--b"), (data_root, "--data-root")):
        _check_folder(path, flag)
    cfg = Pix2PixConfig(
        generator=generator.replace("-", "_"),
        lambda_recon=lambda_recon,
        val_fraction=val_fraction,
        **train.config_fields(),
    )
    dev = check_device(train.device)
    with RunBar("pix2pix", cfg.epochs + cfg.decay_epochs, console) as bar:
        show = _show_epochs(bar)
        result = train_pix2pix(
            a, b, out, cfg, data_root=data_root, resume=train.resume, progress=bar.update, on_epoch=show, device=dev
        )
    _print_run(result)
    chosen = f"epoch {result.best_epoch}, selected by {result.select_by}"
    if result.best_metric is not None:
        chosen += f": val_{result.select_by} {result.best_metric:.4g}"
    console.print(f"best generator ({chosen}): {result.best_generator}")
    console.print(f"last generator: {result.last_generator}  (metrics: {result.run / 'metrics.jsonl'})")


@app.command("cyclegan")
@with_shared_options
def cyclegan_cmd(
    root: Path = typer.Option(..., "--root", help="Folder with trainA/ and trainB/ image folders."),
    out: Path = typer.Option(..., "--out", help="Run folder."),
    lambda_cycle: float = typer.Option(10.0, help="Weight of the cycle-consistency loss."),
    lambda_identity: float = typer.Option(0.5, help="Identity loss weight, relative to --lambda-cycle."),
    pool_size: int = typer.Option(50, help="Fake images buffered for the discriminators (0: none)."),
    train: TeacherTraining = shared(
        TeacherTraining,
        direction=typer.Option("AtoB", help="AtoB or BtoA (swaps trainA and trainB)."),
        gan_mode=typer.Option("lsgan", help="lsgan, vanilla or hinge."),
        select_by=typer.Option(
            "last", "--select-by", help="last (the reference), or fid / kid of the generators on testA/testB."
        ),
    ),
) -> None:
    """Train CycleGAN teachers (G_A: A->B, G_B: B->A) on unpaired images."""
    from edgegan.compress.teacher import CycleGANConfig, train_cyclegan

    _check_folder(root, "--root")
    cfg = CycleGANConfig(
        lambda_cycle=lambda_cycle, lambda_identity=lambda_identity, pool_size=pool_size, **train.config_fields()
    )
    dev = check_device(train.device)
    with RunBar("cyclegan", cfg.epochs + cfg.decay_epochs, console) as bar:
        result = train_cyclegan(
            root, out, cfg, resume=train.resume, progress=bar.update, on_epoch=_show_epochs(bar), device=dev
        )
    _print_run(result)
    chosen = f"epoch {result.best_epoch}, selected by {result.select_by}"
    console.print(f"generators ({chosen}): G_A (A->B) {result.G_A}, G_B (B->A) {result.G_B}")
