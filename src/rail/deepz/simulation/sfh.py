"""Star-formation histories as mass weights on an SSP age grid (vectorised over galaxies).

The SSP spectrum is treated as piecewise linear in age between grid ages (constant below the youngest
age), so a composite spectrum int SFR(t) L(t) dt is exactly sum_j w_j L_j with hat-function weights
w_j = int SFR(t) h_j(t) dt. The integrals are analytic for the tau (SFR ~ exp(-u/tau)) and delayed
(SFR ~ u exp(-u/tau)) models, u = time since ``sf_start``, plus a constant-SFR fraction ``const``
(the FSPS ``sfh=1`` / ``sfh=4`` parameterisation, Conroy et al. 2009).
"""

from __future__ import annotations

import numpy as np

SFH_KINDS = ("tau", "delayed")


def _primitives(u: np.ndarray, tau: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Antiderivatives G0 = int g(u) du and G1 = int u g(u) du of the SFH shape g."""
    e = np.exp(-u / tau)
    if kind == "tau":
        return -tau * e, -tau * e * (u + tau)
    return -tau * e * (u + tau), -tau * e * (u * u + 2.0 * tau * u + 2.0 * tau * tau)


def _moments(x1, x2, duration, tau, kind, const):
    """Mass moments A = int SFR dx and B = int x SFR dx over lookback time [x1, x2] (clipped to [0, D])."""
    x1 = np.clip(x1, 0.0, duration)
    x2 = np.clip(x2, 0.0, duration)
    u1, u2 = duration - x1, duration - x2  # u1 >= u2
    g0a, g1a = _primitives(u1, tau, kind)
    g0b, g1b = _primitives(u2, tau, kind)
    a_shape = g0a - g0b  # int_{u2}^{u1} g du
    mu_shape = g1a - g1b
    b_shape = duration * a_shape - mu_shape  # int x g with x = D - u
    g0d, _ = _primitives(duration, tau, kind)
    g00, _ = _primitives(np.zeros_like(duration), tau, kind)
    norm = g0d - g00  # total shape mass over [0, D]
    a = (1.0 - const) * a_shape / norm + const * (x2 - x1) / duration
    b = (1.0 - const) * b_shape / norm + const * (x2 * x2 - x1 * x1) / (2.0 * duration)
    return a, b


def sfh_weights(age_gyr: np.ndarray, tage: np.ndarray, sf_start: np.ndarray, tau: np.ndarray,
                const: np.ndarray, kind: str = "tau") -> np.ndarray:
    """Mass formed per SSP age node, normalised to 1 M_sun formed in total.

    Parameters
    ----------
    age_gyr : (n_age,) increasing SSP ages [Gyr].
    tage, sf_start, tau, const : (N,) observation age, start of star formation, e-folding time [Gyr]
        and the fraction of mass formed at a constant rate.
    kind : ``"tau"`` (exponentially declining) or ``"delayed"`` (t exp(-t/tau)).

    Returns
    -------
    (N, n_age) weights w with sum_j w_j = 1, such that the composite is sum_j w_j L_j.
    """
    if kind not in SFH_KINDS:
        raise ValueError(f"sfh kind {kind!r} not in {SFH_KINDS}")
    cols = lambda v: np.asarray(v, dtype=float)[:, None]  # noqa: E731
    duration = np.maximum(cols(tage) - cols(sf_start), 1e-6)
    tau_c, const_c = cols(tau), cols(const)
    ages = np.asarray(age_gyr, dtype=float)
    n, n_age = duration.shape[0], ages.size
    w = np.zeros((n, n_age))
    # [0, a_0]: constant spectrum L_0
    a0, _ = _moments(np.zeros((n, 1)), np.full((n, 1), ages[0]), duration, tau_c, kind, const_c)
    w[:, :1] += a0
    # [a_j, a_j+1]: linear interpolation between L_j and L_j+1
    lo, hi = ages[:-1][None, :], ages[1:][None, :]
    a, b = _moments(np.broadcast_to(lo, (n, n_age - 1)), np.broadcast_to(hi, (n, n_age - 1)),
                    duration, tau_c, kind, const_c)
    upper = (b - lo * a) / (hi - lo)
    w[:, :-1] += a - upper
    w[:, 1:] += upper
    # beyond the oldest node: constant L_last
    a_end, _ = _moments(np.full((n, 1), ages[-1]), duration, duration, tau_c, kind, const_c)
    w[:, -1:] += a_end
    return np.clip(w, 0.0, None)
