"""User-facing errors.

Anything raised as an :class:`EdgeganError` is bad input or a missing resource, never a
bug: the CLI prints its message on one line and exits with code 2.
"""

from __future__ import annotations


class EdgeganError(Exception):
    """Base class for errors caused by the user's input or environment."""


class ConfigError(EdgeganError, ValueError):
    """An architecture name, option or config file is invalid."""


class ImageLoadError(EdgeganError, ValueError):
    """An image file is missing, empty, corrupt, not an image or too large."""


class CheckpointError(EdgeganError, RuntimeError):
    """A checkpoint or saved model is missing, incomplete or inconsistent."""


class NonFiniteError(EdgeganError, FloatingPointError):
    """Training produced NaN or inf; the last good checkpoint is kept."""
