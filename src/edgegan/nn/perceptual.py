"""Perceptual feature extractors for feature and style (Gram) losses.

* :class:`VGG16Features`: torchvision's VGG16 ``features`` up to relu4_3, returning relu1_2, relu2_2,
  relu3_3 and relu4_3 on ImageNet-normalised input. Its weights come from a local file
  (``vgg16-397923af.pth``, verified by hash via :mod:`edgegan.weights`); nothing is downloaded.
* :class:`DiscriminatorFeatures`: the documented substitute when no VGG weights are present: the
  intermediate activations of a (conditional) PatchGAN discriminator that is trained alongside.

:func:`build_perceptual` picks one and names it, so recipes can log which network the terms use.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import nn

from edgegan.errors import ConfigError

__all__ = ["DiscriminatorFeatures", "PerceptualNet", "VGG16Features", "build_perceptual"]

# (out_channels of each conv) with "M" for max-pooling: VGG16 up to conv4_3; indices match torchvision.
_VGG16_UPTO_4_3: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512]
# torchvision ``features`` indices of relu1_2, relu2_2, relu3_3, relu4_3.
VGG16_LAYERS = (3, 8, 15, 22)
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)

# A perceptual network maps (input image, generated image) in [-1, 1] to a list of feature maps.
PerceptualNet = Callable[[torch.Tensor, torch.Tensor], list[torch.Tensor]]


class VGG16Features(nn.Module):
    """VGG16 ``features[0:23]`` (frozen, eval); ``forward(x)`` takes images in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in _VGG16_UPTO_4_3:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                assert isinstance(v, int)
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=False)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGG16Features:
        return super().train(False)  # always frozen

    def load_torchvision(self, state: dict[str, torch.Tensor]) -> VGG16Features:
        """Load the ``features.*`` entries of a torchvision VGG16 state dict (classifier ignored)."""
        own = self.state_dict()
        picked = {k: v for k, v in state.items() if k in own}
        missing = sorted(set(own) - set(picked))
        if missing:
            raise ConfigError(f"VGG16 weights lack {len(missing)} entries, e.g. {missing[0]}")
        self.load_state_dict(picked, strict=True)
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = ((x + 1) / 2 - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in VGG16_LAYERS:
                out.append(h)
        return out


class DiscriminatorFeatures:
    """Intermediate activations of a discriminator with ``forward(x, return_features=True)``.

    ``conditional`` discriminators see the input image and the generated image concatenated.
    The discriminator is not owned: it keeps training elsewhere; gradients flow into the image only
    as far as the caller lets them (its parameters' gradients are cleared by its own optimiser).
    """

    def __init__(self, discriminator: nn.Module, conditional: bool = True) -> None:
        self.discriminator = discriminator
        self.conditional = conditional

    def __call__(self, x: torch.Tensor, image: torch.Tensor) -> list[torch.Tensor]:
        d_in = torch.cat([x, image], 1) if self.conditional else image
        _, feats = self.discriminator(d_in, return_features=True)
        return list(feats.values())


def build_perceptual(
    kind: str = "auto",
    *,
    weights: str | os.PathLike[str] | None = None,
    discriminator: nn.Module | None = None,
    conditional: bool = True,
    device: str | torch.device = "cpu",
) -> tuple[PerceptualNet, str]:
    """The perceptual network for ``kind`` (``"vgg16"``, ``"discriminator"`` or ``"auto"``) and its name.

    ``"auto"`` uses VGG16 when its verified weights are found (``weights`` path, ``$EDGEGAN_WEIGHTS``
    or the torch hub cache) and otherwise the discriminator's features, saying so in the name.
    ``"vgg16"`` fails with a clear :class:`~edgegan.weights.WeightsError` when the file is absent.
    """
    from edgegan import weights as weight_files

    if kind not in ("auto", "vgg16", "discriminator"):
        raise ConfigError(f"perceptual must be auto, vgg16 or discriminator, got {kind!r}")
    if kind == "auto":
        path, reason = weight_files.available("vgg16", weights)
        kind = "vgg16" if path is not None else "discriminator"
        why = "" if path is not None else f" (substitute for VGG16: {reason.split(';')[0] if reason else 'absent'})"
    else:
        why = ""
    if kind == "vgg16":
        vgg = VGG16Features().load_torchvision(weight_files.load_state_dict("vgg16", weights)).to(device)

        def vgg_features(x: torch.Tensor, image: torch.Tensor) -> list[torch.Tensor]:
            return vgg(image)

        return vgg_features, "vgg16 (relu1_2, relu2_2, relu3_3, relu4_3)"
    if discriminator is None:
        raise ConfigError("the discriminator-feature perceptual loss needs a discriminator")
    return DiscriminatorFeatures(discriminator, conditional), f"discriminator features{why}"
