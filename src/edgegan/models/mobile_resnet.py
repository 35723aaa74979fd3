"""GAN Compression's MobileNet-style ResNet generator with an 8-entry channel config."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from edgegan.errors import ConfigError
from edgegan.models._features import StemTrunkHead, output_head
from edgegan.nn import MobileResnetBlock, NormKind, PaddingKind, conv_bias, norm_layer, pad_and_conv_padding
from edgegan.registry import EdgeModel, ModelConfig, register


@dataclass
class MobileResnetGeneratorConfig(ModelConfig):
    """``channels`` = c0..c7: stem c0; downs to c1·2 and c2·4 (trunk); block hidden widths c3·4
    (blocks 1-3), c4·4 (4-6), c5·4 (7-9); ups to c6·2 and c7. Unset, all eight equal ``ngf``.
    ``residual`` and ``input_skip`` as in the ResNet generator (see :mod:`edgegan.models.resnet`); the input
    skip adds the stem's c0 channels to the last up-sampling layer's c7 on their first min(c0, c7) channels."""

    input_nc: int = 3
    output_nc: int = 3
    ngf: int = 64
    channels: tuple[int, ...] | None = None
    n_blocks: int = 9
    norm: NormKind = "instance"
    dropout: float = 0.0
    padding_type: PaddingKind = "reflect"
    residual: bool = False
    input_skip: bool = False

    def __post_init__(self) -> None:
        if self.channels is None:
            self.channels = (self.ngf,) * 8
        self.channels = tuple(int(c) for c in self.channels)
        if len(self.channels) != 8:
            raise ConfigError(f"channels needs 8 entries c0_c1_..._c7, got {len(self.channels)}")
        if min(self.channels) < 1 or self.ngf < 1 or self.input_nc < 1 or self.output_nc < 1:
            raise ConfigError("channel counts must be positive")
        if self.n_blocks < 0:
            raise ConfigError(f"n_blocks must be >= 0, got {self.n_blocks}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.residual and self.input_nc != self.output_nc:
            raise ConfigError("residual=true needs input_nc == output_nc")

    @property
    def channels_str(self) -> str:
        return "_".join(str(c) for c in self.channels or ())


@register("mobile_resnet_generator")
class MobileResnetGenerator(StemTrunkHead, EdgeModel):
    """Same stem, down- and up-sampling as the ResNet generator; separable-conv residual blocks."""

    config_cls = MobileResnetGeneratorConfig

    def __init__(self, config: MobileResnetGeneratorConfig | None = None, **options: object) -> None:
        config = config or MobileResnetGeneratorConfig.from_dict(options)
        super().__init__(config)
        c = config
        ch = c.channels
        assert ch is not None
        bias = conv_bias(c.norm)
        pads, p = pad_and_conv_padding(c.padding_type, 3)
        self.stem = nn.Sequential(
            *pads, nn.Conv2d(c.input_nc, ch[0], 7, padding=p, bias=bias), norm_layer(c.norm, ch[0]), nn.ReLU(True)
        )
        widths = [ch[0], ch[1] * 2, ch[2] * 4]
        self.down = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1, bias=bias),
                norm_layer(c.norm, widths[i + 1]),
                nn.ReLU(True),
            )
            for i in range(2)
        )
        trunk = widths[2]
        # Blocks are split in three groups as in GAN Compression (9 blocks -> 3/3/3).
        n1 = c.n_blocks // 3
        groups = [n1, n1, c.n_blocks - 2 * n1]
        hidden = [h * 4 for h in ch[3:6]]
        self.blocks = nn.ModuleList()
        for g, count in enumerate(groups):
            for _ in range(count):
                self.blocks.append(MobileResnetBlock(trunk, hidden[g], c.norm, c.dropout, c.padding_type))
        up_widths = [trunk, ch[6] * 2, ch[7]]
        self.up = nn.ModuleList(
            nn.Sequential(
                nn.ConvTranspose2d(up_widths[i], up_widths[i + 1], 3, stride=2, padding=1, output_padding=1, bias=bias),
                norm_layer(c.norm, up_widths[i + 1]),
                nn.ReLU(True),
            )
            for i in range(2)
        )
        self.head = output_head(ch[7], c.output_nc, c.padding_type, c.residual)
