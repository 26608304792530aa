"""Rest-frame SED engines: ``ssp`` (vectorised grid synthesis), ``templates`` and ``fsps``.

Every engine exposes ``rest_wave`` (n_wave,) [Angstrom], ``line_wave`` (n_lines,) [Angstrom],
``physical`` (continuum is per solar mass formed, so a stellar mass can be derived), and
``rest_frame(params) -> (continuum (N, n_wave) [erg/s/A], lines (N, n_lines) [erg/s])``
for a dict of parameter arrays of length N (see :mod:`.priors`). Dust is already applied.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from .constants import C_AA_PER_S, L_SUN_ERG_S, LYMAN_LIMIT_AA
from .dust import attenuate
from .emission_lines import HALPHA_PER_PHOTON_ERG, LINE_WAVELENGTHS, LOGU_RANGE, line_luminosities
from .sfh import sfh_weights
from .ssp_grid import SSPGrid

ENGINES = ("ssp", "fsps", "templates")
TEMPLATE_SETS = ("cosmos", "cww", "custom")


def _crop_indices(wave: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Indices of ``wave`` covering [lo, hi] with one extra sample on each side."""
    i0 = max(int(np.searchsorted(wave, lo, side="right")) - 2, 0)
    i1 = min(int(np.searchsorted(wave, hi, side="left")) + 2, wave.size)
    if wave[i0] > lo or wave[i1 - 1] < hi:
        raise ValueError(f"SED wavelength grid {wave[0]:.0f}-{wave[-1]:.0f} A does not cover the rest-frame "
                         f"range {lo:.0f}-{hi:.0f} A needed by the filters and redshift range")
    return np.arange(i0, i1)


class SSPEngine:
    """Composite stellar populations from an :class:`SSPGrid` (the default engine).

    Continuum = sum_j w_j [(1 - f) L(Z_i, t_j) + f L(Z_i+1, t_j)] with SFH hat weights w (:mod:`.sfh`)
    and linear interpolation in log Z; ionising photons are absorbed by the gas (zero flux below
    911.75 A) and re-emitted as the grid's nebular continuum plus the lines of :mod:`.emission_lines`.
    """

    physical = True
    parameter_names = ("zred", "logzsol", "tau", "const", "sf_start", "tage", "dust2", "gas_logu")

    def __init__(self, grid: SSPGrid, wave_range: tuple[float, float], sfh: str = "tau",
                 lya_escape: float = 0.1, nebular: bool = True) -> None:
        idx = _crop_indices(grid.wavelength, *wave_range)
        self.rest_wave = grid.wavelength[idx]
        spec = grid.stellar[..., idx] + (grid.nebular[..., idx] if nebular else 0.0)
        if nebular:
            spec = np.where(self.rest_wave < LYMAN_LIMIT_AA, 0.0, spec)
        self._spectra = np.ascontiguousarray(spec * L_SUN_ERG_S)  # (n_z, n_age, n_wave) erg/s/A/Msun
        self._q = grid.ionising_photon_rate() if nebular else np.zeros(grid.stellar.shape[:2])
        self._age_gyr = grid.age_gyr
        self._logz = np.log10(grid.metallicity)
        self._logzsun = np.log10(grid.zsun)
        self.sfh, self.lya_escape, self.nebular = sfh, float(lya_escape), nebular
        self.line_wave = LINE_WAVELENGTHS if nebular else LINE_WAVELENGTHS[:0]

    def metallicity_weights(self, logzsol: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lower grid index (N,) and interpolation fraction (N,) in log Z, clipped to the grid."""
        logz = np.clip(self._logzsun + np.asarray(logzsol, dtype=float), self._logz[0], self._logz[-1])
        i = np.clip(np.searchsorted(self._logz, logz, side="right") - 1, 0, self._logz.size - 2)
        f = (logz - self._logz[i]) / (self._logz[i + 1] - self._logz[i])
        return i, f

    def composite(self, weights: np.ndarray, logzsol: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unattenuated continuum (N, n_wave) [erg/s/A] and Q(H) (N,) for SFH weights (N, n_age)."""
        i, f = self.metallicity_weights(logzsol)
        spec = np.empty((weights.shape[0], self.rest_wave.size))
        q = np.empty(weights.shape[0])
        for iz in np.unique(i):
            rows = np.nonzero(i == iz)[0]
            w, fr = weights[rows], f[rows, None]
            spec[rows] = (1.0 - fr) * (w @ self._spectra[iz]) + fr * (w @ self._spectra[iz + 1])
            q[rows] = (1.0 - fr[:, 0]) * (w @ self._q[iz]) + fr[:, 0] * (w @ self._q[iz + 1])
        return spec, q

    def rest_frame(self, params: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Attenuated continuum (N, n_wave) [erg/s/A per Msun formed] and lines (N, n_lines) [erg/s]."""
        w = sfh_weights(self._age_gyr, params["tage"], params["sf_start"], params["tau"],
                        params["const"], self.sfh)
        spec, q = self.composite(w, params["logzsol"])
        spec *= attenuate(self.rest_wave, params["dust2"])
        if not self.nebular:
            return spec, np.zeros((spec.shape[0], 0))
        lines = line_luminosities(q, params["logzsol"], params["gas_logu"], self.lya_escape)
        lines *= attenuate(self.line_wave, params["dust2"])
        return spec, lines


def template_dir() -> str:
    """pz-rail-base's SED template directory (``examples_data/estimation_data/data/SED``)."""
    from rail.utils.path_utils import find_rail_file

    return find_rail_file("examples_data/estimation_data/data/SED")


def template_files(template_set: str, template_list: list[str] | None = None) -> list[str]:
    """Template file paths: ``cosmos`` (31 COSMOS/LePhare templates, Ilbert et al. 2009),
    ``cww`` (CWW + Kinney starbursts, ``CWWSB4.list``) or ``custom`` (paths / names in the SED dir)."""
    sed_dir = template_dir()
    if template_set in ("cosmos", "cww"):
        listing = os.path.join(sed_dir, "COSMOS_seds.list" if template_set == "cosmos" else "CWWSB4.list")
        with open(listing, encoding="utf-8") as f:
            names = [line.split()[0] for line in f if line.strip() and not line.startswith("#")]
    elif template_set == "custom":
        names = list(template_list or [])
        if len(names) < 2:
            raise ValueError("Option 'template_set' = 'custom' needs at least two files in 'template_list'")
    else:
        raise ValueError(f"Option 'template_set' = {template_set!r} not in {TEMPLATE_SETS}")
    paths = []
    for name in names:
        for cand in (name, os.path.join(sed_dir, name), os.path.join(sed_dir, name + ".sed")):
            if os.path.isfile(cand):
                paths.append(cand)
                break
        else:
            raise FileNotFoundError(f"SED template {name!r} not found (as a path or in {sed_dir})")
    return paths


class TemplateEngine:
    """Interpolated empirical templates with Calzetti dust and emission lines (paper section 3.2.1).

    Templates (f_lambda, arbitrary units) are resampled to a common log-wavelength grid and normalised
    to unit mean f_lambda over 5000-6000 A; a continuous template coordinate ``template`` in
    [0, n_templates - 1] mixes the two neighbouring templates linearly. Lines: SFR from the
    template's UV luminosity (mean L_nu over 1500-2800 A) with Kennicutt (1998):
    L(H-alpha) = (1.4e-28 / 7.9e-42) L_nu(UV), converted to Q(H) = L(H-alpha) / 1.37e-12 erg and
    passed to :func:`.emission_lines.line_luminosities` with the drawn ``logzsol`` and ``gas_logu``.
    """

    physical = False
    parameter_names = ("zred", "template", "dust2", "logzsol", "gas_logu")

    def __init__(self, paths: list[str], wave_range: tuple[float, float], lya_escape: float = 0.1,
                 dlnwave: float = 0.002) -> None:
        lo, hi = wave_range
        n = int(np.ceil(np.log(hi / lo) / dlnwave)) + 3
        self.rest_wave = lo * np.exp(dlnwave * (np.arange(n) - 1))
        norm_wave = np.linspace(5000.0, 6000.0, 101)
        uv_wave = np.linspace(1500.0, 2800.0, 131)
        temps, uv = [], []
        for path in paths:
            data = np.loadtxt(path, comments="#")
            w, f = data[:, 0], np.clip(data[:, 1], 0.0, None)
            order = np.argsort(w)
            w, f = w[order], f[order]
            if w[0] > lo * 1.001 or w[-1] < hi * 0.999:
                raise ValueError(f"Template {path!r} covers {w[0]:.0f}-{w[-1]:.0f} A, which does not include "
                                 f"the required rest-frame range {lo:.0f}-{hi:.0f} A")
            scale = np.mean(np.interp(norm_wave, w, f))
            temps.append(np.interp(self.rest_wave, w, f) / scale)
            uv.append(np.mean(np.interp(uv_wave, w, f) / scale * uv_wave**2 / C_AA_PER_S))
        self.names = [os.path.basename(p) for p in paths]
        self._templates = np.array(temps)
        self._uv_lnu = np.array(uv)  # (n_t,) per unit normalised f_lambda
        self.lya_escape = float(lya_escape)
        self.line_wave = LINE_WAVELENGTHS

    @property
    def n_templates(self) -> int:
        return self._templates.shape[0]

    def rest_frame(self, params: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Attenuated continuum (N, n_wave) and lines (N, n_lines), arbitrary common units."""
        t = np.clip(np.asarray(params["template"], dtype=float), 0.0, self.n_templates - 1.0)
        i = np.clip(np.floor(t).astype(int), 0, self.n_templates - 2)
        f = (t - i)[:, None]
        spec = (1.0 - f) * self._templates[i] + f * self._templates[i + 1]
        uv = (1.0 - f[:, 0]) * self._uv_lnu[i] + f[:, 0] * self._uv_lnu[i + 1]
        q = (1.4e-28 / 7.9e-42) * uv / HALPHA_PER_PHOTON_ERG
        lines = line_luminosities(q, params["logzsol"], params["gas_logu"], self.lya_escape)
        spec *= attenuate(self.rest_wave, params["dust2"])
        lines *= attenuate(self.line_wave, params["dust2"])
        return spec, lines


def rebin_flux_conserving(wave_in: np.ndarray, spec_in: np.ndarray, wave_out: np.ndarray) -> np.ndarray:
    """Resample f_lambda (..., n_in) onto ``wave_out`` conserving the integral over each output cell."""
    edges = np.concatenate([[wave_out[0] - 0.5 * (wave_out[1] - wave_out[0])],
                            0.5 * (wave_out[1:] + wave_out[:-1]),
                            [wave_out[-1] + 0.5 * (wave_out[-1] - wave_out[-2])]])
    cum = np.concatenate([np.zeros(spec_in.shape[:-1] + (1,)),
                          np.cumsum(0.5 * (spec_in[..., 1:] + spec_in[..., :-1]) * np.diff(wave_in), axis=-1)],
                         axis=-1)
    at_edges = np.stack([np.interp(edges, wave_in, c) for c in cum.reshape(-1, cum.shape[-1])])
    return (np.diff(at_edges, axis=-1) / np.diff(edges)).reshape(spec_in.shape[:-1] + (wave_out.size,))


_WORKER: dict = {}


def _fsps_worker_init(sfh: str) -> None:
    from .fsps_support import check_sps_home

    check_sps_home(nebular=True)
    import fsps  # pylint: disable=import-outside-toplevel

    _WORKER["sp"] = fsps.StellarPopulation(
        zcontinuous=1, imf_type=1, sfh=1 if sfh == "tau" else 4, dust_type=2, add_neb_emission=True,
        add_neb_continuum=True, nebemlineinspec=True, add_igm_absorption=False, add_dust_emission=False)


def _fsps_worker_run(params: dict[str, np.ndarray], wave_out: np.ndarray) -> np.ndarray:
    sp = _WORKER["sp"]
    out = np.empty((params["zred"].size, wave_out.size))
    for n in range(params["zred"].size):
        sp.params["logzsol"] = float(params["logzsol"][n])
        sp.params["gas_logz"] = float(params["logzsol"][n])
        sp.params["gas_logu"] = float(np.clip(params["gas_logu"][n], *LOGU_RANGE))
        sp.params["tau"] = float(params["tau"][n])
        sp.params["const"] = float(params["const"][n])
        sp.params["sf_start"] = float(params["sf_start"][n])
        sp.params["dust2"] = float(params["dust2"][n])
        wave, spec = sp.get_spectrum(tage=float(params["tage"][n]), peraa=True)
        out[n] = rebin_flux_conserving(np.asarray(wave), np.asarray(spec)[None, :], wave_out)[0]
    return out * L_SUN_ERG_S


class FSPSEngine:
    """python-fsps ``StellarPopulation`` (one per worker process, reused for all its galaxies).

    FSPS computes continuum, dust and nebular lines; the rest-frame spectrum is rebinned
    (flux-conserving) onto a log grid of step ``dlnwave`` and passed to the common photometry code
    (this package's filters, IGM and cosmology, not FSPS's built-in ones).
    """

    physical = True
    parameter_names = SSPEngine.parameter_names

    def __init__(self, wave_range: tuple[float, float], sfh: str = "tau", n_processes: int = 1,
                 dlnwave: float = 0.001) -> None:
        from .fsps_support import check_sps_home

        check_sps_home(nebular=True)
        lo, hi = wave_range
        n = int(np.ceil(np.log(hi / lo) / dlnwave)) + 3
        self.rest_wave = lo * np.exp(dlnwave * (np.arange(n) - 1))
        self.line_wave = LINE_WAVELENGTHS[:0]
        self.sfh, self.n_processes = sfh, max(int(n_processes), 1)
        self._pool: ProcessPoolExecutor | None = None

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            import multiprocessing  # pylint: disable=import-outside-toplevel

            self._pool = ProcessPoolExecutor(self.n_processes, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_fsps_worker_init, initargs=(self.sfh,))
        return self._pool

    def close(self) -> None:
        """Shut the worker processes down."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def rest_frame(self, params: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """FSPS continuum + lines (N, n_wave) [erg/s/A per Msun formed]; no separate lines."""
        n = params["zred"].size
        splits = np.array_split(np.arange(n), min(n, 4 * self.n_processes))
        pool = self._get_pool()
        try:
            futures = [pool.submit(_fsps_worker_run, {k: v[s] for k, v in params.items()}, self.rest_wave)
                       for s in splits if s.size]
            spec = np.concatenate([f.result() for f in futures])
        except BrokenProcessPool as err:
            self.close()
            raise RuntimeError("An FSPS worker process exited (FSPS stops the process when a data file is "
                               "missing under SPS_HOME; check the FSPS data installation)") from err
        return spec, np.zeros((n, 0))
