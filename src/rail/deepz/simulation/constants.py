"""Physical constants and unit conversions used by the simulation (CGS + Angstrom)."""

# one definition, the catalogues' (m_AB = 31.4 - 2.5 log10(f / nJy)), re-exported for the simulation modules
from ..inputs import AB_ZEROPOINT_NJY  # noqa: F401

C_AA_PER_S = 2.99792458e18  # speed of light [Angstrom / s]
H_ERG_S = 6.62607015e-27  # Planck constant [erg s]
L_SUN_ERG_S = 3.828e33  # nominal solar luminosity (IAU 2015 B3) [erg / s]
MPC_CM = 3.0856775814913673e24  # one megaparsec [cm]
LYMAN_LIMIT_AA = 911.75  # hydrogen ionisation edge [Angstrom]
NJY_PER_CGS = 1.0e32  # 1 erg s^-1 cm^-2 Hz^-1 = 1e23 Jy = 1e32 nJy
MAG_ERR_FACTOR = 1.0857362047581294  # 2.5 / ln(10): sigma_mag = factor * sigma_f / f
