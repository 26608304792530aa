"""Photometry -> network inputs.

Magnitudes and magnitude errors become fluxes, fluxes are normalised by the reference band's flux
(the Deepz input: flux ratios), and the ratios are turned into well-scaled network features.

Rules for bad values (per galaxy and band), applied before anything reaches a network:

=====================================  ==========================================================
magnitude value                        treatment
=====================================  ==========================================================
finite, below ``NONDETECT_THRESHOLD``  detection: flux = 10^(-0.4 (m - 31.4)) nJy,
                                       flux error = flux * ln(10)/2.5 * mag_err
``nondetect_val`` (99), +inf, >= 90    non-detection: flux = 0, flux error = the flux of the
                                       band's ``mag_limits`` entry (a 1-sigma upper limit)
NaN, -inf, ``nonobserved_val`` (-99)   missing: flux = 0, flagged missing; the band carries no
                                       information (zero feature, missing indicator set)
=====================================  ==========================================================

Invalid values become missing (and set ``invalid``): magnitudes above ``MAX_MAGNITUDE`` (e.g. 1e30)
or below ``MIN_MAGNITUDE`` (other than ``nonobserved_val``), and entries of text/object columns
that are not numbers. An error that is NaN, infinite, negative or zero for a detection is replaced
by the error a galaxy at the band's limit would have (the flux of ``mag_limits``) and sets
``bad_err``; it is never propagated. Sentinel values are matched to float32 precision, so float32
and integer columns follow the same rules. A text column with no number at all, a boolean,
complex or date column, a column that appears twice, or a missing column is an error (the table
is misconfigured), raised before any row is processed.

The reference band must be detected with a positive flux: rows where it is not cannot be
normalised and are returned in ``bad_ref`` (the Informer drops them, the Estimator gives them the
training-set prior and sets a flag bit; see :mod:`rail.deepz.flags`).

Features, shape (N, 2 B): for every band b (the reference band included)

* ``asinh(r_b / s)`` with r_b = f_b / f_ref and softening s = ``RATIO_SOFTENING`` (log-like
  for detections, linear through zero and negative fluxes, 0 for missing bands); and
* the log relative error ``log10(sigma_b / f_ref)`` (floored at ``LOG_ERR_FLOOR``), set to
  ``MISSING_LOG_ERR`` for missing bands;

plus the reference-band magnitude (the brightness information that ratios lose). The feature
scaler (mean and std over the training set) is stored in the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

__all__ = [
    "AB_ZEROPOINT_NJY",
    "NONDETECT_THRESHOLD",
    "Photometry",
    "read_photometry",
    "read_column",
    "magnitudes_to_fluxes",
    "flux_features",
    "n_features",
    "fit_scaler",
    "flux_features_torch",
]

AB_ZEROPOINT_NJY = 31.4  # m_AB = -2.5 log10(f / nJy) + 31.4
NONDETECT_THRESHOLD = 90.0  # magnitudes at or above this are non-detections
MAX_MAGNITUDE = 1000.0  # above: not a magnitude (e.g. 1e30 fill values), treated as missing
MIN_MAGNITUDE = -10.0  # below (other than nonobserved_val): not a galaxy magnitude, treated as missing
RATIO_SOFTENING = 0.05  # asinh softening of flux ratios (~ S/N 20 on a ratio of 1)
MISSING_LOG_ERR = 3.0  # log10 relative error given to missing bands (1000 x the reference flux)
LOG_ERR_FLOOR = -4.0  # log10 relative error floor
STATUS_OK, STATUS_NONDETECT, STATUS_MISSING = 0, 1, 2


@dataclass
class Photometry:
    """Fluxes of N galaxies in B bands.

    Attributes
    ----------
    flux, flux_err : (N, B) float64 arrays in nJy (0 and the limit error for non-detections)
    status : (N, B) int8 array: 0 detected, 1 non-detection, 2 missing
    invalid : (N, B) bool or None: value not a usable number (absurd or text), made missing
    bad_err : (N, B) bool or None: detection whose error was unusable, replaced by the limit error
    """

    flux: np.ndarray
    flux_err: np.ndarray
    status: np.ndarray
    invalid: np.ndarray | None = None
    bad_err: np.ndarray | None = None

    def __len__(self) -> int:
        return self.flux.shape[0]


def _missing_column_error(data: Mapping, col: str) -> KeyError:
    import difflib

    names = sorted(map(str, data.keys()))
    near = difflib.get_close_matches(col, names, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(n) for n in near)}? " if near else ""
    return KeyError(f"column '{col}' not found in the input table; {hint}available columns: {', '.join(names)}")


def _text_to_float(values: np.ndarray, col: str) -> tuple[np.ndarray, np.ndarray]:
    """Element-wise float conversion of a text/object column.

    None becomes NaN (missing); entries that are not numbers become NaN and are marked in the
    returned mask (invalid). A column with entries but no number at all is an error.
    """
    flat = values.ravel()
    out = np.full(flat.shape, np.nan)
    failed = np.zeros(flat.shape, dtype=bool)
    for i, v in enumerate(flat):
        if v is None:
            continue
        try:
            out[i] = float(v.decode() if isinstance(v, bytes) else v)
        except (TypeError, ValueError):
            failed[i] = True
    if failed.any() and failed.sum() == sum(v is not None for v in flat):
        raise TypeError(f"column '{col}' must be numeric, got dtype {values.dtype} with no number in it")
    return out, failed


def _as_float_column(data: Mapping, col: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A column as float64 (N,), and a mask of entries that were not numbers (or None)."""
    try:
        raw = data[col]
    except KeyError as exc:
        raise _missing_column_error(data, col) from exc
    values = np.asarray(raw)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim > 1:
        raise ValueError(f"column '{col}' appears {values.shape[1]} times in the input table (duplicated name)")
    kind = values.dtype.kind
    if kind in "fiu":
        return values.astype(np.float64).ravel(), None
    if kind in "USO":
        out, bad = _text_to_float(values, col)
        return out, bad if bad.any() else None
    raise TypeError(f"column '{col}' must be numeric, got dtype {values.dtype}")


def read_column(data: Mapping, col: str) -> np.ndarray:
    """A numeric column as float64 (N,) with the rules of the magnitude columns (text: NaN where not a number)."""
    return _as_float_column(data, col)[0]


def _is_value(x: np.ndarray, value: float) -> np.ndarray:
    """x == value to float32 precision (float32 and float64 columns match the same sentinel)."""
    return np.abs(x - value) <= 1e-6 * max(1.0, abs(value))


def magnitudes_to_fluxes(
    mags: np.ndarray,
    mag_errs: np.ndarray,
    limits: np.ndarray,
    nondetect_val: float = 99.0,
    nonobserved_val: float = -99.0,
) -> Photometry:
    """Convert AB magnitudes (N, B) and errors (N, B) to fluxes in nJy, applying the bad-value rules.

    ``limits`` (B,) are the 1-sigma limiting magnitudes used as the error of non-detections.
    """
    mags = np.asarray(mags, dtype=np.float64)
    errs = np.asarray(mag_errs, dtype=np.float64)
    limit_flux = 10.0 ** (-0.4 * (np.asarray(limits, dtype=np.float64) - AB_ZEROPOINT_NJY))
    limit_flux = np.broadcast_to(limit_flux, mags.shape)

    with np.errstate(invalid="ignore"):
        unobserved = _is_value(mags, nonobserved_val)
        nondetect = _is_value(mags, nondetect_val) | (mags == np.inf)
        nondetect |= (mags >= NONDETECT_THRESHOLD) & (mags <= MAX_MAGNITUDE)
        invalid = np.isfinite(mags) & ((mags > MAX_MAGNITUDE) | (mags < MIN_MAGNITUDE)) & ~nondetect & ~unobserved
    missing = (np.isnan(mags) | (mags == -np.inf) | unobserved | invalid) & ~nondetect
    detected = ~(missing | nondetect)

    status = np.full(mags.shape, STATUS_OK, dtype=np.int8)
    status[nondetect] = STATUS_NONDETECT
    status[missing] = STATUS_MISSING

    with np.errstate(over="ignore", invalid="ignore"):
        flux = np.where(detected, 10.0 ** (-0.4 * (np.where(detected, mags, 0.0) - AB_ZEROPOINT_NJY)), 0.0)
        err = np.where(detected, flux * (np.log(10.0) / 2.5) * errs, limit_flux)
        bad_err = detected & (~np.isfinite(err) | ~(err > 0))
    err = np.where(bad_err | missing, limit_flux, err)
    return Photometry(flux=flux, flux_err=err, status=status, invalid=invalid, bad_err=bad_err)


def read_photometry(
    data: Mapping,
    bands: Sequence[str],
    err_bands: Sequence[str],
    mag_limits: Mapping[str, float],
    nondetect_val: float = 99.0,
    nonobserved_val: float = -99.0,
) -> Photometry:
    """Read magnitude columns ``bands`` and error columns ``err_bands`` of a table into fluxes.

    Raises ``KeyError`` naming a missing column, ``ValueError`` for an empty table, mismatched
    band lists, a band without a ``mag_limits`` entry, or a band with no usable value at all.
    """
    from .options import check_band_lists  # pylint: disable=import-outside-toplevel

    check_band_lists(bands, err_bands)
    columns = getattr(data, "columns", None)  # a DataFrame may hold a column name twice
    if columns is not None:
        names = [str(c) for c in columns]
        dup = sorted({c for c in list(bands) + list(err_bands) if names.count(c) > 1})
        if dup:
            raise ValueError(f"column(s) {dup} appear more than once in the input table (duplicated names)")
    mag_cols = [_as_float_column(data, b) for b in bands]
    err_cols = [_as_float_column(data, e) for e in err_bands]
    lengths = {len(c) for c, _ in mag_cols + err_cols}
    if len(lengths) > 1:
        raise ValueError(f"the band columns have different lengths {sorted(lengths)}")
    missing_limits = [b for b in bands if b not in mag_limits]
    if missing_limits:
        raise ValueError(f"option 'mag_limits' has no entry for band(s) {missing_limits}")
    mags = np.stack([c for c, _ in mag_cols], axis=1)
    errs = np.stack([c for c, _ in err_cols], axis=1)
    if mags.shape[0] == 0:
        raise ValueError("the input table is empty (0 rows)")
    limits = np.array([float(mag_limits[b]) for b in bands])
    phot = magnitudes_to_fluxes(mags, errs, limits, nondetect_val, nonobserved_val)
    text_bad = [bad for _, bad in mag_cols]
    if any(b is not None for b in text_bad):  # text that is not a number: missing and invalid
        assert phot.invalid is not None
        phot.invalid |= np.stack([np.zeros(len(mags), bool) if b is None else b for b in text_bad], axis=1)
    return phot


def n_features(n_bands: int) -> int:
    """Number of network features for ``n_bands`` bands."""
    return 2 * n_bands + 1


def flux_features(phot: Photometry, ref_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Network features from fluxes.

    Returns
    -------
    features : (N, 2B+1) float32, unscaled (see the module docstring)
    ratios : (N, B) float32, flux / reference flux (0 where missing): the autoencoder target
    ratio_err : (N, B) float32, flux error / reference flux (inf where missing)
    bad_ref : (N,) bool, rows whose reference band is not a positive detection
    """
    flux, err, status = phot.flux, phot.flux_err, phot.status
    ref = flux[:, ref_index]
    bad_ref = (status[:, ref_index] != STATUS_OK) | ~(ref > 0) | ~np.isfinite(ref)
    safe_ref = np.where(bad_ref, 1.0, ref)[:, None]
    missing = status == STATUS_MISSING
    ratios = np.where(missing, 0.0, flux / safe_ref)
    rel_err = err / safe_ref
    ratio_err = np.where(missing, np.inf, rel_err)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_err = np.log10(np.maximum(rel_err, 10.0**LOG_ERR_FLOOR))
    log_err = np.where(missing, MISSING_LOG_ERR, np.minimum(log_err, MISSING_LOG_ERR))
    ref_mag = np.where(bad_ref, 0.0, -2.5 * np.log10(safe_ref[:, 0]) + AB_ZEROPOINT_NJY)
    feats = np.concatenate([np.arcsinh(ratios / RATIO_SOFTENING), log_err, ref_mag[:, None]], axis=1)
    feats[bad_ref] = 0.0
    ratios[bad_ref] = 0.0
    with np.errstate(over="ignore"):  # a huge relative error becomes inf: no information, like a missing band
        ratio_err32 = ratio_err.astype(np.float32)
    return (
        feats.astype(np.float32),
        np.clip(ratios, -1e30, 1e30).astype(np.float32),  # finite autoencoder targets
        ratio_err32,
        bad_ref,
    )


def fit_scaler(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (F,) of training features; constant features get std 1."""
    x = np.asarray(features, dtype=np.float64)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std = np.where(std > 1e-6 * np.maximum(1.0, np.abs(mean)), std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


def flux_features_torch(flux, flux_err, missing, ref_index: int):
    """Torch twin of :func:`flux_features` for fluxes already in nJy (used on the training device).

    Parameters
    ----------
    flux, flux_err : tensors (..., B) in nJy (coadds or augmented fluxes; may be negative)
    missing : bool tensor (..., B): band without any measurement
    ref_index : index of the reference band

    Returns ``(features (..., 2B+1), ratios (..., B), ratio_err (..., B), bad_ref (...))`` with the
    same definitions as :func:`flux_features` (detections and measured non-detections alike).
    """
    import torch  # pylint: disable=import-outside-toplevel

    flux = torch.where(missing, torch.zeros_like(flux), flux)
    err = torch.where(missing | ~torch.isfinite(flux_err) | (flux_err <= 0), torch.ones_like(flux_err), flux_err)
    ref = flux[..., ref_index]
    bad_ref = missing[..., ref_index] | ~(ref > 0) | ~torch.isfinite(ref)
    safe_ref = torch.where(bad_ref, torch.ones_like(ref), ref).unsqueeze(-1)
    ratios = torch.where(missing, torch.zeros_like(flux), flux / safe_ref)
    rel_err = err / safe_ref
    ratio_err = torch.where(missing, torch.full_like(rel_err, float("inf")), rel_err)
    log_err = torch.log10(torch.clamp(rel_err, min=10.0**LOG_ERR_FLOOR)).clamp(max=MISSING_LOG_ERR)
    log_err = torch.where(missing, torch.full_like(log_err, MISSING_LOG_ERR), log_err)
    ref_mag = torch.where(bad_ref, torch.zeros_like(ref), -2.5 * torch.log10(safe_ref[..., 0]) + AB_ZEROPOINT_NJY)
    feats = torch.cat([torch.asinh(ratios / RATIO_SOFTENING), log_err, ref_mag.unsqueeze(-1)], dim=-1)
    feats = torch.where(bad_ref.unsqueeze(-1), torch.zeros_like(feats), feats)
    ratios = torch.where(bad_ref.unsqueeze(-1), torch.zeros_like(ratios), ratios)
    return feats, ratios, ratio_err, bad_ref
