"""Data: embedded sets (digits, toy2d/...) and tensorflow-datasets, preprocessed to model space.

Every module in this package is imported here so that its ``@EMBEDDED.register(name)`` runs: a new
embedded data set is one new file. ``build(config, process_index=, process_count=)`` returns the
:class:`Pipeline` the trainer reads batches from.
"""

import importlib
import pkgutil

from jaxgen.data.pipeline import Pipeline, build
from jaxgen.data.spec import EMBEDDED, DataSpec, RawData

for _module in pkgutil.iter_modules(__path__):
  importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["EMBEDDED", "DataSpec", "Pipeline", "RawData", "build"]


def default_config() -> dict:
  """The ``config.data`` defaults declared by the registered data sources (merged by
  ``config_defaults.base``)."""
  return {}
