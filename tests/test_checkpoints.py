"""Interrupted training resumes from per-epoch checkpoints and ends with the exact model of an
uninterrupted run; stale checkpoints of another configuration are ignored; checkpoints are
removed once the model is saved."""

import os
import stat

import numpy as np
import pytest

from rail.deepz import DeepzInformer
from rail.deepz import checkpoint as ckpt_mod
from rail.deepz.model_io import load_model


N_EPOCHS = 6


@pytest.fixture(scope="module")
def data(dc2_train):
    return {k: np.array(v[:300]) for k, v in dc2_train.items()}


@pytest.fixture(scope="module")
def sims(dc2_train):
    return {k: np.array(v[300:700]) for k, v in dc2_train.items()}


class Interrupt(Exception):
    pass


@pytest.fixture()
def saves(monkeypatch):
    """Counts checkpoint saves per file; ``stop_after[phase] = k`` interrupts after the k-th save."""
    real_save = ckpt_mod.EpochCheckpoint.save
    record = dict(count={}, stop_after={}, folders=set())

    def save(self, fp, state):
        real_save(self, fp, state)
        phase = os.path.basename(self.path).split(".")[0]
        record["count"][phase] = record["count"].get(phase, 0) + 1
        record["folders"].add(os.path.dirname(self.path))
        if record["stop_after"].get(phase) == record["count"][phase]:
            raise Interrupt(f"killed after {record['count'][phase]} epochs of {phase}")

    monkeypatch.setattr(ckpt_mod.EpochCheckpoint, "save", save)
    return record


@pytest.fixture()
def inform(tiny):
    """Train to a model file with the tiny settings: ``inform(folder, data, name, sims, **options)``."""
    return lambda folder, data, name="ck", sims=None, **kw: _inform(
        tiny(**{**dict(epochs_per_step=[3, 2, 1], batch_size=100, seed=5, dropout=0.1, hdf5_groupname="",
                       checkpoint_interval=0.0), **kw}),
        folder, data, name, sims)


def _inform(cfg, tmp_path, data, name, sims):
    path = str(tmp_path / f"{name}.npz")
    stage = DeepzInformer.make_stage(name=name, model=path, **cfg)
    stage.inform(data, sims=sims)
    return load_model(path)


def _assert_same(a, b):
    assert a["arrays"].keys() == b["arrays"].keys()
    for key in a["arrays"]:
        np.testing.assert_array_equal(a["arrays"][key], b["arrays"][key], err_msg=key)
    for key in ("calibration", "calibration_info"):
        assert a["meta"][key] == b["meta"][key]
    for key in ("best_epoch", "best_val_loss", "train_loss"):
        assert a["meta"]["training"][key] == b["meta"]["training"][key], key


def test_interrupted_training_resumes_to_the_same_model(inform, tmp_path, data, saves, one_torch_thread):
    opts = dict(outlier_fraction=0.2)  # batch augmentation: one more random stream to restore
    reference = inform(tmp_path / "ref", data, checkpoint_dir="none", **opts)
    assert saves["count"] == {}  # checkpoints off: nothing written

    saves["stop_after"]["train"] = 2
    with pytest.raises(Interrupt):
        inform(tmp_path, data, **opts)
    folder = str(tmp_path / "ck_checkpoints")  # 'auto': next to the model file
    assert saves["folders"] == {folder} and os.listdir(folder) == ["train.ckpt"]
    assert not os.path.exists(tmp_path / "ck.npz")

    saves["count"].clear()
    saves["stop_after"].clear()
    resumed = inform(tmp_path, data, **opts)
    assert saves["count"]["train"] == N_EPOCHS - 2  # resumed, not started again
    _assert_same(resumed, reference)
    assert not os.path.exists(folder)  # removed once the model is saved


def test_pretraining_is_not_repeated_when_fine_tuning_is_interrupted(inform, tmp_path, data, sims, saves, one_torch_thread):
    # simulations mixed into fine-tuning batches: their augmentation generator is restored too
    opts = dict(pretrain_epochs_per_step=[2, 1], pretrain_batch_size=200, finetune_sim_fraction=0.2)
    reference = inform(tmp_path / "ref", data, sims=sims, checkpoint_dir="", **opts)
    saves["stop_after"]["train"] = 3
    with pytest.raises(Interrupt):
        inform(tmp_path, data, sims=sims, **opts)
    assert saves["count"] == {"pretrained": 3, "train": 3}
    saves["count"].clear()
    saves["stop_after"].clear()
    resumed = inform(tmp_path, data, sims=sims, **opts)
    assert saves["count"] == {"train": N_EPOCHS - 3}  # the pretraining was complete: restored, not rerun
    _assert_same(resumed, reference)


def test_checkpoint_of_another_configuration_is_ignored(inform, tmp_path, data, saves, one_torch_thread):
    folder = str(tmp_path / "ckpts")
    saves["stop_after"]["train"] = 2
    with pytest.raises(Interrupt):
        inform(tmp_path, data, checkpoint_dir=folder)
    saves["count"].clear()
    saves["stop_after"].clear()
    other = inform(tmp_path, data, checkpoint_dir=folder, seed=6)  # another seed: a different training
    assert saves["count"]["train"] == N_EPOCHS  # started afresh
    _assert_same(other, inform(tmp_path / "ref", data, checkpoint_dir="none", seed=6))
    assert not os.path.exists(folder)


def test_damaged_checkpoint_starts_afresh(inform, tmp_path, data, saves, one_torch_thread):
    folder = tmp_path / "ckpts"
    saves["stop_after"]["train"] = 1
    with pytest.raises(Interrupt):
        inform(tmp_path, data, checkpoint_dir=str(folder))
    path = folder / "train.ckpt"
    path.write_bytes(path.read_bytes()[:100])  # truncated
    saves["count"].clear()
    saves["stop_after"].clear()
    model = inform(tmp_path, data, checkpoint_dir=str(folder))
    assert saves["count"]["train"] == N_EPOCHS
    _assert_same(model, inform(tmp_path / "ref", data, checkpoint_dir="none"))


def test_checkpoint_files_are_written_atomically_and_hold_no_code(tmp_path, monkeypatch):
    import torch

    cp = ckpt_mod.EpochCheckpoint(str(tmp_path / "x.ckpt"))
    cp.save("fp1", dict(a=torch.arange(3), info="{}"))
    before = (tmp_path / "x.ckpt").read_bytes()
    real = torch.save

    def crash(obj, f, *a, **k):
        real(obj, f, *a, **k)
        f.truncate(10)
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_mod.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        cp.save("fp1", dict(a=torch.arange(5), info="{}"))
    assert (tmp_path / "x.ckpt").read_bytes() == before and os.listdir(tmp_path) == ["x.ckpt"]
    assert cp.load("fp1")["a"].tolist() == [0, 1, 2]
    assert cp.load("fp2") is None  # another fingerprint


def test_fingerprint_sees_data_and_options():
    a = ckpt_mod.fingerprint(dict(lr=[1e-3]), np.arange(4.0))
    assert a == ckpt_mod.fingerprint(dict(lr=[1e-3]), np.arange(4.0))
    assert a != ckpt_mod.fingerprint(dict(lr=[1e-4]), np.arange(4.0))
    assert a != ckpt_mod.fingerprint(dict(lr=[1e-3]), np.arange(4.0) + 1e-9)
    assert a != ckpt_mod.fingerprint(dict(lr=[1e-3]), np.arange(4.0).astype(np.float32))


def test_checkpoint_dir_option(tmp_path):
    stage = DeepzInformer.make_stage(name="cd1", model=str(tmp_path / "m.npz"))
    assert stage.checkpoint_folder() == str(tmp_path / "m_checkpoints")
    assert DeepzInformer.make_stage(name="cd2", output_mode="return").checkpoint_folder() is None
    assert DeepzInformer.make_stage(name="cd3", checkpoint_dir="none").checkpoint_folder() is None
    assert DeepzInformer.make_stage(name="cd4", checkpoint_dir="/x/y").checkpoint_folder() == "/x/y"


def test_checkpoint_interval_saves_less_often_same_result(inform, tmp_path, data, saves, one_torch_thread):
    model = inform(tmp_path, data, checkpoint_interval=3600.0)
    assert saves["count"]["train"] == 1  # the first epoch only, then not due again
    _assert_same(model, inform(tmp_path / "ref", data, checkpoint_dir="none"))


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_checkpoint_files_follow_the_umask(tmp_path, mask):
    """Checkpoints get 0o666 & ~umask like any other output, not mkstemp's owner-only 0600."""
    import torch

    old = os.umask(mask)
    try:
        cp = ckpt_mod.EpochCheckpoint(str(tmp_path / "x.ckpt"))
        cp.save("fp1", dict(a=torch.arange(3), info="{}"))
        assert stat.S_IMODE(os.stat(tmp_path / "x.ckpt").st_mode) == 0o666 & ~mask
    finally:
        os.umask(old)
