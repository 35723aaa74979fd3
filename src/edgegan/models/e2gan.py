"""E2GAN's text-conditioned efficient generator, "3RB+1TB".

A pix2pix ResNet generator with ``n_blocks`` (3) residual blocks and one transformer block placed after
block ``tb_after`` (2). The transformer block halves the feature map with a stride-2 conv, runs
self-attention over the pixels, cross-attention to the text tokens (separate linear q/k/v/out
projections) and a gated MLP (GEGLU), each pre-normed and residual and framed by input/output
projections as in Stable Diffusion's transformer blocks, then restores the size with a transposed conv;
the block's output is added to its input. With ``ngf=64`` at 256×256 it has about 7.1 M parameters and
23.6 G MACs, the paper's figures; the default full-resolution detail path (``detail``, see the config) adds
63 k parameters and 2.5 G MACs (7.25 M, 26.2 G).

``forward(x, text)`` takes images ``[N, C, H, W]`` in [-1, 1] (H and W multiples of 8) and text token
embeddings ``[N, T, text_dim]``; ``text_mask`` ``[N, T]`` (True = real token) masks padding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from edgegan.errors import ConfigError
from edgegan.models._features import add_input
from edgegan.nn import NormKind, PaddingKind, ResnetBlock, conv_bias, norm_layer, pad_and_conv_padding
from edgegan.registry import EdgeModel, ModelConfig, register

__all__ = ["E2GANGenerator", "E2GANGeneratorConfig", "TransformerBlock"]

UpsampleKind = Literal["bilinear", "transpose"]


@dataclass
class E2GANGeneratorConfig(ModelConfig):
    # models saved before these fields existed have the paper's layout (see edgegan.load)
    saved_before: ClassVar[dict[str, Any]] = {
        "upsample": "transpose",
        "residual": False,
        "film": False,
        "input_skip": False,
        "detail": 0,
    }

    input_nc: int = 3
    output_nc: int = 3
    ngf: int = 64
    n_blocks: int = 3
    tb_after: int = 2
    text_dim: int = 384
    heads: int = 8
    mlp_ratio: float = 4.0
    norm: NormKind = "instance"
    padding_type: PaddingKind = "reflect"
    upsample: UpsampleKind = "bilinear"
    residual: bool = True
    film: bool = True
    input_skip: bool = True
    # The full-resolution detail path (0: none, the layout saved before it): ``detail_layers`` 3x3 conv+ReLU
    # layers of ``detail`` channels on the input, text-modulated, then a 3x3 conv to a correction added to the
    # output. Every other layer works at 1/2 resolution or coarser (the decoder up-samples bilinearly after its
    # convs), so the only full-resolution non-linearity was the stem's ReLU, and pixel-precise edits (cartoon
    # ink, pencil strokes) stayed out of reach. Measurements: E2GANTrainConfig.detail_lr (edgegan/e2gan/train.py).
    detail: int = 32
    detail_layers: int = 5

    def __post_init__(self) -> None:
        for name in ("input_nc", "output_nc", "ngf", "text_dim", "heads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.n_blocks < 0 or not 0 <= self.tb_after <= self.n_blocks:
            raise ConfigError(f"tb_after must be in [0, n_blocks={self.n_blocks}], got {self.tb_after}")
        if (self.ngf * 4) % self.heads:
            raise ConfigError(f"the trunk width {self.ngf * 4} must be divisible by heads={self.heads}")
        if self.mlp_ratio <= 0:
            raise ConfigError(f"mlp_ratio must be positive, got {self.mlp_ratio}")
        if self.upsample not in ("bilinear", "transpose"):
            raise ConfigError(f"upsample must be bilinear or transpose, got {self.upsample!r}")
        if self.residual and self.input_nc != self.output_nc:
            raise ConfigError("residual=true needs input_nc == output_nc")
        if self.detail < 0 or self.detail_layers < 1:
            raise ConfigError(f"detail must be >= 0 and detail_layers >= 1, got {self.detail}, {self.detail_layers}")
        if self.detail and not self.residual:
            raise ConfigError("the detail path adds a correction to the input: it needs residual=true")


def _up_conv(cin: int, cout: int, upsample: UpsampleKind, bias: bool) -> nn.Module:
    """The layer that doubles the resolution. ``transpose``: the paper's stride-2, kernel-3 transposed conv,
    whose uneven overlap turns a spatially constant change into a 2-px grid. ``bilinear``: a 3×3 conv at the
    low resolution, then bilinear ×2 (:func:`_up`): the same parameters and MACs, and a constant input stays
    constant, so no checkerboard."""
    if upsample == "transpose":
        return nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1, bias=bias)
    return nn.Conv2d(cin, cout, 3, padding=1, bias=bias)


def _up(conv: nn.Module, h: torch.Tensor, upsample: UpsampleKind) -> torch.Tensor:
    h = conv(h)
    # a fixed scale factor, not a size read off a tensor: the ONNX exporter then keeps the channel count
    return h if upsample == "transpose" else F.interpolate(h, scale_factor=2.0, mode="bilinear", align_corners=False)


class TextFiLM(nn.Module):
    """Per-channel scale and shift from the pooled text embedding: ``h·(1 + γ(t)) + β(t)``.

    Instance norm removes whatever is spatially constant, so a concept that shifts colours cannot reach the
    output through normalised layers alone; this puts it back after the norm. Zero-initialised: at the start
    the layer is the identity."""

    def __init__(self, text_dim: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(text_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.proj(pooled)[:, :, None, None].chunk(2, dim=1)
        return h * (1 + gamma) + beta


def _pool_text(text: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return text.mean(1)
    m = mask.to(text.dtype)[..., None]
    return (text * m).sum(1) / m.sum(1).clamp(min=1.0)


class _ScaledDotProduct(nn.Module):
    """softmax(QKᵀ/√d)·V over heads; a module of its own so the profiler counts its two matmuls."""

    def __init__(self, heads: int) -> None:
        super().__init__()
        self.heads = heads

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        n, lq, dim = q.shape
        lk = k.shape[1]
        d = dim // self.heads
        q = q.reshape(n, lq, self.heads, d).transpose(1, 2)
        k = k.reshape(n, lk, self.heads, d).transpose(1, 2)
        v = v.reshape(n, lk, self.heads, d).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, None, :], torch.finfo(scores.dtype).min)
        out = scores.softmax(-1) @ v
        return out.transpose(1, 2).reshape(n, lq, dim)

    def extra_macs(self, inputs: tuple[Any, ...], output: torch.Tensor) -> int:
        q, k = inputs[0], inputs[1]
        return 2 * q.shape[0] * q.shape[1] * k.shape[1] * q.shape[2]


class _Attention(nn.Module):
    def __init__(self, dim: int, context_dim: int, heads: int) -> None:
        super().__init__()
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(context_dim, dim)
        self.v = nn.Linear(context_dim, dim)
        self.out = nn.Linear(dim, dim)
        self.attend = _ScaledDotProduct(heads)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.out(self.attend(self.q(x), self.k(context), self.v(context), mask))


class GEGLU(nn.Module):
    """The gated MLP of Stable Diffusion's transformer blocks: ``W2 · (a ⊙ GELU(g))`` with ``[a, g] = W1·x``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, hidden * 2)
        self.out = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.proj(x).chunk(2, dim=-1)
        return self.out(a * F.gelu(gate))


class TransformerBlock(nn.Module):
    """Stride-2 conv, then on the half-size map (as tokens): input projection, self-attention,
    cross-attention to the text, gated MLP, output projection (pre-norm, residual); transposed conv."""

    def __init__(
        self, dim: int, text_dim: int, heads: int, mlp_ratio: float, upsample: UpsampleKind = "bilinear"
    ) -> None:
        super().__init__()
        self.down = nn.Conv2d(dim, dim, 3, stride=2, padding=1)
        self.norm_in = nn.LayerNorm(dim)
        self.proj_in = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = _Attention(dim, dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = _Attention(dim, text_dim, heads)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = GEGLU(dim, int(dim * mlp_ratio))
        self.proj_out = nn.Linear(dim, dim)
        self.up = _up_conv(dim, dim, upsample, bias=True)
        self.upsample = upsample

    def forward(self, x: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.down(x)
        n, c, hh, ww = h.shape
        tokens = h.flatten(2).transpose(1, 2)  # [N, HW, C]
        t = self.proj_in(self.norm_in(tokens))
        a = self.norm1(t)
        t = t + self.self_attn(a, a)
        t = t + self.cross_attn(self.norm2(t), text, text_mask)
        t = t + self.mlp(self.norm3(t))
        t = self.proj_out(t) + tokens
        h = t.transpose(1, 2).reshape(n, c, hh, ww)
        return x + _up(self.up, h, self.upsample)


@register("e2gan_generator")
class E2GANGenerator(EdgeModel):
    """3RB+1TB: stem, two stride-2 downs, residual blocks with one transformer block, two ups, head."""

    config_cls = E2GANGeneratorConfig
    config: E2GANGeneratorConfig
    input_names = ("image", "text")

    def __init__(self, config: E2GANGeneratorConfig | None = None, **options: object) -> None:
        config = config or E2GANGeneratorConfig.from_dict(options)
        super().__init__(config)
        c = config
        bias = conv_bias(c.norm)
        pads, p = pad_and_conv_padding(c.padding_type, 3)
        # The stem's conv is kept apart from its norm so that the input skip can take its un-normalised output.
        self.stem = nn.Sequential(*pads, nn.Conv2d(c.input_nc, c.ngf, 7, padding=p, bias=bias))
        self.stem_norm = nn.Sequential(norm_layer(c.norm, c.ngf), nn.ReLU(True))
        self.down = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c.ngf * 2**i, c.ngf * 2 ** (i + 1), 3, stride=2, padding=1, bias=bias),
                norm_layer(c.norm, c.ngf * 2 ** (i + 1)),
                nn.ReLU(True),
            )
            for i in range(2)
        )
        trunk = c.ngf * 4
        self.blocks = nn.ModuleList(ResnetBlock(trunk, c.norm, 0.0, c.padding_type) for _ in range(c.n_blocks))
        self.transformer = TransformerBlock(trunk, c.text_dim, c.heads, c.mlp_ratio, c.upsample)
        self.up = nn.ModuleList(
            nn.Sequential(_up_conv(c.ngf * 2 ** (2 - i), c.ngf * 2 ** (1 - i), c.upsample, bias)) for i in range(2)
        )
        self.up_norm = nn.ModuleList(norm_layer(c.norm, c.ngf * 2 ** (1 - i)) for i in range(2))
        # Text-conditioned scale/shift after each decoder norm, and on the input skip (see TextFiLM).
        self.up_film = nn.ModuleList(TextFiLM(c.text_dim, c.ngf * 2 ** (1 - i)) for i in range(2)) if c.film else None
        self.skip_film = TextFiLM(c.text_dim, c.ngf) if c.input_skip else None
        pads, p = pad_and_conv_padding(c.padding_type, 3)
        head: list[nn.Module] = [*pads, nn.Conv2d(c.ngf, c.output_nc, 7, padding=p)]
        if c.residual:
            nn.init.zeros_(head[-1].weight)  # starts as the identity map: output = input
            nn.init.zeros_(head[-1].bias)
        else:
            head.append(nn.Tanh())
        self.head = nn.Sequential(*head)
        self.detail: nn.Sequential | None = None
        self.detail_film: TextFiLM | None = None
        self.detail_out: nn.Sequential | None = None
        if c.detail:
            layers: list[nn.Module] = []
            for i in range(c.detail_layers):
                pads, p = pad_and_conv_padding(c.padding_type, 1)
                layers += [*pads, nn.Conv2d(c.input_nc if i == 0 else c.detail, c.detail, 3, padding=p), nn.ReLU(True)]
            self.detail = nn.Sequential(*layers)
            self.detail_film = TextFiLM(c.text_dim, c.detail)
            pads, p = pad_and_conv_padding(c.padding_type, 1)
            self.detail_out = nn.Sequential(*pads, nn.Conv2d(c.detail, c.output_nc, 3, padding=p))

    def detail_parameters(self) -> list[nn.Parameter]:
        """The detail path's parameters (they train at their own rate: E2GANTrainConfig.detail_lr)."""
        parts = (self.detail, self.detail_film, self.detail_out)
        return [p for m in parts if m is not None for p in m.parameters()]

    def crucial_layers(self) -> dict[str, list[str]]:
        """The paper's parts: sampling layers (down/up convs), the transformer block's layers, residual blocks."""
        names = {n for n, m in self.named_modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear)}
        # The text-conditioned scale/shift layers belong to the decoder's sampling path.
        sampling = sorted(n for n in names if n.startswith(("down.", "up.", "up_film.", "skip_film.")))
        transformer = sorted(n for n in names if n.startswith("transformer."))
        blocks = sorted(n for n in names if n.startswith("blocks."))
        # the full-resolution convs: the first and last (where a concept's colour map is applied) and the detail
        # path's (pixel-precise edits); its text FiLM is left to full training
        io = sorted(n for n in names if n.startswith(("stem.", "head.", "detail.", "detail_out.")))
        return {"sampling": sampling, "transformer": transformer, "residual": blocks, "io": io}

    def example_input(self, size: int | tuple[int, int] = 256, batch: int = 1) -> Any:
        h, w = (size, size) if isinstance(size, int) else size
        return (torch.randn(batch, self.config.input_nc, h, w), torch.randn(batch, 8, self.config.text_dim))

    def forward(self, x: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor | None = None) -> torch.Tensor:
        c = self.config
        raw = self.stem(x)
        h = self.stem_norm(raw)
        for layer in self.down:
            h = layer(h)
        for i, block in enumerate(self.blocks):
            if i == c.tb_after:
                h = self.transformer(h, text, text_mask)
            h = block(h)
        if c.tb_after == len(self.blocks):
            h = self.transformer(h, text, text_mask)
        needs_text = self.up_film is not None or self.skip_film is not None or self.detail is not None
        pooled = _pool_text(text, text_mask) if needs_text else None
        for i, (conv, norm) in enumerate(zip(self.up, self.up_norm, strict=True)):
            h = norm(_up(conv, h, c.upsample))
            if self.up_film is not None:
                h = self.up_film[i](h, pooled)
            h = F.relu(h)
        if self.skip_film is not None:
            # The stem's un-normalised features carry the input's absolute colour, which every normalised layer
            # has lost; the text decides how they mix into the head (per-pixel colour maps per concept).
            h = h + self.skip_film(F.relu(raw), pooled)
        out = self.head(h)
        if self.detail is not None and self.detail_film is not None and self.detail_out is not None:
            out = out + self.detail_out(self.detail_film(self.detail(x), pooled))
        return add_input(x, out, self.training) if c.residual else out
