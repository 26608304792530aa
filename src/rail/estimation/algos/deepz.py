"""Deepz photometric redshifts as RAIL stages: DeepzInformer (training) and DeepzEstimator (PDFs).

Deepz (Eriksen et al. 2020, MNRAS 497, 4565) is an ensemble of mixture density networks fed with
flux ratios and the latent features of an autoencoder. The stages are thin wrappers around
:mod:`rail.deepz.informing` and :mod:`rail.deepz.estimating`.
"""

from __future__ import annotations

import gc
import os
from typing import Any

import numpy as np
import qp
import torch
from torch.profiler import record_function
from ceci.config import StageParameter as Param
from rail.core.common_params import SHARED_PARAMS
from rail.core.data import TableHandle
from rail.core.model import Model
from rail.estimation.estimator import CatEstimator
from rail.estimation.informer import CatInformer

from rail.deepz import mixture
from rail.deepz.checkpoint import CheckpointStore
from rail.deepz.devices import resolve_device, set_num_threads
from rail.deepz.estimating import ANCIL_KEYS, PDF_DTYPES, PRECISIONS, DeepzPredictor
from rail.deepz.augmentation import COADD_MODES, Augmentation
from rail.deepz.informing import USE_EXPOSURES, InformOptions, TransferOptions, train_deepz
from rail.deepz.output import TurnTakingQPHandle, parallel_hdf5_available
from rail.deepz.model_io import DeepzModelHandle, load_model, validate_model
from rail.deepz.options import CheckedOptions, check_band_lists, check_choice
from rail.deepz.training import NETWORK_PARTS, TrainConfig
from rail.deepz import transfer

__all__ = ["DeepzInformer", "DeepzTransferInformer", "DeepzEstimator"]

PHASE_CHOICES = ("full", "pretrain", "autoencoder")


def _select_group(data: Any, groupname: str, option_owner: str) -> Any:
    """The table inside ``data[groupname]`` (RAIL's hdf5_groupname convention), with a clear error."""
    if not groupname:
        return data
    try:
        return data[groupname]
    except (KeyError, TypeError, IndexError) as exc:
        raise KeyError(
            f"{option_owner}: hdf5_groupname '{groupname}' not found in the input table; "
            "set hdf5_groupname='' for a flat table"
        ) from exc


def _check_positive(config: Any, names: list[str], minimum: float = 1) -> None:
    for name in names:
        value = config[name]
        if value < minimum:
            raise ValueError(f"option '{name}' must be >= {minimum}, got {value}")


class DeepzInformer(CheckedOptions, CatInformer):
    """Train a Deepz ensemble (mixture density networks + autoencoder) on a spectroscopic table.

    The ensemble has ``n_splits`` x ``n_folds`` members: for each of ``n_splits`` random splits of
    the training set into ``n_folds`` folds, one network validates on each fold (best epoch on that
    fold) and trains on the others. The pooled PDF is calibrated on the held-out folds.
    """

    name = "DeepzInformer"
    entrypoint_function = "inform"
    interactive_function = "deepz_informer"
    config_options = CatInformer.config_options.copy()
    config_options.update(
        bands=SHARED_PARAMS,
        err_bands=SHARED_PARAMS,
        ref_band=SHARED_PARAMS,
        nondetect_val=SHARED_PARAMS,
        nonobserved_val=SHARED_PARAMS,
        mag_limits=SHARED_PARAMS,
        redshift_col=SHARED_PARAMS,
        n_splits=Param(int, 1, msg="number of random k-fold splits in the ensemble (paper: 10)"),
        n_folds=Param(int, 5, msg="folds per split; one network per fold (paper: 5); 1 = one 80/20 split"),
        encoder_layers=Param(list, [], msg="encoder hidden widths; [] = [128, 128] for <= 12 bands, 4 x 250 otherwise"),
        decoder_layers=Param(list, [], msg="decoder hidden widths; [] = same rule as encoder_layers"),
        mdn_layers=Param(list, [], msg="redshift network hidden widths; [] = 3 x 128 for <= 12 bands, 6 x 250 otherwise"),
        latent_dim=Param(int, 10, msg="autoencoder latent features fed to the redshift network (0: no autoencoder)"),
        n_gaussians=Param(int, 10, msg="Gaussian components per network"),
        dropout=Param(float, 0.02, msg="dropout probability after every hidden block"),
        learning_rates=Param(list, [1e-3, 1e-4, 1e-5], msg="step-wise learning rates (paper: 1e-3, 1e-4, 1e-5, 1e-6)"),
        epochs_per_step=Param(list, [40, 15, 5], msg="epochs at each learning rate (paper: 100, 200, 200, 200)"),
        batch_size=Param(int, 100, msg="training batch size (paper: 100)"),
        weight_decay=Param(float, 1e-5, msg="Adam weight decay"),
        ae_weight=Param(float, 0.0, msg="weight of the autoencoder reconstruction loss (0: redshift loss only)"),
        calibrate=Param(bool, True, msg="calibrate the pooled PDFs on the held-out folds"),
        calibrate_weight_power=Param(bool, False, msg="also fit a power of the component weights (sharpens or "
                                     "flattens secondary peaks; raises the pooled outlier rate on DC2 folds)"),
        recenter=Param(float, 1.0, msg="0-1: shift members toward the ensemble mean before pooling (0: plain pool)"),
        ambiguity_shrink=Param(float, 1.0, msg="0-1: narrow each calibrated pooled PDF so its variance drops by this "
                               "fraction of the members' spread (the ensemble mean beats one member; 0: off)"),
        seed=Param(int, 87, msg="random seed: splits, initial weights, batches, dropout"),
        device=Param(str, "auto", msg="'auto' (CUDA when available, else CPU), 'cpu', 'cuda', 'cuda:N'"),
        num_threads=Param(int, 0, msg="torch CPU threads; 0 = torch default (ceci sets OMP_NUM_THREADS)"),
        # transfer learning
        phase=Param(str, "full", msg="'full': (pretrain on sims, then) train/fine-tune on the spec-z input; "
                    "'pretrain': pretrain on sims (or on the input) and write the pretrained model; "
                    "'autoencoder': train the autoencoder alone on the (unlabelled) input"),
        pretrained_model=Param(str, "", msg="path of a pretrained model (phase 'pretrain' or 'autoencoder') "
                               "to fine-tune from instead of pretraining"),
        sims_groupname=Param(str, "photometry", msg="group of the simulation table holding the columns ('' = flat)"),
        pretrain_learning_rates=Param(list, [1e-3, 1e-4], msg="pretraining step-wise learning rates"),
        pretrain_epochs_per_step=Param(list, [15, 5], msg="pretraining epochs at each learning rate"),
        pretrain_batch_size=Param(int, 500, msg="pretraining batch size"),
        pretrain_ae_weight=Param(float, 1.0, msg="weight of the reconstruction loss in pretraining / AE-only training"),
        pretrain_flux_noise=Param(float, 0.0, msg="pretraining: resample sim fluxes as f + k sigma N(0,1) every batch"),
        pretrain_members=Param(int, 1, msg="networks pretrained; ensemble member m starts from network m % this"),
        pretrain_val_fraction=Param(float, 0.1, msg="fraction of the simulations used for best-epoch selection"),
        pretrain_parts=Param(list, ["encoder", "decoder", "mdn"], msg="parts initialised from the pretrained model"),
        freeze=Param(list, [], msg="parts kept fixed while fine-tuning: any of encoder, decoder, mdn"),
        finetune_learning_rates=Param(list, [], msg="fine-tuning learning rates ([] = learning_rates)"),
        finetune_epochs_per_step=Param(list, [], msg="fine-tuning epochs per rate ([] = epochs_per_step)"),
        finetune_l2sp=Param(float, 0.0, msg="L2-SP weight: sum (w - w_pretrained)^2 added to the fine-tuning loss"),
        finetune_sim_fraction=Param(float, 0.0, msg="fraction of every fine-tuning batch drawn from the simulations"),
        # inputs and augmentation
        use_exposures=Param(str, "auto", msg="read flux_{band}_exp{k} exposure columns: 'auto' (when present), 'yes', 'no'"),
        coadd_keep_prob=Param(float, 0.8, msg="randomised coadds: probability of keeping each exposure (1 = full coadd)"),
        coadd_mode=Param(str, "force_one", msg="randomised coadds: 'force_one' (keep >= 1 exposure per observed band) "
                         "or 'drop' (leave out galaxies that lose a band)"),
        outlier_fraction=Param(float, 0.0, msg="fraction of training galaxies per batch given a photometric outlier"),
        outlier_amplitude=Param(list, [0.2, 1.0], msg="outlier amplitude range [lo, hi]: extra flux as a fraction "
                                "of the band flux (or of its error when larger), random sign"),
        checkpoint_dir=Param(str, "auto", msg="folder of per-epoch training checkpoints; a re-run resumes from them. "
                             "'auto': '<model file>_checkpoints' next to the model file (off when nothing is "
                             "written, output_mode='return'); '' or 'none': off. Removed once the model is saved"),
        checkpoint_interval=Param(float, 0.0, msg="minimum seconds between checkpoint saves (0: after every epoch)"),
    )
    inputs = [("input", TableHandle)]
    outputs = [("model", DeepzModelHandle)]

    def __init__(self, args: Any, **kwargs: Any) -> None:
        super().__init__(args, **kwargs)
        self._sims_data: Any = None
        self._pretrained_data: Any = None

    def inform(self, training_data: Any, sims: Any = None, pretrained: Any = None, **kwargs: Any) -> Any:
        """Train a Deepz model.

        Parameters
        ----------
        training_data : dict or TableHandle
            Spectroscopic training table (or unlabelled photometry with ``phase='autoencoder'``).
        sims : dict or TableHandle, optional
            Simulation table (e.g. DeepzSimCreator output) to pretrain on before fine-tuning.
        pretrained : dict, optional
            A pretrained model (in memory) to fine-tune from; overrides ``pretrained_model``.

        Returns
        -------
        ModelHandle
            Handle of the trained (or pretrained) model.
        """
        self._sims_data, self._pretrained_data = sims, pretrained
        try:
            return super().inform(training_data, **kwargs)
        finally:
            self._sims_data, self._pretrained_data = None, None

    def _check_option_values(self) -> None:
        self._options()

    def _options(self) -> InformOptions:
        c = self.config
        check_band_lists(c.bands, c.err_bands, c.ref_band, c.mag_limits)
        _check_positive(c, ["n_splits", "n_folds", "n_gaussians", "batch_size"])
        _check_positive(c, ["latent_dim"], minimum=0)
        _check_positive(c, ["checkpoint_interval"], minimum=0)
        if not 0.0 <= c.dropout < 1.0:
            raise ValueError(f"option 'dropout' must be in [0, 1), got {c.dropout}")
        for key in ("recenter", "ambiguity_shrink"):
            if not 0.0 <= c[key] <= 1.0:
                raise ValueError(f"option '{key}' must be in [0, 1], got {c[key]}")
        if c.weight_decay < 0 or c.ae_weight < 0:
            raise ValueError("options 'weight_decay' and 'ae_weight' must be >= 0")
        lrs, eps = list(c.learning_rates), list(c.epochs_per_step)
        if len(lrs) == 0 or len(lrs) != len(eps):
            raise ValueError(
                f"options 'learning_rates' ({len(lrs)} values) and 'epochs_per_step' ({len(eps)} values) "
                "must be non-empty lists of the same length"
            )
        if any(float(r) <= 0 for r in lrs) or any(int(e) < 0 for e in eps) or sum(int(e) for e in eps) < 1:
            raise ValueError("'learning_rates' must be > 0 and 'epochs_per_step' >= 0 with at least one epoch")
        for key in ("encoder_layers", "decoder_layers", "mdn_layers"):
            if any(int(w) < 1 for w in c[key]):
                raise ValueError(f"option '{key}' must list positive layer widths, got {c[key]}")
        resolve_device(c.device)
        check_choice("phase", c.phase, PHASE_CHOICES)
        check_choice("use_exposures", c.use_exposures, USE_EXPOSURES)
        check_choice("coadd_mode", c.coadd_mode, COADD_MODES)
        for key in ("pretrain_parts", "freeze"):
            bad = [p for p in c[key] if p not in NETWORK_PARTS]
            if bad:
                raise ValueError(f"option '{key}': unknown part(s) {bad}; choose from {list(NETWORK_PARTS)}")
        if len(c.outlier_amplitude) != 2:
            raise ValueError(f"option 'outlier_amplitude' must be [lo, hi], got {c.outlier_amplitude}")
        plrs, peps = list(c.pretrain_learning_rates), list(c.pretrain_epochs_per_step)
        if len(plrs) == 0 or len(plrs) != len(peps) or sum(int(e) for e in peps) < 1:
            raise ValueError("options 'pretrain_learning_rates' and 'pretrain_epochs_per_step' must be non-empty "
                             "lists of the same length with at least one epoch")
        if len(c.finetune_learning_rates) != len(c.finetune_epochs_per_step):
            raise ValueError("options 'finetune_learning_rates' and 'finetune_epochs_per_step' must have the same length")
        _check_positive(c, ["pretrain_batch_size", "pretrain_members"])
        if c.finetune_l2sp < 0 or c.pretrain_flux_noise < 0 or not 0.0 <= c.finetune_sim_fraction < 1.0:
            raise ValueError("options 'finetune_l2sp' and 'pretrain_flux_noise' must be >= 0 and "
                             "'finetune_sim_fraction' in [0, 1)")
        augment = Augmentation(keep_prob=float(c.coadd_keep_prob), coadd_mode=c.coadd_mode,
                               outlier_fraction=float(c.outlier_fraction),
                               outlier_amplitude=(float(c.outlier_amplitude[0]), float(c.outlier_amplitude[1])))
        augment.check()
        transfer_opts = TransferOptions(
            pretrain_learning_rates=[float(r) for r in plrs],
            pretrain_epochs_per_step=[int(e) for e in peps],
            pretrain_batch_size=c.pretrain_batch_size,
            pretrain_ae_weight=c.pretrain_ae_weight,
            pretrain_flux_noise=c.pretrain_flux_noise,
            pretrain_members=c.pretrain_members,
            pretrain_val_fraction=c.pretrain_val_fraction,
            pretrain_parts=list(c.pretrain_parts),
            freeze=list(c.freeze),
            finetune_learning_rates=[float(r) for r in c.finetune_learning_rates],
            finetune_epochs_per_step=[int(e) for e in c.finetune_epochs_per_step],
            finetune_l2sp=c.finetune_l2sp,
            finetune_sim_fraction=c.finetune_sim_fraction,
        )
        return InformOptions(
            bands=list(c.bands),
            err_bands=list(c.err_bands),
            ref_band=c.ref_band,
            mag_limits=dict(c.mag_limits),
            redshift_col=c.redshift_col,
            nondetect_val=c.nondetect_val,
            nonobserved_val=c.nonobserved_val,
            n_splits=c.n_splits,
            n_folds=c.n_folds,
            encoder_layers=[int(w) for w in c.encoder_layers],
            decoder_layers=[int(w) for w in c.decoder_layers],
            mdn_layers=[int(w) for w in c.mdn_layers],
            latent_dim=c.latent_dim,
            n_gaussians=c.n_gaussians,
            dropout=c.dropout,
            train=TrainConfig(
                learning_rates=[float(r) for r in lrs],
                epochs_per_step=[int(e) for e in eps],
                batch_size=c.batch_size,
                weight_decay=c.weight_decay,
                ae_weight=c.ae_weight,
                seed=c.seed,
            ),
            calibrate=c.calibrate,
            calibrate_weight_power=c.calibrate_weight_power,
            recenter=c.recenter,
            ambiguity_shrink=c.ambiguity_shrink,
            device=c.device,
            use_exposures=c.use_exposures,
            augment=augment,
            transfer=transfer_opts,
        )

    def _sims(self) -> Any:
        """The simulation table: ``inform(..., sims=...)`` or the 'sims' input, or None."""
        sims = self._sims_data
        if sims is None and "sims" in self.input_tags():
            sims = self.get_data("sims")
        if sims is None:
            return None
        if hasattr(sims, "data") and not isinstance(sims, dict):
            sims = sims.data if sims.data is not None else sims.read()
        group = self.config.sims_groupname
        if group and isinstance(sims, dict) and group not in sims and self.config.ref_band in sims:
            return sims  # already a flat table
        return _select_group(sims, group, f"{self.name} (option 'sims_groupname')")

    def _pretrained(self) -> Any:
        if self._pretrained_data is not None:
            return validate_model(self._pretrained_data, "the pretrained model")
        if self.config.pretrained_model:
            return load_model(self.config.pretrained_model)
        return None

    def checkpoint_folder(self) -> str | None:
        """Where training checkpoints go (option ``checkpoint_dir``), or None when they are off."""
        folder = self.config.checkpoint_dir
        if folder.lower() in ("", "none"):
            return None
        if folder != "auto":
            return folder
        if self.config.output_mode != "default":
            return None
        model_path = self.get_output("model", final_name=True)
        return os.path.splitext(os.path.abspath(model_path))[0] + "_checkpoints"

    def run(self) -> None:
        opts = self._options()
        data = _select_group(self.get_data("input"), self.config.hdf5_groupname, self.name)
        set_num_threads(self.config.num_threads)
        log = lambda msg: self.log.info(msg)  # noqa: E731
        sims = self._sims()
        folder = self.checkpoint_folder()
        tag = f".rank{self.rank}" if self.size > 1 else ""
        self._checkpoints = None if folder is None else \
            CheckpointStore(folder, log, tag, float(self.config.checkpoint_interval))
        ckpt = dict(checkpoints=self._checkpoints)
        # under MPI (ceci nprocess > 1): the ensemble members are spread over the ranks and gathered
        # on rank 0; a pretraining / autoencoder-only run (one network set) runs on rank 0 alone
        root = self.rank == 0
        if self.config.phase == "autoencoder":
            model = transfer.train_autoencoder(data, opts, progress=log, **ckpt) if root else None
        elif self.config.phase == "pretrain":
            model = transfer.pretrain(data if sims is None else sims, opts, progress=log, **ckpt) if root else None
        else:
            model = train_deepz(data, opts, progress=log, sims=sims, pretrained=self._pretrained(), **ckpt,
                                comm=self.comm if self.size > 1 else None)
        self.model = model
        self.add_data("model", model)  # None on ranks > 0: only rank 0 holds (and writes) the model

    def finalize(self) -> None:
        """Write the model, then remove the training checkpoints (they are needed until it is saved)."""
        super().finalize()
        store = getattr(self, "_checkpoints", None)
        if store is not None:
            if self.is_mpi():
                self.comm.Barrier()  # the model is written (rank 0) before any rank drops its checkpoints
            store.clear()
            self._checkpoints = None


class DeepzTransferInformer(DeepzInformer):
    """DeepzInformer with a second input, ``sims``, for ceci pipelines (connect the Creator's output).

    Pretrains on ``sims`` and fine-tunes on ``input``; same options as DeepzInformer. Interactive:
    ``inform(training_data, sims)``.
    """

    name = "DeepzTransferInformer"
    interactive_function = "deepz_transfer_informer"
    inputs = [("input", TableHandle), ("sims", TableHandle)]

    def inform(self, training_data: Any, sims: Any = None, pretrained: Any = None, **kwargs: Any) -> Any:
        """Pretrain on ``sims`` and fine-tune on ``training_data``.

        Parameters
        ----------
        training_data : dict or TableHandle
            Spectroscopic training table.
        sims : dict or TableHandle
            Simulation table (DeepzSimCreator output or the same columns).
        pretrained : dict, optional
            A pretrained model to fine-tune from (then ``sims`` only feeds ``finetune_sim_fraction``).

        Returns
        -------
        ModelHandle
            Handle of the trained model.
        """
        if sims is not None:
            self.set_data("sims", sims)
        return super().inform(training_data, pretrained=pretrained, **kwargs)


class DeepzEstimator(CheckedOptions, CatEstimator):
    """Photo-z PDFs from a trained Deepz ensemble, as qp Gaussian mixtures.

    Every galaxy's PDF is the pooled mixture of all ensemble members (K = members x n_gaussians
    components, member weights divided by the member count), calibrated as stored in the model.
    Ancil columns: ``zmode`` (exact mode of the mixture), ``zmean`` (analytic), ``zmedian``,
    ``zstd``, ``odds`` (probability within zmode +- odds_window (1 + zmode), as BPZ's ODDS) and
    ``deepz_flag`` (bit mask, see :mod:`rail.deepz.flags`).
    """

    name = "DeepzEstimator"
    entrypoint_function = "estimate"
    interactive_function = "deepz_estimator"
    config_options = CatEstimator.config_options.copy()
    config_options.update(
        bands=SHARED_PARAMS,
        err_bands=SHARED_PARAMS,
        batch_size=Param(int, 1024, msg="galaxies per network pass (independent of chunk_size; larger on a GPU)"),
        odds_window=Param(float, 0.06, msg="ODDS half-width in units of (1 + zmode)"),
        device=Param(str, "auto", msg="'auto' (CUDA when available, GPU rank % n_gpus under MPI), 'cpu', 'cuda[:N]'"),
        num_threads=Param(int, 0, msg="torch CPU threads; 0 = torch default (ceci sets OMP_NUM_THREADS)"),
        precision=Param(str, "float32", msg="network precision at inference: 'float32', or on a GPU 'bfloat16'/"
                        "'float16' (autocast; see benchmarks/gpu_check.py for the measured effect)"),
        pdf_dtype=Param(str, "float32", msg="dtype of the stored mixture weights/means/stds: 'float32' (half the "
                        "bytes; relative rounding 6e-8) or 'float64'"),
        n_output_components=Param(int, 0, msg="merge each PDF to at most this many Gaussians (moment-preserving; "
                                  "0 = keep all members x n_gaussians; 1 = one Gaussian + point estimates)"),
    )
    # larger chunks than RAIL's 10,000: fewer per-chunk costs (qp ensemble, HDF5 write call, RAIL's
    # gc.collect(), made cheap by run()'s gc.freeze()); peak memory stays ~0.8 GB
    config_options["chunk_size"] = Param(int, 100_000, msg="rows read, estimated and written at a time")
    inputs = [("model", DeepzModelHandle), ("input", TableHandle)]

    def __init__(self, args: Any, **kwargs: Any) -> None:
        super().__init__(args, **kwargs)
        self.predictor: DeepzPredictor | None = None
        self._turn_taking = False

    def run(self) -> None:
        """RAIL's chunked run; on failure the partial output (ceci's ``inprogress_`` file) is closed, so a
        re-run in the same Python session can overwrite it (it never gets the final name).

        The objects alive before the loop (torch, qp, the model, ...) are frozen out of the garbage
        collector's scans while it runs: RAIL's ``gc.collect()`` after every chunk then takes
        microseconds instead of ~0.12 s (1.3 us per galaxy at 100,000-row chunks).
        """
        gc.freeze()
        try:
            super().run()
        except BaseException:
            handle = self._output_handle
            file_obj = getattr(handle, "fileObj", None) if handle is not None else None
            if file_obj is not None:
                try:
                    file_obj.close()
                except Exception:  # already closed or never opened
                    pass
            raise
        finally:
            gc.unfreeze()

    # -- output under MPI without parallel HDF5: the ranks write one file in turn --------------------
    def _initialize_run(self) -> None:
        super()._initialize_run()
        self._turn_taking = (self.comm is not None and self.size > 1 and self.config.output_mode != "return"
                             and not parallel_hdf5_available())

    def add_handle(self, tag: str, data: Any = None, path: str | None = None) -> Any:
        if tag != "output" or not self._turn_taking or path is not None:
            return super().add_handle(tag, data=data, path=path)
        aliased = self.get_aliased_tag(tag)
        handle = TurnTakingQPHandle(aliased, path=self.get_output(aliased), data=data, creator=self.instance_name)
        handle.set_turns(self.comm, self._input_length, self.config.chunk_size)
        self.data_store[aliased] = handle
        return handle

    def _finalize_run(self) -> None:
        if not self._turn_taking:
            super()._finalize_run()
            return
        self.comm.Barrier()  # every rank's chunks are written

    def _check_option_values(self) -> None:
        check_band_lists(self.config.bands, self.config.err_bands)
        _check_positive(self.config, ["batch_size", "chunk_size"])
        if not self.config.odds_window > 0:
            raise ValueError(f"option 'odds_window' must be > 0, got {self.config.odds_window}")
        check_choice("pdf_dtype", self.config.pdf_dtype, list(PDF_DTYPES))
        check_choice("precision", self.config.precision, list(PRECISIONS))
        if self.config.n_output_components < 0:
            raise ValueError("option 'n_output_components' must be >= 0 (0 = all), "
                             f"got {self.config.n_output_components}")
        resolve_device(self.config.device, self.rank)

    def open_model(self, **kwargs: Any) -> Any:
        CatEstimator.open_model(self, **kwargs)
        if self.model is None:
            return self.model
        model = self.model.data if isinstance(self.model, Model) else self.model
        self._check_option_values()  # also when run() is called without validate()
        phase = model.get("meta", {}).get("phase") if isinstance(model, dict) else None
        if phase == "autoencoder":
            raise ValueError("the model is an autoencoder trained alone (phase='autoencoder'): it has no redshift "
                             "network; fine-tune it with DeepzInformer(pretrained_model=...) first")
        set_num_threads(self.config.num_threads)
        self.predictor = DeepzPredictor(model, resolve_device(self.config.device, self.rank), self.config.batch_size,
                                        self.config.precision)
        self.predictor.check_columns(self.config.bands, self.config.err_bands)
        return self.model

    def _process_chunk(self, start: int, end: int, data: Any, first: bool) -> None:
        assert self.predictor is not None
        res = self.predictor.predict(data, self.config.err_bands, self.config.odds_window,
                                     self.config.n_output_components, self.config.pdf_dtype)
        with record_function("deepz.qp_ensemble"):
            ens = qp.Ensemble(
                qp.mixmod,
                data=dict(weights=res["weights"], means=res["means"], stds=res["stds"]),
                ancil={k: res[k] for k in ANCIL_KEYS},
            )
        with record_function("deepz.write_chunk"):
            self._do_chunk_output(ens, start, end, first, data=data)

    # qp's mixmod mean()/mode() are broken or grid-limited: exact versions for PointEstimationMixin.
    @staticmethod
    def _mixture_tensors(qp_dist: qp.Ensemble) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        d = qp_dist.objdata
        w = torch.as_tensor(np.asarray(d["weights"], dtype=np.float64))
        return w / w.sum(-1, keepdim=True), torch.as_tensor(np.asarray(d["means"], dtype=np.float64)), \
            torch.as_tensor(np.asarray(d["stds"], dtype=np.float64))

    def _calculate_mean_point_estimate(self, qp_dist: qp.Ensemble) -> np.ndarray:
        w, m, _ = self._mixture_tensors(qp_dist)
        return mixture.mean(w, m).numpy()

    def _calculate_mode_point_estimate(self, qp_dist: qp.Ensemble, grid: Any = None) -> np.ndarray:
        return mixture.mode(*self._mixture_tensors(qp_dist)).numpy()

    def _calculate_median_point_estimate(self, qp_dist: qp.Ensemble) -> np.ndarray:
        return mixture.median(*self._mixture_tensors(qp_dist)).numpy()
