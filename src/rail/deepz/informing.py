"""Building a Deepz model from a spectroscopic training table (the work behind DeepzInformer).

:func:`train_deepz` reads the table, optionally pretrains on simulations (or starts from a
pretrained model), trains the ensemble members (spread over MPI ranks when given a
communicator), calibrates the pooled PDFs on the held-out folds and packs the model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np
import torch
from torch.profiler import record_function

from . import distributed, transfer
from . import features as feat
from .building import architecture_for, build_network, photometry_meta, prior_mixture, training_summary
from .calibration import Calibration, fit_calibration, fit_disagreement, held_out_scores
from .devices import resolve_device
from .distillation import add_compact_network
from .model_io import DeepzModel, pack_model, package_versions, with_simulation_network
from .networks import Architecture
from .target_shift import COVERAGE_PREFIX
from .target_training import (SimulationFill, calibration_rows, copy_splits, fit_shift, sims_with_target_noise,
                              with_dimmed_copies)
from .training import TrainConfig, TrainResult, ensemble_splits, predict, train_ensemble
from .training_data import TrainingData, augmentation, batch_inputs, prepare_training_data, sentinel_mismatch

if TYPE_CHECKING:
    from .checkpoint import CheckpointStore

__all__ = ["train_deepz", "pretrain_deepz", "train_config", "calibrate_out_of_fold"]


def train_config(opts: Any) -> TrainConfig:
    """The from-scratch optimisation schedule of an informer's options."""
    return TrainConfig(learning_rates=[float(r) for r in opts.learning_rates],
                       epochs_per_step=[int(e) for e in opts.epochs_per_step], batch_size=opts.batch_size,
                       weight_decay=opts.weight_decay, ae_weight=opts.ae_weight, seed=opts.seed)


_FEW_TARGET_ROWS = 200  # below this a target's density ratios are mostly noise (a warning is logged)


def _read_tables(table: Mapping, sims: Mapping | None, target: Mapping | None, opts: Any,
                 log: Callable[[str], None]) -> tuple[TrainingData, TrainingData | None, TrainingData | None]:
    """The network inputs of the spec-z table, the simulations and the target photometry."""
    with record_function("deepz.prepare_data"):
        data = prepare_training_data(table, opts)
    if data.n_dropped_ref or data.n_dropped_z:
        log(f"dropped {data.n_dropped_ref} rows without a usable reference band '{opts.ref_band}' and "
            f"{data.n_dropped_z} rows with a non-finite or negative redshift")
    sim_data = None
    if sims is not None and target is not None and opts.target_sim_noise:
        sims = sims_with_target_noise(sims, target, opts, log)
    if sims is not None:
        with record_function("deepz.prepare_data"):
            sim_data = prepare_training_data(sims, opts, source="the simulation table")
    elif opts.finetune_sim_fraction > 0:
        raise ValueError("option 'finetune_sim_fraction' > 0 needs the simulation table (input 'sims')")
    target_data = None
    if target is not None:  # unlabelled: a redshift column, if any, is never read
        with record_function("deepz.prepare_data"):
            target_data = prepare_training_data(target, opts, need_redshift=False, source="input 'target'")
        if target_data.n_dropped_ref:
            log(f"target: {target_data.n_dropped_ref} rows without a usable reference band '{opts.ref_band}' "
                "left out of the covariate-shift fit")
        mismatch = sentinel_mismatch(data, target_data, opts)
        if mismatch:
            log(mismatch)
        if len(target_data.features) < _FEW_TARGET_ROWS:
            log(f"warning: input 'target' has only {len(target_data.features)} usable rows: the density ratios "
                f"behind the weights and coverage are noisy below a few hundred")
        if sims is None and opts.target_fill:
            log("warning: option 'target_fill' needs the simulations (input 'sims'): not applied")
    return data, sim_data, target_data


def pretrain_deepz(sims: Mapping, opts: Any, progress: Callable[[str], None] | None = None,
                   target: Mapping | None = None, checkpoints: "CheckpointStore | None" = None) -> DeepzModel:
    """Pretrain on a simulation table (phase 'pretrain'); with ``target``, toward it.

    ``target`` (unlabelled photometry) applies options ``target_sim_noise`` (the simulations' noise
    redrawn from the target's error relation) and ``target_sim_weights`` (each simulated galaxy
    weighted by p_target / p_sims); see :func:`rail.deepz.transfer.pretrain`.
    """
    log = progress or (lambda msg: None)
    if target is not None and opts.target_sim_noise:
        sims = sims_with_target_noise(sims, target, opts, log)
    toward = None
    if target is not None and opts.target_sim_weights:
        toward = prepare_training_data(target, opts, need_redshift=False, source="input 'target'").features
    with record_function("deepz.pretrain"):
        return transfer.pretrain(sims, opts, progress=log, checkpoints=checkpoints, target_features=toward)


def _pretrained_model(sims: Mapping | None, sim_data: TrainingData | None, pretrained: Mapping | None, opts: Any,
                      log: Callable[[str], None], checkpoints: "CheckpointStore | None", comm: Any,
                      target: Mapping | None = None, target_data: TrainingData | None = None) -> Mapping | None:
    """The pretrained model to fine-tune from: given, or pretrained here on ``sims`` (rank 0, broadcast).

    With ``target_data`` and option ``target_sim_weights`` the simulated galaxies are weighted toward it;
    without sims, option ``target_autoencoder`` trains the autoencoder on the ``target`` table.
    """
    autoencoder = sims is None and pretrained is None and target is not None and opts.target_autoencoder
    if (sims is None and not autoencoder) or pretrained is not None:
        asks_toward = opts.target_sim_weights or opts.target_sim_noise
        if pretrained is not None and target_data is not None and asks_toward:
            log("target: the given pretrained model is fine-tuned as it is; to pretrain toward the target "
                "(options 'target_sim_weights', 'target_sim_noise') give the simulations without 'pretrained'")
        return pretrained
    mpi = distributed.is_distributed(comm)
    if not mpi or comm.Get_rank() == 0:
        with record_function("deepz.pretrain"):
            if autoencoder:  # the encoder and decoder learn the target's photometry first
                pretrained = transfer.train_autoencoder(target, opts, progress=log, checkpoints=checkpoints)
            else:
                toward = target_data.features if target_data is not None and opts.target_sim_weights else None
                pretrained = transfer.pretrain(sims, opts, progress=log, data=sim_data, checkpoints=checkpoints,
                                               target_features=toward)
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
                 std: np.ndarray, opts: Any, device: torch.device, local: list[int],
                 fill: "SimulationFill | None") -> tuple[TrainConfig, dict, dict]:
    """Load the pretrained weights; the fine-tuning schedule, train_ensemble's extra arguments, the summary."""
    anchor = transfer.load_pretrained(model, pretrained, opts.pretrain_parts, members=local or [0])
    cfg = transfer.finetune_config(opts)
    extra: dict = dict(frozen=list(opts.freeze), anchor=anchor, anchor_weight=opts.finetune_l2sp)
    if fill is not None:
        assert sim_data is not None
        extra["aux"] = fill.batches(sim_data, mean, std, opts, device, cfg)
    elif opts.finetune_sim_fraction > 0:
        assert sim_data is not None
        extra["aux"] = transfer.simulation_batches(sim_data, mean, std, opts, device, cfg)
    return cfg, extra, transfer.summary(pretrained, opts)


def _calibration(model: torch.nn.Module, x: torch.Tensor, z: np.ndarray, splits: list, n_members: int, opts: Any,
                 log: Callable[[str], None], weights: np.ndarray | None = None,
                 extra: tuple | None = None, coverage: np.ndarray | None = None,
                 score_weights: np.ndarray | None = None, fixed: Calibration | None = None,
                 fit_groups_gap: bool = False, predictions: tuple | None = None) -> tuple[Calibration, dict]:
    """The PDF calibration fitted on the held-out folds (identity plus recentring when ``calibrate`` is off).

    ``weights`` (N,) of the spec-z rows and ``extra`` (features, redshifts, weights of held-out
    simulated rows, and their coverage) make the PIT distribution that of a target population;
    ``coverage`` (N,) of the spec-z rows. ``fixed``: a calibration to score instead of fitting one.
    ``predictions``: the model's (log_w, means, stds) of ``x``, when already computed.
    """
    recenter = opts.recenter if n_members > 1 else 0.0
    spread = coverage is not None and opts.target_member_spread
    scale_cov = coverage is not None and opts.target_width_by_coverage
    if fixed is None and not opts.calibrate:
        fixed = Calibration(recenter=recenter, spread_by_coverage=spread)
    with record_function("deepz.calibrate"):
        cal, info = calibrate_out_of_fold(model, x, z, splits, opts.n_folds, recenter, opts.calibrate_weight_power,
                                          weights=weights, extra=extra, coverage=coverage,
                                          spread_by_coverage=spread, scale_by_coverage=scale_cov,
                                          score_weights=score_weights, fixed=fixed,
                                          ambiguity=opts.ambiguity_shrink if n_members > 1 and opts.calibrate else 0.0,
                                          fit_groups_gap=fit_groups_gap, predictions=predictions)
    if "cvm_after" in info:
        log(f"calibration {cal.to_dict()}: PIT CvM on held-out folds {info['cvm_before']:.3f} -> "
            f"{info['cvm_after']:.3f}")
    return cal, info


@dataclass
class _Candidate:
    """One trained and calibrated ensemble (rank 0), before packing."""

    model: torch.nn.Module
    mean: np.ndarray
    std: np.ndarray
    arch: Architecture
    shift: Any
    fill: Any
    row_weights: np.ndarray | None
    cal: Calibration
    cal_info: dict
    result: Any
    n_members: int
    splits: list
    cfg: TrainConfig
    transfer_info: dict
    augmentation: Any  # the batch augmentation settings, None without augmentation


def _train_candidate(data: TrainingData, n_real: int, parents: np.ndarray | None, sim_data: TrainingData | None,
                     target_data: TrainingData | None, pretrained: Mapping | None, opts: Any, device: torch.device,
                     log: Callable[[str], None], checkpoints: "CheckpointStore | None", comm: Any, phase: str,
                     score_weights: np.ndarray | None = None, scaler: Mapping | None = None) -> _Candidate | None:
    """Train, gather and calibrate one ensemble, fine-tuned from ``pretrained`` or from scratch (None).

    Returns None on MPI ranks other than 0. ``score_weights`` (N,): the rows' weights in the held-out
    scores (default: this candidate's own target weights), so that candidates compare on one population.
    ``scaler``: a pretrained model whose feature scaling and architecture a from-scratch candidate
    takes (so that it can be pooled with the fine-tuned one).
    """
    mpi = distributed.is_distributed(comm)
    rank = comm.Get_rank() if mpi else 0
    mean, std, arch = _starting_point(data, pretrained if pretrained is not None else scaler, opts)
    shift, fill = fit_shift(data, n_real, sim_data, target_data, mean, std, pretrained is not None, opts, log)
    row_weights = shift.spec_weights if shift is not None and opts.target_weights else None

    n, z = data.features.shape[0], data.redshift
    splits = copy_splits(ensemble_splits(n_real, opts.n_splits, opts.n_folds, opts.seed), parents, n_real)
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
        cfg, extra, transfer_info = _fine_tuning(model, pretrained, sim_data, mean, std, opts, device, local, fill)
    if row_weights is not None:
        extra["row_weights"] = torch.as_tensor(row_weights, dtype=torch.float32, device=device)
    with record_function("deepz.train"):
        result = None if not local else train_ensemble(
            model, x, torch.as_tensor(z, device=device), torch.as_tensor(data.ratios, device=device),
            torch.as_tensor(data.ratio_err, device=device), splits, cfg, progress=log, inputs=inputs,
            checkpoint=None if checkpoints is None else checkpoints.phase(phase), members=local, **extra)
    if mpi:  # rank 0 stacks every rank's members into one ensemble; the others are done
        full = build_network(arch, n_members, opts.seed).to(device) if rank == 0 else None
        result = distributed.gather_ensemble(comm, model, local, result, full)
        if rank != 0:
            return None
        model = full

    cal_weights, cal_coverage, cal_extra = calibration_rows(row_weights, shift, fill, sim_data, mean, std, device)
    cal, cal_info = _calibration(model, x, z, splits, n_members, opts, log, cal_weights, cal_extra, cal_coverage,
                                 score_weights=row_weights if score_weights is None else score_weights)
    return _Candidate(model, mean, std, arch, shift, fill, row_weights, cal, cal_info, result, n_members, splits, cfg,
                      transfer_info, None if inputs is None else aug)


@dataclass
class _Stacked:
    """Both candidates' members as one network (fine-tuned first), their folds, scaled features and
    the network's predictions of them (shared by the widened and pooled calibrations)."""

    model: torch.nn.Module
    result: TrainResult
    splits: list
    x: torch.Tensor
    predictions: tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _stacked(a: _Candidate, b: _Candidate, data: TrainingData, opts: Any, device: torch.device) -> _Stacked:
    """Stack candidates ``a`` and ``b`` (same scaling and architecture) into one ensemble."""
    model = build_network(a.arch, a.n_members + b.n_members, opts.seed).to(device)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    model.load_state_dict({k: v if v.dim() == 0 else torch.cat([v, sb[k]]) for k, v in sa.items()})
    model.eval()
    result = TrainResult(best_val_loss=np.concatenate([a.result.best_val_loss, b.result.best_val_loss]),
                         best_epoch=np.concatenate([a.result.best_epoch, b.result.best_epoch]), history=a.result.history)
    x = torch.as_tensor((data.features - a.mean) / a.std, device=device)
    return _Stacked(model, result, a.splits + b.splits, x, predict(model, x))


def _pooled(a: _Candidate, b: _Candidate, both: _Stacked, z: np.ndarray, sim_data: TrainingData | None, opts: Any,
            device: torch.device, log: Callable[[str], None], score_weights: np.ndarray | None,
            widened: bool = False) -> _Candidate:
    """The pooled (or ``widened``) candidate from the stacked members ``both`` of ``a`` and ``b``.

    The fine-tuned and the from-scratch members err in different places (the simulations' p(z | x)
    against the spec-z sample's). Pooled, they form two calibration groups, each keeping the terms
    fitted for its own candidate, with recentring and ambiguity narrowing within each, so their
    disagreement widens the PDFs where they differ (mostly beyond the spec-z sample's coverage).
    ``widened``: the PDFs are the fine-tuned members' alone, widened by the two groups'
    disagreement (the calibration's ``disagreement`` term, fitted on the held-out folds when
    ``calibrate`` is on).
    """
    per_group = {k: [getattr(a.cal, k), getattr(b.cal, k)] for k in ("std_scale", "shift", "weight_power")}
    fixed = replace(a.cal, groups=2, disagreement=1.0 if widened else 0.0, **per_group)
    cal_weights, cal_coverage, cal_extra = calibration_rows(a.row_weights, a.shift, a.fill, sim_data, a.mean, a.std,
                                                            device)
    n_members = a.n_members + b.n_members
    cal, cal_info = _calibration(both.model, both.x, z, both.splits, n_members, opts, log, cal_weights, cal_extra,
                                 cal_coverage, score_weights=score_weights, fixed=fixed,
                                 fit_groups_gap=widened and bool(opts.calibrate), predictions=both.predictions)
    return _Candidate(both.model, a.mean, a.std, a.arch, a.shift, a.fill, a.row_weights, cal, cal_info, both.result,
                      n_members, both.splits, a.cfg, a.transfer_info, a.augmentation)


_SCORE_TIE = 1e-3  # mean log density (per galaxy) below which two candidates' held-out scores count as equal


def _choose_start(candidates: dict[str, _Candidate], rule: str, log: Callable[[str], None]) -> tuple[str, dict]:
    """The candidate ``rule`` names ('auto': the best target-weighted held-out log score) and every score."""
    scores = {name: c.cal_info["log_score"] for name, c in candidates.items()}
    # candidates in order of cost (networks run when estimating); within _SCORE_TIE of the best the cheaper wins
    best = max(scores.values())
    auto = next(k for k in scores if scores[k] >= best - _SCORE_TIE)
    chosen = auto if rule == "auto" else rule
    summary = dict(chosen=chosen, rule=rule, auto=auto, **{f"log_score_{k}": round(v, 4) for k, v in scores.items()},
                   **{f"outliers_{k}": round(c.cal_info["outliers"], 4) for k, c in candidates.items()})
    log("target: held-out log score, weighted toward the target: "
        + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()) + f"; keeping the {chosen} model (target_start "
        f"'{rule}')")
    return chosen, summary


def train_deepz(
    table: Mapping,
    opts: Any,
    progress: Callable[[str], None] | None = None,
    sims: Mapping | None = None,
    pretrained: Mapping | None = None,
    checkpoints: "CheckpointStore | None" = None,
    comm: Any = None,
    target: Mapping | None = None,
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
    ``target``: the unlabelled photometry to be estimated (same columns; redshifts never read):
    covariate-shift weights, simulation fill and coverage (:mod:`rail.deepz.target_shift`); with a
    pretrained start, option ``target_start`` also trains the members from scratch and keeps one of
    four candidates built from the two sets.
    """
    mpi = distributed.is_distributed(comm)
    rank = comm.Get_rank() if mpi else 0
    log = progress or (lambda msg: None)
    t0 = time.time()
    data, sim_data, target_data = _read_tables(table, sims, target, opts, log)
    device = resolve_device(opts.device, rank)  # auto under MPI: GPU rank % n_gpus
    from_sims = sims is not None or pretrained is not None  # not the target's own autoencoder
    if from_sims and target_data is not None and opts.target_start == "scratch":
        log("target: target_start 'scratch': the simulations / pretrained model are not used")
        sims = sim_data = pretrained = None
    pretrained = _pretrained_model(sims, sim_data, pretrained, opts, log, checkpoints, comm, target, target_data)
    n_real = data.features.shape[0]
    data, parents = with_dimmed_copies(data, target, target_data, opts, log)

    starts = {"pretrained": pretrained} if pretrained is not None else {"scratch": None}
    if from_sims and pretrained is not None and target_data is not None and opts.target_start != "pretrained":
        starts = {"pretrained": pretrained, "scratch": None}  # widened and pooled are built from both below
    candidates: dict[str, _Candidate] = {}
    score_weights = None
    for name, start in starts.items():
        if len(starts) > 1:
            log(f"target: training the {name} candidate ({len(candidates) + 1} of {len(starts)})")
        phase = "train" if not candidates else f"train_{name}"
        cand = _train_candidate(data, n_real, parents, sim_data, target_data, start, opts, device, log, checkpoints,
                                comm, phase, score_weights, scaler=pretrained if len(starts) > 1 else None)
        if cand is None:  # an MPI rank other than 0
            continue
        candidates[name] = cand
        score_weights = cand.row_weights if score_weights is None else score_weights
    if mpi and rank != 0:
        return None
    if len(candidates) > 1:
        log("target: calibrating the widened and pooled candidates (both sets of members)")
        fine, scratch = candidates["pretrained"], candidates["scratch"]
        both = _stacked(fine, scratch, data, opts, device)
        for name in ("widened", "pooled"):
            candidates[name] = _pooled(fine, scratch, both, data.redshift, sim_data, opts, device, log, score_weights,
                                       widened=name == "widened")
    chosen, start_info = (_choose_start(candidates, opts.target_start, log) if len(candidates) > 1
                          else (next(iter(candidates)), {}))
    c = candidates[chosen]
    n_members = c.n_members
    meta = dict(
        architecture=c.arch.to_dict(),
        n_members=n_members,
        **photometry_meta(opts),
        calibration=c.cal.to_dict(),
        calibration_info=c.cal_info,
        training=dict(training_summary(data.features.shape[0], data.n_dropped_ref, c.result, t0, device, c.cfg),
                      n_dropped_redshift=data.n_dropped_z, n_splits=opts.n_splits, n_folds=opts.n_folds),
        versions=package_versions(),
    )
    if data.exposures:
        meta["inputs"] = "exposures"
    if c.augmentation is not None:
        meta["training"]["augmentation"] = dict(vars(c.augmentation))
    if c.transfer_info:
        meta["transfer"] = c.transfer_info
    coverage = {}
    if c.shift is not None:
        meta["target"] = dict(c.shift.summary(), weights=bool(opts.target_weights),
                              fill_fraction=0.0 if c.fill is None else round(c.fill.fraction, 4),
                              fill_n_eff=None if c.fill is None else round(c.fill.n_eff, 1),
                              start=start_info or dict(chosen=chosen))
        meta["coverage"] = dict(clip=c.shift.clip, n_features=int(c.mean.size))
        coverage = c.shift.ratio.to_arrays(COVERAGE_PREFIX)
    z = data.redshift
    prior = prior_mixture(z, c.cal.output_members(n_members) * opts.n_gaussians)  # as many components as the PDFs
    model = pack_model(c.model, c.mean, c.std, meta, prior, extra=coverage)
    # the simulation-pretrained network: kept for the confidence column, and it decides beyond the spec-z range
    sims_net = (pretrained if opts.sims_beyond_range and from_sims and pretrained is not None
                and pretrained["meta"].get("phase") == "pretrained" else None)
    if sims_net is not None:
        model = with_simulation_network(model, sims_net)
    if opts.compact_network:
        with record_function("deepz.distill"):
            # the gate's redshift: the spec-z rows' 99th percentile, without their dimmed copies
            z_high = None if sims_net is None else float(np.percentile(z[:n_real], 99))
            model = add_compact_network(model, data.fluxes.coadd(), z, None if target_data is None else
                                        target_data.features, opts.seed, device, log, z_high=z_high)
    return model


def calibrate_out_of_fold(model: torch.nn.Module, x: torch.Tensor, z: np.ndarray, splits: list, n_folds: int,
                          recenter: float, fit_power: bool = False, weights: np.ndarray | None = None,
                          extra: tuple | None = None, coverage: np.ndarray | None = None,
                          spread_by_coverage: bool = False, scale_by_coverage: bool = False,
                          score_weights: np.ndarray | None = None, fixed: Calibration | None = None,
                          ambiguity: float = 0.0, fit_groups_gap: bool = False,
                          predictions: tuple | None = None) -> tuple[Calibration, dict]:
    """Fit the PDF calibration on out-of-fold predictions.

    Each training galaxy (scaled features ``x`` (N, F), redshift ``z`` (N,)) is predicted by the
    members whose validation fold held it (``splits``: the members' (train, validation) indices),
    pooled with ``recenter``; returns the :class:`rail.deepz.calibration.Calibration` and a summary.
    ``weights`` (N,): the galaxies' weights in the PIT distribution (default equal); ``coverage`` (N,)
    their coverage (for ``spread_by_coverage`` and ``scale_by_coverage``, and for the ``uncovered_*``
    terms, fitted when ``extra`` is given). ``extra``: rows no member
    trained on (features (N_e, F), redshifts, weights on the scale of ``weights``, coverage), row i
    predicted by members i, i + M, ... mod M (as many as a training galaxy's held-out members).
    ``fixed``: a calibration to use instead of fitting one (the summary then holds only the
    scores), or with ``fit_groups_gap`` whose ``disagreement`` term alone is fitted
    (:func:`rail.deepz.calibration.fit_disagreement`); ``ambiguity``: the ``ambiguity`` term set
    on the fitted calibration before scoring. The summary adds the training galaxies' held-out
    scores (:func:`rail.deepz.calibration.held_out_scores`), weighted by ``score_weights`` (N,)
    (default: ``weights``; equal when both are None). ``predictions``: ``predict(model, x)``, when
    already computed.
    """
    log_w, means, stds = predict(model, x) if predictions is None else predictions  # (M, N, G)
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

    lw, mu, sd, zt = gather(log_w).cpu(), gather(means).cpu(), gather(stds).cpu(), torch.as_tensor(z[rows])
    w = None
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64)
        w = w[rows] * (w.sum() / max(w[rows].sum(), 1e-300))  # the rows used keep the spec-z rows' total
    cov = None if coverage is None else np.asarray(coverage, dtype=np.float64)[rows]
    if extra is not None:
        x_e, z_e, w_e, c_e = extra
        elw, emu, esd = predict(model, x_e)  # (M, N_e, G)
        n_e, n_models = x_e.shape[0], elw.shape[0]
        pick = (np.arange(n_e)[None, :] + np.arange(sel.shape[0])[:, None] * max(n_models // sel.shape[0], 1)) % n_models
        pick_t = torch.as_tensor(pick, device=elw.device)
        take = lambda t: torch.gather(t, 0, pick_t.unsqueeze(-1).expand(-1, -1, t.shape[-1])).cpu()  # noqa: E731
        lw, mu, sd = (torch.cat([a, take(b)], dim=1) for a, b in ((lw, elw), (mu, emu), (sd, esd)))
        zt = torch.cat([zt, torch.as_tensor(np.asarray(z_e), dtype=zt.dtype)])
        w = np.concatenate([np.ones(int(rows.sum())) if w is None else w, np.asarray(w_e, dtype=np.float64)])
        cov = np.concatenate([np.ones(int(rows.sum())) if cov is None else cov, np.asarray(c_e, dtype=np.float64)])
    n_spec = int(rows.sum())
    if fixed is None:
        cal, info = fit_calibration(lw, mu, sd, zt, recenter, fit_power=fit_power, weights=w, coverage=cov,
                                    spread_by_coverage=spread_by_coverage, fit_uncovered=extra is not None,
                                    scale_by_coverage=scale_by_coverage)
        cal.ambiguity = ambiguity
    elif fit_groups_gap:
        cal, info = fit_disagreement(lw, mu, sd, zt, fixed, w, cov)
    else:
        cal, info = fixed, {}
    # the spec-z rows' scores under the fitted calibration (simulated calibration rows left out)
    sw = weights if score_weights is None else score_weights
    info.update(held_out_scores(lw[:, :n_spec], mu[:, :n_spec], sd[:, :n_spec], zt[:n_spec], cal,
                                None if sw is None else np.asarray(sw, dtype=np.float64)[rows],
                                None if cov is None else cov[:n_spec]))
    return cal, info
