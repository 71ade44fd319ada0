"""Model families. Every module in this package is imported here so that its
``@FAMILIES.register(name)`` runs: a new family is one new file (plus one config)."""

import importlib
import pkgutil

from jaxgen.families.base import FAMILIES, Family, UpdateGroup, build

for _module in pkgutil.iter_modules(__path__):
  importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["FAMILIES", "Family", "UpdateGroup", "build"]
