"""Image and data-set helpers."""

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
    "IMAGE_EXTENSIONS",
    "list_images",
    "load_image",
    "load_image_batch",
    "save_image",
    "to_pil",
]
