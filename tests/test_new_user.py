"""What a new user hit first: missing input files, the quickstart's help and its stray messages."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tables_io

from rail.deepz import quickstart
from rail.estimation.algos.deepz import DeepzEstimator, DeepzInformer

QP_MESSAGE = "This is not a qp file"


def _subset(src: str, dst: str, n: int) -> str:
    table = tables_io.read(src)["photometry"]
    tables_io.write({"photometry": {k: np.asarray(v)[:n] for k, v in table.items()}}, dst)
    return dst


# -- the stages: a missing input file is a FileNotFoundError naming the file and the input -------------

def test_informer_names_a_missing_input_file(tmp_path):
    missing = str(tmp_path / "no_such_training.hdf5")
    stage = DeepzInformer.make_stage(name="inform_missing", model=str(tmp_path / "m.npz"), input=missing)
    with pytest.raises(FileNotFoundError, match="input 'input'.*no_such_training.hdf5.*does not exist"):
        stage.run()
    assert not os.path.exists(tmp_path / "m.npz")


def test_estimator_names_a_missing_input_file(tiny, small_train, tmp_path, one_torch_thread):
    model = str(tmp_path / "m.npz")
    DeepzInformer.make_stage(name="inform_for_missing", model=model, hdf5_groupname="", **tiny()).inform(small_train)
    assert os.path.exists(model)
    missing = str(tmp_path / "no_such_test.hdf5")
    stage = DeepzEstimator.make_stage(name="estimate_missing", model=model, input=missing,
                                      output=str(tmp_path / "pdfs.hdf5"))
    with pytest.raises(FileNotFoundError, match="input 'input'.*no_such_test.hdf5.*does not exist"):
        stage.run()


def test_estimator_names_a_missing_model_file(tmp_path, dc2_valid_path):
    stage = DeepzEstimator.make_stage(name="estimate_no_model", model=str(tmp_path / "absent_model.npz"),
                                      input=dc2_valid_path, output=str(tmp_path / "pdfs.hdf5"))
    with pytest.raises(FileNotFoundError, match="absent_model.npz.*does not exist"):
        stage.run()


# -- the quickstart ---------------------------------------------------------------------------------

def test_quickstart_help_shows_the_defaults():
    text = quickstart._parser().format_help()  # pylint: disable=protected-access
    for default in ("(default: deepz_quickstart)", "(default: 50000)", "(default: 87)", "(default: auto)",
                    "(default: 0)", "(default: {})"):
        assert default in text, default
    assert text.count("(default:") == 8  # every option has a help text with its default


@pytest.mark.parametrize("option", ["--train", "--test"])
def test_quickstart_checks_its_inputs_before_creating_anything(tmp_path, capsys, option):
    out = tmp_path / "qs"
    with pytest.raises(SystemExit) as exc:
        quickstart.main([option, str(tmp_path / "nope.hdf5"), "--output-dir", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"{option}: file '{tmp_path / 'nope.hdf5'}' does not exist" in err
    assert not out.exists()  # no empty output folder left behind


def test_quickstart_refuses_bad_inform_config_before_creating_anything(tmp_path, capsys):
    out = tmp_path / "qs"
    with pytest.raises(SystemExit):
        quickstart.main(["--inform-config", "{epochs: 1}", "--output-dir", str(out)])
    assert "--inform-config: not valid JSON" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_quickstart_names_an_unreadable_input(tmp_path, capsys, dc2_valid_path):
    path = _subset(dc2_valid_path, str(tmp_path / "locked.hdf5"), 10)
    os.chmod(path, 0)
    try:
        with pytest.raises(SystemExit):
            quickstart.main(["--test", path, "--output-dir", str(tmp_path / "qs")])
    finally:
        os.chmod(path, 0o600)
    assert "locked.hdf5' is not readable" in capsys.readouterr().err
    assert not (tmp_path / "qs").exists()


def test_quickstart_output_has_no_qp_file_messages(tmp_path, capsys, dc2_valid_path, one_torch_thread):
    """RAIL's evaluator asked qp whether the truth table is a qp file five times, and qp printed
    "This is not a qp file because 'meta'" each time; DeepzEvaluator's handles ask quietly."""
    from rail.utils.path_utils import find_rail_file

    train = _subset(find_rail_file(quickstart.TRAIN_FILE), str(tmp_path / "train.hdf5"), 400)
    test = _subset(dc2_valid_path, str(tmp_path / "test.hdf5"), 300)
    scores = quickstart.main([
        "--sims", "0", "--train", train, "--test", test, "--output-dir", str(tmp_path / "qs"), "--device", "cpu",
        "--inform-config", '{"epochs_per_step": [1, 1, 1], "n_folds": 2, "encoder_layers": [8, 8], '
                           '"decoder_layers": [8, 8], "mdn_layers": [8, 8], "n_gaussians": 2}',
    ])
    out = capsys.readouterr()
    assert QP_MESSAGE not in out.out and QP_MESSAGE not in out.err
    assert "sigma68" in out.out and np.isfinite(scores["sigma68"])
    assert os.path.exists(tmp_path / "qs" / "scores.json")
