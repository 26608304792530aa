"""Calzetti et al. (2000, ApJ 533, 682) starburst attenuation, parameterised like FSPS ``dust_type=2``."""

from __future__ import annotations

import numpy as np

CALZETTI_RV = 4.05


def _k_raw(mu: np.ndarray) -> np.ndarray:
    """Calzetti (2000) eq. 4, k(lambda) for lambda in micron, valid 0.12-2.2 micron."""
    blue = 2.659 * (-2.156 + 1.509 / mu - 0.198 / mu**2 + 0.011 / mu**3) + CALZETTI_RV
    red = 2.659 * (-1.857 + 1.040 / mu) + CALZETTI_RV
    return np.where(mu < 0.63, blue, red)


def calzetti_k(wave_aa: np.ndarray) -> np.ndarray:
    """k(lambda) = A_lambda / E(B-V) of Calzetti et al. (2000), shape of ``wave_aa`` [Angstrom].

    Outside 0.12-2.2 micron the curve is extended linearly in 1/lambda from the end points
    (slope between 0.12 and 0.13 micron in the UV), and clipped at zero in the infrared.
    """
    mu = np.asarray(wave_aa, dtype=float) * 1e-4
    k = _k_raw(np.clip(mu, 0.12, 2.2))
    lo_a, lo_b = _k_raw(np.array(0.12)), _k_raw(np.array(0.13))
    slope = (lo_a - lo_b) / (1 / 0.12 - 1 / 0.13)
    k = np.where(mu < 0.12, lo_a + slope * (1 / np.maximum(mu, 1e-3) - 1 / 0.12), k)
    hi_a, hi_b = _k_raw(np.array(2.2)), _k_raw(np.array(2.1))
    slope_ir = (hi_a - hi_b) / (1 / 2.2 - 1 / 2.1)
    k = np.where(mu > 2.2, hi_a + slope_ir * (1 / mu - 1 / 2.2), k)
    return np.clip(k, 0.0, None)


def calzetti_tau_shape(wave_aa: np.ndarray) -> np.ndarray:
    """Optical-depth shape tau(lambda) / tau(5500 A); multiply by ``dust2`` to get tau(lambda)."""
    return calzetti_k(wave_aa) / calzetti_k(np.array(5500.0))


def attenuate(wave_aa: np.ndarray, dust2: np.ndarray) -> np.ndarray:
    """Transmission exp(-dust2 * k(lambda)/k(5500 A)), shape (N, n_wave) for ``dust2`` of shape (N,)."""
    shape = calzetti_tau_shape(wave_aa)
    return np.exp(-np.asarray(dust2, dtype=float)[:, None] * shape[None, :])
