"""Density ratios between two galaxy samples in network-input space, by probabilistic classification.

A classifier trained to tell a *target* sample (the unlabelled photometry to estimate) from a
*reference* sample (the spectroscopic training set, or simulations), with the two classes given
equal total weight, has logit ``log p_target(x) / p_ref(x)`` at its optimum (the classifier trick
for density-ratio estimation; Bickel et al. 2009). Here:

* the classifier is a small MLP on the scaled network features, trained with the sample's seed;
* ``n_folds`` classifiers are *cross-fitted*: every row of either sample gets its log-ratio from a
  classifier that did not train on it (a classifier is over-confident on its own training rows);
* each classifier's logit is tempered by a factor ``a`` in [0, 1] and an offset fitted on its
  held-out rows (Platt scaling): a classifier that learned nothing useful (two samples drawn from
  one population) gets ``a`` near 0, so the ratios are near 1 instead of noise.

:func:`fit_density_ratio` returns a :class:`DensityRatio` (the tempered classifiers, to evaluate new
rows, and to store in a model) and the out-of-fold log-ratios of both samples. Pure torch + numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import nn

__all__ = ["DensityRatio", "fit_density_ratio", "clipped_ratio", "clipped_weights", "effective_sample_size"]

_HIDDEN = (64, 64)


def _classifier(n_features: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = n_features
    for h in _HIDDEN:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


@dataclass
class DensityRatio:
    """Cross-fitted classifiers giving ``log p_target(x) / p_ref(x)`` for scaled features x (N, F).

    ``states``: one state dict per fold classifier (numpy arrays); ``temper`` (n_folds, 2): each
    classifier's Platt factor and offset. New rows get the mean tempered logit of the classifiers.
    """

    n_features: int
    states: list[dict[str, np.ndarray]]
    temper: np.ndarray

    @cached_property
    def _nets(self) -> list[nn.Sequential]:
        """The classifiers as torch modules, built once."""
        nets = []
        for state in self.states:
            net = _classifier(self.n_features)
            net.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
            nets.append(net.eval())
        return nets

    @torch.inference_mode()
    def log_ratio(self, x: np.ndarray | torch.Tensor, batch_size: int = 65536) -> np.ndarray:
        """``log p_target / p_ref`` (N,) float64 at scaled features ``x`` (N, F)."""
        x = torch.as_tensor(np.asarray(x, dtype=np.float32))
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"density ratio: expected features of shape (N, {self.n_features}), got {tuple(x.shape)}")
        out = np.zeros(x.shape[0])
        for net, (a, b) in zip(self._nets, self.temper):
            for s in range(0, x.shape[0], batch_size):
                out[s : s + batch_size] += a * net(x[s : s + batch_size])[:, 0].double().numpy() + b
        return out / len(self.states)

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """The classifiers as ``{prefix/fold{k}/<parameter>: array, prefix/temper: (K, 2)}``."""
        arrays = {f"{prefix}/fold{k}/{name}": v for k, state in enumerate(self.states) for name, v in state.items()}
        arrays[f"{prefix}/temper"] = np.asarray(self.temper, dtype=np.float64)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict, prefix: str, n_features: int) -> "DensityRatio":
        """Inverse of :meth:`to_arrays`."""
        temper = np.asarray(arrays[f"{prefix}/temper"], dtype=np.float64)
        states = []
        for k in range(temper.shape[0]):
            head = f"{prefix}/fold{k}/"
            states.append({name[len(head):]: np.asarray(v) for name, v in arrays.items() if name.startswith(head)})
        return cls(n_features=n_features, states=states, temper=temper)


def _weighted_bce(logit: torch.Tensor, label: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Sum of the rows' binary cross-entropies times their weights."""
    return (weight * nn.functional.binary_cross_entropy_with_logits(logit, label, reduction="none")).sum()


def _fold_ids(n: int, n_folds: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.arange(n) % n_folds)


def _train_one(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor,
               w_val: torch.Tensor, seed: int, epochs: int, batch_size: int) -> tuple[nn.Sequential, np.ndarray]:
    """One classifier, best held-out epoch kept; its tempered (a, b) fitted on the held-out rows."""
    torch.manual_seed(seed)
    net = _classifier(x.shape[1])
    opt = torch.optim.Adam(net.parameters(), lr=2e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    best, best_state, stall = np.inf, None, 0
    n = x.shape[0]
    for _ in range(epochs):
        net.train()
        # rows drawn with their class-balancing weight: each batch holds both samples equally
        order = torch.multinomial(w, n, replacement=True, generator=gen)
        for s in range(0, n, batch_size):
            idx = order[s : s + batch_size]
            loss = nn.functional.binary_cross_entropy_with_logits(net(x[idx])[:, 0], y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            val = float(_weighted_bce(net(x_val)[:, 0], y_val, w_val))
        if val < best - 1e-5:
            best, best_state, stall = val, {k: v.clone() for k, v in net.state_dict().items()}, 0
        else:
            stall += 1
            if stall >= 3:  # early stopping: the held-out loss has stopped improving
                break
    net.load_state_dict(best_state)
    with torch.no_grad():
        logit_val = net(x_val)[:, 0].double()
    return net.eval(), _temper(logit_val, y_val.double(), w_val.double())


def _temper(logit: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> np.ndarray:
    """Platt factor a in [0, 1] and offset b minimising the balanced held-out cross-entropy of a logit + b.

    ``a > 0`` must beat ``a = 0`` (no information) by more than the BIC penalty of one parameter,
    log(n_eff) / (2 n_eff) nats per row: two samples of one population then get ratios of exactly 1.
    """
    w = w / w.sum()
    n_eff = float(1.0 / (w * w).sum())
    fits = []
    for a in np.linspace(0.0, 1.0, 21):
        # for fixed a the best b solves a 1-D convex problem: a few Newton steps
        b = torch.zeros((), dtype=torch.float64)
        for _ in range(20):
            p = torch.sigmoid(a * logit + b)
            grad = (w * (p - y)).sum()
            hess = (w * p * (1 - p)).sum().clamp_min(1e-12)
            b = b - grad / hess
        fits.append((float(_weighted_bce(a * logit + b, y, w)), float(a), float(b)))
    best = min(fits[1:])
    if fits[0][0] - best[0] <= np.log(n_eff) / (2.0 * n_eff):
        best = fits[0]
    return np.array(best[1:], dtype=np.float64)


def fit_density_ratio(x_ref: np.ndarray, x_target: np.ndarray, seed: int, n_folds: int = 2, epochs: int = 40,
                      batch_size: int = 512) -> tuple[DensityRatio, np.ndarray, np.ndarray]:
    """Cross-fitted density ratio ``p_target / p_ref`` from scaled features x_ref (N_r, F), x_target (N_t, F).

    Returns the :class:`DensityRatio` and the out-of-fold log-ratios of the reference rows (N_r,)
    and of the target rows (N_t,). ``seed`` fixes folds, initial weights and batches.
    """
    x_ref = np.asarray(x_ref, dtype=np.float32)
    x_target = np.asarray(x_target, dtype=np.float32)
    if x_ref.ndim != 2 or x_target.ndim != 2 or x_ref.shape[1] != x_target.shape[1]:
        raise ValueError(f"density ratio: feature arrays of shapes {x_ref.shape} and {x_target.shape} do not match")
    n_r, n_t = len(x_ref), len(x_target)
    if n_folds < 2:
        raise ValueError("density ratio: n_folds must be >= 2 (cross-fitting)")
    if min(n_r, n_t) < 2 * n_folds:
        raise ValueError(f"density ratio: {n_r} reference and {n_t} target rows; at least {2 * n_folds} of each needed")
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(7,)))
    folds = np.concatenate([_fold_ids(n_r, n_folds, rng), _fold_ids(n_t, n_folds, rng)])
    x = torch.as_tensor(np.concatenate([x_ref, x_target]))
    y = torch.as_tensor(np.r_[np.zeros(n_r), np.ones(n_t)].astype(np.float32))
    # each class sums to 1/2: the optimal logit is then log p_target / p_ref, whatever the sample sizes
    w = torch.as_tensor(np.r_[np.full(n_r, 0.5 / n_r), np.full(n_t, 0.5 / n_t)].astype(np.float32))
    oof = np.zeros(n_r + n_t)
    states, temper = [], []
    with torch.enable_grad():
        for k in range(n_folds):
            val = folds == k
            tr = ~val
            # each class sums to 1/2 within the held-out rows too (folds of unequal size stay balanced)
            yv = y[val]
            vw = torch.where(yv > 0.5, 0.5 / yv.sum(), 0.5 / (1 - yv).sum())
            net, ab = _train_one(x[tr], y[tr], w[tr], x[val], y[val], vw, int(seed) + 101 * k, epochs, batch_size)
            with torch.no_grad():
                oof[val] = ab[0] * net(x[val])[:, 0].double().numpy() + ab[1]
            states.append({name: t.detach().numpy().copy() for name, t in net.state_dict().items()})
            temper.append(ab)
    ratio = DensityRatio(n_features=x.shape[1], states=states, temper=np.stack(temper))
    return ratio, oof[:n_r], oof[n_r:]


def clipped_ratio(log_ratio: np.ndarray, clip: float) -> np.ndarray:
    """``min(exp(log_ratio), clip)`` (N,) float64, without overflow."""
    return np.minimum(np.exp(np.minimum(log_ratio, 50.0)), clip)


def clipped_weights(log_ratio: np.ndarray, clip: float) -> np.ndarray:
    """Importance weights ``min(exp(log_ratio), clip)`` scaled to mean 1 (N,) float64.

    The scaling comes after the clip, so the largest weight can exceed ``clip``.
    """
    w = clipped_ratio(log_ratio, clip)
    return w / w.mean()


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's effective sample size (sum w)^2 / sum w^2 of weights (N,)."""
    w = np.asarray(weights, dtype=np.float64)
    return float(w.sum() ** 2 / np.sum(w * w))
