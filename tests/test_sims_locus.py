"""The default engine covers the colour-redshift locus of the DC2 training galaxies.

Criterion: for DC2 galaxies with i < 23.5 detected in all six bands, the nearest simulated galaxy
at nearly the same redshift (|Delta ln(1+z)| < 0.05 + 0.05/(1+z)) lies within a small distance in
the 5-colour space (u-g, g-r, r-i, i-z, z-y). A control with the simulated redshifts shuffled (a
broken redshift-colour relation) must do clearly worse, so the criterion is sensitive.
"""

import numpy as np
import pytest
import tables_io
from scipy.spatial import cKDTree

from rail.deepz.simulation import default_options, simulate_catalogue
from rail.utils.path_utils import find_rail_file

BANDS = "ugrizy"


def _colours(table):
    mags = np.stack([table[f"mag_{b}_lsst"] for b in BANDS], axis=1)
    return mags[:, :-1] - mags[:, 1:]


def _nearest_distances(sim_colours, sim_z, data_colours, data_z):
    dist = np.full(data_z.size, np.inf)
    for z0 in np.arange(0.0, 3.0, 0.1):
        query = (data_z >= z0) & (data_z < z0 + 0.1)
        if not query.any():
            continue
        window = np.abs(np.log1p(sim_z) - np.log1p(z0 + 0.05)) < 0.05 + 0.05 / (1 + z0)
        dist[query] = cKDTree(sim_colours[window]).query(data_colours[query])[0]
    return dist


@pytest.fixture(scope="module")
def distances():
    opts = default_options()
    opts.update(noise_model="none")
    sims = simulate_catalogue(30000, 2024, opts)
    data = tables_io.read(find_rail_file("examples_data/testdata/test_dc2_training_9816.hdf5"))["photometry"]
    mags = np.stack([data[f"mag_{b}_lsst"] for b in BANDS], axis=1)
    sel = np.all(mags < 90, axis=1) & (data["mag_i_lsst"] < 23.5)
    data_colours, data_z = _colours(data)[sel], data["redshift"][sel]
    sim_colours, sim_z = _colours(sims), sims["redshift"]
    good = _nearest_distances(sim_colours, sim_z, data_colours, data_z)
    shuffled = _nearest_distances(sim_colours, np.random.default_rng(0).permutation(sim_z), data_colours, data_z)
    return good, shuffled, data_z


def test_simulations_cover_dc2_colour_redshift_locus(distances):
    good, shuffled, data_z = distances
    assert data_z.size > 2000
    assert np.median(good) < 0.14
    assert np.mean(good < 0.3) > 0.85
    for lo, hi in ((0.0, 0.5), (0.5, 1.0), (1.0, 2.0)):
        in_bin = (data_z >= lo) & (data_z < hi)
        assert np.median(good[in_bin]) < 0.16, (lo, hi)


def test_coverage_criterion_detects_a_broken_redshift_colour_relation(distances):
    good, shuffled, _ = distances
    assert np.median(shuffled) > 1.25 * np.median(good)
    assert np.mean(shuffled < 0.3) < np.mean(good < 0.3) - 0.08
