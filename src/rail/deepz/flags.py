"""Per-galaxy quality flags written to the estimator's ancil column ``deepz_flag`` (bit mask).

A galaxy with ``BAD_REFERENCE`` set cannot be normalised (its reference band is missing,
non-detected or not positive): it gets the training-set redshift distribution as its PDF. The other
bits are informational: the network's PDF is used.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BAD_REFERENCE", "HAS_MISSING", "HAS_NONDETECTION", "ALL_MISSING", "describe", "compute_flags"]

BAD_REFERENCE = 1  # reference band unusable: PDF = training prior
HAS_MISSING = 2  # at least one band missing (NaN, -inf or nonobserved_val)
HAS_NONDETECTION = 4  # at least one band non-detected (nondetect_val, +inf or >= 90)
ALL_MISSING = 8  # every band missing: nothing measured at all

_NAMES = {
    BAD_REFERENCE: "reference band unusable, prior PDF returned",
    HAS_MISSING: "some bands missing",
    HAS_NONDETECTION: "some bands non-detected",
    ALL_MISSING: "no band measured",
}


def compute_flags(status: np.ndarray, bad_ref: np.ndarray) -> np.ndarray:
    """Flag bit mask (N,) int32 from per-band status (N, B) (0 ok, 1 non-detection, 2 missing)."""
    flags = np.zeros(status.shape[0], dtype=np.int32)
    flags |= np.where(bad_ref, BAD_REFERENCE, 0).astype(np.int32)
    flags |= np.where((status == 2).any(axis=1), HAS_MISSING, 0).astype(np.int32)
    flags |= np.where((status == 1).any(axis=1), HAS_NONDETECTION, 0).astype(np.int32)
    flags |= np.where((status == 2).all(axis=1), ALL_MISSING, 0).astype(np.int32)
    return flags


def describe(flag: int) -> list[str]:
    """Human-readable meaning of a flag value."""
    return [text for bit, text in _NAMES.items() if flag & bit]
