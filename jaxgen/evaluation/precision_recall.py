"""``precision_recall``: k-NN precision and recall (Kynkäänniemi et al. 2019, ``manifold``) of the
generated features against the real ones. Settings: ``k`` neighbours (3). Reports ``precision``,
``recall``."""

from __future__ import annotations

from jaxgen.evaluation.base import register
from jaxgen.evaluation.features import FeatureMetric
from jaxgen.evaluation.manifold import manifold_metrics


@register("precision_recall")
class PrecisionRecall(FeatureMetric):

  @classmethod
  def defaults(cls) -> dict:
    return {"every": 0, "k": 3}  # k: neighbours defining each set's manifold

  def min_samples(self, config) -> int:
    return self.settings(config).k + 1

  def run(self, ctx) -> dict[str, float]:
    return manifold_metrics(ctx.real_features.features, ctx.fake_features.features,
                            pr_k=self.settings(ctx.config).k, dc_k=None, block_size=ctx.config.eval.block_size)
