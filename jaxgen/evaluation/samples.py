"""``samples``: writes ``sample.num`` samples of the EMA params where a user can look at them.

``samples/step_<N>`` + ``.png`` (image grid; 2-D points over the data density), ``.txt`` (text)
or ``_<i>.wav`` (audio), via ``jaxgen.outputs.write_samples`` (local or remote workdirs, through
``etils.epath``); ``--mode=sample`` writes through the same :func:`write`. Samples use
``fold_in(SAMPLE_STREAM, step)``. Reports no numbers.
"""

from __future__ import annotations

from jaxgen import outputs
from jaxgen import workdir as workdir_lib
from jaxgen.errors import UserError
from jaxgen.evaluation.base import Evaluator, register
from jaxgen.evaluation.context import SAMPLE_STREAM

#: Real examples drawn behind 2-D scatter plots.
SCATTER_BACKGROUND = 2000


def write(ctx, name: str, echo: bool = False) -> list[str]:
  """Draws ``sample.num`` samples (every process) and writes them as ``samples/<name>*`` (process 0);
  returns the written paths (none on other processes). ``echo``: also print text samples."""
  samples = ctx.generate(ctx.config.sample.num, ctx.key(SAMPLE_STREAM))
  if not ctx.is_writer:
    return []
  data = ctx.data.held_out(SCATTER_BACKGROUND)["x"] if ctx.spec.modality == "points" else None
  prefix = workdir_lib.path(ctx.exp.workdir) / "samples" / name
  return outputs.write_samples(samples, ctx.spec, prefix, data, echo=echo)


@register("samples")
class Samples(Evaluator):

  @classmethod
  def defaults(cls) -> dict:
    return {"every": 500}

  def check(self, config, spec, family) -> None:
    if family is None:
      raise UserError("evaluator 'samples' draws from a model; it cannot score arrays of samples")
    if spec.modality not in outputs.MODALITIES:
      raise UserError(f"evaluator 'samples' cannot write {spec.modality} data ({spec.name}); "
                      "remove it from config.eval.metrics")

  def run(self, ctx) -> dict[str, float]:
    write(ctx, f"step_{ctx.step}")
    return {}
