"""Apparent-magnitude distributions for the reference band (sets each galaxy's flux scale)."""

from __future__ import annotations

import numpy as np

MAG_DISTRIBUTIONS = ("powerlaw", "uniform", "histogram")


def draw_reference_mags(rng: np.random.Generator, n: int, kind: str, mag_range: tuple[float, float],
                        slope: float = 0.3, reference: np.ndarray | None = None) -> np.ndarray:
    """Draw ``n`` reference-band magnitudes.

    * ``uniform``: uniform in ``mag_range``;
    * ``powerlaw``: dN/dm ~ 10^(slope m) on ``mag_range`` (galaxy number counts; slope ~ 0.3 matches
      the i-band counts of the DC2 training file), by inverse-CDF sampling;
    * ``histogram``: the empirical distribution of ``reference`` magnitudes (values outside
      ``mag_range`` and non-finite or sentinel values are dropped), smoothed by linear interpolation
      of the empirical CDF.
    """
    lo, hi = float(mag_range[0]), float(mag_range[1])
    u = rng.random(n)
    if kind == "uniform":
        return lo + (hi - lo) * u
    if kind == "powerlaw":
        if abs(slope) < 1e-12:
            return lo + (hi - lo) * u
        a = slope * np.log(10.0)
        # CDF(m) = (e^{a(m-lo)} - 1) / (e^{a(hi-lo)} - 1)
        return lo + np.log1p(u * np.expm1(a * (hi - lo))) / a
    if kind == "histogram":
        ref = np.asarray(reference, dtype=float) if reference is not None else np.array([])
        ref = np.sort(ref[np.isfinite(ref) & (ref >= lo) & (ref <= hi)])
        if ref.size < 2:
            raise ValueError("mag_distribution='histogram' needs at least two reference magnitudes "
                             f"inside mag_range {list(mag_range)}")
        cdf = (np.arange(ref.size) + 0.5) / ref.size
        return np.interp(u, cdf, ref)
    raise ValueError(f"Option 'mag_distribution' = {kind!r} not in {MAG_DISTRIBUTIONS}")


def read_reference_mags(path: str, column: str, groupname: str = "photometry") -> np.ndarray:
    """Magnitudes in ``column`` of a RAIL table file (HDF5 group ``groupname`` if present, or flat)."""
    import tables_io  # pylint: disable=import-outside-toplevel

    data = tables_io.read(path)
    if isinstance(data, dict) and groupname in data and column not in data:
        data = data[groupname]
    if column not in data:
        raise KeyError(f"Column {column!r} not found in mag_reference_file {path!r}")
    return np.asarray(data[column], dtype=float)
