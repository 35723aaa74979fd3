"""The image pyramid (sizes as SinGAN computes them) and a trained pyramid of generators."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from edgegan.errors import ConfigError, EdgeganError

Size = tuple[int, int]  # (height, width)


def resize(x: torch.Tensor, size: Size) -> torch.Tensor:
    """Bicubic resize of a float [N, C, H, W] batch, antialiased when shrinking; no uint8 round trip."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrinking = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=shrinking)


@dataclass(frozen=True)
class PyramidSpec:
    """Scale sizes from coarsest (0) to finest (N); ``factor`` is the down-scaling ratio (< 1)."""

    sizes: tuple[Size, ...]
    factor: float
    input_size: Size  # size of the image given to training, before the max_size resize

    @property
    def n_scales(self) -> int:
        return len(self.sizes)

    @property
    def ratio(self) -> float:
        """Up-scaling ratio between neighbouring scales (r = 1 / factor)."""
        return 1.0 / self.factor


def compute_pyramid(
    height: int, width: int, max_size: int = 250, min_size: int = 25, factor: float = 0.75
) -> PyramidSpec:
    """SinGAN's schedule: shrink so the longer side is <= ``max_size``; the number of scales comes
    from ``min_size`` and the nominal ``factor``; the factor is then recomputed so the coarsest
    scale's shorter side is exactly ``min_size``."""
    short, long = min(height, width), max(height, width)
    if short < min_size:
        raise ConfigError(f"image is {width}x{height}; its shorter side must be at least min_size = {min_size} px")
    n_scales = math.ceil(math.log(min_size / short, factor)) + 1
    scale_to_stop = math.ceil(math.log(min(max_size, long) / long, factor))
    stop = n_scales - scale_to_stop
    first = min(max_size / long, 1.0)
    fh, fw = math.ceil(height * first), math.ceil(width * first)
    if stop < 1:
        return PyramidSpec(((fh, fw),), factor, (height, width))
    exact = (min_size / min(fh, fw)) ** (1.0 / stop)
    sizes = []
    for i in range(stop + 1):
        s = exact ** (stop - i)
        sizes.append((max(1, math.ceil(fh * s - 1e-9)), max(1, math.ceil(fw * s - 1e-9))))
    return PyramidSpec(tuple(sizes), exact, (height, width))


def real_pyramid(image: torch.Tensor, spec: PyramidSpec) -> list[torch.Tensor]:
    """The real image at every scale: ``image`` is [1, 3, H, W] (any range); resized from the original."""
    return [resize(image, size) for size in spec.sizes]


def scaled_sizes(
    sizes: Sequence[Size], out_size: Size | None = None, scale: tuple[float, float] = (1.0, 1.0)
) -> list[Size]:
    """Per-scale sizes for a sample of another size: exact ``out_size`` (h, w) at the finest
    scale, or the training sizes multiplied by ``scale`` (h factor, w factor)."""
    fh, fw = sizes[-1]
    sh, sw = (out_size[0] / fh, out_size[1] / fw) if out_size else scale
    if sh <= 0 or sw <= 0:
        raise ConfigError("sample size and scale factors must be positive")
    out = [(max(1, round(h * sh)), max(1, round(w * sw))) for h, w in sizes]
    if out_size:
        out[-1] = tuple(out_size)  # type: ignore[assignment]
    return out


ScaleGenerator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class SETGANPyramid:
    """Trained generators 0..N with their noise amplitudes; runs inference for any size.

    A generator is anything called as ``G(prev, noise)``: a ``SinGANGenerator`` or an ONNX
    Runtime session wrapped by :func:`edgegan.setgan.export.onnx_pyramid`.
    ``noise_amps[0]`` is 1 (scale 0 is purely generative); scale 0's noise is one channel
    repeated over the three colours, as in SinGAN; finer scales draw 3-channel noise.
    """

    def __init__(
        self,
        generators: Sequence[ScaleGenerator],
        noise_amps: Sequence[float],
        sizes: Sequence[Size],
        factor: float,
        z_rec: torch.Tensor | None = None,
    ) -> None:
        if not (len(generators) == len(noise_amps) <= len(sizes)):
            raise EdgeganError("generators, noise amplitudes and sizes do not line up")
        self.generators = [g.eval() if isinstance(g, torch.nn.Module) else g for g in generators]
        self.noise_amps = [float(a) for a in noise_amps]
        self.sizes = [tuple(s) for s in sizes]
        self.factor = factor
        self.z_rec = z_rec

    @property
    def n_scales(self) -> int:
        return len(self.generators)

    def to(self, device: str | torch.device) -> SETGANPyramid:
        self.generators = [g.to(device) if isinstance(g, torch.nn.Module) else g for g in self.generators]
        return self

    @property
    def device(self) -> torch.device:
        first = self.generators[0]
        return next(first.parameters()).device if isinstance(first, torch.nn.Module) else torch.device("cpu")

    def draw_noise(self, scale: int, n: int, size: Size, generator: torch.Generator | None = None) -> torch.Tensor:
        """Unscaled noise for one scale (1 channel repeated at scale 0, 3 channels elsewhere)."""
        channels = 1 if scale == 0 else 3
        z = torch.randn(n, channels, *size, generator=generator, device="cpu").to(self.device)
        return z.expand(n, 3, *size) if channels == 1 else z

    def noises(
        self, n: int, sizes: Sequence[Size], k: int, start: int = 0, generator: torch.Generator | None = None
    ) -> list[torch.Tensor]:
        """Scaled noise maps for scales ``start``..``k`` (so that runs can be repeated exactly)."""
        return [self.noise_amps[i] * self.draw_noise(i, n, sizes[i], generator) for i in range(start, k + 1)]

    @torch.no_grad()
    def run(
        self,
        noises: Sequence[torch.Tensor],
        sizes: Sequence[Size],
        start: int = 0,
        init: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Run scales ``start``..``start+len(noises)-1``; returns each scale's output.

        ``init`` (for ``start > 0``) is the image injected at scale ``start - 1``: it is
        up-sampled to scale ``start`` and refined from there.
        """
        if start > 0 and init is None:
            raise EdgeganError("starting above scale 0 needs an image to inject")
        outs = []
        n = noises[0].shape[0]
        prev = torch.zeros(n, 3, *sizes[start], device=self.device) if start == 0 else resize(init, sizes[start])
        for offset, z in enumerate(noises):
            i = start + offset
            if offset > 0:
                prev = resize(outs[-1], sizes[i])
            outs.append(self.generators[i](prev, z))
        return outs

    def sample(
        self,
        n: int = 1,
        k: int | None = None,
        out_size: Size | None = None,
        scale: tuple[float, float] = (1.0, 1.0),
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Random samples through scales 0..k (all by default), of any size and aspect."""
        k = self.n_scales - 1 if k is None else k
        if not 0 <= k < self.n_scales:
            raise ConfigError(f"scales must be between 1 and {self.n_scales}, got {k + 1}")
        # out_size is the size of the last scale run (k), so the scale sizes follow from it.
        resized = out_size is not None or scale != (1.0, 1.0)
        sizes = scaled_sizes(self.sizes[: k + 1], out_size, scale) if resized else self.sizes
        return self.run(self.noises(n, sizes, k, generator=generator), sizes)[-1]

    def reconstruct(self, k: int | None = None) -> torch.Tensor:
        """The fixed-noise reconstruction of the training image through scales 0..k."""
        if self.z_rec is None:
            raise EdgeganError("this pyramid has no reconstruction noise")
        k = self.n_scales - 1 if k is None else k
        noises = [self.z_rec.to(self.device).expand(1, 3, *self.sizes[0])]
        noises += [torch.zeros(1, 3, *self.sizes[i], device=self.device) for i in range(1, k + 1)]
        return self.run(noises, self.sizes)[-1]

    def inject(
        self, image: torch.Tensor, start: int, k: int | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Inject ``image`` (down-sampled to scale ``start - 1``) and run scales ``start``..k."""
        k = self.n_scales - 1 if k is None else k
        if not 1 <= start <= k:
            raise ConfigError(f"inject scale must be between 1 and {k}, got {start}")
        init = resize(image.to(self.device), self.sizes[start - 1])
        noises = self.noises(image.shape[0], self.sizes, k, start=start, generator=generator)
        return self.run(noises, self.sizes, start=start, init=init)[-1]
