"""Training-time augmentation on the training device: randomised coadds, outliers, flux noise.

Network inputs are normally computed once (:func:`rail.deepz.features.flux_features`). When any
augmentation is on, the informer keeps the fluxes (:class:`rail.deepz.inputs.FluxTable`) on the
training device instead and rebuilds the features of every batch (:class:`BatchInputs`), all vectorised over (members, galaxies, bands,
exposures):

* randomised coadds (Eriksen et al. 2020, section 5): each individual exposure is kept with
  probability ``keep_prob`` (Bernoulli), and the inverse-variance coadd is rebuilt from the kept
  ones. ``coadd_mode="force_one"`` keeps one random exposure of every observed band that would
  lose them all; ``"drop"`` removes such galaxies from the batch's loss instead;
* photometric outliers (appendix B): a fraction of the galaxies of each batch gets one band
  (uniform over the observed bands other than the reference) multiplied by ``1 +- A`` with
  A ~ U(``amplitude``), i.e. an additional flux of A times the band flux (the error for bands
  whose |flux| is below it, e.g. non-detections), sign random;
* flux noise: every observed flux is resampled as f + ``flux_noise`` x sigma x N(0, 1).

Validation and prediction use the full coadd (all exposures) without any augmentation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import features as feat
from .inputs import FluxTable, coadd_exposures
from .options import COADD_MODES

__all__ = [
    "Augmentation",
    "randomized_coadd",
    "inject_outliers",
    "add_flux_noise",
    "BatchInputs",
]

@dataclass
class Augmentation:
    """Augmentation settings (see the module docstring); the defaults switch everything off."""

    keep_prob: float = 1.0
    coadd_mode: str = "force_one"
    outlier_fraction: float = 0.0
    outlier_amplitude: tuple[float, float] = (0.2, 1.0)
    flux_noise: float = 0.0

    def check(self) -> None:
        if not 0.0 < self.keep_prob <= 1.0:
            raise ValueError(f"option 'coadd_keep_prob' must be in (0, 1], got {self.keep_prob}")
        if self.coadd_mode not in COADD_MODES:
            raise ValueError(f"option 'coadd_mode' must be one of {COADD_MODES}, got {self.coadd_mode!r}")
        if not 0.0 <= self.outlier_fraction <= 1.0:
            raise ValueError(f"option 'outlier_fraction' must be in [0, 1], got {self.outlier_fraction}")
        lo, hi = self.outlier_amplitude
        if not 0.0 <= lo <= hi:
            raise ValueError(f"option 'outlier_amplitude' must be [lo, hi] with 0 <= lo <= hi, got {self.outlier_amplitude}")
        if self.flux_noise < 0:
            raise ValueError(f"flux noise factor must be >= 0, got {self.flux_noise}")


def randomized_coadd(flux: torch.Tensor, flux_err: torch.Tensor, keep_prob: float, generator: torch.Generator | None,
                     mode: str = "force_one") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse-variance coadd of a random subset of exposures.

    Parameters
    ----------
    flux, flux_err : (..., B, K) exposure fluxes and errors [nJy], NaN where missing
    keep_prob : probability of keeping each exposure (1: the full coadd)
    generator : torch random generator on the tensors' device
    mode : ``"force_one"`` (observed bands keep at least one exposure) or ``"drop"``

    Returns
    -------
    coadd flux, coadd error (..., B) (NaN / inf where nothing is kept), and ``ok`` (...): False for
    galaxies that lost every exposure of an observed band (only with ``mode="drop"``).
    """
    valid = torch.isfinite(flux) & torch.isfinite(flux_err) & (flux_err > 0)
    if keep_prob >= 1.0:
        keep = valid
        ok = torch.ones(flux.shape[:-2], dtype=torch.bool, device=flux.device)
    else:
        u = torch.rand(flux.shape, generator=generator, device=flux.device)
        keep = valid & (u < keep_prob)
        lost = valid.any(-1) & ~keep.any(-1)  # (..., B)
        if mode == "force_one":
            score = torch.where(valid, torch.rand(flux.shape, generator=generator, device=flux.device),
                                torch.full_like(flux, -1.0))
            pick = torch.nn.functional.one_hot(score.argmax(-1), flux.shape[-1]).bool()
            keep = keep | (pick & lost.unsqueeze(-1))
            ok = torch.ones(flux.shape[:-2], dtype=torch.bool, device=flux.device)
        else:
            ok = ~lost.any(-1)
    cflux, cerr = coadd_exposures(flux, flux_err, keep)
    return cflux, cerr, ok


def inject_outliers(flux: torch.Tensor, flux_err: torch.Tensor, missing: torch.Tensor, fraction: float,
                    amplitude: tuple[float, float], ref_index: int,
                    generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt one band of a random ``fraction`` of galaxies (paper appendix B).

    flux, flux_err, missing: (..., B). The chosen band (uniform among observed bands other than
    ``ref_index``) gets ``flux + s A max(|flux|, err)``, A ~ U(amplitude), s = +-1.
    Returns the corrupted fluxes and the (...) bool mask of corrupted galaxies.
    """
    dev = flux.device
    shape = flux.shape[:-1]
    eligible = ~missing
    eligible[..., ref_index] = False
    hit = (torch.rand(shape, generator=generator, device=dev) < fraction) & eligible.any(-1)
    score = torch.where(eligible, torch.rand(flux.shape, generator=generator, device=dev), torch.full_like(flux, -1.0))
    band = torch.nn.functional.one_hot(score.argmax(-1), flux.shape[-1]).bool() & hit.unsqueeze(-1)
    lo, hi = float(amplitude[0]), float(amplitude[1])
    amp = lo + (hi - lo) * torch.rand(shape, generator=generator, device=dev)
    sign = torch.where(torch.rand(shape, generator=generator, device=dev) < 0.5, -1.0, 1.0)
    scale = torch.maximum(flux.abs(), torch.where(torch.isfinite(flux_err), flux_err, torch.zeros_like(flux_err)))
    shift = (sign * amp).unsqueeze(-1) * scale
    return torch.where(band, flux + shift, flux), hit


def add_flux_noise(flux: torch.Tensor, flux_err: torch.Tensor, missing: torch.Tensor, factor: float,
                   generator: torch.Generator | None) -> torch.Tensor:
    """f + factor * sigma * N(0, 1) for observed bands (..., B)."""
    noise = torch.randn(flux.shape, generator=generator, device=flux.device)
    err = torch.where(torch.isfinite(flux_err), flux_err, torch.zeros_like(flux_err))
    return torch.where(missing, flux, flux + factor * err * noise)


class BatchInputs:
    """Per-batch network inputs rebuilt on the training device from fluxes, with augmentation.

    ``batch(idx, train)`` takes row indices (M, b) and returns scaled features (M, b, F), the
    autoencoder target ratios and errors (M, b, B) and a validity mask (M, b) (False: the row
    cannot be used in this batch, e.g. its reference flux became non-positive). With
    ``train=False`` no augmentation is applied (the full coadd).
    """

    def __init__(self, table: FluxTable, mean: np.ndarray, std: np.ndarray, ref_index: int, aug: Augmentation,
                 device: torch.device, seed: int) -> None:
        aug.check()
        self.aug, self.ref_index, self.device = aug, ref_index, device
        self.exposures = table.exposures
        self.flux = torch.as_tensor(table.flux, dtype=torch.float32, device=device)
        self.flux_err = torch.as_tensor(table.flux_err, dtype=torch.float32, device=device)
        self.missing = torch.as_tensor(table.missing, device=device)
        self.mean = torch.as_tensor(mean, device=device)
        self.std = torch.as_tensor(std, device=device)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(int(seed) + 7919)
        if self.exposures:
            f, e = coadd_exposures(self.flux, self.flux_err)
            self.full_flux, self.full_err = f, e
        else:
            self.full_flux, self.full_err = self.flux, self.flux_err

    def __len__(self) -> int:
        return int(self.flux.shape[0])

    def fluxes(self, idx: torch.Tensor, train: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Coadd fluxes, errors, missing (…, B) and row validity (…) for row indices ``idx``."""
        missing = self.missing[idx]
        ok = torch.ones(idx.shape, dtype=torch.bool, device=self.device)
        if train and self.exposures and self.aug.keep_prob < 1.0:
            flux, err, ok = randomized_coadd(self.flux[idx], self.flux_err[idx], self.aug.keep_prob,
                                             self.generator, self.aug.coadd_mode)
            missing = missing | ~torch.isfinite(flux)
        else:
            flux, err = self.full_flux[idx], self.full_err[idx]
        if train and self.aug.flux_noise > 0:
            flux = add_flux_noise(flux, err, missing, self.aug.flux_noise, self.generator)
        if train and self.aug.outlier_fraction > 0:
            flux, _ = inject_outliers(flux, err, missing, self.aug.outlier_fraction, self.aug.outlier_amplitude,
                                      self.ref_index, self.generator)
        return flux, err, missing, ok

    def batch(self, idx: torch.Tensor, train: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        flux, err, missing, ok = self.fluxes(idx, train)
        x, ratios, ratio_err, bad_ref = feat.flux_features_torch(flux, err, missing, self.ref_index)
        return (x - self.mean) / self.std, ratios, ratio_err, ok & ~bad_ref
