"""The pix2pix / CycleGAN ResNet generator (the GAN Compression teacher).

Two options let the input's absolute colour through (issue 13, point 2); both are off by default, which is the
papers' layout. The papers' generator normalises right after the stem and nothing carries the input past that
norm, so with instance norm its output hardly depends on the input's overall brightness or per-channel colour.

* ``residual``: the output is ``input + head(h)``; the head's last conv starts at zero, so the model starts as
  the identity, and there is no tanh (:func:`add_input`). The input's colour reaches the output unchanged, but
  the correction the network adds still cannot depend on it.
* ``input_skip``: the stem conv's output *before* its norm (through a ReLU) is added to the last up-sampling
  layer's output, so the head sees the input's absolute colour. No new weights.

Measured on a fixed per-pixel colour grade at 32 px (``tests/test_learning_teacher.py``: pix2pix, ngf 8,
2 blocks, instance norm, 128 steps; doing nothing scores 20.64 dB): papers' layout 16.31 dB; ``residual`` alone
23.65 dB (an earlier run, ngf 16 on a similar grade: 23.8 dB after 240 steps, 24.2 dB after 600: it plateaus);
``input_skip`` alone 28.78 dB; both 35.12 dB. BatchNorm instead of instance norm: 22.00 dB, with ``residual``
26.56 dB. Use both options for tasks that change global colour.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from edgegan.errors import ConfigError
from edgegan.models._features import StemTrunkHead, output_head
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
    residual: bool = False  # output = input + head(h), head zero-initialised, no tanh (see the module docs)
    input_skip: bool = False  # the stem conv's un-normalised output is added before the head (module docs)

    def __post_init__(self) -> None:
        for name in ("input_nc", "output_nc", "ngf"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.n_blocks < 0:
            raise ConfigError(f"n_blocks must be >= 0, got {self.n_blocks}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.residual and self.input_nc != self.output_nc:
            raise ConfigError("residual=true needs input_nc == output_nc")


@register("resnet_generator")
class ResnetGenerator(StemTrunkHead, EdgeModel):
    """7×7 stem, two stride-2 downs, ``n_blocks`` residual blocks, two transposed-conv ups, 7×7 head, tanh
    (with ``residual``: the input plus the head's output; with ``input_skip``: the stem's un-normalised output
    added before the head).

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
        self.head = output_head(c.ngf, c.output_nc, c.padding_type, c.residual)
