"""Rematerialisation (gradient checkpointing) of a Flax module class that keeps its parameter names.

``remat(Block, static_argnums)`` is ``nn.remat``: the activations inside each call are not kept for
the backward pass but recomputed from the call's inputs, trading one extra forward pass of the block
for memory ``O(inputs)`` instead of ``O(every intermediate)``. The values and gradients are the
same as without it. ``nn.remat`` names its class ``Checkpoint<Name>``, which would rename the
auto-named submodules (``ResBlock_0`` -> ``CheckpointResBlock_0``); the class returned here keeps
the original name, so a model's parameter tree (and its checkpoints) is the same with or without remat.
"""

from __future__ import annotations

import flax.linen as nn


def remat(module: type[nn.Module], static_argnums: tuple[int, ...] = ()) -> type[nn.Module]:
  """``nn.remat(module)`` under the name of ``module``. ``static_argnums``: positional arguments of
  ``__call__`` that are Python values (flags such as ``train``), counting ``self`` as 0."""
  wrapped = nn.remat(module, static_argnums=static_argnums)
  wrapped.__name__ = module.__name__
  return wrapped
