"""``images:PATH``: a folder of PNG, JPEG, BMP and WebP images (decoded with Pillow), recursively.

Each image becomes uint8 ``[H, W, C]`` (``levels=256``) under the options of
:mod:`jaxgen.data.image_ops` (``data.channels``, ``data.center_crop``, ``data.image_size``;
``data.random_flip`` mirrors training batches, :mod:`jaxgen.data.preprocess`). Without
``data.image_size`` every image must come out the same size. EXIF orientation tags are not applied
(as torchvision's ``ImageFolder``).

Split and labels as :mod:`jaxgen.data.files` (a ``test/`` or ``val/`` sub-folder, else a stable
hash of each path; ``data.labels_from_folders``). Decoded once into one array
(:mod:`jaxgen.data.cache`: in memory under ``data.cache_max_bytes``, else a reused ``.npy`` file in
``data.cache_dir``), which both splits index.

  python -m jaxgen.main --config=configs/gan.py --workdir=runs/faces \\
    --config.data.name=images:~/data/faces --config.data.image_size=64 --config.data.random_flip=True
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from jaxgen.data import cache, files, image_ops, source
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError

KIND = "images"
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
DEFAULTS = {**image_ops.DEFAULTS, **files.DEFAULTS, **cache.DEFAULTS}


def _read(file: files.File, read):
  """``read(image)`` of the opened image file; anything Pillow raises makes it a ``BadFile``."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  try:
    with file.path.open("rb") as f, Image.open(f) as image:
      return read(image)
  except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, zlib.error, ...
    raise files.BadFile(f"cannot be read as an image ({type(e).__name__}: {e})") from None


class ImageDecoder:
  """:class:`jaxgen.data.cache.Decoder` of image files under :class:`image_ops.ImageOptions`."""

  def __init__(self, where: str, options: image_ops.ImageOptions):
    self._where, self._image = where, options
    self.options = {"image": options.as_dict()}

  def header(self, file: files.File) -> tuple[tuple[int, int, int], str]:
    """``((H, W, C) after the options, Pillow mode)``."""
    height, width, mode = _read(file, lambda image: (image.height, image.width, image.mode))
    try:
      return self._image.output_shape(height, width, mode), mode
    except ValueError as e:
      raise files.BadFile(str(e), "use a smaller data.center_crop") from None

  def layout(self, headers: Sequence[tuple[files.File, Any]]) -> tuple[tuple[int, ...], dict]:
    first = {}
    for file, (shape, mode) in headers:
      first.setdefault(shape, (file, mode))
    if len(first) > 1:
      (a, (fa, ma)), (b, (fb, mb)) = list(first.items())[:2]
      if a[:2] != b[:2]:
        raise UserError(f"{self._where}: images of mixed sizes ({fa.name} is {a[0]}x{a[1]}, "
                        f"{fb.name} is {b[0]}x{b[1]}, HxW): set data.image_size (e.g. "
                        f"--config.data.image_size={min(a[0], a[1], b[0], b[1])}) to resize and "
                        "crop them to one size")
      raise UserError(f"{self._where}: images with mixed channel counts ({fa.name} has {a[2]}, "
                      f"mode {ma}; {fb.name} has {b[2]}, mode {mb}): set data.channels=1 (grey) "
                      "or 3 (RGB) to convert them")
    return next(iter(first)), {}

  def decode(self, file: files.File, meta: dict) -> np.ndarray:
    del meta
    return _read(file, self._image.apply)


@source.register(KIND + ":", defaults=DEFAULTS)
def load(data) -> source.Splits:
  """The image folder ``data.path`` (module docstring)."""
  root, listed = files.list_files(KIND, str(data.path), EXTENSIONS, bool(data.get("skip_bad_files", False)))
  where = f"{KIND}:{data.path}"
  decoder = ImageDecoder(where, image_ops.ImageOptions.from_config(data))
  decoded = cache.decode_folder(KIND, root, listed, decoder, data)
  spec = DataSpec(name=str(data.name), modality="image", shape=tuple(decoded.x.shape[1:]), levels=256)
  return files.folder_splits(KIND, root, [listed[i] for i in decoded.kept], decoded.x, spec, data)
