"""Noise-matched dimmed copies of spectroscopic galaxies: training rows that look like a fainter target.

A spec-z sample is brighter than the target it is applied to. A dimmed copy of a spec-z galaxy
keeps its redshift and colours but takes a reference-band magnitude drawn from the target's
magnitudes fainter than its own, and the noise the target survey gives a galaxy that faint
(:class:`rail.deepz.error_relation.ErrorRelation`):

* fluxes (and their noise) scale by s = 10^(-0.4 (m' - m)); extra Gaussian noise brings each
  band's error up to the target's error at the dimmed flux, sigma_t (the scaled error s sigma is
  already there);
* a band is reported as a non-detection (flux 0, error the band's limit flux) when its S/N falls
  below the target's own detection threshold in that band (the 1st percentile of the S/N of the
  target's detections; no threshold when the target reports no non-detections, e.g. fluxes).

Pure numpy; seeded.
"""

from __future__ import annotations

import numpy as np

from .error_relation import ErrorRelation
from .inputs import AB_ZEROPOINT_NJY, STATUS_MISSING, STATUS_NONDETECT, STATUS_OK, FluxTable, Photometry

__all__ = ["detection_thresholds", "dimmed_copies"]


def detection_thresholds(target: Photometry) -> np.ndarray:
    """Per-band S/N (B,) below which the target reports non-detections (-inf where it reports none)."""
    out = np.full(target.flux.shape[1], -np.inf)
    for b in range(target.flux.shape[1]):
        detected = target.status[:, b] == STATUS_OK
        if (target.status[:, b] == STATUS_NONDETECT).mean() > 1e-3 and detected.any():
            snr = target.flux[detected, b] / target.flux_err[detected, b]
            out[b] = float(np.percentile(snr, 1.0))
    return out


def dimmed_copies(fluxes: FluxTable, ref_index: int, target_ref_mags: np.ndarray, relation: ErrorRelation,
                  thresholds: np.ndarray, limit_flux: np.ndarray, n_copies: int,
                  seed: int) -> tuple[FluxTable, np.ndarray]:
    """``n_copies`` dimmed copies of every galaxy of ``fluxes``; returns their fluxes and parent rows.

    Parameters
    ----------
    fluxes : the spec-z galaxies (coadded fluxes)
    ref_index : index of the reference band
    target_ref_mags : (N_t,) reference-band AB magnitudes of the target's galaxies
    relation : the target's flux error [nJy] as a function of flux
    thresholds : (B,) S/N below which a band becomes a non-detection (:func:`detection_thresholds`)
    limit_flux : (B,) error [nJy] given to non-detections (the limiting magnitudes' fluxes)
    n_copies, seed : copies per galaxy; random seed

    Returns
    -------
    FluxTable of N x n_copies rows (copy k of galaxy i at row k N + i) and the parent index (N x n_copies,).
    """
    phot = fluxes.coadd()
    n = len(phot)
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(13,)))
    tmags = np.sort(np.asarray(target_ref_mags, dtype=np.float64)[np.isfinite(target_ref_mags)])
    ref = phot.flux[:, ref_index]
    mag = AB_ZEROPOINT_NJY - 2.5 * np.log10(np.where(ref > 0, ref, np.nan))
    first_fainter = np.searchsorted(tmags, np.nan_to_num(mag, nan=np.inf), side="right")
    missing = phot.status == STATUS_MISSING
    out_flux, out_err, out_missing, parents = [], [], [], []
    for _ in range(int(n_copies)):
        # a target magnitude fainter than the galaxy's own, uniformly among the target's galaxies
        has_fainter = first_fainter < tmags.size
        pick = first_fainter + np.floor(rng.random(n) * (tmags.size - first_fainter)).astype(np.int64)
        new_mag = np.where(has_fainter, tmags[np.minimum(pick, tmags.size - 1)], mag)
        scale = np.where(np.isfinite(new_mag - mag), 10.0 ** (-0.4 * (new_mag - mag)), 1.0)[:, None]
        true = phot.flux * scale
        sigma = relation.flux_errors(true)
        extra = np.sqrt(np.clip(sigma**2 - (phot.flux_err * scale) ** 2, 0.0, None))
        flux = true + extra * rng.standard_normal(true.shape)
        err = np.maximum(sigma, phot.flux_err * scale)
        nondetect = (flux < thresholds[None, :] * err) & ~missing
        flux = np.where(nondetect, 0.0, flux)
        err = np.where(nondetect, limit_flux[None, :], err)
        out_flux.append(np.where(missing, 0.0, flux))
        out_err.append(np.where(missing, 1.0, err))
        out_missing.append(missing)
        parents.append(np.arange(n))
    table = FluxTable(np.concatenate(out_flux), np.concatenate(out_err), np.concatenate(out_missing), False)
    return table, np.concatenate(parents)
