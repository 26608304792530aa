"""pz-rail-deepz: Deepz photometric redshifts (Eriksen et al. 2020) as RAIL stages.

Stages: :class:`DeepzInformer` and :class:`DeepzEstimator` (also importable from
``rail.estimation.algos.deepz``), :class:`DeepzSimCreator` (``rail.creation.engines.deepz_sims``),
:class:`DeepzEvaluator` (``rail.evaluation.deepz_evaluator``).
Importing this package also registers the ``point_stats_sigma68`` and ``point_outlier_frac_015``
metrics with RAIL's evaluator stages.
"""

from rail.estimation.algos.deepz import *  # noqa: F401,F403
from rail.creation.engines.deepz_sims import *  # noqa: F401,F403
from rail.evaluation.deepz_evaluator import *  # noqa: F401,F403

from .metrics import PointOutlierFraction15, PointSigma68, photoz_scores, sigma68  # noqa: F401

try:
    from ._version import __version__
except ImportError:  # pragma: no cover - source tree without setuptools_scm
    __version__ = "0.0.0"
