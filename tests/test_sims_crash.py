"""DeepzSimCreator crash safety: a run that dies leaves nothing under the final name; a re-run
writes the complete catalogue (the same as an uninterrupted run) and leaves no temporary file."""

import os

import numpy as np
import pytest
import tables_io

from rail.creation.engines import deepz_sims
from rail.creation.engines.deepz_sims import DeepzSimCreator


N = 12


def _stage(path, name="sims_crash"):
    return DeepzSimCreator.make_stage(name=name, n_samples=N, seed=4, model="None", output=str(path))


@pytest.fixture(scope="module")
def reference():
    """The catalogue of an uninterrupted run (in memory)."""
    stage = DeepzSimCreator.make_stage(name="sims_ref", n_samples=N, seed=4, model="None", output_mode="return")
    return stage.sample(N, 4)()["photometry"]


def _assert_complete(path, ref):
    cat = tables_io.read(str(path))["photometry"]
    assert cat.keys() == ref.keys()
    for key in ref:
        np.testing.assert_array_equal(cat[key], ref[key], err_msg=key)
    assert [f for f in os.listdir(os.path.dirname(path)) if "inprogress" in f or f.startswith(".")] == []


def test_crash_while_writing(tmp_path, monkeypatch, reference):
    out = tmp_path / "sims.hdf5"
    real_write = tables_io.write

    def crash(data, path, *args, **kwargs):  # half a file, then the process dies
        real_write(data, path, *args, **kwargs)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(tables_io, "write", crash)
    with pytest.raises(KeyboardInterrupt):
        _stage(out).sample(N, 4)
    assert not out.exists()  # nothing that looks complete
    monkeypatch.setattr(tables_io, "write", real_write)
    _stage(out).sample(N, 4)  # the re-run completes it
    _assert_complete(out, reference)


def test_crash_while_simulating(tmp_path, monkeypatch, reference):
    out = tmp_path / "sims.hdf5"

    def crash(*args, **kwargs):
        raise MemoryError("out of memory")

    monkeypatch.setattr(deepz_sims, "simulate_catalogue", crash)
    with pytest.raises(MemoryError):
        _stage(out).sample(N, 4)
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()
    _stage(out).sample(N, 4)
    _assert_complete(out, reference)


def test_rerun_replaces_a_stale_partial_file(tmp_path, reference):
    out = tmp_path / "sims.hdf5"
    (tmp_path / "inprogress_sims.hdf5").write_bytes(b"\x89HDF\r\n\x1a\n garbage from a killed run")
    _stage(out).sample(N, 4)
    _assert_complete(out, reference)
