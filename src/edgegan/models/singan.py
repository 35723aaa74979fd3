"""SinGAN's per-scale networks (used by SETGAN): a 5-block fully convolutional generator that
refines an up-sampled coarser image, and a Markovian patch discriminator of the same shape."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgegan.errors import ConfigError
from edgegan.registry import EdgeModel, ModelConfig, register


@dataclass
class SinGANScaleConfig(ModelConfig):
    """One scale: ``num_layers`` blocks of ``kernel``×``kernel`` conv, BatchNorm, LeakyReLU(0.2)."""

    channels: int = 32
    num_layers: int = 5
    kernel: int = 3
    image_nc: int = 3

    def __post_init__(self) -> None:
        if self.channels < 1 or self.image_nc < 1:
            raise ConfigError("channels and image_nc must be positive")
        if self.num_layers < 2:
            raise ConfigError(f"num_layers must be >= 2, got {self.num_layers}")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ConfigError(f"kernel must be odd and positive, got {self.kernel}")

    @property
    def receptive_pad(self) -> int:
        """How much the valid convolutions shrink each side: (kernel - 1) / 2 per layer."""
        return self.num_layers * (self.kernel // 2)


def _conv_block(cin: int, cout: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True))


def _init_weights(module: nn.Module) -> None:
    # SinGAN's init: conv weights and BatchNorm scales drawn around 0 and 1 with std 0.02.
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _body(c: SinGANScaleConfig, out_channels: int) -> nn.Sequential:
    layers = [_conv_block(c.image_nc, c.channels, c.kernel)]
    layers += [_conv_block(c.channels, c.channels, c.kernel) for _ in range(c.num_layers - 2)]
    layers.append(nn.Conv2d(c.channels, out_channels, c.kernel))
    return nn.Sequential(*layers)


@register("singan_generator")
class SinGANGenerator(EdgeModel):
    """``G(prev, noise) = prev + tanh(body(zero_pad(prev + noise)))``.

    ``prev`` is the up-sampled output of the coarser scale (zeros at scale 0) and ``noise``
    the already-scaled noise map; the output has ``prev``'s size.
    """

    config_cls = SinGANScaleConfig
    input_names = ("prev", "noise")

    def __init__(self, config: SinGANScaleConfig | None = None, **options: object) -> None:
        config = config or SinGANScaleConfig.from_dict(options)
        super().__init__(config)
        self.body = _body(config, config.image_nc)
        self.pad = config.receptive_pad
        _init_weights(self)

    def example_input(self, size: int | tuple[int, int] = 64, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = (size, size) if isinstance(size, int) else size
        c = self.config.image_nc  # type: ignore[attr-defined]
        return torch.randn(batch, c, h, w), torch.randn(batch, c, h, w)

    def forward(self, prev: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        # Zero padding of the input (not per layer), so every output pixel sees a full window.
        x = F.pad(prev + noise, [self.pad] * 4)
        return prev + torch.tanh(self.body(x))


@register("singan_discriminator")
class SinGANDiscriminator(EdgeModel):
    """Markovian critic: one score per receptive-field patch (no normalisation on the last conv)."""

    config_cls = SinGANScaleConfig

    def __init__(self, config: SinGANScaleConfig | None = None, **options: object) -> None:
        config = config or SinGANScaleConfig.from_dict(options)
        super().__init__(config)
        self.body = _body(config, 1)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
