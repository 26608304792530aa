import pickle

import numpy as np
import pytest
import qp
import tables_io
from rail.core.data import TableHandle
from rail.utils.testing_utils import check_stage_params, one_algo

from rail.deepz import DeepzEstimator, DeepzInformer
from rail.deepz.model_io import ModelFormatError, load_model



@pytest.fixture()
def inform(tiny):
    """Train a tiny model on ``data``: ``inform(data, name, **options)``."""
    return lambda data, name="inform", **kw: _inform(tiny(hdf5_groupname="", **kw), data, name)


def _inform(cfg, data, name):
    stage = DeepzInformer.make_stage(name=name, output_mode="return", **cfg)
    stage.inform(data)
    return stage.get_data("model")


def _estimate(model, data, name="estimate", **kw):
    stage = DeepzEstimator.make_stage(name=name, model=model, hdf5_groupname="", output_mode="return", **kw)
    return stage.estimate(data).data


def test_one_algo_round_trip(tiny, in_tmp):
    train = tiny(hdf5_groupname="photometry", model="deepz_test.npz")
    estim = dict(hdf5_groupname="photometry", model="deepz_test.npz")
    r1, r2, r3 = one_algo("Deepz", DeepzInformer, DeepzEstimator, train, estim)
    assert r1.npdf == 10
    for other in (r2, r3):
        np.testing.assert_allclose(r1.ancil["zmode"], other.ancil["zmode"])
        np.testing.assert_allclose(r1.objdata["weights"], other.objdata["weights"])


def test_stage_params_are_plain_types():
    assert check_stage_params(DeepzInformer) is None
    assert check_stage_params(DeepzEstimator) is None


def test_importable_from_conventional_module_and_discovered():
    import rail.stages
    from rail.estimation.algos import deepz as mod

    assert mod.DeepzInformer is DeepzInformer and mod.DeepzEstimator is DeepzEstimator
    rail.stages.import_and_attach_all(silent=True)
    assert rail.stages.DeepzInformer is DeepzInformer
    assert rail.stages.DeepzEstimator is DeepzEstimator


def test_interactive_api(tiny, small_train):
    import rail.interactive as ri

    fns = ri.estimation.algos.deepz
    model = fns.deepz_informer(training_data=small_train, hdf5_groupname="", **tiny())["model"]
    out = fns.deepz_estimator(input_data=small_train, model=model, hdf5_groupname="")["output"]
    assert isinstance(out, qp.Ensemble) and out.npdf == len(small_train["redshift"])


def test_output_is_a_normalised_mixture_with_ancil(tiny, inform, small_train):
    model = inform(small_train)
    ens = _estimate(model, small_train, calculated_point_estimates=["zmean", "zmode", "zmedian"])
    assert ens.gen_func is qp.mixmod.create_gen or isinstance(ens.gen_obj, qp.mixmod_gen) or "mixmod" in str(type(ens.gen_obj))
    n_members, g = 2, tiny()["n_gaussians"]
    assert ens.objdata["weights"].shape == (1000, g)  # the compact network's mixture
    assert _estimate(model, small_train, name="est_ensemble", network="ensemble").objdata["weights"].shape == \
        (1000, n_members * g)
    assert ens.objdata["weights"].dtype == np.float32  # pdf_dtype default
    np.testing.assert_allclose(ens.objdata["weights"].sum(1), 1.0, rtol=1e-6)
    assert (ens.objdata["stds"] > 0).all()
    for key in ("zmode", "zmean", "zmedian", "zstd", "odds", "deepz_flag"):
        assert np.isfinite(ens.ancil[key]).all(), key
    w, m = ens.objdata["weights"], ens.objdata["means"]
    np.testing.assert_allclose(np.squeeze(ens.ancil["zmean"]), (w.astype(float) * m).sum(1), rtol=1e-6)
    np.testing.assert_allclose(np.squeeze(ens.cdf(ens.ancil["zmedian"][:, None])), 0.5, atol=1e-6)
    assert ((ens.ancil["odds"] >= 0) & (ens.ancil["odds"] <= 1)).all()
    # the exact mode is at least as high as the best point of RAIL's 301-point grid
    grid = np.linspace(0, 3, 301)
    pdf_grid = ens.pdf(grid)
    at_mode = np.squeeze(ens.pdf(ens.ancil["zmode"][:, None]))
    assert np.all(at_mode >= pdf_grid.max(1) * (1 - 1e-9))


def test_recomputed_point_estimates_do_not_crash(inform, small_train):
    model = inform(small_train)
    ens = _estimate(model, small_train, calculated_point_estimates=["zmean", "zmode", "zmedian"],
                    recompute_point_estimates=True)
    w, m = ens.objdata["weights"], ens.objdata["means"]
    np.testing.assert_allclose(np.squeeze(ens.ancil["zmean"]), (w.astype(float) * m).sum(1), rtol=1e-6)


def test_same_seed_same_model_and_pdfs(inform, small_train):
    a, b = inform(small_train, "a"), inform(small_train, "b")
    c = inform(small_train, "c", **{"seed": 12})
    for key in a["arrays"]:
        np.testing.assert_array_equal(a["arrays"][key], b["arrays"][key], err_msg=key)
    assert not np.array_equal(a["arrays"]["net/mdn.net.0.weight"], c["arrays"]["net/mdn.net.0.weight"])
    ea, eb = _estimate(a, small_train), _estimate(b, small_train)
    np.testing.assert_array_equal(ea.objdata["means"], eb.objdata["means"])
    np.testing.assert_array_equal(ea.ancil["zmode"], eb.ancil["zmode"])


def test_results_independent_of_chunk_and_batch_size(inform, small_train, tmp_path):
    model = inform(small_train)
    path = str(tmp_path / "cat.hdf5")
    tables_io.write(dict(photometry=small_train), path)
    outs = []
    for i, (chunk, batch) in enumerate([(1000, 16384), (137, 50), (400, 7)]):
        stage = DeepzEstimator.make_stage(name=f"chunks{i}", model=model, hdf5_groupname="photometry",
                                          chunk_size=chunk, batch_size=batch,
                                          output=str(tmp_path / f"out{i}.hdf5"))
        outs.append(stage.estimate(TableHandle("cat", path=path)).data)
    for other in outs[1:]:
        np.testing.assert_allclose(outs[0].objdata["means"], other.objdata["means"], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(outs[0].ancil["zmode"], other.ancil["zmode"], rtol=1e-6, atol=1e-6)


def test_model_file_round_trip(tiny, small_train, in_tmp):
    stage = DeepzInformer.make_stage(name="inform_file", model="m.npz", hdf5_groupname="", **tiny())
    stage.inform(small_train)
    model = load_model("m.npz")
    mem = stage.get_data("model")
    assert model["meta"]["bands"] == mem["meta"]["bands"]
    for key, arr in mem["arrays"].items():
        np.testing.assert_array_equal(model["arrays"][key], arr)
    e1 = _estimate("m.npz", small_train, "from_file")
    e2 = _estimate(mem, small_train, "from_memory")
    np.testing.assert_array_equal(e1.ancil["zmode"], e2.ancil["zmode"])


def test_missing_column_error(inform, small_train):
    data = dict(small_train)
    del data["mag_g_lsst"]
    with pytest.raises(KeyError, match="mag_g_lsst"):
        inform(data)
    model = inform(small_train)
    with pytest.raises(KeyError, match="mag_g_lsst"):
        _estimate(model, data)


def test_missing_redshift_column_error(inform, small_train):
    data = dict(small_train)
    del data["redshift"]
    with pytest.raises(KeyError, match="redshift"):
        inform(data)


def test_all_nan_band_error(inform, small_train):
    data = dict(small_train)
    data["mag_y_lsst"] = np.full_like(data["mag_y_lsst"], np.nan)
    with pytest.raises(ValueError, match="mag_y_lsst"):
        inform(data)


def test_all_nan_band_at_estimate_time_gives_flags_not_nans(inform, small_train):
    model = inform(small_train)
    data = dict(small_train)
    data["mag_y_lsst"] = np.full_like(data["mag_y_lsst"], np.nan)
    data["mag_i_lsst"] = data["mag_i_lsst"].copy()
    data["mag_i_lsst"][:5] = 99.0
    ens = _estimate(model, data)
    assert np.isfinite(ens.objdata["means"]).all() and np.isfinite(ens.ancil["zmode"]).all()
    flags = ens.ancil["deepz_flag"]
    assert (flags & 2).all()  # every row has a missing band
    assert (flags[:5] & 1).all() and not (flags[5:] & 1).any()  # reference band not detected


def test_empty_table_error(inform, small_train):
    empty = {k: v[:0] for k, v in small_train.items()}
    with pytest.raises(ValueError, match="empty"):
        inform(empty)


def test_bad_options_are_named(inform, small_train):
    with pytest.raises(ValueError, match="epochs_per_step"):
        inform(small_train, epochs_per_step=[1])
    with pytest.raises(ValueError, match="device"):
        inform(small_train, device="gpu7")
    with pytest.raises(ValueError, match="n_folds"):
        inform(small_train, n_folds=0)
    with pytest.raises(ValueError, match="ref_band"):
        inform(small_train, ref_band="mag_q_lsst")


def test_band_mismatch_with_model(inform, small_train):
    model = inform(small_train)
    with pytest.raises(ValueError, match="bands"):
        _estimate(model, small_train, bands=[f"mag_{b}_lsst" for b in "grizy"],
                  err_bands=[f"mag_err_{b}_lsst" for b in "grizy"])


def test_wrong_model_files_fail_clearly(inform, small_train, tmp_path):
    with open(tmp_path / "other.pkl", "wb") as f:
        pickle.dump(dict(nnmodel=1), f)
    with pytest.raises(ModelFormatError, match="not a pz-rail-deepz model"):
        _estimate(str(tmp_path / "other.pkl"), small_train)
    with pytest.raises(ModelFormatError, match="not a pz-rail-deepz model"):
        _estimate(dict(kdtree=None), small_train)
    model = inform(small_train)
    wrong_version = dict(model, format_version=99)
    with pytest.raises(ModelFormatError, match="format version 99"):
        _estimate(wrong_version, small_train)


def test_notebook_pickle_pattern(inform, small_train, tmp_path):
    """RAIL's photometry notebook: ``pickle.dump(model, f)``, then ``model="file.pkl"`` for the estimator."""
    model = inform(small_train)
    path = tmp_path / "deepz_model.pkl"
    with open(path, "wb") as f:
        pickle.dump(model, f)
    from_pickle = _estimate(str(path), small_train, name="from_pickle")
    in_memory = _estimate(model, small_train, name="in_memory")
    for key in ("weights", "means", "stds"):
        np.testing.assert_array_equal(from_pickle.objdata[key], in_memory.objdata[key])
    with open(path, "rb") as f:  # a plain pickle.load gives the same model back
        again = pickle.load(f)
    assert again["meta"] == model["meta"]


def test_wrong_groupname_names_the_groups_there_are(inform, small_train, tmp_path):
    grouped = {"photometry": small_train}
    pattern = r"hdf5_groupname 'photometri' is not a group.*groups are \['photometry'\].*did you mean 'photometry'"
    stage = DeepzInformer.make_stage(name="inf_group", output_mode="return", hdf5_groupname="photometri")
    with pytest.raises(KeyError, match=pattern):
        stage.inform(grouped)
    model = inform(small_train)
    path = tmp_path / "in.hdf5"
    tables_io.write(grouped, str(path))
    for name, data in (("est_group_mem", grouped), ("est_group_file", TableHandle("t", path=str(path)))):
        stage = DeepzEstimator.make_stage(name=name, model=model, output_mode="return", hdf5_groupname="photometri")
        with pytest.raises(KeyError, match=pattern):
            stage.estimate(data)
    flat = tmp_path / "flat.hdf5"
    tables_io.write(small_train, str(flat))
    stage = DeepzEstimator.make_stage(name="est_flat", model=model, output_mode="return", hdf5_groupname="photometry")
    with pytest.raises(KeyError, match=r"no groups \(a flat table.*set hdf5_groupname=''"):
        stage.estimate(TableHandle("t", path=str(flat)))


def test_a_missing_band_column_names_the_bands_option(inform, small_train):
    model = inform(small_train)
    table = {k: v for k, v in small_train.items() if k != "mag_y_lsst"}
    with pytest.raises(KeyError, match=r"'mag_y_lsst' \(named by option 'bands'\).*leave it out of options 'bands'"):
        inform(table)
    with pytest.raises(KeyError, match=r"'mag_y_lsst' \(named by option 'bands'\).*model was trained on bands.*"
                                       r"inform a model whose 'bands'"):
        _estimate(model, table)
