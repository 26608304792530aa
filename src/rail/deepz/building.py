"""Building the parts of a model: architecture, freshly initialised ensemble, prior, metadata."""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
import torch

from .model_io import package_versions
from .networks import Architecture, DeepzEnsemble, default_layers, init_members

__all__ = ["architecture_for", "build_network", "prior_mixture", "photometry_meta", "training_summary",
           "package_versions"]


def architecture_for(opts: Any, n_inputs: int, z_scale: float) -> Architecture:
    """The network architecture of an informer's options (``[]`` layer lists: the band-count defaults)."""
    layers = default_layers(len(opts.bands))
    return Architecture(
        n_inputs=n_inputs,
        n_bands=len(opts.bands),
        encoder_layers=list(opts.encoder_layers) or layers["encoder_layers"],
        decoder_layers=list(opts.decoder_layers) or layers["decoder_layers"],
        mdn_layers=list(opts.mdn_layers) or layers["mdn_layers"],
        latent_dim=opts.latent_dim,
        n_gaussians=opts.n_gaussians,
        dropout=opts.dropout,
        z_scale=z_scale,
    )


def build_network(arch: Architecture, n_members: int, seed: int,
                  members: Sequence[int] | None = None) -> DeepzEnsemble:
    """A freshly initialised ensemble; the same seed gives the same initial weights.

    Each member's weights come from its own stream (seed, global member index), so member i is the
    same in any subset: ``members`` lists the global indices (default ``range(n_members)``).
    """
    torch.manual_seed(seed)
    model = DeepzEnsemble(arch, n_members)
    init_members(model, seed, range(n_members) if members is None else members)
    return model


def prior_mixture(z: np.ndarray, n_components: int) -> dict[str, np.ndarray]:
    """The training redshift distribution as an equal-weight Gaussian mixture of (K,) arrays.

    Components sit at the (k + 0.5)/K quantiles with widths set by the local quantile spacing;
    used as the PDF of galaxies the network cannot handle.
    """
    q = np.quantile(z, (np.arange(n_components) + 0.5) / n_components)
    edges = np.quantile(z, np.linspace(0, 1, n_components + 1))
    width = np.maximum(np.diff(edges), 0.02)
    return dict(
        weights=np.full(n_components, 1.0 / n_components),
        means=q.astype(np.float64),
        stds=width.astype(np.float64),
    )


def photometry_meta(opts: Any) -> dict:
    """The model metadata that fixes how a table's photometry is read (bands and bad-value rules)."""
    return dict(
        bands=list(opts.bands),
        err_bands=list(opts.err_bands),
        ref_band=opts.ref_band,
        mag_limits={b: float(opts.mag_limits[b]) for b in opts.bands},
        nondetect_val=float(opts.nondetect_val),
        nonobserved_val=float(opts.nonobserved_val),
        photometry=opts.photometry,
    )


def training_summary(n: int, n_dropped_ref: int, result: Any, t0: float, device: Any, cfg: Any) -> dict:
    """The model metadata that records a training run (rows, best epochs, losses, seconds, schedule)."""
    return dict(
        n_train=n,
        n_dropped_ref=n_dropped_ref,
        best_epoch=result.best_epoch.tolist(),
        best_val_loss=result.best_val_loss.tolist(),
        train_loss=result.history["train_loss"],
        seconds=time.time() - t0,
        device=str(device),
        config=dict(vars(cfg)),
    )
