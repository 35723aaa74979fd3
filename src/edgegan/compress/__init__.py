"""Model compression recipes: once-for-all supernet training, search and sub-network extraction.

What the GAN Compression recipes return (:mod:`edgegan.compress.results`) is importable from here; the recipes
themselves are in their modules (``edgegan.compress.teacher``, ``.distill``, ``.supernet_train``, ``.pipeline``).
"""

from edgegan.compress.results import (
    CycleGANResult,
    DistillResult,
    PipelineResult,
    Pix2PixResult,
    RecipeResult,
    SupernetResult,
)

__all__ = ["CycleGANResult", "DistillResult", "PipelineResult", "Pix2PixResult", "RecipeResult", "SupernetResult"]
