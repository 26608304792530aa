"""Galaxy simulations for Deepz pretraining (Eriksen et al. 2020, section 3.2).

Modules: :mod:`.priors` (Table 1 draws), :mod:`.sfh` (SFH weights), :mod:`.ssp_grid` (PopStar / FSPS
grids), :mod:`.dust`, :mod:`.emission_lines`, :mod:`.igm`, :mod:`.filters`, :mod:`.photometry`,
:mod:`.noise`, :mod:`.exposures` (the column layout is :mod:`rail.deepz.inputs`'s), :mod:`.normalisation`, :mod:`.engines`, :mod:`.options` (the option schema), :mod:`.catalogue`.
The RAIL stage is :class:`rail.creation.engines.deepz_sims.DeepzSimCreator`.
"""

from .catalogue import simulate_catalogue
from .options import OPTIONS, SimulationOptionError, default_options, validate_options
from .exposures import random_keep_mask, simulate_exposures
from .ssp_grid import SSPGrid, export_fsps_grid, load_popstar, load_ssp_grid, save_ssp_grid

__all__ = [
    "OPTIONS", "SimulationOptionError", "default_options", "simulate_catalogue", "validate_options", "random_keep_mask",
    "simulate_exposures",
    "SSPGrid", "export_fsps_grid", "load_popstar", "load_ssp_grid", "save_ssp_grid",
]
