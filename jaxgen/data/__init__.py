"""Data: registered data sources, preprocessed to model space by one deterministic pipeline.

Every module in this package is imported here so that its ``@source.register(name)`` runs: a new
data source is one new file (:mod:`jaxgen.data.source` describes the registry). Importing is cheap:
tensorflow-datasets, Pillow and scipy are imported by the source that reads with them, when used.
``build(config, process_index=, process_count=)`` returns the :class:`Pipeline` the trainer reads
batches from.
"""

import importlib
import pkgutil

from jaxgen.data import source
from jaxgen.data.pipeline import Pipeline, build
from jaxgen.data.source import SOURCES, ArraySource, Splits, register
from jaxgen.data.spec import DataSpec, RawData

for _module in pkgutil.iter_modules(__path__):
  importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["SOURCES", "ArraySource", "DataSpec", "Pipeline", "RawData", "Splits", "build",
           "default_config", "register"]


def default_config() -> dict:
  """The ``config.data`` defaults declared by the registered data sources (merged by
  ``config_defaults.base``)."""
  return source.default_config()
