"""Checks that python-fsps can run: FSPS terminates the Python process (exit status 0) on missing data."""

from __future__ import annotations

import os
from pathlib import Path

FSPS_INSTALL_HELP = (
    "python-fsps needs the FSPS data tree, which is not distributed on PyPI. Install it with\n"
    "    git clone https://github.com/cconroy20/fsps.git /path/to/fsps\n"
    "    export SPS_HOME=/path/to/fsps\n"
    "(the default python-fsps wheel uses the MIST isochrones and C3K_LR spectra found there), or use "
    "engine='ssp', which needs no external data."
)


def check_sps_home(nebular: bool = True) -> Path:
    """Return ``$SPS_HOME`` after checking that the files python-fsps reads at start-up exist.

    Raises
    ------
    RuntimeError
        If ``SPS_HOME`` is unset, or a required file/folder is missing, with installation instructions.
    """
    home = os.environ.get("SPS_HOME", "")
    if not home:
        raise RuntimeError("engine='fsps' needs the environment variable SPS_HOME. " + FSPS_INSTALL_HELP)
    root = Path(home)
    required = [root / "data" / "emlines_info.dat", root / "data" / "allfilters.dat"]
    folders = [root / "ISOCHRONES", root / "SPECTRA", root / "dust"]
    if nebular:
        folders.append(root / "nebular")
    missing = [str(p) for p in required if not p.is_file()]
    missing += [str(p) for p in folders if not (p.is_dir() and any(p.iterdir()))]
    if missing:
        raise RuntimeError(
            f"SPS_HOME={home!r} is incomplete: missing {missing}. FSPS would silently end the Python "
            "process on this. " + FSPS_INSTALL_HELP
        )
    return root
