"""Deepz photometric redshifts as RAIL stages: DeepzInformer (training) and DeepzEstimator (PDFs).

Deepz (Eriksen et al. 2020, MNRAS 497, 4565) is an ensemble of mixture density networks fed with
flux ratios and the latent features of an autoencoder. The stages are thin wrappers around
:mod:`rail.deepz.informing` and :mod:`rail.deepz.estimating`.
"""

from __future__ import annotations

import gc
import os
from typing import Any

import h5py
import numpy as np
import qp
import tables_io
import torch
from torch.profiler import record_function
from rail.core.data import TableHandle
from rail.core.model import Model
from rail.estimation.estimator import CatEstimator
from rail.estimation.informer import CatInformer

from rail.deepz import mixture, transfer
from rail.deepz.checkpoint import CheckpointStore
from rail.deepz.devices import resolve_device, set_num_threads
from rail.deepz.estimating import ANCIL_KEYS, DeepzPredictor
from rail.deepz.handles import DeepzModelHandle, TurnTakingQPHandle, parallel_hdf5_available
from rail.deepz.informing import pretrain_deepz, train_deepz
from rail.deepz.model_io import load_model, validate_model
from rail.deepz.options import ESTIMATE_OPTIONS, INFORM_OPTIONS, estimate_options, inform_options
from rail.deepz.schema import OptionError, stage_parameters
from rail.deepz.stage_options import CheckedOptions

__all__ = ["DeepzInformer", "DeepzTransferInformer", "DeepzTargetInformer", "DeepzTargetTransferInformer", "DeepzEstimator"]


def _missing_group(owner: str, group: str, groups: list[str], where: str, option: str = "hdf5_groupname") -> KeyError:
    """The error for a group option (``hdf5_groupname``) naming no group of the input: names the ones there are."""
    from rail.deepz.schema import closest

    if groups:
        near = closest(group, groups, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        found = f"its groups are {groups}{hint}; {option}='' reads a flat table"
    else:
        found = f"it has no groups (a flat table, columns at the top level): set {option}=''"
    return KeyError(f"{owner}: {option} '{group}' is not a group of {where}; {found}")


def _groups(data: Any) -> list[str]:
    """The names of the groups (tables) in an input held in memory."""
    return sorted(str(k) for k, v in data.items() if hasattr(v, "keys")) if hasattr(data, "items") else []


def _select_group(data: Any, groupname: str, owner: str, where: str = "input 'input'",
                  option: str = "hdf5_groupname") -> Any:
    """The table inside ``data[groupname]`` (RAIL's hdf5_groupname convention), with a clear error."""
    if not groupname:
        return data
    try:
        return data[groupname]
    except (KeyError, TypeError, IndexError) as exc:
        raise _missing_group(owner, groupname, _groups(data), where, option) from exc


class _InputFilesChecked:
    """Mixin: an input read from a file that does not exist is a FileNotFoundError naming the file and the
    input tag, before RAIL / tables_io turn it into a generic RuntimeError (inputs held in memory, unset
    ones, path "None", and those whose "path" is not a path, e.g. a model handle given as ``model=``,
    are not checked)."""

    def get_handle(self, tag: str, path: str | None = None, allow_missing: bool = False) -> Any:
        handle = super().get_handle(tag, path=path, allow_missing=allow_missing)  # type: ignore[misc]
        file_path = getattr(handle, "path", None)
        if (tag in self.input_tags() and not handle.has_data  # type: ignore[attr-defined]
                and isinstance(file_path, (str, os.PathLike)) and str(file_path) not in ("", "None", "none")
                and not os.path.exists(os.path.expandvars(str(file_path)))):
            raise FileNotFoundError(f"{self.instance_name}: input '{tag}': file '{file_path}' "  # type: ignore[attr-defined]
                                    "does not exist")
        return handle


#: data inputs that change what an informer does, and the classes that have them
_DATA_INPUTS = {"sims": "DeepzTransferInformer or DeepzTargetTransferInformer",
                "target": "DeepzTargetInformer or DeepzTargetTransferInformer"}


def _check_aliases(cls: type, aliases: Any, instance_name: Any) -> None:
    """A pipeline alias for a data input ``cls`` lacks: an error (ceci would drop the data silently)."""
    tags = [t for t, _ in cls.inputs_()]  # type: ignore[attr-defined]
    for tag, alias in (aliases or {}).items():
        if tag in _DATA_INPUTS and tag not in tags:
            raise ValueError(f"{instance_name or cls.name}: alias '{tag}: {alias}' names an input that "
                             f"{cls.name} does not have (inputs {tags}): input '{tag}' belongs to "
                             f"{_DATA_INPUTS[tag]}")


class DeepzInformer(CheckedOptions, _InputFilesChecked, CatInformer):
    """Train a Deepz ensemble (mixture density networks + autoencoder) on a spectroscopic table.

    The ensemble has ``n_splits`` x ``n_folds`` members: for each of ``n_splits`` random splits of
    the training set into ``n_folds`` folds, one network validates on each fold (best epoch on that
    fold) and trains on the others. The pooled PDF is calibrated on the held-out folds.
    """

    name = "DeepzInformer"
    entrypoint_function = "inform"
    interactive_function = "deepz_informer"
    config_options = CatInformer.config_options.copy()
    config_options.update(stage_parameters(INFORM_OPTIONS))  # the schema: rail.deepz.options
    inputs = [("input", TableHandle)]
    outputs = [("model", DeepzModelHandle)]

    def __init__(self, args: Any, **kwargs: Any) -> None:
        super().__init__(args, **kwargs)
        _check_aliases(type(self), self.get_aliases(), self.instance_name)
        self._sims_data: Any = None
        self._pretrained_data: Any = None
        self._target_data: Any = None

    def inform(self, training_data: Any, sims: Any = None, pretrained: Any = None, target: Any = None,
               **kwargs: Any) -> Any:
        """Train a Deepz model.

        Parameters
        ----------
        training_data : dict or TableHandle
            Spectroscopic training table (or unlabelled photometry with ``phase='autoencoder'``).
        sims : dict or TableHandle, optional
            Simulation table (e.g. DeepzSimCreator output) to pretrain on before fine-tuning.
        pretrained : dict, optional
            A pretrained model (in memory) to fine-tune from; overrides ``pretrained_model``.
        target : dict, TableHandle or file path, optional
            Unlabelled photometry of the galaxies to be estimated (same columns and group as
            ``training_data``; redshifts never read): training is weighted toward it and the model
            reports each galaxy's coverage (options ``target_*`` and ``weight_clip``; the
            documentation's "Training toward the target" page).

        Returns
        -------
        ModelHandle
            Handle of the trained (or pretrained) model.
        """
        self._sims_data, self._pretrained_data, self._target_data = sims, pretrained, target
        try:
            return super().inform(training_data, **kwargs)
        finally:
            self._sims_data, self._pretrained_data, self._target_data = None, None, None

    @classmethod
    def generate_command(cls, inputs: Any, config: Any, outputs: Any, aliases: Any = None,
                         instance_name: Any = None) -> Any:
        _check_aliases(cls, aliases, instance_name)  # ceci pipelines build each stage's command here
        return super().generate_command(inputs, config, outputs, aliases, instance_name)

    def _progress(self, msg: str) -> None:
        """Training messages to the stage's log; those starting 'warning:' at warning level."""
        (self.log.warning if msg[:8].lower() == "warning:" else self.log.info)(msg)

    def inform_options(self) -> Any:
        """The stage's options as a checked :class:`rail.deepz.options.InformOptions`."""
        return inform_options({opt.name: self.config[opt.name] for opt in INFORM_OPTIONS})

    def _check_option_values(self) -> None:
        self.inform_options()
        resolve_device(self.config.device)

    def _table_input(self, tag: str, given: Any, group: str, group_option: str) -> Any:
        """The table of input ``tag``: ``given`` (a table, handle or file path) or the stage's input, or None.

        ``group`` (option ``group_option``) is opened as RAIL's hdf5_groupname is; a flat table is
        accepted as it is.
        """
        value = given
        if value is None and tag in self.input_tags():
            value = self.get_data(tag)
        if value is None:
            return None
        if isinstance(value, (str, os.PathLike)):
            path = os.path.expandvars(str(value))
            if not os.path.exists(path):
                raise FileNotFoundError(f"{self.name}: input '{tag}': file '{value}' does not exist")
            value = tables_io.read(path)
        if hasattr(value, "data") and not isinstance(value, dict):
            value = value.data if value.data is not None else value.read()
        ref = self.config.ref_band
        if isinstance(value, dict) and group and group not in value and ref in value:
            return value  # already a flat table
        if isinstance(value, dict) and not group and ref not in value:
            nested = [k for k, v in value.items() if isinstance(v, dict) and ref in v]
            if nested:
                raise KeyError(f"{self.name}: input '{tag}' holds its columns in group '{nested[0]}': set "
                               f"{group_option}='{nested[0]}' or pass the flat table")
        return _select_group(value, group, f"{self.name} '{self.instance_name}'", f"input '{tag}'", group_option)

    def _sims(self) -> Any:
        """The simulation table: ``inform(..., sims=...)`` or the 'sims' input, or None."""
        return self._table_input("sims", self._sims_data, self.config.sims_groupname, "sims_groupname")

    def _target(self) -> Any:
        """The target photometry: ``inform(..., target=...)`` or the 'target' input, or None."""
        return self._table_input("target", self._target_data, self.config.hdf5_groupname, "hdf5_groupname")

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
        opts = self.inform_options()
        resolve_device(opts.device)
        data = _select_group(self.get_data("input"), self.config.hdf5_groupname, f"{self.name} '{self.instance_name}'")
        set_num_threads(self.config.num_threads)
        log = self._progress
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
            if self._target_data is not None or "target" in self.input_tags():
                log("warning: phase 'autoencoder' trains on the input table alone: input 'target' is not used")
            model = transfer.train_autoencoder(data, opts, progress=log, **ckpt) if root else None
        elif self.config.phase == "pretrain":
            model = pretrain_deepz(data if sims is None else sims, opts, progress=log, target=self._target(),
                                   **ckpt) if root else None
        else:
            model = train_deepz(data, opts, progress=log, sims=sims, pretrained=self._pretrained(), **ckpt,
                                comm=self.comm if self.size > 1 else None, target=self._target())
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


class DeepzTargetInformer(DeepzInformer):
    """DeepzInformer with a second input, ``target``, for ceci pipelines: the photometry to estimate.

    Connect the catalogue the estimator will run on (its redshifts are never read). Same options
    as DeepzInformer; interactive: ``inform(training_data, target=...)`` on either class.
    """

    name = "DeepzTargetInformer"
    interactive_function = "deepz_target_informer"
    inputs = [("input", TableHandle), ("target", TableHandle)]

    def inform(self, training_data: Any, sims: Any = None, pretrained: Any = None, target: Any = None,
               **kwargs: Any) -> Any:
        if target is not None:
            self.set_data("target", target)
        return super().inform(training_data, sims=sims, pretrained=pretrained, **kwargs)

    inform.__doc__ = DeepzInformer.inform.__doc__


class DeepzTargetTransferInformer(DeepzTransferInformer):
    """DeepzTransferInformer with a third input, ``target`` (see :class:`DeepzTargetInformer`).

    Pretrains on ``sims``, then fine-tunes on ``input`` weighted toward ``target`` (with
    ``target_fill`` the simulations also fill the part of the target the spec-z sample does not cover).
    """

    name = "DeepzTargetTransferInformer"
    interactive_function = "deepz_target_transfer_informer"
    inputs = [("input", TableHandle), ("sims", TableHandle), ("target", TableHandle)]

    def inform(self, training_data: Any, sims: Any = None, pretrained: Any = None, target: Any = None,
               **kwargs: Any) -> Any:
        if target is not None:
            self.set_data("target", target)
        return super().inform(training_data, sims=sims, pretrained=pretrained, **kwargs)

    inform.__doc__ = DeepzInformer.inform.__doc__


class DeepzEstimator(CheckedOptions, _InputFilesChecked, CatEstimator):
    """Photo-z PDFs from a trained Deepz model, as qp Gaussian mixtures.

    By default (option ``network``) the model's compact network gives every galaxy's PDF: one network
    distilled from the calibrated ensemble, ``n_gaussians`` components. With ``network='ensemble'``
    (and for models without a compact network) the PDF is the pooled mixture of all ensemble members
    (K = members x n_gaussians components, member weights divided by the member count), calibrated as
    stored in the model and merged to ``n_output_components``.
    Ancil columns: ``zmode`` (exact mode of the mixture), ``zmean`` (analytic), ``zmedian``,
    ``zstd``, ``odds`` (probability within zmode +- odds_window (1 + zmode), as BPZ's ODDS),
    ``coverage`` (how well the spec-z training sample represents the galaxy, in [0, 1], for models
    informed with a ``target``; NaN otherwise), ``confidence`` (``odds`` times the simulation-pretrained
    network's probability that ``zmode`` is not an outlier, for models pretrained on simulations; NaN
    otherwise) and ``deepz_flag`` (bit mask, see :mod:`rail.deepz.flags`).
    """

    name = "DeepzEstimator"
    entrypoint_function = "estimate"
    interactive_function = "deepz_estimator"
    config_options = CatEstimator.config_options.copy()
    # the schema (rail.deepz.options) also sets chunk_size to 100,000 rather than RAIL's 10,000:
    # fewer per-chunk costs (qp ensemble, HDF5 write call, RAIL's gc.collect(), made cheap by run()'s
    # gc.freeze()); peak memory stays ~0.8 GB
    config_options.update(stage_parameters(ESTIMATE_OPTIONS))
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

    def input_iterator(self, tag: str, **kwargs: Any) -> Any:
        """RAIL's input iterator, after checking that ``hdf5_groupname`` is a group of the input (RAIL
        would read the whole file and fail on a missing column, or raise a bare KeyError)."""
        group = kwargs.get("groupname", self.config.hdf5_groupname)
        if tag == "input" and group:
            handle = self.get_handle(tag, allow_missing=True)
            owner = f"{self.name} '{self.instance_name}'"
            if handle.data is not None and hasattr(handle.data, "items"):
                if group not in handle.data:
                    raise _missing_group(owner, group, _groups(handle.data), "input 'input'")
            elif handle.path not in (None, "None", "none") and h5py.is_hdf5(handle.path):
                with h5py.File(handle.path, "r") as f:
                    if group not in f:
                        groups = sorted(k for k in f if isinstance(f[k], h5py.Group))
                        raise _missing_group(owner, group, groups, f"input file '{handle.path}'")
        return super().input_iterator(tag, **kwargs)

    def estimate_options(self) -> Any:
        """The stage's options as a checked :class:`rail.deepz.options.EstimateOptions`."""
        return estimate_options({opt.name: self.config[opt.name] for opt in ESTIMATE_OPTIONS})

    def _check_option_values(self) -> None:
        self.estimate_options()
        if not float(self.config.zmin) < float(self.config.zmax):
            raise OptionError(f"options 'zmin' ({self.config.zmin}) and 'zmax' ({self.config.zmax}): the PDFs are "
                              "kept inside [zmin, zmax], so zmin must be below zmax")
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
                                        self.config.precision, self.config.network)
        self.predictor.check_columns(self.config.bands, self.config.err_bands)
        return self.model

    def _process_chunk(self, start: int, end: int, data: Any, first: bool) -> None:
        assert self.predictor is not None
        res = self.predictor.predict(data, self.config.err_bands, self.config.odds_window,
                                     self.config.n_output_components, self.config.pdf_dtype,
                                     (float(self.config.zmin), float(self.config.zmax)))
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
