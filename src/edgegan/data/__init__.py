"""Image and data-set helpers."""

from edgegan.data.datasets import (
    DIRECTIONS,
    PairedDataset,
    UnpairedDataset,
    split_validation,
    subset,
)
from edgegan.data.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    list_images,
    load_image,
    load_image_batch,
    save_image,
    to_pil,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DIRECTIONS",
    "IMAGE_EXTENSIONS",
    "PairedDataset",
    "UnpairedDataset",
    "list_images",
    "load_image",
    "load_image_batch",
    "save_image",
    "split_validation",
    "subset",
    "to_pil",
]
