"""Small layers shared by the architectures: norm factory, padding, separable convs, residual blocks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TypeVar

import torch
from torch import nn

NormKind = Literal["instance", "batch", "none"]
PaddingKind = Literal["reflect", "replicate", "zero"]


def norm_layer(kind: NormKind, channels: int) -> nn.Module:
    """InstanceNorm without affine or running stats (pix2pix default), BatchNorm, or nothing."""
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}")


def conv_bias(norm: NormKind) -> bool:
    # BatchNorm has its own shift, so a conv bias before it is redundant (pix2pix's rule).
    return norm != "batch"


def pad_and_conv_padding(padding_type: PaddingKind, amount: int) -> tuple[list[nn.Module], int]:
    """Explicit padding module(s) plus the padding the conv itself should use."""
    if padding_type == "reflect":
        return [nn.ReflectionPad2d(amount)], 0
    if padding_type == "replicate":
        return [nn.ReplicationPad2d(amount)], 0
    if padding_type == "zero":
        return [], amount
    raise ValueError(f"unknown padding type {padding_type!r}")


class SeparableConv2d(nn.Module):
    """Depthwise k×k conv (groups = channels), norm, pointwise 1×1 conv (GAN Compression)."""

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
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, kernel_size, stride=stride, padding=padding, groups=in_channels, bias=bias
        )
        self.norm = norm_layer(norm, in_channels)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.norm(self.depthwise(x)))


class ResnetBlock(nn.Module):
    """pad, 3×3 conv, norm, ReLU, [dropout], pad, 3×3 conv, norm, plus the skip."""

    def __init__(
        self, dim: int, norm: NormKind = "instance", dropout: float = 0.0, padding_type: PaddingKind = "reflect"
    ):
        super().__init__()
        bias = conv_bias(norm)
        layers: list[nn.Module] = []
        for i in range(2):
            pads, p = pad_and_conv_padding(padding_type, 1)
            layers += [*pads, nn.Conv2d(dim, dim, 3, padding=p, bias=bias), norm_layer(norm, dim)]
            if i == 0:
                layers.append(nn.ReLU(True))
                if dropout > 0:
                    layers.append(nn.Dropout(dropout))
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


def mobile_block_layers(
    dim: int,
    hidden: int,
    norm: NormKind,
    dropout: float,
    padding_type: PaddingKind,
    separable: Callable[..., nn.Module] = SeparableConv2d,
    norm_fn: Callable[[NormKind, int], nn.Module] = norm_layer,
) -> list[nn.Module]:
    """The layers of a mobile residual block. The static block and its dynamic-width twin in
    the supernet both build from this, so their parameter names always line up."""
    bias = conv_bias(norm)
    pads, p = pad_and_conv_padding(padding_type, 1)
    layers: list[nn.Module] = [
        *pads,
        separable(dim, hidden, 3, padding=p, norm=norm, bias=bias),
        norm_fn(norm, hidden),
        nn.ReLU(True),
    ]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    pads, p = pad_and_conv_padding(padding_type, 1)
    layers += [*pads, separable(hidden, dim, 3, padding=p, norm=norm, bias=bias), norm_fn(norm, dim)]
    return layers


class MobileResnetBlock(nn.Module):
    """A residual block whose two 3×3 convs are separable convs; ``hidden`` is the inner width."""

    def __init__(
        self,
        dim: int,
        hidden: int,
        norm: NormKind = "instance",
        dropout: float = 0.0,
        padding_type: PaddingKind = "reflect",
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(*mobile_block_layers(dim, hidden, norm, dropout, padding_type))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


ZERO_INIT = "edgegan_zero_init"
"""Attribute a layer carries (set to True) when it is deliberately initialised to zero, such as the last
conv of a residual head that makes a generator start as the identity; :func:`init_gan_weights` leaves it."""


ModuleT = TypeVar("ModuleT", bound=nn.Module)


@torch.no_grad()
def init_gan_weights(module: ModuleT, gain: float = 0.02) -> ModuleT:
    """pix2pix / CycleGAN / GAN Compression initialisation (their ``init_weights(net, "normal", 0.02)``):
    conv, transposed-conv and linear weights ~ N(0, gain), biases 0; BatchNorm weights ~ N(1, gain), biases 0.

    Layers marked with :data:`ZERO_INIT` keep their zero initialisation. Draws from torch's global RNG.
    Returns ``module``.
    """
    for m in module.modules():
        if getattr(m, ZERO_INIT, False):
            continue
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return module


def zero_init(layer: ModuleT) -> ModuleT:
    """Zero ``layer``'s weight and bias and mark it (:data:`ZERO_INIT`) so :func:`init_gan_weights` keeps it."""
    with torch.no_grad():
        for p in layer.parameters(recurse=False):
            p.zero_()
    setattr(layer, ZERO_INIT, True)
    return layer
