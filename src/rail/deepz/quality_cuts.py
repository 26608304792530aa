"""Quality cuts: photo-z scatter and outlier rate against completeness (Eriksen et al. 2020, Fig. 9).

Galaxies are ranked by a quality quantity (Deepz's ``ancil["odds"]``, or any other: a PDF width, a
classifier score); keeping the best fraction ``c`` (the *completeness*) of the sample, the curves give
sigma68 and the outlier rate of the kept galaxies as a function of ``c``.

Everything is vectorised: the sample is sorted once by rank and once by delta_z; the outlier rate
comes from a cumulative sum, and the percentiles of every kept subset from cumulative membership
counts in delta_z order (blocks of completeness values bound the memory), reproducing
``numpy.percentile`` (linear interpolation) on each subset exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metrics import delta_z

__all__ = [
    "CompletenessCurves", "completeness_curves", "prefix_percentiles", "select_by_completeness",
    "odds_from_ensemble", "binned_scores",
]

_P16, _P84 = 15.865, 84.135


@dataclass
class CompletenessCurves:
    """sigma68 and outlier rate of the best-ranked fraction of a sample; all arrays have shape (M,).

    Attributes
    ----------
    completeness : numpy.ndarray
        Requested fractions kept, in (0, 1].
    n_kept : numpy.ndarray
        Galaxies kept, ceil(completeness * N) (at least 1).
    threshold : numpy.ndarray
        Rank value of the last galaxy kept (keep ``rank >= threshold``, or ``<=`` when lower ranks
        are better).
    sigma68 : numpy.ndarray
        (P84.135 - P15.865) / 2 of delta_z = (zphot - zspec) / (1 + zspec) of the kept galaxies.
    outlier_rate : numpy.ndarray
        Fraction of kept galaxies with ``|delta_z| > outlier_threshold``.
    bias : numpy.ndarray
        Median delta_z of the kept galaxies.
    """

    completeness: np.ndarray
    n_kept: np.ndarray
    threshold: np.ndarray
    sigma68: np.ndarray
    outlier_rate: np.ndarray
    bias: np.ndarray
    outlier_threshold: float = 0.15

    def as_dict(self) -> dict[str, list[float]]:
        """Plain lists (JSON-friendly)."""
        return {k: np.asarray(getattr(self, k)).tolist() for k in
                ("completeness", "n_kept", "threshold", "sigma68", "outlier_rate", "bias")}

    def at(self, completeness: float) -> dict[str, float]:
        """Values at the completeness point nearest ``completeness``."""
        i = int(np.argmin(np.abs(self.completeness - completeness)))
        return dict(completeness=float(self.completeness[i]), sigma68=float(self.sigma68[i]),
                    outlier_rate=float(self.outlier_rate[i]), bias=float(self.bias[i]),
                    threshold=float(self.threshold[i]), n_kept=int(self.n_kept[i]))


def _n_kept(completeness: np.ndarray, n: int) -> np.ndarray:
    c = np.asarray(completeness, dtype=float).ravel()
    if c.size == 0 or np.any(~np.isfinite(c)) or np.any(c <= 0) or np.any(c > 1):
        raise ValueError("completeness values must be in (0, 1]")
    # small tolerance so that e.g. 0.3 * 10 keeps 3, not 4, galaxies
    return np.clip(np.ceil(c * n - 1e-9).astype(np.int64), 1, n)


def prefix_percentiles(values: np.ndarray, order: np.ndarray, n_kept: np.ndarray, q: np.ndarray,
                       block_elements: int = 20_000_000) -> np.ndarray:
    """Percentiles of the first ``n_kept[m]`` values taken in ``order``, for every m, without a loop
    over galaxies.

    Parameters
    ----------
    values : array (N,)
        The values (e.g. delta_z).
    order : int array (N,)
        A permutation: ``values[order[:k]]`` is the subset of size k.
    n_kept : int array (M,)
        Subset sizes, 1 <= n_kept <= N.
    q : array (Q,)
        Percentiles in [0, 100].
    block_elements : int
        Largest (subsets x N) boolean block held in memory at once.

    Returns
    -------
    array (M, Q)
        Equal to ``np.percentile(values[order[:k]], q)`` (linear interpolation) for each k.
    """
    values = np.asarray(values, dtype=float).ravel()
    n = values.size
    n_kept = np.asarray(n_kept, dtype=np.int64).ravel()
    q = np.asarray(q, dtype=float).ravel()
    by_value = np.argsort(values, kind="stable")
    sorted_values = values[by_value]
    position = np.empty(n, dtype=np.int64)  # position of each galaxy in the ranking order
    position[order] = np.arange(n)
    pos_in_value_order = position[by_value]  # (N,)
    # linear interpolation between the floor(h)-th and next smallest values of each subset
    h = (n_kept[:, None] - 1) * (q[None, :] / 100.0)  # (M, Q)
    lo = np.floor(h).astype(np.int64)
    frac = h - lo
    hi = np.minimum(lo + 1, n_kept[:, None] - 1)
    out = np.empty((n_kept.size, q.size))
    rows_per_block = max(1, int(block_elements // max(n, 1)))
    for b in range(0, n_kept.size, rows_per_block):
        rows = slice(b, b + rows_per_block)
        k = n_kept[rows]
        m = k.size
        # counts[m, j]: members of subset m among the j + 1 smallest values (non-decreasing along j)
        counts = np.cumsum(pos_in_value_order[None, :] < k[:, None], axis=1, dtype=np.int64)
        # offset every row so that the flattened array is sorted: one searchsorted finds, for all
        # subsets at once, the first j where the count reaches idx + 1 (the (idx+1)-th smallest member)
        offset = np.arange(m, dtype=np.int64)[:, None] * (n + 1)
        flat = (counts + offset).ravel()
        row_start = (np.arange(m, dtype=np.int64) * n)[:, None]
        j_lo = np.searchsorted(flat, (lo[rows] + 1 + offset).ravel()).reshape(m, -1) - row_start
        j_hi = np.searchsorted(flat, (hi[rows] + 1 + offset).ravel()).reshape(m, -1) - row_start
        out[rows] = (1.0 - frac[rows]) * sorted_values[j_lo] + frac[rows] * sorted_values[j_hi]
    return out


def completeness_curves(zphot: np.ndarray, zspec: np.ndarray, rank: np.ndarray,
                        completeness: np.ndarray | None = None, higher_is_better: bool = True,
                        outlier_threshold: float = 0.15) -> CompletenessCurves:
    """sigma68, outlier rate and bias of the best-ranked galaxies against completeness (paper Fig. 9).

    Parameters
    ----------
    zphot, zspec : arrays (N,)
        Point estimates (e.g. ``ancil["zmode"]``) and true redshifts.
    rank : array (N,)
        Quality quantity, e.g. ODDS (``ancil["odds"]``); NaN ranks are treated as worst.
    completeness : array (M,), optional
        Fractions kept, in (0, 1]; default 0.05, 0.10, ..., 1.
    higher_is_better : bool
        True for ODDS-like quantities, False for e.g. a PDF width.
    outlier_threshold : float
        |delta_z| above which a galaxy is an outlier (paper: 0.15 is the usual catastrophic cut).

    Returns
    -------
    CompletenessCurves
        Arrays of shape (M,). Ties in ``rank`` are broken by input order.
    """
    dz = delta_z(zphot, zspec)
    rank = np.asarray(rank, dtype=float).ravel()
    n = dz.size
    if n == 0 or rank.size != n:
        raise ValueError(f"zphot, zspec and rank need the same non-zero length, got {n} and {rank.size}")
    if not np.all(np.isfinite(dz)):
        raise ValueError("zphot and zspec must be finite")
    c = np.arange(1, 21) / 20.0 if completeness is None else np.asarray(completeness, dtype=float).ravel()
    k = _n_kept(c, n)
    key = np.where(np.isnan(rank), -np.inf, rank if higher_is_better else -rank)
    order = np.argsort(-key, kind="stable")  # best first
    outliers = np.cumsum(np.abs(dz[order]) > outlier_threshold)
    pct = prefix_percentiles(dz, order, k, np.array([_P16, 50.0, _P84]))
    return CompletenessCurves(
        completeness=c, n_kept=k, threshold=rank[order][k - 1], sigma68=0.5 * (pct[:, 2] - pct[:, 0]),
        outlier_rate=outliers[k - 1] / k, bias=pct[:, 1], outlier_threshold=float(outlier_threshold))


def select_by_completeness(rank: np.ndarray, completeness: float, higher_is_better: bool = True) -> np.ndarray:
    """Boolean mask (N,) keeping the best ``ceil(completeness * N)`` galaxies by ``rank`` (ties: input order)."""
    rank = np.asarray(rank, dtype=float).ravel()
    k = int(_n_kept(np.array([completeness]), rank.size)[0])
    key = np.where(np.isnan(rank), -np.inf, rank if higher_is_better else -rank)
    mask = np.zeros(rank.size, dtype=bool)
    mask[np.argsort(-key, kind="stable")[:k]] = True
    return mask


def odds_from_ensemble(ens, zpoint: np.ndarray, window: float = 0.06, chunk: int = 2000) -> np.ndarray:
    """BPZ-like ODDS of any qp ensemble: P(|z - zpoint| < window (1 + zpoint)), shape (N,).

    Deepz's estimator writes the same quantity as ``ancil["odds"]`` (option ``odds_window``); this
    gives it for other estimators' PDFs so that all can be cut alike.
    """
    zpoint = np.asarray(zpoint, dtype=float).ravel()
    half = window * (1.0 + zpoint)
    out = np.empty(zpoint.size)
    for start in range(0, zpoint.size, chunk):
        sl = slice(start, min(start + chunk, zpoint.size))
        sub = ens[sl]
        hi = np.asarray(sub.cdf((zpoint[sl] + half[sl])[:, None]), dtype=float).reshape(-1)
        lo = np.asarray(sub.cdf((zpoint[sl] - half[sl])[:, None]), dtype=float).reshape(-1)
        out[sl] = hi - lo
    return np.clip(out, 0.0, 1.0)


def binned_scores(x: np.ndarray, zphot: np.ndarray, zspec: np.ndarray, bins: np.ndarray | int = 10,
                  outlier_threshold: float = 0.15, min_count: int = 5) -> dict[str, np.ndarray]:
    """sigma68, outlier rate, bias and counts of delta_z in bins of ``x`` (e.g. magnitude, zspec).

    Parameters
    ----------
    x : array (N,)
        Binning quantity; NaN / inf values are left out.
    bins : int or array (B + 1,)
        Bin edges, or a number of equal-count bins.
    min_count : int
        Bins with fewer galaxies get NaN scores.

    Returns
    -------
    dict of arrays (B,)
        ``center`` (median x in the bin), ``edges`` (B + 1,), ``count``, ``sigma68``, ``outlier_rate``, ``bias``.
    """
    x = np.asarray(x, dtype=float).ravel()
    dz = delta_z(zphot, zspec)
    ok = np.isfinite(x) & np.isfinite(dz)
    x, dz = x[ok], dz[ok]
    edges = (np.quantile(x, np.linspace(0, 1, int(bins) + 1)) if np.isscalar(bins)
             else np.asarray(bins, dtype=float))
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, edges.size - 2)
    inside = (x >= edges[0]) & (x <= edges[-1])
    idx, xs, dzs = idx[inside], x[inside], dz[inside]
    nb = edges.size - 1
    count = np.bincount(idx, minlength=nb)
    res = {key: np.full(nb, np.nan) for key in ("center", "sigma68", "outlier_rate", "bias")}
    order = np.argsort(idx, kind="stable")
    starts = np.concatenate([[0], np.cumsum(count)])
    for b in range(nb):  # a loop over bins; each bin's statistics are numpy calls
        if count[b] < max(1, min_count):
            continue
        d = dzs[order[starts[b]:starts[b + 1]]]
        p16, p50, p84 = np.percentile(d, [_P16, 50.0, _P84])
        res["sigma68"][b] = 0.5 * (p84 - p16)
        res["bias"][b] = p50
        res["outlier_rate"][b] = np.mean(np.abs(d) > outlier_threshold)
        res["center"][b] = np.median(xs[order[starts[b]:starts[b + 1]]])
    res.update(edges=edges, count=count)
    return res
