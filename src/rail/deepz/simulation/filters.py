"""Filter transmission curves: named sets (LSST DC2, PAUS-like narrow bands) and user files."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

FILTER_SETS = ("lsst", "paus", "paus_lsst", "custom")
LSST_BANDS = ("u", "g", "r", "i", "z", "y")
PAUS_CENTRES_AA = np.arange(4550.0, 8500.0, 100.0)  # 40 bands, 4500-8500 A, 100 A spacing
PAUS_FWHM_AA = 130.0
_NARROW_FWHM_AA = 300.0


@dataclass
class FilterSet:
    """Transmission curves. ``names[i]`` has curve ``(wave[i] [Angstrom], trans[i])``; ``survey[i]``
    is the suffix used for generated column names (``mag_{name}_{survey}``)."""

    names: list[str]
    wave: list[np.ndarray]
    trans: list[np.ndarray]
    survey: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def wave_range(self) -> tuple[float, float]:
        """Smallest and largest wavelength [Angstrom] with non-zero transmission over all bands."""
        lo = min(w[t > 0].min() for w, t in zip(self.wave, self.trans))
        hi = max(w[t > 0].max() for w, t in zip(self.wave, self.trans))
        return float(lo), float(hi)

    def fwhm(self) -> np.ndarray:
        """Full width at half maximum [Angstrom] per band, shape (n_bands,)."""
        out = []
        for w, t in zip(self.wave, self.trans):
            above = w[t >= 0.5 * t.max()]
            out.append(above.max() - above.min())
        return np.array(out)

    def is_narrow(self) -> np.ndarray:
        """True for bands with FWHM below 300 Angstrom, shape (n_bands,)."""
        return self.fwhm() < _NARROW_FWHM_AA


def rail_filter_dir() -> str:
    """pz-rail-base's FILTER directory (``examples_data/estimation_data/data/FILTER``)."""
    from rail.utils.path_utils import find_rail_file

    return find_rail_file("examples_data/estimation_data/data/FILTER")


def read_filter_file(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Read a two-column text curve (wavelength [Angstrom], transmission), trimmed to its support."""
    data = np.loadtxt(path, comments="#")
    if data.ndim != 2 or data.shape[1] < 2:
        raise ValueError(f"Filter file {path!r} must have two columns: wavelength [A], transmission")
    order = np.argsort(data[:, 0])
    wave, trans = data[order, 0], np.clip(data[order, 1], 0.0, None)
    wave, idx = np.unique(wave, return_index=True)
    trans = trans[idx]
    nz = np.nonzero(trans > 0)[0]
    if nz.size == 0:
        raise ValueError(f"Filter file {path!r} has no positive transmission")
    lo, hi = max(nz[0] - 1, 0), min(nz[-1] + 2, wave.size)
    return wave[lo:hi], trans[lo:hi]


def resolve_filter(name: str) -> str:
    """Path of a filter given as a file path or a name in pz-rail-base's FILTER dir (``"DC2LSST_u"``)."""
    if os.path.isfile(name):
        return name
    for candidate in (name, name + ".res"):
        path = os.path.join(rail_filter_dir(), candidate)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"Filter {name!r} is neither a file nor a curve in {rail_filter_dir()} "
        f"(available: {sorted(f[:-4] for f in os.listdir(rail_filter_dir()) if f.endswith('.res'))})"
    )


def lsst_filters() -> FilterSet:
    """The DC2 LSST u, g, r, i, z, y total-throughput curves shipped with pz-rail-base."""
    curves = [read_filter_file(resolve_filter(f"DC2LSST_{b}")) for b in LSST_BANDS]
    return FilterSet(list(LSST_BANDS), [c[0] for c in curves], [c[1] for c in curves], ["lsst"] * 6)


def paus_filters(fwhm_aa: float = PAUS_FWHM_AA) -> FilterSet:
    """40 PAUS-like narrow bands: super-Gaussian (order 6) curves, centres 4550-8450 A, FWHM 130 A.

    Named ``NB455`` ... ``NB845`` (centre in nm). A flat-topped shape approximates the PAUCam
    interference filters (Padilla et al. 2019, Casas et al. 2016); transmission peaks at 1.
    """
    names, waves, trans = [], [], []
    for c in PAUS_CENTRES_AA:
        w = np.arange(c - 1.5 * fwhm_aa, c + 1.5 * fwhm_aa + 0.1, 1.0)
        names.append(f"NB{int(round(c / 10))}")
        waves.append(w)
        trans.append(np.exp(-np.log(2.0) * np.abs(2.0 * (w - c) / fwhm_aa) ** 6))
    return FilterSet(names, waves, trans, ["paus"] * len(names))


def custom_filters(filter_list: list[str]) -> FilterSet:
    """Curves from file paths or pz-rail-base FILTER names; band names are the file stems."""
    paths = [resolve_filter(f) for f in filter_list]
    curves = [read_filter_file(p) for p in paths]
    names = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    return FilterSet(names, [c[0] for c in curves], [c[1] for c in curves], [""] * len(names))


def get_filter_set(filter_set: str, filter_list: list[str] | None = None) -> FilterSet:
    """Build the filter set named by the ``filter_set`` option (``custom`` uses ``filter_list``)."""
    if filter_set == "lsst":
        return lsst_filters()
    if filter_set == "paus":
        return paus_filters()
    if filter_set == "paus_lsst":
        paus, lsst = paus_filters(), lsst_filters()
        return FilterSet(paus.names + lsst.names, paus.wave + lsst.wave, paus.trans + lsst.trans,
                         paus.survey + lsst.survey)
    if filter_set == "custom":
        if not filter_list:
            raise ValueError("Option 'filter_set' = 'custom' needs a non-empty 'filter_list'")
        return custom_filters(list(filter_list))
    raise ValueError(f"Option 'filter_set' = {filter_set!r} not in {FILTER_SETS}")


def default_column_names(filters: FilterSet) -> tuple[list[str], list[str]]:
    """RAIL-style magnitude and error column names: ``mag_{band}_{survey}``, ``mag_err_{band}_{survey}``."""
    mags, errs = [], []
    for name, survey in zip(filters.names, filters.survey):
        suffix = f"_{survey}" if survey else ""
        mags.append(f"mag_{name}{suffix}")
        errs.append(f"mag_err_{name}{suffix}")
    return mags, errs
