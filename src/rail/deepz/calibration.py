"""Calibrating ensemble PDFs on held-out folds.

The pooled PDF of an MDN ensemble is sharp but not calibrated. :class:`Calibration` keeps the
output a Gaussian mixture and has five main parameters (models informed with a target add the
coverage-dependent terms described on the class): ``recenter`` (members shifted toward the
ensemble mean before pooling) and ``ambiguity`` (each pooled PDF narrowed so its variance drops by
that fraction of the members' spread, the ambiguity decomposition) are set by the user;
``std_scale`` (component widths) and ``shift`` (component means moved by ``shift x sigma``) are
fitted, and ``weight_power`` (component weights ``w^t``, renormalised) only on request.
:func:`fit_calibration` fits them on out-of-fold predictions by minimising the Cramer-von Mises
distance of the PIT values from U(0, 1); the test data are never used. The documentation's
calibration page explains each term.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from . import mixture

__all__ = ["Calibration", "apply_calibration", "pool_members", "fit_calibration", "fit_disagreement", "pit_cvm",
           "held_out_scores"]


@dataclass
class Calibration:
    """Calibration parameters (identity by default)."""

    recenter: float = 0.0
    std_scale: float | list[float] = 1.0
    weight_power: float | list[float] = 1.0
    shift: float | list[float] = 0.0
    ambiguity: float = 0.0
    # models informed with a target: a galaxy of coverage c (rail.deepz.target_shift) has its
    # widths scaled by 1 + (uncovered_scale - 1)(1 - c) and its means moved by uncovered_shift (1 - c) sigma
    uncovered_scale: float = 1.0
    uncovered_shift: float = 0.0
    # recentring and ambiguity narrowing act in proportion to the coverage: members' disagreement
    # is kept where the spec-z sample did not constrain them
    spread_by_coverage: bool = False
    # the width scale acts in proportion to the coverage (a galaxy of coverage c has its widths
    # scaled by std_scale^c): fitted on the spec-z galaxies, it describes how sharp the networks are
    # where they were trained, and beyond the spec-z sample the networks' own widths are kept
    scale_by_coverage: bool = False
    # pooled ensembles (target_start): the members form this many equal contiguous groups (e.g.
    # fine-tuned, from scratch); recentring and ambiguity narrowing act within each group, so the
    # pooled PDF keeps the groups' disagreement, and weight_power, std_scale and shift may be lists
    # of one value per group (each group calibrated on its own)
    groups: int = 1
    # with two groups, > 0: the PDF is the first group's alone, each component's variance raised by
    # disagreement x (difference of the two groups' mean redshifts)^2; the second group only measures
    # how far an independently trained ensemble lands (an epistemic width, largest beyond the spec-z sample)
    disagreement: float = 0.0

    def to_dict(self) -> dict:
        out = asdict(self)
        if self.uncovered_scale == 1.0 and self.uncovered_shift == 0.0:  # not fitted: kept out of the metadata
            del out["uncovered_scale"], out["uncovered_shift"]
        if not self.spread_by_coverage:
            del out["spread_by_coverage"]
        if not self.scale_by_coverage:
            del out["scale_by_coverage"]
        if self.groups == 1:
            del out["groups"]
        if self.disagreement == 0.0:
            del out["disagreement"]
        return out

    @property
    def uses_coverage(self) -> bool:
        return (self.spread_by_coverage or self.scale_by_coverage or self.uncovered_scale != 1.0
                or self.uncovered_shift != 0.0)

    def output_members(self, n_members: int) -> int:
        """How many of ``n_members`` networks' mixtures the calibrated PDF holds."""
        return n_members // 2 if self.disagreement != 0.0 else n_members


def apply_calibration(
    log_w: torch.Tensor, means: torch.Tensor, stds: torch.Tensor, cal: Calibration,
    coverage: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Calibrate per-member mixtures (M, N, G); returns (log_w, means, stds) of the same shape
    ((M / 2, N, G) with the ``disagreement`` term: the first group's members).

    ``coverage`` (N,): the galaxies' coverage, used by the ``uncovered_*`` terms,
    ``spread_by_coverage`` and ``scale_by_coverage`` (1 when None).
    """
    n_members = means.shape[0]
    if n_members % cal.groups:
        raise ValueError(f"calibration groups {cal.groups} do not divide the {n_members} members")
    k = n_members // cal.groups  # members per group

    def per_member(value: float | list[float]) -> float | torch.Tensor:
        """A scalar, or (M, 1, 1) from one value per group."""
        if isinstance(value, (int, float)):
            return float(value)
        if len(value) != cal.groups:
            raise ValueError(f"calibration has {len(value)} per-group values for {cal.groups} groups")
        return torch.as_tensor(value, dtype=means.dtype, device=means.device).repeat_interleave(k).reshape(-1, 1, 1)

    power, shift, scale = per_member(cal.weight_power), per_member(cal.shift), per_member(cal.std_scale)
    c = None if coverage is None else coverage.to(means.dtype).clamp(0.0, 1.0).reshape(1, -1, 1)  # (1, N, 1)
    if not isinstance(power, float) or power != 1.0:
        log_w = torch.log_softmax(log_w * power, dim=-1)
    pooled = k > 1
    weights = spread = None
    if pooled and (cal.recenter != 0.0 or cal.ambiguity != 0.0):
        weights = torch.exp(log_w)  # (M, N, G), each member's weights summing to 1
        member_mean = (weights * means).sum(-1, keepdim=True).unflatten(0, (cal.groups, k))  # (groups, k, N, 1)
        offset = (member_mean - member_mean.mean(1, keepdim=True)).flatten(0, 1)  # (M, N, 1)
        spread = (offset * offset).unflatten(0, (cal.groups, k)).mean(1)  # (groups, N, 1): each group's ambiguity A
        if c is not None and cal.spread_by_coverage:
            offset, spread = offset * c, spread * c
        if cal.recenter != 0.0:
            means = means - cal.recenter * offset
    if not isinstance(shift, float) or shift != 0.0:
        means = means + shift * stds
    if not isinstance(scale, float) or scale != 1.0:
        if c is not None and cal.scale_by_coverage:
            stds = stds * torch.as_tensor(scale, dtype=stds.dtype, device=stds.device) ** c
        else:
            stds = stds * scale
    if c is not None and (cal.uncovered_scale != 1.0 or cal.uncovered_shift != 0.0):
        u = 1.0 - c
        means = means + cal.uncovered_shift * u * stds
        stds = stds * (1.0 + (cal.uncovered_scale - 1.0) * u)
    if pooled and cal.ambiguity != 0.0:
        assert weights is not None and spread is not None
        narrowed = [_narrow_pool(weights[g * k:(g + 1) * k], means[g * k:(g + 1) * k], stds[g * k:(g + 1) * k],
                                 cal.ambiguity * spread[g]) for g in range(cal.groups)]
        means, stds = torch.cat([m for m, _ in narrowed]), torch.cat([s for _, s in narrowed])
    if cal.disagreement != 0.0:
        if cal.groups != 2:
            raise ValueError(f"calibration term 'disagreement' needs 2 member groups, not {cal.groups}")
        group_mean = (torch.exp(log_w) * means).sum(-1).unflatten(0, (2, k)).mean(1)  # (2, N)
        gap2 = (group_mean[0] - group_mean[1]).square().reshape(1, -1, 1)  # (1, N, 1)
        log_w, means = log_w[:k], means[:k]
        stds = torch.sqrt(stds[:k].square() + cal.disagreement * gap2)
    return log_w, means, stds


_MIN_UNCOVERED_ROWS = 100  # effective rows of low coverage needed to fit the uncovered_* terms
_MIN_VARIANCE_FRACTION = 0.25  # the ambiguity narrowing keeps at least this fraction of the pooled variance


def _narrow_pool(weights: torch.Tensor, means: torch.Tensor, stds: torch.Tensor, reduction: torch.Tensor):
    """Scale each galaxy's pooled mixture about its mean so its variance V becomes V - reduction.

    weights (each member's summing to 1), means, stds (M, N, G); reduction (N, 1). The factor f = sqrt(1 - reduction / V) (at
    least sqrt(_MIN_VARIANCE_FRACTION)) multiplies every component width and every component's
    distance from the pooled mean, so the pooled mean is unchanged and the variance scales by f^2.
    """
    w = weights / means.shape[0]  # pooled weights
    mu = (w * means).sum(dim=(0, 2)).unsqueeze(-1)  # (N, 1)
    d = means - mu
    var = (w * (stds * stds + d * d)).sum(dim=(0, 2)).unsqueeze(-1)
    f = torch.sqrt(torch.clamp(1.0 - reduction / var.clamp_min(1e-30), min=_MIN_VARIANCE_FRACTION))
    return mu + f * d, stds * f


def pool_members(
    log_w: torch.Tensor, means: torch.Tensor, stds: torch.Tensor, cal: Calibration,
    coverage: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Calibrate and pool (M, N, G) member mixtures into (N, M*G) weights, means, stds."""
    return mixture.combine_members(*apply_calibration(log_w, means, stds, cal, coverage))


def pit_cvm(pit: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Cramer-von Mises statistic of PIT values (N,) against U(0, 1) (lower is better).

    With ``weights`` (N,) the PIT distribution is the weighted one (e.g. re-weighted to a target
    population): n_eff x integral of (F_w(t) - t)^2 dt, n_eff = (sum w)^2 / sum w^2, which is the
    usual statistic for equal weights.
    """
    if weights is None:
        x = np.sort(np.clip(pit, 0.0, 1.0))
        n = x.size
        return float(1.0 / (12 * n) + np.sum((x - (2 * np.arange(1, n + 1) - 1) / (2 * n)) ** 2))
    order = np.argsort(pit)
    x = np.clip(np.asarray(pit, dtype=np.float64)[order], 0.0, 1.0)
    w = np.asarray(weights, dtype=np.float64)[order]
    total = w.sum()
    n_eff = total**2 / np.sum(w * w)
    edges = np.r_[0.0, x, 1.0]
    level = np.r_[0.0, np.cumsum(w) / total]  # F_w on [edges[k], edges[k + 1])
    # integral of (c - t)^2 over [a, b] = ((b - c)^3 - (a - c)^3) / 3
    integral = np.sum(((edges[1:] - level) ** 3 - (edges[:-1] - level) ** 3) / 3.0)
    return float(n_eff * integral)


def fit_calibration(
    log_w: torch.Tensor,
    means: torch.Tensor,
    stds: torch.Tensor,
    z: torch.Tensor,
    recenter: float,
    bounds_scale: tuple[float, float] = (0.5, 2.0),
    bounds_power: tuple[float, float] = (0.5, 4.0),
    bounds_shift: tuple[float, float] = (-1.0, 1.0),
    fit_power: bool = False,
    weights: np.ndarray | None = None,
    coverage: np.ndarray | None = None,
    spread_by_coverage: bool = False,
    fit_uncovered: bool = False,
    scale_by_coverage: bool = False,
) -> tuple[Calibration, dict]:
    """Fit ``std_scale`` and ``shift`` (and ``weight_power`` when ``fit_power``) on held-out predictions.

    ``log_w, means, stds`` (S, N, G): for each of N galaxies the S members that did not train
    on it; z (N,) the true redshifts; ``weights`` (N,) optional weights of the galaxies in the PIT
    distribution (e.g. toward a target population); ``coverage`` (N,) the galaxies' coverage, for
    ``spread_by_coverage`` and ``scale_by_coverage`` (kept in the result; the second also in the
    fit) and, with ``fit_uncovered`` and enough poorly
    covered rows (rows standing for the target beyond the spec-z sample, e.g. held-out
    simulations), for fitting ``uncovered_scale`` and ``uncovered_shift``. Returns the calibration
    and a summary (CvM before/after).
    """
    from scipy.optimize import minimize

    z = z.to(torch.float64)
    lw, mu, sd = log_w.double(), means.double(), stds.double()
    if not fit_power:
        bounds_power = (1.0, 1.0)
    cov, fit_cov = None, False
    if coverage is not None:
        c = np.clip(np.asarray(coverage, dtype=np.float64), 0.0, 1.0)
        cov = torch.as_tensor(c)
        w_all = np.ones_like(c) if weights is None else np.asarray(weights, dtype=np.float64)
        # enough poorly covered weight, and rows, to fit its terms
        u = w_all * (1.0 - c)
        fit_cov = (fit_uncovered and u.sum() > 0.02 * w_all.sum()
                   and u.sum() ** 2 / max(np.sum(u * u), 1e-300) >= _MIN_UNCOVERED_ROWS)
    spread_by_coverage = spread_by_coverage and cov is not None
    scale_by_coverage = scale_by_coverage and cov is not None
    lo = np.array([np.log(bounds_scale[0]), np.log(bounds_power[0]), bounds_shift[0], np.log(0.5), -1.0])
    hi = np.array([np.log(bounds_scale[1]), np.log(bounds_power[1]), bounds_shift[1], np.log(4.0), 1.0])
    if not fit_cov:
        lo[3:], hi[3:] = 0.0, 0.0

    def make(theta: np.ndarray) -> Calibration:
        t = np.clip(np.r_[theta, np.zeros(5 - len(theta))], lo, hi)
        return Calibration(recenter=recenter, std_scale=float(np.exp(t[0])), weight_power=float(np.exp(t[1])),
                           shift=float(t[2]), uncovered_scale=float(np.exp(t[3])), uncovered_shift=float(t[4]),
                           spread_by_coverage=spread_by_coverage, scale_by_coverage=scale_by_coverage)

    base = np.ones(z.numel()) if weights is None else np.asarray(weights, dtype=np.float64)
    # with coverage terms: the covered and the uncovered rows' PIT distributions must each be uniform
    # (one pooled PIT cannot tell a too-narrow group from a too-wide one)
    pit_groups = [base * cov.numpy(), base * (1.0 - cov.numpy())] if fit_cov else [weights]

    def objective(theta: np.ndarray) -> float:
        w, m, s = pool_members(lw, mu, sd, make(theta), cov)
        pit = mixture.cdf(z, w, m, s).numpy()
        return sum(pit_cvm(pit, g) for g in pit_groups)

    # coarse grid, then Nelder-Mead from the best grid point
    grid = [
        np.array([a, b, c, d, e])
        for a in np.linspace(np.log(0.6), np.log(1.5), 7)
        for b in (np.log([0.7, 1.0, 1.5, 2.5]) if fit_power else [0.0])
        for c in (-0.3, -0.1, 0.0, 0.1, 0.3)
        for d in (np.log([0.8, 1.0, 1.5, 2.5]) if fit_cov else [0.0])
        for e in ((-0.3, 0.0, 0.3) if fit_cov else [0.0])
    ]
    vals = [objective(g) for g in grid]
    start = grid[int(np.argmin(vals))]
    free = 5 if fit_cov else 3
    res = minimize(lambda t: objective(t), start[:free], method="Nelder-Mead",
                   options=dict(xatol=1e-3, fatol=1e-4, maxiter=150 * (2 if fit_cov else 1)))
    best = res.x if res.fun <= min(vals) else start[:free]
    cal = make(best)
    return cal, dict(cvm_before=objective(np.zeros(free)), cvm_after=float(objective(best)), n=int(z.numel()))


def _coverage_tensor(coverage: np.ndarray | None) -> torch.Tensor | None:
    """Coverage (N,) clipped to [0, 1] as a float64 tensor (None stays None)."""
    return None if coverage is None else torch.as_tensor(np.clip(np.asarray(coverage, dtype=np.float64), 0.0, 1.0))


def fit_disagreement(log_w: torch.Tensor, means: torch.Tensor, stds: torch.Tensor, z: torch.Tensor, cal: Calibration,
                     weights: np.ndarray | None = None, coverage: np.ndarray | None = None,
                     bounds: tuple[float, float] = (0.0, 4.0)) -> tuple[Calibration, dict]:
    """Fit the ``disagreement`` term of a two-group calibration on held-out predictions.

    ``log_w, means, stds`` (S, N, G): for each galaxy S held-out members, the first S / 2 from the
    first group; ``cal`` holds the groups' other terms. The term minimises the (weighted) PIT CvM
    distance, over a grid of ``bounds`` refined by a bounded scalar search.
    """
    from scipy.optimize import minimize_scalar

    z = z.to(torch.float64)
    lw, mu, sd = log_w.double(), means.double(), stds.double()
    cov = _coverage_tensor(coverage)

    def objective(a: float) -> float:
        w, m, s = pool_members(lw, mu, sd, replace(cal, disagreement=float(a)), cov)
        return pit_cvm(mixture.cdf(z, w, m, s).numpy(), weights)

    grid = np.linspace(bounds[0], bounds[1], 9)
    vals = [objective(max(a, 1e-9)) for a in grid]  # 0 itself would mean "no groups' term"
    i = int(np.argmin(vals))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    res = minimize_scalar(objective, bounds=(max(lo, 1e-9), hi), method="bounded", options=dict(xatol=1e-3))
    best = float(res.x) if res.fun <= vals[i] else max(float(grid[i]), 1e-9)
    return replace(cal, disagreement=best), dict(cvm_before=float(vals[0]), cvm_after=float(min(res.fun, vals[i])),
                                                 n=int(z.numel()))


def held_out_scores(log_w: torch.Tensor, means: torch.Tensor, stds: torch.Tensor, z: torch.Tensor, cal: Calibration,
                    weights: np.ndarray | None = None, coverage: np.ndarray | None = None) -> dict:
    """Scores of calibrated held-out predictions: (weighted) mean log density and outlier fraction.

    ``log_w, means, stds`` (S, N, G) as for :func:`fit_calibration`, ``z`` (N,); ``weights`` (N,)
    (e.g. toward a target population; default equal). ``log_score``: mean log p(z_true), in
    1/redshift units (higher is better; a proper score, so it rewards both sharpness and
    calibration); ``outliers``: fraction with |z_mode - z| / (1 + z) > 0.15.
    """
    cov = _coverage_tensor(coverage)
    w, m, s = pool_members(log_w.double(), means.double(), stds.double(), cal, cov)
    zt = z.to(torch.float64)
    logp = mixture.log_prob(zt, torch.log(w.clamp_min(1e-300)), m, s).clamp_min(-50.0).numpy()
    zmode = mixture.mode(w, m, s).numpy()
    out = (np.abs(zmode - zt.numpy()) / (1.0 + zt.numpy()) > 0.15).astype(np.float64)
    wt = np.ones(zt.numel()) if weights is None else np.asarray(weights, dtype=np.float64)
    wt = wt / wt.sum()
    return dict(log_score=float(np.sum(wt * logp)), outliers=float(np.sum(wt * out)))
