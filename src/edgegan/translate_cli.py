"""``edgegan translate MODEL INPUT... --out DIR``: a thin layer over :mod:`edgegan.translate`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(soft_wrap=True)

MODEL_HELP = (
    "A generator's model folder (teacher, GAN Compression or UGC student, U-Net, E2GAN with --prompt), "
    "a CycleGAN run folder (with --direction), an E2GAN adapter folder (with --base) or an .onnx file."
)


def translate_cmd(
    model: str = typer.Argument(..., help=MODEL_HELP),
    inputs: list[Path] = typer.Argument(..., help="Image files or folders (their image files, not recursive)."),
    out: Path = typer.Option(..., "--out", help="Output folder: the inputs' names, PNG unless the input is PNG/JPEG."),
    base: Path | None = typer.Option(None, "--base", help="E2GAN: the base model folder of the adapter MODEL."),
    prompt: str | None = typer.Option(None, "--prompt", help="E2GAN: the edit's prompt (default: the adapter's)."),
    any_prompt: bool = typer.Option(
        False, "--any-prompt", help="E2GAN: allow a prompt other than the one the adapter was trained for."
    ),
    text_encoder: str = typer.Option(
        "auto", "--text-encoder", help="E2GAN: auto (the one the base's run records), default, tiny or a folder."
    ),
    direction: str | None = typer.Option(None, "--direction", help="CycleGAN run: AtoB or BtoA (its trainA/trainB)."),
    size: str | None = typer.Option(None, "--size", help="Resize inputs to N or HxW first (default: keep)."),
    batch_size: int = typer.Option(1, "--batch-size", min=1, help="Images of equal size run together."),
    runtime: str | None = typer.Option(None, "--runtime", help="torch or onnx (default: onnx for .onnx files)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda[:N]."),
    multiple: int | None = typer.Option(
        None, "--multiple", min=1, help="Pad to multiples of N (default: what the network needs)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace outputs that exist (default: skip them)."),
) -> None:
    """Run an image-to-image generator on image files of any size (padded, then cropped back); writes atomically."""
    from edgegan.cli import parse_size
    from edgegan.translate import load_translator, translate_paths

    hw = parse_size(size) if size is not None else None
    translator = load_translator(
        model,
        base=base,
        prompt=prompt,
        any_prompt=any_prompt,
        text_encoder=text_encoder,
        direction=direction,
        runtime=runtime,
        device=device,
        multiple=multiple,
    )
    console.print(
        f"{translator.description}: {translator.runtime} on {translator.device}, inputs padded to "
        f"multiples of {translator.multiple}"
    )

    def failed(path: Path, reason: str) -> None:
        # one line per input on stderr, as it happens; the others go on
        sys.stderr.write(f"edgegan: error: {reason if str(path) in reason else f'{path}: {reason}'}\n")

    columns = (TextColumn("translate"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("translate", total=None)
        summary = translate_paths(
            translator,
            inputs,
            out,
            size=hw,
            batch_size=batch_size,
            overwrite=overwrite,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
            on_error=failed,
        )
    console.print(summary.line(), markup=False, highlight=False)
    if not summary.ok:
        raise typer.Exit(1)
