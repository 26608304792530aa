"""Cosmology helpers: age of the universe and luminosity distance, vectorised by table lookup."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .constants import MPC_CM

_Z_TABLE = np.concatenate([[0.0], np.geomspace(1e-5, 20.0, 4000)])


def available_cosmologies() -> list[str]:
    """Names of the astropy cosmology realisations accepted by the ``cosmology`` option."""
    from astropy.cosmology import realizations

    return sorted(realizations.available)


@lru_cache(maxsize=8)
def _tables(name: str) -> tuple[np.ndarray, np.ndarray]:
    from astropy.cosmology import realizations

    if name not in realizations.available:
        raise ValueError(
            f"Option 'cosmology' = {name!r} is not an astropy realisation; allowed: {available_cosmologies()}"
        )
    cosmo = getattr(realizations, name)
    age = cosmo.age(_Z_TABLE).to_value("Gyr")
    dl = cosmo.luminosity_distance(_Z_TABLE).to_value("Mpc") * MPC_CM
    return age, dl


def age_at_redshift(z: np.ndarray, name: str = "Planck15") -> np.ndarray:
    """Age of the universe [Gyr] at redshift ``z`` (shape (N,)) in astropy cosmology ``name``."""
    age, _ = _tables(name)
    return np.interp(np.asarray(z, dtype=float), _Z_TABLE, age)


def luminosity_distance_cm(z: np.ndarray, name: str = "Planck15") -> np.ndarray:
    """Luminosity distance [cm] at redshift ``z``, floored at 10 pc so that z = 0 stays finite."""
    _, dl = _tables(name)
    out = np.interp(np.asarray(z, dtype=float), _Z_TABLE, dl)
    return np.maximum(out, 10.0 * MPC_CM * 1e-6)
