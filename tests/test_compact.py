"""The compact network: distilled at inform time, run by the estimator by default, old models as before."""

import numpy as np
import pytest

from rail.deepz import DeepzEstimator, DeepzInformer
from rail.deepz.distillation import DistillConfig, distillation_data
from rail.deepz.inputs import STATUS_MISSING, STATUS_NONDETECT, STATUS_OK, Photometry
from rail.deepz.model_io import COMPACT_PREFIX, FORMAT_VERSION, DeepzModel, load_model, save_model


@pytest.fixture(scope="module")
def models(dc2_train):
    """Two small models from the same seed, and one without a compact network."""
    from conftest import _TINY

    train = {k: np.asarray(v[::5]) for k, v in dc2_train.items()}  # rows over the whole redshift range
    opts = dict(_TINY, learning_rates=[3e-3, 1e-3, 1e-4], epochs_per_step=[8, 2, 2], n_gaussians=4, num_threads=1)
    out = {}
    for name, extra in (("a", {}), ("b", {}), ("plain", dict(compact_network=False))):
        stage = DeepzInformer.make_stage(name=f"inform_compact_{name}", output_mode="return", hdf5_groupname="",
                                         checkpoint_dir="none", **opts, **extra)
        stage.inform(train)
        out[name] = stage.get_data("model")
    return out, train


def _estimate(model, table, name, **options):
    stage = DeepzEstimator.make_stage(name=name, model=model, hdf5_groupname="", output_mode="return",
                                      num_threads=1, **options)
    return stage.estimate(table).data


def test_the_estimator_runs_the_compact_network_by_default(models):
    model, train = models[0]["a"], models[1]
    assert "compact" in model["meta"] and any(k.startswith(COMPACT_PREFIX) for k in model["arrays"])
    summary = model["meta"]["compact"]
    assert summary["n_gaussians"] == 4 and summary["rows"] >= len(train["redshift"]) and summary["steps"] > 0
    compact = _estimate(model, train, "est_compact_default")
    ensemble = _estimate(model, train, "est_compact_ensemble", network="ensemble", n_output_components=0)
    assert compact.objdata["weights"].shape == (len(train["redshift"]), 4)
    assert ensemble.objdata["weights"].shape == (len(train["redshift"]), 2 * 4)
    # the compact network reproduces the ensemble's PDFs: modes close on the scale of the widths
    shift = np.abs(compact.ancil["zmode"] - ensemble.ancil["zmode"]) / ensemble.ancil["zstd"]
    assert np.median(shift) < 0.3
    ratio = np.median(compact.ancil["zstd"] / ensemble.ancil["zstd"])
    assert 0.7 < ratio < 1.4
    # fewer components than the compact network has: its mixture merged
    assert _estimate(model, train, "est_compact_2", n_output_components=2).objdata["weights"].shape[1] == 2


def test_the_same_seed_gives_the_same_compact_network(models):
    a, b = models[0]["a"], models[0]["b"]
    keys = [k for k in a["arrays"] if k.startswith(COMPACT_PREFIX)]
    assert keys
    for k in keys:
        np.testing.assert_array_equal(a["arrays"][k], b["arrays"][k])


def test_models_without_a_compact_network(models, tmp_path):
    plain, train = models[0]["plain"], models[1]
    assert "compact" not in plain["meta"]
    auto = _estimate(plain, train, "est_plain_auto")
    assert auto.objdata["weights"].shape[1] == 8  # 2 members x 4 Gaussians: the ensemble
    with pytest.raises(ValueError, match=r"network='compact'.*format version 8.*compact_network=True"):
        _estimate(plain, train, "est_plain_compact", network="compact")
    # a model file written before the compact network (format 6) estimates as before: the ensemble
    model = models[0]["a"]
    old = DeepzModel(format=model["format"], format_version=6,
                     arrays={k: v for k, v in model["arrays"].items() if not k.startswith(COMPACT_PREFIX)},
                     meta={k: v for k, v in model["meta"].items() if k != "compact"})
    path = str(tmp_path / "old.npz")
    save_model(old, path)
    loaded = load_model(path)
    assert loaded["format_version"] == FORMAT_VERSION  # written by this version's writer; the arrays are those of format 6
    before = _estimate(old, train, "est_old")
    now = _estimate(model, train, "est_new_ensemble", network="ensemble")
    for key in ("weights", "means", "stds"):
        np.testing.assert_array_equal(before.objdata[key], now.objdata[key])


def test_the_compact_network_survives_saving_and_pickling(models, tmp_path):
    import pickle

    model, train = models[0]["a"], models[1]
    path = str(tmp_path / "m.npz")
    save_model(model, path)
    with open(tmp_path / "m.pkl", "wb") as f:
        pickle.dump(model, f)
    want = _estimate(model, train, "est_mem")
    for name, source in (("est_file", path), ("est_pickle", str(tmp_path / "m.pkl"))):
        got = _estimate(source, train, name)
        np.testing.assert_array_equal(got.objdata["means"], want.objdata["means"])


def test_distillation_copies_perturb_detections_only():
    rng = np.random.default_rng(0)
    n = 50
    flux = rng.uniform(100, 1000, (n, 3))
    err = np.full((n, 3), 10.0)
    status = np.full((n, 3), STATUS_OK, dtype=np.int8)
    status[:10, 0] = STATUS_NONDETECT
    flux[:10, 0] = 0.0
    status[10:20, 2] = STATUS_MISSING
    flux[10:20, 2] = 0.0
    phot = Photometry(flux, err, status)
    z = rng.uniform(0, 2, n)
    target = rng.normal(size=(500, 7)).astype(np.float32)
    data = distillation_data(phot, z, 1, DistillConfig(copies=3, max_target_rows=2.0), seed=5, target_features=target)
    # 3 x 50 spec-z rows (all with a detected reference band) + 2 x 50 target rows
    assert data.features.shape == (250, 7)
    np.testing.assert_array_equal(data.redshift[:150], np.tile(z.astype(np.float32), 3))
    assert np.isnan(data.redshift[150:]).all()
    # the copies differ from the rows in the detected bands' ratios, not in the non-detected one
    first, second = data.features[:50], data.features[50:100]
    assert not np.allclose(first[20:, 2], second[20:, 2])  # band 2 detected in rows 20+
    np.testing.assert_array_equal(first[:10, 0], second[:10, 0])  # band 0 not detected in rows 0-9
    again = distillation_data(phot, z, 1, DistillConfig(copies=3, max_target_rows=2.0), seed=5, target_features=target)
    np.testing.assert_array_equal(again.features, data.features)


def test_range_gate_hands_galaxies_beyond_the_spec_z_range_to_the_simulations():
    """g = P_sims(z <= z_high): the ensemble's PDF below, the simulations' above, in between a mixture."""
    import torch

    from rail.deepz.distillation import range_gated

    ones = torch.ones(3, 1, dtype=torch.float64)
    ensemble = lambda x: (ones, torch.full((3, 1), 0.5, dtype=torch.float64), 0.1 * ones)  # noqa: E731
    sims_means = torch.tensor([[0.5], [2.0], [1.0]], dtype=torch.float64)  # below, far above, at z_high
    simulations = lambda x: (ones, sims_means, 0.1 * ones)  # noqa: E731
    stats = {}
    w, m, s = range_gated(ensemble, simulations, 1.0, stats)(np.zeros((3, 2)))
    assert w.shape == m.shape == s.shape == (3, 2)
    np.testing.assert_allclose(w.sum(1).numpy(), 1.0)
    np.testing.assert_allclose(w[:, 0].numpy(), [1.0, 0.0, 0.5], atol=1e-6)  # the ensemble's share: g
    np.testing.assert_array_equal(m[:, 1].numpy(), sims_means[:, 0].numpy())
    assert stats == dict(mean_gate=0.5, beyond_share=round(1 / 3, 4))
