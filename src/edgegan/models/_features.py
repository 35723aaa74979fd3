"""Helpers for models that expose named intermediate features (used by distillation)."""

from __future__ import annotations

import torch
from torch import nn

from edgegan.nn import PaddingKind, pad_and_conv_padding
from edgegan.nn.layers import zero_init


class FeatureRecorder:
    """Collects named activations during a forward pass only when asked to."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.features: dict[str, torch.Tensor] = {}

    def __call__(self, name: str, x: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            self.features[name] = x
        return x


def block_thirds(n_blocks: int) -> list[int]:
    """Block indices (1-based) after every third of the trunk: 3, 6, 9 for nine blocks."""
    if n_blocks == 0:
        return []
    marks = [max(1, n_blocks // 3), max(1, 2 * n_blocks // 3), n_blocks]
    return sorted(set(marks))


class StemTrunkHead:
    """Forward pass and feature names shared by generators laid out as
    ``stem -> down[] -> blocks[] -> up[] -> head`` (the ResNet and mobile ResNet generators), with the
    config's optional ``input_skip`` (the stem conv's un-normalised output added before the head) and
    ``residual`` (the input plus the head's output); see :mod:`edgegan.models.resnet`."""

    stem: torch.nn.Module
    down: torch.nn.ModuleList
    blocks: torch.nn.ModuleList
    up: torch.nn.ModuleList
    head: torch.nn.Module

    @property
    def feature_names(self) -> tuple[str, ...]:
        downs = tuple(f"down{i + 1}" for i in range(len(self.down)))
        blocks = tuple(f"block{i + 1}" for i in range(len(self.blocks)))
        ups = tuple(f"up{i + 1}" for i in range(len(self.up)))
        return ("stem", *downs, *blocks, *ups)

    def distill_feature_names(self) -> list[str]:
        """GAN Compression's distillation points: end of down-sampling, then every third of the trunk."""
        return [f"down{len(self.down)}"] + [f"block{i}" for i in block_thirds(len(self.blocks))]

    def forward(
        self, x: torch.Tensor, return_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        config = getattr(self, "config", None)
        skip, residual = getattr(config, "input_skip", False), getattr(config, "residual", False)
        rec = FeatureRecorder(return_features)
        if skip:  # the stem is [pad,] conv, norm, ReLU: the skip takes the conv's output before the norm
            raw = self.stem[:-2](x)  # type: ignore[index]
            h = rec("stem", self.stem[-2:](raw))  # type: ignore[index]
        else:
            h = rec("stem", self.stem(x))
        for i, layer in enumerate(self.down):
            h = rec(f"down{i + 1}", layer(h))
        for i, block in enumerate(self.blocks):
            h = rec(f"block{i + 1}", block(h))
        for i, layer in enumerate(self.up):
            h = rec(f"up{i + 1}", layer(h))
        if skip:
            h = add_skip(h, raw)
        out = self.head(h)
        if residual:
            out = add_input(x, out, self.training)  # type: ignore[attr-defined]
        return (out, rec.features) if return_features else out


def add_skip(h: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
    """``h`` plus ``relu(raw)`` (the stem conv's un-normalised output) on their common leading channels.

    The stem and the last up-sampling layer may differ in width (a compressed student's c0 and c7, a
    supernet's sub-networks): the skip then feeds the first ``min`` channels, which keeps every sub-network
    of a supernet equal to the standalone generator built from its leading weight slices."""
    k = min(h.shape[1], raw.shape[1])
    skip = torch.relu(raw[:, :k])
    if k == h.shape[1]:
        return h + skip
    return torch.cat([h[:, :k] + skip, h[:, k:]], 1)


def output_head(
    channels: int, output_nc: int, padding_type: PaddingKind, residual: bool, conv_cls: type[nn.Module] = nn.Conv2d
) -> nn.Sequential:
    """The 7×7 output conv (``conv_cls``: a supernet passes its dynamic conv): followed by tanh (the papers), or
    zero-initialised with no tanh for a residual generator (see :func:`add_input`). The conv is at the same
    index either way, so weights keep their names."""
    pads, p = pad_and_conv_padding(padding_type, 3)
    conv = conv_cls(channels, output_nc, 7, padding=p)
    if residual:
        return nn.Sequential(*pads, zero_init(conv))  # starts as the identity map: output = input
    return nn.Sequential(*pads, conv, nn.Tanh())


def add_input(x: torch.Tensor, correction: torch.Tensor, training: bool) -> torch.Tensor:
    """``x + correction``. Training sees it unclamped (a clamp would stop the gradient of every pixel it
    touches); evaluation, and so ONNX export, clamps it to the image range [-1, 1]."""
    out = x + correction
    return out if training else out.clamp(-1.0, 1.0)
