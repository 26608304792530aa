"""Individual exposures: simulation, the flat column layout, and inverse-variance coadds.

Column layout (all fluxes in nJy), for band key ``b`` (the magnitude column name without its ``mag_``
prefix, e.g. ``u_lsst``) and exposure slot ``k = 0 .. max_exposures - 1``:

* ``flux_{b}_exp{k}``, ``flux_err_{b}_exp{k}``: flux and 1-sigma error of exposure k; NaN where the
  galaxy has fewer than k + 1 exposures in that band (missing exposures);
* ``n_exp_{b}``: number of exposures (int), the valid slots are 0 .. n_exp - 1;
* ``flux_{b}``, ``flux_err_{b}``: the catalogue (coadded) flux, equal to :func:`coadd_exposures` of all
  exposures.

:func:`unpack_exposures` / :func:`pack_exposures` convert between this layout and arrays of shape
(N, n_bands, n_exp); :func:`coadd_exposures` works on numpy arrays and torch tensors alike.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np


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


def random_keep_mask(flux: np.ndarray, p_keep: float, rng: np.random.Generator,
                     ensure_one: bool = True) -> np.ndarray:
    """Bernoulli(p_keep) mask over valid exposures (N, n_bands, n_exp) for randomised coadds.

    With ``ensure_one`` every (galaxy, band) with at least one valid exposure keeps one of them
    (chosen uniformly), the paper's "force at least one exposure per band" variant.
    """
    valid = np.isfinite(flux)
    keep = valid & (rng.random(flux.shape) < p_keep)
    if ensure_one:
        lost = valid.any(axis=-1) & ~keep.any(axis=-1)
        if np.any(lost):
            score = np.where(valid, rng.random(flux.shape), -1.0)
            pick = np.argmax(score, axis=-1)
            idx = np.nonzero(lost)
            keep[idx + (pick[idx],)] = True
    return keep


def simulate_exposures(rng: np.random.Generator, true_flux: np.ndarray, coadd_err: np.ndarray,
                       n_range: tuple[int, int], depth_scatter: float = 0.2,
                       outlier_fraction: float = 0.0, outlier_amplitude: tuple[float, float] = (3.0, 20.0),
                       ) -> dict[str, np.ndarray]:
    """Per-exposure fluxes whose inverse-variance coadd has error ``coadd_err``.

    Parameters
    ----------
    true_flux, coadd_err : (N, n_bands) noiseless flux and target coadd error [nJy].
    n_range : (min, max) exposures per galaxy and band, drawn uniformly (min may be 0: band unobserved).
    depth_scatter : log-normal scatter (dex-free, natural log) of the per-exposure variances.
    outlier_fraction : probability that an exposure gets an outlier, shifted by +-A sigma_k with
        A ~ U(outlier_amplitude).

    Returns
    -------
    dict with ``flux``, ``flux_err`` (N, n_bands, max) [nJy, NaN for missing], ``n_exp`` (N, n_bands),
    ``outlier`` (N, n_bands, max) bool, and ``coadd_flux``, ``coadd_err`` (N, n_bands).
    """
    n_min, n_max = int(n_range[0]), int(n_range[1])
    n, nb = true_flux.shape
    n_exp = rng.integers(n_min, n_max + 1, size=(n, nb))
    valid = np.arange(n_max)[None, None, :] < n_exp[..., None]
    # relative variances of the exposures, then scaled so that sum(1/var) = 1/coadd_err^2 exactly
    rel_var = np.exp(depth_scatter * rng.standard_normal((n, nb, n_max)))
    inv = np.where(valid, 1.0 / rel_var, 0.0)
    total = inv.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma = np.where(valid, coadd_err[..., None] * np.sqrt(total * rel_var), np.nan)
    noise = rng.standard_normal((n, nb, n_max))
    flux = true_flux[..., None] + sigma * noise
    outlier = valid & (rng.random((n, nb, n_max)) < outlier_fraction)
    amp = rng.uniform(outlier_amplitude[0], outlier_amplitude[1], (n, nb, n_max))
    sign = np.where(rng.random((n, nb, n_max)) < 0.5, -1.0, 1.0)
    flux = np.where(outlier, flux + sign * amp * sigma, flux)
    flux = np.where(valid, flux, np.nan)
    coadd_flux, coadd_sigma = coadd_exposures(flux, sigma)
    coadd_sigma = np.where(np.isfinite(coadd_sigma), coadd_sigma, np.nan)
    return dict(flux=flux, flux_err=sigma, n_exp=n_exp, outlier=outlier,
                coadd_flux=coadd_flux, coadd_err=coadd_sigma)
