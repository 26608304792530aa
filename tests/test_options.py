"""Option validation in every stage: unknown names (a warning with suggestions, an error with
strict_options), values, band lists; the keys RAIL, ceci and rail.interactive pass legitimately are
accepted."""

import pytest
import yaml

from rail.creation.engines.deepz_sims import DeepzSimCreator
from rail.deepz import DeepzEstimator, DeepzInformer, DeepzTransferInformer
from rail.deepz.schema import Option, OptionError, closest
from rail.deepz.stage_options import UnknownOptionWarning
from rail.evaluation.deepz_evaluator import DeepzEvaluator


STAGES = [
    (DeepzInformer, {}),
    (DeepzTransferInformer, {}),
    (DeepzEstimator, {}),
    (DeepzSimCreator, dict(n_samples=10)),
    (DeepzEvaluator, {}),
]


@pytest.mark.parametrize("cls, base", STAGES, ids=[c.__name__ for c, _ in STAGES])
def test_misspelled_option_names_the_key_and_suggests(cls, base):
    with pytest.warns(UnknownOptionWarning, match=r"'hdf5_groupnme' \(did you mean 'hdf5_groupname'") as rec:
        stage = cls.make_stage(name=f"typo_{cls.__name__}", hdf5_groupnme='', **base)
    assert cls.__name__ in str(rec[0].message) and "strict_options" in str(rec[0].message)
    assert stage.config.hdf5_groupname != ""  # ignored, as RAIL ignores it
    with pytest.raises(OptionError, match=r"'hdf5_groupnme' \(did you mean 'hdf5_groupname'") as err:
        cls.make_stage(name=f"typo_strict_{cls.__name__}", hdf5_groupnme='', strict_options=True, **base)
    assert cls.__name__ in str(err.value)


@pytest.mark.parametrize("cls, base", STAGES, ids=[c.__name__ for c, _ in STAGES])
def test_wrong_values_stay_errors_without_strict_options(cls, base):
    """Only unknown names became warnings: a known option with a wrong value is still an error."""
    wrong = {DeepzInformer: dict(n_folds=0), DeepzTransferInformer: dict(dropout=1.5),
             DeepzEstimator: dict(odds_window=-1.0), DeepzSimCreator: dict(engine="sps"),
             DeepzEvaluator: dict(metrics=["cde_loss"])}[cls]
    with pytest.raises(ValueError):
        cls.make_stage(name=f"bad_value_{cls.__name__}", **base, **wrong).check_options()


def test_one_config_dict_for_several_estimators_warns_once_per_stage(small_train, tiny):
    """RAIL's demo notebooks reuse KNN's / FlexZBoost's dict for the next estimator: Deepz runs with it,
    warning once (at construction) about each key it does not have."""
    knn_dict = dict(zmin=0.0, zmax=3.0, nzbins=301, trainfrac=0.75, sigma_grid_min=0.01, sigma_grid_max=0.07,
                    ngrid_sigma=10, nneigh_min=3, nneigh_max=7, hdf5_groupname="")
    with pytest.warns(UnknownOptionWarning) as rec:
        stage = DeepzInformer.make_stage(name="shared_dict", output_mode="return", **knn_dict, **tiny())
        stage.inform(small_train)
    messages = [str(r.message) for r in rec if issubclass(r.category, UnknownOptionWarning)]
    assert len(messages) == 1
    for key in ("trainfrac", "sigma_grid_min", "ngrid_sigma", "nneigh_min"):
        assert f"'{key}'" in messages[0]
    assert "'zmin'" not in messages[0]  # RAIL shared parameters are known
    assert stage.get_data("model") is not None


@pytest.mark.parametrize("cls, base", STAGES, ids=[c.__name__ for c, _ in STAGES])
def test_ceci_and_rail_keys_are_accepted(cls, base, tmp_path):
    extra = dict(config=None, aliases={}, threads_per_process=1, nprocess=1, log_dir="logs", resume=False,
                 mpi=False, pdb=False, cprofile="", force_exact=True, output_mode="return", zmin=0.0)
    stage = cls.make_stage(name=f"ok_{cls.__name__}", **base, **extra)
    for tag in cls.input_tags():
        assert tag in stage.config


def test_informer_specific_typos():
    cases = [(DeepzInformer, {}, dict(n_fold=3), "'n_fold'.*'n_folds'"),
             (DeepzInformer, {}, dict(learning_rate=[1e-3]), "'learning_rate'.*'learning_rates'"),
             (DeepzEstimator, {}, dict(odds_windw=0.1), "'odds_windw'.*'odds_window'"),
             # an informer option, not an estimator one
             (DeepzEstimator, {}, dict(dropout=0.1), "'dropout' \\(no similar option\\)"),
             (DeepzSimCreator, dict(n_samples=5), dict(engin="ssp"), "'engin'.*'engine'"),
             (DeepzEvaluator, {}, dict(metric=["pit"]), "'metric'.*'metrics'")]
    for i, (cls, base, typo, pattern) in enumerate(cases):
        with pytest.warns(UnknownOptionWarning, match=pattern):
            cls.make_stage(name=f"t{i}", **base, **typo)
        with pytest.raises(OptionError, match=pattern):
            cls.make_stage(name=f"t{i}s", strict_options=True, **base, **typo)


def test_values_are_checked_before_training(tiny, small_train):
    cases = [
        (dict(phase="pretrian"), r"'phase'.*did you mean 'pretrain'.*allowed values"),
        (dict(coadd_mode="keep"), "coadd_mode"),
        (dict(dropout=1.5), "dropout"),
        (dict(n_folds=0), "n_folds"),
        (dict(bands=["mag_u_lsst", "mag_u_lsst"], err_bands=["mag_err_u_lsst", "mag_err_g_lsst"]),
         "'bands' lists column"),
        (dict(err_bands=["mag_err_u_lsst"]), "'err_bands'"),
        (dict(ref_band="mag_I_lsst"), r"'ref_band'.*did you mean 'mag_i_lsst'"),
        (dict(mag_limits={"mag_u_lsst": 27.0}), "mag_limits"),
    ]
    for i, (opts, pattern) in enumerate(cases):
        stage = DeepzInformer.make_stage(name=f"val{i}", output_mode="return", hdf5_groupname="",
                                         **tiny(**opts))
        with pytest.raises(ValueError, match=pattern):
            stage.inform(small_train)
        assert stage.model is None  # nothing was trained


def test_estimator_values_and_columns(small_train):
    stage = DeepzEstimator.make_stage(name="est_bad", model="none", odds_window=0.0, hdf5_groupname="")
    with pytest.raises(ValueError, match="odds_window"):
        stage.check_options()
    stage = DeepzEstimator.make_stage(name="est_bad2", model="none", batch_size=0, hdf5_groupname="")
    with pytest.raises(ValueError, match="batch_size"):
        stage.check_options()


def test_misspelled_column_suggests_the_right_one(small_train):
    from rail.deepz.inputs import read_photometry

    bands = [f"mag_{b}_lsst" for b in "ugrizy"]
    errs = [f"mag_err_{b}_lsst" for b in "ugrizy"]
    data = dict(small_train)
    data["mag_g_lst"] = data.pop("mag_g_lsst")
    with pytest.raises(KeyError, match=r"'mag_g_lsst'.*did you mean 'mag_g_lst'"):
        read_photometry(data, bands, errs, {b: 27.0 for b in bands})


def test_evaluator_unknown_metric():
    stage = DeepzEvaluator.make_stage(name="ev_bad", metrics=["pit", "cde_loss"])
    with pytest.raises(OptionError, match=r"'cde_loss'.*'cdeloss'"):
        stage.check_options()
    DeepzEvaluator.make_stage(name="ev_ok", metrics=["pit", "point_stats_sigma68"]).check_options()


def test_sim_creator_values_and_late_overrides():
    with pytest.raises(ValueError, match="engine"):
        DeepzSimCreator.make_stage(name="sim_bad", n_samples=5, engine="sps")
    stage = DeepzSimCreator.make_stage(name="sim_late", n_samples=5, output_mode="return", strict_options=True)
    with pytest.raises(OptionError, match="'nosie_model'.*'noise_model'"):
        stage.sample(5, 1, nosie_model="snr")  # a typo passed to the entrypoint


def test_interactive_api_rejects_typos_before_work(small_train):
    import rail.interactive as ri

    with pytest.raises(OptionError, match="'n_fold'"):
        ri.estimation.algos.deepz.deepz_informer(training_data=small_train, hdf5_groupname="", n_fold=2,
                                                 strict_options=True)


def test_ceci_config_file_checks_only_this_stage_section(tmp_path, small_train):
    cfg = dict(
        # global keys are shared by every stage: not checked
        **{"global": dict(hdf5_groupname="", metrics=["pit"], some_pipeline_key=1)},
        inform_deepz=dict(name="inform_deepz", n_folds=2, config=None, input="None"),
        other_stage=dict(name="other_stage", n_fold=2, bogus=3),  # another stage's section: ignored
    )
    path = tmp_path / "cfg.yml"
    path.write_text(yaml.safe_dump(cfg))
    stage = DeepzInformer.make_stage(name="inform_deepz", config=str(path))
    assert stage.config.n_folds == 2 and stage.config.hdf5_groupname == ""

    cfg["inform_deepz"]["n_fold"] = 3
    path.write_text(yaml.safe_dump(cfg))
    with pytest.warns(UnknownOptionWarning, match=r"'n_fold'.*'n_folds'"):
        DeepzInformer.make_stage(name="inform_deepz", config=str(path))
    cfg["inform_deepz"]["strict_options"] = True
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(OptionError, match=r"'n_fold'.*'n_folds'"):
        DeepzInformer.make_stage(name="inform_deepz", config=str(path))

    # the command line ceci builds for a pipeline stage (argparse namespace, every option present)
    cfg["inform_deepz"].pop("n_fold")
    cfg["inform_deepz"].pop("strict_options")
    path.write_text(yaml.safe_dump(cfg))
    args = DeepzInformer.parse_command_line(
        ["DeepzInformer", f"--config={path}", "--input=in.hdf5", "--model=m.npz", "--name=inform_deepz"])
    stage = DeepzInformer(args)
    assert stage.config.n_folds == 2


def test_config_written_by_a_stage_reads_back(tmp_path):
    stage = DeepzEstimator.make_stage(name="est_cfg", model="m.npz", hdf5_groupname="")
    path = tmp_path / "cfg.yml"
    path.write_text(yaml.safe_dump({"est_cfg": stage.get_config_dict()}))
    again = DeepzEstimator.make_stage(name="est_cfg", config=str(path))
    assert again.config.hdf5_groupname == ""


def test_rail_pipeline_build_accepts_aliases_and_connections():
    from rail.core.stage import RailPipeline

    class _Pipe(RailPipeline):
        default_input_dict = dict(input_train="dummy.in", input_test="dummy.in")

        def __init__(self):
            RailPipeline.__init__(self)
            self.inform_p = DeepzInformer.build(aliases=dict(input="input_train"), hdf5_groupname="photometry")
            self.estimate_p = DeepzEstimator.build(aliases=dict(input="input_test"),
                                                   connections=dict(model=self.inform_p.io.model))

    pipe = _Pipe()
    assert "estimate_p" in pipe.stage_names


def test_helpers():
    assert closest("n_fold", ["n_folds", "n_splits", "seed"]) == ["n_folds"]
    Option("x", "int", 1, "", lo=0).check(3)
    with pytest.raises(OptionError, match=r"'x' = 0 is invalid: expected a number in \(0, 1\]"):
        Option("x", "float", 1.0, "", lo=0, hi=1, lo_open=True).check(0)
    with pytest.raises(OptionError, match="integer"):
        Option("x", "int", 1, "").check(1.5)
    with pytest.raises(OptionError, match="list of integers"):
        Option("x", "list", [], "", item="int", lo=1).check([1, 0])
