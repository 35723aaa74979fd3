"""The pix2pix U-Net generator (``unet_256`` with the defaults)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgegan.errors import ConfigError
from edgegan.models._features import FeatureRecorder
from edgegan.nn import NormKind, conv_bias, norm_layer
from edgegan.registry import EdgeModel, ModelConfig, register


@dataclass
class UnetGeneratorConfig(ModelConfig):
    """``num_downs`` stride-2 levels (8 for 256×256 inputs); widths ngf, 2ngf, 4ngf, then 8ngf."""

    input_nc: int = 3
    output_nc: int = 3
    ngf: int = 64
    num_downs: int = 8
    norm: NormKind = "batch"
    dropout: float = 0.0  # pix2pix trains with 0.5 in the innermost 8ngf levels

    def __post_init__(self) -> None:
        if self.num_downs < 5:
            raise ConfigError(f"num_downs must be >= 5, got {self.num_downs}")
        if min(self.input_nc, self.output_nc, self.ngf) < 1:
            raise ConfigError("channel counts must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")


@register("unet_generator")
class UnetGenerator(EdgeModel):
    """Encoder of 4×4 stride-2 convs, decoder of 4×4 transposed convs, skips by concatenation.

    Level 0 is the outermost; level ``num_downs - 1`` the innermost. Inputs must be
    divisible by ``2 ** num_downs``.
    """

    config_cls = UnetGeneratorConfig

    def __init__(self, config: UnetGeneratorConfig | None = None, **options: object) -> None:
        config = config or UnetGeneratorConfig.from_dict(options)
        super().__init__(config)
        c = config
        bias = conv_bias(c.norm)
        n = c.num_downs
        inner = [min(c.ngf * 2**i, c.ngf * 8) for i in range(n)]  # width below each level
        outer = [c.input_nc] + inner[:-1]  # width entering each level
        self.downs = nn.ModuleList()
        self.ups = nn.ModuleList()
        for i in range(n):
            innermost = i == n - 1
            if i == 0:
                down: list[nn.Module] = [nn.Conv2d(outer[i], inner[i], 4, stride=2, padding=1, bias=bias)]
            else:
                down = [nn.LeakyReLU(0.2, True), nn.Conv2d(outer[i], inner[i], 4, stride=2, padding=1, bias=bias)]
                if not innermost:
                    down.append(norm_layer(c.norm, inner[i]))
            self.downs.append(nn.Sequential(*down))
            up_in = inner[i] if innermost else inner[i] * 2
            if i == 0:
                up: list[nn.Module] = [
                    nn.ReLU(True),
                    nn.ConvTranspose2d(up_in, c.output_nc, 4, stride=2, padding=1),
                    nn.Tanh(),
                ]
            else:
                up = [
                    nn.ReLU(True),
                    nn.ConvTranspose2d(up_in, outer[i], 4, stride=2, padding=1, bias=bias),
                    norm_layer(c.norm, outer[i]),
                ]
                # pix2pix puts dropout in the (num_downs - 5) middle 8ngf levels only.
                if c.dropout > 0 and 4 <= i < n - 1:
                    up.append(nn.Dropout(c.dropout))
            self.ups.append(nn.Sequential(*up))

    @property
    def feature_names(self) -> tuple[str, ...]:
        n = len(self.downs)
        return tuple(f"down{i + 1}" for i in range(n)) + tuple(f"up{i + 1}" for i in range(n - 1))

    def distill_feature_names(self) -> list[str]:
        n = len(self.downs)
        return [f"down{n // 2}", f"down{n}", f"up{n // 2}", f"up{n - 1}"]

    def example_input(self, size: int | tuple[int, int] = 256, batch: int = 1) -> torch.Tensor:
        h, w = (size, size) if isinstance(size, int) else size
        return torch.randn(batch, self.config.input_nc, h, w)  # type: ignore[attr-defined]

    def forward(
        self, x: torch.Tensor, return_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        rec = FeatureRecorder(return_features)
        skips = []
        h = x
        for i, down in enumerate(self.downs):
            h = rec(f"down{i + 1}", down(h))
            skips.append(h)
        n = len(self.downs)
        # Decoder runs innermost first; ``up k`` is numbered from the innermost level outwards.
        h = self.ups[n - 1](skips[n - 1])
        for k, level in enumerate(range(n - 2, -1, -1)):
            rec(f"up{k + 1}", h)
            h = self.ups[level](torch.cat([skips[level], h], dim=1))
        return (h, rec.features) if return_features else h
