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
]

_SQRT2 = math.sqrt(2.0)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


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


def _climb(
    z: torch.Tensor, log_w: torch.Tensor, means: torch.Tensor, stds: torch.Tensor, n_iter: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hill-climb log p from starting points z (N, S); returns (z, log p(z)), both (N, S).

    Each step is a Newton step on log p where it is concave and the step is small, otherwise the
    Gaussian-mixture mean-shift step z <- sum r_k mu_k / s_k^2 / sum r_k / s_k^2 (r_k the
    component responsibilities), which never decreases p.
    """
    mu, inv_var = means.unsqueeze(1), (1.0 / (stds * stds)).unsqueeze(1)  # (N, 1, K)
    base = (log_w - torch.log(stds)).unsqueeze(1) - _LOG_SQRT_2PI
    for _ in range(n_iter):
        d = mu - z.unsqueeze(-1)  # (N, S, K)
        logr = base - 0.5 * d * d * inv_var
        r = torch.softmax(logr, dim=-1)
        a = d * inv_var
        g = (r * a).sum(-1)  # d log p / dz
        h = (r * (a * a - inv_var)).sum(-1) - g * g  # d2 log p / dz2
        shift = (r * inv_var * mu).sum(-1) / (r * inv_var).sum(-1)
        step = -g / torch.where(h < 0, h, -torch.ones_like(h))
        limit = 1.0 / torch.sqrt((r * inv_var).sum(-1))  # ~ the local component width
        z = torch.where((h < 0) & (step.abs() < limit), z + step, shift)
    d = mu - z.unsqueeze(-1)
    return z, torch.logsumexp(base - 0.5 * d * d * inv_var, dim=-1)


def _row_chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def mode(
    weights: torch.Tensor,
    means: torch.Tensor,
    stds: torch.Tensor,
    n_candidates: int = 4,
    n_search: int = 12,
    n_iter: int = 6,
    chunk: int = 2048,
) -> torch.Tensor:
    """Global mode of each mixture, (N,), exact (not limited by a grid).

    The search runs on the ``n_search`` heaviest components: it starts from the means of the
    ``n_candidates`` components with the highest peak density w/sigma, climbs each to its local
    maximum (Newton / mean-shift steps), and every local maximum is then polished on the full
    mixture, the highest winning. Rows are processed ``chunk`` at a time to stay in cache.
    """
    out = torch.empty(weights.shape[0], dtype=means.dtype, device=means.device)
    for sl in _row_chunks(weights.shape[0], chunk):
        out[sl] = _mode(weights[sl], means[sl], stds[sl], n_candidates, n_search, n_iter)
    return out


def _mode(weights, means, stds, n_candidates, n_search, n_iter):
    log_w = torch.log(weights.clamp_min(1e-300))
    k = weights.shape[-1]
    if k > n_search:
        top = torch.topk(log_w, n_search, dim=-1).indices
        s_lw, s_mu, s_sd = (torch.gather(t, -1, top) for t in (log_w, means, stds))
    else:
        s_lw, s_mu, s_sd = log_w, means, stds
    c = min(n_candidates, s_lw.shape[-1])
    start = torch.gather(s_mu, -1, torch.topk(s_lw - torch.log(s_sd), c, dim=-1).indices)
    # the search runs in float32 (cheaper); the polish on the full mixture in the input precision
    f32 = torch.float32
    z, _ = _climb(start.to(f32), s_lw.to(f32), s_mu.to(f32), s_sd.to(f32), n_iter)
    z, lp = _climb(z.to(means.dtype), log_w, means, stds, 3)
    return torch.gather(z, -1, torch.argmax(lp, dim=-1, keepdim=True)).squeeze(-1)


def median(
    weights: torch.Tensor, means: torch.Tensor, stds: torch.Tensor, tol: float = 1e-8, max_iter: int = 80,
    chunk: int = 2048,
) -> torch.Tensor:
    """Median of each mixture, (N,): safeguarded Newton iteration on CDF(z) = 0.5 inside a bracket.

    Newton steps that leave the bracket become bisection steps; only rows that have not yet
    converged (step or bracket below ``tol``) are iterated. Rows go ``chunk`` at a time.
    """
    out = torch.empty(weights.shape[0], dtype=means.dtype, device=means.device)
    for sl in _row_chunks(weights.shape[0], chunk):
        out[sl] = _median(weights[sl], means[sl], stds[sl], tol, max_iter)
    return out


def _median(weights, means, stds, tol, max_iter):
    lo = (means - 8.0 * stds).min(-1).values
    hi = (means + 8.0 * stds).max(-1).values
    z = mean(weights, means).clamp(lo, hi)
    active = torch.arange(z.shape[0], device=z.device)
    for _ in range(max_iter):
        if active.numel() == 0:
            break
        w, m, s = weights[active], means[active], stds[active]
        za, la, ha = z[active], lo[active], hi[active]
        u = (za.unsqueeze(-1) - m) / s
        f = (w * 0.5 * (1.0 + torch.erf(u / _SQRT2))).sum(-1) - 0.5
        p = (w * torch.exp(-0.5 * u * u) / s).sum(-1) / math.sqrt(2.0 * math.pi)
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
