"""The target's part of informing: what the unlabelled photometry to estimate changes in training.

Used by :func:`rail.deepz.informing.train_deepz` when given a ``target`` (see the documentation's
"Training toward the target" page): the covariate-shift weights and coverage
(:mod:`rail.deepz.target_shift`), simulations re-noised like the target or filling its uncovered
part, noise-matched dimmed copies of the spec-z galaxies (:mod:`rail.deepz.dimming`) and the rows
and weights of a target-weighted calibration.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch.profiler import record_function

from . import features as feat
from . import transfer
from .density_ratio import clipped_weights, effective_sample_size, fit_density_ratio
from .dimming import detection_thresholds, dimmed_copies
from .error_relation import ErrorRelation
from .inputs import FluxTable, band_key, limit_fluxes, read_photometry
from .target_shift import TargetShift, fit_target_shift, simulation_weights
from .training import AuxiliaryData, TrainConfig
from .training_data import TrainingData

__all__ = ["sims_with_target_noise", "SimulationFill", "with_dimmed_copies", "copy_splits", "fit_shift",
           "calibration_rows"]


def _target_noise(target: Mapping, opts: Any) -> tuple[ErrorRelation, np.ndarray]:
    """The target's error-vs-magnitude relation and per-band detection thresholds (S/N, (B,))."""
    phot = read_photometry(target, opts.bands, opts.err_bands, opts.mag_limits, opts.nondetect_val,
                           opts.nonobserved_val, opts.photometry)
    return ErrorRelation.fit(phot, opts.bands), detection_thresholds(phot)


def sims_with_target_noise(sims: Mapping, target: Mapping, opts: Any, log: Callable[[str], None]) -> Mapping:
    """The simulations with their noise redrawn from the target's error-vs-magnitude relation.

    Needs the simulations' noiseless fluxes (``flux_true_*`` columns, as DeepzSimCreator writes)
    and magnitude columns (``photometry='magnitudes'``); otherwise the simulations are used as given.
    """
    from .simulation.retarget import with_error_relation  # pylint: disable=import-outside-toplevel

    missing = [b for b in opts.bands if f"flux_true_{band_key(b)}" not in sims]
    if missing or opts.photometry != "magnitudes":
        why = (f"no noiseless flux column for {missing}" if missing else "option 'photometry' is 'fluxes'")
        log(f"target: simulations used with their own noise ({why}; option 'target_sim_noise')")
        return sims
    relation, thresholds = _target_noise(target, opts)
    # the target's own detection rule: below its threshold S/N (at least flux > 0) a band is a non-detection
    snr = np.maximum(thresholds, 0.0)
    log("target: simulation noise redrawn from the target's error-vs-magnitude relation, non-detections below "
        f"S/N {np.round(snr, 2).tolist()}")
    return with_error_relation(sims, relation, opts.bands, opts.err_bands, seed=opts.seed + 3000,
                               nondetect_snr=snr, nondetect_val=opts.nondetect_val,
                               nonobserved_val=opts.nonobserved_val)


_FEW_EFFECTIVE = 0.1  # below this fraction of the spec-z rows as effective sample, the weights warn
_FILL_MIN = 0.005  # below this uncovered target fraction the simulations are not mixed in
_FILL_MAX = 0.9  # largest simulation share of a fine-tuning batch
_FILL_CALIBRATION_ROWS = 5000  # simulated rows held out of fine-tuning for the calibration


class SimulationFill:
    """Simulations standing for the target's uncovered part: fine-tuning rows and calibration rows.

    The simulated rows are split (``seed``) into a calibration set (up to ``_FILL_CALIBRATION_ROWS``)
    and a fine-tuning pool, resampled in proportion to their weights
    (:func:`rail.deepz.target_shift.simulation_weights`).
    """

    def __init__(self, shift: TargetShift, x_sims: np.ndarray, x_target: np.ndarray, seed: int) -> None:
        self.fraction = min(shift.uncovered, _FILL_MAX)
        weights = simulation_weights(shift, x_sims, x_target, seed)
        self.coverage = shift.coverage(x_sims)
        rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(11,)))
        n = len(x_sims)
        n_cal = min(_FILL_CALIBRATION_ROWS, n // 10)
        perm = rng.permutation(n)
        self.calibration_rows, pool = np.sort(perm[:n_cal]), perm[n_cal:]
        self.calibration_weights = weights[self.calibration_rows]
        self.calibration_coverage = self.coverage[self.calibration_rows]
        self.pool, self.n_eff = np.zeros(0, dtype=np.int64), 0.0
        if weights[pool].sum() > 0:  # else no simulated galaxy stands for the uncovered target
            p = weights[pool] / weights[pool].sum()
            self.pool = rng.choice(pool, size=len(pool), p=p)  # importance resampling: the loss stays a plain mean
            self.n_eff = effective_sample_size(p)

    def batches(self, sim_data: TrainingData, mean: np.ndarray, std: np.ndarray, opts: Any, device: torch.device,
                cfg: TrainConfig) -> AuxiliaryData:
        return transfer.simulation_batches(sim_data, mean, std, opts, device, cfg, fraction=self.fraction,
                                           indices=self.pool)


def with_dimmed_copies(data: TrainingData, target: Mapping | None, target_data: TrainingData | None, opts: Any,
                        log: Callable[[str], None]) -> tuple[TrainingData, np.ndarray | None]:
    """The spec-z rows plus ``target_dimmed_copies`` noise-matched dimmed copies of each; the copies' parents."""
    if target is None or target_data is None or opts.target_dimmed_copies <= 0:
        return data, None
    if data.exposures:
        raise ValueError("option 'target_dimmed_copies' needs coadded photometry: the training table has individual "
                         "exposures (set use_exposures='no', or target_dimmed_copies=0)")
    assert data.fluxes is not None and data.redshift is not None
    relation, thresholds = _target_noise(target, opts)
    ref = opts.bands.index(opts.ref_band)
    limit_flux = limit_fluxes([opts.mag_limits[b] for b in opts.bands])
    with record_function("deepz.dimmed_copies"):
        target_ref_mags = target_data.features[:, -1]  # the last feature is the reference magnitude
        copies, parents = dimmed_copies(data.fluxes, ref, target_ref_mags, relation, thresholds, limit_flux,
                                        opts.target_dimmed_copies, opts.seed)
        x, ratios, ratio_err, bad = feat.flux_features(copies.coadd(), ref)
    keep = ~bad
    log(f"target: {int(keep.sum())} dimmed copies of the {len(data.redshift)} spec-z galaxies "
        f"(reference magnitudes from the target's, noise from its error-vs-magnitude relation)")
    fluxes = FluxTable(np.concatenate([data.fluxes.flux, copies.flux[keep]]),
                       np.concatenate([data.fluxes.flux_err, copies.flux_err[keep]]),
                       np.concatenate([data.fluxes.missing, copies.missing[keep]]), False)
    both = TrainingData(features=np.concatenate([data.features, x[keep]]),
                        ratios=np.concatenate([data.ratios, ratios[keep]]),
                        ratio_err=np.concatenate([data.ratio_err, ratio_err[keep]]),
                        redshift=np.concatenate([data.redshift, data.redshift[parents[keep]]]),
                        n_dropped_ref=data.n_dropped_ref, n_dropped_z=data.n_dropped_z, fluxes=fluxes)
    return both, parents[keep]


def copy_splits(splits: list, parents: np.ndarray | None, n_real: int) -> list:
    """Each member's splits of the spec-z rows, with every copy on its parent's side (no leak across folds)."""
    if parents is None:
        return splits
    copy_rows = n_real + np.arange(parents.size)
    out = []
    for train, val in splits:
        in_train = np.isin(parents, train)
        out.append((np.concatenate([train, copy_rows[in_train]]), np.concatenate([val, copy_rows[~in_train]])))
    return out


def fit_shift(data: TrainingData, n_real: int, sim_data: TrainingData | None, target_data: TrainingData | None,
              mean: np.ndarray, std: np.ndarray, fine_tuning: bool, opts: Any,
              log: Callable[[str], None]) -> tuple[TargetShift | None, SimulationFill | None]:
    """Covariate-shift weights and coverage toward the target; the simulation fill when it applies.

    The coverage compares the first ``n_real`` rows of ``data`` (the real spec-z galaxies) with the
    target. Rows after them (dimmed copies) get weights from a second classifier, all rows against
    the target, so the copies count where they resemble it; their coverage is the classifier's.
    """
    if target_data is None:
        return None, None
    x_target = (target_data.features - mean) / std
    x = (data.features - mean) / std
    with record_function("deepz.target_shift"):
        shift = fit_target_shift(x[:n_real], x_target, opts.weight_clip, opts.seed)
        if len(x) > n_real:  # dimmed copies
            _, log_r, _ = fit_density_ratio(x, x_target, opts.seed + 2)
            shift = replace(shift, spec_weights=clipped_weights(log_r, opts.weight_clip),
                            spec_coverage=np.concatenate([shift.spec_coverage, shift.coverage(x[n_real:])]))
    w = shift.spec_weights
    n_eff = effective_sample_size(w)
    log(f"target: {x_target.shape[0]} galaxies; spec-z weights {w.min():.2f}-{w.max():.2f} "
        f"(effective sample {n_eff:.0f} of {w.size}); "
        f"{100 * shift.uncovered:.1f}% of the target beyond the spec-z sample's coverage")
    if n_eff < _FEW_EFFECTIVE * w.size:
        log(f"warning: the target's photometry hardly overlaps the training table's: the covariate-shift weights "
            f"rest on an effective {n_eff:.0f} of {w.size} spec-z galaxies. Check that both tables use the same "
            "columns, magnitude system and non-detection values; if the difference is real, "
            "target_weights=False trains on every galaxy")
    fill = None
    if opts.target_fill and sim_data is not None and fine_tuning and shift.uncovered > _FILL_MIN:
        with record_function("deepz.target_shift"):
            fill = SimulationFill(shift, (sim_data.features - mean) / std, x_target, opts.seed)
        if fill.pool.size == 0:
            log("target: no simulated galaxy lies in the target's uncovered part: no simulation fill")
            fill = None
        else:
            log(f"target: simulations stand for the uncovered {100 * fill.fraction:.1f}%: as much of every "
                f"fine-tuning batch (effective {fill.n_eff:.0f} simulated galaxies) and held-out rows in the "
                "calibration")
    return shift, fill


def calibration_rows(row_weights: np.ndarray | None, shift: TargetShift | None, fill: SimulationFill | None,
                     sim_data: TrainingData | None, mean: np.ndarray, std: np.ndarray, device: torch.device):
    """Weights and coverage of the spec-z rows, and the held-out simulated rows, of a target-weighted calibration."""
    if shift is None:
        return row_weights, None, None
    spec_cov = shift.spec_coverage
    if fill is None:
        return row_weights, spec_cov, None
    assert sim_data is not None and sim_data.redshift is not None
    spec = np.ones(len(spec_cov)) if row_weights is None else row_weights
    rows = fill.calibration_rows
    x_cal = torch.as_tensor((sim_data.features[rows] - mean) / std, device=device)
    # spec-z rows stand for the covered share of the target, the simulated rows for the rest
    spec_w = (1.0 - fill.fraction) * spec / spec.sum()
    sim_w = fill.fraction * fill.calibration_weights / max(fill.calibration_weights.sum(), 1e-300)
    return spec_w, spec_cov, (x_cal, sim_data.redshift[rows], sim_w, fill.calibration_coverage)
