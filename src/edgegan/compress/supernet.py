"""Export a sub-network of a once-for-all supernet as a standalone ``MobileResnetGenerator``."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from edgegan.errors import ConfigError
from edgegan.models.mobile_resnet import MobileResnetGenerator, MobileResnetGeneratorConfig
from edgegan.models.mobile_supernet import MobileResnetSupernet
from edgegan.nn.dynamic import load_leading_slices

__all__ = ["extract_subnet", "subnet_config"]


def subnet_config(supernet: MobileResnetSupernet, channels: Sequence[int]) -> MobileResnetGeneratorConfig:
    """The ``MobileResnetGenerator`` config of ``supernet``'s sub-network at channel config ``channels``."""
    ch = supernet.validate_config(channels)
    c = supernet.config
    return MobileResnetGeneratorConfig(
        input_nc=c.input_nc,
        output_nc=c.output_nc,
        ngf=c.ngf,
        channels=ch,
        n_blocks=c.n_blocks,
        norm=c.norm,
        dropout=c.dropout,
        padding_type=c.padding_type,
        residual=c.residual,
        input_skip=c.input_skip,
    )


@torch.no_grad()
def extract_subnet(supernet: MobileResnetSupernet, channels: Sequence[int]) -> MobileResnetGenerator:
    """Build the standalone generator at ``channels`` and copy its weights out of ``supernet``.

    Both networks have the same parameter and buffer names; each sub-network tensor is the leading
    slice (first c entries along every dimension) of the supernet tensor of the same name. That covers
    conv weights ``[out, in, k, k]``, depthwise ``[c, 1, k, k]``, transposed-conv weights
    ``[in, out, k, k]``, biases and BatchNorm affine weights and running statistics alike.
    The result is on the supernet's device and dtype, in the supernet's train/eval mode.
    """
    if not isinstance(supernet, MobileResnetSupernet):
        raise TypeError(f"extract_subnet needs a MobileResnetSupernet, got {type(supernet).__name__}")
    sub = MobileResnetGenerator(subnet_config(supernet, channels))
    source = supernet.state_dict()
    target = sub.state_dict()
    if set(source) != set(target):
        missing = sorted(set(target) - set(source))
        extra = sorted(set(source) - set(target))
        raise ConfigError(f"supernet and sub-network layouts differ (missing {missing[:3]}, extra {extra[:3]})")
    try:
        load_leading_slices(sub, supernet)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    param = next(supernet.parameters(), None)
    if param is not None:
        sub.to(device=param.device, dtype=param.dtype)
    return sub.train(supernet.training)
