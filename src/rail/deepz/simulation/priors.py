"""Galaxy-parameter priors: independent uniform draws (Eriksen et al. 2020, Table 1)."""

from __future__ import annotations

import numpy as np

from .cosmology import age_at_redshift

# option name -> (parameter, default range); units: redshift, log Z/Zsun, Gyr, fraction, Gyr, tau_V, log U
PRIOR_OPTIONS = {
    "zred_range": ("zred", [0.0, 3.0]),
    "logzsol_range": ("logzsol", [-0.5, 0.2]),
    "tau_range": ("tau", [0.1, 12.0]),
    "const_range": ("const", [0.0, 0.25]),
    "sf_start_range": ("sf_start", [0.0, 14.0]),
    "dust2_range": ("dust2", [0.0, 0.6]),
    "gas_logu_range": ("gas_logu", [-4.0, 1.0]),
}
MIN_SF_DURATION_GYR = 0.01


def draw_uniform(rng: np.random.Generator, n: int, lo_hi: list[float]) -> np.ndarray:
    """Uniform draws on [lo, hi] (a point mass when lo == hi)."""
    lo, hi = float(lo_hi[0]), float(lo_hi[1])
    return lo + (hi - lo) * rng.random(n)


def draw_parameters(rng: np.random.Generator, n: int, ranges: dict[str, list[float]],
                    cosmology: str = "Planck15", names: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Draw Table-1 parameters for ``n`` galaxies; every parameter is drawn (fixed stream order).

    ``ranges`` maps option names of ``PRIOR_OPTIONS`` to [lo, hi]. ``tage`` is the age of the universe
    at ``zred`` [Gyr]. ``sf_start`` is uniform on [lo, min(hi, tage - 0.01 Gyr)] so star formation
    always starts before the galaxy is observed. ``names`` optionally restricts the returned keys.
    """
    out: dict[str, np.ndarray] = {}
    for option, (param, default) in PRIOR_OPTIONS.items():
        out[param] = draw_uniform(rng, n, ranges.get(option, default))
    out["tage"] = age_at_redshift(out["zred"], cosmology)
    lo, hi = ranges.get("sf_start_range", PRIOR_OPTIONS["sf_start_range"][1])
    upper = np.minimum(float(hi), out["tage"] - MIN_SF_DURATION_GYR)
    lower = np.minimum(float(lo), upper)
    frac = (out["sf_start"] - float(lo)) / (float(hi) - float(lo)) if hi > lo else np.zeros(n)
    out["sf_start"] = np.clip(lower + frac * (upper - lower), 0.0, None)
    if names is not None:
        out = {k: v for k, v in out.items() if k in names}
    return out
