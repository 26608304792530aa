"""Ensemble members spread over MPI ranks during inform, gathered into one model on rank 0.

Rank r trains the contiguous slice :func:`member_slice` of the ensemble (its own random streams:
:func:`rail.deepz.networks.member_rng`), then :func:`gather_ensemble` sends every rank's weights
(numpy arrays, ``comm.gather``) to rank 0, which stacks them into one :class:`DeepzEnsemble`
identical to the one a single process trains. Any object with mpi4py's lower-case API
(``Get_rank``, ``Get_size``, ``gather``, ``bcast``) works as ``comm``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .networks import DeepzEnsemble
from .training import TrainResult

__all__ = ["member_slice", "gather_ensemble", "is_distributed"]


def is_distributed(comm: Any) -> bool:
    """True when ``comm`` is an MPI communicator with more than one rank."""
    return comm is not None and comm.Get_size() > 1


def member_slice(n_members: int, rank: int, size: int) -> list[int]:
    """The members trained by ``rank`` of ``size``: contiguous, sizes differ by at most one."""
    return [int(i) for i in np.array_split(np.arange(n_members), size)[rank]]


def _merge_results(parts: list[tuple[list[int], TrainResult | None]], n_members: int) -> TrainResult:
    """One TrainResult for the whole ensemble from the ranks' (members, result) pairs."""
    best_loss, best_epoch = np.full(n_members, np.inf), np.zeros(n_members, dtype=int)
    trained = [(m, r) for m, r in parts if m and r is not None]
    for members, res in trained:
        best_loss[members], best_epoch[members] = res.best_val_loss, res.best_epoch
    n_epochs = len(trained[0][1].history["lr"])
    weights = np.array([len(m) for m, _ in trained], dtype=float)
    history: dict[str, list] = dict(
        # per-rank mean over its members -> mean over all members
        train_loss=[float(np.dot(weights, [r.history["train_loss"][e] for _, r in trained]) / weights.sum())
                    for e in range(n_epochs)],
        val_loss=[sum((list(r.history["val_loss"][e]) for _, r in trained), []) for e in range(n_epochs)],
        lr=list(trained[0][1].history["lr"]),
    )
    return TrainResult(best_val_loss=best_loss, best_epoch=best_epoch, history=history)


def gather_ensemble(comm: Any, model: DeepzEnsemble | None, members: list[int], result: TrainResult | None,
                    full: DeepzEnsemble | None) -> TrainResult | None:
    """Gather every rank's trained members into ``full`` (rank 0); returns the merged result there.

    ``model`` holds this rank's ``members`` (None or empty when the rank has none) and ``result``
    its :class:`TrainResult`. On rank 0 ``full`` (an ensemble of all members) receives the stacked
    weights and batch-norm statistics; other ranks return None and leave ``full`` untouched.
    """
    state = None if model is None or not members else \
        {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    parts = comm.gather((members, state, result), root=0)
    if comm.Get_rank() != 0:
        return None
    assert full is not None, "rank 0 needs the full ensemble to gather into"
    n_members = full.n_members
    got = sorted(i for m, _, _ in parts for i in m)
    if got != list(range(n_members)):
        raise RuntimeError(f"MPI gather: members {got} received, expected 0..{n_members - 1}")
    merged = {}
    ref = full.state_dict()
    for name, dst in ref.items():
        if dst.dim() == 0:  # e.g. batch-norm step counters: the same on every rank
            merged[name] = torch.as_tensor(next(s[name] for m, s, _ in parts if m))
            continue
        rows = dst.reshape(n_members, -1).clone()
        for m, s, _ in parts:
            if m:
                rows[m] = torch.as_tensor(s[name]).reshape(len(m), -1).to(rows.dtype)
        merged[name] = rows.reshape(dst.shape)
    full.load_state_dict(merged)
    full.eval()
    return _merge_results([(m, r) for m, _, r in parts], n_members)
