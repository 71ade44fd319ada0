"""Image geometry and channels shared by the image sources (``images:PATH``, tfds images).

Options (``config.data``), applied in this order to each decoded image of ``h x w`` pixels:

1. ``channels``: 0 keeps the file's channels (1 for grey modes ``L``/``LA``/``1``/16-bit grey,
   3 for colour modes ``RGB``/``RGBA``/``P``/``CMYK``/...; an alpha channel is dropped); 1 or 3
   converts (Pillow's ``convert("L")``: ``L = (299 R + 587 G + 114 B) / 1000``, or ``"RGB"``).
   16-bit grey is scaled to 8 bits (``round(v * 255 / 65535)``).
2. ``center_crop``: 0 or a side ``S`` (or ``(H, W)``): keep the central ``S x S`` pixels of the
   original image, its top-left corner at ``((h - S) // 2, (w - S) // 2)``. This is the
   "usual centre crop" of CelebA (108 in DCGAN, 148 in RealNVP) before resizing.
3. ``image_size``: 0 keeps the size; ``S`` resizes so that the *shorter* side is ``S`` and keeps
   the central ``S x S``; ``(H, W)`` resizes by ``max(H / h, W / w)`` (the image covers ``H x W``)
   and keeps the central ``H x W``. Resizing is Pillow's bicubic filter, which widens its support
   when shrinking (antialiasing); a side that already has the target length is not resampled.

The result is uint8 ``[H, W, C]``: the raw examples of a 256-level image set. Pillow is imported
only when an image is converted, cropped or resized.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections
import numpy as np

from jaxgen.errors import UserError

#: Pillow modes read as one grey channel; every other mode is read as RGB.
GREY_MODES = ("1", "L", "LA", "La", "I;16", "I;16L", "I;16B", "I;16N")
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def _field(value: Any) -> ml_collections.FieldReference:
  """A default that accepts an int or an ``(H, W)`` pair (see ``jaxgen.data.source``)."""
  return ml_collections.FieldReference(value, field_type=object)


#: The ``config.data`` fields of this module (declared by each image source).
DEFAULTS = {
    "image_size": _field(0),  # images: resize the shorter side to this and centre-crop; (H, W); 0 = native
    "center_crop": _field(0),  # images: keep the central S x S (or (H, W)) of the original first; 0 = none
    "channels": 0,  # images: 1 (grey) or 3 (RGB) converts; 0 = as the files are (all must agree)
    "random_flip": False,  # images: mirror training batches horizontally with probability 1/2
}


def _pair(value: Any, field: str) -> tuple[int, int] | None:
  """``0`` -> None, ``S`` -> ``(S, S)``, ``(H, W)`` -> itself; anything else is a UserError."""
  if isinstance(value, (tuple, list)) and len(value) == 2:
    h, w = value
  elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
    if value == 0:
      return None
    h = w = value
  else:
    h = w = None
  if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in (h, w)):
    raise UserError(f"data.{field}={value!r} is neither 0, a positive side nor an (H, W) pair of "
                    f"positive ints: set e.g. --config.data.{field}=64")
  return int(h), int(w)


def native_channels(mode: str) -> int:
  """Channels of a Pillow image mode as read with ``channels=0`` (module docstring)."""
  return 1 if mode in GREY_MODES else 3


@dataclasses.dataclass(frozen=True)
class ImageOptions:
  """The options of the module docstring, parsed: ``size``/``crop`` ``(H, W)`` or None,
  ``channels`` 0, 1 or 3."""

  size: tuple[int, int] | None = None
  crop: tuple[int, int] | None = None
  channels: int = 0

  @classmethod
  def from_config(cls, data_config: Any) -> ImageOptions:
    channels = int(data_config.get("channels", 0))
    if channels not in (0, 1, 3):
      raise UserError(f"data.channels={channels} is not 0 (as the files are), 1 (grey) or 3 (RGB): "
                      "set one of them")
    return cls(size=_pair(data_config.get("image_size", 0), "image_size"),
               crop=_pair(data_config.get("center_crop", 0), "center_crop"), channels=channels)

  @property
  def is_identity(self) -> bool:
    return self.size is None and self.crop is None and self.channels == 0

  def as_dict(self) -> dict[str, Any]:
    """JSON-able form (for cache manifests)."""
    return {"size": self.size and list(self.size), "crop": self.crop and list(self.crop),
            "channels": self.channels}

  def output_shape(self, height: int, width: int, mode: str) -> tuple[int, int, int]:
    """``(H, W, C)`` of an image of ``height x width`` pixels in Pillow ``mode``.

    Raises:
      ValueError: the image is smaller than ``center_crop`` (the message says so).
    """
    channels = self.channels or native_channels(mode)
    if self.crop is not None:
      if height < self.crop[0] or width < self.crop[1]:
        raise ValueError(f"is {height}x{width} (HxW), smaller than data.center_crop={self.crop}")
      height, width = self.crop
    if self.size is not None:
      height, width = self.size
    return height, width, channels

  def apply(self, image) -> np.ndarray:
    """A ``PIL.Image`` -> uint8 ``[H, W, C]`` (module docstring); ``ValueError`` as ``output_shape``."""
    from PIL import Image  # pylint: disable=g-import-not-at-top

    channels = self.channels or native_channels(image.mode)
    if image.mode in _SIXTEEN_BIT:
      wide = np.asarray(image, np.uint32)
      image = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8))
    image = image.convert("L" if channels == 1 else "RGB")
    if self.crop is not None:
      self.output_shape(image.height, image.width, image.mode)  # raises if smaller than the crop
      image = _center(image, *self.crop)
    if self.size is not None:
      height, width = self.size
      scale = max(height / image.height, width / image.width)
      resized = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
      if resized != image.size:
        image = image.resize(resized, Image.Resampling.BICUBIC)
      image = _center(image, height, width)
    array = np.asarray(image, np.uint8)
    return array[..., None] if array.ndim == 2 else array

  def apply_array(self, image: np.ndarray) -> np.ndarray:
    """uint8 ``[h, w, c]`` (c = 1 or 3) -> uint8 ``[H, W, C]``; returned as it is when the options
    change nothing."""
    if self.is_identity:
      return image
    from PIL import Image  # pylint: disable=g-import-not-at-top

    return self.apply(Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image))


def _center(image, height: int, width: int):
  top, left = (image.height - height) // 2, (image.width - width) // 2
  return image.crop((left, top, left + width, top + height))
