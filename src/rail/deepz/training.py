"""Training a Deepz ensemble: splits, losses, learning-rate steps, best-epoch selection.

All members train together in one stacked model (:class:`rail.deepz.networks.DeepzEnsemble`):
member m draws its batches from its own training indices, and its loss only reaches its own
weights, so this is the same as training M networks separately (Adam and weight decay act
element-wise), just without a Python loop over networks.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

import numpy as np
import torch

from .networks import DeepzEnsemble, MemberNoise, member_rng

if TYPE_CHECKING:
    from .checkpoint import EpochCheckpoint

__all__ = [
    "TrainConfig",
    "ensemble_splits",
    "mdn_nll",
    "reconstruction_loss",
    "train_ensemble",
    "predict",
    "AuxiliaryData",
]

class InputSource(Protocol):
    """Per-batch inputs (see :class:`rail.deepz.augmentation.BatchInputs`)."""

    def batch(self, idx: torch.Tensor, train: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        ...


@dataclass
class AuxiliaryData:
    """Extra labelled rows mixed into every training batch (e.g. simulations during fine-tuning).

    ``inputs`` gives features for row indices, ``redshift`` (N_aux,) on the training device,
    ``indices`` the usable rows, ``batch_size`` rows per member and step, ``weight`` multiplies
    their mean loss (redshift NLL, plus ``ae_weight`` x reconstruction when > 0).
    """

    inputs: InputSource
    redshift: torch.Tensor
    indices: np.ndarray
    batch_size: int
    weight: float = 1.0


@dataclass
class TrainConfig:
    """Optimisation settings.

    ``learning_rates[i]`` is used for ``epochs_per_step[i]`` epochs (paper: 1e-3 for 100 epochs,
    then 1e-4, 1e-5, 1e-6 for 200 each). ``ae_weight`` multiplies the autoencoder reconstruction
    loss (0 = redshift loss only); ``batch_size`` galaxies per member and step; ``seed`` seeds
    every member's batch order and dropout (with the member's index).
    """

    learning_rates: list[float] = field(default_factory=lambda: [1e-3, 1e-4, 1e-5])
    epochs_per_step: list[int] = field(default_factory=lambda: [40, 15, 5])
    batch_size: int = 100
    weight_decay: float = 1e-5
    ae_weight: float = 0.0
    seed: int = 0

    @property
    def n_epochs(self) -> int:
        return int(sum(self.epochs_per_step))

    def lr_at(self, epoch: int) -> float:
        edges = np.cumsum(self.epochs_per_step)
        step = int(np.searchsorted(edges, epoch, side="right"))
        return float(self.learning_rates[min(step, len(self.learning_rates) - 1)])


def ensemble_splits(n: int, n_splits: int, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, validation) index arrays for n_splits random k-fold splits of n rows.

    Member ``s * n_folds + f`` validates on fold f of split s and trains on the other folds.
    With ``n_folds == 1`` each member trains on a random 80% and validates on the other 20%.
    """
    if n_folds < 1 or n_splits < 1:
        raise ValueError("options 'n_splits' and 'n_folds' must be >= 1")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_splits):
        perm = rng.permutation(n)
        if n_folds == 1:
            n_val = max(1, n // 5)
            out.append((np.sort(perm[n_val:]), np.sort(perm[:n_val])))
            continue
        folds = np.array_split(perm, n_folds)
        for f in range(n_folds):
            train = np.concatenate([folds[j] for j in range(n_folds) if j != f])
            out.append((np.sort(train), np.sort(folds[f])))
    return out


def mdn_nll(z: torch.Tensor, log_w: torch.Tensor, means: torch.Tensor, stds: torch.Tensor) -> torch.Tensor:
    """-log p(z) per galaxy for stacked mixtures: z (M, B), parameters (M, B, G) -> (M, B)."""
    u = (z.unsqueeze(-1) - means) / stds
    comp = log_w - 0.5 * u * u - torch.log(stds) - 0.5 * math.log(2 * math.pi)
    return -torch.logsumexp(comp, dim=-1)


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, target_err: torch.Tensor) -> torch.Tensor:
    """Mean over bands of |recon - target| / err (missing bands, err = inf, count 0): (M, B)."""
    return (torch.abs(recon - target) / target_err).mean(-1)


def _gather_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (N, ...) indexed by idx (M, B) -> (M, B, ...)."""
    return x[idx.reshape(-1)].reshape(*idx.shape, *x.shape[1:])


def _padded_indices(index_sets: list[np.ndarray], length: int,
                    rngs: np.random.Generator | Sequence[np.random.Generator]) -> np.ndarray:
    """(M, length) array: each row a random permutation of its set, repeated to ``length``.

    ``rngs``: one generator shared by all rows, or one per row.
    """
    if isinstance(rngs, np.random.Generator):
        rngs = [rngs] * len(index_sets)
    rows = []
    for s, rng in zip(index_sets, rngs):
        reps = int(math.ceil(length / len(s)))
        rows.append(np.concatenate([rng.permutation(s) for _ in range(reps)])[:length])
    return np.stack(rows)


def _member_view(t: torch.Tensor, m: int) -> torch.Tensor | None:
    """View of a state tensor with the member axis first, or None for shared scalars."""
    if t.dim() == 0:
        return None
    if t.shape[0] == m:
        return t
    return t.reshape(m, -1)  # batch-norm running stats stored as (M * F,)


# A member's block of a stacked tensor is updated by the fused Adam kernel with the same rounding
# wherever it sits when its size is a multiple of this (whole SIMD vectors and cache lines: no
# scalar tail, no task boundary inside a vector); smaller or odd blocks use foreach Adam.
_FUSED_BLOCK = 64


def _adam(params: list[torch.nn.Parameter], n_members: int, lr: float, weight_decay: float) -> torch.optim.Adam:
    """Adam (L2 weight decay) over stacked parameters, bit-identical for any member count.

    Parameters whose per-member block has a multiple of ``_FUSED_BLOCK`` elements go to the fused
    kernel (one pass over memory: ~3x less optimiser time on CPU than foreach); the rest (e.g. the
    MDN output bias, 3 x n_gaussians per member) to foreach Adam, whose element-wise ops round the
    same at every position. Either way a member trains the same alone, in any group or MPI rank.
    """
    def fusable(p: torch.Tensor) -> bool:
        return p.dtype == torch.float32 and p.numel() % n_members == 0 and (p.numel() // n_members) % _FUSED_BLOCK == 0

    groups = [dict(params=[p for p in params if fusable(p)], fused=True, foreach=False),
              dict(params=[p for p in params if not fusable(p)], fused=False, foreach=True)]
    return torch.optim.Adam([g for g in groups if g["params"]], lr=lr, weight_decay=weight_decay)


@dataclass
class TrainResult:
    """Best-epoch validation loss per member (M,), the epoch it was reached, and the loss history."""

    best_val_loss: np.ndarray
    best_epoch: np.ndarray
    history: dict[str, list]


class _Trainer:
    """The parts of :func:`train_ensemble`: batch losses, one epoch, validation, best-epoch weights."""

    def __init__(self, model: DeepzEnsemble, features: torch.Tensor, redshift: torch.Tensor | None,
                 ratios: torch.Tensor, ratio_err: torch.Tensor, splits: list[tuple[np.ndarray, np.ndarray]],
                 members: list[int], config: TrainConfig, redshift_weight: float, inputs: InputSource | None,
                 frozen: Sequence[str], anchor: dict[str, torch.Tensor] | None, anchor_weight: float,
                 aux: AuxiliaryData | None, row_weights: torch.Tensor | None = None) -> None:
        m = model.n_members
        if len(members) != m or not all(0 <= i < len(splits) for i in members):
            raise ValueError(f"{len(splits)} splits and member indices {members} for {m} ensemble members")
        if redshift is None and config.ae_weight <= 0:
            raise ValueError("training without redshifts needs option 'ae_weight' > 0")
        self.model, self.m, self.config = model, m, config
        self.features, self.redshift, self.ratios, self.ratio_err = features, redshift, ratios, ratio_err
        self.redshift_weight, self.inputs, self.aux, self.anchor_weight = redshift_weight, inputs, aux, anchor_weight
        self.device = features.device
        self.row_weights = row_weights
        self.splits = [splits[i] for i in members]
        self.order_rngs = [member_rng(config.seed, i, "order") for i in members]
        model.set_noise(MemberNoise([member_rng(config.seed, i, "dropout") for i in members]))
        torch.manual_seed(config.seed)
        self.frozen = [part for part in frozen if getattr(model, part) is not None]
        for part in self.frozen:
            for p in getattr(model, part).parameters():
                p.requires_grad_(False)
        self.opt = _adam([p for p in model.parameters() if p.requires_grad], m, config.learning_rates[0],
                         config.weight_decay)
        self.anchored = []
        if anchor is not None and anchor_weight > 0:
            named = dict(model.named_parameters())
            self.anchored = [(named[k], v.to(self.device)) for k, v in anchor.items()
                             if k in named and named[k].requires_grad]
        # batch count and validation padding from the whole ensemble: the same for any subset of members
        n_train_max = max(len(tr) for tr, _ in splits)
        self.bs = min(config.batch_size, n_train_max)
        self.steps = int(math.ceil(n_train_max / self.bs))
        self.n_val_max = max(len(va) for _, va in splits)
        self.val_idx = torch.as_tensor(np.stack([np.resize(va, self.n_val_max) for _, va in self.splits]),
                                       device=self.device)
        self.val_mask = torch.zeros(m, self.n_val_max, device=self.device)
        for i, (_, va) in enumerate(self.splits):
            self.val_mask[i, : len(va)] = 1.0

    def member_loss(self, idx: torch.Tensor, train: bool = False, source: InputSource | None = None,
                    zsrc: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Loss (M, b) of rows idx (M, b), and a validity mask (M, b) or None."""
        cfg, model = self.config, self.model
        source = self.inputs if source is None else source
        zsrc = self.redshift if zsrc is None else zsrc
        mask = None
        if source is None:
            x = _gather_rows(self.features, idx)
        else:
            x, rat, rat_err, mask = source.batch(idx, train)
        if cfg.ae_weight > 0:
            log_w, means, stds, _, recon = model(x)
        else:  # the decoder's output is not needed
            log_w, means, stds, _ = model.mixture(x)
        loss = torch.zeros(idx.shape, device=self.device)
        if zsrc is not None and self.redshift_weight > 0:
            loss = loss + self.redshift_weight * mdn_nll(_gather_rows(zsrc, idx), log_w, means, stds)
        if cfg.ae_weight > 0:
            if source is None:
                rat, rat_err = _gather_rows(self.ratios, idx), _gather_rows(self.ratio_err, idx)
            loss = loss + cfg.ae_weight * reconstruction_loss(recon, rat, rat_err)
        if self.row_weights is not None and source is self.inputs and zsrc is self.redshift:
            loss = loss * _gather_rows(self.row_weights, idx)
        if mask is not None:
            loss = torch.where(mask, loss, torch.zeros_like(loss))
        return loss, mask

    @staticmethod
    def batch_mean(loss: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is None:
            return loss.mean(dim=1)
        return loss.sum(dim=1) / mask.sum(dim=1).clamp_min(1)

    def set_train_mode(self) -> None:
        self.model.train()
        for part in self.frozen:
            getattr(self.model, part).eval()  # frozen batch-norm statistics, no dropout

    def train_epoch(self, lr: float) -> torch.Tensor:
        """One pass over every member's training rows at learning rate ``lr``; the summed loss."""
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.set_train_mode()
        bs, steps, aux = self.bs, self.steps, self.aux
        order = torch.as_tensor(_padded_indices([tr for tr, _ in self.splits], steps * bs, self.order_rngs),
                                device=self.device)
        if aux is not None:
            aux_order = torch.as_tensor(
                _padded_indices([aux.indices] * self.m, steps * aux.batch_size, self.order_rngs), device=self.device)
        total = torch.zeros((), device=self.device)
        for s in range(steps):
            loss = self.batch_mean(*self.member_loss(order[:, s * bs : (s + 1) * bs], train=True)).sum()
            if aux is not None:
                a_idx = aux_order[:, s * aux.batch_size : (s + 1) * aux.batch_size]
                loss = loss + aux.weight * self.batch_mean(*self.member_loss(a_idx, True, aux.inputs,
                                                                             aux.redshift)).sum()
            if self.anchored:
                loss = loss + self.anchor_weight * sum(((p - p0) ** 2).sum() for p, p0 in self.anchored)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            total += loss.detach()
        return total

    @torch.no_grad()
    def validate(self) -> np.ndarray:
        """Mean validation loss (M,) of every member on its held-out rows (un-augmented inputs)."""
        self.model.eval()
        val = torch.zeros(self.m, device=self.device)
        val_count = torch.zeros(self.m, device=self.device)
        for s in range(0, self.n_val_max, 4096):
            idx = self.val_idx[:, s : s + 4096]
            lv, vmask = self.member_loss(idx)  # already multiplied by the row weights
            vm = self.val_mask[:, s : s + 4096]
            if vmask is not None:
                vm = vm * vmask
            if self.row_weights is not None:  # a weighted mean: sum w l / sum w
                val_count += (vm * _gather_rows(self.row_weights, idx)).sum(dim=1)
            elif vmask is not None:
                val_count += vm.sum(dim=1)
            val += (lv * vm).sum(dim=1)
        exact = self.inputs is None and self.row_weights is None
        denom = self.val_mask.sum(dim=1) if exact else val_count.clamp_min(1e-12)
        return (val / denom).cpu().numpy()

    def keep_best(self, improved: np.ndarray, best_state: dict) -> None:
        """Copy the weights of the members that ``improved`` into ``best_state``."""
        sel = torch.as_tensor(improved, device=self.device)
        for name, tensor in self.model.state_dict().items():
            dst, src = _member_view(best_state[name], self.m), _member_view(tensor, self.m)
            if dst is not None:
                dst[sel] = src[sel].detach().clone()

    def finish(self, best_state: dict) -> None:
        """Load the best-epoch weights and leave the model in eval mode, every parameter trainable."""
        self.model.load_state_dict(best_state)
        self.model.set_noise(None)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(True)


def train_ensemble(
    model: DeepzEnsemble,
    features: torch.Tensor,
    redshift: torch.Tensor | None,
    ratios: torch.Tensor,
    ratio_err: torch.Tensor,
    splits: list[tuple[np.ndarray, np.ndarray]],
    config: TrainConfig,
    redshift_weight: float = 1.0,
    progress: Callable[[str], None] | None = None,
    inputs: InputSource | None = None,
    frozen: Sequence[str] = (),
    anchor: dict[str, torch.Tensor] | None = None,
    anchor_weight: float = 0.0,
    aux: AuxiliaryData | None = None,
    checkpoint: "EpochCheckpoint | None" = None,
    members: Sequence[int] | None = None,
    row_weights: torch.Tensor | None = None,
) -> TrainResult:
    """Train every member on its split; keep each member's best-validation-epoch weights.

    Tensors live on the training device: features (N, F), redshift (N,) (None to train the
    autoencoder alone), ratios and ratio_err (N, B). The loss per member is
    ``redshift_weight * NLL + ae_weight * reconstruction``.

    Optional: ``inputs`` rebuilds (augmented) features per batch instead of indexing ``features``;
    ``frozen`` parts (of :data:`rail.deepz.options.NETWORK_PARTS`) keep their weights and batch-norm statistics;
    ``anchor`` (parameter name -> tensor) adds ``anchor_weight * sum((w - anchor)^2)`` (L2-SP);
    ``aux`` mixes extra labelled rows into every batch; ``checkpoint`` (a
    :class:`rail.deepz.checkpoint.EpochCheckpoint`) saves the training state after every epoch and
    resumes from a checkpoint of this same training (bit-for-bit the uninterrupted result).
    ``members``: the indices in ``splits`` of the model's members (e.g. one MPI rank's share;
    default all). Every member has its own random streams, so it trains the same alone or with
    others; batch augmentation draws from one shared generator. ``row_weights`` (N,): per-row
    weights of the loss of the training rows, in training and best-epoch selection (e.g.
    covariate-shift weights toward a target sample; None = 1).
    """
    members = list(range(len(splits))) if members is None else [int(i) for i in members]
    t = _Trainer(model, features, redshift, ratios, ratio_err, splits, members, config, redshift_weight, inputs,
                 frozen, anchor, anchor_weight, aux, row_weights)
    m = t.m
    best_loss = np.full(m, np.inf)
    best_epoch = np.zeros(m, dtype=int)
    best_state = copy.deepcopy(model.state_dict())
    history: dict[str, list] = dict(train_loss=[], val_loss=[], lr=[])
    start, resume = 0, None
    if checkpoint is not None:
        from .checkpoint import EpochResumer  # pylint: disable=import-outside-toplevel

        resume = EpochResumer(checkpoint, model, t.opt, best_state, t.order_rngs, inputs, aux, progress=progress,
                              fingerprint_parts=[config, t.splits, members, features, redshift, ratios, ratio_err,
                                                 redshift_weight, list(t.frozen), anchor, anchor_weight]
                              + ([] if row_weights is None else [row_weights]))
        saved = resume.restore()
        if saved is not None:
            start, best_loss, best_epoch, history = saved
    t0 = time.time()
    for epoch in range(start, config.n_epochs):
        lr = config.lr_at(epoch)
        total = t.train_epoch(lr)
        val = t.validate()
        improved = val < best_loss
        if improved.any():
            t.keep_best(improved, best_state)
            best_loss = np.where(improved, val, best_loss)
            best_epoch = np.where(improved, epoch, best_epoch)
        history["train_loss"].append(float(total) / t.steps / m)
        history["val_loss"].append(val.tolist())
        history["lr"].append(lr)
        if resume is not None:
            resume.save(epoch + 1, best_loss, best_epoch, history)
        if progress is not None and (epoch % 5 == 4 or epoch == config.n_epochs - 1):
            progress(f"epoch {epoch + 1}/{config.n_epochs} lr {lr:.0e} train loss {history['train_loss'][-1]:.4f} "
                     f"val loss {np.mean(val):.4f} (best {np.mean(best_loss):.4f}) {time.time() - t0:.0f}s")
    t.finish(best_state)
    return TrainResult(best_val_loss=best_loss, best_epoch=best_epoch, history=history)


@torch.inference_mode()
def predict(
    model: DeepzEnsemble, features: torch.Tensor, batch_size: int = 16384
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-member mixtures for features (N, F): log-weights, means, stds, each (M, N, G)."""
    model.eval()
    outs = [model.mixture(features[s : s + batch_size])[:3] for s in range(0, features.shape[0], batch_size)]
    return tuple(torch.cat([o[i] for o in outs], dim=1) for i in range(3))  # type: ignore[return-value]
