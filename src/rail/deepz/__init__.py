"""pz-rail-deepz: Deepz photometric redshifts (Eriksen et al. 2020) as RAIL stages.

The stages are exported lazily (PEP 562): ``from rail.deepz import DeepzInformer`` imports the
RAIL stage modules, while ``import rail.deepz.simulation`` or ``rail.deepz.inputs`` does not.
Importing :class:`DeepzEvaluator` (or :mod:`rail.deepz.metrics`) registers the
``point_stats_sigma68`` and ``point_outlier_frac_015`` metrics with RAIL's evaluator stages.
:data:`PZ_ALGORITHM` is Deepz's entry for RAIL's algorithm libraries (pz-rail-pipelines, rail_projects).
"""

from __future__ import annotations

import importlib
from typing import Any

try:
    from ._version import __version__
except ImportError:  # pragma: no cover - source tree without setuptools_scm
    __version__ = "0.0.0"

# exported name -> module that defines it
_EXPORTS = {
    "DeepzInformer": "rail.estimation.algos.deepz",
    "DeepzTransferInformer": "rail.estimation.algos.deepz",
    "DeepzTargetInformer": "rail.estimation.algos.deepz",
    "DeepzTargetTransferInformer": "rail.estimation.algos.deepz",
    "DeepzEstimator": "rail.estimation.algos.deepz",
    "DeepzSimCreator": "rail.creation.engines.deepz_sims",
    "DeepzEvaluator": "rail.evaluation.deepz_evaluator",
    "PointSigma68": "rail.deepz.metrics",
    "PointOutlierFraction15": "rail.deepz.metrics",
    "photoz_scores": "rail.deepz.metrics",
    "sigma68": "rail.deepz.metrics",
    # the name a pickled model refers to (stable wherever the model code lives)
    "model_from_archive": "rail.deepz.model_io",
}

#: Deepz's entry for RAIL's algorithm libraries: pz-rail-pipelines' ``PZ_ALGORITHMS`` (``PzPipeline``,
#: ``InformPipeline``, ``EstimatePipeline``, e.g. ``PzPipeline(algorithms=dict(deepz=PZ_ALGORITHM))``)
#: and the ``PZAlgorithms`` section of a rail_projects library. Plain data: importing it loads no stage.
PZ_ALGORITHM: dict[str, str] = dict(
    Inform="DeepzInformer",
    Estimate="DeepzEstimator",
    Module="rail.estimation.algos.deepz",
)

__all__ = sorted([*_EXPORTS, "PZ_ALGORITHM"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rail.deepz' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
