"""Intergalactic-medium transmission of Madau (1995, ApJ 441, 18), written from the paper's equations.

Lyman-series line blanketing (eq. 12/15): tau = sum_j A_j (lambda_obs / lambda_j)^3.46 for
lambda_obs < lambda_j (1 + z_s), with A_j = 3.6e-3, 1.7e-3, 1.2e-3, 9.3e-4 for Ly alpha-delta.
Photoelectric absorption by optically thin systems below the Lyman limit (footnote 3 approximation):
tau_c = 0.25 x_c^3 (x_e^0.46 - x_c^0.46) + 9.4 x_c^1.5 (x_e^0.18 - x_c^0.18)
        - 0.7 x_c^3 (x_c^-1.32 - x_e^-1.32) - 0.023 (x_e^1.68 - x_c^1.68),
x_c = lambda_obs / 912 A, x_e = 1 + z_s, for lambda_obs < 912 (1 + z_s).
"""

from __future__ import annotations

import numpy as np

IGM_MODELS = ("madau", "none")
_LINES_AA = np.array([1215.67, 1025.72, 972.54, 949.74])
_COEFFS = np.array([3.6e-3, 1.7e-3, 1.2e-3, 9.3e-4])


def madau_tau(wave_obs: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Effective optical depth; ``wave_obs`` [Angstrom] and ``z`` broadcast together."""
    lam = np.asarray(wave_obs, dtype=float)
    zs = np.asarray(z, dtype=float)
    lam, zs = np.broadcast_arrays(lam, zs)
    tau = np.zeros(lam.shape)
    for lj, aj in zip(_LINES_AA, _COEFFS):
        tau += np.where(lam < lj * (1.0 + zs), aj * (lam / lj) ** 3.46, 0.0)
    xe = 1.0 + zs
    xc = np.clip(lam / 912.0, 1.0, None)
    tau_c = (0.25 * xc**3 * (xe**0.46 - xc**0.46) + 9.4 * xc**1.5 * (xe**0.18 - xc**0.18)
             - 0.7 * xc**3 * (xc**-1.32 - xe**-1.32) - 0.023 * (xe**1.68 - xc**1.68))
    tau += np.where(lam < 912.0 * xe, np.clip(tau_c, 0.0, None), 0.0)
    return tau


def igm_transmission(wave_obs: np.ndarray, z: np.ndarray, model: str = "madau") -> np.ndarray:
    """exp(-tau_IGM) for ``model`` in ``IGM_MODELS`` (``"none"`` returns ones)."""
    if model == "none":
        return np.ones(np.broadcast_shapes(np.shape(wave_obs), np.shape(z)))
    if model != "madau":
        raise ValueError(f"Option 'igm' = {model!r} not in {IGM_MODELS}")
    return np.exp(-madau_tau(wave_obs, z))
