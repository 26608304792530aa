"""Plot helpers for photo-z results: PIT histogram + QQ, zphot-zspec density, sigma68 against
magnitude / redshift, quality-cut completeness curves, PDFs with their true redshift.

matplotlib is an optional dependency (``pip install "pz-rail-deepz[plots]"``); it is imported inside
each function. Every helper draws on the given axes (or makes a figure) and returns ``(fig, axes)``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from .quality_cuts import CompletenessCurves, binned_scores

__all__ = [
    "require_matplotlib", "plot_pit", "plot_zphot_zspec", "plot_sigma68_vs", "plot_sigma68_vs_magnitude",
    "plot_sigma68_vs_redshift", "plot_completeness_curves", "plot_pdfs",
]


def require_matplotlib() -> Any:
    """Import and return ``matplotlib.pyplot``, with an installation hint when it is missing."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            "rail.deepz.plots needs matplotlib: pip install 'pz-rail-deepz[plots]' (or pip install matplotlib)"
        ) from exc
    return plt


def _axes(ax: Any, ncols: int = 1, figsize: tuple[float, float] | None = None) -> tuple[Any, Any]:
    plt = require_matplotlib()
    if ax is not None:
        axes = np.atleast_1d(ax)
        if axes.size != ncols:
            raise ValueError(f"expected {ncols} axes, got {axes.size}")
        return axes.flat[0].figure, (axes.flat[0] if ncols == 1 else list(axes.flat))
    fig, axes = plt.subplots(1, ncols, figsize=figsize or (4.5 * ncols, 4.0), squeeze=False, layout="constrained")
    axes = list(axes[0])
    return fig, (axes[0] if ncols == 1 else axes)


def plot_pit(pit: np.ndarray | Mapping[str, np.ndarray], bins: int = 50, ax: Any = None) -> tuple[Any, list]:
    """PIT histogram (left) and PIT QQ plot (right), one curve per entry.

    Parameters
    ----------
    pit : array (N,) or dict label -> array
        PIT values CDF_i(z_true,i) in [0, 1] (e.g. :func:`rail.deepz.metrics.pit_values`).
    bins : int
        Histogram bins on [0, 1].
    ax : two axes, optional

    Returns
    -------
    fig, [ax_hist, ax_qq]
    """
    fig, (ax_h, ax_q) = _axes(ax, 2)
    series = pit if isinstance(pit, Mapping) else {"PIT": pit}
    q = np.linspace(0.0, 1.0, 101)
    for label, values in series.items():
        values = np.clip(np.asarray(values, dtype=float).ravel(), 0.0, 1.0)
        ax_h.hist(values, bins=bins, range=(0, 1), density=True, histtype="step", lw=1.5, label=label)
        ax_q.plot(q, np.quantile(values, q), lw=1.5, label=label)
    ax_h.axhline(1.0, color="k", ls="--", lw=1)
    ax_h.set(xlabel="PIT", ylabel="density", xlim=(0, 1), title="PIT histogram")
    ax_q.plot([0, 1], [0, 1], "k--", lw=1)
    ax_q.set(xlabel="Q theory (uniform)", ylabel="Q data", xlim=(0, 1), ylim=(0, 1), title="PIT QQ")
    ax_h.legend(fontsize="small")
    return fig, [ax_h, ax_q]


def plot_zphot_zspec(zphot: np.ndarray, zspec: np.ndarray, zmax: float = 3.0, bins: int = 120,
                     outlier_threshold: float = 0.15, ax: Any = None, label: str | None = None) -> tuple[Any, Any]:
    """2-D density of zphot against zspec (log colour scale), with the 1:1 line and the outlier bounds.

    Returns
    -------
    fig, ax
    """
    from matplotlib.colors import LogNorm

    fig, ax = _axes(ax)
    zphot = np.asarray(zphot, dtype=float).ravel()
    zspec = np.asarray(zspec, dtype=float).ravel()
    h = ax.hist2d(zspec, zphot, bins=bins, range=[[0, zmax], [0, zmax]], norm=LogNorm(), cmap="viridis")
    fig.colorbar(h[3], ax=ax, label="galaxies")
    z = np.array([0.0, zmax])
    ax.plot(z, z, "w-", lw=0.8)
    for sign in (1, -1):
        ax.plot(z, z + sign * outlier_threshold * (1 + z), "w--", lw=0.8)
    ax.set(xlabel="z spec", ylabel="z phot", xlim=(0, zmax), ylim=(0, zmax), title=label or "z phot vs z spec")
    return fig, ax


def plot_sigma68_vs(x: np.ndarray, zphot: np.ndarray | Mapping[str, np.ndarray], zspec: np.ndarray,
                    bins: np.ndarray | int = 10, xlabel: str = "x", outlier_threshold: float = 0.15,
                    ax: Any = None) -> tuple[Any, list]:
    """sigma68 (left) and outlier rate (right) of delta_z in bins of ``x``; one curve per estimator.

    Parameters
    ----------
    x : array (N,)
        Binning quantity (magnitude, zspec, ...).
    zphot : array (N,) or dict label -> array (N,)
    zspec : array (N,)
    bins : int or edges
        Number of equal-count bins (computed on ``x``) or bin edges.

    Returns
    -------
    fig, [ax_sigma68, ax_outliers]
    """
    fig, (ax_s, ax_o) = _axes(ax, 2)
    series = zphot if isinstance(zphot, Mapping) else {"": zphot}
    x = np.asarray(x, dtype=float).ravel()
    if np.isscalar(bins):
        fin = x[np.isfinite(x)]
        bins = np.quantile(fin, np.linspace(0, 1, int(bins) + 1))
    for label, zp in series.items():
        res = binned_scores(x, zp, zspec, bins=bins, outlier_threshold=outlier_threshold)
        ax_s.plot(res["center"], res["sigma68"], "o-", ms=3, label=label or None)
        ax_o.plot(res["center"], res["outlier_rate"], "o-", ms=3, label=label or None)
    ax_s.set(xlabel=xlabel, ylabel=r"$\sigma_{68}$")
    ax_o.set(xlabel=xlabel, ylabel=f"outlier rate (|dz|/(1+z) > {outlier_threshold:g})")
    if len(series) > 1 or "" not in series:
        ax_s.legend(fontsize="small")
    return fig, [ax_s, ax_o]


def plot_sigma68_vs_magnitude(mag: np.ndarray, zphot: Any, zspec: np.ndarray, bins: Any = 8,
                              band: str = "i", ax: Any = None) -> tuple[Any, list]:
    """:func:`plot_sigma68_vs` against a magnitude (default 8 equal-count bins)."""
    mag = np.where(np.asarray(mag, dtype=float) > 50, np.nan, mag)  # non-detections (99) out
    return plot_sigma68_vs(mag, zphot, zspec, bins=bins, xlabel=f"{band} [mag]", ax=ax)


def plot_sigma68_vs_redshift(zspec: np.ndarray, zphot: Any, bins: Any = None, ax: Any = None,
                             zmax: float = 3.0) -> tuple[Any, list]:
    """:func:`plot_sigma68_vs` against the true redshift (default 12 bins of width zmax / 12)."""
    bins = np.linspace(0.0, zmax, 13) if bins is None else bins
    return plot_sigma68_vs(zspec, zphot, zspec, bins=bins, xlabel="z spec", ax=ax)


def plot_completeness_curves(curves: CompletenessCurves | Mapping[str, CompletenessCurves],
                             ax: Any = None) -> tuple[Any, list]:
    """sigma68 (left) and outlier rate (right) against completeness, one curve per entry (paper Fig. 9).

    Parameters
    ----------
    curves : CompletenessCurves or dict label -> CompletenessCurves
        From :func:`rail.deepz.quality_cuts.completeness_curves`.

    Returns
    -------
    fig, [ax_sigma68, ax_outliers]
    """
    fig, (ax_s, ax_o) = _axes(ax, 2)
    series = curves if isinstance(curves, Mapping) else {"": curves}
    for label, c in series.items():
        ax_s.plot(c.completeness, c.sigma68, "o-", ms=3, label=label or None)
        ax_o.plot(c.completeness, c.outlier_rate, "o-", ms=3, label=label or None)
    thr = next(iter(series.values())).outlier_threshold
    ax_s.set(xlabel="completeness", ylabel=r"$\sigma_{68}$", xlim=(0, 1.02))
    ax_o.set(xlabel="completeness", ylabel=f"outlier rate (|dz|/(1+z) > {thr:g})", xlim=(0, 1.02))
    if "" not in series:
        ax_s.legend(fontsize="small")
    return fig, [ax_s, ax_o]


def plot_pdfs(ens: Any, ztrue: np.ndarray, indices: Sequence[int], zgrid: np.ndarray | None = None,
              point_key: str | None = "zmode", ax: Any = None) -> tuple[Any, Any]:
    """PDFs of a few galaxies of a qp ensemble with their true redshift (dashed) and point estimate (dotted).

    Returns
    -------
    fig, ax
    """
    fig, ax = _axes(ax, figsize=(6.0, 4.0))
    zgrid = np.linspace(0.0, 3.0, 601) if zgrid is None else np.asarray(zgrid)
    ztrue = np.asarray(ztrue, dtype=float).ravel()
    idx = np.asarray(list(indices), dtype=int)
    pdfs = np.asarray(ens[idx].pdf(zgrid), dtype=float).reshape(idx.size, -1)
    point = None
    if point_key and ens.ancil is not None and point_key in ens.ancil:
        point = np.asarray(ens.ancil[point_key], dtype=float).ravel()
    for row, i in enumerate(idx):
        line, = ax.plot(zgrid, pdfs[row], lw=1.5, label=f"galaxy {i}")
        ax.axvline(ztrue[i], color=line.get_color(), ls="--", lw=1)
        if point is not None:
            ax.axvline(point[i], color=line.get_color(), ls=":", lw=1)
    ax.set(xlabel="z", ylabel="p(z)", xlim=(zgrid[0], zgrid[-1]),
           title="PDFs (dashed: true z" + (f", dotted: {point_key})" if point is not None else ")"))
    ax.legend(fontsize="small")
    return fig, ax

