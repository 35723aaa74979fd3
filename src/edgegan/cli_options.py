"""Command-line options that several ``edgegan`` commands share, declared once.

A group of options is a dataclass whose fields are declared with :func:`option_field`; a command takes the whole group
as one parameter, ``train: DistillTraining = shared(DistillTraining)``, under :func:`with_shared_options`. Typer
then shows the group's options in that place, and the command receives the group filled in, so it declares only
the options that are its own. ``shared(Group, name=typer.Option(...))`` re-declares one option of the group for
one command (its own help or default).

Also here: the parsers of option values the commands have in common (``-o key=value``, sizes).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from edgegan.errors import ConfigError

__all__ = [
    "DistillInputs",
    "DistillTraining",
    "TeacherTraining",
    "option_field",
    "parse_options",
    "parse_size",
    "shared",
    "with_shared_options",
]

T = TypeVar("T")
R = TypeVar("R")

_OPTION = "edgegan.cli_options"  # the key of a field's typer declaration in its metadata
_KEYWORD = inspect.Parameter.KEYWORD_ONLY  # typer passes every option by name


# ----------------------------------------------------------------------------- option values


def parse_options(pairs: list[str]) -> dict[str, str]:
    """Turn ``["ngf=32", "n_blocks=6"]`` into a dict; reject malformed or repeated keys."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"option {pair!r} must look like key=value")
        if key in out:
            raise ConfigError(f"option {key!r} given twice")
        out[key] = value.strip()
    return out


def parse_size(text: str) -> tuple[int, int]:
    """``256`` or ``256x192`` (height x width)."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"size must be N or HxW, got {text!r}") from None
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2 or min(dims) < 1:
        raise ConfigError(f"size must be N or HxW with positive numbers, got {text!r}")
    return dims[0], dims[1]


# ----------------------------------------------------------------------------- option groups


def option_field(*args: Any, **kwargs: Any) -> Any:
    """A field of an option group, declared as ``typer.Option(*args, **kwargs)`` (the first argument is the default)."""
    return dataclasses.field(metadata={_OPTION: typer.Option(*args, **kwargs)})


@dataclasses.dataclass(frozen=True)
class _Slot:
    group: type
    changes: dict[str, Any]


def shared(group: type[T], **changes: Any) -> T:
    """The default of a command parameter that takes ``group``'s options (see :func:`with_shared_options`);
    ``changes`` maps option names to the ``typer.Option`` that replaces the group's declaration for this command."""
    return typing.cast(T, _Slot(group, changes))


def with_shared_options(command: Callable[..., R]) -> Callable[..., R]:
    """``command`` with each ``name: Group = shared(Group)`` parameter shown to typer as the group's options, and
    called with ``Group(**their values)`` as ``name``."""
    signature = inspect.signature(command, eval_str=True)
    params: list[inspect.Parameter] = []
    slots: dict[str, tuple[type, list[str]]] = {}
    for param in signature.parameters.values():
        slot = param.default
        if not isinstance(slot, _Slot):
            params.append(param.replace(kind=_KEYWORD))
            continue
        fields = dataclasses.fields(slot.group)
        unknown = set(slot.changes) - {f.name for f in fields}
        if unknown:
            raise TypeError(f"{slot.group.__name__} has no option {', '.join(sorted(unknown))}")
        hints = typing.get_type_hints(slot.group)
        for f in fields:
            declared = slot.changes.get(f.name, f.metadata[_OPTION])
            params.append(inspect.Parameter(f.name, _KEYWORD, default=declared, annotation=hints[f.name]))
        slots[param.name] = (slot.group, [f.name for f in fields])
    names = [p.name for p in params]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise TypeError(f"{command.__name__} declares {', '.join(twice)} twice (its own and a shared group's)")

    @functools.wraps(command)
    def run(**values: Any) -> R:
        for name, (group, fields) in slots.items():
            values[name] = group(**{f: values.pop(f) for f in fields})
        return command(**values)

    run.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in params} | {"return": signature.return_annotation}
    return run


# ----------------------------------------------------------------------------- GAN Compression


@dataclasses.dataclass
class DistillInputs:
    """The teacher and data folders of ``compress distill`` and ``compress supernet``."""

    teacher: Path = option_field(..., "--teacher", help="Trained teacher generator folder (edgegan model).")
    a: Path = option_field(..., "--a", help="Input (A) image folder.")
    b: Path | None = option_field(None, "--b", help="Target (B) image folder, matched to A by file stem.")
    out: Path = option_field(..., "--out", help="Run folder.")

    def check_targets(self, paired: bool) -> None:
        """ConfigError when paired data has no target folder."""
        if paired and self.b is None:
            raise ConfigError("--b (the target folder) is required for paired data; pass --unpaired otherwise")


_DISTILL_SELECT_BY_HELP = (
    "Student to hand on: last (the last epoch's, as the reference), or the best on the validation slice by "
    "ssim, psnr, lpips, fid or kid (the last three need their weights)."
)


@dataclasses.dataclass
class DistillTraining:
    """The training options of ``compress distill`` and ``compress supernet``: the fields their configs share."""

    epochs: int = option_field(50, min=0, help="Epochs at the initial learning rate.")
    decay_epochs: int = option_field(50, min=0, help="Further epochs decaying the learning rate linearly to 0.")
    unpaired: bool = option_field(False, "--unpaired", help="Unpaired data: the teacher's outputs are the targets.")
    resume: bool = option_field(False, "--resume", help="Continue an interrupted run in --out.")
    lambda_recon: float = option_field(100.0, help="Weight of the L1 reconstruction loss (paper Table 5: 100).")
    lambda_distill: float = option_field(1.0, help="Weight of the feature distillation loss (paper Table 5: 1).")
    gan_mode: str = option_field("hinge", help="GAN loss: hinge, lsgan or vanilla.")
    lr: float = option_field(2e-4, help="Adam learning rate (G, mappers and D).")
    batch_size: int = option_field(1, min=1, help="Images per step.")
    load_size: int = option_field(286, min=0, help="Resize to this before random crops (0: native size).")
    crop_size: int = option_field(256, min=4, help="Training crop (and validation) size; a multiple of 4.")
    direction: str = option_field("AtoB", help="AtoB or BtoA.")
    val_fraction: float = option_field(0.1, help="Share of the pairs held out to pick the best student.")
    ndf: int = option_field(64, min=1, help="Width of a fresh discriminator (without --discriminator).")
    select_by: str = option_field("last", "--select-by", help=_DISTILL_SELECT_BY_HELP)
    seed: int = option_field(0, min=0, help="Random seed.")
    device: str = option_field("cpu", help="cpu or cuda[:N].")

    @property
    def paired(self) -> bool:
        return not self.unpaired

    def config_fields(self) -> dict[str, Any]:
        """The ``DistillConfig`` / ``SupernetConfig`` fields these options set."""
        return {
            "lambda_recon": self.lambda_recon,
            "lambda_distill": self.lambda_distill,
            "gan_mode": self.gan_mode,
            "lr": self.lr,
            "epochs": self.epochs,
            "decay_epochs": self.decay_epochs,
            "batch_size": self.batch_size,
            "load_size": self.load_size or None,
            "crop_size": self.crop_size,
            "direction": self.direction,
            "paired": self.paired,
            "val_fraction": self.val_fraction,
            "seed": self.seed,
            "ndf": self.ndf,
            "select_by": self.select_by,
        }


_GENERATOR_OPTION_HELP = "Generator option key=value (repeatable), e.g. -o ngf=32 -o residual=true -o input_skip=true."
_D_LAYERS_HELP = "Discriminator depth: 'auto' sizes the patch to the crop (3 layers, 70x70, at 128 px and up)."
_TEACHER_SELECT_BY_HELP = (
    "Which epoch's generator is handed on: last (the reference), or the best on the validation slice by "
    "ssim, psnr, lpips, fid or kid (lpips/fid/kid need their weights; see `edgegan weights list`)."
)


def _d_layers(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"--n-layers-d must be a positive integer or 'auto', got {value!r}") from None


@dataclasses.dataclass
class TeacherTraining:
    """The training options of ``train pix2pix`` and ``train cyclegan``: the fields their configs share."""

    option: list[str] = option_field([], "-o", "--option", help=_GENERATOR_OPTION_HELP)
    epochs: int = option_field(100, help="Epochs at the initial learning rate.")
    decay_epochs: int = option_field(100, help="Further epochs with the learning rate decaying linearly to 0.")
    load_size: int = option_field(286, help="Images are resized to this square size...")
    crop_size: int = option_field(256, help="...then randomly cropped to this one.")
    direction: str = option_field("AtoB", help="AtoB or BtoA.")
    gan_mode: str = option_field("hinge", help="hinge, vanilla or lsgan.")
    lr: float = option_field(2e-4, help="Adam learning rate.")
    batch_size: int = option_field(1, help="Batch size.")
    ndf: int = option_field(64, help="Discriminator width.")
    n_layers_d: str = option_field("auto", help=_D_LAYERS_HELP)
    select_by: str = option_field("last", "--select-by", help=_TEACHER_SELECT_BY_HELP)
    seed: int = option_field(0, help="Random seed.")
    device: str = option_field("cpu", help="cpu or cuda[:N].")
    resume: bool = option_field(False, "--resume", help="Continue from the run's last checkpoint.")

    def config_fields(self) -> dict[str, Any]:
        """The ``Pix2PixConfig`` / ``CycleGANConfig`` fields these options set."""
        return {
            "generator_options": parse_options(self.option),
            "ndf": self.ndf,
            "n_layers_d": _d_layers(self.n_layers_d),
            "gan_mode": self.gan_mode,
            "lr": self.lr,
            "epochs": self.epochs,
            "decay_epochs": self.decay_epochs,
            "batch_size": self.batch_size,
            "load_size": self.load_size,
            "crop_size": self.crop_size,
            "direction": self.direction,
            "seed": self.seed,
            "select_by": self.select_by,
        }
