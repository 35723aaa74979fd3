"""GAN Compression's once-for-all supernet over the mobile ResNet generator's 8-entry channel config.

The module tree mirrors ``MobileResnetGenerator`` (``stem``, ``down``, ``blocks[i].conv_block``, ``up``,
``head``) with dynamic-width layers, so the sub-network at channel config ``c0..c7`` is exactly a
``MobileResnetGenerator(channels=c0..c7)`` whose every tensor is the leading slice of the same-named
supernet tensor (see :func:`edgegan.compress.supernet.extract_subnet`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from edgegan.errors import ConfigError
from edgegan.models._features import StemTrunkHead, output_head
from edgegan.nn import NormKind, PaddingKind, conv_bias, pad_and_conv_padding
from edgegan.nn.dynamic import DynamicConv2d, DynamicConvTranspose2d, DynamicMobileResnetBlock, dynamic_norm_layer
from edgegan.registry import EdgeModel, ModelConfig, register

N_CHANNELS = 8


@dataclass
class MobileResnetSupernetConfig(ModelConfig):
    """``ngf`` is the widest choice of every config entry: the full supernet is the generator at ``(ngf,)*8``.
    ``residual`` and ``input_skip`` as in the mobile ResNet generator; its sub-networks inherit them."""

    input_nc: int = 3
    output_nc: int = 3
    ngf: int = 64
    n_blocks: int = 9
    norm: NormKind = "instance"
    padding_type: PaddingKind = "reflect"
    dropout: float = 0.0
    residual: bool = False
    input_skip: bool = False

    def __post_init__(self) -> None:
        for name in ("input_nc", "output_nc", "ngf"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.residual and self.input_nc != self.output_nc:
            raise ConfigError("residual=true needs input_nc == output_nc")
        if self.n_blocks < 0:
            raise ConfigError(f"n_blocks must be >= 0, got {self.n_blocks}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")


def _width_layer(seq: nn.Module, index: int) -> DynamicConv2d | DynamicConvTranspose2d:
    assert isinstance(seq, nn.Sequential)
    layer = seq[index]
    assert isinstance(layer, DynamicConv2d | DynamicConvTranspose2d)
    return layer


@register("mobile_resnet_supernet")
class MobileResnetSupernet(StemTrunkHead, EdgeModel):
    """Dynamic-width mobile ResNet generator; :meth:`set_config` picks the active sub-network.

    Channel config ``c0..c7`` (each in ``[1, ngf]``): stem c0; downs to c1·2 and c2·4 (the trunk
    width, which every block outputs); block hidden widths c3·4 / c4·4 / c5·4 for the three
    thirds of the blocks; ups to c6·2 and c7; the head outputs ``output_nc``.
    """

    config_cls = MobileResnetSupernetConfig
    config: MobileResnetSupernetConfig

    def __init__(self, config: MobileResnetSupernetConfig | None = None, **options: object) -> None:
        config = config or MobileResnetSupernetConfig.from_dict(options)
        super().__init__(config)
        c = config
        n = c.ngf
        bias = conv_bias(c.norm)
        pads, p = pad_and_conv_padding(c.padding_type, 3)
        self.stem = nn.Sequential(
            *pads,
            DynamicConv2d(c.input_nc, n, 7, padding=p, bias=bias),
            dynamic_norm_layer(c.norm, n),
            nn.ReLU(True),
        )
        widths = [n, n * 2, n * 4]
        self.down = nn.ModuleList(
            nn.Sequential(
                DynamicConv2d(widths[i], widths[i + 1], 3, stride=2, padding=1, bias=bias),
                dynamic_norm_layer(c.norm, widths[i + 1]),
                nn.ReLU(True),
            )
            for i in range(2)
        )
        trunk = widths[2]
        self.blocks = nn.ModuleList(
            DynamicMobileResnetBlock(trunk, n * 4, c.norm, c.dropout, c.padding_type) for _ in range(c.n_blocks)
        )
        up_widths = [trunk, n * 2, n]
        self.up = nn.ModuleList(
            nn.Sequential(
                DynamicConvTranspose2d(
                    up_widths[i], up_widths[i + 1], 3, stride=2, padding=1, output_padding=1, bias=bias
                ),
                dynamic_norm_layer(c.norm, up_widths[i + 1]),
                nn.ReLU(True),
            )
            for i in range(2)
        )
        self.head = output_head(n, c.output_nc, c.padding_type, c.residual, conv_cls=DynamicConv2d)
        self.active_config: tuple[int, ...] = self.largest_config()

    # ---------------------------------------------------------------- channel configs

    def block_groups(self) -> list[int]:
        """Blocks per third (as in ``MobileResnetGenerator``: 9 -> 3/3/3, 4 -> 1/1/2)."""
        n1 = self.config.n_blocks // 3
        return [n1, n1, self.config.n_blocks - 2 * n1]

    def validate_config(self, channels: Sequence[int]) -> tuple[int, ...]:
        """Return ``channels`` as a tuple of ints, or raise ConfigError if it is not a valid sub-network."""
        if isinstance(channels, str):
            raise ConfigError("channels must be a sequence of 8 integers, not a string")
        try:
            items = list(channels)
        except TypeError:
            raise ConfigError(f"channels must be a sequence of 8 integers, got {channels!r}") from None
        if len(items) != N_CHANNELS:
            raise ConfigError(f"channels needs {N_CHANNELS} entries c0..c7, got {len(items)}")
        ngf = self.config.ngf
        for i, v in enumerate(items):
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"channels[{i}] must be an integer, got {v!r}")
            if not 1 <= v <= ngf:
                raise ConfigError(f"channels[{i}] = {v} is outside [1, ngf={ngf}]")
        return tuple(int(v) for v in items)

    def set_config(self, channels: Sequence[int]) -> None:
        """Make the forward pass run the sub-network with channel config ``channels`` (c0..c7)."""
        ch = self.validate_config(channels)
        _width_layer(self.stem, -3).set_active(ch[0])
        _width_layer(self.down[0], 0).set_active(ch[1] * 2)
        _width_layer(self.down[1], 0).set_active(ch[2] * 4)
        trunk = ch[2] * 4
        hidden = [h * 4 for h in ch[3:6]]
        index = 0
        for g, count in enumerate(self.block_groups()):
            for _ in range(count):
                block = self.blocks[index]
                assert isinstance(block, DynamicMobileResnetBlock)
                block.set_active(hidden[g], trunk)
                index += 1
        _width_layer(self.up[0], 0).set_active(ch[6] * 2)
        _width_layer(self.up[1], 0).set_active(ch[7])
        _width_layer(self.head, -1 if self.config.residual else -2).set_active(None)
        self.active_config = ch

    def _check_choices(self, choices: Sequence[int]) -> list[int]:
        values = list(choices)
        if not values:
            raise ConfigError("choices must not be empty")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= self.config.ngf:
                raise ConfigError(f"choice {v!r} is not an integer in [1, ngf={self.config.ngf}]")
        return values

    def sample_config(self, rng: random.Random, choices: Sequence[int]) -> tuple[int, ...]:
        """A random channel config, each entry drawn independently from ``choices`` (not applied)."""
        values = self._check_choices(choices)
        return tuple(rng.choice(values) for _ in range(N_CHANNELS))

    def largest_config(self) -> tuple[int, ...]:
        return (self.config.ngf,) * N_CHANNELS

    def smallest_config(self, choices: Sequence[int]) -> tuple[int, ...]:
        return (min(self._check_choices(choices)),) * N_CHANNELS
