"""Built-in architectures; importing this package registers them."""

from edgegan.models.depth_width import (
    DepthWidthGenerator,
    DepthWidthGeneratorConfig,
    DepthWidthSupernet,
    DepthWidthSupernetConfig,
)
from edgegan.models.discriminators import (
    MultiScaleDiscriminator,
    MultiScaleDiscriminatorConfig,
    PatchDiscriminator,
    PatchDiscriminatorConfig,
)
from edgegan.models.e2gan import E2GANGenerator, E2GANGeneratorConfig
from edgegan.models.mobile_resnet import MobileResnetGenerator, MobileResnetGeneratorConfig
from edgegan.models.mobile_supernet import MobileResnetSupernet, MobileResnetSupernetConfig
from edgegan.models.resnet import ResnetGenerator, ResnetGeneratorConfig
from edgegan.models.singan import SinGANDiscriminator, SinGANGenerator, SinGANScaleConfig
from edgegan.models.unet import UnetGenerator, UnetGeneratorConfig

__all__ = [
    "DepthWidthGenerator",
    "DepthWidthGeneratorConfig",
    "DepthWidthSupernet",
    "DepthWidthSupernetConfig",
    "E2GANGenerator",
    "E2GANGeneratorConfig",
    "MobileResnetGenerator",
    "MobileResnetGeneratorConfig",
    "MobileResnetSupernet",
    "MobileResnetSupernetConfig",
    "MultiScaleDiscriminator",
    "MultiScaleDiscriminatorConfig",
    "PatchDiscriminator",
    "PatchDiscriminatorConfig",
    "ResnetGenerator",
    "ResnetGeneratorConfig",
    "SinGANDiscriminator",
    "SinGANGenerator",
    "SinGANScaleConfig",
    "UnetGenerator",
    "UnetGeneratorConfig",
]
