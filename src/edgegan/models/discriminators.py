"""PatchGAN discriminators: the 70×70 N-layer PatchGAN and its multi-scale stack.

Each output of an ``n_layers`` PatchGAN judges one square patch of the input, 16, 34, 70, 142... px a side for
``n_layers`` 1, 2, 3, 4 (:func:`patch_receptive_field`). The reference's 70×70 patch is meant for 256 px images;
on a 64 px crop it covers the whole image and gives no local texture signal, so :func:`patch_layers_for` sizes
the patch to the crop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgegan.errors import ConfigError
from edgegan.nn import NormKind, conv_bias, norm_layer
from edgegan.registry import EdgeModel, ModelConfig, register


@dataclass
class PatchDiscriminatorConfig(ModelConfig):
    """``input_nc`` is 6 for a conditional (pix2pix) discriminator that sees input and output."""

    input_nc: int = 3
    ndf: int = 64
    n_layers: int = 3
    norm: NormKind = "instance"

    def __post_init__(self) -> None:
        if self.n_layers < 1:
            raise ConfigError(f"n_layers must be >= 1, got {self.n_layers}")
        if min(self.input_nc, self.ndf) < 1:
            raise ConfigError("channel counts must be positive")


def patch_receptive_field(n_layers: int) -> int:
    """Side in pixels of the input patch one output of an ``n_layers`` PatchGAN sees (70 for 3 layers).

    The layers are 4×4 convs: stride 2 for the first conv and the first ``n_layers - 1`` inner ones, stride 1
    for the last inner conv and the output conv. Walking back from one output pixel, each conv widens the
    field to ``(field - 1) * stride + 4``.
    """
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
        raise ConfigError(f"n_layers must be a positive int, got {n_layers!r}")
    strides = [2] + [2] * (n_layers - 1) + [1, 1]
    field = 1
    for stride in reversed(strides):
        field = (field - 1) * stride + 4
    return field


PATCH_FRACTION = 0.55
"""Largest patch side, as a share of the crop, :func:`patch_layers_for` allows: about half the crop, which keeps
the reference's 70×70 patch (3 layers) at 128 px crops and larger."""


def patch_layers_for(crop_size: int, max_layers: int = 3) -> int:
    """PatchGAN depth for ``crop_size`` px training crops: the deepest ``n_layers`` up to ``max_layers`` (the
    reference's 3) whose patch is at most :data:`PATCH_FRACTION` of the crop, and at least 1.

    3 layers (70×70) at 128 px and up, 2 (34×34) at 64 px, 1 (16×16) at 32 px.
    """
    if isinstance(crop_size, bool) or not isinstance(crop_size, int) or crop_size < 1:
        raise ConfigError(f"crop_size must be a positive int, got {crop_size!r}")
    n = 1
    while n < max_layers and patch_receptive_field(n + 1) <= PATCH_FRACTION * crop_size:
        n += 1
    return n


def _patch_layers(c: PatchDiscriminatorConfig) -> list[nn.Sequential]:
    bias = conv_bias(c.norm)
    layers = [nn.Sequential(nn.Conv2d(c.input_nc, c.ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True))]
    mult = 1
    for n in range(1, c.n_layers + 1):
        prev, mult = mult, min(2**n, 8)
        stride = 2 if n < c.n_layers else 1
        layers.append(
            nn.Sequential(
                nn.Conv2d(c.ndf * prev, c.ndf * mult, 4, stride=stride, padding=1, bias=bias),
                norm_layer(c.norm, c.ndf * mult),
                nn.LeakyReLU(0.2, True),
            )
        )
    layers.append(nn.Sequential(nn.Conv2d(c.ndf * mult, 1, 4, stride=1, padding=1)))
    return layers


@register("patch_discriminator")
class PatchDiscriminator(EdgeModel):
    """Each output pixel scores one receptive-field patch (70×70 with ``n_layers=3``)."""

    config_cls = PatchDiscriminatorConfig

    def __init__(self, config: PatchDiscriminatorConfig | None = None, **options: object) -> None:
        config = config or PatchDiscriminatorConfig.from_dict(options)
        super().__init__(config)
        self.layers = nn.ModuleList(_patch_layers(config))

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f"layer{i}" for i in range(len(self.layers) - 1))

    def forward(
        self, x: torch.Tensor, return_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        feats = {}
        h = x
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if return_features and i < len(self.layers) - 1:
                feats[f"layer{i}"] = h
        return (h, feats) if return_features else h


@dataclass
class MultiScaleDiscriminatorConfig(PatchDiscriminatorConfig):
    """``num_d`` PatchGANs; discriminator k sees the input average-pooled k times by 2."""

    num_d: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_d < 1:
            raise ConfigError(f"num_d must be >= 1, got {self.num_d}")


@register("multiscale_discriminator")
class MultiScaleDiscriminator(EdgeModel):
    """pix2pixHD-style stack of PatchGANs at decreasing resolutions; returns one map per scale."""

    config_cls = MultiScaleDiscriminatorConfig

    def __init__(self, config: MultiScaleDiscriminatorConfig | None = None, **options: object) -> None:
        config = config or MultiScaleDiscriminatorConfig.from_dict(options)
        super().__init__(config)
        self.discriminators = nn.ModuleList(nn.ModuleList(_patch_layers(config)) for _ in range(config.num_d))

    @property
    def feature_names(self) -> tuple[str, ...]:
        n = len(self.discriminators[0]) - 1
        return tuple(f"d{k}.layer{i}" for k in range(len(self.discriminators)) for i in range(n))

    def forward(
        self, x: torch.Tensor, return_features: bool = False
    ) -> list[torch.Tensor] | tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        outs: list[torch.Tensor] = []
        feats: dict[str, torch.Tensor] = {}
        h_in = x
        for k, layers in enumerate(self.discriminators):
            if k > 0:
                h_in = F.avg_pool2d(h_in, 3, stride=2, padding=1, count_include_pad=False)
            h = h_in
            for i, layer in enumerate(layers):
                h = layer(h)
                if return_features and i < len(layers) - 1:
                    feats[f"d{k}.layer{i}"] = h
            outs.append(h)
        return (outs, feats) if return_features else outs
