"""Training checkpoints: an interrupted training resumes where it stopped, with the same result.

:func:`rail.deepz.training.train_ensemble` saves, after every epoch, everything the rest of the
training depends on: the weights and batch-norm statistics, the optimiser state, the best-epoch
weights and losses so far, the loss history, the epoch, and the state of every random stream (the
numpy generators of batch order and dropout, the torch global generator and the generators of the
batch augmentation). A re-run of the same training finds the file, checks its *fingerprint* (a
SHA-256 of the training configuration, the data, the splits and the initial weights) and continues
from the saved epoch; with fixed seeds the final model is bit-for-bit the one an uninterrupted run
gives. A checkpoint whose fingerprint differs (other options or data) is ignored with a warning and
overwritten: training starts afresh.

Each training phase (``pretrain``, ``train``, ``autoencoder``) has its own file in the checkpoint
folder, so a fine-tuning interrupted after a completed pretraining does not pretrain again.
Files are written atomically (temporary file, fsync, rename) with ``torch.save`` and read with
``torch.load(weights_only=True)``: tensors and plain containers only, no code is executed. The
folder is removed by :meth:`CheckpointStore.clear` once the model is complete. ``min_interval``
(seconds) saves less often for large models; a resume then repeats the epochs since the last save,
with the same result.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, is_dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from .model_io import mkstemp_for_output

__all__ = ["CHECKPOINT_VERSION", "EpochCheckpoint", "CheckpointStore", "EpochResumer", "fingerprint", "TrainingState"]

CHECKPOINT_VERSION = 1


def _hash_value(h: "hashlib._Hash", value: Any) -> None:
    """Feed a value (tensors, arrays, containers, dataclasses, scalars) into a hash."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        a = np.ascontiguousarray(value)
        h.update(f"array{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    elif is_dataclass(value) and not isinstance(value, type):
        h.update(type(value).__name__.encode())
        _hash_value(h, asdict(value))
    elif isinstance(value, dict):
        h.update(b"dict")
        for key in sorted(value, key=str):
            h.update(str(key).encode())
            _hash_value(h, value[key])
    elif isinstance(value, (list, tuple)):
        h.update(f"seq{len(value)}".encode())
        for item in value:
            _hash_value(h, item)
    else:
        h.update(repr(value).encode())


def fingerprint(*parts: Any) -> str:
    """SHA-256 of configuration, data and initial weights: equal only for the same training."""
    h = hashlib.sha256()
    for part in parts:
        _hash_value(h, part)
    return h.hexdigest()


def _plain(value: Any) -> Any:
    """JSON fallback for numpy scalars and arrays in the loss history."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint")


class TrainingState:
    """The mutable state of one training run that a checkpoint captures and restores.

    ``np_generators`` and ``torch_generators`` are every random stream the remaining epochs
    consume (the torch global generator is always included).
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, best_state: dict,
                 np_generators: Sequence[np.random.Generator], torch_generators: Sequence[torch.Generator]) -> None:
        self.model = model
        self.optimizer = optimizer
        self.best_state = best_state
        self.np_generators = list(np_generators)
        self.torch_generators = list(torch_generators)

    def capture(self, epoch: int, best_loss: np.ndarray, best_epoch: np.ndarray, history: dict) -> dict:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        info = dict(
            epoch=int(epoch),
            best_loss=[float(v) for v in best_loss],
            best_epoch=[int(v) for v in best_epoch],
            history=history,
            np_generators=[g.bit_generator.state for g in self.np_generators],
        )
        return dict(
            model={k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            best_state={k: v.detach().cpu().clone() for k, v in self.best_state.items()},
            optimizer=self.optimizer.state_dict(),
            torch_rng=torch.get_rng_state(),
            cuda_rng=list(cuda),
            torch_generators=[g.get_state() for g in self.torch_generators],
            info=json.dumps(info, default=_plain),
        )

    def restore(self, saved: dict) -> tuple[int, np.ndarray, np.ndarray, dict]:
        """Put a captured state back; returns (epoch, best_loss, best_epoch, history)."""
        info = json.loads(saved["info"])
        if len(info["np_generators"]) != len(self.np_generators) or \
                len(saved["torch_generators"]) != len(self.torch_generators):
            raise ValueError("checkpoint random streams do not match this training")
        self.model.load_state_dict(saved["model"])
        for name, tensor in saved["best_state"].items():
            self.best_state[name].copy_(tensor)
        self.optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["torch_rng"])
        if saved["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        for g, state in zip(self.torch_generators, saved["torch_generators"]):
            g.set_state(state)
        for g, state in zip(self.np_generators, info["np_generators"]):
            g.bit_generator.state = state
        return (int(info["epoch"]), np.asarray(info["best_loss"], dtype=float),
                np.asarray(info["best_epoch"], dtype=int), info["history"])


class EpochCheckpoint:
    """One phase's checkpoint file: ``load`` (None when absent or from another training), ``save``."""

    def __init__(self, path: str, log: Callable[[str], None] | None = None, min_interval: float = 0.0) -> None:
        self.path = path
        self.log = log or (lambda msg: None)
        self.min_interval = float(min_interval)  # seconds between saves (0: every epoch)
        self._last_save = -np.inf

    def due(self) -> bool:
        """Whether ``min_interval`` seconds have passed since the last save."""
        return time.monotonic() - self._last_save >= self.min_interval

    def load(self, fp: str) -> dict | None:
        """The saved state if the file exists and was written by the same training (``fp``)."""
        if not os.path.exists(self.path):
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # damaged (e.g. a crash of the file system): start again
            self.log(f"WARNING: checkpoint '{self.path}' is unreadable ({exc}); training starts afresh")
            return None
        if not isinstance(saved, dict) or saved.get("version") != CHECKPOINT_VERSION:
            self.log(f"WARNING: checkpoint '{self.path}' has another format; training starts afresh")
            return None
        if saved.get("fingerprint") != fp:
            self.log(f"WARNING: checkpoint '{self.path}' belongs to a different configuration or data; "
                     "it is ignored and will be overwritten: training starts afresh")
            return None
        return saved

    def save(self, fp: str, state: dict) -> None:
        """Write ``state`` atomically (temporary file in the same folder, fsync, rename)."""
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = mkstemp_for_output(folder, ".ckpt_")  # mode 0o666 & ~umask, not mkstemp's 0600
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(dict(state, version=CHECKPOINT_VERSION, fingerprint=fp), f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            self._last_save = time.monotonic()
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise


class CheckpointStore:
    """The checkpoint folder of one informer run: one :class:`EpochCheckpoint` per phase."""

    def __init__(self, folder: str, log: Callable[[str], None] | None = None, tag: str = "",
                 min_interval: float = 0.0) -> None:
        self.folder = folder
        self.log = log or (lambda msg: None)
        self.tag = tag  # e.g. ".rank1": one file per MPI rank
        self.min_interval = min_interval

    def phase(self, name: str) -> EpochCheckpoint:
        return EpochCheckpoint(os.path.join(self.folder, f"{name}{self.tag}.ckpt"), self.log, self.min_interval)

    def files(self) -> list[str]:
        return sorted(os.listdir(self.folder)) if os.path.isdir(self.folder) else []

    def clear(self, phases: Iterable[str] | None = None) -> None:
        """Remove the checkpoints (all, or those of ``phases``); the folder too when left empty."""
        if not os.path.isdir(self.folder):
            return
        names = [f for f in self.files() if f.endswith(f"{self.tag}.ckpt") or f.startswith(".ckpt_")] \
            if phases is None else [f"{p}{self.tag}.ckpt" for p in phases]
        for name in names:
            path = os.path.join(self.folder, name)
            if name.endswith(".ckpt") or name.startswith(".ckpt_"):
                try:
                    os.remove(path)
                except FileNotFoundError:  # absent, or removed by another MPI rank
                    pass
        try:
            if not os.listdir(self.folder):
                shutil.rmtree(self.folder, ignore_errors=True)
        except FileNotFoundError:  # another MPI rank removed the folder first
            pass


def _inputs_identity(inputs: Any) -> Any:
    """What a batch-input builder's results depend on (not its generator or device)."""
    if inputs is None:
        return None
    keys = ("aug", "ref_index", "exposures", "flux", "flux_err", "missing", "mean", "std")
    return [type(inputs).__name__] + [getattr(inputs, k, None) for k in keys]


class EpochResumer:
    """Glue between :func:`rail.deepz.training.train_ensemble` and an :class:`EpochCheckpoint`.

    Built before the first epoch (so the fingerprint sees the initial weights); :meth:`restore`
    returns the saved (epoch, best_loss, best_epoch, history) or None, :meth:`save` is called
    after every epoch.
    """

    def __init__(self, checkpoint: EpochCheckpoint, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 best_state: dict, np_generators: Sequence[np.random.Generator], inputs: Any, aux: Any,
                 fingerprint_parts: Sequence[Any], progress: Callable[[str], None] | None = None) -> None:
        noise = []
        for mod in model.modules():  # per-member dropout streams, when the model has them
            gens = getattr(getattr(mod, "noise", None), "generators", None) or []
            noise += [g for g in gens if all(g is not n for n in noise)]
        aux_inputs = getattr(aux, "inputs", None)
        torch_gens = [g for g in (getattr(inputs, "generator", None), getattr(aux_inputs, "generator", None))
                      if g is not None]
        self.checkpoint = checkpoint
        self.state = TrainingState(model, optimizer, best_state, list(np_generators) + noise, torch_gens)
        aux_id = None if aux is None else [getattr(aux, k, None) for k in ("redshift", "indices", "batch_size", "weight")]
        self.fp = fingerprint(list(fingerprint_parts), _inputs_identity(inputs), aux_id, _inputs_identity(aux_inputs),
                              {k: v for k, v in model.state_dict().items()})
        self.progress = progress or (lambda msg: None)

    def restore(self) -> tuple[int, np.ndarray, np.ndarray, dict] | None:
        saved = self.checkpoint.load(self.fp)
        if saved is None:
            return None
        out = self.state.restore(saved)
        self.progress(f"resuming from checkpoint '{self.checkpoint.path}' after epoch {out[0]}")
        return out

    def save(self, epoch: int, best_loss: np.ndarray, best_epoch: np.ndarray, history: dict) -> None:
        if not self.checkpoint.due():
            return
        self.checkpoint.save(self.fp, self.state.capture(epoch, best_loss, best_epoch, history))
