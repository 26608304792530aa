"""An evaluator stage that knows pz-rail-deepz's metrics, for use in ceci pipelines.

RAIL's evaluators find metrics by subclass introspection, so a metric class is only available in
a process that imported it. ceci runs each stage in its own process that imports only the stage's
module: :class:`DeepzEvaluator` (a :class:`rail.evaluation.single_evaluator.SingleEvaluator`)
imports :mod:`rail.deepz.metrics` so that ``point_stats_sigma68`` and ``point_outlier_frac_015``
can be named in ``metrics`` next to RAIL's own (``pit``, ``cdeloss``, ``point_stats_iqr``,
``point_outlier_rate``, ...).
"""

from rail.evaluation.single_evaluator import SingleEvaluator

from rail.deepz import metrics as _metrics  # noqa: F401  (registers the metric classes)

__all__ = ["DeepzEvaluator"]


class DeepzEvaluator(SingleEvaluator):
    """SingleEvaluator with pz-rail-deepz's metrics (``point_stats_sigma68``, ``point_outlier_frac_015``) registered."""

    name = "DeepzEvaluator"
    interactive_function = "deepz_evaluator"
