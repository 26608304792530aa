"""The simulation pipeline: engines, fluxes, noise and exposures -> a catalogue (no RAIL, no torch)."""

from __future__ import annotations

import contextlib

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Mapping

import numpy as np

from ..error_relation import ErrorRelation
from ..inputs import band_key, pack_exposures, read_column
from .cosmology import luminosity_distance_cm
from .engines import FSPSEngine, SSPEngine, TemplateEngine, template_files
from .exposures import simulate_exposures
from .filters import FilterSet
from .noise import DEFAULT_GAMMA, LSST_GAMMA, depth_flux_errors, fluxes_to_mags, snr_flux_errors
from .normalisation import draw_reference_mags, read_reference_mags
from .options import OPTIONS, SimulationOptionError, default_options, validate_options
from .photometry import (build_projection, continuum_band_luminosity, line_band_luminosity, njy_to_mag,
                         required_rest_range, to_njy)
from .priors import PRIOR_OPTIONS, draw_parameters
from .retarget import read_target_file, target_error_relation
from .ssp_grid import get_ssp_grid

__all__ = ["OPTIONS", "SimulationOptionError", "default_options", "validate_options", "make_engine",
           "intrinsic_fluxes", "simulate_catalogue"]


def make_engine(opts: dict, filters: FilterSet) -> Any:
    """Build the engine named by ``opts['engine']`` for the filters and redshift range."""
    zlo, zhi = opts["zred_range"]
    wave_range = required_rest_range(filters, zlo, zhi)
    if opts["engine"] == "ssp":
        return SSPEngine(get_ssp_grid(opts["ssp_grid"]), wave_range, opts["sfh"], opts["lya_escape"],
                         opts["nebular"])
    if opts["engine"] == "templates":
        return TemplateEngine(template_files(opts["template_set"], opts["template_list"]), wave_range,
                              opts["lya_escape"])
    return FSPSEngine(wave_range, opts["sfh"], opts["n_processes"])


def _draw(engine: Any, rng: np.random.Generator, n: int, opts: dict) -> dict[str, np.ndarray]:
    ranges = {k: opts[k] for k in PRIOR_OPTIONS}
    params = draw_parameters(rng, n, ranges, opts["cosmology"])
    if isinstance(engine, TemplateEngine):
        params["template"] = rng.uniform(0.0, engine.n_templates - 1.0, n)
    return {k: params[k] for k in engine.parameter_names}


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` where unknown)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return max(os.cpu_count() or 1, 1)


def _block_fluxes(engine: Any, table: Any, params: dict[str, np.ndarray], filters: FilterSet,
                  opts: dict) -> np.ndarray:
    """Noiseless fluxes [nJy] (n, n_bands) of one block of galaxies (parameter arrays of length n)."""
    cont, lines = engine.rest_frame(params)
    lum = continuum_band_luminosity(cont, params["zred"], table)
    if lines.shape[1]:
        lum += line_band_luminosity(lines, engine.line_wave, params["zred"], filters, opts["igm"])
    return to_njy(lum, luminosity_distance_cm(params["zred"], opts["cosmology"]))


_WORKER: dict[str, Any] = {}


def _worker_init(engine: Any, table: Any, filters: FilterSet, opts: dict) -> None:
    """Worker process set-up: one BLAS thread (the processes are the parallelism), shared inputs."""
    try:
        from threadpoolctl import threadpool_limits  # pylint: disable=import-outside-toplevel

        _WORKER["limits"] = threadpool_limits(1)
    except ImportError:
        pass
    _WORKER.update(engine=engine, table=table, filters=filters, opts=opts)


def _one_blas_thread() -> Any:
    """Context limiting BLAS to one thread (no-op without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits  # pylint: disable=import-outside-toplevel
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _worker_block(params: dict[str, np.ndarray]) -> np.ndarray:
    w = _WORKER
    return _block_fluxes(w["engine"], w["table"], params, w["filters"], w["opts"])


def intrinsic_fluxes(engine: Any, params: dict[str, np.ndarray], filters: FilterSet, opts: dict) -> np.ndarray:
    """Noiseless fluxes [nJy] (N, n_bands) of the engine's galaxies before magnitude normalisation
    (per solar mass formed for physical engines).

    Galaxies are synthesised in blocks of ``chunk_size`` rows (bounded memory). With ``n_jobs`` != 1
    and more than one block, the blocks run in that many worker processes (0: all cores); the
    blocks and their arithmetic are the same for any ``n_jobs``, so the fluxes are identical.
    The fsps engine has its own processes (``n_processes``) and runs the blocks here.
    """
    zlo, zhi = opts["zred_range"]
    table = build_projection(engine.rest_wave, filters, zlo, zhi, opts["igm"])
    n = params["zred"].size
    out = np.empty((n, len(filters)))
    chunk = int(opts["chunk_size"])
    blocks = [slice(start, min(start + chunk, n)) for start in range(0, n, chunk)]
    n_jobs = int(opts.get("n_jobs", 1)) or available_cores()
    n_jobs = min(n_jobs, len(blocks))
    if n_jobs <= 1 or isinstance(engine, FSPSEngine):
        # one BLAS thread, as in the workers: a threaded matmul may sum in another order (1-ulp changes)
        with _one_blas_thread():
            for sl in blocks:
                out[sl] = _block_fluxes(engine, table, {k: v[sl] for k, v in params.items()}, filters, opts)
        return out
    # fork where available: a spawned worker would re-import RAIL (seconds each); the workers
    # only run numpy (one BLAS thread), never torch/OpenMP, so forking a threaded parent is safe
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(n_jobs, mp_context=multiprocessing.get_context(method), initializer=_worker_init,
                             initargs=(engine, table, filters, opts)) as pool:
        futures = [(sl, pool.submit(_worker_block, {k: v[sl] for k, v in params.items()})) for sl in blocks]
        for sl, fut in futures:
            out[sl] = fut.result()
    return out


def _target_inputs(opts: dict, bands: list[str], err_bands: list[str],
                   target: Mapping[str, Any] | None) -> tuple[ErrorRelation | None, np.ndarray | None]:
    """What the simulation takes from the target catalogue: its error relation (noise_model
    'target') and its reference-band magnitudes (histogram without a mag_reference_file), or None.

    ``target`` (a flat table in memory) wins over ``noise_reference_file``.
    """
    relation = reference = None
    if opts["noise_model"] == "target":
        noise_table, source = target, "the target table"
        if noise_table is None:
            path = opts["noise_reference_file"]
            noise_table = read_target_file(path, opts["hdf5_groupname"], bands[0])
            source = f"option 'noise_reference_file' ({path!r})"
        relation = target_error_relation(noise_table, bands, err_bands, opts["nondetect_val"],
                                         opts["nonobserved_val"], source)
    if opts["mag_distribution"] == "histogram" and not opts["mag_reference_file"] and target is not None:
        column = opts["mag_reference_column"] or opts["ref_band"]
        try:
            reference = read_column(target, column)
        except KeyError as exc:
            raise KeyError(f"mag_distribution='histogram' without mag_reference_file reads the target table: "
                           f"{exc.args[0]}") from None
    return relation, reference


def simulate_catalogue(n_samples: int, seed: int, opts: dict,
                       target: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Simulate ``n_samples`` galaxies; returns a flat dict of columns (see docs/simulations.md).

    Random streams (parameters, magnitudes, noise, exposures) are spawned from ``seed`` separately, so
    e.g. switching exposures on does not change the galaxies' parameters.

    ``target``: the unlabelled photometry to be estimated, a flat table with the ``bands`` /
    ``err_bands`` columns (magnitudes). With ``noise_model='target'`` the errors follow its
    error-vs-magnitude relation (else that of ``noise_reference_file``); with
    ``mag_distribution='histogram'`` and no ``mag_reference_file``, the reference magnitudes are its
    ``mag_reference_column`` (default ``ref_band``).
    """
    resolved = validate_options(opts, has_target=target is not None)
    filters, bands, err_bands = resolved["filters"], resolved["bands"], resolved["err_bands"]
    # read and fit the target before the synthesis, so that a bad table fails before the expensive part
    relation, reference = _target_inputs(opts, bands, err_bands, target)
    rng_par, rng_mag, rng_noise, rng_exp = (np.random.default_rng(s)
                                            for s in np.random.SeedSequence(int(seed)).spawn(4))
    engine = make_engine(opts, filters)
    try:
        params = _draw(engine, rng_par, int(n_samples), opts)
        model_flux = intrinsic_fluxes(engine, params, filters, opts)
    finally:
        if hasattr(engine, "close"):
            engine.close()
    ref = bands.index(opts["ref_band"])
    ref_model_mag = njy_to_mag(model_flux[:, ref])
    if opts["mag_distribution"] == "histogram" and reference is None:
        reference = read_reference_mags(opts["mag_reference_file"],
                                        opts["mag_reference_column"] or opts["ref_band"], opts["hdf5_groupname"])
    ref_mags = draw_reference_mags(rng_mag, int(n_samples), opts["mag_distribution"], opts["mag_range"],
                                   opts["mag_slope"], reference)
    with np.errstate(invalid="ignore", over="ignore"):
        scale = np.where(np.isfinite(ref_model_mag), 10.0 ** (-0.4 * (ref_mags - ref_model_mag)), 0.0)
    true_flux = model_flux * scale[:, None]

    if opts["noise_model"] == "depth":
        gammas = np.array([LSST_GAMMA.get(name, DEFAULT_GAMMA) for name in filters.names])
        sigma = depth_flux_errors(true_flux, resolved["depths"], gammas, opts["sys_error"])
    elif opts["noise_model"] == "snr":
        sigma = snr_flux_errors(true_flux, resolved["snr"])
    elif opts["noise_model"] == "target":
        assert relation is not None
        sigma = relation.flux_errors(true_flux)
    else:
        sigma = np.zeros_like(true_flux)

    keys = [band_key(b) for b in bands]
    cols: dict[str, np.ndarray] = {"id": np.arange(int(n_samples), dtype=np.int64),
                                   "redshift": params["zred"]}
    if opts["exposures"]:
        exp = simulate_exposures(rng_exp, true_flux, sigma, tuple(opts["n_exposures_range"]),
                                 opts["exposure_depth_scatter"], opts["exposure_outlier_fraction"],
                                 tuple(opts["exposure_outlier_amplitude"]))
        flux, flux_err = exp["coadd_flux"], exp["coadd_err"]
    else:
        flux = true_flux + sigma * rng_noise.standard_normal(true_flux.shape)
        flux_err = sigma
    mags, mag_errs = fluxes_to_mags(flux, flux_err, opts["nondetect_snr"], opts["nondetect_val"],
                                    opts["nonobserved_val"])
    for b in range(len(bands)):
        cols[bands[b]] = mags[:, b]
        cols[err_bands[b]] = mag_errs[:, b]
    for b, key in enumerate(keys):
        cols[f"flux_{key}"] = flux[:, b]
        cols[f"flux_err_{key}"] = flux_err[:, b]
        cols[f"flux_true_{key}"] = true_flux[:, b]
    for name in engine.parameter_names:
        if name != "zred":
            cols[name] = params[name]
    if engine.physical:
        with np.errstate(divide="ignore"):
            cols["log_mass_formed"] = np.log10(scale)
    if opts["exposures"]:
        cols.update(pack_exposures(exp["flux"], exp["flux_err"], keys))
        cols["n_exp_outliers"] = exp["outlier"].sum(axis=(1, 2))
    return cols
