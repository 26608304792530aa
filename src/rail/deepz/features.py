"""Fluxes -> network inputs: flux ratios to the reference band, as well-scaled features.

Features, shape (N, 2 B + 1): for every band b (the reference band included)

* ``asinh(r_b / s)`` with r_b = f_b / f_ref and softening s = ``RATIO_SOFTENING`` (log-like
  for detections, linear through zero and negative fluxes, 0 for missing bands); and
* the log relative error ``log10(sigma_b / f_ref)`` (floored at ``LOG_ERR_FLOOR``), set to
  ``MISSING_LOG_ERR`` for missing bands;

plus the reference-band magnitude (the brightness information that ratios lose). Rows whose
reference band is not a positive detection cannot be normalised (``bad_ref``). The feature scaler
(mean and std over the training set) is stored in the model. Reading the fluxes from a table is
:mod:`rail.deepz.inputs`'s job.
"""

from __future__ import annotations

import numpy as np

from .inputs import AB_ZEROPOINT_NJY, STATUS_MISSING, STATUS_OK, Photometry

__all__ = [
    "RATIO_SOFTENING",
    "MISSING_LOG_ERR",
    "LOG_ERR_FLOOR",
    "flux_features",
    "n_features",
    "fit_scaler",
    "flux_features_torch",
]

RATIO_SOFTENING = 0.05  # asinh softening of flux ratios (~ S/N 20 on a ratio of 1)
MISSING_LOG_ERR = 3.0  # log10 relative error given to missing bands (1000 x the reference flux)
LOG_ERR_FLOOR = -4.0  # log10 relative error floor


def n_features(n_bands: int) -> int:
    """Number of network features for ``n_bands`` bands."""
    return 2 * n_bands + 1


def flux_features(phot: Photometry, ref_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Network features from fluxes.

    Returns
    -------
    features : (N, 2B+1) float32, unscaled (see the module docstring)
    ratios : (N, B) float32, flux / reference flux (0 where missing): the autoencoder target
    ratio_err : (N, B) float32, flux error / reference flux (inf where missing)
    bad_ref : (N,) bool, rows whose reference band is not a positive detection
    """
    flux, err, status = phot.flux, phot.flux_err, phot.status
    ref = flux[:, ref_index]
    bad_ref = (status[:, ref_index] != STATUS_OK) | ~(ref > 0) | ~np.isfinite(ref)
    safe_ref = np.where(bad_ref, 1.0, ref)[:, None]
    missing = status == STATUS_MISSING
    ratios = np.where(missing, 0.0, flux / safe_ref)
    rel_err = err / safe_ref
    ratio_err = np.where(missing, np.inf, rel_err)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_err = np.log10(np.maximum(rel_err, 10.0**LOG_ERR_FLOOR))
    log_err = np.where(missing, MISSING_LOG_ERR, np.minimum(log_err, MISSING_LOG_ERR))
    ref_mag = np.where(bad_ref, 0.0, -2.5 * np.log10(safe_ref[:, 0]) + AB_ZEROPOINT_NJY)
    feats = np.concatenate([np.arcsinh(ratios / RATIO_SOFTENING), log_err, ref_mag[:, None]], axis=1)
    feats[bad_ref] = 0.0
    ratios[bad_ref] = 0.0
    with np.errstate(over="ignore"):  # a huge relative error becomes inf: no information, like a missing band
        ratio_err32 = ratio_err.astype(np.float32)
    return (
        feats.astype(np.float32),
        np.clip(ratios, -1e30, 1e30).astype(np.float32),  # finite autoencoder targets
        ratio_err32,
        bad_ref,
    )


def fit_scaler(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (F,) of training features; constant features get std 1."""
    x = np.asarray(features, dtype=np.float64)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std = np.where(std > 1e-6 * np.maximum(1.0, np.abs(mean)), std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


def flux_features_torch(flux, flux_err, missing, ref_index: int):
    """Torch twin of :func:`flux_features` for fluxes already in nJy (used on the training device).

    Parameters
    ----------
    flux, flux_err : torch.Tensor
        (..., B) fluxes and errors in nJy (coadds or augmented fluxes; may be negative).
    missing : torch.Tensor
        (..., B) bool: band without any measurement.
    ref_index : int
        Index of the reference band.

    Returns
    -------
    tuple of torch.Tensor
        Features (..., 2B+1), ratios (..., B), ratio errors (..., B) and bad_ref (...), defined as
        in :func:`flux_features` (detections and measured non-detections alike).
    """
    import torch  # pylint: disable=import-outside-toplevel

    flux = torch.where(missing, torch.zeros_like(flux), flux)
    err = torch.where(missing | ~torch.isfinite(flux_err) | (flux_err <= 0), torch.ones_like(flux_err), flux_err)
    ref = flux[..., ref_index]
    bad_ref = missing[..., ref_index] | ~(ref > 0) | ~torch.isfinite(ref)
    safe_ref = torch.where(bad_ref, torch.ones_like(ref), ref).unsqueeze(-1)
    ratios = torch.where(missing, torch.zeros_like(flux), flux / safe_ref)
    rel_err = err / safe_ref
    ratio_err = torch.where(missing, torch.full_like(rel_err, float("inf")), rel_err)
    log_err = torch.log10(torch.clamp(rel_err, min=10.0**LOG_ERR_FLOOR)).clamp(max=MISSING_LOG_ERR)
    log_err = torch.where(missing, torch.full_like(log_err, MISSING_LOG_ERR), log_err)
    ref_mag = torch.where(bad_ref, torch.zeros_like(ref), -2.5 * torch.log10(safe_ref[..., 0]) + AB_ZEROPOINT_NJY)
    feats = torch.cat([torch.asinh(ratios / RATIO_SOFTENING), log_err, ref_mag.unsqueeze(-1)], dim=-1)
    feats = torch.where(bad_ref.unsqueeze(-1), torch.zeros_like(feats), feats)
    ratios = torch.where(bad_ref.unsqueeze(-1), torch.zeros_like(ratios), ratios)
    return feats, ratios, ratio_err, bad_ref
