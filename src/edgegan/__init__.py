"""edgegan: train, compress, adapt and run GANs on edge devices."""

from __future__ import annotations

__version__ = "0.1.0"

from edgegan.errors import EdgeganError
from edgegan.registry import architectures, build, load, save_model

__all__ = ["EdgeganError", "__version__", "architectures", "build", "load", "save_model"]
