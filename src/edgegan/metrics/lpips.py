"""LPIPS v0.1 (AlexNet variant): a learned perceptual distance between images.

The network is the published design: a fixed input scaling, the convolutional trunk of
torchvision's AlexNet (its ``features.*`` weights load unchanged from ``alexnet-owt-7be5be79.pth``)
tapped after each of its five ReLUs, per-tap channel-wise unit normalisation, squared
differences, a 1x1 "linear head" per tap (the ``lin{i}.model.1.weight`` tensors of LPIPS's
``alex.pth``), a spatial mean and a sum over taps.

Nothing is downloaded here: :func:`load_lpips` finds both files through :mod:`edgegan.weights`.
Inputs must be at least 31x31 pixels (the smallest size AlexNet's trunk accepts).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from edgegan import weights
from edgegan.errors import ConfigError
from edgegan.runs import load_torch_weights

__all__ = ["LPIPS", "MIN_SIZE", "TAP_CHANNELS", "load_lpips"]

TAP_CHANNELS: tuple[int, ...] = (64, 192, 384, 256, 256)
"""Channels of the five AlexNet ReLU outputs that LPIPS compares."""

MIN_SIZE = 31
"""Smallest height/width AlexNet's trunk can process (both max-pools need a 3x3 window)."""

_TAP_INDICES = (1, 4, 7, 9, 11)  # positions of the ReLUs in ``features``
_EPS = 1e-10


def _alexnet_features() -> nn.Sequential:
    """torchvision's ``alexnet().features`` without the final max-pool (LPIPS never uses it)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(),
    )


class _LinearHead(nn.Module):
    """Dropout then a bias-free 1x1 conv to one channel; keys ``model.1.weight`` as in ``alex.pth``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def _unit_normalise(x: Tensor) -> Tensor:
    return x / (torch.sqrt(torch.sum(x * x, dim=1, keepdim=True)) + _EPS)


class LPIPS(nn.Module):
    """LPIPS v0.1 with an AlexNet trunk. ``forward(x, y)`` takes ``[N, 3, H, W]`` in ``[-1, 1]``
    and returns ``[N]`` distances. Randomly initialised; use :func:`load_lpips` for real weights.

    ``state_dict()`` holds ``features.{0,3,6,8,10}.{weight,bias}`` and ``lin{0..4}.model.1.weight``;
    the input scaling constants are non-persistent buffers.
    """

    shift: Tensor
    scale: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.features = _alexnet_features()
        self.lin0 = _LinearHead(TAP_CHANNELS[0])
        self.lin1 = _LinearHead(TAP_CHANNELS[1])
        self.lin2 = _LinearHead(TAP_CHANNELS[2])
        self.lin3 = _LinearHead(TAP_CHANNELS[3])
        self.lin4 = _LinearHead(TAP_CHANNELS[4])

    @property
    def heads(self) -> tuple[_LinearHead, ...]:
        return (self.lin0, self.lin1, self.lin2, self.lin3, self.lin4)

    def taps(self, x: Tensor) -> list[Tensor]:
        """The five ReLU outputs for an already scaled input."""
        out: list[Tensor] = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _TAP_INDICES:
                out.append(x)
        return out

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != 3 or x.shape != y.shape:
            raise ValueError(
                f"LPIPS expects two [N, 3, H, W] tensors of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        if min(x.shape[-2:]) < MIN_SIZE:
            raise ConfigError(
                f"LPIPS needs images of at least {MIN_SIZE}x{MIN_SIZE} pixels, got {x.shape[-2]}x{x.shape[-1]}"
            )
        n = x.shape[0]
        feats = self.taps((torch.cat([x, y]) - self.shift) / self.scale)
        total = x.new_zeros(n)
        for f, head in zip(feats, self.heads, strict=True):
            diff = (_unit_normalise(f[:n]) - _unit_normalise(f[n:])) ** 2
            total = total + head(diff).mean(dim=(1, 2, 3))
        return total


def _check_and_load(module: nn.Module, state: Mapping[str, Tensor], path: Path, what: str) -> None:
    """Strict key and shape check with a one-line error, then copy the tensors in."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:6])}{' ...' if len(unexpected) > 6 else ''}")
        raise weights.WeightsError(f"{path} does not hold {what}: {'; '.join(parts)}")
    for key, ref in expected.items():
        if tuple(state[key].shape) != tuple(ref.shape):
            raise weights.WeightsError(
                f"{path} does not hold {what}: {key} has shape {tuple(state[key].shape)}, expected {tuple(ref.shape)}"
            )
        if not state[key].is_floating_point():
            raise weights.WeightsError(f"{path} does not hold {what}: {key} has dtype {state[key].dtype}")
    module.load_state_dict(dict(state), strict=True)


def load_lpips(
    *,
    backbone_path: str | os.PathLike[str] | None = None,
    heads_path: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
) -> LPIPS:
    """LPIPS with torchvision's AlexNet trunk (``alexnet-owt-7be5be79.pth``, hash-checked) and the
    LPIPS v0.1 heads (``alex.pth``), located like every edgegan weights file (explicit path, then
    ``$EDGEGAN_WEIGHTS``, then the torch hub cache). Returned in eval mode with frozen parameters.
    """
    backbone_file = weights.find("alexnet", backbone_path)
    heads_file = weights.find("lpips-alex", heads_path)
    backbone = load_torch_weights(backbone_file)
    heads = load_torch_weights(heads_file)

    model = LPIPS()
    features = {k[len("features.") :]: v for k, v in backbone.items() if k.startswith("features.")}
    if not features:
        raise weights.WeightsError(f"{backbone_file} has no features.* tensors: it is not a torchvision AlexNet file")
    _check_and_load(model.features, features, backbone_file, "torchvision AlexNet features")
    lin = {k: v for k, v in heads.items() if k.startswith("lin")}
    _check_and_load(nn.ModuleDict({f"lin{i}": h for i, h in enumerate(model.heads)}), lin, heads_file, "LPIPS heads")

    model = model.to(device).eval()
    model.requires_grad_(False)
    return model
