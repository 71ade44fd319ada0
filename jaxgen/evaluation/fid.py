"""``fid``: Fréchet distance between Gaussians fitted to real and generated features
(``gaussian.fid_from_features``), in the space of ``eval.features``. Reports ``fid``."""

from __future__ import annotations

from jaxgen.evaluation.base import register
from jaxgen.evaluation.features import FeatureMetric
from jaxgen.evaluation.gaussian import fid_from_features


@register("fid")
class FID(FeatureMetric):

  def run(self, ctx) -> dict[str, float]:
    return {"fid": fid_from_features(ctx.real_features.features, ctx.fake_features.features)}
