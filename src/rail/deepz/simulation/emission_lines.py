"""Nebular emission-line luminosities from the ionising photon rate Q(H), metallicity and U.

All lines are scaled to H-beta, which is set by case-B recombination of every ionising photon
(ionisation-bounded nebula, no escape, no dust inside the HII region):

* L(H-alpha) = 1.37e-12 erg x Q(H) (case B, T = 1e4 K; Kennicutt 1998, ARA&A 36, 189, eqs. 2 and
  the Q-SFR relation of Leitherer & Heckman 1995), and H-alpha / H-beta = 2.86.
* Other H lines relative to H-beta, case B, T = 1e4 K, n_e = 1e2 cm^-3 (Hummer & Storey 1987;
  Osterbrock & Ferland 2006, Table 4.4): H-gamma 0.468, H-delta 0.259, H-epsilon 0.159,
  Pa-alpha 0.332, Pa-beta 0.162, Pa-gamma 0.090.
* Ly-alpha / H-alpha = 8.7 (case B, Brocklehurst 1971; as adopted e.g. by Hayes 2015, PASA 32, e027),
  multiplied by the escape fraction ``lya_escape`` (resonant scattering and dust destroy most Ly-alpha
  photons: Hayes et al. 2011, ApJ 730, 8 find ~5 per cent globally at z ~ 2).
* Oxygen: total R23 = ([OII]3727 + [OIII]4959 + [OIII]5007) / H-beta as a function of
  12 + log(O/H) = 8.69 + logzsol (Asplund et al. 2009 solar oxygen) from the calibration of
  Maiolino et al. (2008, A&A 488, 463): log R23 = 0.7462 - 0.7149 x - 0.9401 x^2 - 0.6154 x^3
  - 0.2524 x^4, x = 12 + log(O/H) - 8.69. It is split between [OII] and [OIII] with the ionisation
  parameter through O32 = [OIII]5007/[OII]3727 from Diaz et al. (2000, MNRAS 318, 462):
  log U = -0.80 log([OII]/[OIII]) - 3.02, i.e. log O32 = (log U + 3.02) / 0.80, clipped to +-1.5 dex.
  [OIII]4959 = [OIII]5007 / 2.98 (transition probabilities, Storey & Zeippen 2000, MNRAS 312, 813).
* [NII]6584 / H-alpha from the N2 calibration of Pettini & Pagel (2004, MNRAS 348, L59):
  12 + log(O/H) = 8.90 + 0.57 N2, clipped to their validity range -2.5 < N2 < -0.3;
  [NII]6548 = [NII]6584 / 3.0 (Storey & Zeippen 2000).
* [SII]6717 + 6731 = 0.25 H-alpha, the typical log([SII]/H-alpha) ~ -0.6 of SDSS star-forming
  galaxies (Kewley et al. 2006, MNRAS 372, 961), split 1.4 : 1 (low-density limit, Osterbrock &
  Ferland 2006).

``gas_logu`` is clipped to [-4, -1], the range of the FSPS/Cloudy nebular grid (Byler et al. 2017).
Wavelengths are in vacuum [Angstrom]; [OII]3726,3729 is one blended line at 3728.5 A.
"""

from __future__ import annotations

import numpy as np

HALPHA_PER_PHOTON_ERG = 1.37e-12
HALPHA_HBETA = 2.86
LYA_HALPHA = 8.7
SOLAR_OH = 8.69
LOGU_RANGE = (-4.0, -1.0)

LINE_NAMES = ("Lya", "OII3728", "Heps", "Hdelta", "Hgamma", "Hbeta", "OIII4960", "OIII5008",
              "NII6550", "Halpha", "NII6585", "SII6718", "SII6733", "Pagamma", "Pabeta", "Paalpha")
LINE_WAVELENGTHS = np.array([1215.67, 3728.48, 3971.20, 4102.89, 4341.69, 4862.68, 4960.30, 5008.24,
                             6549.86, 6564.61, 6585.27, 6718.29, 6732.67, 10941.09, 12821.59, 18756.13])


def _index(name: str) -> int:
    return LINE_NAMES.index(name)


def oxygen_ratios(logzsol: np.ndarray, gas_logu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """([OII]3727 / H-beta, [OIII]5007 / H-beta), each shape (N,)."""
    x = np.asarray(logzsol, dtype=float)
    log_r23 = 0.7462 - 0.7149 * x - 0.9401 * x**2 - 0.6154 * x**3 - 0.2524 * x**4
    logu = np.clip(np.asarray(gas_logu, dtype=float), *LOGU_RANGE)
    o32 = 10.0 ** np.clip((logu + 3.02) / 0.80, -1.5, 1.5)
    r23 = 10.0**log_r23
    oiii = r23 / (1.0 + 1.0 / 2.98 + 1.0 / o32)
    return oiii / o32, oiii


def nii_halpha(logzsol: np.ndarray) -> np.ndarray:
    """[NII]6584 / H-alpha from Pettini & Pagel (2004) N2, shape (N,)."""
    n2 = (SOLAR_OH + np.asarray(logzsol, dtype=float) - 8.90) / 0.57
    return 10.0 ** np.clip(n2, -2.5, -0.3)


def line_luminosities(q_ion: np.ndarray, logzsol: np.ndarray, gas_logu: np.ndarray,
                      lya_escape: float = 0.1) -> np.ndarray:
    """Line luminosities [erg/s], shape (N, n_lines) in the order of ``LINE_NAMES``.

    Parameters
    ----------
    q_ion : (N,) ionising photon rate [photons / s].
    logzsol : (N,) gas metallicity log10(Z / Z_sun) (``gas_logz = logzsol``).
    gas_logu : (N,) log ionisation parameter.
    lya_escape : fraction of case-B Ly-alpha that escapes the galaxy.
    """
    q = np.asarray(q_ion, dtype=float)
    halpha = HALPHA_PER_PHOTON_ERG * q
    hbeta = halpha / HALPHA_HBETA
    out = np.zeros((q.size, len(LINE_NAMES)))
    for name, ratio in (("Heps", 0.159), ("Hdelta", 0.259), ("Hgamma", 0.468), ("Hbeta", 1.0),
                        ("Pagamma", 0.090), ("Pabeta", 0.162), ("Paalpha", 0.332)):
        out[:, _index(name)] = ratio * hbeta
    out[:, _index("Halpha")] = halpha
    out[:, _index("Lya")] = LYA_HALPHA * lya_escape * halpha
    oii, oiii = oxygen_ratios(logzsol, gas_logu)
    out[:, _index("OII3728")] = oii * hbeta
    out[:, _index("OIII5008")] = oiii * hbeta
    out[:, _index("OIII4960")] = oiii * hbeta / 2.98
    nii = nii_halpha(logzsol) * halpha
    out[:, _index("NII6585")] = nii
    out[:, _index("NII6550")] = nii / 3.0
    out[:, _index("SII6718")] = 0.25 * halpha * 1.4 / 2.4
    out[:, _index("SII6733")] = 0.25 * halpha * 1.0 / 2.4
    return out
