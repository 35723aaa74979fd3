"""Parameter and multiply-accumulate counts, in two conventions.

``macs``: true multiply-accumulates of convolutions, transposed convolutions, linear layers
and attention (a stride-2 transposed conv costs input elements × C_out/groups × k², since each
input value is multiplied by every kernel tap once).

``macs_gc``: the convention printed by the GAN Compression and UGC papers (their profiler
counts every conv and transposed conv as output elements × C_in/groups × k², plus the output
elements of each InstanceNorm, and nothing else), so our numbers compare with theirs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class LayerCost:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    macs: int
    macs_gc: int
    calls: int = 1


@dataclass
class CostReport:
    input_shape: tuple[int, ...]
    params: int
    macs: int
    macs_gc: int
    layers: list[LayerCost] = field(default_factory=list)

    def to_dict(self, layers: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "input_shape": list(self.input_shape),
            "params": self.params,
            "macs": self.macs,
            "macs_gc": self.macs_gc,
        }
        if layers:
            out["layers"] = [asdict(layer) for layer in self.layers]
        return out


def _first_tensor(obj: Any) -> torch.Tensor | None:
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, list | tuple):
        for item in obj:
            t = _first_tensor(item)
            if t is not None:
                return t
    return None


def layer_macs(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> tuple[int, int]:
    """(true MACs, GAN-Compression MACs) of one call of a leaf module."""
    x = _first_tensor(inputs)
    y = _first_tensor(output)
    if x is None or y is None:
        return 0, 0
    if isinstance(module, nn.Conv2d | nn.Conv1d | nn.Conv3d):
        per_out = module.in_channels // module.groups * math.prod(module.kernel_size)
        m = y.numel() * per_out
        return m, m
    if isinstance(module, nn.ConvTranspose2d | nn.ConvTranspose1d | nn.ConvTranspose3d):
        taps = math.prod(module.kernel_size)
        true = x.numel() * (module.out_channels // module.groups) * taps
        gc = y.numel() * (module.in_channels // module.groups) * taps
        return true, gc
    if isinstance(module, nn.Linear):
        return y.numel() * module.in_features, 0
    if isinstance(module, nn.InstanceNorm1d | nn.InstanceNorm2d | nn.InstanceNorm3d):
        return 0, y.numel()
    if isinstance(module, nn.MultiheadAttention):
        q = x if module.batch_first else x.transpose(0, 1)
        batch, length, dim = q.shape
        proj = 4 * batch * length * dim * dim  # q, k, v and output projections (self-attention)
        attn = 2 * batch * length * length * dim  # QKᵀ and attention × V
        return proj + attn, 0
    extra = getattr(module, "extra_macs", None)
    if callable(extra):
        return int(extra(inputs, output)), 0
    return 0, 0


def _is_counted_leaf(module: nn.Module) -> bool:
    # MultiheadAttention computes its projections functionally, so it is costed as a whole.
    if isinstance(module, nn.MultiheadAttention):
        return True
    if callable(getattr(module, "extra_macs", None)):
        return True
    return next(module.children(), None) is None


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


@torch.no_grad()
def profile_macs(model: nn.Module, x: torch.Tensor | tuple[torch.Tensor, ...]) -> CostReport:
    """Run one forward pass of ``model`` on ``x`` (a tensor or a tuple of inputs) and count its cost."""
    inputs = x if isinstance(x, tuple) else (x,)
    layers: dict[str, LayerCost] = {}
    handles = []
    inside_counted: set[int] = set()
    # Children of a module costed as a whole (e.g. attention) must not be counted twice.
    for _, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention) or callable(getattr(module, "extra_macs", None)):
            inside_counted.update(id(m) for m in module.modules() if m is not module)

    def make_hook(name: str):
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            true, gc = layer_macs(module, inputs, output)
            y = _first_tensor(output)
            shape = tuple(y.shape) if y is not None else ()
            if name in layers:
                rec = layers[name]
                rec.macs += true
                rec.macs_gc += gc
                rec.calls += 1
            else:
                params = sum(p.numel() for p in module.parameters(recurse=True))
                layers[name] = LayerCost(name, type(module).__name__, shape, params, true, gc)

        return hook

    for name, module in model.named_modules():
        if id(module) in inside_counted or not _is_counted_leaf(module):
            continue
        handles.append(module.register_forward_hook(make_hook(name or type(module).__name__)))
    was_training = model.training
    model.eval()
    try:
        model(*inputs)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    rows = list(layers.values())
    return CostReport(
        input_shape=tuple(inputs[0].shape),
        params=count_params(model),
        macs=sum(r.macs for r in rows),
        macs_gc=sum(r.macs_gc for r in rows),
        layers=rows,
    )
