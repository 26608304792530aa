"""DeepzSimCreator as a RAIL stage: options, seeds, output layout, engines, noise conventions."""

import os

import numpy as np
import pytest
import tables_io

from rail.creation.engines.deepz_sims import DeepzSimCreator
from rail.deepz.simulation import SimulationOptionError
from rail.deepz.simulation.fsps_support import check_sps_home
from rail.utils.testing_utils import check_stage_params

BANDS = [f"mag_{b}_lsst" for b in "ugrizy"]


def _sample(name, n=300, seed=5, **opts):
    stage = DeepzSimCreator.make_stage(name=name, n_samples=n, output_mode="return", **opts)
    return stage.sample(n, seed)()["photometry"]


def test_stage_params_and_attributes():
    assert check_stage_params(DeepzSimCreator) is None
    assert DeepzSimCreator.name == "DeepzSimCreator"
    assert DeepzSimCreator.interactive_function == "deepz_sim_creator"
    assert DeepzSimCreator.entrypoint_function == "sample"


def test_default_catalogue_columns_and_ranges():
    cat = _sample("sims_default", n=400)
    for col in BANDS + [b.replace("mag_", "mag_err_") for b in BANDS] + ["redshift", "id", "logzsol", "tau",
                                                                           "const", "sf_start", "tage",
                                                                           "dust2", "gas_logu",
                                                                           "log_mass_formed", "flux_i_lsst"]:
        assert col in cat and len(cat[col]) == 400, col
    assert 0 <= cat["redshift"].min() and cat["redshift"].max() <= 3
    assert np.all(cat["sf_start"] < cat["tage"])
    i = cat["mag_i_lsst"]
    assert 16 <= i.min() and i.max() <= 25.6
    # detected magnitudes have positive errors; non-detections use 99 and a limiting magnitude
    u, ue = cat["mag_u_lsst"], cat["mag_err_u_lsst"]
    assert np.all(ue[u < 90] > 0)
    snr = cat["flux_u_lsst"] / cat["flux_err_u_lsst"]
    np.testing.assert_array_equal(u == 99.0, snr < 1.0)
    assert np.all((ue[u == 99.0] > 24) & (ue[u == 99.0] < 30))


def test_same_seed_same_catalogue_different_seed_differs():
    a = _sample("sims_a", seed=7, exposures=True)
    b = _sample("sims_b", seed=7, exposures=True)
    c = _sample("sims_c", seed=8, exposures=True)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.allclose(a["redshift"], c["redshift"])
    # exposures use their own random stream: galaxy parameters do not change when switched on
    d = _sample("sims_d", seed=7)
    np.testing.assert_array_equal(a["redshift"], d["redshift"])
    np.testing.assert_array_equal(a["flux_true_r_lsst"], d["flux_true_r_lsst"])


@pytest.mark.parametrize("opts, option", [
    (dict(engine="magic"), "engine"),
    (dict(zred_range=[2.0, 1.0]), "zred_range"),
    (dict(zred_range=[0.0]), "zred_range"),
    (dict(const_range=[0.0, 2.0]), "const_range"),
    (dict(noise_model="loud"), "noise_model"),
    (dict(filter_set="sdss"), "filter_set"),
    (dict(ref_band="mag_q_lsst"), "ref_band"),
    (dict(bands=["mag_u_lsst"]), "bands"),
    (dict(cosmology="MyUniverse"), "cosmology"),
    (dict(mag_distribution="histogram", mag_reference_file="nope.hdf5"), "mag_reference_file"),
    (dict(exposures=True, noise_model="none"), "exposures"),
    (dict(n_exposures_range=[2.5, 4]), "n_exposures_range"),
    (dict(lya_escape=1.5), "lya_escape"),
    (dict(ssp_grid="missing_grid.npz"), "ssp_grid"),
    (dict(filter_set="paus", noise_model="depth", ref_band="mag_NB455_paus"), "depths"),
    (dict(filter_set="custom", filter_list=["nonexistent_curve"]), "filter_list"),
])
def test_bad_options_raise_clear_errors(opts, option):
    with pytest.raises(SimulationOptionError, match=f"(?i)option '{option}'"):
        DeepzSimCreator.make_stage(name="sims_bad", n_samples=10, **opts)


def test_bad_option_given_to_sample_is_caught_before_work():
    stage = DeepzSimCreator.make_stage(name="sims_late", n_samples=10, output_mode="return")
    with pytest.raises(SimulationOptionError, match="option 'igm'"):
        stage.sample(10, 1, igm="inoue2099")
    with pytest.raises(ValueError, match="n_samples"):
        stage.sample(0, 1, igm="madau")


def test_model_may_be_none_and_output_written(tmp_path):
    path = str(tmp_path / "sims.hdf5")
    stage = DeepzSimCreator.make_stage(name="sims_file", n_samples=50, model="None", output=path)
    assert stage.model is None
    handle = stage.sample(50, 3)
    assert os.path.isfile(handle.path)
    data = tables_io.read(handle.path)
    assert len(data["photometry"]["mag_r_lsst"]) == 50


def test_flat_output_and_snr_noise():
    stage = DeepzSimCreator.make_stage(name="sims_snr", n_samples=2000, output_mode="return",
                                       noise_model="snr", hdf5_groupname="")
    cat = stage.sample(2000, 2)()
    assert "mag_g_lsst" in cat
    ratio = cat["flux_true_g_lsst"] / cat["flux_err_g_lsst"]
    np.testing.assert_allclose(ratio, 35.0)
    pulls = (cat["flux_g_lsst"] - cat["flux_true_g_lsst"]) / cat["flux_err_g_lsst"]
    assert pulls.std() == pytest.approx(1.0, abs=0.06)


def test_paus_lsst_filters_and_generated_column_names():
    cat = _sample("sims_paus", n=200, filter_set="paus_lsst", noise_model="snr")
    assert "mag_NB455_paus" in cat and "mag_err_NB845_paus" in cat and "mag_i_lsst" in cat
    err = cat["flux_err_NB655_paus"] / cat["flux_true_NB655_paus"]
    np.testing.assert_allclose(err, 0.1)  # narrow bands: S/N 10 (paper)


def test_templates_engine_and_histogram_normalisation():
    from rail.utils.path_utils import find_rail_file

    ref = find_rail_file("examples_data/testdata/test_dc2_training_9816.hdf5")
    cat = _sample("sims_tmpl", n=2000, engine="templates", noise_model="none",
                  mag_distribution="histogram", mag_reference_file=ref)
    assert {"template", "dust2", "logzsol", "gas_logu"} <= set(cat)
    assert "log_mass_formed" not in cat
    dc2 = tables_io.read(ref)["photometry"]["mag_i_lsst"]
    assert np.median(cat["mag_i_lsst"]) == pytest.approx(np.median(dc2), abs=0.1)
    assert np.all(np.isfinite(cat["mag_u_lsst"]))


def test_interactive_function():
    import rail.interactive as ri

    out = ri.creation.engines.deepz_sims.deepz_sim_creator(model="none", n_samples=20, seed=1)
    assert len(out["output"]["photometry"]["redshift"]) == 20


def test_fsps_engine_without_data_gives_install_instructions(monkeypatch, tmp_path):
    monkeypatch.delenv("SPS_HOME", raising=False)
    with pytest.raises(RuntimeError, match="git clone https://github.com/cconroy20/fsps"):
        check_sps_home()
    monkeypatch.setenv("SPS_HOME", str(tmp_path))
    with pytest.raises(RuntimeError, match="incomplete"):
        DeepzSimCreator.make_stage(name="sims_fsps_bad", n_samples=5, engine="fsps",
                                   output_mode="return").sample(5, 1)


@pytest.mark.skipif(not os.environ.get("SPS_HOME"), reason="SPS_HOME not set: the FSPS data tree is not installed")
def test_fsps_engine_agrees_with_ssp_engine_roughly():
    fs = _sample("sims_fsps", n=20, engine="fsps", noise_model="none", n_processes=2)
    ss = _sample("sims_ssp_ref", n=20, engine="ssp", noise_model="none")
    np.testing.assert_array_equal(fs["redshift"], ss["redshift"])
    colour = lambda c: c["mag_g_lsst"] - c["mag_i_lsst"]  # noqa: E731
    assert np.median(np.abs(colour(fs) - colour(ss))) < 0.3
