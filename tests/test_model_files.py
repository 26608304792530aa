"""Model files: no pickle either way, format version, checksums of arrays and metadata, clear errors
for truncated / tampered / foreign files, atomic writes."""

import json
import os
import pickle
import stat
import zipfile

import numpy as np
import pytest

from rail.deepz import model_io
from rail.deepz.model_io import FORMAT, FORMAT_VERSION, DeepzModel, ModelFormatError, load_model, save_model


def _model():
    rng = np.random.default_rng(0)
    arrays = {"net/mdn.net.0.weight": rng.normal(size=(2, 5, 4)).astype(np.float32),
              "net/mdn.net.1.num_batches_tracked": np.array(3, dtype=np.int64),
              "feature_mean": rng.normal(size=5).astype(np.float32),
              "prior/weights": np.full(4, 0.25)}
    meta = dict(bands=["a", "b"], ref_band="a", calibration=dict(std_scale=1.1, shift=0.0), n_members=2)
    return DeepzModel(format=FORMAT, format_version=FORMAT_VERSION, arrays=arrays, meta=meta)


def _rewrite(path, change):
    """Rewrite an archive entry by entry, ``change(name, bytes) -> bytes``."""
    with zipfile.ZipFile(path) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, change(name, data))


def _header(path):
    with np.load(path, allow_pickle=False) as npz:
        return json.loads(bytes(npz["__meta__"]).decode())


def _write_with_header(path, header, arrays):
    np.savez(path, __meta__=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **arrays)


def test_round_trip_is_exact(tmp_path):
    m = _model()
    path = str(tmp_path / "m.npz")
    save_model(m, path)
    back = load_model(path)
    assert back["meta"] == m["meta"] and back["format_version"] == FORMAT_VERSION
    for key, arr in m["arrays"].items():
        assert back["arrays"][key].dtype == arr.dtype
        np.testing.assert_array_equal(back["arrays"][key], arr)
    header = _header(path)
    assert header["format"] == FORMAT and len(header["sha256"]) == 64 and len(header["meta_sha256"]) == 64


def test_loading_never_unpickles(tmp_path, monkeypatch):
    path = str(tmp_path / "m.npz")
    save_model(_model(), path)

    def refuse(*a, **k):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    load_model(path)
    with zipfile.ZipFile(path) as z:  # every entry is a plain .npy array
        assert all(n.endswith(".npy") for n in z.namelist())


def test_object_arrays_are_refused_when_saving(tmp_path):
    m = _model()
    m["arrays"]["evil"] = np.array([{"a": 1}], dtype=object)
    with pytest.raises(ModelFormatError, match="Python objects"):
        save_model(m, str(tmp_path / "m.npz"))
    assert os.listdir(tmp_path) == []


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def test_a_pickle_payload_in_an_archive_is_not_executed(tmp_path):
    marker = str(tmp_path / "executed")
    path = str(tmp_path / "evil.npz")
    header = dict(format=FORMAT, format_version=FORMAT_VERSION, meta={}, sha256="0")
    np.savez(path, __meta__=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
             payload=np.array([_Exploit(marker)], dtype=object))
    with pytest.raises(ModelFormatError, match="pickled Python objects"):
        load_model(path)
    assert not os.path.exists(marker)
    # a plain pickle file under a model name: refused before reading, nothing executed
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump(_Exploit(marker), f)
    with pytest.raises(ModelFormatError, match="not a pz-rail-deepz model file"):
        load_model(str(tmp_path / "evil.pkl"))
    assert not os.path.exists(marker)


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.99])
def test_truncated_file(tmp_path, fraction):
    path = str(tmp_path / "m.npz")
    save_model(_model(), path)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(int(size * fraction))
    with pytest.raises(ModelFormatError, match="damaged or truncated|not a pz-rail-deepz model file"):
        load_model(path)


def test_tampered_array_fails_the_checksum(tmp_path):
    path = str(tmp_path / "m.npz")
    save_model(_model(), path)

    def flip(name, data):
        if name == "feature_mean.npy":
            data = data[:-1] + bytes([data[-1] ^ 0x01])
        return data

    _rewrite(path, flip)
    with pytest.raises(ModelFormatError, match="failed its checksum"):
        load_model(path)


def test_tampered_metadata_fails_its_checksum(tmp_path):
    path = str(tmp_path / "m.npz")
    m = _model()
    save_model(m, path)
    header = _header(path)
    header["meta"]["calibration"]["std_scale"] = 0.5
    _write_with_header(path, header, m["arrays"])
    with pytest.raises(ModelFormatError, match="metadata checksum"):
        load_model(path)
    # a file written before metadata checksums existed (no 'meta_sha256') still loads
    header = _header(path)
    header.pop("meta_sha256")
    _write_with_header(path, header, m["arrays"])
    assert load_model(path)["meta"]["calibration"]["std_scale"] == 0.5


def test_foreign_and_wrong_version_files(tmp_path):
    m = _model()
    cases = {}
    (tmp_path / "empty.npz").write_bytes(b"")
    cases["empty.npz"] = "not a pz-rail-deepz model file"
    (tmp_path / "text.npz").write_text("hello")
    cases["text.npz"] = "not a pz-rail-deepz model file"
    np.savez(tmp_path / "plain.npz", x=np.arange(3))
    cases["plain.npz"] = "not a pz-rail-deepz model file"
    _write_with_header(str(tmp_path / "other.npz"), dict(format="something-else", format_version=1, meta={}),
                       m["arrays"])
    cases["other.npz"] = "not a pz-rail-deepz model"
    _write_with_header(str(tmp_path / "list.npz"), [1, 2], {})
    cases["list.npz"] = "not a pz-rail-deepz model file"
    header = dict(format=FORMAT, format_version=FORMAT_VERSION + 1, meta=dict(versions={"pz-rail-deepz": "9.0"}),
                  sha256=model_io._checksum(m["arrays"]))
    _write_with_header(str(tmp_path / "newer.npz"), header, m["arrays"])
    cases["newer.npz"] = f"format version {FORMAT_VERSION + 1} .*pz-rail-deepz 9.0.*reads format versions 1, 2, 3, 4, 5, 6"
    for name, pattern in cases.items():
        with pytest.raises(ModelFormatError, match=pattern):
            load_model(str(tmp_path / name))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(str(tmp_path / "absent.npz"))


def test_write_is_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / "m.npz")
    old = _model()
    save_model(old, path)
    before = open(path, "rb").read()
    real_savez = np.savez

    def crash(f, *a, **k):  # write half an archive, then die
        real_savez(f, *a, **k)
        f.truncate(f.tell() // 2)
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(model_io.np, "savez", crash)
    new = _model()
    new["meta"]["n_members"] = 7
    with pytest.raises(KeyboardInterrupt):
        save_model(new, path)
    assert open(path, "rb").read() == before  # the old model is intact
    assert os.listdir(tmp_path) == ["m.npz"]  # no temporary file left behind
    monkeypatch.setattr(model_io.np, "savez", real_savez)
    with pytest.raises(KeyboardInterrupt):
        monkeypatch.setattr(model_io.np, "savez", crash)
        save_model(new, str(tmp_path / "fresh.npz"))
    assert not os.path.exists(tmp_path / "fresh.npz")  # nothing that looks like a model


def test_format_version_1_models_are_read_without_the_ambiguity_narrowing():
    """Models written before format 2 have no calibration 'ambiguity': read, and estimated as before."""
    from rail.deepz.calibration import Calibration
    from rail.deepz.model_io import validate_model

    old = dict(_model(), format_version=1)
    assert validate_model(old) is old
    assert "ambiguity" not in old["meta"]["calibration"]
    assert Calibration(**old["meta"]["calibration"]).ambiguity == 0.0


@pytest.fixture
def umask():
    """Set the process umask for one test, restore it afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_model_files_follow_the_umask(tmp_path, umask, mask):
    """Model files get 0o666 & ~umask like any other output, not mkstemp's owner-only 0600."""
    umask(mask)
    path = tmp_path / "m.npz"
    save_model(_model(), str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~mask
    save_model(_model(), str(path))  # overwriting too
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~mask
    assert os.listdir(tmp_path) == ["m.npz"]


def test_umask_is_read_without_proc(monkeypatch, umask):
    """Where /proc/self/status is missing the umask is read by setting and restoring it."""
    def no_proc(*args, **kwargs):
        raise FileNotFoundError("/proc/self/status")

    umask(0o027)
    assert model_io.current_umask() == 0o027
    monkeypatch.setattr(model_io, "open", no_proc, raising=False)
    assert model_io.current_umask() == 0o027
    assert os.umask(0o027) == 0o027  # restored


def test_a_pickled_model_is_its_archive_and_loads_safely(tmp_path):
    """``pickle.dump(model)`` holds the model file's bytes; load_model admits that and nothing else."""
    m = _model()
    path = tmp_path / "m.pkl"
    with open(path, "wb") as f:
        pickle.dump(m, f)
    assert b"PK\x03\x04" in path.read_bytes()  # the numpy archive, not pickled arrays
    back = load_model(str(path))
    assert back["meta"] == m["meta"]
    for key, arr in m["arrays"].items():
        np.testing.assert_array_equal(back["arrays"][key], arr)
    # a damaged archive inside the pickle fails its checks
    raw = bytearray(path.read_bytes())
    at = raw.index(b"PK\x03\x04") + 200
    raw[at] ^= 0xFF
    (tmp_path / "bad.pkl").write_bytes(bytes(raw))
    with pytest.raises(ModelFormatError):
        load_model(str(tmp_path / "bad.pkl"))
    # other pickles stay refused, whatever they hold
    with open(tmp_path / "dict.pkl", "wb") as f:
        pickle.dump(dict(m), f)
    with pytest.raises(ModelFormatError, match="not a pz-rail-deepz model file"):
        load_model(str(tmp_path / "dict.pkl"))
