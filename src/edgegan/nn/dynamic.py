"""Dynamic-width layers for GAN Compression's once-for-all supernet.

Each layer holds its full-size weights; a forward pass uses the first ``C_in`` input channels
(taken from the input tensor) and the first ``active_out_channels`` output channels (set with
``set_active``; full by default). A sub-network's weights are therefore leading slices of the
supernet's tensors, with the same parameter names as the static layers in :mod:`edgegan.nn.layers`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgegan.nn.layers import NormKind, PaddingKind, mobile_block_layers

__all__ = [
    "DynamicBatchNorm2d",
    "DynamicConv2d",
    "DynamicConvTranspose2d",
    "DynamicInstanceNorm2d",
    "DynamicMobileResnetBlock",
    "DynamicSeparableConv2d",
    "dynamic_norm_layer",
]


def _check_width(name: str, active: int, full: int) -> int:
    if isinstance(active, bool) or not isinstance(active, int) or not 1 <= active <= full:
        raise ValueError(f"{name}: active width must be an integer in [1, {full}], got {active!r}")
    return active


def _reset_like_torch(weight: nn.Parameter, bias: nn.Parameter | None) -> None:
    # Same distribution as torch's default conv init: kaiming-uniform(a=√5), bias U(±1/√fan_in).
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in = weight[0].numel()
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        nn.init.uniform_(bias, -bound, bound)


class _DynamicConvBase(nn.Module):
    in_channels: int
    out_channels: int
    active_out_channels: int

    def _input_width(self, x: torch.Tensor) -> int:
        cin = x.size(1)
        if cin > self.in_channels:
            raise ValueError(f"{type(self).__name__}: input has {cin} channels, more than the {self.in_channels} held")
        return cin

    def set_active(self, out_channels: int | None = None) -> None:
        """Use the first ``out_channels`` output channels from now on (None: all of them)."""
        full = self.out_channels
        self.active_out_channels = (
            full if out_channels is None else _check_width(type(self).__name__, out_channels, full)
        )


class DynamicConv2d(_DynamicConvBase):
    """A ``Conv2d`` of at most ``in_channels -> out_channels``; weight ``[out, in/groups, k, k]``.

    ``groups`` is 1 or ``in_channels`` (depthwise, with ``out_channels == in_channels``); a
    depthwise conv uses groups = the active input width and its output width follows the input.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if groups not in (1, in_channels) or (groups != 1 and out_channels != in_channels):
            raise ValueError("DynamicConv2d supports groups=1 or depthwise (groups = in_channels = out_channels)")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.depthwise = groups != 1
        per_group_in = 1 if self.depthwise else in_channels
        self.weight = nn.Parameter(torch.empty(out_channels, per_group_in, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.active_out_channels = out_channels
        _reset_like_torch(self.weight, self.bias)

    def set_active(self, out_channels: int | None = None) -> None:
        if self.depthwise and out_channels is not None:
            raise ValueError("a depthwise DynamicConv2d's output width follows its input; it has no set_active width")
        super().set_active(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cin = self._input_width(x)
        if self.depthwise:
            w = self.weight[:cin]
            b = self.bias[:cin] if self.bias is not None else None
            return F.conv2d(x, w, b, self.stride, self.padding, groups=cin)
        cout = self.active_out_channels
        w = self.weight[:cout, :cin]
        b = self.bias[:cout] if self.bias is not None else None
        return F.conv2d(x, w, b, self.stride, self.padding)

    def extra_macs(self, inputs: tuple[Any, ...], output: torch.Tensor) -> int:
        """True multiply-accumulates of the last call (``edgegan.profile.profile_macs`` hook)."""
        cin = 1 if self.depthwise else inputs[0].size(1)
        return output.numel() * cin * self.kernel_size * self.kernel_size

    def extra_repr(self) -> str:
        kind = ", depthwise" if self.depthwise else ""
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}{kind}, bias={self.bias is not None}, active_out={self.active_out_channels}"
        )


class DynamicConvTranspose2d(_DynamicConvBase):
    """A ``ConvTranspose2d`` of at most ``in_channels -> out_channels``; weight ``[in, out, k, k]``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        output_padding: int = 0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.output_padding = output_padding
        self.weight = nn.Parameter(torch.empty(in_channels, out_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.active_out_channels = out_channels
        _reset_like_torch(self.weight, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cin = self._input_width(x)
        cout = self.active_out_channels
        w = self.weight[:cin, :cout]
        b = self.bias[:cout] if self.bias is not None else None
        return F.conv_transpose2d(x, w, b, self.stride, self.padding, self.output_padding)

    def extra_macs(self, inputs: tuple[Any, ...], output: torch.Tensor) -> int:
        """True multiply-accumulates: each input value meets every kernel tap of every active output."""
        return inputs[0].numel() * self.active_out_channels * self.kernel_size * self.kernel_size

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, output_padding={self.output_padding}, bias={self.bias is not None}, "
            f"active_out={self.active_out_channels}"
        )


class DynamicInstanceNorm2d(nn.InstanceNorm2d):
    """InstanceNorm without affine or running stats: it simply normalises however many channels arrive."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__(num_features, eps=eps, affine=False, track_running_stats=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.size(1) > self.num_features:
            raise ValueError(f"DynamicInstanceNorm2d: input has {x.size(1)} channels, at most {self.num_features}")
        return F.instance_norm(x, eps=self.eps)


class DynamicBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the first C channels of its affine weights and running statistics.

    In training mode the running statistics of only those first C channels are updated (in place).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.size(1)
        if c > self.num_features:
            raise ValueError(f"DynamicBatchNorm2d: input has {c} channels, at most {self.num_features}")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        keep_stats = not self.training or self.track_running_stats
        mean = self.running_mean[:c] if self.running_mean is not None and keep_stats else None
        var = self.running_var[:c] if self.running_var is not None and keep_stats else None
        weight = self.weight[:c] if self.weight is not None else None
        bias = self.bias[:c] if self.bias is not None else None
        return F.batch_norm(x, mean, var, weight, bias, use_batch_stats, factor, self.eps)


def dynamic_norm_layer(kind: NormKind, channels: int) -> nn.Module:
    """Dynamic counterpart of :func:`edgegan.nn.norm_layer` (same parameter and buffer names)."""
    if kind == "instance":
        return DynamicInstanceNorm2d(channels)
    if kind == "batch":
        return DynamicBatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}")


class DynamicSeparableConv2d(nn.Module):
    """Depthwise k×k conv, norm, pointwise 1×1 conv, mirroring :class:`edgegan.nn.SeparableConv2d`."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 0,
        norm: NormKind = "instance",
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.depthwise = DynamicConv2d(
            in_channels, in_channels, kernel_size, stride=stride, padding=padding, groups=in_channels, bias=bias
        )
        self.norm = dynamic_norm_layer(norm, in_channels)
        self.pointwise = DynamicConv2d(in_channels, out_channels, 1, bias=bias)

    @property
    def in_channels(self) -> int:
        return self.depthwise.in_channels

    @property
    def out_channels(self) -> int:
        return self.pointwise.out_channels

    def set_active(self, out_channels: int | None = None) -> None:
        """Active output width of the pointwise conv (the depthwise part follows the input)."""
        self.pointwise.set_active(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.norm(self.depthwise(x)))


class DynamicMobileResnetBlock(nn.Module):
    """Dynamic :class:`edgegan.nn.MobileResnetBlock`: same ``conv_block`` layout and indices.

    ``set_active(hidden, dim)`` picks the inner width and the block's output width; the output
    must equal the input width for the residual sum, so ``dim`` is the trunk width of the input.
    """

    def __init__(
        self,
        dim: int,
        hidden: int,
        norm: NormKind = "instance",
        dropout: float = 0.0,
        padding_type: PaddingKind = "reflect",
    ) -> None:
        super().__init__()
        layers = mobile_block_layers(
            dim, hidden, norm, dropout, padding_type, separable=DynamicSeparableConv2d, norm_fn=dynamic_norm_layer
        )
        self.conv_block = nn.Sequential(*layers)
        self._sep_indices = [i for i, m in enumerate(layers) if isinstance(m, DynamicSeparableConv2d)]

    def set_active(self, hidden: int | None = None, dim: int | None = None) -> None:
        expand, project = (self.conv_block[i] for i in self._sep_indices)
        assert isinstance(expand, DynamicSeparableConv2d) and isinstance(project, DynamicSeparableConv2d)
        expand.set_active(hidden)
        project.set_active(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


@torch.no_grad()
def load_leading_slices(target: nn.Module, source: nn.Module) -> None:
    """Load into ``target`` the leading slice (first c entries along every dimension) of the same-named
    tensor of ``source``: how a sub-network inherits a supernet's weights. Conv weights ``[out, in, k, k]``,
    depthwise ``[c, 1, k, k]``, transposed-conv ``[in, out, k, k]``, biases and BatchNorm statistics alike.
    ValueError when a target tensor has no counterpart or is not a slice of it."""
    src = source.state_dict()
    state = {}
    for name, dst in target.state_dict().items():
        if name not in src:
            raise ValueError(f"{name} of the sub-network has no counterpart in the supernet")
        full = src[name]
        if full.dim() != dst.dim() or any(d > s for d, s in zip(dst.shape, full.shape, strict=True)):
            raise ValueError(f"{name}: sub-network shape {tuple(dst.shape)} is not a slice of {tuple(full.shape)}")
        state[name] = full[tuple(slice(0, d) for d in dst.shape)].clone()
    target.load_state_dict(state, strict=True)
