"""Shared building blocks."""

from edgegan.nn.layers import (
    MobileResnetBlock,
    NormKind,
    PaddingKind,
    ResnetBlock,
    SeparableConv2d,
    conv_bias,
    norm_layer,
    pad_and_conv_padding,
)

__all__ = [
    "MobileResnetBlock",
    "NormKind",
    "PaddingKind",
    "ResnetBlock",
    "SeparableConv2d",
    "conv_bias",
    "norm_layer",
    "pad_and_conv_padding",
]
