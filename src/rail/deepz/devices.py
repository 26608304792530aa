"""Choosing the torch device and thread count."""

from __future__ import annotations

import re

import torch

__all__ = ["resolve_device", "set_num_threads"]

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


def resolve_device(device: str, rank: int = 0) -> torch.device:
    """'auto' -> CUDA when available (GPU ``rank % n_gpus`` under MPI), else CPU; or 'cpu', 'cuda[:i]', 'mps'.

    Raises ``ValueError`` for an unknown name or a CUDA device that is not available.
    """
    if not isinstance(device, str) or not _DEVICE_RE.match(device):
        raise ValueError(f"option 'device' must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device(f"cuda:{rank % torch.cuda.device_count()}")
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"option 'device' is {device!r} but CUDA is not available on this machine")
        index = int(device.split(":")[1]) if ":" in device else rank % torch.cuda.device_count()
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"option 'device' is {device!r} but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
        return torch.device(f"cuda:{index}")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ValueError("option 'device' is 'mps' but MPS is not available on this machine")
    return torch.device(device)


def set_num_threads(num_threads: int) -> None:
    """Set torch's CPU thread count; 0 keeps torch's default (which follows OMP_NUM_THREADS)."""
    if num_threads < 0:
        raise ValueError(f"option 'num_threads' must be >= 0, got {num_threads}")
    if num_threads > 0:
        torch.set_num_threads(num_threads)
