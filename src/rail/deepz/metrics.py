"""Photo-z quality metrics: sigma68, catastrophic outliers and PIT statistics.

``PointSigma68`` and ``PointOutlierFraction15`` are qp point-to-point metric classes: importing this
module registers them with RAIL's evaluator stages under the names ``point_stats_sigma68`` and
``point_outlier_frac_015`` (RAIL finds metrics by subclass introspection). In a ceci pipeline, use
:class:`rail.evaluation.deepz_evaluator.DeepzEvaluator`, which imports this module in its own process.

``photoz_scores`` computes the whole table used by the README job and the benchmarks.
"""

from __future__ import annotations

import numpy as np
from qp.metrics.base_metric_classes import MetricOutputType
from qp.metrics.point_estimate_metric_classes import PointToPointMetricDigester

__all__ = [
    "PointSigma68",
    "PointOutlierFraction15",
    "delta_z",
    "sigma68",
    "outlier_fraction",
    "pit_values",
    "pit_statistics",
    "photoz_scores",
    "cde_loss",
]


def delta_z(zphot: np.ndarray, zspec: np.ndarray) -> np.ndarray:
    """(zphot - zspec) / (1 + zspec), shape (N,)."""
    zphot = np.asarray(zphot, dtype=float).ravel()
    zspec = np.asarray(zspec, dtype=float).ravel()
    return (zphot - zspec) / (1.0 + zspec)


def sigma68(zphot: np.ndarray, zspec: np.ndarray) -> float:
    """Half the 15.865-84.135 percentile range of delta_z (Eriksen et al. 2020)."""
    dz = delta_z(zphot, zspec)
    p16, p84 = np.percentile(dz, [15.865, 84.135])
    return float(0.5 * (p84 - p16))


def outlier_fraction(zphot: np.ndarray, zspec: np.ndarray, threshold: float = 0.15) -> float:
    """Fraction of galaxies with |delta_z| > threshold (catastrophic outliers)."""
    return float(np.mean(np.abs(delta_z(zphot, zspec)) > threshold))


class PointSigma68(PointToPointMetricDigester):
    """sigma68 = (P84.1 - P15.9) / 2 of (zphot - zspec) / (1 + zspec)."""

    metric_name = "point_stats_sigma68"
    metric_output_type = MetricOutputType.single_value

    def evaluate(self, estimate, reference):  # pylint: disable=arguments-differ
        return sigma68(estimate, reference)

    def compute_from_digest(self, digest):
        p16, p84 = digest.inverse_cdf([0.15865, 0.84135])
        return 0.5 * (p84 - p16)


class PointOutlierFraction15(PointToPointMetricDigester):
    """Fraction of |zphot - zspec| / (1 + zspec) > 0.15."""

    metric_name = "point_outlier_frac_015"
    metric_output_type = MetricOutputType.single_value

    def evaluate(self, estimate, reference):  # pylint: disable=arguments-differ
        return outlier_fraction(estimate, reference, 0.15)

    def compute_from_digest(self, digest):
        return float(1.0 - digest.cdf(0.15) + digest.cdf(-0.15))


def _chunks(n: int, size: int = 2000):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def pit_values(ens, zspec: np.ndarray) -> np.ndarray:
    """PIT_i = CDF_i(zspec_i) of a qp ensemble, shape (N,), evaluated in chunks to bound memory."""
    zspec = np.asarray(zspec, dtype=float).ravel()
    out = np.empty(zspec.size)
    for sl in _chunks(zspec.size):
        # qp evaluates cdf(x) with x of shape (n, 1) row by row (one point per distribution).
        out[sl] = np.asarray(ens[sl].cdf(zspec[sl, None]), dtype=float).reshape(-1)
    return out


def pit_statistics(pit: np.ndarray) -> dict[str, float]:
    """KS, CvM and AD statistics of PIT values against U(0, 1), and the PIT outlier fraction."""
    from scipy import stats

    pit = np.clip(np.asarray(pit, dtype=float), 0.0, 1.0)
    ks = stats.kstest(pit, "uniform").statistic
    cvm = stats.cramervonmises(pit, "uniform").statistic
    # AD against U(0,1) with the tails clipped like qp does (avoids log(0)).
    x = np.sort(np.clip(pit, 1e-10, 1.0 - 1e-10))
    n = x.size
    i = np.arange(1, n + 1)
    ad = -n - np.mean((2 * i - 1) * (np.log(x) + np.log1p(-x[::-1])))
    out = np.mean((pit < 1e-4) | (pit > 0.9999))
    return dict(pit_ks=float(ks), pit_cvm=float(cvm), pit_ad=float(ad), pit_outlier_rate=float(out))


def photoz_scores(ens, zspec: np.ndarray, point_key: str = "zmode") -> dict[str, float]:
    """All scores of a qp ensemble against true redshifts.

    Returns sigma68, sigma_iqr, bias (median delta_z), outlier_frac (|dz| > 0.15), PIT KS/CvM/AD,
    PIT outlier rate and the CDE loss on the 301-point grid 0-3 (as RAIL's evaluator).
    """
    zspec = np.asarray(zspec, dtype=float).ravel()
    zphot = np.asarray(ens.ancil[point_key], dtype=float).ravel()
    dz = delta_z(zphot, zspec)
    q25, q75 = np.percentile(dz, [25.0, 75.0])
    scores = dict(
        n=int(zspec.size),
        sigma68=sigma68(zphot, zspec),
        sigma_iqr=float((q75 - q25) / 1.349),
        bias=float(np.median(dz)),
        outlier_frac=outlier_fraction(zphot, zspec, 0.15),
    )
    scores.update(pit_statistics(pit_values(ens, zspec)))
    scores["cde_loss"] = cde_loss(ens, zspec)
    return scores


def cde_loss(ens, zspec: np.ndarray, zmin: float = 0.0, zmax: float = 3.0, nz: int = 301) -> float:
    """CDE loss (Izbicki & Lee 2017) as qp's CDELossMetric on a regular grid:
    mean of the trapezoid integral of p^2 minus twice the mean of p at the grid point nearest z_true.
    Evaluated in chunks of 2,000 PDFs so memory stays bounded for many-component mixtures."""
    zspec = np.asarray(zspec, dtype=float).ravel()
    zgrid = np.linspace(zmin, zmax, nz)
    idx = np.clip(np.rint((zspec - zmin) / (zgrid[1] - zgrid[0])).astype(int), 0, nz - 1)
    term1 = term2 = 0.0
    for sl in _chunks(zspec.size):
        pdfs = np.asarray(ens[sl].pdf(zgrid), dtype=float)
        term1 += float(np.sum(np.trapezoid(pdfs**2, x=zgrid, axis=1)))
        term2 += float(np.sum(pdfs[np.arange(pdfs.shape[0]), idx[sl]]))
    return (term1 - 2.0 * term2) / zspec.size
