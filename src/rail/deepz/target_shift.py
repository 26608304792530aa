"""Training toward a target population: covariate-shift weights, coverage and simulation fill.

Deepz is trained on spectroscopic redshifts but applied to a *target* sample (the photometry to
estimate) that usually reaches fainter and higher redshift. With the target's unlabelled
photometry, the loss that matters, the mean loss over the target, can be estimated from two labelled
sources (both ratios from :mod:`rail.deepz.density_ratio`, r = p_target / p_source):

* spec-z galaxy weights ``w_s = min(r_spec, clip)``: where the spec-z sample is dense enough (at
  least 1 / clip of the target density), its galaxies stand for the target;
* the rest of the target, a fraction ``uncovered`` of it, is left to the simulations: a simulated
  galaxy's weight is ``(1 - coverage(x)) r_sim(x)``, with the *coverage*
  ``min(1, clip p_spec(x) / p_target(x))``, the share of the target density at x that the spec-z
  sample represents (1 inside the spec-z sample's reach, toward 0 beyond it).

The estimator reports the coverage of every galaxy (ancil ``coverage``) from the classifiers
stored in the model. A target drawn from the spec-z population itself gives weights of exactly 1,
coverage 1 and no simulation share (the classifiers find nothing to learn; see
:func:`rail.deepz.density_ratio.fit_density_ratio`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .density_ratio import DensityRatio, clipped_ratio, clipped_weights, effective_sample_size, fit_density_ratio

__all__ = ["TargetShift", "fit_target_shift", "coverage_from_log_ratio", "simulation_weights", "COVERAGE_PREFIX"]

COVERAGE_PREFIX = "coverage"  # model arrays of the spec-z vs target classifiers: "coverage/fold{k}/..."


def coverage_from_log_ratio(log_ratio: np.ndarray, clip: float) -> np.ndarray:
    """Coverage ``min(1, clip p_spec / p_target)`` (N,) from ``log p_target / p_spec`` (N,)."""
    return np.minimum(1.0, clip * np.exp(-np.minimum(log_ratio, 700.0)))


@dataclass
class TargetShift:
    """What a target sample changes in training (see the module docstring).

    ``ratio``: the spec-z vs target classifiers; ``clip``; ``spec_weights`` (N_spec,) mean 1;
    ``spec_coverage`` (N_spec,) and ``target_coverage`` (N_target,): out-of-fold coverage of the
    rows; ``uncovered``: the target fraction left to simulations, mean(1 - coverage).
    """

    ratio: DensityRatio
    clip: float
    spec_weights: np.ndarray
    spec_coverage: np.ndarray
    target_coverage: np.ndarray

    @property
    def uncovered(self) -> float:
        return float(np.mean(1.0 - self.target_coverage))

    def coverage(self, x: np.ndarray) -> np.ndarray:
        """Coverage (N,) of rows with scaled features x (N, F)."""
        return coverage_from_log_ratio(self.ratio.log_ratio(x), self.clip)

    def summary(self) -> dict:
        """JSON-able numbers for the model's metadata."""
        w = self.spec_weights
        return dict(clip=self.clip, n_target=int(self.target_coverage.size), uncovered=round(self.uncovered, 4),
                    weight_min=round(float(w.min()), 4), weight_max=round(float(w.max()), 4),
                    weight_n_eff=round(effective_sample_size(w), 1),
                    temper=[[round(float(v), 4) for v in row] for row in self.ratio.temper])


def fit_target_shift(x_spec: np.ndarray, x_target: np.ndarray, clip: float, seed: int) -> TargetShift:
    """Spec-z weights and coverage from scaled features of the spec-z (N_s, F) and target (N_t, F) rows."""
    ratio, log_r_spec, log_r_target = fit_density_ratio(x_spec, x_target, seed)
    return TargetShift(ratio=ratio, clip=float(clip), spec_weights=clipped_weights(log_r_spec, clip),
                       spec_coverage=coverage_from_log_ratio(log_r_spec, clip),
                       target_coverage=coverage_from_log_ratio(log_r_target, clip))


def simulation_weights(shift: TargetShift, x_sims: np.ndarray, x_target: np.ndarray, seed: int) -> np.ndarray:
    """Weights (N_sims,) summing to 1 of simulated rows standing for the target's uncovered part.

    ``(1 - coverage(x)) min(p_target / p_sims, clip^2)`` (the simulations are broad, so a looser
    clip than the spec-z one); all zero when the spec-z sample covers the whole target.
    """
    uncovered = 1.0 - shift.coverage(x_sims)
    if not uncovered.any():
        return np.zeros(len(x_sims))
    _, log_r_sims, _ = fit_density_ratio(x_sims, x_target, seed + 1)
    w = uncovered * clipped_ratio(log_r_sims, shift.clip**2)
    total = w.sum()
    return w / total if total > 0 else np.zeros(len(x_sims))
