"""Pretraining -> fine-tuning, pretrained-model reuse, autoencoder-only training (small, CPU)."""

import numpy as np
import pytest

from rail.deepz import DeepzEstimator, DeepzInformer
from rail.deepz.model_io import load_model, save_model
from rail.estimation.algos.deepz import DeepzTransferInformer



pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def fast(tiny):
    """The tiny settings with a short pretraining."""
    return tiny(hdf5_groupname="", pretrain_epochs_per_step=[2, 1], pretrain_batch_size=128, num_threads=1)


@pytest.fixture(scope="module")
def sims(dc2_train):
    """Stand-in simulation table: 1,500 DC2 rows with the same columns (true redshifts)."""
    return {k: np.array(v[2000:3500]) for k, v in dc2_train.items()}


@pytest.fixture(scope="module")
def pretrained(fast, sims):
    stage = DeepzInformer.make_stage(name="pre", output_mode="return", phase="pretrain", **fast)
    stage.inform(sims)
    return stage.get_data("model")


@pytest.fixture()
def train_model(fast):
    """Train (or fine-tune) a model: ``train_model(table, name, sims=None, pretrained=None, **options)``."""
    return lambda train, name, sims=None, pretrained=None, **kw: _train(dict(fast, **kw), train, name, sims, pretrained)


def _train(cfg, train, name, sims, pretrained):
    stage = DeepzInformer.make_stage(name=name, output_mode="return", **cfg)
    stage.inform(train, sims=sims, pretrained=pretrained)
    return stage.get_data("model")


def test_pretrain_then_finetune_changes_weights(train_model, small_train, sims, pretrained):
    assert pretrained["meta"]["phase"] == "pretrained" and pretrained["meta"]["n_members"] == 1
    model = train_model(small_train, "ft", sims=sims)
    assert "phase" not in model["meta"] and model["meta"]["transfer"]["phase"] == "pretrained"
    # the scaler is the pretraining one; every member starts from pretrained network 0 and moves away
    np.testing.assert_array_equal(model["arrays"]["feature_mean"], pretrained["arrays"]["feature_mean"])
    w_pre = pretrained["arrays"]["net/mdn.net.0.weight"][0]
    w_ft = model["arrays"]["net/mdn.net.0.weight"]
    assert w_ft.shape[0] == 2
    for m in range(2):
        assert not np.allclose(w_ft[m], w_pre)
        assert np.abs(w_ft[m] - w_pre).mean() < np.abs(w_pre).mean()  # fine-tuned, not re-initialised
    ens = DeepzEstimator.make_stage(name="est_ft", model=model, hdf5_groupname="", output_mode="return")
    out = ens.estimate(small_train).data
    assert np.isfinite(out.ancil["zmode"]).all()


def test_pretrained_model_reuse_from_file(train_model, small_train, sims, pretrained, tmp_path):
    path = str(tmp_path / "pre.npz")
    save_model(pretrained, path)
    a = train_model(small_train, "reuse_a", pretrained_model=path)
    b = train_model(small_train, "reuse_b", pretrained=load_model(path))
    c = train_model(small_train, "reuse_c", sims=sims)  # pretrains again with the same seed
    for k in a["arrays"]:
        np.testing.assert_array_equal(a["arrays"][k], b["arrays"][k])
        np.testing.assert_allclose(a["arrays"][k], c["arrays"][k], rtol=1e-5, atol=1e-6)


def test_freeze_and_l2sp_and_sim_mixing(train_model, small_train, sims, pretrained):
    frozen = train_model(small_train, "frz", pretrained=pretrained, freeze=["encoder"], finetune_l2sp=1e-3)
    enc = [k for k in frozen["arrays"] if k.startswith("net/encoder") and k.endswith("weight")]
    for k in enc:
        got, pre = frozen["arrays"][k].reshape(2, -1), pretrained["arrays"][k].reshape(1, -1)
        for m in range(2):
            np.testing.assert_array_equal(got[m], pre[0])
    mixed = train_model(small_train, "mix", sims=sims, pretrained=pretrained, finetune_sim_fraction=0.3)
    assert mixed["meta"]["transfer"]["finetune_sim_fraction"] == 0.3
    with pytest.raises(ValueError, match="finetune_sim_fraction"):
        train_model(small_train, "mix_bad", pretrained=pretrained, finetune_sim_fraction=0.3)


def test_autoencoder_only_on_unlabelled_photometry(train_model, small_train):
    unlabelled = {k: v for k, v in small_train.items() if k != "redshift"}
    ae = train_model(unlabelled, "ae", phase="autoencoder")
    assert ae["meta"]["phase"] == "autoencoder"
    assert not any(k.startswith("prior/") for k in ae["arrays"])
    with pytest.raises(ValueError, match="autoencoder"):
        DeepzEstimator.make_stage(name="est_ae", model=ae, hdf5_groupname="").open_model(model=ae)
    model = train_model(small_train, "ft_ae", pretrained=ae)
    k = "net/decoder.net.0.weight"
    assert np.abs(model["arrays"][k] - ae["arrays"][k][0]).mean() < np.abs(ae["arrays"][k]).mean()


def test_transfer_seeds_reproduce(train_model, small_train, sims):
    a = train_model(small_train, "seed_a", sims=sims, outlier_fraction=0.1)
    b = train_model(small_train, "seed_b", sims=sims, outlier_fraction=0.1)
    c = train_model(small_train, "seed_c", sims=sims, outlier_fraction=0.1, seed=12)
    for k in a["arrays"]:
        np.testing.assert_array_equal(a["arrays"][k], b["arrays"][k])
    assert not np.array_equal(a["arrays"]["net/mdn.net.0.weight"], c["arrays"]["net/mdn.net.0.weight"])


def test_bad_options_are_named(train_model, small_train, pretrained):
    with pytest.raises(ValueError, match="freeze"):
        train_model(small_train, "bad1", pretrained=pretrained, freeze=["decoderz"])
    with pytest.raises(ValueError, match="phase"):
        train_model(small_train, "bad2", phase="nope")
    bands = ["mag_u_lsst", "mag_g_lsst", "mag_r_lsst", "mag_i_lsst", "mag_z_lsst"]
    with pytest.raises(ValueError, match="pretrained_model"):
        train_model(small_train, "bad3", pretrained=pretrained, bands=bands, err_bands=[b.replace("mag_", "mag_err_") for b in bands])


def test_transfer_informer_two_inputs(fast, small_train, sims):
    assert [t for t, _ in DeepzTransferInformer.inputs] == ["input", "sims"]
    stage = DeepzTransferInformer.make_stage(name="tr2", output_mode="return", **fast)
    stage.inform(small_train, sims)
    assert stage.get_data("model")["meta"]["transfer"]["pretrain_n_train"] > 1000


def test_no_autoencoder_latent_zero(train_model, small_train):
    model = train_model(small_train, "lat0", latent_dim=0)
    assert not any(k.startswith("net/encoder") for k in model["arrays"])
    est = DeepzEstimator.make_stage(name="est_lat0", model=model, hdf5_groupname="", output_mode="return")
    assert np.isfinite(est.estimate(small_train).data.ancil["zmode"]).all()


def test_the_simulations_decide_beyond_the_spec_z_range(train_model, small_train, sims, pretrained):
    """A model pretrained on simulations distils its compact network from the range-gated teacher (meta
    ``compact.range_gate``, at the spec-z sample's 99th redshift percentile) and keeps the pretrained
    network for the ``confidence`` column; sims_beyond_range=False or no simulations: neither."""
    gated = train_model(small_train, "gate_on", pretrained=pretrained)
    gate = gated["meta"]["compact"]["range_gate"]
    assert gate["z_high"] == pytest.approx(np.percentile(small_train["redshift"], 99), abs=1e-4)
    assert 0.0 < gate["mean_gate"] <= 1.0 and 0.0 <= gate["beyond_share"] < 1.0
    sims_keys = [k for k in gated["arrays"] if k.startswith("simulations/")]
    assert sims_keys and "simulation_network" in gated["meta"]
    for k in sims_keys:  # the pretrained network as it was
        np.testing.assert_array_equal(gated["arrays"][k], pretrained["arrays"][k[len("simulations/"):]])
    plain = train_model(small_train, "gate_off", pretrained=pretrained, sims_beyond_range=False)
    assert "range_gate" not in plain["meta"]["compact"] and "simulation_network" not in plain["meta"]
    assert not any(k.startswith("simulations/") for k in plain["arrays"])
    for k in plain["arrays"]:  # the same ensemble; only the compact network differs
        if not k.startswith("compact/"):
            np.testing.assert_array_equal(gated["arrays"][k], plain["arrays"][k])
    assert any(not np.array_equal(gated["arrays"][k], plain["arrays"][k]) for k in plain["arrays"]
               if k.startswith("compact/"))
    assert "range_gate" not in train_model(small_train, "gate_scratch")["meta"]["compact"]
    # confidence: ODDS x the pretrained network's probability that zmode is no outlier; NaN without it
    est = DeepzEstimator.make_stage(name="est_gate_on", model=gated, hdf5_groupname="", output_mode="return")
    out = est.estimate(small_train).data.ancil
    conf = np.asarray(out["confidence"])
    assert np.isfinite(conf).all() and (conf >= 0).all() and (conf <= np.asarray(out["odds"]) + 1e-12).all()
    assert conf.std() > 0
    est = DeepzEstimator.make_stage(name="est_gate_off", model=plain, hdf5_groupname="", output_mode="return")
    assert np.isnan(np.asarray(est.estimate(small_train).data.ancil["confidence"])).all()
    import torch

    from rail.deepz.estimating import DeepzPredictor

    with pytest.raises(ValueError, match="sims_beyond_range=False"):
        DeepzPredictor(plain, torch.device("cpu")).simulation_mixtures(np.zeros((2, 6), dtype=np.float32))
