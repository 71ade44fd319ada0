"""Config defaults shared by every config in ``configs/``, and the one override parser.

Each ``get_config()`` starts from ``base(family)``: the shared groups below, plus the defaults the
family declares in its own file (``Family.defaults()``), so a config sets only what differs.
``load(path, overrides)`` reads a config file and applies ``a.b=value`` overrides with
``parse_override``: the parser shared by the command line, tests, benchmarks and sweeps;
``split_command_line`` takes the ``--config.a.b=value`` arguments out of a command line (for
``jaxgen.main`` and ``jaxgen.sweep``) and hands the rest to absl.

The five public fields, the same in every config: ``seed``, ``data.name``, ``train.steps``,
``train.batch_size``, ``train.checkpoint_every``. The rest is grouped by concern:
``data`` (what to read and how to preprocess), ``model`` (``model.family`` picks the family, the
rest is the family's own), ``optim.<network>`` (one optax optimizer per network, ``optim.default``
for networks without their own entry), ``train`` (loop, checkpoints, logging, EMA), ``sample``
(sampling controls), ``eval`` (metrics).
"""

from __future__ import annotations

import ast
import difflib
import os
import runpy
from typing import Any, Iterable, Mapping

import ml_collections

from jaxgen.errors import UserError


def optimizer(**overrides) -> ml_collections.ConfigDict:
  """One network's optax optimizer: ``name`` in adam|adamw|sgd|rmsprop, schedule, clipping."""
  c = ml_collections.ConfigDict()
  c.name = "adam"
  c.learning_rate = 1e-3
  c.b1 = 0.9
  c.b2 = 0.999
  c.eps = 1e-8
  c.weight_decay = 0.0  # adamw only
  c.momentum = 0.9  # sgd / rmsprop
  c.schedule = "constant"  # constant | cosine | warmup_cosine | linear
  c.warmup_steps = 0
  c.end_learning_rate = 0.0  # final value of decaying schedules
  c.decay_steps = 0  # horizon of decaying schedules (0 = train.steps of the run that started the workdir)
  c.grad_clip_norm = 0.0  # clip by global norm when > 0
  c.clip_params = 0.0  # clip every parameter to [-c, c] after each update when > 0 (WGAN)
  c.update(overrides)
  return c


def merge(config: ml_collections.ConfigDict, defaults: Mapping[str, Any]) -> None:
  """Recursively sets every field of ``defaults`` (a nested mapping) on ``config``, adding groups."""
  for key, value in defaults.items():
    if isinstance(value, Mapping):
      if key not in config:
        config[key] = ml_collections.ConfigDict()
      merge(config[key], value)
    else:
      config[key] = value


def base(family: str = "") -> ml_collections.ConfigDict:
  """The shared defaults, plus the defaults every registered data source declares (``data.*``) and
  every registered evaluator declares (``eval.<name>.*``); with ``family``, also ``model.family``
  and that family's own defaults (``Family.defaults()``)."""
  from jaxgen import data, evaluation  # the registries; their heavy imports happen on use only

  c = _shared()
  for name in data.SOURCES.names():  # a source's field must not silently change a shared default
    for key, value in data.SOURCES.get(name).defaults.items():
      if key in c.data and not data.source.same_default(value, c.data[key]):
        raise ValueError(f"data source {name!r} declares data.{key}={value!r}, a field shared by every "
                         f"config whose default is {c.data[key]!r}: declare that default, or name its own field")
  merge(c.data, data.default_config())
  merge(c.eval, evaluation.default_config())
  if family:
    from jaxgen import families

    c.model.family = family
    merge(c, families.FAMILIES.get(family).defaults())
  return c


def _shared() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = "digits"  # a registered source (digits, toy2d/..., text/pystdlib, audio/tones), <kind>:<path>
  # (images:, text:, arrays:, audio:) or a tensorflow-datasets name; each source declares its own fields
  c.data.scale = "[-1,1]"  # images: [-1,1] or [0,1]
  c.data.dequantize = False  # images: uniform dequantization
  c.data.binarize = "none"  # images: none | static | dynamic (Bernoulli with the pixel intensity)
  c.data.prefetch = 2  # batches prepared ahead by a background thread
  c.data.seed = -1  # the data's draws and splits (toy sets, test_fraction); -1 = config.seed

  c.model = ml_collections.ConfigDict()
  c.model.family = ""

  c.optim = ml_collections.ConfigDict()
  c.optim.default = optimizer()

  c.train = ml_collections.ConfigDict()
  c.train.steps = 1000
  c.train.batch_size = 64
  c.train.checkpoint_every = 500  # (0 = only at the end)
  c.train.keep_checkpoints = 3
  c.train.init_from = ""  # warm start: a workdir or checkpoints/<step> whose matching arrays initialise a new run
  c.train.log_every = 50  # train metrics to JSONL / TensorBoard (0 = only at the end)
  c.train.ema_decay = 0.999  # 0 disables EMA (the EMA params are then the params)
  c.train.progress_bar = True
  c.train.compute_dtype = "float32"  # float32 | bfloat16: the networks' forward pass (params, optimizer and losses stay float32)
  c.train.grad_accum_steps = 1  # k micro-batches of batch_size / k per step, gradients averaged before one update
  c.train.param_sharding = "replicated"  # replicated | fsdp: params and optimizer state split over the devices

  c.sample = ml_collections.ConfigDict()
  c.sample.num = 64
  c.sample.temperature = 1.0

  c.eval = ml_collections.ConfigDict()  # shared fields and eval.<evaluator>.*: jaxgen/evaluation/
  return c


# --- the one override parser --------------------------------------------------------------------


def _field_type(current: Any) -> str:
  if isinstance(current, bool):
    return "bool"
  if isinstance(current, int):
    return "int"
  if isinstance(current, float):
    return "float"
  if isinstance(current, str):
    return "str"
  if isinstance(current, (tuple, list)):
    return "sequence"
  return "literal"


def parse_value(current: Any, text: str, key: str = "") -> Any:
  """``text`` (a command-line value) converted to the type of the field's ``current`` value.

  bool: true/false/1/0 (any case); int, float: Python literals (``1e-3``, ``-2``); str: as is;
  tuple/list: a Python literal (``(1, 2)``, ``[a, b]`` is not one) or comma-separated items, each
  parsed like the first item of the current value; ``None``-valued fields: a Python literal, else
  the string. Never evaluates code (``ast.literal_eval`` only). Raises ``UserError`` naming ``key``.
  """
  kind = _field_type(current)
  text = text.strip()

  def bad(what: str) -> UserError:
    return UserError(f"--config.{key}={text!r} is not {what}; give e.g. --config.{key}={current!r}")

  if kind == "bool":
    if text.lower() in ("true", "1", "yes"):
      return True
    if text.lower() in ("false", "0", "no"):
      return False
    raise bad("a bool (true or false)")
  if kind in ("int", "float"):
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      raise bad(f"a number ({kind})") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "int" and not isinstance(value, int)):
      raise bad(f"a number ({kind})")
    return float(value) if kind == "float" else value
  if kind == "str":
    return text
  if kind == "sequence":
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = tuple(item.strip() for item in text.strip("()[]").split(",") if item.strip())
    if not isinstance(value, (tuple, list)):
      value = (value,)
    if current:
      try:
        value = tuple(v if isinstance(v, type(current[0])) else parse_value(current[0], str(v)) for v in value)
      except UserError:
        raise bad(f"a sequence of {type(current[0]).__name__}") from None
    return type(current)(value) if isinstance(current, (tuple, list)) else tuple(value)
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _suggestion(node: Any, parts: list[str]) -> str:
  """``" (did you mean 'train.steps'?)"``: the field of ``node`` closest to the mistyped last of
  ``parts``, or ``""``."""
  close = difflib.get_close_matches(parts[-1], list(node), n=1) if isinstance(node, ml_collections.ConfigDict) else []
  return f" (did you mean {'.'.join([*parts[:-1], close[0]])!r}?)" if close else ""


def _node_for(config: ml_collections.ConfigDict, key: str) -> tuple[ml_collections.ConfigDict, str]:
  node, parts = config, key.split(".")
  for i, part in enumerate(parts[:-1]):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      raise UserError(f"unknown config key {key!r}: {'.'.join(parts[:i + 1])!r} is not a config group"
                      f"{_suggestion(node, parts[:i + 1])}; see the config file for the available fields")
    node = node[part]
  if not isinstance(node, ml_collections.ConfigDict) or parts[-1] not in node:
    raise UserError(f"unknown config key {key!r}{_suggestion(node, parts)}; see the config file for the "
                    "available fields")
  return node, parts[-1]


def set_override(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
  """Sets the existing field ``key`` (dotted) to ``value``: a string is parsed by ``parse_value``
  against the field's current type, anything else is assigned as it is (type-checked by
  ml_collections). Unknown keys and bad values raise ``UserError``."""
  node, leaf = _node_for(config, key)
  if isinstance(node[leaf], ml_collections.ConfigDict):
    raise UserError(f"--config.{key} is a group of fields, not one; set one of its fields "
                    f"({', '.join(sorted(node[leaf].keys()))})")
  if isinstance(value, str):
    untyped = node.get_ref(leaf).get_type() is object  # a FieldReference that takes several types
    value = parse_value(None if untyped else node[leaf], value, key)
  try:
    node[leaf] = value
  except (TypeError, ValueError) as e:
    raise UserError(f"--config.{key}={value!r}: {e}") from None


def parse_override(item: str) -> tuple[str, str]:
  """``"a.b=v"`` or ``"--config.a.b=v"`` -> ``("a.b", "v")``."""
  text = item[len("--config."):] if item.startswith("--config.") else item
  if "=" not in text:
    raise UserError(f"override {item!r} has no value; write --config.KEY=VALUE")
  key, value = text.split("=", 1)
  return key.strip(), value


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Mapping[str, Any] | Iterable[str] = ()) -> ml_collections.ConfigDict:
  """Applies ``{"a.b": value}`` or ``["a.b=v", "--config.c=w"]`` to ``config`` in place; returns it."""
  items = overrides.items() if isinstance(overrides, Mapping) else (parse_override(o) for o in overrides)
  for key, value in items:
    set_override(config, key, value)
  return config


def load(path: str, overrides: Mapping[str, Any] | Iterable[str] = ()) -> ml_collections.ConfigDict:
  """``get_config()`` of the config file at ``path`` with ``overrides`` applied.

  Every way a config file can be broken (missing, syntax error, no ``get_config``, raising, not
  returning a ConfigDict) is one ``UserError`` naming the file and the fix.
  """
  if not os.path.isfile(path):
    raise UserError(f"config file {path!r} not found (paths are relative to {os.getcwd()}); "
                    "e.g. --config=configs/gan.py")
  try:
    module = runpy.run_path(path)
  except SyntaxError as e:
    raise UserError(f"config file {path!r} has a syntax error at line {e.lineno}: {e.msg}") from None
  except Exception as e:  # anything the file raises at import: one line, not a traceback
    raise UserError(f"config file {path!r} fails to load: {type(e).__name__}: {' '.join(str(e).split())}") from None
  get_config = module.get("get_config")
  if not callable(get_config):
    raise UserError(f"config file {path!r} defines no get_config(); it must define "
                    "get_config() returning an ml_collections.ConfigDict (see configs/gan.py)")
  try:
    config = get_config()
  except UserError:
    raise
  except Exception as e:
    raise UserError(f"get_config() of {path!r} raised {type(e).__name__}: {' '.join(str(e).split())}") from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise UserError(f"get_config() of {path!r} returned {type(config).__name__}, not an "
                    "ml_collections.ConfigDict; end it with `return c` (see configs/gan.py)")
  return apply_overrides(config, overrides)


def split_command_line(argv: list[str], flag_values) -> tuple[list[str], list[str]]:
  """``(absl's remaining argv, the --config.a.b=value arguments in order)``.

  Everything but the overrides is parsed by ``flag_values`` (absl's ``flags.FLAGS``); a bad flag
  or a stray positional argument is one ``UserError``.
  """
  from absl import flags  # the CLIs' dependency only

  overrides = [a for a in argv[1:] if a.startswith("--config.")]
  try:
    rest = flag_values([a for a in argv if not a.startswith("--config.")])
  except flags.Error as e:
    raise UserError(str(e).splitlines()[0]) from None
  if len(rest) > 1:
    raise UserError(f"unexpected argument {rest[1]!r}; flags are --name=value, overrides --config.KEY=VALUE")
  return rest, overrides
