"""Simulated individual exposures (the column layout and coadds are in :mod:`rail.deepz.inputs`).

:func:`simulate_exposures` splits a galaxy's noiseless flux into exposures whose inverse-variance
coadd has the requested error; :func:`random_keep_mask` draws randomised-coadd masks.
"""

from __future__ import annotations

import numpy as np

from ..inputs import coadd_exposures


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
