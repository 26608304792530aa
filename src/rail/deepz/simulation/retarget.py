"""Simulations with the noise of a target catalogue (the unlabelled photometry to be estimated).

:func:`target_error_relation` measures the target's error-vs-magnitude relation
(:class:`rail.deepz.error_relation.ErrorRelation`) from a table held in memory or a RAIL table file
(:func:`read_target_file`); :func:`with_error_relation` re-draws the noise of an existing
simulation with it. ``simulate_catalogue`` uses both for ``noise_model='target'``. No torch, no RAIL.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..error_relation import ErrorRelation
from ..inputs import band_key, count_exposure_slots, exposure_column_names
from .noise import fluxes_to_mags

__all__ = ["read_target_file", "target_error_relation", "with_error_relation"]


def read_target_file(path: str, groupname: str, column: str) -> Mapping[str, Any]:
    """The table of a RAIL table file (hdf5 / parquet): the group ``groupname`` when the file has it
    and ``column`` is not at the top level, else the flat table."""
    import tables_io  # pylint: disable=import-outside-toplevel  (tables_io is only needed here)

    data = tables_io.read(path)
    if groupname and isinstance(data, Mapping) and groupname in data and column not in data:
        data = data[groupname]
    return data


def target_error_relation(target: Mapping[str, Any], bands: Sequence[str], err_bands: Sequence[str],
                          nondetect_val: float = 99.0, nonobserved_val: float = -99.0,
                          source: str = "target") -> ErrorRelation:
    """The error-vs-magnitude relation of a target table's magnitude columns ``bands`` / ``err_bands``.

    ``source`` names the table in error messages (e.g. "option 'noise_reference_file' (path)").
    """
    # limits only set the errors of non-detections, which the fit leaves out: any value will do
    limits = {b: 30.0 for b in bands}
    try:
        return ErrorRelation.from_table(target, bands, err_bands, limits, nondetect_val, nonobserved_val)
    except KeyError as exc:
        raise KeyError(f"target photometry from {source}: {exc.args[0] if exc.args else exc}") from None
    except ValueError as exc:
        raise ValueError(f"target photometry from {source}: {exc}") from None


def _exposure_columns(table: Mapping[str, Any], keys: Sequence[str]) -> set[str]:
    """Names of the individual-exposure columns of ``table`` (layout of :mod:`rail.deepz.inputs`)."""
    names = {"n_exp_outliers"} | {f"n_exp_{k}" for k in keys}
    for key in keys:
        fcols, ecols = exposure_column_names([key], count_exposure_slots(table, key))
        names |= set(fcols[0]) | set(ecols[0])
    return {n for n in names if n in table}


def with_error_relation(table: Mapping[str, Any], relation: ErrorRelation, bands: Sequence[str],
                        err_bands: Sequence[str], seed: int, nondetect_snr: float | np.ndarray = 1.0,
                        nondetect_val: float = 99.0, nonobserved_val: float = -99.0) -> dict[str, np.ndarray]:
    """A copy of a simulation table with new noise drawn from ``relation``.

    For each band, f = f_true + sigma N(0, 1) with sigma = ``relation.flux_errors(f_true)`` [nJy],
    f_true from the table's ``flux_true_{band}`` columns (N,). The returned flat table replaces
    ``flux_{band}``, ``flux_err_{band}`` and the ``bands`` / ``err_bands`` magnitude columns (RAIL
    non-detection convention, :func:`.noise.fluxes_to_mags`), keeps the other columns and drops the
    individual exposures and ``n_exp`` columns (they would no longer match the coadd). Below
    ``nondetect_snr`` (one value, or one per band) a band is a non-detection. ``table`` is
    not modified; the same ``seed`` gives the same table.
    """
    bands, err_bands = list(bands), list(err_bands)
    if len(bands) != len(err_bands):
        raise ValueError(f"'bands' ({len(bands)}) and 'err_bands' ({len(err_bands)}) must have one entry per band")
    if list(relation.bands) != bands:
        raise ValueError(f"the error relation is for bands {relation.bands}, the simulation's 'bands' are {bands}")
    keys = [band_key(b) for b in bands]
    absent = [f"flux_true_{k}" for k in keys if f"flux_true_{k}" not in table]
    if absent:
        nested = [str(k) for k, v in table.items() if isinstance(v, Mapping)]
        hint = f" (pass the flat table inside the group {nested}, not the file's groups)" if nested else ""
        raise KeyError(f"the simulation table has no noiseless flux column(s) {absent}{hint}: with_error_relation "
                       "needs the flux_true_{band} columns of DeepzSimCreator's output")
    true_flux = np.stack([np.asarray(table[f"flux_true_{k}"], dtype=np.float64) for k in keys], axis=1)
    sigma = relation.flux_errors(true_flux)
    flux = true_flux + sigma * np.random.default_rng(seed).standard_normal(true_flux.shape)
    mags, mag_errs = fluxes_to_mags(flux, sigma, nondetect_snr, nondetect_val, nonobserved_val)
    drop = _exposure_columns(table, keys)
    out = {name: np.array(values, copy=True) for name, values in table.items() if name not in drop}
    for b, key in enumerate(keys):
        out[bands[b]], out[err_bands[b]] = mags[:, b], mag_errs[:, b]
        out[f"flux_{key}"], out[f"flux_err_{key}"] = flux[:, b], sigma[:, b]
    return out
