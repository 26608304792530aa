"""Quality on the cosmoDC2 test files with the default configuration (trains ~2 minutes on 2 cores).

Bounds sit well inside what a working model reaches (sigma68 ~0.022, outliers ~0.024, PIT KS ~0.01
on these files) and far from what a broken one gives (the training-set n(z) for every galaxy:
sigma68 0.25, outliers 0.50; an uncalibrated MDN ensemble: PIT KS ~0.04).
"""

import numpy as np
import pytest
from rail.core.data import TableHandle

from rail.deepz import DeepzEstimator, DeepzEvaluator, DeepzInformer
from rail.deepz.metrics import cde_loss, photoz_scores


@pytest.fixture(scope="module")
def default_run(dc2_train, dc2_valid_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("quality")
    inf = DeepzInformer.make_stage(name="inform_quality", model=str(out / "model.npz"), hdf5_groupname="")
    inf.inform(dc2_train)
    est = DeepzEstimator.make_stage(name="estimate_quality", model=str(out / "model.npz"),
                                    hdf5_groupname="photometry", output=str(out / "pdfs.hdf5"))
    ens = est.estimate(TableHandle("valid", path=dc2_valid_path)).data
    return inf, est, ens, out


@pytest.mark.slow
def test_default_model_quality(default_run, dc2_valid):
    _, _, ens, _ = default_run
    s = photoz_scores(ens, dc2_valid["redshift"])
    print(s)
    assert s["sigma68"] < 0.026
    assert s["outlier_frac"] < 0.032
    assert s["pit_ks"] < 0.025
    assert s["cde_loss"] < -6.8
    assert abs(s["bias"]) < 0.005
    assert np.all(np.isfinite(ens.objdata["means"]))


@pytest.mark.slow
def test_sigma68_through_rail_evaluator(default_run, dc2_valid_path, dc2_valid):
    _, est, ens, out = default_run
    ev = DeepzEvaluator.make_stage(
        name="eval_quality", metrics=["point_stats_sigma68", "point_outlier_frac_015", "pit", "cdeloss"],
        point_estimates=["zmode"], truth_point_estimates=["redshift"], hdf5_groupname="photometry",
        chunk_size=2000, output=str(out / "ev.hdf5"), summary=str(out / "ev_summary.hdf5"),
        single_distribution_summary=str(out / "ev_pit.hdf5"))
    summary = ev.evaluate(est.get_handle("output"), TableHandle("truth", path=dc2_valid_path))["summary"]()
    s = photoz_scores(ens, dc2_valid["redshift"])
    # chunked evaluation: point metrics come from t-digests (approximate quantiles)
    np.testing.assert_allclose(np.squeeze(summary["point_stats_sigma68_zmode_redshift"]), s["sigma68"], rtol=0.02)
    np.testing.assert_allclose(np.squeeze(summary["point_outlier_frac_015_zmode_redshift"]), s["outlier_frac"],
                               atol=0.002)
    # RAIL's SingleEvaluator uses qp's default CDE grid, 301 points over 0-2.5
    np.testing.assert_allclose(np.squeeze(summary["cdeloss_redshift"]), cde_loss(ens, dc2_valid["redshift"], 0.0, 2.5),
                               rtol=1e-6)
