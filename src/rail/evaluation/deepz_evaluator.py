"""An evaluator stage that knows pz-rail-deepz's metrics, for use in ceci pipelines.

RAIL's evaluators find metrics by subclass introspection, so a metric class is only available in
a process that imported it. ceci runs each stage in its own process that imports only the stage's
module: :class:`DeepzEvaluator` (a :class:`rail.evaluation.single_evaluator.SingleEvaluator`)
imports :mod:`rail.deepz.metrics` so that ``point_stats_sigma68`` and ``point_outlier_frac_015``
can be named in ``metrics`` next to RAIL's own (``pit``, ``cdeloss``, ``point_stats_iqr``,
``point_outlier_rate``, ...).

Unlike RAIL's evaluators, unknown option names and unknown metric names are errors (with the
closest valid names), raised before any work starts.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

from rail.core.data import QPOrTableHandle
from rail.evaluation.single_evaluator import SingleEvaluator

from rail.deepz import metrics as _metrics  # noqa: F401  (registers the metric classes)
from rail.deepz.schema import OptionError, closest
from rail.deepz.stage_options import CheckedOptions

__all__ = ["DeepzEvaluator"]


def _quiet() -> contextlib.AbstractContextManager:
    """Swallow stdout: ``qp.is_qp_file`` prints "This is not a qp file because 'meta'" for every table
    file, and RAIL's QPOrTableHandle asks it up to five times per run of a table truth input."""
    return contextlib.redirect_stdout(io.StringIO())


class QuietQPOrTableHandle(QPOrTableHandle):
    """RAIL's QPOrTableHandle (a qp file or a table): RAIL's own methods, run without qp's message."""

    def is_qp(self) -> bool:
        with _quiet():
            return super().is_qp()

    @classmethod
    def _read(cls, path: str, **kwargs: Any) -> Any:
        with _quiet():
            return super()._read(path, **kwargs)

    @classmethod
    def _iterator(cls, path: str, **kwargs: Any) -> Any:
        with _quiet():  # the file's kind is decided here, before the iterator is returned
            return super()._iterator(path, **kwargs)


class DeepzEvaluator(CheckedOptions, SingleEvaluator):
    """SingleEvaluator with pz-rail-deepz's metrics (``point_stats_sigma68``, ``point_outlier_frac_015``) registered."""

    name = "DeepzEvaluator"
    interactive_function = "deepz_evaluator"
    # same handles as SingleEvaluator's, without qp's "This is not a qp file" message for table inputs
    inputs = [("input", QuietQPOrTableHandle), ("truth", QuietQPOrTableHandle)]

    @classmethod
    def accepted_keys(cls) -> set[str]:
        # read by RAIL's Evaluator._build_config_dict although not a declared option
        return super().accepted_keys() | {"metric_integration_limits"}

    def _check_option_values(self) -> None:
        known = sorted(self._metric_dict)
        for option in ("metrics", "exclude_metrics"):
            for metric in self.config[option]:
                if metric != "all" and metric not in self._metric_dict:
                    near = closest(str(metric), known)
                    hint = f" (did you mean {' or '.join(repr(m) for m in near)}?)" if near else ""
                    raise OptionError(f"option {option!r}: unknown metric {metric!r}{hint}; available metrics: {known}")

    def run(self) -> None:
        self.check_options()
        super().run()
