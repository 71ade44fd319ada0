"""Name -> object registries (families, data sets, metrics) that refuse duplicate names."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, TypeVar

from jaxgen.errors import UserError

T = TypeVar("T")


def did_you_mean(name: str, candidates: list[str]) -> str:
  """``" (did you mean 'fid'?)"`` naming the candidate closest to a mistyped ``name``, or ``""``."""
  close = difflib.get_close_matches(name, candidates, n=1)
  return f" (did you mean {close[0]!r}?)" if close else ""


class Registry(Generic[T]):
  """A mapping from names to objects, filled by ``@REGISTRY.register("name")``.

  ``get`` of an unknown name raises a ``UserError`` that names the closest registered name and
  lists them all.
  """

  def __init__(self, what: str):
    self.what = what
    self._items: dict[str, T] = {}

  def register(self, name: str) -> Callable[[T], T]:
    def decorator(obj: T) -> T:
      if name in self._items:
        raise ValueError(f"{self.what} {name!r} is registered twice")
      self._items[name] = obj
      return obj

    return decorator

  def get(self, name: str) -> T:
    if name not in self._items:
      raise UserError(self.unknown(name))
    return self._items[name]

  def unknown(self, name: str) -> str:
    """``"unknown evaluator 'fdi' (did you mean 'fid'?); available: ais, ..."``."""
    return f"unknown {self.what} {name!r}{did_you_mean(name, self.names())}; available: {', '.join(self.names())}"

  def names(self) -> list[str]:
    return sorted(self._items)

  def __contains__(self, name: str) -> bool:
    return name in self._items
