"""A survey's photometric errors as a function of magnitude, measured on its own catalogue.

:class:`ErrorRelation` holds, per band, the median flux error [nJy] of the detected galaxies in
magnitude bins. Fitted on the unlabelled target photometry (:meth:`ErrorRelation.fit`,
:meth:`ErrorRelation.from_table`), it answers "what flux error would the target survey give a
galaxy of this true flux" (:meth:`ErrorRelation.flux_errors`), so that simulations can carry the
target's noise. numpy only; the columns are read through :mod:`rail.deepz.inputs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .inputs import AB_ZEROPOINT_NJY, STATUS_OK, Photometry, read_photometry

__all__ = ["ErrorRelation"]


def _binned_median(bins: np.ndarray, values: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Median and count of ``values`` (M,) in each bin, for bin indices ``bins`` (M,) in [0, n_bins).

    Returns two (n_bins,) arrays; the median is NaN in empty bins. One sort for all bins.
    """
    counts = np.bincount(bins, minlength=n_bins)
    ordered = values[np.lexsort((values, bins))]  # grouped by bin, sorted within each bin
    start = np.cumsum(counts) - counts
    filled = counts > 0
    lo = start[filled] + (counts[filled] - 1) // 2
    hi = start[filled] + counts[filled] // 2
    median = np.full(n_bins, np.nan)
    median[filled] = 0.5 * (ordered[lo] + ordered[hi])
    return median, counts


@dataclass
class ErrorRelation:
    """Median flux error against magnitude, per band.

    Attributes
    ----------
    mag_grid : (K,) float array, AB magnitude bin centres, increasing.
    log_flux_err : (B, K) float array, log10 of the median flux error [nJy] per band and bin
        (every bin filled: see :meth:`fit`).
    bands : list of B band column names (the target's magnitude columns).
    """

    mag_grid: np.ndarray
    log_flux_err: np.ndarray
    bands: list[str]

    def __post_init__(self) -> None:
        self.mag_grid = np.asarray(self.mag_grid, dtype=np.float64)
        self.log_flux_err = np.asarray(self.log_flux_err, dtype=np.float64)
        self.bands = [str(b) for b in self.bands]
        k = self.mag_grid.size
        if self.mag_grid.ndim != 1 or k == 0 or not np.all(np.isfinite(self.mag_grid)) \
                or np.any(np.diff(self.mag_grid) <= 0):
            raise ValueError("ErrorRelation: 'mag_grid' must be a non-empty, finite, increasing 1-d array")
        if self.log_flux_err.shape != (len(self.bands), k):
            raise ValueError(f"ErrorRelation: 'log_flux_err' has shape {self.log_flux_err.shape}, expected "
                             f"(n_bands, n_bins) = ({len(self.bands)}, {k})")
        if not np.all(np.isfinite(self.log_flux_err)):
            raise ValueError("ErrorRelation: 'log_flux_err' must be finite in every band and bin")

    @classmethod
    def fit(cls, phot: Photometry, bands: Sequence[str], bin_width: float = 0.25,
            min_count: int = 20) -> "ErrorRelation":
        """Median log10 flux error of detected galaxies in magnitude bins of ``bin_width`` [mag].

        ``phot`` holds N galaxies in the B ``bands`` (column names, for messages). Rows with status
        OK and a positive flux enter their band's bin; a bin with fewer than ``min_count`` rows is
        filled by linear interpolation between filled bins, and held constant beyond the brightest
        and faintest filled bins (the faint end of a survey is sky-limited: constant flux error).
        The grid is common to all bands. Raises ValueError for a band without any filled bin.
        """
        bands = [str(b) for b in bands]
        flux, err = np.asarray(phot.flux, dtype=np.float64), np.asarray(phot.flux_err, dtype=np.float64)
        if flux.ndim != 2 or flux.shape[1] != len(bands):
            raise ValueError(f"ErrorRelation.fit: photometry has shape {flux.shape}, expected (N, {len(bands)}) "
                             f"for bands {bands}")
        if not (np.isfinite(bin_width) and bin_width > 0):
            raise ValueError(f"ErrorRelation.fit: 'bin_width' = {bin_width!r} must be a positive number [mag]")
        if int(min_count) < 1:
            raise ValueError(f"ErrorRelation.fit: 'min_count' = {min_count!r} must be at least 1")
        with np.errstate(divide="ignore", invalid="ignore"):
            usable = (phot.status == STATUS_OK) & (flux > 0) & np.isfinite(flux) & (err > 0) & np.isfinite(err)
            mag = np.where(usable, AB_ZEROPOINT_NJY - 2.5 * np.log10(np.where(usable, flux, 1.0)), np.nan)
        empty = [b for b, ok in zip(bands, usable.any(axis=0)) if not ok]
        if empty:
            raise ValueError(f"ErrorRelation.fit: band column(s) {empty} have no detected galaxy with a positive "
                             "flux and error: the error-vs-magnitude relation cannot be measured")
        # bin edges on multiples of bin_width, so that the same data always give the same grid
        first = np.floor(np.nanmin(mag) / bin_width)
        n_bins = int(np.floor(np.nanmax(mag) / bin_width) - first) + 1
        grid = (first + np.arange(n_bins) + 0.5) * bin_width
        log_err = np.empty((len(bands), n_bins))
        for b, name in enumerate(bands):  # a few bands: each is one vectorised pass over the galaxies
            rows = usable[:, b]
            idx = np.clip((np.floor(mag[rows, b] / bin_width) - first).astype(np.int64), 0, n_bins - 1)
            median, counts = _binned_median(idx, np.log10(err[rows, b]), n_bins)
            filled = counts >= int(min_count)
            if not filled.any():
                raise ValueError(f"ErrorRelation.fit: band column '{name}' has no magnitude bin of width {bin_width} "
                                 f"with at least min_count={min_count} detected galaxies ({rows.sum()} in all)")
            # np.interp interpolates between filled bins and holds the end values beyond them
            log_err[b] = np.interp(grid, grid[filled], median[filled])
        return cls(grid, log_err, bands)

    @classmethod
    def from_table(cls, table: Mapping[str, Any], bands: Sequence[str], err_bands: Sequence[str],
                   mag_limits: Mapping[str, float], nondetect_val: float = 99.0, nonobserved_val: float = -99.0,
                   photometry: str = "magnitudes", **fit_kwargs: Any) -> "ErrorRelation":
        """Fit on the ``bands`` / ``err_bands`` columns of a table, read by :func:`rail.deepz.inputs.read_photometry`.

        ``mag_limits`` only sets the errors of non-detections, which the fit does not use;
        ``fit_kwargs`` (``bin_width``, ``min_count``) go to :meth:`fit`.
        """
        phot = read_photometry(table, bands, err_bands, mag_limits, nondetect_val, nonobserved_val, photometry)
        return cls.fit(phot, bands, **fit_kwargs)

    def flux_errors(self, true_flux: np.ndarray) -> np.ndarray:
        """Flux errors [nJy] (N, B) the survey gives galaxies of true fluxes ``true_flux`` (N, B) [nJy].

        Interpolated in log10 error at each flux's magnitude; a flux <= 0 or not finite gets the
        faintest bin's error (sky-limited).
        """
        true_flux = np.asarray(true_flux, dtype=np.float64)
        if true_flux.ndim != 2 or true_flux.shape[1] != len(self.bands):
            raise ValueError(f"ErrorRelation.flux_errors: true_flux has shape {true_flux.shape}, expected "
                             f"(N, {len(self.bands)}) for bands {self.bands}")
        positive = np.isfinite(true_flux) & (true_flux > 0)
        # a non-positive flux is fainter than any bin: +inf magnitude makes np.interp return the faint end
        mag = np.full(true_flux.shape, np.inf)
        mag[positive] = AB_ZEROPOINT_NJY - 2.5 * np.log10(true_flux[positive])
        log_err = np.stack([np.interp(mag[:, b], self.mag_grid, self.log_flux_err[b])
                            for b in range(len(self.bands))], axis=1)
        return 10.0 ** log_err

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (lists of floats), read back by :meth:`from_dict`."""
        return {"mag_grid": self.mag_grid.tolist(), "log_flux_err": self.log_flux_err.tolist(),
                "bands": list(self.bands)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ErrorRelation":
        """The relation written by :meth:`to_dict`; KeyError naming a missing entry."""
        missing = [k for k in ("mag_grid", "log_flux_err", "bands") if k not in d]
        if missing:
            raise KeyError(f"ErrorRelation.from_dict: entries {missing} missing (expected mag_grid, log_flux_err, "
                           "bands)")
        return cls(np.asarray(d["mag_grid"], dtype=np.float64), np.asarray(d["log_flux_err"], dtype=np.float64),
                   list(d["bands"]))
