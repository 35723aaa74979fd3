"""Run folders, checkpoints and training guards shared by every training recipe.

A run folder looks like::

    runs/pix2pix-edges/
        config.yaml              resolved config, written atomically
        metrics.jsonl            one JSON object per logged step
        checkpoints/
            latest.json          {"step": 123, "path": "step-00000123"}, the commit point
            step-00000123/
                weights.safetensors   module state dicts, keys "{module}.{param}"
                state.safetensors     tensors of optimizer/scheduler state and RNG states
                state.json            everything else, with placeholders for those tensors

Nothing is ever pickled: checkpoints are safetensors plus JSON, so loading one cannot run code.
Checkpoint folders are assembled under a hidden temporary name and renamed into place, and
``latest.json`` is replaced only after that, so a crash at any moment leaves the previous
checkpoint loadable.  Saving is meant to be done by one process (rank 0 under DDP).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import math
import os
import random
import re
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
import yaml
from torch import Tensor, nn
from torch.optim import Optimizer

from edgegan.errors import CheckpointError, ConfigError, NonFiniteError
from edgegan.fileio import atomic_dir, atomic_write_json, atomic_write_text, atomic_write_yaml

__all__ = [
    "Checkpoint",
    "RunDir",
    "check_finite",
    "decode_state",
    "encode_state",
    "latest_checkpoint",
    "load_checkpoint",
    "load_torch_weights",
    "save_checkpoint",
    "set_seed",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
LATEST_FILE = "latest.json"
WEIGHTS_FILE = "weights.safetensors"
STATE_TENSORS_FILE = "state.safetensors"
STATE_JSON_FILE = "state.json"
_CHECKPOINT_FILES = (WEIGHTS_FILE, STATE_TENSORS_FILE, STATE_JSON_FILE)
_STEP_DIR_RE = re.compile(r"^step-(\d+)$")

# ---------------------------------------------------------------------------------------------
# Codec: nested Python structures with tensors <-> JSON + flat {name: tensor} dict
# ---------------------------------------------------------------------------------------------
# JSON has no tuples, no non-string keys and no tensors; optimizer state dicts use all three
# (int parameter ids as keys, tuple betas, tensor moments).  Those are written as one-key
# "tagged" objects.  A plain dict is written as a JSON object only when none of its keys starts
# with "__", so a tagged object can never be confused with user data.
_T_TENSOR = "__tensor__"
_T_TUPLE = "__tuple__"
_T_ITEMS = "__items__"
_T_FLOAT = "__float__"


def encode_state(obj: Any, prefix: str = "") -> tuple[Any, dict[str, Tensor]]:
    """Split ``obj`` into a JSON-serialisable structure and a flat dict of the tensors it holds.

    Supports nested dict/list/tuple/int/float/bool/str/None/Tensor; dict keys may be any of
    those scalar types or tuples of them.  :func:`decode_state` inverts it exactly.
    """
    tensors: dict[str, Tensor] = {}
    return _encode(obj, prefix, tensors), tensors


def _encode(obj: Any, path: str, tensors: dict[str, Tensor]) -> Any:
    if obj is None or isinstance(obj, bool | str):
        return obj
    if isinstance(obj, int):
        return int(obj)  # int subclasses (IntEnum) would not round-trip as themselves anyway
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else {_T_FLOAT: repr(float(obj))}  # strict JSON has no nan/inf
    if isinstance(obj, Tensor):
        key = path or "tensor"
        n = 1
        while key in tensors:  # e.g. dict keys 1 and "1" in the same dict
            key = f"{path}#{n}"
            n += 1
        tensors[key] = obj
        return {_T_TENSOR: key}
    if isinstance(obj, tuple):
        return {_T_TUPLE: [_encode(v, _join(path, i), tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, _join(path, i), tensors) for i, v in enumerate(obj)]
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, _join(path, k), tensors) for k, v in obj.items()}
        items = []
        for k, v in obj.items():
            key_tensors: dict[str, Tensor] = {}
            enc_key = _encode(k, path, key_tensors)
            if key_tensors:
                raise TypeError(f"cannot encode a tensor used as a dict key at {path or '<root>'}")
            items.append([enc_key, _encode(v, _join(path, k), tensors)])
        return {_T_ITEMS: items}
    raise TypeError(f"cannot encode {type(obj).__name__} at {path or '<root>'} (no pickling in checkpoints)")


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def decode_state(obj: Any, tensors: Mapping[str, Tensor]) -> Any:
    """Rebuild the structure given to :func:`encode_state` from its JSON part and tensors."""
    if isinstance(obj, list):
        return [decode_state(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1:
        ((tag, value),) = obj.items()
        if tag == _T_TENSOR:
            if value not in tensors:
                raise CheckpointError(f"checkpoint state refers to tensor {value!r}, which is missing")
            return tensors[value]
        if tag == _T_TUPLE:
            return tuple(decode_state(v, tensors) for v in value)
        if tag == _T_ITEMS:
            return {_hashable(decode_state(k, tensors)): decode_state(v, tensors) for k, v in value}
        if tag == _T_FLOAT:
            return float(value)
    return {k: decode_state(v, tensors) for k, v in obj.items()}


def _hashable(key: Any) -> Any:
    if isinstance(key, list):  # only reachable with hand-edited JSON; keep the error readable
        raise CheckpointError("checkpoint state has a list used as a dict key")
    return key


# ---------------------------------------------------------------------------------------------
# Run folder
# ---------------------------------------------------------------------------------------------


def _plain_config(config: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    if not isinstance(config, Mapping):
        raise ConfigError(f"run config must be a dict or a dataclass instance, not {type(config).__name__}")
    plain = _plain_value(config, "")
    # Round-trip through YAML so the in-memory config compares equal to the one read back on resume.
    return yaml.safe_load(yaml.safe_dump(plain, sort_keys=False)) or {}


def _plain_value(value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): _plain_value(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_value(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, enum.Enum):
        return _plain_value(value.value, path)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise ConfigError(f"config value {path} has type {type(value).__name__}, which cannot be written to YAML")


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict) and d:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def _config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    a, b = _flatten(old), _flatten(new)
    missing = object()
    diffs = []
    for key in list(a) + [k for k in b if k not in a]:
        va, vb = a.get(key, missing), b.get(key, missing)
        if va != vb:
            fa = "<absent>" if va is missing else repr(va)
            fb = "<absent>" if vb is missing else repr(vb)
            diffs.append(f"{key}: {fa} -> {fb}")
    return diffs


class RunDir:
    """A training run's folder: ``config.yaml``, ``metrics.jsonl`` and ``checkpoints/``.

    Refuses to reuse a folder that already holds checkpoints or metrics unless ``resume`` is
    true, so earlier results are never overwritten.  With ``resume`` the saved config must
    match ``config`` (unless ``allow_config_change``), and metric lines logged after the
    checkpoint that will be resumed are dropped so a crash leaves no duplicate steps.

    ``upgrade`` turns a saved config written by an earlier version into today's spelling before the comparison
    (a recipe that renamed config fields passes one, so old run folders still resume); ``config.yaml`` is then
    rewritten in today's spelling.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        config: Any,
        *,
        resume: bool = False,
        allow_config_change: bool = False,
        upgrade: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.path = Path(path)
        self.config: dict[str, Any] = _plain_config(config)
        self.config_path = self.path / CONFIG_FILE
        self.metrics_path = self.path / METRICS_FILE
        self.checkpoint_dir = self.path / CHECKPOINT_DIR
        #: Step of the checkpoint a resumed run will continue from (None: starts fresh).
        self.resume_step: int | None = None

        if self.path.exists() and not self.path.is_dir():
            raise CheckpointError(f"run folder {self.path} exists and is not a folder")
        if self._has_results() and not resume:
            raise CheckpointError(
                f"run folder {self.path} already holds a run (checkpoints or {METRICS_FILE}); "
                "pass --resume to continue it or choose another folder"
            )
        if resume and self._has_results():
            self._check_config(allow_config_change, upgrade)
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_yaml(self.config_path, self.config)
        if resume:
            latest = latest_checkpoint(self)
            self.resume_step = _step_of(latest) if latest is not None else None
            self._truncate_metrics(self.resume_step)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def _has_results(self) -> bool:
        if self.metrics_path.exists() and self.metrics_path.stat().st_size > 0:
            return True
        if not self.checkpoint_dir.is_dir():
            return False
        return any(p.name == LATEST_FILE or _STEP_DIR_RE.match(p.name) for p in self.checkpoint_dir.iterdir())

    def _check_config(
        self, allow_change: bool, upgrade: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    ) -> None:
        if not self.config_path.exists():
            return
        try:
            saved = yaml.safe_load(self.config_path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise CheckpointError(f"cannot read {self.config_path}: {_one_line(exc)}") from exc
        if upgrade is not None and isinstance(saved, dict):
            saved = upgrade(saved)
        diffs = _config_diff(saved, self.config)
        if diffs and not allow_change:
            shown = "; ".join(diffs[:10]) + (f"; and {len(diffs) - 10} more" if len(diffs) > 10 else "")
            raise CheckpointError(
                f"cannot resume {self.path}: config differs from the saved {CONFIG_FILE} ({shown}); "
                "pass allow_config_change=True to resume anyway, or choose another folder"
            )
        if diffs:
            log.warning("resuming %s with a changed config: %s", self.path, "; ".join(diffs))

    def _truncate_metrics(self, step: int | None) -> None:
        """Keep only metric lines with ``step <= step`` (none when there is no checkpoint)."""
        if not self.metrics_path.exists():
            return
        lines = self.metrics_path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = []
        for line in lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by the crash
            if step is not None and isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
        if len(kept) != len(lines) or (lines and not lines[-1].endswith("\n")):
            atomic_write_text(self.metrics_path, "".join(kept))

    def log(self, step: int, /, **metrics: Any) -> None:
        """Append ``{"step", "time", **metrics}`` as one line of ``metrics.jsonl`` and flush it.

        Tensors and numpy scalars are converted to Python numbers; NaN/inf are written as the
        ``NaN``/``Infinity`` literals Python's json module reads back.
        """
        row: dict[str, Any] = {"step": int(step), "time": round(time.time(), 3)}
        for name, value in metrics.items():
            row[name] = _metric_value(name, value)
        line = json.dumps(row) + "\n"
        # Opened per call: nothing to close, and every line reaches the OS before training goes on.
        with open(self.metrics_path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()


def _metric_value(name: str, value: Any) -> Any:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise TypeError(f"metric {name!r} is a tensor with {value.numel()} elements; log a scalar")
        return float(value.detach())
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"metric {name!r} has type {type(value).__name__}; log numbers or strings")


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """What :func:`load_checkpoint` restored."""

    step: int
    extra: Any
    path: Path


def _checkpoint_dir(run_or_folder: RunDir | str | os.PathLike[str]) -> Path:
    if isinstance(run_or_folder, RunDir):
        return run_or_folder.checkpoint_dir
    return Path(run_or_folder) / CHECKPOINT_DIR


def _step_of(folder: Path) -> int:
    m = _STEP_DIR_RE.match(folder.name)
    if m is None:
        raise CheckpointError(f"{folder} is not a checkpoint folder (expected a name like step-00000123)")
    return int(m.group(1))


def _step_dirs(ckpt_dir: Path) -> list[Path]:
    """Committed-looking ``step-*`` folders, oldest first (hidden temp folders are skipped)."""
    if not ckpt_dir.is_dir():
        return []
    dirs = [p for p in ckpt_dir.iterdir() if _STEP_DIR_RE.match(p.name) and p.is_dir()]
    return sorted(dirs, key=_step_of)


def _is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _CHECKPOINT_FILES)


def latest_checkpoint(run_or_folder: RunDir | str | os.PathLike[str]) -> Path | None:
    """Folder of the newest checkpoint of a run (or of a ``checkpoints`` folder), or None.

    ``latest.json`` decides; if it is missing, unreadable or points to a missing folder, the
    newest complete ``step-*`` folder is used instead.
    """
    ckpt_dir = _checkpoint_dir(run_or_folder)
    if not isinstance(run_or_folder, RunDir) and not ckpt_dir.is_dir() and Path(run_or_folder).is_dir():
        ckpt_dir = Path(run_or_folder)  # given the checkpoints folder itself
    latest = ckpt_dir / LATEST_FILE
    if latest.exists():
        try:
            pointer = json.loads(latest.read_text(encoding="utf-8"))
            name = str(pointer["path"])
            if not _STEP_DIR_RE.match(name):
                raise ValueError(f"bad path {name!r}")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable %s (%s)", latest, _one_line(exc))
        else:
            if (ckpt_dir / name).is_dir():
                return ckpt_dir / name
            log.warning("%s points to missing %s; using the newest complete checkpoint", latest, name)
    for folder in reversed(_step_dirs(ckpt_dir)):
        if _is_complete(folder):
            return folder
        log.warning("skipping incomplete checkpoint folder %s", folder)
    return None


def _check_names(kind: str, names: Mapping[str, Any]) -> None:
    for name in names:
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"{kind} names must be non-empty strings without '.', got {name!r}")


def _rng_state() -> dict[str, Any]:
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": str(np_name),
            "keys": np.asarray(np_keys).tolist(),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    # Only when CUDA is already in use: querying it otherwise would create a CUDA context on
    # every save of a CPU run, and an unused generator's state does not matter.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    npst = state["numpy"]
    np.random.set_state(
        (npst["name"], np.asarray(npst["keys"], dtype=np.uint32), npst["pos"], npst["has_gauss"], npst["gauss"])
    )
    torch.set_rng_state(state["torch"])
    cuda_states = state.get("cuda")
    if cuda_states and torch.cuda.is_available():
        n = torch.cuda.device_count()
        if n != len(cuda_states):
            log.warning("checkpoint has RNG states for %d CUDA devices, %d visible", len(cuda_states), n)
        for i, s in enumerate(cuda_states[:n]):
            torch.cuda.set_rng_state(s, i)


def _for_safetensors(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """CPU, contiguous, and no two tensors sharing memory (safetensors refuses shared storage)."""
    out: dict[str, Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for key, t in tensors.items():
        t = t.detach().to("cpu").contiguous()
        if t.numel():
            ident = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
            if ident in seen:
                t = t.clone()  # tied weights: store a copy, loading fills both from it
            else:
                seen.add(ident)
        out[key] = t
    return out


def _remove_tree(path: Path) -> None:
    # Rename to a hidden name first so a crash mid-delete never leaves a half-deleted step-* folder.
    hidden = path.with_name(f".{path.name}.deleting.{os.getpid()}.{time.monotonic_ns()}")
    try:
        os.rename(path, hidden)
    except OSError:
        hidden = path
    shutil.rmtree(hidden, ignore_errors=True)


def _clean_stale(ckpt_dir: Path) -> None:
    """Remove hidden leftovers of saves or deletes that were killed half-way."""
    for p in ckpt_dir.iterdir():
        if p.name.startswith("."):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def save_checkpoint(
    run_or_folder: RunDir | str | os.PathLike[str],
    step: int,
    *,
    modules: Mapping[str, nn.Module],
    optimizers: Mapping[str, Optimizer] | None = None,
    schedulers: Mapping[str, Any] | None = None,
    extra: Any = None,
    keep: int | None = 3,
) -> Path:
    """Save modules, optimizers, schedulers and RNG states as ``checkpoints/step-XXXXXXXX``.

    ``run_or_folder`` is a :class:`RunDir` or a run folder (checkpoints go to its
    ``checkpoints`` subfolder).  ``extra`` must be JSON-serialisable.  After the new folder and
    ``latest.json`` are in place, all but the ``keep`` newest checkpoints are deleted (``None``
    keeps all), as are checkpoints newer than ``step`` left over from before a resume.
    Does not consume any random numbers.  Returns the checkpoint folder.
    """
    optimizers = optimizers or {}
    schedulers = schedulers or {}
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")
    if keep is not None and keep < 1:
        raise ValueError(f"keep must be >= 1 or None, got {keep}")
    for kind, names in (("module", modules), ("optimizer", optimizers), ("scheduler", schedulers)):
        _check_names(kind, names)
    try:
        json.dumps(extra, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"checkpoint extra must be JSON-serialisable: {exc}") from exc

    weights: dict[str, Tensor] = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            if not isinstance(value, Tensor):
                raise TypeError(f"module {name!r} state {key!r} is a {type(value).__name__}, not a tensor")
            weights[f"{name}.{key}"] = value
    state, state_tensors = encode_state(
        {
            "optimizers": {n: o.state_dict() for n, o in optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in schedulers.items()},
            "rng": _rng_state(),
        }
    )
    doc = {
        "format": FORMAT_VERSION,
        "step": step,
        "modules": list(modules),
        "optimizers": list(optimizers),
        "schedulers": list(schedulers),
        "state": state,
        "extra": extra,
    }

    ckpt_dir = _checkpoint_dir(run_or_folder)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    _clean_stale(ckpt_dir)
    name = f"step-{step:08d}"
    target = ckpt_dir / name
    if target.exists():
        # Left from before a resume (or a repeated save): this save supersedes it.
        _remove_tree(target)
    with atomic_dir(target) as tmp:
        safetensors.torch.save_file(
            _for_safetensors(weights), str(tmp / WEIGHTS_FILE), metadata={"format": "edgegan", "step": str(step)}
        )
        safetensors.torch.save_file(_for_safetensors(state_tensors), str(tmp / STATE_TENSORS_FILE))
        (tmp / STATE_JSON_FILE).write_text(json.dumps(doc, allow_nan=False) + "\n", encoding="utf-8")
    # The commit point: until this replace, loaders still see the previous checkpoint.
    atomic_write_json(ckpt_dir / LATEST_FILE, {"step": step, "path": name})

    older = [d for d in _step_dirs(ckpt_dir) if _step_of(d) <= step]
    doomed = [d for d in _step_dirs(ckpt_dir) if _step_of(d) > step]
    if keep is not None:
        doomed += older[:-keep]
    for folder in doomed:
        _remove_tree(folder)
    return target


def _read_safetensors(path: Path, device: str | torch.device = "cpu") -> dict[str, Tensor]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} is missing")
    try:
        return safetensors.torch.load_file(str(path), device=str(device))
    except Exception as exc:  # safetensors raises its own error types, OSError, ValueError...
        raise CheckpointError(f"cannot read {path}: corrupt or not a safetensors file ({_one_line(exc)})") from exc


def _name_mismatch(what: str, folder: Path, saved: list[str], given: Mapping[str, Any]) -> None:
    missing = [n for n in saved if n not in given]
    unexpected = [n for n in given if n not in saved]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"in the checkpoint but not passed: {', '.join(missing)}")
        if unexpected:
            parts.append(f"passed but not in the checkpoint: {', '.join(unexpected)}")
        raise CheckpointError(f"{what} of {folder / STATE_JSON_FILE} do not match ({'; '.join(parts)})")


def load_checkpoint(
    run_or_folder: RunDir | str | os.PathLike[str],
    *,
    modules: Mapping[str, nn.Module],
    optimizers: Mapping[str, Optimizer] | None = None,
    schedulers: Mapping[str, Any] | None = None,
    restore_rng: bool = True,
    map_location: str | torch.device = "cpu",
) -> Checkpoint | None:
    """Restore the latest checkpoint into the given objects; None if the run has none.

    ``run_or_folder`` is a :class:`RunDir`, a run folder, its ``checkpoints`` folder or one
    ``step-*`` folder.  Module weights load strictly; the names passed must be exactly those
    saved.  Passing no optimizers (or no schedulers) skips them, so a checkpoint's weights can
    be loaded for evaluation or export; passing some requires all.  Everything is read and
    checked before anything is modified.
    """
    optimizers = optimizers or {}
    schedulers = schedulers or {}
    given = None if isinstance(run_or_folder, RunDir) else Path(run_or_folder)
    if given is not None and ((given / STATE_JSON_FILE).exists() or _STEP_DIR_RE.match(given.name)):
        folder: Path | None = given  # one particular checkpoint
    else:
        folder = latest_checkpoint(run_or_folder)
    if folder is None:
        return None
    for fname in _CHECKPOINT_FILES:
        if not (folder / fname).is_file():
            raise CheckpointError(f"checkpoint file {folder / fname} is missing")

    json_path = folder / STATE_JSON_FILE
    try:
        doc = json.loads(json_path.read_text(encoding="utf-8"))
        step = int(doc["step"])
        fmt = doc.get("format")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"cannot read {json_path}: {_one_line(exc)}") from exc
    if fmt != FORMAT_VERSION:
        raise CheckpointError(f"{json_path} has format {fmt!r}; this edgegan reads format {FORMAT_VERSION}")
    _name_mismatch("modules", folder, doc["modules"], modules)
    if optimizers:
        _name_mismatch("optimizers", folder, doc["optimizers"], optimizers)
    if schedulers:
        _name_mismatch("schedulers", folder, doc["schedulers"], schedulers)

    weights_path = folder / WEIGHTS_FILE
    weights = _read_safetensors(weights_path, map_location)
    per_module: dict[str, dict[str, Tensor]] = {n: {} for n in modules}
    for key, value in weights.items():
        name, _, sub = key.partition(".")
        if name not in per_module:
            raise CheckpointError(f"{weights_path} holds weights {key!r} for module {name!r}, not listed in state.json")
        per_module[name][sub] = value
    for name, module in modules.items():
        expected = set(module.state_dict())
        missing = sorted(expected - per_module[name].keys())
        unexpected = sorted(per_module[name].keys() - expected)
        if missing or unexpected:
            raise CheckpointError(
                f"{weights_path}: weights of module {name!r} do not match its architecture "
                f"(missing {_few(missing)}; unexpected {_few(unexpected)})"
            )

    state_tensors = _read_safetensors(folder / STATE_TENSORS_FILE, "cpu")
    state = decode_state(doc["state"], state_tensors)

    # Everything is read and validated; from here on objects are modified.
    for name, module in modules.items():
        try:
            module.load_state_dict(per_module[name], strict=True)
        except RuntimeError as exc:  # e.g. shape mismatch
            raise CheckpointError(f"{weights_path}: cannot load module {name!r}: {_one_line(exc)}") from exc
    for name, opt in optimizers.items():
        try:
            opt.load_state_dict(state["optimizers"][name])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(f"{json_path}: cannot load optimizer {name!r}: {_one_line(exc)}") from exc
    for name, sched in schedulers.items():
        try:
            sched.load_state_dict(state["schedulers"][name])
        except (ValueError, KeyError, RuntimeError, TypeError) as exc:
            raise CheckpointError(f"{json_path}: cannot load scheduler {name!r}: {_one_line(exc)}") from exc
    if restore_rng:
        _set_rng_state(state["rng"])
    return Checkpoint(step=step, extra=doc.get("extra"), path=folder)


def _few(names: list[str], n: int = 5) -> str:
    if not names:
        return "none"
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:300] + "...") if len(text) > 300 else text or type(exc).__name__


def load_torch_weights(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors`` or ``.pth``/``.pt`` without unpickling objects.

    ``.pth`` files are read with ``torch.load(weights_only=True)``; a top-level
    ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper is unwrapped.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"weights file {p} is missing")
    if p.suffix == ".safetensors":
        return _read_safetensors(p)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for forbidden objects, RuntimeError for corrupt zips...
        raise CheckpointError(
            f"cannot load {p} safely (weights_only=True): it is corrupt or contains pickled Python objects "
            f"rather than plain tensors ({_one_line(exc).split('. ')[0]})"
        ) from exc
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{p} does not hold a state dict (found {type(obj).__name__})")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{p} is not a flat name -> tensor state dict (non-tensor entries: {_few(bad)})")
    return dict(obj)


# ---------------------------------------------------------------------------------------------
# Guards and seeding
# ---------------------------------------------------------------------------------------------


def check_finite(
    step: int,
    /,
    *,
    checkpoint: RunDir | str | os.PathLike[str] | None = None,
    **losses: Tensor | float,
) -> None:
    """Raise :class:`NonFiniteError` naming the losses that are NaN or inf at ``step``.

    ``step`` is the run's global step, counted from 1 over the whole run, never restarting at an epoch
    (``(epoch - 1) * batches + batch`` in an epoch-based recipe); every recipe passes it so.

    ``checkpoint`` (a run, run folder or checkpoint folder) only makes the message say where
    the last good checkpoint is.  Costs one device sync per device for tensor losses.
    """
    flags_by_device: dict[torch.device, list[Tensor]] = {}
    floats_ok = True
    for value in losses.values():
        if isinstance(value, Tensor):
            flags_by_device.setdefault(value.device, []).append(torch.isfinite(value.detach()).all())
        elif not math.isfinite(float(value)):
            floats_ok = False
    if floats_ok and all(bool(torch.stack(flags).all()) for flags in flags_by_device.values()):
        return

    bad, good = [], []
    for name, value in losses.items():
        if isinstance(value, Tensor):
            finite = bool(torch.isfinite(value.detach()).all())
            shown = f"{float(value.detach()):.4g}" if value.numel() == 1 else f"<tensor of {value.numel()} values>"
        else:
            finite = math.isfinite(float(value))
            shown = f"{float(value):.4g}"
        (good if finite else bad).append(f"{name}={shown}")
    msg = f"non-finite loss at step {step}: {', '.join(bad)}"
    if good:
        msg += f" ({', '.join(good)})"
    msg += "; stopped"
    if checkpoint is not None:
        given = Path(checkpoint.path if isinstance(checkpoint, RunDir) else checkpoint)
        last = given if (given / STATE_JSON_FILE).exists() else latest_checkpoint(checkpoint)
        msg += f", last good checkpoint kept at {last}" if last is not None else ", no checkpoint was saved yet"
    raise NonFiniteError(msg)


def check_device(device: str) -> str:
    """``device`` if it is ``cpu`` or an available ``cuda[:N]``; a one-line ConfigError otherwise."""
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"--device must be cpu or cuda[:N], got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device on this machine")
    return device


def set_seed(seed: int) -> None:
    """Seed Python's ``random``, numpy's global RNG and torch (CPU and all CUDA devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
