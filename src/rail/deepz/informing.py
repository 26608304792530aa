"""Building a Deepz model from a spectroscopic training table (the work behind DeepzInformer)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch.profiler import record_function

from . import features as feat
from .augmentation import Augmentation, BatchInputs, FluxTable, has_exposures, read_flux_table
from .calibration import Calibration, fit_calibration
from .devices import resolve_device
from .model_io import FORMAT, FORMAT_VERSION, DeepzModel, package_versions
from .networks import Architecture, DeepzEnsemble, default_layers, init_members
from .training import TrainConfig, ensemble_splits, predict, train_ensemble

if TYPE_CHECKING:
    from .checkpoint import CheckpointStore

__all__ = [
    "InformOptions",
    "TransferOptions",
    "prepare_training_data",
    "train_deepz",
    "prior_mixture",
    "build_network",
]

USE_EXPOSURES = ("auto", "yes", "no")


@dataclass
class TransferOptions:
    """Pretraining on simulations and fine-tuning (see :mod:`rail.deepz.transfer`).

    Pretraining: ``pretrain_members`` networks (member m of the final ensemble starts from
    pretrained network m % pretrain_members), trained with ``pretrain_learning_rates`` /
    ``pretrain_epochs_per_step``, batch ``pretrain_batch_size``, loss NLL + ``pretrain_ae_weight``
    x reconstruction, input fluxes resampled with ``pretrain_flux_noise`` x their errors, best
    epoch on a random ``pretrain_val_fraction`` of the simulations.
    Fine-tuning: the parts ``pretrain_parts`` start from the pretrained weights (others are
    re-initialised); ``freeze`` parts stay fixed; ``finetune_learning_rates`` /
    ``finetune_epochs_per_step`` ([] = the from-scratch ``learning_rates`` / ``epochs_per_step``);
    ``finetune_l2sp`` pulls weights toward the pretrained ones; ``finetune_sim_fraction`` of every
    batch are simulated galaxies (needs the simulation table).
    """

    pretrain_learning_rates: list[float] = field(default_factory=lambda: [1e-3, 1e-4])
    pretrain_epochs_per_step: list[int] = field(default_factory=lambda: [15, 5])
    pretrain_batch_size: int = 500
    pretrain_ae_weight: float = 1.0
    pretrain_flux_noise: float = 0.0
    pretrain_members: int = 1
    pretrain_val_fraction: float = 0.1
    pretrain_parts: list[str] = field(default_factory=lambda: ["encoder", "decoder", "mdn"])
    freeze: list[str] = field(default_factory=list)
    finetune_learning_rates: list[float] = field(default_factory=list)
    finetune_epochs_per_step: list[int] = field(default_factory=list)
    finetune_l2sp: float = 0.0
    finetune_sim_fraction: float = 0.0


@dataclass
class InformOptions:
    """Everything DeepzInformer needs besides the table (see the stage for the meaning of each)."""

    bands: list[str]
    err_bands: list[str]
    ref_band: str
    mag_limits: dict[str, float]
    redshift_col: str = "redshift"
    nondetect_val: float = 99.0
    nonobserved_val: float = -99.0
    n_splits: int = 1
    n_folds: int = 5
    encoder_layers: list[int] = field(default_factory=list)
    decoder_layers: list[int] = field(default_factory=list)
    mdn_layers: list[int] = field(default_factory=list)
    latent_dim: int = 10
    n_gaussians: int = 10
    dropout: float = 0.02
    train: TrainConfig = field(default_factory=TrainConfig)
    calibrate: bool = True
    calibrate_weight_power: bool = False
    recenter: float = 1.0
    ambiguity_shrink: float = 1.0
    device: str = "auto"
    use_exposures: str = "auto"
    augment: Augmentation = field(default_factory=Augmentation)
    transfer: TransferOptions = field(default_factory=TransferOptions)


@dataclass
class TrainingData:
    """Network inputs of the usable training rows (see :func:`prepare_training_data`)."""

    features: np.ndarray  # (N, F) unscaled
    ratios: np.ndarray  # (N, B)
    ratio_err: np.ndarray  # (N, B)
    redshift: np.ndarray | None  # (N,)
    n_dropped_ref: int
    n_dropped_z: int
    fluxes: FluxTable | None = None  # fluxes (or exposures) of the usable rows, for batch augmentation

    @property
    def exposures(self) -> bool:
        return self.fluxes is not None and self.fluxes.exposures


def uses_exposures(table: Mapping, opts: InformOptions) -> bool:
    """Whether a table is read through its individual exposures (option ``use_exposures``)."""
    if opts.use_exposures not in USE_EXPOSURES:
        raise ValueError(f"option 'use_exposures' must be one of {USE_EXPOSURES}, got {opts.use_exposures!r}")
    if opts.use_exposures == "no":
        return False
    found = has_exposures(table, opts.bands)
    if opts.use_exposures == "yes" and not found:
        raise KeyError("option use_exposures='yes' but the table has no flux_{band}_exp{k} columns for every band")
    return found


def prepare_training_data(table: Mapping, opts: InformOptions, need_redshift: bool = True) -> TrainingData:
    """Read, convert and clean a training table; raise a clear error if it cannot be used.

    Tables with individual exposures (``flux_{band}_exp{k}``, see ``use_exposures``) are read
    through them: the features are those of the full inverse-variance coadd.
    """
    if opts.ref_band not in opts.bands:
        raise ValueError(f"option 'ref_band' ({opts.ref_band!r}) must be one of 'bands' {opts.bands}")
    exposures = uses_exposures(table, opts)
    if exposures:
        fluxes = read_flux_table(table, opts.bands, opts.err_bands, opts.mag_limits, opts.nondetect_val,
                                 opts.nonobserved_val, use_exposures=True)
        phot = fluxes.coadd()
    else:
        phot = feat.read_photometry(
            table, opts.bands, opts.err_bands, opts.mag_limits, opts.nondetect_val, opts.nonobserved_val
        )
        fluxes = FluxTable(phot.flux, phot.flux_err, phot.status == feat.STATUS_MISSING, False)
    for j, band in enumerate(opts.bands):
        if not (phot.status[:, j] == feat.STATUS_OK).any():
            raise ValueError(
                f"column '{band}' has no usable detection in the training table (all values are NaN, "
                "missing or non-detections): remove it from 'bands'/'err_bands' or fix the data"
            )
    x, ratios, ratio_err, bad_ref = feat.flux_features(phot, opts.bands.index(opts.ref_band))
    keep = ~bad_ref
    z = None
    n_bad_z = 0
    if need_redshift:
        if opts.redshift_col not in table:
            raise KeyError(f"redshift column '{opts.redshift_col}' (option 'redshift_col') not in the training table")
        z = feat.read_column(table, opts.redshift_col)  # text that is not a number: NaN, dropped
        bad_z = ~np.isfinite(z) | (z < 0)
        n_bad_z = int((bad_z & keep).sum())
        keep &= ~bad_z
    if keep.sum() < 10:
        raise ValueError(
            f"only {int(keep.sum())} training rows are usable (reference band '{opts.ref_band}' detected"
            + (f" and finite, non-negative '{opts.redshift_col}'" if need_redshift else "")
            + "): at least 10 are needed"
        )
    return TrainingData(
        features=x[keep],
        ratios=ratios[keep],
        ratio_err=ratio_err[keep],
        redshift=None if z is None else z[keep].astype(np.float32),
        n_dropped_ref=int(bad_ref.sum()),
        n_dropped_z=n_bad_z,
        fluxes=fluxes.subset(keep),
    )


def photometry_meta(opts: InformOptions) -> dict:
    """The model metadata that fixes how a table's photometry is read (bands and bad-value rules)."""
    return dict(
        bands=list(opts.bands),
        err_bands=list(opts.err_bands),
        ref_band=opts.ref_band,
        mag_limits={b: float(opts.mag_limits[b]) for b in opts.bands},
        nondetect_val=float(opts.nondetect_val),
        nonobserved_val=float(opts.nonobserved_val),
    )


def training_summary(n: int, data: "TrainingData", result, t0: float, device, cfg: TrainConfig) -> dict:
    """The model metadata that records a training run (shared by trained and pretrained models)."""
    return dict(
        n_train=n,
        n_dropped_ref=data.n_dropped_ref,
        best_epoch=result.best_epoch.tolist(),
        best_val_loss=result.best_val_loss.tolist(),
        train_loss=result.history["train_loss"],
        seconds=time.time() - t0,
        device=str(device),
        config=dict(vars(cfg)),
    )


def prior_mixture(z: np.ndarray, n_components: int) -> dict[str, np.ndarray]:
    """The training redshift distribution as an equal-weight Gaussian mixture (K components).

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


def _architecture(opts: InformOptions, n_inputs: int, z_scale: float) -> Architecture:
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


def needs_batch_inputs(data: TrainingData, aug: Augmentation) -> bool:
    """True when features must be rebuilt per batch (randomised coadds, outliers or flux noise)."""
    return (data.exposures and aug.keep_prob < 1.0) or aug.outlier_fraction > 0 or aug.flux_noise > 0


def batch_inputs(data: TrainingData, mean: np.ndarray, std: np.ndarray, opts: InformOptions, aug: Augmentation,
                 device: torch.device, seed: int) -> BatchInputs | None:
    """Per-batch input builder, or None when the precomputed features can be used as they are."""
    if not needs_batch_inputs(data, aug):
        return None
    assert data.fluxes is not None
    return BatchInputs(data.fluxes, mean, std, opts.bands.index(opts.ref_band), aug, device, seed)


def train_deepz(
    table: Mapping,
    opts: InformOptions,
    progress: Callable[[str], None] | None = None,
    sims: Mapping | None = None,
    pretrained: Mapping | None = None,
    checkpoints: "CheckpointStore | None" = None,
    comm: Any = None,
) -> dict | None:
    """Train a calibrated Deepz ensemble on a spectroscopic table; returns the model dict.

    Without ``sims`` and ``pretrained`` the ensemble trains from scratch. With ``sims`` (a table in
    the same columns, with true ``redshift_col``) a pretraining on them runs first
    (:func:`rail.deepz.transfer.pretrain`); with ``pretrained`` (a model dict from a pretraining or
    an autoencoder-only run) that pretraining is reused. ``checkpoints``: per-epoch checkpoints of each
    phase (``pretrained``, ``train``) to resume an interrupted run from. Every member then fine-tunes from the
    pretrained weights on the spectroscopic table, redshift loss only (plus ``ae_weight``).

    ``comm``: an MPI communicator (mpi4py API). With more than one rank each rank trains a
    contiguous slice of the members (:mod:`rail.deepz.distributed`), rank 0 pretrains (when
    needed), gathers the members, calibrates and returns the model (the same model as one
    process trains); the other ranks return None.
    """
    from . import distributed, transfer  # pylint: disable=import-outside-toplevel

    mpi = distributed.is_distributed(comm)
    rank = comm.Get_rank() if mpi else 0

    log = progress or (lambda msg: None)
    t0 = time.time()
    opts.augment.check()
    with record_function("deepz.prepare_data"):
        data = prepare_training_data(table, opts)
    if data.n_dropped_ref or data.n_dropped_z:
        log(
            f"dropped {data.n_dropped_ref} rows without a usable reference band '{opts.ref_band}' and "
            f"{data.n_dropped_z} rows with a non-finite or negative redshift"
        )
    n = data.features.shape[0]
    device = resolve_device(opts.device, rank)  # auto under MPI: GPU rank % n_gpus
    z = data.redshift
    sim_data = None
    if sims is not None:
        with record_function("deepz.prepare_data"):
            sim_data = prepare_training_data(sims, opts)
        if pretrained is None:
            if not mpi or rank == 0:
                with record_function("deepz.pretrain"):
                    pretrained = transfer.pretrain(sims, opts, progress=log, data=sim_data, checkpoints=checkpoints)
            if mpi:  # one pretraining, shared by every rank
                pretrained = comm.bcast(pretrained, root=0)
    elif opts.transfer.finetune_sim_fraction > 0:
        raise ValueError("option 'finetune_sim_fraction' > 0 needs the simulation table (input 'sims')")

    if pretrained is None:
        mean, std = feat.fit_scaler(data.features)
        arch = _architecture(opts, data.features.shape[1], z_scale=float(max(np.std(z), 0.05)))
    else:
        # the pretrained scaler is kept: the pretrained first layers are tuned to its scaling
        transfer.check_compatible(pretrained, opts)
        mean = np.asarray(pretrained["arrays"]["feature_mean"])
        std = np.asarray(pretrained["arrays"]["feature_std"])
        arch = Architecture(**pretrained["meta"]["architecture"])
        if pretrained["meta"].get("phase") == "autoencoder":
            arch.z_scale = float(max(np.std(z), 0.05))
    splits = ensemble_splits(n, opts.n_splits, opts.n_folds, opts.train.seed)
    n_members = len(splits)
    log(f"training {n_members} networks ({opts.n_splits} splits x {opts.n_folds} folds) on {n} galaxies, device {device}"
        + ("" if pretrained is None else ", fine-tuning from pretrained weights"))
    local = distributed.member_slice(n_members, rank, comm.Get_size()) if mpi else list(range(n_members))
    if mpi:
        log(f"MPI rank {rank}/{comm.Get_size()}: training members {local}")
    model = build_network(arch, max(len(local), 1), opts.train.seed, members=local or [0]).to(device)
    x = torch.as_tensor((data.features - mean) / std, device=device)
    inputs = batch_inputs(data, mean, std, opts, opts.augment, device, opts.train.seed)
    train_cfg, extra, transfer_info = opts.train, {}, {}
    if pretrained is not None:
        anchor = transfer.load_pretrained(model, pretrained, opts.transfer.pretrain_parts, members=local or [0])
        train_cfg = transfer.finetune_config(opts)
        extra = dict(frozen=list(opts.transfer.freeze), anchor=anchor, anchor_weight=opts.transfer.finetune_l2sp)
        if opts.transfer.finetune_sim_fraction > 0:
            assert sim_data is not None
            extra["aux"] = transfer.simulation_batches(sim_data, mean, std, opts, device, train_cfg)
        transfer_info = transfer.summary(pretrained, opts)
    with record_function("deepz.train"):
        result = None if not local else train_ensemble(
            model,
            x,
            torch.as_tensor(z, device=device),
            torch.as_tensor(data.ratios, device=device),
            torch.as_tensor(data.ratio_err, device=device),
            splits,
            train_cfg,
            progress=log,
            inputs=inputs,
            checkpoint=None if checkpoints is None else checkpoints.phase("train"),
            members=local,
            **extra,
        )
    if mpi:  # rank 0 stacks every rank's members into one ensemble; the others are done
        full = build_network(arch, n_members, opts.train.seed).to(device) if rank == 0 else None
        result = distributed.gather_ensemble(comm, model, local, result, full)
        if rank != 0:
            return None
        model = full

    recenter = opts.recenter if n_members > 1 else 0.0
    cal = Calibration(recenter=recenter)
    cal_info: dict = {}
    if opts.calibrate:
        with record_function("deepz.calibrate"):
            cal, cal_info = _calibrate(model, x, z, splits, opts.n_folds, recenter, opts.calibrate_weight_power)
        if n_members > 1:
            cal.ambiguity = opts.ambiguity_shrink
        log(f"calibration {cal.to_dict()}: PIT CvM on held-out folds {cal_info['cvm_before']:.3f} -> {cal_info['cvm_after']:.3f}")

    arrays = {f"net/{k}": v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    arrays["feature_mean"], arrays["feature_std"] = mean, std
    prior = prior_mixture(z, n_members * opts.n_gaussians)
    arrays.update({f"prior/{k}": v for k, v in prior.items()})
    meta = dict(
        architecture=arch.to_dict(),
        n_members=n_members,
        **photometry_meta(opts),
        calibration=cal.to_dict(),
        calibration_info=cal_info,
        training=dict(
            training_summary(n, data, result, t0, device, train_cfg),
            n_dropped_redshift=data.n_dropped_z,
            n_splits=opts.n_splits,
            n_folds=opts.n_folds,
        ),
        versions=package_versions(),
    )
    if data.exposures:
        meta["inputs"] = "exposures"
    if inputs is not None:
        meta["training"]["augmentation"] = dict(vars(opts.augment))
    if transfer_info:
        meta["transfer"] = transfer_info
    return DeepzModel(format=FORMAT, format_version=FORMAT_VERSION, arrays=arrays, meta=meta)


def _calibrate(model, x, z, splits, n_folds, recenter, fit_power=False):
    """Fit the calibration on out-of-fold predictions: each galaxy pooled over the members that held it out."""
    log_w, means, stds = predict(model, x)  # (M, N, G)
    n = x.shape[0]
    n_splits = len(splits) // n_folds if n_folds > 1 else len(splits)
    holders = np.zeros((n_splits, n), dtype=np.int64)
    seen = np.zeros((n_splits, n), dtype=bool)
    for member, (_, val) in enumerate(splits):
        s = member // n_folds if n_folds > 1 else member
        holders[s, val] = member
        seen[s, val] = True
    rows = seen.all(axis=0)  # with n_folds == 1 only galaxies held out by every member
    if rows.sum() < 100:
        rows = seen.any(axis=0)
        holders = np.where(seen, holders, holders[np.argmax(seen, axis=0), np.arange(n)])
    sel = torch.as_tensor(holders[:, rows], device=log_w.device)
    cols = torch.as_tensor(np.flatnonzero(rows), device=log_w.device)

    def gather(t):
        t = t[:, cols]  # (M, n_rows, G)
        return torch.gather(t, 0, sel.unsqueeze(-1).expand(-1, -1, t.shape[-1]))

    zt = torch.as_tensor(z[rows], device=log_w.device)
    cal, info = fit_calibration(gather(log_w).cpu(), gather(means).cpu(), gather(stds).cpu(), zt.cpu(), recenter,
                                 fit_power=fit_power)
    return cal, info
