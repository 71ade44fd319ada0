"""Sweep points: declared, validated against the config, and named.

A *point* is a dict of config overrides ``{"model.loss": "hinge", "seed": 1}``, applied after the
sweep's common ``--config.k=v`` overrides. Points come from a list (``get_sweep()`` in the config or
in a ``--sweep`` file) and/or from *axes* ``key=v1,v2,...`` whose Cartesian product is taken; with
both, every listed point is combined with every grid point.

Values go through the one override parser (``config_defaults``): every value is turned into the
text a ``--config.key=text`` flag carries (``to_text``), and before anything runs each point's
whole config is built with ``config_defaults.load`` and checked by ``jaxgen.validate`` (what
``jaxgen.main`` does first), so an unknown key or a bad value stops the sweep naming the key and the
point, and each point's process parses exactly the text that was checked. Errors that need the data
or the devices (an unknown data set) happen when the point runs: it fails, the others go on.

Names (``names``): ``<key>-<value>`` pairs joined by ``_`` in the point's key order, e.g.
``{"model.loss": "hinge", "seed": 1}`` -> ``loss-hinge_seed-1``. A key is shortened to its shortest
dotted suffix that no other key of the sweep ends with (``optim.gen.learning_rate`` and
``optim.disc.learning_rate`` -> ``gen.learning_rate``, ``disc.learning_rate``); values are written
canonically (``2e-4`` -> ``0.0002``, ``(64, 64)`` -> ``64x64``) with anything but letters, digits
and ``._+-`` replaced by ``-``. A name longer than ``MAX_NAME`` characters is cut and ends in a
6-hex-digit hash of the point's values; names that would collide (ignoring case) all get that hash.
A name depends only on the point's values, the sweep's set of keys and (for the hash) a collision,
never on the order of the points.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import re
import runpy
from typing import Any, Iterable, Mapping

import numpy as np

from jaxgen import config_defaults
from jaxgen.errors import UserError
from jaxgen.validate import validate as validate_config

MAX_NAME = 64


@dataclasses.dataclass(frozen=True)
class Point:
  """One validated point: ``overrides`` as ``--config.key=text`` texts (the point's own, not the
  sweep's common ones), ``values`` the typed values they give in the config (JSON types), ``steps``
  its ``train.steps``."""

  name: str
  overrides: dict[str, str]
  values: dict[str, Any]
  steps: int


def _unquoted(item: str) -> str:
  """``'a,b'`` or ``"a,b"`` -> ``a,b`` (the quotes a shell would have removed); anything else as is."""
  return item[1:-1] if len(item) >= 2 and item[0] == item[-1] and item[0] in "'\"" else item


def split_values(text: str) -> list[str]:
  """``"a,b,(1, 2),'c,d'"`` -> ``["a", "b", "(1, 2)", "c,d"]``: commas inside brackets or quotes do
  not split, and quotes around a whole value are removed."""
  items, depth, quote, start = [], 0, "", 0
  for i, ch in enumerate(text):
    if quote:
      quote = "" if ch == quote else quote
    elif ch in "'\"":
      quote = ch
    elif ch in "([{":
      depth += 1
    elif ch in ")]}":
      depth -= 1
    elif ch == "," and depth == 0:
      items.append(text[start:i])
      start = i + 1
  items.append(text[start:])
  return [_unquoted(item.strip()) for item in items]


def parse_axis(item: str) -> tuple[str, list[str]]:
  """``"model.loss=hinge,wasserstein"`` -> ``("model.loss", ["hinge", "wasserstein"])``."""
  key, sep, values = item.partition("=")
  if not sep or not key.strip() or not values.strip():
    raise UserError(f"--axis={item!r} is not KEY=V1,V2,...; e.g. --axis=model.loss=hinge,wasserstein")
  return key.strip(), split_values(values)


def grid(axes: Iterable[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
  """The Cartesian product of the axes, the last axis varying fastest; ``[{}]`` for no axes."""
  axes = list(axes)
  keys = [key for key, _ in axes]
  repeated = sorted({k for k in keys if keys.count(k) > 1})
  if repeated:
    raise UserError(f"--axis {repeated[0]!r} is given twice; put all its values in one --axis")
  return [dict(zip(keys, combo)) for combo in itertools.product(*(values for _, values in axes))]


def declared(path: str) -> list[dict[str, Any]] | None:
  """``get_sweep()`` of the Python file at ``path`` (a config or sweep file), or ``None`` if it
  defines none. It must return a list of ``{dotted key: value}`` dicts."""
  if not os.path.isfile(path):
    raise UserError(f"sweep file {path!r} not found (paths are relative to {os.getcwd()})")
  try:
    get_sweep = runpy.run_path(path).get("get_sweep")
  except Exception as e:  # a broken file: config_defaults.load reports the config's own errors
    raise UserError(f"{path!r} fails to load: {type(e).__name__}: {' '.join(str(e).split())}") from None
  if get_sweep is None:
    return None
  try:
    points = get_sweep()
  except Exception as e:
    raise UserError(f"get_sweep() of {path!r} raised {type(e).__name__}: {' '.join(str(e).split())}") from None
  if (not isinstance(points, (list, tuple)) or not points
      or not all(isinstance(p, Mapping) and all(isinstance(k, str) for k in p) for p in points)):
    raise UserError(f"get_sweep() of {path!r} must return a non-empty list of dicts "
                    "{'dotted.key': value}, e.g. [{'model.loss': 'hinge', 'seed': 0}]")
  return [dict(p) for p in points]


def combine(listed: list[dict[str, Any]], axes: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Every listed point with every grid point (a key may come from one of them only)."""
  out = []
  for point in listed:
    for extra in axes:
      both = sorted(set(point) & set(extra))
      if both:
        raise UserError(f"{both[0]!r} is set both by get_sweep() and by --axis; set it in one place")
      out.append({**point, **extra})
  return out


def to_text(value: Any) -> str:
  """A Python value as the text of a ``--config.key=text`` flag that ``parse_value`` turns back
  into it (bools as true/false, strings as they are, everything else as its Python literal;
  numpy scalars and arrays, e.g. from ``np.logspace``, as the Python values they hold)."""
  value = _python(value)
  if isinstance(value, tuple):
    return repr(value)
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, str):
    return value
  return repr(value)


def _python(value: Any) -> Any:
  """``value`` with numpy scalars and arrays as Python values, and lists as tuples, at any depth."""
  if isinstance(value, (np.generic, np.ndarray)):
    value = value.tolist()
  return tuple(_python(v) for v in value) if isinstance(value, (list, tuple)) else value


def _jsonable(value: Any) -> Any:
  if isinstance(value, (tuple, list)):
    return [_jsonable(v) for v in value]
  return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def _canonical(config: Any, texts: Mapping[str, str]) -> dict[str, str]:
  """``texts`` with every bool, number or tuple rewritten as ``to_text`` writes the value it gave in
  ``config`` (``False`` -> ``false``, ``2e-4`` -> ``0.0002``, ``(16, )`` -> ``(16,)``), so that two
  spellings of one value are one override when a rerun compares them; other texts as given."""
  return {key: to_text(_jsonable(config[key])) if isinstance(config[key], (bool, int, float, tuple, list))
          else text for key, text in texts.items()}


def validate(config_path: str, common: Mapping[str, str],
             raw: list[dict[str, Any]]) -> tuple[dict[str, str], list[Point]]:
  """``(common, points)``: the common overrides and the named ``Point``s of ``raw``, their texts
  canonical (``_canonical``), after building each point's config (common overrides, then the
  point's); any error names the point and the key. Equal points are refused."""
  try:
    base = config_defaults.load(config_path, common)
    validate_config(base)
  except UserError as e:
    raise UserError(f"sweep common overrides: {e}") from None
  checked, seen = [], {}
  for index, point in enumerate(raw):
    texts = {key: to_text(value) for key, value in point.items()}
    try:
      config = config_defaults.load(config_path, {**common, **texts})
      validate_config(config)
    except UserError as e:
      raise UserError(f"sweep point {index} {texts}: {e}") from None
    values = {key: _jsonable(config[key]) for key in texts}
    earlier = seen.setdefault(json.dumps(values, sort_keys=True), index)
    if earlier != index:
      raise UserError(f"sweep points {earlier} and {index} are the same ({texts}); remove one")
    checked.append((values, _canonical(config, texts), int(config.train.steps)))
  return _canonical(base, common), [Point(name, texts, values, steps) for name, (values, texts, steps)
                                    in zip(names([v for v, _, _ in checked]), checked)]


def _short_keys(keys: list[str]) -> dict[str, str]:
  out = {}
  for key in keys:
    parts = key.split(".")
    for n in range(1, len(parts) + 1):
      suffix = ".".join(parts[-n:])
      if not any(other != key and (other == suffix or other.endswith("." + suffix)) for other in keys):
        break
    out[key] = suffix
  return out


def _value_text(value: Any) -> str:
  if isinstance(value, list):
    return "x".join(_value_text(v) for v in value)
  text = repr(value) if isinstance(value, float) else str(value)
  return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-._") or "empty"


def _digest(values: Mapping[str, Any]) -> str:
  return hashlib.sha1(json.dumps(values, sort_keys=True).encode()).hexdigest()[:6]


def names(points: list[Mapping[str, Any]]) -> list[str]:
  """Readable, stable, distinct, filesystem-safe names of points given as typed values (module
  docstring); ``base`` for a point without overrides."""
  keys = list(dict.fromkeys(k for p in points for k in p))
  short = _short_keys(keys)
  plain = ["_".join(f"{short[k]}-{_value_text(v)}" for k, v in p.items()) or "base" for p in points]
  lower = [n.lower() for n in plain]
  return [n[:MAX_NAME - 7].rstrip("-_.") + "_" + _digest(p) if len(n) > MAX_NAME or lower.count(n.lower()) > 1
          else n for n, p in zip(plain, points)]
