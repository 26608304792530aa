"""Training tables -> network inputs: the usable rows, their features, and per-batch augmentation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from . import features as feat
from .augmentation import Augmentation, BatchInputs
from .inputs import (MAX_MAGNITUDE, MIN_MAGNITUDE, NONDETECT_THRESHOLD, STATUS_MISSING, STATUS_NONDETECT, STATUS_OK,
                     FluxTable, read_column, read_flux_table, uses_exposures)

__all__ = ["TrainingData", "prepare_training_data", "augmentation", "batch_inputs"]


@dataclass
class TrainingData:
    """Network inputs of the usable training rows (see :func:`prepare_training_data`).

    ``features`` (N, F) unscaled, ``ratios`` and ``ratio_err`` (N, B), ``redshift`` (N,) or None,
    the counts of dropped rows, and the rows' fluxes (or exposures) for batch augmentation.
    """

    features: np.ndarray
    ratios: np.ndarray
    ratio_err: np.ndarray
    redshift: np.ndarray | None
    n_dropped_ref: int
    n_dropped_z: int
    fluxes: FluxTable | None = None
    #: (3, B) fractions of all rows read that are detected, non-detected and missing in each band
    band_status: np.ndarray | None = None

    @property
    def exposures(self) -> bool:
        return self.fluxes is not None and self.fluxes.exposures


def _no_detection_message(table: Mapping, band: str, opts: Any, source: str, exposures: bool) -> str:
    """Why column ``band`` of ``table`` has no usable detection, and what to do about it."""
    why = "all values are NaN, missing or non-detections"
    if not exposures and opts.photometry == "magnitudes" and band in table:
        values = read_column(table, band)
        finite = np.isfinite(values)
        outside = finite & ((values > MAX_MAGNITUDE) | (values < MIN_MAGNITUDE))
        if outside.any():
            why = (f"{int(outside.sum())} of {values.size} values lie outside the magnitude range "
                   f"[{MIN_MAGNITUDE:g}, {MAX_MAGNITUDE:g}] (median {np.median(values[finite]):.4g}): are they fluxes? "
                   "option 'photometry' is 'magnitudes'")
        elif finite.any() and (values[finite] >= NONDETECT_THRESHOLD).all():
            why = f"every value is a non-detection (>= {NONDETECT_THRESHOLD:g})"
    if band == opts.ref_band:
        todo = "the reference band (option 'ref_band') must be detected: fix the data or choose another 'ref_band'"
    else:
        todo = "fix the data or remove the band from 'bands' / 'err_bands'"
    return f"column '{band}' has no usable detection in {source} ({why}): {todo}"


def prepare_training_data(table: Mapping, opts: Any, need_redshift: bool = True,
                          source: str = "the training table") -> TrainingData:
    """Read, convert and clean a training table; raise a clear error if it cannot be used.

    Rows whose reference band is unusable, or (with ``need_redshift``) whose redshift is not finite
    and >= 0, are dropped. Tables with individual exposures (``flux_{band}_exp{k}``, option
    ``use_exposures``) are read through them: the features are those of the full coadd.
    ``source`` names the table in error messages (e.g. "input 'target'").
    """
    if opts.ref_band not in opts.bands:
        raise ValueError(f"option 'ref_band' ({opts.ref_band!r}) must be one of 'bands' {opts.bands}")
    exposures = uses_exposures(table, opts.bands, opts.use_exposures)
    try:
        fluxes, phot = read_flux_table(table, opts.bands, opts.err_bands, opts.mag_limits, opts.nondetect_val,
                                       opts.nonobserved_val, use_exposures=exposures, photometry=opts.photometry)
    except (KeyError, ValueError) as exc:
        if source == "the training table":
            raise
        raise type(exc)(f"{source}: {exc.args[0] if exc.args else exc}") from None
    for j, band in enumerate(opts.bands):
        if not (phot.status[:, j] == STATUS_OK).any():
            raise ValueError(_no_detection_message(table, band, opts, source, exposures))
    x, ratios, ratio_err, bad_ref = feat.flux_features(phot, opts.bands.index(opts.ref_band))
    keep = ~bad_ref
    z = None
    n_bad_z = 0
    if need_redshift:
        if opts.redshift_col not in table:
            raise KeyError(f"redshift column '{opts.redshift_col}' (option 'redshift_col') not in {source}")
        z = read_column(table, opts.redshift_col)  # text that is not a number: NaN, dropped
        bad_z = ~np.isfinite(z) | (z < 0)
        n_bad_z = int((bad_z & keep).sum())
        keep &= ~bad_z
    if keep.sum() < 10:
        raise ValueError(
            f"only {int(keep.sum())} rows of {source} are usable (reference band '{opts.ref_band}' detected"
            + (f" and finite, non-negative '{opts.redshift_col}'" if need_redshift else "")
            + "): at least 10 are needed"
        )
    return TrainingData(
        features=x[keep],
        ratios=ratios[keep],
        ratio_err=ratio_err[keep],
        redshift=None if z is None else z[keep].astype(np.float32),
        n_dropped_ref=int(bad_ref.sum()),
        n_dropped_z=n_bad_z,
        fluxes=fluxes.subset(keep),
        band_status=np.stack([(phot.status == k).mean(axis=0)
                              for k in (STATUS_OK, STATUS_NONDETECT, STATUS_MISSING)]),
    )


_SENTINEL_SHARE = 0.01  # a band's non-detections or missing values count as used above this fraction of rows


def sentinel_mismatch(spec: TrainingData, target: TrainingData, opts: Any) -> str | None:
    """A warning when the target marks a band's faint values differently from the spec-z table, else None.

    A band the spec-z table has non-detections in (``nondetect_val``) while the target has none
    but missing values instead (or the reverse) usually means the two tables use other conventions
    (e.g. NaN against 99): non-detections are upper limits, missing values carry no information.
    """
    if spec.band_status is None or target.band_status is None:
        return None
    used = lambda frac: frac > _SENTINEL_SHARE  # noqa: E731
    odd = []
    for j, band in enumerate(opts.bands):
        s_nd, s_miss = spec.band_status[1, j], spec.band_status[2, j]
        t_nd, t_miss = target.band_status[1, j], target.band_status[2, j]
        if (used(s_nd) and not used(t_nd) and used(t_miss)) or (used(t_nd) and not used(s_nd) and used(s_miss)):
            odd.append(f"'{band}' (training table {100 * s_nd:.0f}% non-detections, {100 * s_miss:.0f}% missing; "
                       f"target {100 * t_nd:.0f}% / {100 * t_miss:.0f}%)")
    if not odd:
        return None
    return ("warning: the target and the training table mark faint values differently in " + ", ".join(odd)
            + f": non-detections are values equal to option 'nondetect_val' ({opts.nondetect_val!r}), missing "
            f"values NaN or 'nonobserved_val' ({opts.nonobserved_val!r}); if one table writes non-detections "
            "another way, convert it first, or the weights and coverage compare unlike photometry")


def augmentation(opts: Any, flux_noise: float = 0.0) -> Augmentation:
    """The batch augmentation an informer's options ask for (plus ``flux_noise``, for pretraining)."""
    return Augmentation(keep_prob=float(opts.coadd_keep_prob), coadd_mode=opts.coadd_mode,
                        outlier_fraction=float(opts.outlier_fraction),
                        outlier_amplitude=(float(opts.outlier_amplitude[0]), float(opts.outlier_amplitude[1])),
                        flux_noise=float(flux_noise))


def _needs_batch_inputs(data: TrainingData, aug: Augmentation) -> bool:
    """True when features must be rebuilt per batch (randomised coadds, outliers or flux noise)."""
    return (data.exposures and aug.keep_prob < 1.0) or aug.outlier_fraction > 0 or aug.flux_noise > 0


def batch_inputs(data: TrainingData, mean: np.ndarray, std: np.ndarray, ref_index: int, aug: Augmentation,
                 device: torch.device, seed: int) -> BatchInputs | None:
    """Per-batch input builder, or None when the precomputed features can be used as they are."""
    if not _needs_batch_inputs(data, aug):
        return None
    assert data.fluxes is not None
    return BatchInputs(data.fluxes, mean, std, ref_index, aug, device, seed)
