"""``fid``: Fréchet distance between Gaussians fitted to real and generated features
(``gaussian.frechet_distance``), in the space of ``eval.features``. Reports ``fid``.

The reference is the file ``eval.reference_stats`` when given (``reference_stats``: checked against
the feature network and the example shape before training), else the Gaussian of the real examples'
features. The generated side streams its features into a Gaussian accumulator when no other due
metric needs them (``ctx.fake_stats``), so 50k samples cost ``O(F^2)`` memory.
"""

from __future__ import annotations

from jaxgen.evaluation import features, reference_stats
from jaxgen.evaluation.base import register
from jaxgen.evaluation.features import FeatureMetric
from jaxgen.evaluation.gaussian import frechet_distance


@register("fid")
class FID(FeatureMetric):

  only_gaussian_stats = True

  def real_examples_needed(self, config) -> int:
    return 0 if config.eval.reference_stats else super().real_examples_needed(config)

  def check(self, config, spec, family) -> None:
    super().check(config, spec, family)
    if config.eval.reference_stats and features.available(config, spec):
      reference_stats.check(config, spec)

  def run(self, ctx) -> dict[str, float]:
    return {"fid": frechet_distance(*ctx.real_stats, *ctx.fake_stats)}
