"""Family defaults: ``defaults()`` declares exactly the ``config.model`` fields and ``config.sample``
controls a family reads (no undeclared read, no unread declaration), ``config_defaults.base(name)``
alone builds a working family, every config of the family agrees with the defaults (no added or
retyped field), and the held-out metrics use the shared names.

Reads are recorded by a view of the config handed to the family; the family's init, every loss,
``eval_metrics`` and ``sample`` are traced with ``jax.eval_shape`` (no compilation), once per
variant that reaches a different branch (e.g. PixelCNN's mixture output, conditional models).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from conftest import ROOT, load_config
from jaxgen import config_defaults, families
from jaxgen.data.spec import DataSpec

DIGITS = DataSpec("digits", "image", (8, 8, 1), levels=17, num_classes=10)
BINARY = DataSpec("digits", "image", (8, 8, 1), levels=2, value_range=(0.0, 1.0), num_classes=10)
DIGITS_DEQUANTIZED = DataSpec("digits", "image", (8, 8, 1), levels=17, dequantized=True, num_classes=10)

#: family -> (its data, the ``config.model`` variants whose union reaches every field it reads).
CASES = {
    "realnvp": (DIGITS_DEQUANTIZED, [{}]),
    "glow": (DIGITS_DEQUANTIZED, [{}]),
    "flow2d": (DataSpec("toy2d/moons", "points", (2,)), [{}]),
    "pixelcnn": (DIGITS, [{}, {"output": "logistic_mixture", "conditional": True}]),
    "pixelrnn": (DIGITS, [{}, {"architecture": "row_lstm", "output": "logistic_mixture", "conditional": True}]),
    "vae": (DIGITS, [{}, {"conditional": True, "architecture": "mlp"}]),
    "vqvae": (DIGITS, [{}]),
    "rbm": (BINARY, [{}, {"visible": "gaussian"}]),
    "dbn": (BINARY, [{}]),
    "wavenet": (DataSpec("audio/tones", "audio", (64,), levels=256, num_classes=4, sample_rate=8000),
                [{}, {"conditional": True}]),
    "transformer": (DataSpec("text/pystdlib", "text", (16,), levels=96, vocab=tuple(chr(32 + i) for i in range(96))),
                    [{}]),
}

#: Held-out metric names shared by every family (``jaxgen.families.base``).
EXACT, BOUND, BPD = "nll_nats", "nll_bound_nats", "bits_per_dim"
#: Families whose likelihood is estimated by the ``ais`` evaluator, not by ``eval_metrics``.
ENERGY = ("rbm", "dbn")


class _Reads:
  """A read-only view of a ConfigDict that records the dotted name of every field read."""

  def __init__(self, node: ml_collections.ConfigDict, reads: set[str], prefix: str = ""):
    self._node, self._reads, self._prefix = node, reads, prefix

  def __getattr__(self, name: str):
    if name.startswith("_"):
      raise AttributeError(name)
    path = self._prefix + name
    if name not in self._node:
      raise AttributeError(f"the family reads config.{path}, which its defaults() does not declare")
    value = self._node[name]
    if isinstance(value, ml_collections.ConfigDict):
      return _Reads(value, self._reads, path + ".")
    self._reads.add(path)
    return value

  __getitem__ = __getattr__

  def get(self, name: str, default=None):
    self._reads.add(self._prefix + name)  # recorded even when absent: an undeclared read
    return self[name] if name in self._node else default


def _batch(spec: DataSpec, n: int = 2) -> dict[str, jax.ShapeDtypeStruct]:
  dtype = jnp.int32 if spec.is_discrete else jnp.float32
  return {"x": jax.ShapeDtypeStruct((n, *spec.shape), dtype), "label": jax.ShapeDtypeStruct((n,), jnp.int32)}


def _trace(family, spec: DataSpec) -> dict:
  """Shapes of init, every loss, eval_metrics and a 3-sample draw (traced, not compiled)."""
  key = jax.random.key(0)
  batch = _batch(spec)
  params, state = jax.eval_shape(family.init, key, batch)
  losses = [jax.eval_shape(g.loss_fn, params, state, batch, key)[0] for g in family.update_groups()]
  metrics = jax.eval_shape(family.eval_metrics, params, state, batch, key)
  samples = jax.eval_shape(lambda p, s, k: family.sample(p, s, k, 3), params, state, key)
  return {"losses": losses, "metrics": metrics, "samples": samples}


@pytest.mark.parametrize("name", sorted(CASES))
def test_defaults_declare_exactly_what_the_family_reads(name):
  spec, variants = CASES[name]
  declared = families.FAMILIES.get(name).defaults()
  reads: set[str] = set()
  for variant in variants:
    config = config_defaults.base(name)
    config.model.update(variant)
    out = _trace(families.build(_Reads(config, reads), spec), spec)
    assert all(loss.shape == () for loss in out["losses"]), out["losses"]
    assert out["samples"].shape == (3, *spec.shape), out["samples"]
    metrics = out["metrics"]
    if name in ENERGY:
      continue
    assert BPD in metrics and (EXACT in metrics) != (BOUND in metrics), sorted(metrics)
    assert all(metrics[k].shape == (2,) for k in (EXACT, BOUND, BPD) if k in metrics), metrics
  model_reads = {r.split(".", 1)[1] for r in reads if r.startswith("model.")} - {"family"}
  sample_reads = {r.split(".", 1)[1] for r in reads if r.startswith("sample.")}
  assert model_reads == set(declared["model"]), "read but not declared: %s; declared but never read: %s" % (
      sorted(model_reads - set(declared["model"])), sorted(set(declared["model"]) - model_reads))
  assert sample_reads == set(declared.get("sample", {})), (sorted(sample_reads), sorted(declared.get("sample", {})))


def _configs_of(family_names) -> list[str]:
  names = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "configs")) if f.endswith(".py") and f != "__init__.py")
  return [n for n in names if load_config(n).model.family in family_names]


def _flat(config: ml_collections.ConfigDict, prefix: str = "") -> dict:
  out = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[prefix + key] = value
  return out


def test_every_config_agrees_with_its_family_defaults(monkeypatch):
  """Each config of these families has exactly the fields of ``config_defaults.base(family)``,
  each of the default's type: a config only changes values, so a typo (``c.model.num_layer = 6``)
  or a field nothing declares (ml_collections accepts both silently) fails here."""
  monkeypatch.syspath_prepend(ROOT)  # variants import their base config as configs.<name>
  checked = set()
  for config_name in _configs_of(CASES):
    config = _flat(load_config(config_name))
    base = _flat(config_defaults.base(config["model.family"]))
    assert set(config) == set(base), (config_name, sorted(set(config) ^ set(base)))
    for key, default in base.items():
      assert default is None or type(config[key]) is type(default), (config_name, key, config[key], default)
    checked.add(config["model.family"])
  assert checked == set(CASES)  # every family here has a config
