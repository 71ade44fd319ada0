"""Trains the digits classifier shipped in ``jaxgen/evaluation/weights/digits_classifier.npz``.

    python experiments/train_digits_classifier.py [--steps 3000] [--out PATH]

Deterministic (fixed seed, fixed batch order, CPU): running it again writes the same weights.
Trains on the ``digits`` training split (the first 1500 images, ``jaxgen.data.digits``) with
dropout and random one-pixel shifts of half of the images; prints the accuracy on the 297 test
images (98.0-98.7% across seeds 0-2).
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
import optax

from jaxgen.data import digits
from jaxgen.evaluation import digits_classifier as dc


def _shift(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Translates half of the images (at random) by -1, 0 or +1 pixel per axis, zero fill."""
  n = images.shape[0]
  padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))
  dy, dx = rng.integers(0, 3, size=(2, n))
  keep = rng.random(n) < 0.5
  dy[keep], dx[keep] = 1, 1
  rows = (dy[:, None] + np.arange(8))[:, :, None]
  cols = (dx[:, None] + np.arange(8))[:, None, :]
  return padded[np.arange(n)[:, None, None], rows, cols]


def train(steps: int, batch_size: int = 100, seed: int = 0) -> tuple[dict, float]:
  """Returns ``(params, test accuracy)``."""
  data = digits.load(None)
  x_train = data.train["x"].astype(np.float32) / (dc.DIGITS_LEVELS - 1)
  y_train = data.train["label"]
  model = dc.DigitsClassifier()
  params = jax.jit(model.init)(jax.random.key(seed), x_train[:1])["params"]
  schedule = optax.cosine_decay_schedule(3e-3, steps)
  optimizer = optax.adamw(schedule, weight_decay=1e-3)
  opt_state = optimizer.init(params)

  @jax.jit
  def step(params, opt_state, x, y, dropout_rng):
    def loss_fn(p):
      logits = model.apply({"params": p}, x, train=True, rngs={"dropout": dropout_rng})[1]
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  rng = np.random.default_rng(seed)
  dropout_key = jax.random.key(seed + 1)
  order = np.array([], np.int64)
  for i in range(steps):
    if len(order) < batch_size:
      order = np.concatenate([order, rng.permutation(len(x_train))])
    idx, order = order[:batch_size], order[batch_size:]
    params, opt_state, loss = step(params, opt_state, _shift(x_train[idx], rng), y_train[idx],
                                   jax.random.fold_in(dropout_key, i))
    if i % 500 == 0 or i == steps - 1:
      print(f"step {i:5d}  loss {float(loss):.4f}")
  x_test = data.test["x"].astype(np.float32) / (dc.DIGITS_LEVELS - 1)
  logits = dc.digits_features(x_test, params)[1]
  accuracy = float(np.mean(np.argmax(logits, axis=1) == data.test["label"]))
  return params, accuracy


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=3000)
  parser.add_argument("--out", default=str(dc.WEIGHTS_PATH))
  args = parser.parse_args()
  params, accuracy = train(args.steps)
  dc.save_params(params, args.out)
  print(f"test accuracy {accuracy:.4f} ({args.out})")


if __name__ == "__main__":
  main()
