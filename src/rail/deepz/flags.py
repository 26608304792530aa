"""Per-galaxy quality flags written to the estimator's ancil column ``deepz_flag`` (bit mask).

A galaxy with ``BAD_REFERENCE`` set cannot be normalised (its reference band is missing,
non-detected or not positive): it gets the training-set redshift distribution as its PDF. The other
bits are informational: the network's PDF is used, computed without the flagged values (invalid
values count as missing bands; unusable errors are replaced by the band's limit error).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "BAD_REFERENCE",
    "HAS_MISSING",
    "HAS_NONDETECTION",
    "ALL_MISSING",
    "INVALID_VALUE",
    "BAD_ERROR",
    "describe",
    "compute_flags",
    "photometry_flags",
]

BAD_REFERENCE = 1  # reference band unusable: PDF = training prior
HAS_MISSING = 2  # at least one band missing (NaN, -inf, nonobserved_val or an invalid value)
HAS_NONDETECTION = 4  # at least one band non-detected (nondetect_val, +inf or >= 90)
ALL_MISSING = 8  # every band missing: nothing measured at all
INVALID_VALUE = 16  # at least one magnitude was not a usable number (e.g. 1e30, text): treated as missing
BAD_ERROR = 32  # at least one detection had an unusable error (NaN, inf, <= 0): limit error used

_NAMES = {
    BAD_REFERENCE: "reference band unusable, prior PDF returned",
    HAS_MISSING: "some bands missing",
    HAS_NONDETECTION: "some bands non-detected",
    ALL_MISSING: "no band measured",
    INVALID_VALUE: "some magnitudes invalid (absurd value or not a number), treated as missing",
    BAD_ERROR: "some errors unusable (NaN, inf or <= 0), replaced by the limit error",
}


def compute_flags(status: np.ndarray, bad_ref: np.ndarray, invalid: np.ndarray | None = None,
                  bad_err: np.ndarray | None = None) -> np.ndarray:
    """Flag bit mask (N,) int32 from per-band status (N, B) (0 ok, 1 non-detection, 2 missing).

    ``invalid`` and ``bad_err`` (N, B) are :class:`rail.deepz.inputs.Photometry`'s masks.
    """
    flags = np.zeros(status.shape[0], dtype=np.int32)
    flags |= np.where(bad_ref, BAD_REFERENCE, 0).astype(np.int32)
    flags |= np.where((status == 2).any(axis=1), HAS_MISSING, 0).astype(np.int32)
    flags |= np.where((status == 1).any(axis=1), HAS_NONDETECTION, 0).astype(np.int32)
    flags |= np.where((status == 2).all(axis=1), ALL_MISSING, 0).astype(np.int32)
    if invalid is not None:
        flags |= np.where(np.asarray(invalid).any(axis=1), INVALID_VALUE, 0).astype(np.int32)
    if bad_err is not None:
        flags |= np.where(np.asarray(bad_err).any(axis=1), BAD_ERROR, 0).astype(np.int32)
    return flags


def photometry_flags(phot, bad_ref: np.ndarray) -> np.ndarray:
    """Flags of a :class:`rail.deepz.inputs.Photometry` (all bits)."""
    return compute_flags(phot.status, bad_ref, getattr(phot, "invalid", None), getattr(phot, "bad_err", None))


def describe(flag: int) -> list[str]:
    """Human-readable meaning of a flag value."""
    return [text for bit, text in _NAMES.items() if flag & bit]
