"""``density_coverage``: k-NN density and coverage (Naeem et al. 2020, ``manifold``) of the generated
features against the real ones. Settings: ``k`` neighbours (5). Reports ``density``, ``coverage``."""

from __future__ import annotations

from jaxgen.evaluation.base import register
from jaxgen.evaluation.features import FeatureMetric
from jaxgen.evaluation.manifold import manifold_metrics


@register("density_coverage")
class DensityCoverage(FeatureMetric):

  @classmethod
  def defaults(cls) -> dict:
    return {"every": 0, "k": 5}  # k: neighbours defining the real manifold

  def min_samples(self, config) -> int:
    return self.settings(config).k + 1

  def run(self, ctx) -> dict[str, float]:
    return manifold_metrics(ctx.real_features.features, ctx.fake_features.features,
                            pr_k=None, dc_k=self.settings(ctx.config).k, block_size=ctx.config.eval.block_size)
