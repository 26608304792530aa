"""The target's error-vs-magnitude relation, and simulations that carry the target's noise."""

import json

import numpy as np
import pandas as pd
import pytest
import tables_io
from rail.utils.path_utils import find_rail_file

from rail.core.data import TableHandle
from rail.creation.engines.deepz_sims import DeepzSimCreator
from rail.deepz.error_relation import ErrorRelation
from rail.deepz.inputs import STATUS_OK, Photometry
from rail.deepz.simulation import SimulationOptionError, default_options, simulate_catalogue
from rail.deepz.simulation.noise import LSST_10YR_DEPTHS, depth_flux_errors, fluxes_to_mags
from rail.deepz.simulation.retarget import with_error_relation

BANDS = [f"mag_{b}_lsst" for b in "ugrizy"]
ERR_BANDS = [f"mag_err_{b}_lsst" for b in "ugrizy"]
DC2_TRAIN = "examples_data/testdata/test_dc2_training_9816.hdf5"
DEPTHS = np.array([LSST_10YR_DEPTHS[b] for b in "ugrizy"])
GAMMAS = np.full(6, 0.039)


def _mag(flux):
    return 31.4 - 2.5 * np.log10(flux)


@pytest.fixture(scope="module")
def depth_law():
    """20,000 galaxies uniform in magnitude 18-28 with noise from the LSST depth law: (true, measured, errors)."""
    rng = np.random.default_rng(3)
    true = 10.0 ** (-0.4 * (rng.uniform(18.0, 28.0, (20_000, 6)) - 31.4))
    err = depth_flux_errors(true, DEPTHS, GAMMAS, 0.005)
    return true, true + err * rng.standard_normal(true.shape), err


@pytest.fixture(scope="module")
def dc2_path():
    return find_rail_file(DC2_TRAIN)


@pytest.fixture(scope="module")
def dc2(dc2_path):
    return tables_io.read(dc2_path)["photometry"]


@pytest.fixture(scope="module")
def sims():
    """500 default simulated galaxies (one ssp block, in this process)."""
    return simulate_catalogue(500, 4, {**default_options(), "n_jobs": 1})


def _sample(name, n=300, seed=5, **kwargs):
    opts = {k: kwargs.pop(k) for k in list(kwargs) if k != "target"}
    stage = DeepzSimCreator.make_stage(name=name, n_samples=n, output_mode="return", n_jobs=1, **opts)
    out = stage.sample(n, seed, **kwargs)()
    return out.get("photometry", out)  # flat with hdf5_groupname=""


def test_fit_recovers_a_known_error_law(depth_law):
    true, measured, err = depth_law
    phot = Photometry(measured, err, np.full(measured.shape, STATUS_OK, dtype=np.int8))
    relation = ErrorRelation.fit(phot, BANDS)
    # where the galaxies are well measured (S/N > 10) the measured and true magnitudes agree
    pred = relation.flux_errors(true)
    good = (true / err > 10) & (_mag(true) > 18.5)
    assert np.all(np.abs(pred[good] / err[good] - 1) < 0.04)
    # beyond the populated range: the error of the brightest / faintest bin
    extremes = 10.0 ** (-0.4 * (np.array([[10.0] * 6, [40.0] * 6, [np.inf] * 6]) - 31.4))
    extremes[2] = 0.0
    out = relation.flux_errors(np.vstack([extremes, np.full((1, 6), -5.0), np.full((1, 6), np.nan)]))
    np.testing.assert_allclose(out[0], 10 ** relation.log_flux_err[:, 0])
    for row in out[1:]:
        np.testing.assert_allclose(row, 10 ** relation.log_flux_err[:, -1])


def test_fit_from_a_magnitude_table_with_non_detections(depth_law):
    true, measured, err = depth_law
    mags, mag_errs = fluxes_to_mags(measured, err)
    assert np.any(mags == 99.0)
    table = {**dict(zip(BANDS, mags.T)), **dict(zip(ERR_BANDS, mag_errs.T))}
    relation = ErrorRelation.from_table(table, BANDS, ERR_BANDS, dict.fromkeys(BANDS, 30.0))
    good = (true / err > 10) & (_mag(true) > 18.5)
    assert np.all(np.abs(relation.flux_errors(true)[good] / err[good] - 1) < 0.04)
    assert relation.bands == BANDS and relation.log_flux_err.shape == (6, relation.mag_grid.size)
    assert np.allclose(np.diff(relation.mag_grid), 0.25)


def test_empty_bins_are_interpolated():
    # two populated bins (centres 20.125 and 24.125), nothing between them: linear in log error
    flux = 10.0 ** (-0.4 * (np.repeat([20.125, 24.125], 50) - 31.4))[:, None]
    err = np.repeat([10.0, 1000.0], 50)[:, None]
    relation = ErrorRelation.fit(Photometry(flux, err, np.zeros(flux.shape, np.int8)), ["mag_i"])
    mid = relation.flux_errors(10.0 ** (-0.4 * (np.array([[22.125]]) - 31.4)))[0, 0]
    assert mid == pytest.approx(100.0, rel=1e-9)


def test_dict_round_trip(depth_law):
    true, measured, err = depth_law
    relation = ErrorRelation.fit(Photometry(measured, err, np.zeros(measured.shape, np.int8)), BANDS, 0.5, 10)
    back = ErrorRelation.from_dict(json.loads(json.dumps(relation.to_dict())))
    np.testing.assert_array_equal(back.flux_errors(true), relation.flux_errors(true))
    with pytest.raises(KeyError, match="log_flux_err"):
        ErrorRelation.from_dict({"mag_grid": [20.0], "bands": ["mag_i"]})


def test_band_without_detections_is_an_error_naming_it(dc2):
    table = {k: np.array(v) for k, v in dc2.items()}
    table["mag_y_lsst"] = np.full(len(table["mag_y_lsst"]), 99.0)
    with pytest.raises(ValueError, match="mag_y_lsst"):
        ErrorRelation.from_table(table, BANDS, ERR_BANDS, dict.fromkeys(BANDS, 30.0))
    # detections too few for any bin: also named
    table["mag_y_lsst"][:5] = 22.0
    with pytest.raises(ValueError, match="band column 'mag_y_lsst'.*min_count=20"):
        ErrorRelation.from_table(table, BANDS, ERR_BANDS, dict.fromkeys(BANDS, 30.0))


def test_dc2_relation_on_a_simulation_matches_the_dc2_errors(dc2, sims):
    relation = ErrorRelation.from_table(dc2, BANDS, ERR_BANDS, dict.fromkeys(BANDS, 30.0))
    out = with_error_relation(sims, relation, BANDS, ERR_BANDS, seed=1)
    compared = 0
    for band, err_band in zip(BANDS, ERR_BANDS):
        key = band[4:]
        sim_mag, sim_err = out[band], out[f"flux_err_{key}"]
        dc2_mag = np.asarray(dc2[band])
        dc2_flux = 10.0 ** (-0.4 * (dc2_mag - 31.4))
        dc2_err = dc2_flux * np.asarray(dc2[err_band]) / 1.0857362047581294
        edges = np.arange(16.0, 30.0, 0.5)
        for lo, hi in zip(edges[:-1], edges[1:]):
            in_sim = (sim_mag >= lo) & (sim_mag < hi)
            in_dc2 = (dc2_mag >= lo) & (dc2_mag < hi)
            if in_sim.sum() >= 20 and in_dc2.sum() >= 20:
                ratio = np.median(sim_err[in_sim]) / np.median(dc2_err[in_dc2])
                assert abs(ratio - 1) < 0.2, (band, lo, ratio)
                compared += 1
    assert compared >= 30  # most bands have several populated bins


def test_with_error_relation_is_seeded_and_leaves_the_input(sims, depth_law):
    _, measured, err = depth_law
    relation = ErrorRelation.fit(Photometry(measured, err, np.zeros(measured.shape, np.int8)), BANDS)
    before = {k: np.array(v) for k, v in sims.items()}
    a = with_error_relation(sims, relation, BANDS, ERR_BANDS, seed=3)
    b = with_error_relation(sims, relation, BANDS, ERR_BANDS, seed=3)
    c = with_error_relation(sims, relation, BANDS, ERR_BANDS, seed=4)
    assert a.keys() == b.keys() == sims.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
        np.testing.assert_array_equal(sims[key], before[key])
    assert not np.array_equal(a["flux_r_lsst"], c["flux_r_lsst"])
    np.testing.assert_array_equal(a["redshift"], sims["redshift"])
    np.testing.assert_array_equal(a["flux_err_r_lsst"], relation.flux_errors(
        np.stack([sims[f"flux_true_{b}_lsst"] for b in "ugrizy"], axis=1))[:, 2])
    # RAIL's conventions: detected magnitudes from the new fluxes, non-detections at 99
    det = a["mag_u_lsst"] < 90
    np.testing.assert_allclose(a["mag_u_lsst"][det], 31.4 - 2.5 * np.log10(a["flux_u_lsst"][det]))
    np.testing.assert_array_equal(~det, a["flux_u_lsst"] < a["flux_err_u_lsst"])


def test_with_error_relation_drops_exposures_and_needs_true_fluxes(depth_law):
    _, measured, err = depth_law
    relation = ErrorRelation.fit(Photometry(measured, err, np.zeros(measured.shape, np.int8)), BANDS)
    table = simulate_catalogue(50, 2, {**default_options(), "n_jobs": 1, "exposures": True})
    assert "flux_g_lsst_exp0" in table and "n_exp_g_lsst" in table
    out = with_error_relation(table, relation, BANDS, ERR_BANDS, seed=1)
    assert not any("_exp" in name for name in out), sorted(out)
    del table["flux_true_r_lsst"]
    with pytest.raises(KeyError, match="flux_true_r_lsst"):
        with_error_relation(table, relation, BANDS, ERR_BANDS, seed=1)
    with pytest.raises(ValueError, match="bands"):
        with_error_relation(table, relation, BANDS[::-1], ERR_BANDS[::-1], seed=1)


def test_target_noise_through_the_creator(dc2_path, dc2):
    nested = tables_io.read(dc2_path)  # {"photometry": columns}: unwrapped by hdf5_groupname
    cat = _sample("sims_target", noise_model="target", target=nested)
    relation = ErrorRelation.from_table(dc2, BANDS, ERR_BANDS, dict.fromkeys(BANDS, 30.0))
    true = np.stack([cat[f"flux_true_{b}_lsst"] for b in "ugrizy"], axis=1)
    np.testing.assert_allclose(np.stack([cat[f"flux_err_{b}_lsst"] for b in "ugrizy"], axis=1),
                               relation.flux_errors(true))
    # same seed and target: same catalogue, whichever form the table comes in; the file option too
    for name, kwargs in (("sims_target_handle", dict(target=TableHandle("target", data=nested))),
                         ("sims_target_df", dict(target=pd.DataFrame({k: np.asarray(v) for k, v in dc2.items()}))),
                         ("sims_target_flat", dict(target=dc2)),
                         ("sims_target_file", dict(noise_reference_file=dc2_path))):
        other = _sample(name, noise_model="target", **kwargs)
        for key in cat:
            np.testing.assert_array_equal(cat[key], other[key], err_msg=f"{name}: {key}")
    # the stage does not keep the table: a later run without it needs the file option
    with pytest.raises(SimulationOptionError, match="option 'noise_reference_file'"):
        _sample("sims_target_none", noise_model="target")


def test_target_options_are_checked_before_work(tmp_path):
    # the target may come with sample(): building the stage is fine, running without it is not
    stage = DeepzSimCreator.make_stage(name="sims_t_missing", n_samples=10, noise_model="target",
                                       output_mode="return")
    with pytest.raises(SimulationOptionError, match="option 'noise_reference_file'.*target"):
        stage.sample(10, 1)
    with pytest.raises(SimulationOptionError, match="option 'noise_reference_file'"):
        DeepzSimCreator.make_stage(name="sims_t_nofile", n_samples=10, noise_model="target",
                                   noise_reference_file=str(tmp_path / "nope.hdf5"))
    with pytest.raises(SimulationOptionError, match="option 'mag_reference_file'"):
        simulate_catalogue(10, 1, {**default_options(), "mag_distribution": "histogram"})
    with pytest.raises(KeyError, match="target.*mag_err_z_lsst"):
        simulate_catalogue(10, 1, {**default_options(), "noise_model": "target"},
                           target={b: np.full(100, 22.0) for b in BANDS + ERR_BANDS[:4]})


def test_histogram_magnitudes_from_the_target(dc2):
    # a target of 20 < i < 21.5 only: every simulated galaxy must take one of its magnitudes
    i_mag = np.asarray(dc2["mag_i_lsst"])
    target = {k: np.asarray(v)[(i_mag > 20.0) & (i_mag < 21.5)] for k, v in dc2.items()}
    cat = _sample("sims_hist", n=500, mag_distribution="histogram", target=target, hdf5_groupname="")
    sim_i, ref = _mag(cat["flux_true_i_lsst"]), target["mag_i_lsst"]
    assert sim_i.min() >= ref.min() - 1e-6 and sim_i.max() <= ref.max() + 1e-6
    for q in (0.1, 0.5, 0.9):
        assert np.quantile(sim_i, q) == pytest.approx(np.quantile(ref, q), abs=0.1)
    # noise and magnitudes from the one table, as for a user with only the target in hand
    both = _sample("sims_hist_noise", n=500, mag_distribution="histogram", noise_model="target", target=target)
    np.testing.assert_array_equal(both["flux_true_i_lsst"], cat["flux_true_i_lsst"])
