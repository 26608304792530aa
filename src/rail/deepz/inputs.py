"""Reading a catalogue's photometry: the one place that turns table columns into fluxes.

Simulation, training and estimation all read their inputs here: magnitude and error columns
(with the bad-value rules below), the individual-exposure layout ``flux_{band}_exp{k}`` and its
inverse-variance coadds, and the coadd flux columns ``flux_{band}`` of simulated catalogues.
Fluxes are in nJy. numpy only (coadds also accept torch tensors).

The ``bands`` columns hold AB magnitudes or fluxes in nJy (``photometry``). A value equal to
``nondetect_val`` is a non-detection (flux 0, error = the flux of the band's ``mag_limits`` entry)
and one equal to ``nonobserved_val`` is unobserved (missing), whatever the values: NaN matches NaN
(RAIL's catalog tags use NaN / +inf), finite values match to float32 precision. Other values of a
magnitude column: finite below ``NONDETECT_THRESHOLD`` is a detection, +inf and 90-1000 are
non-detections, NaN and -inf are missing, beyond ``MAX_MAGNITUDE`` / below ``MIN_MAGNITUDE`` or text
that is not a number is invalid (treated as missing). In a flux column every finite value is a
measurement, negative and zero ones included. An unusable error of a detection is replaced by the
limit error (``bad_err``). A missing column, a column with no number at all, a boolean, complex or
date column, or a column that appears twice is an error, raised before any row is processed. The
documentation's inputs page has the full table.

Exposure layout (all fluxes in nJy), for band key ``b`` (the magnitude column name without its
``mag_`` prefix, e.g. ``u_lsst``) and exposure slot ``k``: ``flux_{b}_exp{k}``,
``flux_err_{b}_exp{k}`` (NaN where the galaxy has fewer exposures), ``n_exp_{b}``, and the coadd
``flux_{b}``, ``flux_err_{b}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .options import PHOTOMETRY_KINDS, USE_EXPOSURES, check_band_lists
from .schema import check_choice

__all__ = [
    "AB_ZEROPOINT_NJY",
    "NONDETECT_THRESHOLD",
    "STATUS_OK",
    "STATUS_NONDETECT",
    "STATUS_MISSING",
    "Photometry",
    "FluxTable",
    "read_column",
    "magnitudes_to_fluxes",
    "flux_columns_to_photometry",
    "read_photometry",
    "band_key",
    "exposure_column_names",
    "count_exposure_slots",
    "pack_exposures",
    "unpack_exposures",
    "coadd_exposures",
    "has_exposures",
    "uses_exposures",
    "exposure_photometry",
    "read_flux_table",
    "read_model_photometry",
]

AB_ZEROPOINT_NJY = 31.4  # m_AB = -2.5 log10(f / nJy) + 31.4
NONDETECT_THRESHOLD = 90.0  # magnitudes at or above this are non-detections
MAX_MAGNITUDE = 1000.0  # above: not a magnitude (e.g. 1e30 fill values), treated as missing
MIN_MAGNITUDE = -10.0  # below (other than nonobserved_val): not a galaxy magnitude, treated as missing
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


def _missing_column_error(data: Mapping, col: str, option: str | None = None, advice: str = "") -> KeyError:
    """A missing column: which option named it, what to do (``advice``), the closest and all columns."""
    import difflib

    names = sorted(map(str, data.keys()))
    near = difflib.get_close_matches(col, names, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(n) for n in near)}? " if near else ""
    named = f" (named by option '{option}')" if option else ""
    advice = f"{advice}; " if advice else ""
    return KeyError(f"column '{col}'{named} not found in the input table; {advice}{hint}"
                    f"available columns: {', '.join(names)}")


def _band_advice(bands: Sequence[str], for_model: bool) -> str:
    if for_model:
        return (f"the model was trained on bands {list(bands)}: to estimate without one, inform a model whose "
                "'bands' and 'err_bands' leave it out")
    return "to train without that band, leave it out of options 'bands' and 'err_bands' (and 'mag_limits')"


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


def _as_float_column(data: Mapping, col: str, option: str | None = None,
                     advice: str = "") -> tuple[np.ndarray, np.ndarray | None]:
    """A column as float64 (N,), and a mask of entries that were not numbers (or None).

    A missing column is a KeyError naming ``option`` (the option that lists it) and ``advice``.
    """
    try:
        raw = data[col]
    except KeyError as exc:
        raise _missing_column_error(data, col, option, advice) from exc
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


def _matches(x: np.ndarray, value: float) -> np.ndarray:
    """Where ``x`` equals the sentinel ``value``: NaN matches NaN, +-inf match themselves, finite
    values match to float32 precision (float32 and float64 columns match the same sentinel)."""
    value = float(value)
    if np.isnan(value):
        return np.isnan(x)
    if np.isinf(value):
        return x == value
    with np.errstate(invalid="ignore"):
        return np.abs(x - value) <= 1e-6 * max(1.0, abs(value))


def _sentinels(values: np.ndarray, nondetect_val: float, nonobserved_val: float) -> tuple[np.ndarray, ...]:
    """(non-detection, unobserved, other) masks: a value equal to a sentinel means what the sentinel says."""
    nondetect = _matches(values, nondetect_val)
    unobserved = _matches(values, nonobserved_val) & ~nondetect
    return nondetect, unobserved, ~(nondetect | unobserved)


def _photometry(flux: np.ndarray, err: np.ndarray, detected: np.ndarray, nondetect: np.ndarray,
                missing: np.ndarray, invalid: np.ndarray, limit_flux: np.ndarray) -> Photometry:
    """Photometry from measured fluxes and errors and the per-band masks; bad errors get the limit error."""
    status = np.full(flux.shape, STATUS_OK, dtype=np.int8)
    status[nondetect] = STATUS_NONDETECT
    status[missing] = STATUS_MISSING
    flux = np.where(detected, flux, 0.0)
    with np.errstate(invalid="ignore"):
        err = np.where(detected, err, limit_flux)
        bad_err = detected & (~np.isfinite(err) | ~(err > 0))
    err = np.where(bad_err | missing, limit_flux, err)
    return Photometry(flux=flux, flux_err=err, status=status, invalid=invalid, bad_err=bad_err)


def limit_fluxes(limits: np.ndarray) -> np.ndarray:
    """Fluxes [nJy] (B,) of the limiting AB magnitudes ``limits`` (B,): the error of a non-detection."""
    return 10.0 ** (-0.4 * (np.asarray(limits, dtype=np.float64) - AB_ZEROPOINT_NJY))


def _limit_flux(limits: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Fluxes [nJy] of the limiting magnitudes (B,), broadcast to ``shape``."""
    return np.broadcast_to(limit_fluxes(limits), shape)


def magnitudes_to_fluxes(
    mags: np.ndarray,
    mag_errs: np.ndarray,
    limits: np.ndarray,
    nondetect_val: float = 99.0,
    nonobserved_val: float = -99.0,
) -> Photometry:
    """Convert AB magnitudes (N, B) and errors (N, B) to fluxes in nJy, applying the bad-value rules.

    ``limits`` (B,) are the 1-sigma limiting magnitudes used as the error of non-detections.
    A value equal to ``nondetect_val`` is a non-detection and one equal to ``nonobserved_val`` is
    unobserved, whatever the values (NaN and +-inf included); other values follow the default rules.
    """
    mags = np.asarray(mags, dtype=np.float64)
    errs = np.asarray(mag_errs, dtype=np.float64)
    nondetect, unobserved, other = _sentinels(mags, nondetect_val, nonobserved_val)
    with np.errstate(invalid="ignore"):
        nondetect |= other & ((mags == np.inf) | ((mags >= NONDETECT_THRESHOLD) & (mags <= MAX_MAGNITUDE)))
        invalid = other & np.isfinite(mags) & ((mags > MAX_MAGNITUDE) | (mags < MIN_MAGNITUDE))
    missing = unobserved | (other & (np.isnan(mags) | (mags == -np.inf))) | invalid
    detected = ~(missing | nondetect)
    with np.errstate(over="ignore", invalid="ignore"):
        flux = 10.0 ** (-0.4 * (np.where(detected, mags, 0.0) - AB_ZEROPOINT_NJY))
        err = flux * (np.log(10.0) / 2.5) * errs
    return _photometry(flux, err, detected, nondetect, missing, invalid, _limit_flux(limits, mags.shape))


def flux_columns_to_photometry(
    fluxes: np.ndarray,
    flux_errs: np.ndarray,
    limits: np.ndarray,
    nondetect_val: float = 99.0,
    nonobserved_val: float = -99.0,
) -> Photometry:
    """Fluxes (N, B) and flux errors (N, B) in nJy, with the bad-value rules of flux catalogues.

    Every finite flux is a measurement, negative and zero ones included. A value equal to
    ``nondetect_val`` is a non-detection (flux 0, error = the flux of the band's limit ``limits``
    (B,) [AB]) and one equal to ``nonobserved_val`` is unobserved; other NaNs are missing and other
    infinite values invalid (treated as missing).
    """
    fluxes = np.asarray(fluxes, dtype=np.float64)
    errs = np.asarray(flux_errs, dtype=np.float64)
    nondetect, unobserved, other = _sentinels(fluxes, nondetect_val, nonobserved_val)
    invalid = other & np.isinf(fluxes)
    missing = unobserved | (other & np.isnan(fluxes)) | invalid
    detected = ~(missing | nondetect)
    return _photometry(fluxes, errs, detected, nondetect, missing, invalid, _limit_flux(limits, fluxes.shape))


def read_photometry(
    data: Mapping,
    bands: Sequence[str],
    err_bands: Sequence[str],
    mag_limits: Mapping[str, float],
    nondetect_val: float = 99.0,
    nonobserved_val: float = -99.0,
    photometry: str = "magnitudes",
    for_model: bool = False,
) -> Photometry:
    """Read the columns ``bands`` and error columns ``err_bands`` of a table into fluxes.

    ``photometry``: the columns hold AB magnitudes (``"magnitudes"``, :func:`magnitudes_to_fluxes`)
    or fluxes in nJy (``"fluxes"``, :func:`flux_columns_to_photometry`).

    Raises ``KeyError`` naming a missing column and its option (advice for training, or with
    ``for_model`` for a trained model's bands), ``ValueError`` for an empty table, mismatched band
    lists, a band without a ``mag_limits`` entry, or a band with no usable value at all.
    """
    check_band_lists(bands, err_bands)
    columns = getattr(data, "columns", None)  # a DataFrame may hold a column name twice
    if columns is not None:
        names = [str(c) for c in columns]
        dup = sorted({c for c in list(bands) + list(err_bands) if names.count(c) > 1})
        if dup:
            raise ValueError(f"column(s) {dup} appear more than once in the input table (duplicated names)")
    advice = _band_advice(bands, for_model)
    mag_cols = [_as_float_column(data, b, "bands", advice) for b in bands]
    err_cols = [_as_float_column(data, e, "err_bands", advice) for e in err_bands]
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
    check_choice("photometry", photometry, PHOTOMETRY_KINDS)
    convert = magnitudes_to_fluxes if photometry == "magnitudes" else flux_columns_to_photometry
    phot = convert(mags, errs, limits, nondetect_val, nonobserved_val)
    text_bad = [bad for _, bad in mag_cols]
    if any(b is not None for b in text_bad):  # text that is not a number: missing and invalid
        assert phot.invalid is not None
        phot.invalid |= np.stack([np.zeros(len(mags), bool) if b is None else b for b in text_bad], axis=1)
    return phot


def band_key(mag_column: str) -> str:
    """Band key of a magnitude column: ``"mag_u_lsst"`` -> ``"u_lsst"`` (unchanged without ``mag_``)."""
    return mag_column[4:] if mag_column.startswith("mag_") else mag_column


def exposure_column_names(band_keys: list[str], max_exposures: int) -> tuple[list[list[str]], list[list[str]]]:
    """Flux and error column names, each a list (n_bands) of lists (max_exposures)."""
    flux = [[f"flux_{b}_exp{k}" for k in range(max_exposures)] for b in band_keys]
    err = [[f"flux_err_{b}_exp{k}" for k in range(max_exposures)] for b in band_keys]
    return flux, err


def count_exposure_slots(table: Mapping[str, Any], band_key_: str) -> int:
    """Number of exposure slots k present as ``flux_{band_key_}_exp{k}`` columns in ``table``."""
    k = 0
    while f"flux_{band_key_}_exp{k}" in table:
        k += 1
    return k


def pack_exposures(flux: np.ndarray, flux_err: np.ndarray, band_keys: list[str]) -> dict[str, np.ndarray]:
    """Flat columns (layout above, without the coadd columns) from arrays of shape (N, n_bands, n_exp)."""
    fcols, ecols = exposure_column_names(band_keys, flux.shape[2])
    out: dict[str, np.ndarray] = {}
    for b, key in enumerate(band_keys):
        for k in range(flux.shape[2]):
            out[fcols[b][k]] = flux[:, b, k]
            out[ecols[b][k]] = flux_err[:, b, k]
        out[f"n_exp_{key}"] = np.sum(np.isfinite(flux[:, b, :]) & np.isfinite(flux_err[:, b, :]), axis=1)
    return out


def unpack_exposures(table: Mapping[str, Any], band_keys: list[str],
                     max_exposures: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Arrays (N, n_bands, n_exp) of exposure fluxes and errors from a table in the flat layout.

    ``max_exposures`` defaults to the number of slots found for the first band; absent slots are NaN.
    """
    if max_exposures is None:
        max_exposures = max(count_exposure_slots(table, key) for key in band_keys)
    if max_exposures == 0:
        raise KeyError(f"No exposure columns flux_{{band}}_exp{{k}} found for bands {band_keys}")
    fcols, ecols = exposure_column_names(band_keys, max_exposures)
    n = len(np.asarray(table[next(c for c in fcols[0] if c in table)]))
    flux = np.full((n, len(band_keys), max_exposures), np.nan)
    err = np.full_like(flux, np.nan)
    for b in range(len(band_keys)):
        for k in range(max_exposures):
            if fcols[b][k] in table:
                flux[:, b, k] = np.asarray(table[fcols[b][k]], dtype=float)
                err[:, b, k] = np.asarray(table[ecols[b][k]], dtype=float)
    return flux, err


def coadd_exposures(flux: Any, flux_err: Any, keep: Any = None) -> tuple[Any, Any]:
    """Inverse-variance coadd over the last axis.

    Parameters
    ----------
    flux, flux_err : arrays (..., n_exp) (numpy or torch); NaN marks missing exposures.
    keep : optional boolean mask (..., n_exp); exposures with ``keep`` False are dropped.

    Returns
    -------
    (coadd flux, coadd error), shape (...): sum(f / s^2) / sum(1 / s^2) and sum(1 / s^2)^-1/2.
    Where no exposure is used, the flux is NaN and the error is inf.
    """
    is_torch = type(flux).__module__.startswith("torch")
    xp: Any
    if is_torch:
        import torch as xp  # pylint: disable=import-outside-toplevel
    else:
        xp = np
        flux, flux_err = np.asarray(flux, dtype=float), np.asarray(flux_err, dtype=float)
    valid = xp.isfinite(flux) & xp.isfinite(flux_err) & (flux_err > 0)
    if keep is not None:
        valid = valid & keep
    safe_err = xp.where(valid, flux_err, xp.ones_like(flux_err))
    ivar = xp.where(valid, 1.0 / (safe_err * safe_err), xp.zeros_like(flux_err))
    weighted = xp.where(valid, flux, xp.zeros_like(flux)) * ivar
    if is_torch:
        wsum, fsum = ivar.sum(dim=-1), weighted.sum(dim=-1)
    else:
        wsum, fsum = ivar.sum(axis=-1), weighted.sum(axis=-1)
    has = wsum > 0
    safe_w = xp.where(has, wsum, xp.ones_like(wsum))
    nan = xp.full_like(wsum, float("nan"))
    inf = xp.full_like(wsum, float("inf"))
    return xp.where(has, fsum / safe_w, nan), xp.where(has, 1.0 / xp.sqrt(safe_w), inf)


@dataclass
class FluxTable:
    """Fluxes of N usable galaxies, in nJy, as numpy arrays.

    ``flux``/``flux_err`` are (N, B) coadds, or (N, B, K) individual exposures (NaN where missing)
    when ``exposures`` is True; ``missing`` (N, B) marks bands without any measurement.
    """

    flux: np.ndarray
    flux_err: np.ndarray
    missing: np.ndarray
    exposures: bool

    def coadd(self) -> Photometry:
        """Full coadd (all exposures) as :class:`Photometry`."""
        if not self.exposures:
            status = np.where(self.missing, STATUS_MISSING, STATUS_OK).astype(np.int8)
            return Photometry(self.flux, self.flux_err, status)
        return exposure_photometry(self.flux, self.flux_err)

    def subset(self, rows: np.ndarray) -> "FluxTable":
        return FluxTable(self.flux[rows], self.flux_err[rows], self.missing[rows], self.exposures)


def exposure_photometry(flux: np.ndarray, flux_err: np.ndarray) -> Photometry:
    """Photometry (N, B) from the inverse-variance coadd of all exposures (N, B, K)."""
    cflux, cerr = coadd_exposures(flux, flux_err)
    return _measured(cflux, cerr, ~np.isfinite(cflux))


def _measured(flux: np.ndarray, err: np.ndarray, missing: np.ndarray) -> Photometry:
    """Photometry of measured fluxes and errors (N, B) [nJy]; ``missing`` bands get flux 0, error 1."""
    status = np.where(missing, STATUS_MISSING, STATUS_OK).astype(np.int8)
    return Photometry(np.where(missing, 0.0, flux), np.where(missing, 1.0, err), status)


def has_exposures(table: Mapping, bands: Sequence[str]) -> bool:
    """True when the table has ``flux_{band}_exp0`` columns (DeepzSimCreator layout) for every band."""
    return all(count_exposure_slots(table, band_key(b)) > 0 for b in bands)


def read_flux_table(table: Mapping, bands: Sequence[str], err_bands: Sequence[str], mag_limits: Mapping[str, float],
                    nondetect_val: float, nonobserved_val: float, use_exposures: bool,
                    photometry: str = "magnitudes") -> tuple[FluxTable, Photometry]:
    """Fluxes of a table for training, and the photometry its features are computed from.

    With ``use_exposures`` the individual exposures (the photometry is their full coadd); otherwise
    the ``bands`` columns (``photometry``: magnitudes or fluxes, see :func:`read_photometry`;
    non-detections: flux 0, error = limit flux, counted as measured in the flux table).
    """
    if use_exposures:
        keys = [band_key(b) for b in bands]
        absent = [f"flux_{k}_exp0" for k in keys if count_exposure_slots(table, k) == 0]
        if absent:
            raise KeyError(f"exposure columns {absent} not found (option 'use_exposures'); "
                           "see the simulations page of the documentation for the flux_{band}_exp{k} layout")
        flux, err = unpack_exposures(table, keys)
        missing = ~(np.isfinite(flux) & np.isfinite(err) & (err > 0)).any(axis=-1)
        fluxes = FluxTable(flux, err, missing, True)
        return fluxes, fluxes.coadd()
    phot = read_photometry(table, bands, err_bands, mag_limits, nondetect_val, nonobserved_val, photometry)
    return FluxTable(phot.flux, phot.flux_err, phot.status == STATUS_MISSING, False), phot


def _coadd_columns(table: Mapping, keys: Sequence[str]) -> Photometry:
    """Photometry from the coadd flux columns ``flux_{key}`` / ``flux_err_{key}`` (simulated catalogues)."""
    flux = np.stack([np.asarray(table[f"flux_{k}"], dtype=np.float64) for k in keys], axis=1)
    err = np.stack([np.asarray(table[f"flux_err_{k}"], dtype=np.float64) for k in keys], axis=1)
    return _measured(flux, err, ~(np.isfinite(flux) & np.isfinite(err) & (err > 0)))


def uses_exposures(table: Mapping, bands: Sequence[str], use_exposures: str) -> bool:
    """Whether a table is read through its individual exposures (option ``use_exposures``)."""
    if use_exposures not in USE_EXPOSURES:
        raise ValueError(f"option 'use_exposures' must be one of {USE_EXPOSURES}, got {use_exposures!r}")
    if use_exposures == "no":
        return False
    found = has_exposures(table, bands)
    if use_exposures == "yes" and not found:
        raise KeyError("option use_exposures='yes' but the table has no flux_{band}_exp{k} columns for every band")
    return found


def read_model_photometry(table: Mapping, bands: Sequence[str], err_bands: Sequence[str],
                          mag_limits: Mapping[str, float], nondetect_val: float, nonobserved_val: float,
                          exposures: bool, photometry: str = "magnitudes") -> Photometry:
    """Fluxes of a table's rows as a trained model reads them at estimation time.

    A model trained on individual exposures (``exposures``) reads the inverse-variance coadd of all
    exposures when the table has them, else the coadd flux columns ``flux_{band}``/``flux_err_{band}``
    when present, else the ``bands`` columns; other models read the ``bands`` columns, which hold
    magnitudes or fluxes (``photometry``).
    """
    if exposures:
        keys = [band_key(b) for b in bands]
        if has_exposures(table, bands):
            return exposure_photometry(*unpack_exposures(table, keys))
        if all(f"flux_{k}" in table and f"flux_err_{k}" in table for k in keys):
            return _coadd_columns(table, keys)
    return read_photometry(table, bands, err_bands, mag_limits, nondetect_val, nonobserved_val, photometry,
                           for_model=True)
