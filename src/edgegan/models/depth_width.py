"""UGC's depth-width search space: a mobile ResNet generator with a residual stage after every
down- and up-sampling layer, as a static generator and as its dynamic depth-width supernet.

Layout (both classes): ``stem`` (7×7 conv) -> ``down[0]``, ``stages[0]`` -> ``down[1]``, ``stages[1]``,
``stages[2]`` (the original trunk) -> ``up[0]``, ``stages[3]`` -> ``up[1]``, ``stages[4]`` -> ``head``.
Every stage is a list of mobile residual blocks (separable convs, :class:`edgegan.nn.MobileResnetBlock`)
whose input/output width is that of the layer before it and whose inner width is its own.

A sub-network of the supernet is described by a flat *gene* tuple (see :data:`GENE_NAMES`):
five layer widths, five stage inner widths and five stage depths. Widths are in units that the layer's
multiplier turns into channels (``stem`` ×1, ``down1`` ×2, ``down2`` ×4, ``up1`` ×2, ``up2`` ×1, as in
GAN Compression's channel configs), so a choice list such as 8..64 applies to every width gene.
The sub-network keeps the first ``depth`` blocks of every stage and the leading slice of every weight.

``residual`` and ``input_skip`` (off by default, the paper's layout) are the input paths of
:mod:`edgegan.models.resnet`: the output is the input plus the head's correction, and the stem conv's
un-normalised output reaches the head (on the first ``min(stem, up2)`` channels, so sub-networks stay exact).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from edgegan.errors import ConfigError
from edgegan.models._features import add_input, add_skip, output_head
from edgegan.nn import MobileResnetBlock, NormKind, PaddingKind, conv_bias, norm_layer, pad_and_conv_padding
from edgegan.nn.dynamic import (
    DynamicConv2d,
    DynamicConvTranspose2d,
    DynamicMobileResnetBlock,
    dynamic_norm_layer,
    load_leading_slices,
)
from edgegan.registry import EdgeModel, ModelConfig, register

LAYERS = ("stem", "down1", "down2", "up1", "up2")
STAGES = ("down1", "down2", "trunk", "up1", "up2")
# Channel multiplier of each layer's width unit and of each stage (a stage runs at its layer's width).
LAYER_MULT = (1, 2, 4, 2, 1)
STAGE_MULT = (2, 4, 4, 2, 1)
GENE_NAMES: tuple[str, ...] = (
    *(f"width_{n}" for n in LAYERS),
    *(f"hidden_{n}" for n in STAGES),
    *(f"depth_{n}" for n in STAGES),
)
N_WIDTH_GENES = len(LAYERS) + len(STAGES)
N_GENES = len(GENE_NAMES)
TRUNK = STAGES.index("trunk")


def _positive_list(name: str, values: Sequence[int], n: int, allow_zero: bool = False) -> list[int]:
    items = list(values)
    if len(items) != n:
        raise ConfigError(f"{name} needs {n} entries, got {len(items)}")
    low = 0 if allow_zero else 1
    for i, v in enumerate(items):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ConfigError(f"{name}[{i}] must be an integer >= {low}, got {v!r}")
    return [int(v) for v in items]


def _check_residual(residual: bool, input_nc: int, output_nc: int) -> None:
    if residual and input_nc != output_nc:
        raise ConfigError("residual=true needs input_nc == output_nc")


def _stage_dims(widths: Sequence[int]) -> list[int]:
    """The residual width of each stage: down1, down2, down2 (trunk), up1, up2."""
    return [widths[1], widths[2], widths[2], widths[3], widths[4]]


@dataclass
class DepthWidthGeneratorConfig(ModelConfig):
    """A fixed sub-network: actual channel counts per layer and per stage, and blocks per stage."""

    input_nc: int = 3
    output_nc: int = 3
    widths: list[int] = field(default_factory=lambda: [16, 32, 64, 32, 16])  # stem, down1, down2, up1, up2
    hidden: list[int] = field(default_factory=lambda: [32, 64, 64, 32, 16])  # per stage
    depths: list[int] = field(default_factory=lambda: [0, 0, 9, 0, 0])  # per stage
    norm: NormKind = "instance"
    padding_type: PaddingKind = "reflect"
    dropout: float = 0.0
    residual: bool = False
    input_skip: bool = False

    def __post_init__(self) -> None:
        for name in ("input_nc", "output_nc"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        _check_residual(self.residual, self.input_nc, self.output_nc)
        self.widths = _positive_list("widths", self.widths, len(LAYERS))
        self.hidden = _positive_list("hidden", self.hidden, len(STAGES))
        self.depths = _positive_list("depths", self.depths, len(STAGES), allow_zero=True)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")


class _Layout:
    """Forward pass shared by the static generator and the supernet (same module names)."""

    stem: nn.Module
    down: nn.ModuleList
    stages: nn.ModuleList
    up: nn.ModuleList
    head: nn.Module

    def _active_depths(self) -> Sequence[int]:
        return [len(s) for s in self.stages]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        depths = self._active_depths()
        config = self.config  # type: ignore[attr-defined]

        def stage(i: int, h: torch.Tensor) -> torch.Tensor:
            for block in list(self.stages[i])[: depths[i]]:
                h = block(h)
            return h

        if config.input_skip:  # the stem is [pad,] conv, norm, ReLU: the skip takes the conv's output
            raw = self.stem[:-2](x)  # type: ignore[index]
            h = self.stem[-2:](raw)  # type: ignore[index]
        else:
            h = self.stem(x)
        h = stage(0, self.down[0](h))
        h = stage(2, stage(1, self.down[1](h)))
        h = stage(3, self.up[0](h))
        h = stage(4, self.up[1](h))
        if config.input_skip:
            h = add_skip(h, raw)
        out = self.head(h)
        return add_input(x, out, self.training) if config.residual else out  # type: ignore[attr-defined]


def _build(
    module: nn.Module,
    input_nc: int,
    output_nc: int,
    widths: Sequence[int],
    hidden: Sequence[int],
    depths: Sequence[int],
    norm: NormKind,
    padding_type: PaddingKind,
    dropout: float,
    dynamic: bool,
    residual: bool = False,
) -> None:
    conv = DynamicConv2d if dynamic else nn.Conv2d
    conv_t = DynamicConvTranspose2d if dynamic else nn.ConvTranspose2d
    norm_fn = dynamic_norm_layer if dynamic else norm_layer
    bias = conv_bias(norm)
    pads, p = pad_and_conv_padding(padding_type, 3)
    module.stem = nn.Sequential(
        *pads, conv(input_nc, widths[0], 7, padding=p, bias=bias), norm_fn(norm, widths[0]), nn.ReLU(True)
    )
    module.down = nn.ModuleList(
        nn.Sequential(
            conv(widths[i], widths[i + 1], 3, stride=2, padding=1, bias=bias),
            norm_fn(norm, widths[i + 1]),
            nn.ReLU(True),
        )
        for i in range(2)
    )
    block = DynamicMobileResnetBlock if dynamic else MobileResnetBlock
    module.stages = nn.ModuleList(
        nn.ModuleList(block(dim, h, norm, dropout, padding_type) for _ in range(d))
        for dim, h, d in zip(_stage_dims(widths), hidden, depths, strict=True)
    )
    module.up = nn.ModuleList(
        nn.Sequential(
            conv_t(widths[2 + i], widths[3 + i], 3, stride=2, padding=1, output_padding=1, bias=bias),
            norm_fn(norm, widths[3 + i]),
            nn.ReLU(True),
        )
        for i in range(2)
    )
    module.head = output_head(widths[4], output_nc, padding_type, residual, conv_cls=conv)


@register("depth_width_generator")
class DepthWidthGenerator(_Layout, EdgeModel):
    """A standalone sub-network of :class:`DepthWidthSupernet` (UGC's student and teachers)."""

    config_cls = DepthWidthGeneratorConfig
    config: DepthWidthGeneratorConfig

    def __init__(self, config: DepthWidthGeneratorConfig | None = None, **options: object) -> None:
        config = config or DepthWidthGeneratorConfig.from_dict(options)
        super().__init__(config)
        c = config
        _build(
            self,
            c.input_nc,
            c.output_nc,
            c.widths,
            c.hidden,
            c.depths,
            c.norm,
            c.padding_type,
            c.dropout,
            dynamic=False,
            residual=c.residual,
        )


@dataclass
class DepthWidthSupernetConfig(ModelConfig):
    """``ngf`` is the widest width unit (the largest layer has ``ngf`` × its multiplier channels);
    ``max_inserted`` blocks are held after every sampling layer and ``n_blocks`` in the trunk."""

    input_nc: int = 3
    output_nc: int = 3
    ngf: int = 64
    n_blocks: int = 9
    max_inserted: int = 3
    norm: NormKind = "instance"
    padding_type: PaddingKind = "reflect"
    dropout: float = 0.0
    residual: bool = False
    input_skip: bool = False

    def __post_init__(self) -> None:
        for name in ("input_nc", "output_nc", "ngf"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        _check_residual(self.residual, self.input_nc, self.output_nc)
        for name in ("n_blocks", "max_inserted"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")

    def max_depths(self) -> list[int]:
        return [self.n_blocks if i == TRUNK else self.max_inserted for i in range(len(STAGES))]


@register("depth_width_supernet")
class DepthWidthSupernet(_Layout, EdgeModel):
    """Dynamic depth-width generator; :meth:`set_config` picks the active sub-network by its genes."""

    config_cls = DepthWidthSupernetConfig
    config: DepthWidthSupernetConfig

    def __init__(self, config: DepthWidthSupernetConfig | None = None, **options: object) -> None:
        config = config or DepthWidthSupernetConfig.from_dict(options)
        super().__init__(config)
        c = config
        widths = [c.ngf * m for m in LAYER_MULT]
        hidden = [c.ngf * m for m in STAGE_MULT]
        _build(
            self,
            c.input_nc,
            c.output_nc,
            widths,
            hidden,
            c.max_depths(),
            c.norm,
            c.padding_type,
            c.dropout,
            dynamic=True,
            residual=c.residual,
        )
        self.active_config: tuple[int, ...] = self.largest_config()
        self._depths = c.max_depths()

    def _active_depths(self) -> Sequence[int]:
        return self._depths

    # ---------------------------------------------------------------- genes

    def gene_choices(
        self, widths: Sequence[int], depths: Sequence[int], trunk_depths: Sequence[int] | None = None
    ) -> list[tuple[int, ...]]:
        """Choices per gene: ``widths`` for the ten width genes, ``depths`` for the inserted stages and
        ``trunk_depths`` (default: only ``n_blocks``) for the trunk."""
        c = self.config
        w = sorted(set(widths))
        d = sorted(set(depths))
        t = sorted(set(trunk_depths if trunk_depths is not None else [c.n_blocks]))
        for v in w:
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= c.ngf:
                raise ConfigError(f"width choice {v!r} is not an integer in [1, ngf={c.ngf}]")
        for name, values, cap in (("depth", d, c.max_inserted), ("trunk depth", t, c.n_blocks)):
            if not values:
                raise ConfigError(f"{name} choices must not be empty")
            for v in values:
                if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= cap:
                    raise ConfigError(f"{name} choice {v!r} is not an integer in [0, {cap}]")
        if not w:
            raise ConfigError("width choices must not be empty")
        depth_genes = [tuple(t) if i == TRUNK else tuple(d) for i in range(len(STAGES))]
        return [tuple(w)] * N_WIDTH_GENES + depth_genes

    def validate_config(self, genes: Sequence[int]) -> tuple[int, ...]:
        """``genes`` as a tuple of ints, or ConfigError if it is not a sub-network of this supernet."""
        if isinstance(genes, str):
            raise ConfigError("a depth-width config must be a sequence of integers, not a string")
        items = list(genes)
        if len(items) != N_GENES:
            raise ConfigError(f"a depth-width config has {N_GENES} genes ({', '.join(GENE_NAMES)}), got {len(items)}")
        c = self.config
        caps = [c.ngf] * N_WIDTH_GENES + c.max_depths()
        for i, (v, cap) in enumerate(zip(items, caps, strict=True)):
            low = 1 if i < N_WIDTH_GENES else 0
            if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= cap:
                raise ConfigError(f"{GENE_NAMES[i]} = {v!r} is outside [{low}, {cap}]")
        return tuple(int(v) for v in items)

    def set_config(self, genes: Sequence[int]) -> None:
        """Run the sub-network described by ``genes`` from now on."""
        g = self.validate_config(genes)
        sub = self.subnet_config(g)
        for i, seq in enumerate([self.stem, *self.down]):
            layer = seq[-3] if i == 0 else seq[0]
            assert isinstance(layer, DynamicConv2d)
            layer.set_active(sub.widths[i])
        for i, seq in enumerate(self.up):
            layer = seq[0]
            assert isinstance(layer, DynamicConvTranspose2d)
            layer.set_active(sub.widths[3 + i])
        dims = _stage_dims(sub.widths)
        for stage, dim, hidden, depth in zip(self.stages, dims, sub.hidden, sub.depths, strict=True):
            for block in list(stage)[:depth]:
                assert isinstance(block, DynamicMobileResnetBlock)
                block.set_active(hidden, dim)
        self._depths = list(sub.depths)
        self.active_config = g

    def subnet_config(self, genes: Sequence[int]) -> DepthWidthGeneratorConfig:
        """The static :class:`DepthWidthGeneratorConfig` of the sub-network at ``genes``."""
        g = self.validate_config(genes)
        c = self.config
        return DepthWidthGeneratorConfig(
            input_nc=c.input_nc,
            output_nc=c.output_nc,
            widths=[v * m for v, m in zip(g[:5], LAYER_MULT, strict=True)],
            hidden=[v * m for v, m in zip(g[5:10], STAGE_MULT, strict=True)],
            depths=list(g[10:]),
            norm=c.norm,
            padding_type=c.padding_type,
            dropout=c.dropout,
            residual=c.residual,
            input_skip=c.input_skip,
        )

    def sample_config(self, rng: random.Random, choices: Sequence[Sequence[int]]) -> tuple[int, ...]:
        """A random config, each gene drawn from its choices (see :meth:`gene_choices`); not applied."""
        return self.validate_config([rng.choice(list(c)) for c in choices])

    def largest_config(self, choices: Sequence[Sequence[int]] | None = None) -> tuple[int, ...]:
        if choices is None:
            return (self.config.ngf,) * N_WIDTH_GENES + tuple(self.config.max_depths())
        return self.validate_config([max(c) for c in choices])

    def smallest_config(self, choices: Sequence[Sequence[int]]) -> tuple[int, ...]:
        return self.validate_config([min(c) for c in choices])

    @torch.no_grad()
    def extract(self, genes: Sequence[int]) -> DepthWidthGenerator:
        """The standalone :class:`DepthWidthGenerator` at ``genes``, weights copied out of the supernet.

        Every sub-network tensor is the leading slice of the supernet tensor of the same name (the first
        ``depth`` blocks of every stage exist in both); the result has the supernet's device, dtype and mode.
        """
        sub = DepthWidthGenerator(self.subnet_config(genes))
        try:
            load_leading_slices(sub, self)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        param = next(self.parameters(), None)
        if param is not None:
            sub.to(device=param.device, dtype=param.dtype)
        return sub.train(self.training)
