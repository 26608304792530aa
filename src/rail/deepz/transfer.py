"""Transfer learning for Deepz: pretraining on simulations, autoencoder-only training, fine-tuning.

Eriksen et al. (2020) pretrain every weight on simulated galaxies (redshift loss + autoencoder
reconstruction loss, with noise on the simulated fluxes), then fine-tune every weight on the
spectroscopic sample with the redshift loss only. Here:

* :func:`pretrain` trains ``pretrain_members`` networks on a simulation table and returns a
  *pretrained model* (the usual model dict, ``meta["phase"] == "pretrained"``), which can be saved
  and reused by many fine-tunings (DeepzInformer option ``pretrained_model``);
* :func:`train_autoencoder` trains the encoder and decoder alone on unlabelled photometry
  (``meta["phase"] == "autoencoder"``); fine-tuning from it starts the redshift network afresh;
* :func:`load_pretrained` copies the pretrained parts into an M-member ensemble (member m from
  pretrained network m % P) and returns the anchor weights for L2-SP regularisation.

Feature scaler: the scaler is fitted once, on the pretraining table, stored in the pretrained
model, and reused unchanged for fine-tuning and estimation (the pretrained first layers are tuned
to that scaling; refitting on the spec-z sample would shift every input the pretrained weights see).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import torch

from . import features as feat
from .augmentation import Augmentation, BatchInputs
from .building import architecture_for, build_network, photometry_meta, prior_mixture, training_summary
from .calibration import Calibration
from .density_ratio import clipped_weights, effective_sample_size, fit_density_ratio
from .devices import resolve_device
from .model_io import DeepzModel, network_state, pack_model, package_versions
from .training import AuxiliaryData, TrainConfig, train_ensemble
from .training_data import TrainingData, augmentation, batch_inputs, prepare_training_data

if TYPE_CHECKING:
    from .checkpoint import CheckpointStore

__all__ = [
    "PHASES",
    "pretrain",
    "train_autoencoder",
    "check_compatible",
    "load_pretrained",
    "finetune_config",
    "simulation_batches",
    "summary",
]

PHASES = ("pretrained", "autoencoder")


def _val_splits(n: int, n_members: int, val_fraction: float, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """One random train/validation split per pretrained member."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"option 'pretrain_val_fraction' must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    out = []
    n_val = max(1, int(round(n * val_fraction)))
    for _ in range(n_members):
        perm = rng.permutation(n)
        out.append((np.sort(perm[n_val:]), np.sort(perm[:n_val])))
    return out


def _pretrain_run(table: Mapping, opts: Any, phase: str, progress: Callable[[str], None] | None,
                  data: TrainingData | None = None, checkpoints: "CheckpointStore | None" = None,
                  target_features: np.ndarray | None = None) -> DeepzModel:
    log = progress or (lambda msg: None)
    t0 = time.time()
    need_z = phase == "pretrained"
    if data is None:
        data = prepare_training_data(table, opts, need_redshift=need_z)
    n = data.features.shape[0]
    mean, std = feat.fit_scaler(data.features)
    device = resolve_device(opts.device)
    z_scale = float(max(np.std(data.redshift), 0.05)) if need_z else 1.0
    arch = architecture_for(opts, data.features.shape[1], z_scale=z_scale)
    ae_weight = float(opts.pretrain_ae_weight)
    if not need_z and ae_weight <= 0:
        raise ValueError("autoencoder-only training needs option 'pretrain_ae_weight' > 0")
    seed = opts.seed + 1000
    cfg = TrainConfig(
        learning_rates=[float(r) for r in opts.pretrain_learning_rates],
        epochs_per_step=[int(e) for e in opts.pretrain_epochs_per_step],
        batch_size=int(opts.pretrain_batch_size),
        weight_decay=opts.weight_decay,
        ae_weight=ae_weight,
        seed=seed,
    )
    n_members = int(opts.pretrain_members)
    splits = _val_splits(n, n_members, opts.pretrain_val_fraction, seed)
    log(f"{'pretraining' if need_z else 'autoencoder-only training'}: {n_members} network(s) on {n} galaxies"
        f"{' (individual exposures)' if data.exposures else ''}, {cfg.n_epochs} epochs, device {device}")
    model = build_network(arch, n_members, seed).to(device)
    aug = augmentation(opts, flux_noise=opts.pretrain_flux_noise)
    inputs = batch_inputs(data, mean, std, opts.bands.index(opts.ref_band), aug, device, seed)
    x = torch.as_tensor((data.features - mean) / std, device=device)
    z = None if data.redshift is None else torch.as_tensor(data.redshift, device=device)
    weights, weight_info = None, {}
    if target_features is not None:  # simulated galaxies weighted toward the target's inputs
        _, log_r, _ = fit_density_ratio((data.features - mean) / std, (target_features - mean) / std, seed)
        w = clipped_weights(log_r, float(opts.weight_clip) ** 2)
        weights = torch.as_tensor(w, dtype=torch.float32, device=device)
        weight_info = dict(weight_min=round(float(w.min()), 4), weight_max=round(float(w.max()), 4),
                           weight_n_eff=round(effective_sample_size(w), 1))
        log(f"pretraining weighted toward the target: weights {w.min():.2f}-{w.max():.2f}, effective sample "
            f"{weight_info['weight_n_eff']:.0f} of {n}")
    result = train_ensemble(model, x, z, torch.as_tensor(data.ratios, device=device),
                            torch.as_tensor(data.ratio_err, device=device), splits, cfg, progress=log, inputs=inputs,
                            checkpoint=None if checkpoints is None else checkpoints.phase(phase), row_weights=weights)
    prior = prior_mixture(data.redshift, n_members * opts.n_gaussians) if need_z else None
    meta = dict(
        phase=phase,
        architecture=arch.to_dict(),
        n_members=n_members,
        **photometry_meta(opts),
        calibration=Calibration().to_dict(),
        training=dict(
            training_summary(n, data.n_dropped_ref, result, t0, device, cfg),
            exposures=data.exposures,
            augmentation=dict(vars(aug)) if inputs is not None else {},
            **(dict(target_weights=weight_info) if weight_info else {}),
        ),
        versions=package_versions(),
    )
    if data.exposures:
        meta["inputs"] = "exposures"
    log(f"{phase} done in {time.time() - t0:.0f}s, best validation loss {np.mean(result.best_val_loss):.4f}")
    return pack_model(model, mean, std, meta, prior)


def pretrain(sims: Mapping, opts: Any, progress: Callable[[str], None] | None = None,
             data: TrainingData | None = None, checkpoints: "CheckpointStore | None" = None,
             target_features: np.ndarray | None = None) -> DeepzModel:
    """Pretrain on a simulation table (true redshifts in ``redshift_col``): NLL + AE loss.

    Returns a model dict with ``meta["phase"] == "pretrained"``; its own scaler and architecture.
    ``checkpoints``: per-epoch checkpoints (phase file ``pretrained.ckpt``) to resume from.
    ``target_features`` (N_t, F) unscaled features of a target sample: each simulated galaxy's
    loss is weighted by p_target / p_sims (clipped at ``weight_clip`` squared, mean 1).
    """
    return _pretrain_run(sims, opts, "pretrained", progress, data, checkpoints, target_features)


def train_autoencoder(table: Mapping, opts: Any, progress: Callable[[str], None] | None = None,
                      checkpoints: "CheckpointStore | None" = None) -> DeepzModel:
    """Train the encoder and decoder alone on unlabelled photometry (no redshift column needed)."""
    return _pretrain_run(table, opts, "autoencoder", progress, checkpoints=checkpoints)


def check_compatible(pretrained: Mapping, opts: Any) -> None:
    """Raise a clear error when a pretrained model cannot seed this informer."""
    meta = pretrained.get("meta", {}) if isinstance(pretrained, Mapping) else {}
    if meta.get("phase") not in PHASES and "architecture" not in meta:
        raise ValueError("option 'pretrained_model' does not hold a pz-rail-deepz model")
    if list(meta.get("bands", [])) != list(opts.bands) or meta.get("ref_band") != opts.ref_band:
        raise ValueError(
            f"option 'pretrained_model': pretrained on bands {meta.get('bands')} (reference {meta.get('ref_band')}), "
            f"but this informer uses bands {list(opts.bands)} (reference {opts.ref_band})"
        )
    if meta.get("phase") == "autoencoder" and "mdn" in opts.freeze:
        raise ValueError("option 'freeze' contains 'mdn' but the pretrained model is an autoencoder only")


def load_pretrained(model: torch.nn.Module, pretrained: Mapping, parts: list[str],
                    members: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
    """Copy the pretrained weights of ``parts`` into ``model`` (member m <- pretrained m % P).

    ``members``: the global indices of the model's members (default 0..M-1; one MPI rank's slice).

    An autoencoder-only model provides the encoder and decoder only. Returns the copied
    parameters (name -> tensor on the model's device), the anchor of L2-SP regularisation.
    """
    arrays = network_state(pretrained)
    p_members = int(pretrained["meta"]["n_members"])
    if pretrained["meta"].get("phase") == "autoencoder":
        parts = [p for p in parts if p != "mdn"]
    m = model.n_members  # type: ignore[attr-defined]
    take = (np.arange(m) if members is None else np.asarray(members, dtype=int)) % p_members
    state = model.state_dict()
    param_names = {k for k, _ in model.named_parameters()}
    anchor: dict[str, torch.Tensor] = {}
    for name, dst in state.items():
        if name.split(".")[0] not in parts:
            continue
        src = np.asarray(arrays[name])
        if dst.dim() and src.size // p_members != dst.numel() // m:
            raise ValueError(f"pretrained weights '{name}' do not match the architecture")
        if dst.dim() == 0:
            new = torch.as_tensor(src)
        else:
            src_m = src.reshape(p_members, -1)[take]
            new = torch.as_tensor(src_m.reshape(tuple(dst.shape)))
        dst.copy_(new.to(dst.dtype))
        if name in param_names:
            anchor[name] = dst.detach().clone()
    return anchor


def finetune_config(opts: Any) -> TrainConfig:
    """Fine-tuning schedule: ``finetune_*`` options, or the from-scratch schedule when they are []."""
    lrs = [float(r) for r in opts.finetune_learning_rates] or [float(r) for r in opts.learning_rates]
    eps = [int(e) for e in opts.finetune_epochs_per_step] or [int(e) for e in opts.epochs_per_step]
    if len(lrs) != len(eps):
        raise ValueError("options 'finetune_learning_rates' and 'finetune_epochs_per_step' must have the same length")
    return TrainConfig(learning_rates=lrs, epochs_per_step=eps, batch_size=opts.batch_size,
                       weight_decay=opts.weight_decay, ae_weight=opts.ae_weight, seed=opts.seed)


def simulation_batches(sim_data: "TrainingData", mean: np.ndarray, std: np.ndarray, opts: Any,
                       device: torch.device, cfg: TrainConfig, fraction: float | None = None,
                       indices: np.ndarray | None = None) -> AuxiliaryData:
    """Simulated rows mixed into fine-tuning batches.

    ``fraction`` of each batch (default option ``finetune_sim_fraction``), drawn from the rows
    ``indices`` (default all; repeated indices are drawn as often as they appear).
    """
    frac = float(opts.finetune_sim_fraction if fraction is None else fraction)
    if not 0.0 < frac < 1.0:
        raise ValueError(f"option 'finetune_sim_fraction' must be in [0, 1), got {frac}")
    assert sim_data.fluxes is not None and sim_data.redshift is not None
    inputs = BatchInputs(sim_data.fluxes, mean, std, opts.bands.index(opts.ref_band),
                         Augmentation(keep_prob=float(opts.coadd_keep_prob), coadd_mode=opts.coadd_mode),
                         device, cfg.seed + 2000)
    n_aux = max(1, int(round(cfg.batch_size * frac / (1.0 - frac))))
    return AuxiliaryData(inputs=inputs, redshift=torch.as_tensor(sim_data.redshift, device=device),
                         indices=np.arange(len(inputs)) if indices is None else np.asarray(indices),
                         batch_size=n_aux, weight=frac / (1.0 - frac))


def summary(pretrained: Mapping, opts: Any) -> dict:
    """What the fine-tuning started from (stored in the final model's ``meta["transfer"]``)."""
    meta = pretrained["meta"]
    return dict(
        phase=meta.get("phase", "final"),
        pretrain_n_train=meta.get("training", {}).get("n_train"),
        pretrain_members=meta.get("n_members"),
        pretrain_config=meta.get("training", {}).get("config"),
        pretrain_parts=list(opts.pretrain_parts),
        freeze=list(opts.freeze),
        finetune_l2sp=opts.finetune_l2sp,
        finetune_sim_fraction=opts.finetune_sim_fraction,
    )
