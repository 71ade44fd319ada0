"""What the tensorflow-datasets sources share: the ``data.data_dir`` field and one error for a split
that cannot be opened (not prepared, or a bad split name), with the command that prepares it.

Reading a prepared set needs no network: every tfds source opens its files with
``download=False`` semantics (``tfds.data_source`` / ``builder.as_data_source``), and a set that was
never prepared is one ``UserError`` naming the preparation command.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from jaxgen.errors import UserError

T = TypeVar("T")

DEFAULTS = {"data_dir": ""}  # tensorflow-datasets data_dir ("" = its default)


def data_dir(data_config: Any) -> str | None:
  """``data.data_dir``, ``None`` for the tfds default."""
  return str(data_config.get("data_dir", "") or "") or None


def prepare_hint(name: str, data_dir_: str | None, packages: str = "tensorflow-cpu") -> str:
  """The one-time preparation of ``name`` in the ``array_record`` format that jaxgen reads."""
  where = f", data_dir={data_dir_!r}" if data_dir_ else ""
  return (f"prepare it once with network access (pip install {packages}; python -c \"import "
          f"tensorflow_datasets as tfds; tfds.builder({name!r}{where}, file_format='array_record')"
          ".download_and_prepare()\") and set --config.data.data_dir if not the tfds default")


def _first_line(e: Exception) -> str:
  return (str(e).splitlines() or [""])[0]


def open_split(opener: Callable[[], T], name: str, split: str, data_dir_: str | None,
               packages: str = "tensorflow-cpu") -> T:
  """``opener()`` (which opens ``split`` of ``name``), its "not prepared" and "bad split" errors
  turned into one ``UserError`` line each; an unknown data set name propagates unchanged."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  try:
    return opener()
  except tfds.core.registered.DatasetNotFoundError:
    raise
  except (NotImplementedError, AssertionError, FileNotFoundError, KeyError) as e:  # tfds's "not prepared"
    raise UserError(
        f"tensorflow-datasets set {name} (split {split!r}) is not prepared in the array_record "
        f"format under data_dir={data_dir_ or 'the tfds default'}: "
        f"{prepare_hint(name, data_dir_, packages)} ({type(e).__name__}: {_first_line(e)})"
    ) from None
  except ValueError as e:  # a bad config name or split, e.g. "celeb_a/foo" or "train[:x]"
    raise UserError(f"tensorflow-datasets set {name}: bad split {split!r} or name "
                    f"({_first_line(e)}): fix data.name / data.train_split / "
                    "data.test_split") from None
