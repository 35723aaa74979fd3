"""Typed model configs, the architecture registry, and save/load of model folders.

A saved model is a folder with ``config.json`` (architecture name + resolved config) and
``model.safetensors``; :func:`load` rebuilds it with no other information.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, get_args, get_origin

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from edgegan.errors import CheckpointError, ConfigError

FORMAT = "edgegan.model/1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

C = TypeVar("C", bound="ModelConfig")


@dataclasses.dataclass
class ModelConfig:
    """Base of every architecture config: a flat dataclass of JSON-friendly fields."""

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """Build from a dict of already-typed values (e.g. a config.json)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(
                f"unknown option(s) {', '.join(unknown)} for {cls.__name__}; valid: {', '.join(sorted(names))}"
            )
        hints = typing.get_type_hints(cls)
        kwargs = {k: _coerce(k, v, hints[k]) for k, v in data.items()}
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"{cls.__name__}: {exc}") from None

    @classmethod
    def from_options(cls: type[C], options: dict[str, str]) -> C:
        """Build from ``key=value`` strings as given on the command line."""
        return cls.from_dict(dict(options))

    def replace(self: C, **changes: Any) -> C:
        return self.from_dict({**self.to_dict(), **changes})


def _coerce(name: str, value: Any, tp: Any) -> Any:
    """Convert ``value`` (possibly a CLI string) to the field type ``tp``; raise ConfigError."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null", ""))
        if is_none and type(None) in get_args(tp):
            return None
        last: ConfigError | None = None
        for a in args:
            try:
                return _coerce(name, value, a)
            except ConfigError as exc:
                last = exc
        raise last or ConfigError(f"option {name}: cannot parse {value!r}")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"option {name}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if origin is tuple:
        item = get_args(tp)[0]
        if isinstance(value, str):
            sep = "_" if "_" in value else ","
            parts = [p for p in value.replace(" ", "").split(sep) if p]
        elif isinstance(value, list | tuple):
            parts = list(value)
        else:
            raise ConfigError(f"option {name}: expected a list, got {value!r}")
        return tuple(_coerce(name, p, item) for p in parts)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"option {name}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"option {name}: expected an integer, got {value!r}")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"option {name}: expected an integer, got {value!r}") from None
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"option {name}: expected a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"option {name}: expected a string, got {value!r}")
        return value
    return value


class EdgeModel(nn.Module):
    """Base of every edgegan network: built from one config dataclass, saved as a folder.

    Subclasses set ``arch`` and ``config_cls`` and are registered with :func:`register`.
    """

    arch: ClassVar[str] = ""
    config_cls: ClassVar[type[ModelConfig]] = ModelConfig

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config

    @classmethod
    def from_config(cls, config: ModelConfig | None = None, **options: Any) -> EdgeModel:
        if config is None:
            config = cls.config_cls.from_dict(options)
        elif options:
            config = config.replace(**options)
        return cls(config)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the intermediate features ``forward(x, return_features=True)`` returns."""
        return ()

    def example_input(self, size: int | tuple[int, int] = 256, batch: int = 1) -> torch.Tensor:
        """A random input of the shape this model expects (for profiling and export)."""
        h, w = (size, size) if isinstance(size, int) else size
        channels = getattr(self.config, "input_nc", 3)
        return torch.randn(batch, channels, h, w)

    def save(self, path: str | os.PathLike[str]) -> Path:
        return save_model(self, path)


_REGISTRY: dict[str, type[EdgeModel]] = {}
M = TypeVar("M", bound=type[EdgeModel])


def register(name: str) -> typing.Callable[[M], M]:
    """Class decorator: make an architecture buildable and loadable by ``name``."""

    def deco(cls: M) -> M:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise RuntimeError(f"architecture {name!r} registered twice")
        cls.arch = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _ensure_builtin() -> None:
    import edgegan.models  # noqa: F401  (registers the built-in architectures)


def architectures() -> dict[str, type[EdgeModel]]:
    _ensure_builtin()
    return dict(sorted(_REGISTRY.items()))


def get_architecture(name: str) -> type[EdgeModel]:
    archs = architectures()
    key = name.replace("-", "_")
    if key not in archs:
        raise ConfigError(f"unknown architecture {name!r}; choose from {', '.join(archs)}")
    return archs[key]


def build(name: str, config: ModelConfig | None = None, **options: Any) -> EdgeModel:
    """Build a registered architecture from a config object or keyword options."""
    return get_architecture(name).from_config(config, **options)


def save_model(model: EdgeModel, path: str | os.PathLike[str]) -> Path:
    """Write ``config.json`` + ``model.safetensors`` into folder ``path``.

    The folder is assembled next to its destination and swapped in, so an interrupted
    save leaves either the old model or the new one, never a mix.
    """
    if not isinstance(model, EdgeModel) or not model.arch:
        raise TypeError("save_model needs a registered edgegan model")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT, "arch": model.arch})
        meta = {"format": FORMAT, "arch": model.arch, "config": model.config.to_dict(), "edgegan_version": _version()}
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.rename(target, old)
        os.rename(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def read_model_config(path: str | os.PathLike[str]) -> tuple[str, dict[str, Any]]:
    """Return (arch, config dict) of a saved model folder."""
    folder = Path(path)
    cfg_file = folder / CONFIG_FILE
    if not folder.exists():
        raise CheckpointError(f"model folder not found: {folder}")
    if not folder.is_dir():
        raise CheckpointError(
            f"{folder} is not a model folder (expected a folder with {CONFIG_FILE} and {WEIGHTS_FILE})"
        )
    if not cfg_file.is_file():
        raise CheckpointError(f"{folder} has no {CONFIG_FILE}; not an edgegan model folder")
    try:
        meta = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{cfg_file} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or "arch" not in meta or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{cfg_file} lacks 'arch' and 'config'")
    return str(meta["arch"]), meta["config"]


def load(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> EdgeModel:
    """Rebuild a saved model (architecture, config and weights) from its folder."""
    folder = Path(path)
    arch, cfg = read_model_config(folder)
    cls = get_architecture(arch).config_cls
    # A field added after a model was saved takes the value that reproduces the saved model, not the new default.
    cfg = {**getattr(cls, "saved_before", {}), **cfg}
    model = get_architecture(arch).from_config(cls.from_dict(cfg))
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{folder} has no {WEIGHTS_FILE}")
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {weights}: {exc}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{weights} does not match its config.json: {first}") from None
    return model.eval()


def _version() -> str:
    from edgegan import __version__

    return __version__
