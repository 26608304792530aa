"""RAIL Creator stage for Deepz pretraining simulations (Eriksen et al. 2020, section 3.2)."""

from __future__ import annotations

from typing import Any, Mapping

from rail.core.data import DataHandle, Hdf5Handle, ModelHandle
from rail.creation.engine import Creator

from rail.deepz.schema import stage_parameters
from rail.deepz.simulation import OPTIONS, simulate_catalogue, validate_options
from rail.deepz.stage_options import CheckedOptions

__all__ = ["DeepzSimCreator"]


class DeepzSimCreator(CheckedOptions, Creator):
    """Simulated galaxy photometry for pretraining Deepz.

    Galaxy parameters are drawn independently and uniformly (paper Table 1; ``*_range`` options),
    turned into rest-frame SEDs by the ``engine`` (``ssp``: vectorised PopStar composite populations
    with dust, nebular lines and IGM; ``fsps``: python-fsps; ``templates``: pz-rail-base's SED
    templates), observed through ``filter_set``, scaled to reference-band magnitudes drawn from
    ``mag_distribution`` and given noise (``noise_model``) and, optionally, individual exposures.
    The ``model`` input is not needed (the stage is fully defined by its options); leave it unset
    (``rail.interactive`` requires it: pass ``model="none"``).

    The simulations can carry the noise of a target catalogue (the unlabelled photometry to be
    estimated, in the ``bands`` / ``err_bands`` columns): with ``noise_model='target'`` the errors
    follow the target's median error vs magnitude. Interactively, pass the table to
    ``sample(target=...)``, which also gives ``mag_distribution='histogram'`` the target's
    reference-band magnitudes when ``mag_reference_file`` is unset. In ceci pipelines, where
    ``sample`` is not called, set ``noise_reference_file`` (and ``mag_reference_file``) to the
    target file instead.
    The simulations page of the documentation lists every option and the output columns.
    """

    name = "DeepzSimCreator"
    entrypoint_function = "sample"
    interactive_function = "deepz_sim_creator"
    config_options = Creator.config_options.copy()
    config_options.update(stage_parameters(list(OPTIONS.values())))  # the schema: rail.deepz.simulation.options
    extra_interactive_documentation = (
        "The simulation needs no model: call with model='none', e.g. "
        "deepz_sim_creator(model='none', n_samples=1000, seed=1)."
    )
    inputs = [("model", ModelHandle)]
    outputs = [("output", Hdf5Handle)]

    def __init__(self, args: Any, **kwargs: Any) -> None:
        self._target_data: Any = None
        super().__init__(args, **kwargs)
        # a target table may still come with sample(target=...): checked fully when the stage runs
        self._resolved = validate_options(self._options(), has_target=None)

    def open_model(self, tag: str = "model", **kwargs: Any) -> Any:
        """The simulation needs no model: ``model`` may be absent, None or "None" (ignored otherwise)."""
        model = kwargs.get(tag, None)
        if model is None or (isinstance(model, str) and model.lower() in ("none", "")):
            self.model = None
            return None
        return super().open_model(tag, **kwargs)

    def _options(self) -> dict:
        return {name: self.config[name] for name in OPTIONS}

    def _check_option_values(self) -> None:
        self._resolved = validate_options(self._options(), has_target=None)

    def _target(self) -> Any:
        """The target table given to :meth:`sample`, flat (unwrapped from a handle and from the
        ``hdf5_groupname`` group when it has one), or None."""
        target = self._target_data
        if target is None:
            return None
        if isinstance(target, DataHandle):
            target = target.data if target.data is not None else target.read()
        group = self.config.hdf5_groupname
        if group and isinstance(target, Mapping) and group in target and self.config.ref_band not in target:
            target = target[group]
        if not hasattr(target, "__getitem__") or not hasattr(target, "__contains__"):
            raise TypeError(f"{self.name}: 'target' must be a table (dict of columns, pandas DataFrame or RAIL "
                            f"TableHandle), got {type(target).__name__}")
        return target

    def sample(self, n_samples: int | None = None, seed: int | None = None, target: Any = None,
               **kwargs: Any) -> Hdf5Handle:
        """Simulate a catalogue of galaxies.

        Parameters
        ----------
        n_samples : int, optional
            Number of galaxies; defaults to the ``n_samples`` option.
        seed : int, optional
            Seed of every random draw (parameters, magnitudes, noise, exposures); defaults to the
            ``seed`` option. The same seed, options and target give the same catalogue.
        target : dict, pandas.DataFrame or TableHandle, optional
            The unlabelled target photometry (magnitudes in the ``bands`` / ``err_bands`` columns,
            flat or in the ``hdf5_groupname`` group; labels are never read). Used by
            ``noise_model='target'`` (in place of ``noise_reference_file``) and by
            ``mag_distribution='histogram'`` when ``mag_reference_file`` is unset.
        **kwargs : Any
            Option overrides, validated before any work starts.

        Returns
        -------
        Hdf5Handle
            Handle to a dict ``{hdf5_groupname: {column: array}}`` (or the flat dict when
            ``hdf5_groupname`` is ''): ``id``, ``redshift``, magnitudes ``bands`` and errors
            ``err_bands`` (non-detections ``nondetect_val``), coadded fluxes ``flux_{band}``,
            ``flux_err_{band}``, noiseless ``flux_true_{band}`` [nJy], the drawn parameters and,
            with ``exposures=True``, ``flux_{band}_exp{k}``, ``flux_err_{band}_exp{k}``, ``n_exp_{band}``.
        """
        n_samples = self.config.n_samples if n_samples is None else n_samples
        seed = self.config.seed if seed is None else seed
        self._target_data = target
        try:
            return super().sample(n_samples=n_samples, seed=seed, **kwargs)
        finally:
            self._target_data = None  # a table held in memory is not kept by the stage

    def run(self) -> None:
        """Validate the options, simulate, and add the table as the ``output``."""
        self.check_options()
        opts = self._options()
        n_samples, seed = self.config.n_samples, self.config.seed
        if not isinstance(n_samples, int) or isinstance(n_samples, bool) or n_samples < 1:
            raise ValueError(f"Option 'n_samples' = {n_samples!r} is invalid: expected a positive integer")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"Option 'seed' = {seed!r} is invalid: expected an integer")
        table = simulate_catalogue(n_samples, seed, opts, target=self._target())
        group = self.config.hdf5_groupname
        self.add_data("output", {group: table} if group else table)
