"""Photometric error models and the flux -> magnitude conversion with RAIL's non-detection convention."""

from __future__ import annotations

import numpy as np

from .constants import AB_ZEROPOINT_NJY, MAG_ERR_FACTOR
from .photometry import mag_to_njy

# "target": the error-vs-magnitude relation of a target catalogue (rail.deepz.error_relation)
NOISE_MODELS = ("depth", "snr", "target", "none")
# LSST 10-year coadded 5-sigma point-source depths (Ivezic et al. 2019, ApJ 873, 111, Table 1)
LSST_10YR_DEPTHS = {"u": 26.1, "g": 27.4, "r": 27.5, "i": 26.8, "z": 26.1, "y": 24.9}
# gamma of the LSST random-error model (Ivezic et al. 2019, eq. 5 and Table 2)
LSST_GAMMA = {"u": 0.038}
DEFAULT_GAMMA = 0.039


def depth_flux_errors(true_flux: np.ndarray, depths: np.ndarray, gammas: np.ndarray,
                      sys_error: float = 0.0) -> np.ndarray:
    """Flux errors [nJy] of the LSST error model (Ivezic et al. 2019, eq. 4-5).

    sigma_rand^2 = (0.04 - gamma) x + gamma x^2 [mag^2], x = 10^(0.4 (m - m_5)), converted to flux with
    sigma_f = f sigma_m / 1.0857 and added in quadrature to a systematic floor ``sys_error`` [mag].
    Written in flux so that it stays finite for faint or zero true fluxes.

    Parameters
    ----------
    true_flux : (N, n_bands) noiseless fluxes [nJy].
    depths : (n_bands,) 5-sigma depths [AB mag]; gammas : (n_bands,).
    """
    f = np.clip(true_flux, 0.0, None)
    f5 = mag_to_njy(depths)[None, :]
    g = np.asarray(gammas, dtype=float)[None, :]
    # sigma_f^2 = f^2 [(0.04-g) f5/f + g (f5/f)^2] / 1.0857^2 + (f sys / 1.0857)^2
    var = ((0.04 - g) * f * f5 + g * f5 * f5 + (sys_error * f) ** 2) / MAG_ERR_FACTOR**2
    return np.sqrt(var)


def snr_flux_errors(true_flux: np.ndarray, snr: np.ndarray) -> np.ndarray:
    """Flux errors for a fixed signal-to-noise ``snr`` (n_bands,) per band: sigma_f = f / snr."""
    return np.abs(true_flux) / np.asarray(snr, dtype=float)[None, :]


def fluxes_to_mags(flux: np.ndarray, flux_err: np.ndarray, nondetect_snr: float = 1.0,
                   nondetect_val: float = 99.0, nonobserved_val: float = -99.0,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """AB magnitudes and errors from fluxes [nJy], RAIL convention for non-detections.

    * detected (flux / flux_err >= ``nondetect_snr`` and flux > 0): m = 31.4 - 2.5 log10 f,
      sigma_m = 1.0857 sigma_f / f;
    * non-detected: m = ``nondetect_val`` (99), sigma_m = 1-sigma limiting magnitude
      31.4 - 2.5 log10(sigma_f) (as in pz-rail-base's DC2 test files);
    * not observed (flux or error NaN, e.g. no exposure): m = sigma_m = ``nonobserved_val`` (-99).
    A noiseless catalogue (flux_err = 0) is always "detected" with sigma_m = 0.
    """
    flux, flux_err = np.asarray(flux, dtype=float), np.asarray(flux_err, dtype=float)
    observed = np.isfinite(flux) & np.isfinite(flux_err)
    with np.errstate(divide="ignore", invalid="ignore"):
        detected = observed & (flux > 0) & ((flux_err == 0) | (flux >= nondetect_snr * flux_err))
        mag = np.where(detected, AB_ZEROPOINT_NJY - 2.5 * np.log10(flux), nondetect_val)
        err = np.where(detected, MAG_ERR_FACTOR * flux_err / flux,
                       AB_ZEROPOINT_NJY - 2.5 * np.log10(flux_err))
    mag = np.where(observed, mag, nonobserved_val)
    err = np.where(observed, err, nonobserved_val)
    return mag, err
