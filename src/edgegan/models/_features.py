"""Helpers for models that expose named intermediate features (used by distillation)."""

from __future__ import annotations

import torch


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
    ``stem -> down[] -> blocks[] -> up[] -> head`` (the ResNet and mobile ResNet generators)."""

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
        rec = FeatureRecorder(return_features)
        h = rec("stem", self.stem(x))
        for i, layer in enumerate(self.down):
            h = rec(f"down{i + 1}", layer(h))
        for i, block in enumerate(self.blocks):
            h = rec(f"block{i + 1}", block(h))
        for i, layer in enumerate(self.up):
            h = rec(f"up{i + 1}", layer(h))
        out = self.head(h)
        return (out, rec.features) if return_features else out
