"""Vectorised operations on 1-D Gaussian mixtures, one mixture per row.

All functions take weights, means and stds as tensors of shape (N, K) (weights sum to 1 per row)
and work on whole batches at once, on any torch device.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "log_prob",
    "pdf",
    "cdf",
    "mean",
    "mode",
    "median",
    "interval_probability",
    "combine_members",
    "reduce_components",
    "fold_into_range",
]

_SQRT2 = math.sqrt(2.0)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
# exp(-x) for x > ~87 is a float32 denormal, which costs an x86 CPU ~10-50x a normal result: exp
# arguments that only add negligible terms are clamped at -_EXP_FLOOR (exp(-80) = 1.8e-35, below the
# float32 resolution of the sums they join, whose largest term is 1)
_EXP_FLOOR = 80.0


def log_prob(z: torch.Tensor, log_w: torch.Tensor, means: torch.Tensor, stds: torch.Tensor) -> torch.Tensor:
    """log p(z) of each row's mixture; z (N,) -> (N,), or z (N, T) -> (N, T)."""
    squeeze = z.dim() == 1
    zz = z.unsqueeze(-1) if squeeze else z  # (N, T)
    u = (zz.unsqueeze(-1) - means.unsqueeze(1)) / stds.unsqueeze(1)  # (N, T, K)
    comp = log_w.unsqueeze(1) - 0.5 * u * u - torch.log(stds).unsqueeze(1) - _LOG_SQRT_2PI
    out = torch.logsumexp(comp, dim=-1)
    return out.squeeze(-1) if squeeze else out


def pdf(z: torch.Tensor, weights: torch.Tensor, means: torch.Tensor, stds: torch.Tensor) -> torch.Tensor:
    """p(z); z (N,) -> (N,) or (N, T) -> (N, T)."""
    return torch.exp(log_prob(z, torch.log(weights.clamp_min(1e-300)), means, stds))


def cdf(z: torch.Tensor, weights: torch.Tensor, means: torch.Tensor, stds: torch.Tensor) -> torch.Tensor:
    """P(Z <= z); z (N,) -> (N,) or (N, T) -> (N, T)."""
    squeeze = z.dim() == 1
    zz = z.unsqueeze(-1) if squeeze else z
    u = (zz.unsqueeze(-1) - means.unsqueeze(1)) / (stds.unsqueeze(1) * _SQRT2)
    out = (weights.unsqueeze(1) * 0.5 * (1.0 + torch.erf(u))).sum(-1)
    return out.squeeze(-1) if squeeze else out


def mean(weights: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """Analytic mixture mean, (N,)."""
    return (weights * means).sum(-1)


def _lse0(e: torch.Tensor) -> torch.Tensor:
    """log-sum-exp over dim 0 (the component axis of the component-major layout)."""
    mx = e.amax(0)
    return (e - mx).clamp_(min=-_EXP_FLOOR).exp_().sum(0).log_() + mx


def _climb(
    z: torch.Tensor, base: torch.Tensor, mu: torch.Tensor, inv_var: torch.Tensor, n_iter: int,
    with_log_prob: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Hill-climb log p from starting points z (S, n); returns (z, log p(z)), both (S, n)
    (log p is None when ``with_log_prob`` is False).

    Component-major layout: ``base`` = log(w / sigma) - log sqrt(2 pi), ``mu`` and ``inv_var``
    are (K, n), so every broadcast runs over the contiguous row axis. Each step is a Newton step
    on log p where it is concave and the step is within the local component width, otherwise the
    Gaussian-mixture mean-shift step z <- sum r_k mu_k / s_k^2 / sum r_k / s_k^2 (r_k the
    responsibilities), which never decreases p.
    """
    mu3, iv3, base3 = mu.unsqueeze(0), inv_var.unsqueeze(0), base.unsqueeze(0)
    for _ in range(n_iter):
        d = mu3 - z.unsqueeze(1)  # (S, K, n)
        r = base3 - 0.5 * d * d * iv3
        r = (r - r.amax(1, keepdim=True)).clamp_(min=-_EXP_FLOOR).exp_()
        norm = r.sum(1)
        ri = r.mul_(iv3)  # r_k / s_k^2 (unnormalised)
        sri = ri.sum(1)
        rid = ri.mul_(d)
        g = rid.sum(1) / norm  # d log p / dz
        h = rid.mul_(d).mul_(iv3).sum(1) / norm - sri / norm - g * g  # d2 log p / dz2
        shift = g * norm / sri  # mean-shift step
        concave = h < 0
        step = -g / torch.where(concave, h, -torch.ones_like(h))
        limit = torch.rsqrt(sri / norm)  # ~ the local component width
        z = z + torch.where(concave & (step.abs() < limit), step, shift)
    if not with_log_prob:
        return z, None
    d = mu3 - z.unsqueeze(1)
    return z, _lse0((base3 - 0.5 * d * d * iv3).transpose(0, 1))


def _row_chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _component_major(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """(n, K) row slices -> contiguous (K, n): broadcasts then vectorise over rows."""
    return [t.transpose(0, 1).contiguous() for t in tensors]


def mode(
    weights: torch.Tensor,
    means: torch.Tensor,
    stds: torch.Tensor,
    n_candidates: int = 4,
    n_search: int = 20,
    n_iter: int = 5,
    chunk: int = 2048,
) -> torch.Tensor:
    """Global mode of each mixture, (N,), exact (not limited by a grid).

    The search runs on the ``n_search`` heaviest components: it starts from the means of the
    ``n_candidates`` components with the highest peak density w/sigma, climbs each to its local
    maximum (Newton / mean-shift steps, float32), and every local maximum is then polished on the
    full mixture in the input precision, the highest winning. Rows go ``chunk`` at a time.
    """
    out = torch.empty(weights.shape[0], dtype=means.dtype, device=means.device)
    for sl in _row_chunks(weights.shape[0], chunk):
        w = weights[sl]
        # the n_search heaviest components of each row (top-k along the contiguous row axis, unsorted)
        top = torch.topk(w, n_search, dim=1, sorted=False).indices.t() if w.shape[1] > n_search else None
        out[sl] = _mode(*_component_major(w, means[sl], stds[sl]), top, n_candidates, n_iter)
    return out


def _mode(weights, means, stds, top, n_candidates, n_iter, n_polish=2, polish_iter=3):
    """Mode for component-major (K, n) mixtures; ``top`` (S, n): indices of the search components."""
    base = torch.log(weights.clamp_min(1e-300)) - torch.log(stds) - _LOG_SQRT_2PI
    inv_var = 1.0 / (stds * stds)
    if top is not None:
        s_b, s_mu, s_iv = (torch.gather(t, 0, top) for t in (base, means, inv_var))
    else:
        s_b, s_mu, s_iv = base, means, inv_var
    c = min(n_candidates, s_b.shape[0])
    start = torch.gather(s_mu, 0, torch.topk(s_b, c, dim=0).indices)  # (c, n)
    # search on the heaviest components, polish the best local maxima on the full mixture, both
    # in float32 (cheaper), then a final Newton step on the best one in the input precision
    f32 = torch.float32
    z, lp = _climb(start.to(f32), s_b.to(f32), s_mu.to(f32), s_iv.to(f32), n_iter)
    if c > n_polish:
        z = torch.gather(z, 0, torch.topk(lp, n_polish, dim=0).indices)
    z, lp = _climb(z, base.to(f32), means.to(f32), inv_var.to(f32), polish_iter)
    if z.shape[0] == 2:  # argmax over a 2-long strided axis is ~20x slower than this (same ties/NaN rule)
        z = torch.where((lp[0] >= lp[1]) | torch.isnan(lp[0]), z[0], z[1]).unsqueeze(0).to(means.dtype)
    else:
        z = torch.gather(z, 0, torch.argmax(lp, dim=0, keepdim=True)).to(means.dtype)
    return _climb(z, base, means, inv_var, 1, with_log_prob=False)[0].squeeze(0)


def median(
    weights: torch.Tensor, means: torch.Tensor, stds: torch.Tensor, tol: float = 1e-8, max_iter: int = 80,
    chunk: int = 2048,
) -> torch.Tensor:
    """Median of each mixture, (N,): safeguarded Newton iteration on CDF(z) = 0.5 inside a bracket.

    Fast path: up to ``_FAST_ITER`` safeguarded Newton steps in float32 over component-major rows
    (rows that have settled stop early), then one Newton step in the input precision. Accepted
    when that step is below 1e-6 (its remaining error is then ~|p'/p| 1e-12 / 2 < 1e-9 even for
    components at the 1e-3 sigma floor); the other rows (float32 search not settled, or a larger
    final step) are solved again by the robust iteration in the input precision (Newton steps that
    leave the bracket become bisection steps; rows are iterated until converged to ``tol``).
    Rows go ``chunk`` at a time.
    """
    out = torch.empty(weights.shape[0], dtype=means.dtype, device=means.device)
    for sl in _row_chunks(weights.shape[0], chunk):
        out[sl] = _median(weights[sl], means[sl], stds[sl], tol, max_iter)
    return out


_FAST_ITER = 8  # float32 Newton/bisection steps of the median's fast path
_FAST_COMPACT = (3, 5)  # before these steps, rows already settled are dropped from the iteration
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _median(weights, means, stds, tol, max_iter):
    f32 = torch.float32
    w, mu, s = _component_major(weights.to(f32), means.to(f32), stds.to(f32))  # (K, n)
    inv = 1.0 / (s * _SQRT2)
    peak = w * (_INV_SQRT_2PI / s)
    half = 0.5 * w.sum(0)  # CDF(z) - 0.5 = half + 0.5 sum(w erf) - 0.5, without assuming sum(w) = 1
    lo = (mu - 8.0 * s).amin(0)
    hi = (mu + 8.0 * s).amax(0)
    z = (w * mu).sum(0).div_(2.0 * half).clamp_(lo, hi)
    step = torch.full_like(z, math.inf)
    cols = torch.arange(z.shape[0], device=z.device)  # rows still iterated (settled ones are left)
    for it in range(_FAST_ITER):
        if it in _FAST_COMPACT:  # keep iterating only the rows whose last step was not yet small
            keep = step[cols] >= 1e-5 * (1.0 + z[cols].abs())
            if not bool(keep.any()):
                break
            cols = cols[keep]
            w, mu, inv, peak, half = w[:, keep], mu[:, keep], inv[:, keep], peak[:, keep], half[keep]
        za, la, ha = z[cols], lo[cols], hi[cols]
        u = (za - mu).mul_(inv)  # (K, n_active)
        f = (w * torch.erf(u)).sum(0).mul_(0.5).add_(half).sub_(0.5)
        p = u.mul_(u).clamp_(max=_EXP_FLOOR).neg_().exp_().mul_(peak).sum(0)
        la = torch.where(f < 0, za, la)
        ha = torch.where(f >= 0, za, ha)
        newton = za - f / p.clamp_min(1e-30)
        inside = (newton >= la) & (newton <= ha) & torch.isfinite(newton)
        z_new = torch.where(inside, newton, 0.5 * (la + ha))
        z[cols], lo[cols], hi[cols], step[cols] = z_new, la, ha, (z_new - za).abs_()
    # one Newton step in the input precision, row-major on the original tensors
    z = z.to(means.dtype)
    f, p = _cdf_residual_and_pdf(z, weights, means, stds)
    delta = f / p.clamp_min(1e-300)
    z = z - delta
    redo = ~((step < 1e-4 * (1.0 + z.abs())) & (delta.abs() < 1e-6) & torch.isfinite(z))
    if redo.any():
        rows = torch.nonzero(redo).squeeze(-1)
        z[rows] = _median_robust(weights[rows], means[rows], stds[rows], tol, max_iter)
    return z


def _cdf_residual_and_pdf(z, weights, means, stds):
    """CDF(z) - 0.5 and p(z) of row-major (n, K) mixtures at z (n,), both (n,)."""
    u = (z.unsqueeze(-1) - means) / stds
    f = (weights * 0.5 * (1.0 + torch.erf(u / _SQRT2))).sum(-1) - 0.5
    p = (weights * torch.exp(-0.5 * u * u) / stds).sum(-1) / math.sqrt(2.0 * math.pi)
    return f, p


def _median_robust(weights, means, stds, tol, max_iter):
    """Safeguarded Newton / bisection in the input precision, iterating only unconverged rows."""
    lo = (means - 8.0 * stds).min(-1).values
    hi = (means + 8.0 * stds).max(-1).values
    z = mean(weights, means).clamp(lo, hi)
    active = torch.arange(z.shape[0], device=z.device)
    for _ in range(max_iter):
        if active.numel() == 0:
            break
        w, m, s = weights[active], means[active], stds[active]
        za, la, ha = z[active], lo[active], hi[active]
        f, p = _cdf_residual_and_pdf(za, w, m, s)
        la = torch.where(f < 0, za, la)
        ha = torch.where(f >= 0, za, ha)
        newton = za - f / p.clamp_min(1e-300)
        inside = (newton >= la) & (newton <= ha) & torch.isfinite(newton)
        z_new = torch.where(inside, newton, 0.5 * (la + ha))
        z_new = torch.where(f == 0, za, z_new)
        z[active], lo[active], hi[active] = z_new, la, ha
        done = (torch.abs(z_new - za) < tol) | (ha - la < tol) | (f == 0)
        active = active[~done]
    return z


def interval_probability(
    lo: torch.Tensor, hi: torch.Tensor, weights: torch.Tensor, means: torch.Tensor, stds: torch.Tensor
) -> torch.Tensor:
    """P(lo < Z <= hi) for each row, (N,)."""
    both = torch.stack([lo, hi], dim=-1)
    c = cdf(both, weights, means, stds)
    return c[:, 1] - c[:, 0]


def combine_members(
    log_w: torch.Tensor, means: torch.Tensor, stds: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mixture of M members' mixtures (M, N, G) -> (N, M*G), member weights divided by M."""
    m, n, g = log_w.shape
    w = torch.exp(log_w) / m
    return (
        w.permute(1, 0, 2).reshape(n, m * g),
        means.permute(1, 0, 2).reshape(n, m * g),
        stds.permute(1, 0, 2).reshape(n, m * g),
    )


def _argmin_rows(x: torch.Tensor) -> torch.Tensor:
    """``torch.argmin(x, dim=0, keepdim=True)`` of a (R, N) tensor (first of equal minima), as R
    element-wise passes over contiguous rows: torch's reduction over the leading axis of a
    component-major array is ~20x slower on CPU."""
    best_val, best_idx = x[0], torch.zeros(x.shape[1], dtype=torch.long, device=x.device)
    for r in range(1, x.shape[0]):
        better = x[r] < best_val
        best_val = torch.where(better, x[r], best_val)
        best_idx = torch.where(better, r, best_idx)
    return best_idx.unsqueeze(0)


_MERGE_ROWS = 8192  # rows merged at a time: the (K, rows) work arrays stay in cache (2x faster at 10^5 rows)


def reduce_components(
    weights: torch.Tensor, means: torch.Tensor, stds: torch.Tensor, n_components: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merge each row's mixture (N, K) down to ``n_components`` Gaussians, (N, n_components).

    See :func:`_reduce_rows`; rows are merged in blocks of ``_MERGE_ROWS``.
    """
    if weights.shape[0] <= _MERGE_ROWS:
        return _reduce_rows(weights, means, stds, n_components)
    parts = [_reduce_rows(weights[a : a + _MERGE_ROWS], means[a : a + _MERGE_ROWS], stds[a : a + _MERGE_ROWS],
                          n_components) for a in range(0, weights.shape[0], _MERGE_ROWS)]
    return tuple(torch.cat([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]


def _reduce_rows(
    weights: torch.Tensor, means: torch.Tensor, stds: torch.Tensor, n_components: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merge each row's mixture (N, K) down to ``n_components`` Gaussians, (N, n_components).

    Components are sorted by mean and the adjacent pair with the lowest Runnalls cost
    (upper bound on the KL divergence added by the merge),
    ``0.5 [(w_i + w_j) log s_ij^2 - w_i log s_i^2 - w_j log s_j^2]``, is merged, one pair per row
    per step, until ``n_components`` are left. Every merge preserves the pair's weight, mean and
    variance, so each row's total weight, mean and variance are unchanged.
    """
    k = weights.shape[-1]
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components}")
    if n_components == 1:  # one moment-matched Gaussian
        total = weights.sum(-1, keepdim=True)
        mu = (weights * means).sum(-1, keepdim=True) / total
        var = (weights * (stds * stds + (means - mu) ** 2)).sum(-1, keepdim=True) / total
        return total, mu, torch.sqrt(var)
    order = torch.argsort(means, dim=-1)
    # component-major (K, N): each step's ops run over contiguous rows
    w, m, v = (torch.gather(t, -1, order).transpose(0, 1).contiguous() for t in (weights, means, stds * stds))
    logv = torch.log(v)
    while k > n_components:
        wi, wj = w[:-1], w[1:]
        ws = (wi + wj).clamp_min(1e-300)
        fi = wi / ws
        fj = 1.0 - fi
        dm = m[:-1] - m[1:]
        vm = fi * v[:-1] + fj * v[1:] + fi * fj * dm * dm
        lvm = torch.log(vm)
        cost = ws * lvm - wi * logv[:-1] - wj * logv[1:]  # (K-1, N)
        # merge the q cheapest non-overlapping adjacent pairs of every row in this step (q shrinks
        # to 1 as the target size nears, so the last merges are the plain greedy ones)
        q = max(1, (k - n_components) // 4)
        picks = []
        for _ in range(q):
            best = _argmin_rows(cost)  # (1, N)
            picks.append(best)
            for off in (-1, 0, 1):
                cost.scatter_(0, (best + off).clamp(0, k - 2), float("inf"))
        best = torch.cat(picks)  # (q, N) first components of the merged pairs
        mm = fi * m[:-1] + fj * m[1:]
        keep = torch.ones(k, w.shape[1], dtype=torch.bool, device=w.device).scatter_(0, best + 1, False)
        # packed position of every kept component; the dropped ones go to a spare last row
        pos = torch.where(keep, torch.cumsum(keep, 0) - 1, k - q)
        new = []
        for t, x in zip((w, m, v, logv), (ws, mm, vm, lvm)):
            t = t.scatter(0, best, torch.gather(x, 0, best))
            new.append(torch.empty(k - q + 1, w.shape[1], dtype=t.dtype, device=t.device).scatter_(0, pos, t)[: k - q])
        w, m, v, logv = new
        k -= q
    return w.transpose(0, 1).contiguous(), m.transpose(0, 1).contiguous(), torch.sqrt(v).transpose(0, 1).contiguous()


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _tail_moments(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of N(0, 1) truncated to [a, b], for 0 <= a <= b (b may be inf).

    Written with erfcx (erfc(x) exp(x^2)) so that it stays exact far in the tail, where the
    normal CDF differences underflow: phi(a) / Q(a) = sqrt(2 / pi) / erfcx(a / sqrt 2).
    """
    ea, eb = torch.special.erfcx(a / _SQRT2), torch.special.erfcx(b / _SQRT2)
    r = torch.exp(-0.5 * (b - a) * (b + a))  # phi(b) / phi(a)
    lam = _SQRT_2_OVER_PI / ea
    mass = 1.0 - r * eb / ea  # P(a < Z < b) / Q(a)
    shift = lam * (1.0 - r) / mass
    br = torch.where(torch.isinf(b), torch.zeros_like(b), b * r)
    return shift, 1.0 + lam * (a - br) / mass - shift * shift


def _central_moments(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of N(0, 1) truncated to [a, b], for a <= 0 <= b."""
    mass = torch.special.ndtr(b) - torch.special.ndtr(a)
    pa, pb = torch.exp(-0.5 * a * a) * _INV_SQRT_2PI, torch.exp(-0.5 * b * b) * _INV_SQRT_2PI
    shift = (pa - pb) / mass
    apa = torch.where(torch.isinf(a), torch.zeros_like(a), a * pa)
    bpb = torch.where(torch.isinf(b), torch.zeros_like(b), b * pb)
    return shift, 1.0 + (apa - bpb) / mass - shift * shift


# components farther than this (in their own widths) inside both bounds have less than 1e-7 of their mass
# outside, below what a float32 PDF resolves: they are left as they are
_FOLD_SIGMAS = 5.2


def _truncated_moments(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of N(0, 1) truncated to [a, b] (a < b), each case with its stable formula."""
    shift, var = torch.empty_like(a), torch.empty_like(a)
    below, above = a >= 0.0, b <= 0.0  # mostly under the lower / over the upper bound: the tail forms
    mid = ~(below | above)
    if bool(mid.any()):
        shift[mid], var[mid] = _central_moments(a[mid], b[mid])
    if bool(below.any()):
        shift[below], var[below] = _tail_moments(a[below], b[below])
    if bool(above.any()):
        hs, hv = _tail_moments(-b[above], -a[above])  # mirrored
        shift[above], var[above] = -hs, hv
    return shift, var


def fold_into_range(
    means: torch.Tensor, stds: torch.Tensor, lo: float, hi: float, min_std: float = 1e-3, passes: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each Gaussian's mass into [lo, hi]: means and stds (any shape) of the replacements.

    Each component is replaced by the Gaussian with the mean and variance of its part inside
    [lo, hi] (a truncated normal), so every mean lies in the range (and with them the mixture's
    mode, median and mean) and the weights are unchanged. One pass leaves 9% of a component
    centred on a bound outside, a second (``passes`` = 2) 4%. Components more than 5.2 of their
    widths inside both bounds, whose mass outside is below 1e-7, are returned unchanged.
    """
    near = ((lo - means) > -_FOLD_SIGMAS * stds) | ((hi - means) < _FOLD_SIGMAS * stds)
    if not bool(near.any()):
        return means, stds
    where = near.nonzero(as_tuple=True)
    m, s = means[where].double(), stds[where].double()  # few elements: float64 keeps the tail formulas exact
    for _ in range(passes):
        shift, var = _truncated_moments((lo - m) / s, (hi - m) / s)
        m = (m + s * shift).clamp(lo, hi)
        s = (s * torch.sqrt(var.clamp_min(0.0))).clamp_min(min_std)
    return means.index_put(where, m.to(means.dtype)), stds.index_put(where, s.to(stds.dtype))
