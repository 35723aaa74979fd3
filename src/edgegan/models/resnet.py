"""The pix2pix / CycleGAN ResNet generator (the GAN Compression teacher)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from edgegan.errors import ConfigError
from edgegan.models._features import StemTrunkHead
from edgegan.nn import NormKind, PaddingKind, ResnetBlock, conv_bias, norm_layer, pad_and_conv_padding
from edgegan.registry import EdgeModel, ModelConfig, register


@dataclass
class ResnetGeneratorConfig(ModelConfig):
    input_nc: int = 3
    output_nc: int = 3
    ngf: int = 64
    n_blocks: int = 9
    norm: NormKind = "instance"
    dropout: float = 0.0
    padding_type: PaddingKind = "reflect"

    def __post_init__(self) -> None:
        for name in ("input_nc", "output_nc", "ngf"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.n_blocks < 0:
            raise ConfigError(f"n_blocks must be >= 0, got {self.n_blocks}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")


@register("resnet_generator")
class ResnetGenerator(StemTrunkHead, EdgeModel):
    """7×7 stem, two stride-2 downs, ``n_blocks`` residual blocks, two transposed-conv ups, 7×7 head, tanh.

    Input height and width should be multiples of 4 for the output to match the input size.
    """

    config_cls = ResnetGeneratorConfig

    def __init__(self, config: ResnetGeneratorConfig | None = None, **options: object) -> None:
        config = config or ResnetGeneratorConfig.from_dict(options)
        super().__init__(config)
        c = config
        bias = conv_bias(c.norm)
        pads, p = pad_and_conv_padding(c.padding_type, 3)
        self.stem = nn.Sequential(
            *pads, nn.Conv2d(c.input_nc, c.ngf, 7, padding=p, bias=bias), norm_layer(c.norm, c.ngf), nn.ReLU(True)
        )
        self.down = nn.ModuleList()
        for i in range(2):
            cin, cout = c.ngf * 2**i, c.ngf * 2 ** (i + 1)
            self.down.append(
                nn.Sequential(
                    nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=bias), norm_layer(c.norm, cout), nn.ReLU(True)
                )
            )
        trunk = c.ngf * 4
        self.blocks = nn.ModuleList(ResnetBlock(trunk, c.norm, c.dropout, c.padding_type) for _ in range(c.n_blocks))
        self.up = nn.ModuleList()
        for i in range(2):
            cin, cout = c.ngf * 2 ** (2 - i), c.ngf * 2 ** (1 - i)
            self.up.append(
                nn.Sequential(
                    nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1, bias=bias),
                    norm_layer(c.norm, cout),
                    nn.ReLU(True),
                )
            )
        pads, p = pad_and_conv_padding(c.padding_type, 3)
        self.head = nn.Sequential(*pads, nn.Conv2d(c.ngf, c.output_nc, 7, padding=p), nn.Tanh())
