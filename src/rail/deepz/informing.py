"""Building a Deepz model from a spectroscopic training table (the work behind DeepzInformer).

:func:`train_deepz` reads the table, optionally pretrains on simulations (or starts from a
pretrained model), trains the ensemble members (spread over MPI ranks when given a
communicator), calibrates the pooled PDFs on the held-out folds and packs the model.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np
import torch
from torch.profiler import record_function

from . import distributed, transfer
from . import features as feat
from .building import architecture_for, build_network, photometry_meta, prior_mixture, training_summary
from .calibration import Calibration, fit_calibration
from .devices import resolve_device
from .model_io import DeepzModel, pack_model, package_versions
from .networks import Architecture
from .training import TrainConfig, ensemble_splits, predict, train_ensemble
from .training_data import TrainingData, augmentation, batch_inputs, prepare_training_data

if TYPE_CHECKING:
    from .checkpoint import CheckpointStore

__all__ = ["train_deepz", "train_config", "calibrate_out_of_fold"]


def train_config(opts: Any) -> TrainConfig:
    """The from-scratch optimisation schedule of an informer's options."""
    return TrainConfig(learning_rates=[float(r) for r in opts.learning_rates],
                       epochs_per_step=[int(e) for e in opts.epochs_per_step], batch_size=opts.batch_size,
                       weight_decay=opts.weight_decay, ae_weight=opts.ae_weight, seed=opts.seed)


def _read_tables(table: Mapping, sims: Mapping | None, opts: Any,
                 log: Callable[[str], None]) -> tuple[TrainingData, TrainingData | None]:
    """The spec-z table's and the simulations' network inputs."""
    with record_function("deepz.prepare_data"):
        data = prepare_training_data(table, opts)
    if data.n_dropped_ref or data.n_dropped_z:
        log(f"dropped {data.n_dropped_ref} rows without a usable reference band '{opts.ref_band}' and "
            f"{data.n_dropped_z} rows with a non-finite or negative redshift")
    sim_data = None
    if sims is not None:
        with record_function("deepz.prepare_data"):
            sim_data = prepare_training_data(sims, opts)
    elif opts.finetune_sim_fraction > 0:
        raise ValueError("option 'finetune_sim_fraction' > 0 needs the simulation table (input 'sims')")
    return data, sim_data


def _pretrained_model(sims: Mapping | None, sim_data: TrainingData | None, pretrained: Mapping | None, opts: Any,
                      log: Callable[[str], None], checkpoints: "CheckpointStore | None", comm: Any) -> Mapping | None:
    """The pretrained model to fine-tune from: given, or pretrained here on ``sims`` (rank 0, broadcast)."""
    if sims is None or pretrained is not None:
        return pretrained
    mpi = distributed.is_distributed(comm)
    if not mpi or comm.Get_rank() == 0:
        with record_function("deepz.pretrain"):
            pretrained = transfer.pretrain(sims, opts, progress=log, data=sim_data, checkpoints=checkpoints)
    if mpi:  # one pretraining, shared by every rank
        pretrained = comm.bcast(pretrained, root=0)
    return pretrained


def _starting_point(data: TrainingData, pretrained: Mapping | None,
                    opts: Any) -> tuple[np.ndarray, np.ndarray, Architecture]:
    """Feature scaler and architecture: fitted here, or the pretrained model's."""
    z_scale = float(max(np.std(data.redshift), 0.05))
    if pretrained is None:
        mean, std = feat.fit_scaler(data.features)
        return mean, std, architecture_for(opts, data.features.shape[1], z_scale=z_scale)
    # the pretrained scaler is kept: the pretrained first layers are tuned to its scaling
    transfer.check_compatible(pretrained, opts)
    mean = np.asarray(pretrained["arrays"]["feature_mean"])
    std = np.asarray(pretrained["arrays"]["feature_std"])
    arch = Architecture(**pretrained["meta"]["architecture"])
    if pretrained["meta"].get("phase") == "autoencoder":
        arch.z_scale = z_scale
    return mean, std, arch


def _fine_tuning(model: torch.nn.Module, pretrained: Mapping, sim_data: TrainingData | None, mean: np.ndarray,
                 std: np.ndarray, opts: Any, device: torch.device, local: list[int]) -> tuple[TrainConfig, dict, dict]:
    """Load the pretrained weights; the fine-tuning schedule, train_ensemble's extra arguments, the summary."""
    anchor = transfer.load_pretrained(model, pretrained, opts.pretrain_parts, members=local or [0])
    cfg = transfer.finetune_config(opts)
    extra: dict = dict(frozen=list(opts.freeze), anchor=anchor, anchor_weight=opts.finetune_l2sp)
    if opts.finetune_sim_fraction > 0:
        assert sim_data is not None
        extra["aux"] = transfer.simulation_batches(sim_data, mean, std, opts, device, cfg)
    return cfg, extra, transfer.summary(pretrained, opts)


def _calibration(model: torch.nn.Module, x: torch.Tensor, z: np.ndarray, splits: list, n_members: int, opts: Any,
                 log: Callable[[str], None]) -> tuple[Calibration, dict]:
    """The PDF calibration fitted on the held-out folds (identity plus recentring when ``calibrate`` is off)."""
    recenter = opts.recenter if n_members > 1 else 0.0
    if not opts.calibrate:
        return Calibration(recenter=recenter), {}
    with record_function("deepz.calibrate"):
        cal, info = calibrate_out_of_fold(model, x, z, splits, opts.n_folds, recenter, opts.calibrate_weight_power)
    if n_members > 1:
        cal.ambiguity = opts.ambiguity_shrink
    log(f"calibration {cal.to_dict()}: PIT CvM on held-out folds {info['cvm_before']:.3f} -> {info['cvm_after']:.3f}")
    return cal, info


def train_deepz(
    table: Mapping,
    opts: Any,
    progress: Callable[[str], None] | None = None,
    sims: Mapping | None = None,
    pretrained: Mapping | None = None,
    checkpoints: "CheckpointStore | None" = None,
    comm: Any = None,
) -> DeepzModel | None:
    """Train a calibrated Deepz ensemble on a spectroscopic table; returns the model dict.

    ``opts`` is an :class:`rail.deepz.options.InformOptions`. Without ``sims`` and ``pretrained`` the
    ensemble trains from scratch; with ``sims`` (a table in the same columns, true redshifts in
    ``redshift_col``) a pretraining on them runs first (:func:`rail.deepz.transfer.pretrain`); with
    ``pretrained`` (a model dict from a pretraining or an autoencoder-only run) that is reused.
    Every member then fine-tunes from the pretrained weights on the spectroscopic table.
    ``checkpoints``: per-epoch checkpoints of each phase, to resume an interrupted run from.
    ``comm``: an MPI communicator (mpi4py API); with more than one rank each rank trains a
    contiguous slice of the members and rank 0 returns the model (the others return None).
    """
    mpi = distributed.is_distributed(comm)
    rank = comm.Get_rank() if mpi else 0
    log = progress or (lambda msg: None)
    t0 = time.time()
    data, sim_data = _read_tables(table, sims, opts, log)
    device = resolve_device(opts.device, rank)  # auto under MPI: GPU rank % n_gpus
    pretrained = _pretrained_model(sims, sim_data, pretrained, opts, log, checkpoints, comm)
    mean, std, arch = _starting_point(data, pretrained, opts)

    n, z = data.features.shape[0], data.redshift
    splits = ensemble_splits(n, opts.n_splits, opts.n_folds, opts.seed)
    n_members = len(splits)
    log(f"training {n_members} networks ({opts.n_splits} splits x {opts.n_folds} folds) on {n} galaxies, device {device}"
        + ("" if pretrained is None else ", fine-tuning from pretrained weights"))
    local = distributed.member_slice(n_members, rank, comm.Get_size()) if mpi else list(range(n_members))
    if mpi:
        log(f"MPI rank {rank}/{comm.Get_size()}: training members {local}")
    model = build_network(arch, max(len(local), 1), opts.seed, members=local or [0]).to(device)
    x = torch.as_tensor((data.features - mean) / std, device=device)
    aug = augmentation(opts)
    inputs = batch_inputs(data, mean, std, opts.bands.index(opts.ref_band), aug, device, opts.seed)
    cfg, extra, transfer_info = train_config(opts), {}, {}
    if pretrained is not None:
        cfg, extra, transfer_info = _fine_tuning(model, pretrained, sim_data, mean, std, opts, device, local)
    with record_function("deepz.train"):
        result = None if not local else train_ensemble(
            model, x, torch.as_tensor(z, device=device), torch.as_tensor(data.ratios, device=device),
            torch.as_tensor(data.ratio_err, device=device), splits, cfg, progress=log, inputs=inputs,
            checkpoint=None if checkpoints is None else checkpoints.phase("train"), members=local, **extra)
    if mpi:  # rank 0 stacks every rank's members into one ensemble; the others are done
        full = build_network(arch, n_members, opts.seed).to(device) if rank == 0 else None
        result = distributed.gather_ensemble(comm, model, local, result, full)
        if rank != 0:
            return None
        model = full

    cal, cal_info = _calibration(model, x, z, splits, n_members, opts, log)
    meta = dict(
        architecture=arch.to_dict(),
        n_members=n_members,
        **photometry_meta(opts),
        calibration=cal.to_dict(),
        calibration_info=cal_info,
        training=dict(training_summary(n, data.n_dropped_ref, result, t0, device, cfg),
                      n_dropped_redshift=data.n_dropped_z, n_splits=opts.n_splits, n_folds=opts.n_folds),
        versions=package_versions(),
    )
    if data.exposures:
        meta["inputs"] = "exposures"
    if inputs is not None:
        meta["training"]["augmentation"] = dict(vars(aug))
    if transfer_info:
        meta["transfer"] = transfer_info
    return pack_model(model, mean, std, meta, prior_mixture(z, n_members * opts.n_gaussians))


def calibrate_out_of_fold(model: torch.nn.Module, x: torch.Tensor, z: np.ndarray, splits: list, n_folds: int,
                          recenter: float, fit_power: bool = False) -> tuple[Calibration, dict]:
    """Fit the PDF calibration on out-of-fold predictions.

    Each training galaxy (scaled features ``x`` (N, F), redshift ``z`` (N,)) is predicted by the
    members whose validation fold held it (``splits``: the members' (train, validation) indices),
    pooled with ``recenter``; returns the :class:`rail.deepz.calibration.Calibration` and a summary.
    """
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
