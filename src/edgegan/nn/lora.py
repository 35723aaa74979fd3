"""Low-rank adaptation (LoRA) for Conv2d, ConvTranspose2d and Linear layers.

edgegan's own implementation (peft has no transposed-conv support). A wrapped layer computes
``base(x) + scale · Δ(x)`` with ``Δ`` a rank-``r`` factorisation of a weight update and
``scale = alpha / r``:

* Linear ``[out, in]``: ``Δ = B·A`` with ``A [r, in]``, ``B [out, r]``.
* Conv2d ``[out, in/g, k, k]``: ``A`` is a k×k conv ``in -> r`` (same stride, padding, dilation),
  ``B`` a 1×1 conv ``r -> out``; ``ΔW[o, i] = Σ_r B[o, r] · A[r, i]``.
* ConvTranspose2d ``[in, out/g, k, k]``: ``A`` is a 1×1 conv ``in -> r``, ``B`` a transposed conv
  ``r -> out`` with the base layer's geometry; ``ΔW[i, o] = Σ_r A[r, i] · B[r, o]``.

``B`` starts at zero, so a fresh adapter leaves the output unchanged. With ``bias=True`` an adapter also
learns a shift of the base layer's bias (``lora_bias``, zeros at the start; PEFT's ``bias="lora_only"``, but
kept apart from the frozen base so one base serves many adapters). :meth:`LoRALayer.merge` adds
``scale·ΔW`` into the base weight exactly (and :meth:`unmerge` removes it); :meth:`grow` raises the
rank without changing the output. Adapters save alone (safetensors + JSON, a few hundred KB).
Grouped convolutions are not supported (the generators here use none in their crucial layers).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from edgegan.errors import CheckpointError, ConfigError
from edgegan.fileio import atomic_path

__all__ = [
    "LoRALayer",
    "add_lora",
    "adapter_state",
    "count_trainable",
    "load_adapter",
    "lora_layers",
    "lora_rank_cap",
    "merge_lora",
    "save_adapter",
    "set_lora_trainable",
]

ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter.json"
SUPPORTED = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def lora_rank_cap(layer: nn.Module) -> int:
    """The largest useful rank of ``layer``: the smaller side of its weight seen as a matrix."""
    w = layer.weight  # Linear [out, in]; Conv2d [out, in, k, k]; ConvTranspose2d [in, out, k, k]
    return int(min(w.shape[0], w[0].numel()))


class LoRALayer(nn.Module):
    """A frozen ``base`` layer plus a trainable rank-``rank`` update (see the module docs)."""

    def __init__(self, base: nn.Module, rank: int, alpha: float | None = None, bias: bool = False) -> None:
        super().__init__()
        if not isinstance(base, SUPPORTED):
            raise ConfigError(f"LoRA supports Conv2d, ConvTranspose2d and Linear, not {type(base).__name__}")
        if getattr(base, "groups", 1) != 1:
            raise ConfigError("LoRA on grouped convolutions is not supported")
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ConfigError(f"rank must be a positive integer, got {rank!r}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.rank = rank
        self.alpha = float(alpha if alpha is not None else rank)
        self.merged = False
        w = base.weight
        if isinstance(base, nn.Linear):
            self.lora_A = nn.Parameter(torch.empty(rank, w.shape[1], dtype=w.dtype, device=w.device))
            self.lora_B = nn.Parameter(torch.zeros(w.shape[0], rank, dtype=w.dtype, device=w.device))
        elif isinstance(base, nn.Conv2d):
            out_c, in_c, kh, kw = w.shape
            self.lora_A = nn.Parameter(torch.empty(rank, in_c, kh, kw, dtype=w.dtype, device=w.device))
            self.lora_B = nn.Parameter(torch.zeros(out_c, rank, 1, 1, dtype=w.dtype, device=w.device))
        else:
            in_c, out_c, kh, kw = w.shape
            self.lora_A = nn.Parameter(torch.empty(rank, in_c, 1, 1, dtype=w.dtype, device=w.device))
            self.lora_B = nn.Parameter(torch.zeros(rank, out_c, kh, kw, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        # a shift of the base bias (none where the base has no bias); not scaled by alpha / rank
        self.lora_bias: nn.Parameter | None = None
        if bias and base.bias is not None:
            self.lora_bias = nn.Parameter(torch.zeros_like(base.bias))

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def delta_weight(self) -> torch.Tensor:
        """``scale · ΔW`` in the base weight's layout."""
        a, b = self.lora_A, self.lora_B
        if isinstance(self.base, nn.Linear):
            delta = b @ a
        elif isinstance(self.base, nn.Conv2d):
            delta = torch.einsum("or,rikl->oikl", b[:, :, 0, 0], a)
        else:
            delta = torch.einsum("ri,rokl->iokl", a[:, :, 0, 0], b)
        return delta * self.scale

    def _bias_shift(self, out: torch.Tensor) -> torch.Tensor:
        assert self.lora_bias is not None
        if isinstance(self.base, nn.Linear):
            return self.lora_bias
        return self.lora_bias.view(1, -1, *([1] * (out.dim() - 2)))

    def _update(self, x: torch.Tensor) -> torch.Tensor:
        base = self.base
        if isinstance(base, nn.Linear):
            return F.linear(F.linear(x, self.lora_A), self.lora_B)
        if isinstance(base, nn.Conv2d):
            if base.padding_mode != "zeros":
                raise ConfigError("LoRA on convs with non-zero padding modes is not supported")
            h = F.conv2d(x, self.lora_A, None, base.stride, base.padding, base.dilation)
            return F.conv2d(h, self.lora_B)
        assert isinstance(base, nn.ConvTranspose2d)
        h = F.conv2d(x, self.lora_A)
        return F.conv_transpose2d(
            h, self.lora_B, None, base.stride, base.padding, base.output_padding, 1, base.dilation
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged:
            return out
        out = out + self.scale * self._update(x)
        return out if self.lora_bias is None else out + self._bias_shift(out)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight (exact up to float rounding); forward then runs the base only."""
        if not self.merged:
            self.base.weight += self.delta_weight()
            if self.lora_bias is not None:
                self.base.bias += self.lora_bias
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.base.weight -= self.delta_weight()
            if self.lora_bias is not None:
                self.base.bias -= self.lora_bias
            self.merged = False

    @torch.no_grad()
    def grow(self, rank: int) -> None:
        """Raise the rank to ``rank`` keeping the output: new ``A`` rows are random, new ``B`` entries zero,
        and the old ``B`` is rescaled for the new ``alpha / rank`` (alpha is kept)."""
        if rank < self.rank:
            raise ConfigError(f"grow cannot lower the rank ({self.rank} -> {rank})")
        if rank == self.rank:
            return
        if self.merged:
            raise ConfigError("unmerge the adapter before growing its rank")
        ratio = rank / self.rank  # scale = alpha / rank shrinks by this factor
        extra = rank - self.rank
        a_new = torch.empty((extra, *self.lora_A.shape[1:]), dtype=self.lora_A.dtype, device=self.lora_A.device)
        nn.init.kaiming_uniform_(a_new, a=math.sqrt(5))
        rank_dim_b = 0 if isinstance(self.base, nn.ConvTranspose2d) else 1
        b_shape = list(self.lora_B.shape)
        b_shape[rank_dim_b] = extra
        b_new = torch.zeros(b_shape, dtype=self.lora_B.dtype, device=self.lora_B.device)
        self.lora_A = nn.Parameter(torch.cat([self.lora_A, a_new], 0))
        self.lora_B = nn.Parameter(torch.cat([self.lora_B * ratio, b_new], rank_dim_b))
        self.rank = rank

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}, bias={self.lora_bias is not None}, merged={self.merged}"


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parts = name.split(".")
    parent = model.get_submodule(".".join(parts[:-1])) if len(parts) > 1 else model
    return parent, parts[-1]


def lora_layers(model: nn.Module) -> dict[str, LoRALayer]:
    """Every :class:`LoRALayer` in ``model`` by module name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALayer)}


def add_lora(
    model: nn.Module, ranks: Mapping[str, int], alpha: float | None = None, bias: bool = False
) -> dict[str, LoRALayer]:
    """Wrap the named layers of ``model`` in place (``{"down.0.0": 4, ...}``); returns the new wrappers.
    ``alpha`` None uses alpha = rank (scale 1); ``bias`` adds a trainable bias shift to each layer that has a
    bias. Unknown names and unsupported layers are ConfigErrors."""
    added = {}
    for name, rank in ranks.items():
        try:
            layer = model.get_submodule(name)
        except AttributeError:
            raise ConfigError(f"{type(model).__name__} has no layer named {name!r}") from None
        if isinstance(layer, LoRALayer):
            raise ConfigError(f"{name} already has a LoRA adapter")
        wrapper = LoRALayer(layer, int(rank), alpha, bias)
        parent, attr = _parent(model, name)
        setattr(parent, attr, wrapper)
        added[name] = wrapper
    return added


def set_lora_trainable(model: nn.Module) -> None:
    """Freeze everything but the adapters (LoRA matrices and bias shifts)."""
    for n, p in model.named_parameters():
        p.requires_grad_(n.endswith(("lora_A", "lora_B", "lora_bias")))


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def merge_lora(model: nn.Module) -> nn.Module:
    """Merge every adapter into its base layer and put the plain layers back (for export); in place."""
    for name, layer in lora_layers(model).items():
        layer.merge()
        parent, attr = _parent(model, name)
        setattr(parent, attr, layer.base)
    return model


def adapter_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The adapter tensors and their config (``{"layers": {name: {"rank", "alpha", "kind"}}}``)."""
    tensors: dict[str, torch.Tensor] = {}
    layers: dict[str, Any] = {}
    for name, layer in lora_layers(model).items():
        if layer.merged:
            raise ConfigError(f"{name} is merged; unmerge before saving the adapter")
        tensors[f"{name}.lora_A"] = layer.lora_A.detach().cpu().contiguous()
        tensors[f"{name}.lora_B"] = layer.lora_B.detach().cpu().contiguous()
        if layer.lora_bias is not None:
            tensors[f"{name}.lora_bias"] = layer.lora_bias.detach().cpu().contiguous()
        layers[name] = {
            "rank": layer.rank,
            "alpha": layer.alpha,
            "kind": type(layer.base).__name__,
            "bias": layer.lora_bias is not None,
        }
    if not layers:
        raise ConfigError("the model has no LoRA adapters")
    return tensors, {"format": "edgegan-lora-1", "layers": layers}


def save_adapter(model: nn.Module, path: str | os.PathLike[str], extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``adapter.safetensors`` + ``adapter.json`` into folder ``path`` (each file atomically)."""
    tensors, config = adapter_state(model)
    if extra:
        config = {**config, **dict(extra)}
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / ADAPTER_WEIGHTS) as tmp:
        save_file(tensors, str(tmp))
    with atomic_path(folder / ADAPTER_CONFIG) as tmp:
        Path(tmp).write_text(json.dumps(config, indent=2) + "\n")
    return folder


def read_adapter(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    folder = Path(path)
    cfg_file, weights_file = folder / ADAPTER_CONFIG, folder / ADAPTER_WEIGHTS
    if not cfg_file.is_file() or not weights_file.is_file():
        raise CheckpointError(f"{folder} is not a LoRA adapter folder ({ADAPTER_CONFIG} + {ADAPTER_WEIGHTS})")
    try:
        config = json.loads(cfg_file.read_text())
        tensors = load_file(str(weights_file))
    except Exception as exc:  # corrupt JSON or safetensors header
        raise CheckpointError(f"cannot read the adapter in {folder}: {exc}") from None
    if config.get("format") != "edgegan-lora-1" or not isinstance(config.get("layers"), dict):
        raise CheckpointError(f"{cfg_file} is not an edgegan LoRA adapter config")
    return tensors, config


def load_adapter(model: nn.Module, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Add the adapter saved in ``path`` to ``model`` (in place; its layers must not have adapters yet)
    and load its weights; returns the adapter config."""
    tensors, config = read_adapter(path)
    layers: dict[str, Any] = config["layers"]
    added: dict[str, LoRALayer] = {}
    for name, v in layers.items():  # adapters saved before bias shifts existed have no "bias" key
        added.update(add_lora(model, {name: int(v["rank"])}, None, bias=bool(v.get("bias", False))))
    for name, layer in added.items():
        layer.alpha = float(layers[name]["alpha"])
        if bool(layers[name].get("bias", False)) and layer.lora_bias is None:
            raise CheckpointError(f"the adapter in {path} shifts {name}'s bias, but that layer has none")
        for part in ("lora_A", "lora_B") + (("lora_bias",) if layer.lora_bias is not None else ()):
            key = f"{name}.{part}"
            if key not in tensors:
                raise CheckpointError(f"the adapter in {path} lacks {key}")
            target = getattr(layer, part)
            if tuple(tensors[key].shape) != tuple(target.shape):
                raise CheckpointError(
                    f"{key} has shape {tuple(tensors[key].shape)}, the model expects {tuple(target.shape)}"
                )
            with torch.no_grad():
                target.copy_(tensors[key].to(target.dtype))
    return config


def iter_adapter_params(model: nn.Module) -> Iterable[nn.Parameter]:
    for layer in lora_layers(model).values():
        yield layer.lora_A
        yield layer.lora_B
        if layer.lora_bias is not None:
            yield layer.lora_bias
