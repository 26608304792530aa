"""DeepzEstimator output: compact mixtures, MPI (2 ranks == 1 process), crash safety, turn-taking writes."""

import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import qp
import tables_io
import torch

from conftest import needs_mpi
from rail.deepz import DeepzEstimator, DeepzInformer
from rail.deepz import mixture as MX
from rail.deepz.handles import TurnTakingQPHandle, rank_ranges
from rail.deepz.schema import OptionError

N_ROWS = 1300


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory, dc2_train, dc2_valid):
    """A tiny model file and a 1,300-row input file (group 'photometry')."""
    tmp = tmp_path_factory.mktemp("est_out")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    train = {k: np.asarray(v[:1500]) for k, v in dc2_train.items()}
    stage = DeepzInformer.make_stage(name="inform_out", model=str(tmp / "model.npz"), hdf5_groupname="", **tiny())
    stage.inform(train)
    torch.set_num_threads(old)
    inp = tmp / "input.hdf5"
    tables_io.write({"photometry": {k: np.asarray(v[:N_ROWS]) for k, v in dc2_valid.items()}}, str(inp))
    return tmp, str(tmp / "model.npz"), str(inp)


def _run(name, model, inp, out, **kw):
    stage = DeepzEstimator.make_stage(name=name, model=model, input=inp, output=out, hdf5_groupname="photometry",
                                      num_threads=1, **kw)
    stage.run()
    stage.finalize()
    return stage


def _datasets(path):
    with h5py.File(path, "r") as f:
        names = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        return {n: f[n][()] for n in names}


def _one_process_reference(trained, name):
    """(tmp folder, model, input, path of a one-process output with chunk_size 300)."""
    tmp, model, inp = trained
    one = str(tmp / f"{name}.hdf5")
    _run(name, model, inp, one, chunk_size=300)
    return tmp, model, inp, one


def _assert_same_datasets(path_a, path_b):
    a, b = _datasets(path_a), _datasets(path_b)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_rank_ranges_cover_every_row_once():
    for n, chunk, size in [(1300, 300, 2), (10, 3, 4), (5, 10, 2), (1000, 100, 3)]:
        rows = sorted(r for rank in range(size) for r in rank_ranges(n, chunk, size, rank))
        assert rows[0][0] == 0 and rows[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(rows, rows[1:]))


class _FakeComm:
    """mpi4py-like communicator of one of several 'ranks' run one after the other in this process."""

    def __init__(self, rank, size, mailbox):
        self.rank, self.size, self.mailbox = rank, size, mailbox

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size

    def send(self, obj, dest, tag):
        self.mailbox.setdefault((self.rank, dest, tag), []).append(obj)

    def recv(self, source, tag):
        queue = self.mailbox.get((source, self.rank, tag))
        assert queue, f"rank {self.rank} would block: nothing from rank {source}"
        return queue.pop(0)


def _ensemble(rows):
    z = np.asarray(rows, dtype=float)
    return qp.Ensemble(qp.mixmod, data=dict(weights=np.ones((len(z), 1)), means=z[:, None] / 10,
                                            stds=np.full((len(z), 1), 0.1)), ancil=dict(zmode=z / 10))


def test_turn_taking_writes_every_rank_chunk_in_place(tmp_path):
    """3 'ranks', 7 rows in chunks of 2: chunk i (rank i % 3) written in turn, rows at their global place."""
    path = str(tmp_path / "out.hdf5")
    mailbox = {}
    handles = []
    for rank in range(3):
        h = TurnTakingQPHandle("output", path=path, data=_ensemble(range(2)))
        h.set_turns(_FakeComm(rank, 3, mailbox), 7, 2)
        handles.append(h)
    handles[0].initialize_write(7)
    handles[1].initialize_write(7)  # no-op on the other ranks
    for start in range(0, 7, 2):  # the turn order
        end = min(start + 2, 7)
        h = handles[(start // 2) % 3]
        h.set_data(_ensemble(range(start, end)), partial=True)
        h.write_chunk(start, end)
    for h in handles:
        h.finalize_write()
    out = qp.read(path)
    np.testing.assert_array_equal(out.ancil["zmode"], np.arange(7) / 10)
    np.testing.assert_array_equal(out.objdata["means"][:, 0], np.arange(7) / 10)
    assert not any(mailbox.values())  # every turn was taken


def test_turn_taking_rejects_a_chunk_of_another_rank_and_waits_its_turn(tmp_path):
    path = str(tmp_path / "out.hdf5")
    mailbox = {}
    h0, h1 = (TurnTakingQPHandle("output", path=path, data=_ensemble(range(2))) for _ in range(2))
    h0.set_turns(_FakeComm(0, 2, mailbox), 6, 2)
    h1.set_turns(_FakeComm(1, 2, mailbox), 6, 2)
    with pytest.raises(RuntimeError, match="not among this rank's expected chunks"):
        h1.write_chunk(0, 2)
    with pytest.raises(AssertionError, match="would block"):  # chunk 1 before chunk 0 was written
        h1.write_chunk(2, 4)


def test_compact_output_preserves_moments_and_calibration(trained, dc2_valid):
    tmp, model, inp = trained
    # a range wide enough that folding into [zmin, zmax] leaves the tiny model's wide PDFs alone; the
    # ensemble's members (the compact network has only n_gaussians components)
    wide = dict(pdf_dtype="float64", zmin=-20.0, zmax=20.0, network="ensemble")
    full = qp.read(_run("est_full", model, inp, str(tmp / "full.hdf5"), **wide).get_output("output", final_name=True))
    small = qp.read(_run("est_small", model, inp, str(tmp / "small.hdf5"), n_output_components=2,
                         **wide).get_output("output", final_name=True))
    wf, ws = full.objdata["weights"], small.objdata["weights"]
    assert ws.shape == (N_ROWS, 2) and wf.shape[1] == 6  # 2 members x 3 Gaussians
    np.testing.assert_allclose(ws.sum(-1), 1.0, atol=1e-12)
    assert np.all(small.objdata["stds"] > 0)
    # merging preserves each PDF's mean and variance exactly
    np.testing.assert_allclose(small.ancil["zmean"], full.ancil["zmean"], atol=1e-12)
    np.testing.assert_allclose(small.ancil["zstd"], full.ancil["zstd"], atol=1e-10)
    # PIT values barely move
    z = torch.as_tensor(np.asarray(dc2_valid["redshift"][:N_ROWS], dtype=np.float64))
    pit = [MX.cdf(z, *(torch.as_tensor(e.objdata[k]) for k in ("weights", "means", "stds"))).numpy()
           for e in (full, small)]
    assert np.median(np.abs(pit[0] - pit[1])) < 0.02


@pytest.mark.parametrize("pdf_dtype", ["float32", "float64"])
@pytest.mark.parametrize("n_out", [0, 2])
def test_pdfs_stay_inside_zmin_zmax(trained, dc2_valid, pdf_dtype, n_out):
    """Every component mean and point estimate in [zmin, zmax], little mass outside, CDFs never above 1.

    The tiny model's PDFs are wide and its galaxies at z < 0.35: most of them reach below zmin.
    """
    from qp.metrics.pit import PIT

    tmp, model, inp = trained
    for zmin, zmax in ((0.0, 3.0), (0.1, 0.25)):
        path = str(tmp / f"range_{pdf_dtype}_{n_out}_{zmin}.hdf5")
        ens = qp.read(_run("est_range", model, inp, path, pdf_dtype=pdf_dtype, n_output_components=n_out,
                           zmin=zmin, zmax=zmax).get_output("output", final_name=True))
        w, m, s = (np.asarray(ens.objdata[k], dtype=np.float64) for k in ("weights", "means", "stds"))
        assert np.all((m >= zmin) & (m <= zmax))
        for key in ("zmode", "zmean", "zmedian"):
            assert np.all((ens.ancil[key] >= zmin) & (ens.ancil[key] <= zmax)), key
        from scipy.special import ndtr
        outside = (w * (ndtr((zmin - m) / s) + ndtr((m - zmax) / s))).sum(-1)
        assert outside.max() < 0.1 and outside.mean() < 0.05  # two passes leave <= 4% of a component outside
        # exact sums in any order: qp's renormalisation keeps them, no CDF exceeds 1
        assert np.all(w.sum(-1) == 1.0) and np.all(np.asarray(ens.objdata["weights"]).sum(-1) == 1.0)
        pit = PIT(ens, np.asarray(dc2_valid["redshift"][:N_ROWS]))._pit_samps
        assert np.all((pit >= 0.0) & (pit <= 1.0))


def test_zmin_must_be_below_zmax(trained):
    tmp, model, inp = trained
    with pytest.raises(OptionError, match="'zmin'.*'zmax'"):
        _run("est_bad_range", model, inp, str(tmp / "bad.hdf5"), zmin=2.0, zmax=1.0)


def test_one_gaussian_output_is_moment_matched(trained):
    tmp, model, inp = trained
    one = qp.read(_run("est_one", model, inp, str(tmp / "one.hdf5"), pdf_dtype="float64",
                       n_output_components=1).get_output("output", final_name=True))
    assert one.objdata["weights"].shape == (N_ROWS, 1)
    np.testing.assert_allclose(one.objdata["means"][:, 0], one.ancil["zmean"], atol=1e-12)
    np.testing.assert_allclose(one.objdata["stds"][:, 0], one.ancil["zstd"], rtol=1e-9)


def test_crash_mid_catalogue_leaves_no_complete_file_and_rerun_completes(trained, monkeypatch):
    tmp, model, inp = trained
    out = str(tmp / "crash.hdf5")
    calls = {"n": 0}
    original = DeepzEstimator._process_chunk

    def failing(self, start, end, data, first):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash")
        return original(self, start, end, data, first)

    monkeypatch.setattr(DeepzEstimator, "_process_chunk", failing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run("est_crash", model, inp, out, chunk_size=500)
    assert not os.path.exists(out)  # only ceci's inprogress_ file exists
    monkeypatch.setattr(DeepzEstimator, "_process_chunk", original)
    _run("est_crash2", model, inp, out, chunk_size=500)
    assert qp.read(out).npdf == N_ROWS


MPI_SCRIPT = """
import sys
from mpi4py import MPI
from rail.deepz import DeepzEstimator
model, inp, out = sys.argv[1:4]
stage = DeepzEstimator.make_stage(name="est_mpi", model=model, input=inp, output=out, chunk_size=300,
                                  hdf5_groupname="photometry", num_threads=1)
stage.setup_mpi(MPI.COMM_WORLD)
stage.run()
stage.finalize()
print(f"rank {MPI.COMM_WORLD.Get_rank()} done", flush=True)
"""



@pytest.mark.mpi
@needs_mpi
def test_two_rank_estimate_equals_one_process(trained):
    tmp, model, inp, one = _one_process_reference(trained, "est_1rank")
    script = tmp / "est_mpi.py"
    script.write_text(MPI_SCRIPT)
    two = str(tmp / "two_ranks.hdf5")
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    res = subprocess.run(["mpiexec", "-n", "2", sys.executable, str(script), model, inp, two], cwd=tmp, env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "rank 1 done" in res.stdout
    _assert_same_datasets(one, two)


def test_reduced_precision_is_close_to_float32(trained):
    tmp, model, inp = trained
    ref = qp.read(_run("est_f32", model, inp, str(tmp / "f32.hdf5")).get_output("output", final_name=True))
    bf = qp.read(_run("est_bf16", model, inp, str(tmp / "bf16.hdf5"),
                      precision="bfloat16").get_output("output", final_name=True))
    dz = np.abs(bf.ancil["zmode"] - ref.ancil["zmode"]) / (1 + ref.ancil["zmode"])
    assert np.median(dz) < 0.005 and np.all(np.isfinite(bf.objdata["stds"]))
    assert not np.array_equal(bf.ancil["zmode"], ref.ancil["zmode"])  # it did run in bfloat16
    with pytest.raises(ValueError, match="precision"):
        DeepzEstimator.make_stage(name="est_badprec", model=model, precision="float8").validate()


def test_float32_pdfs_are_the_rounded_float64_pdfs(trained):
    tmp, model, inp = trained
    f64 = qp.read(_run("est_d64", model, inp, str(tmp / "d64.hdf5"), pdf_dtype="float64", network="ensemble")
                  .get_output("output", final_name=True))
    f32 = qp.read(_run("est_d32", model, inp, str(tmp / "d32.hdf5"), network="ensemble").get_output(
        "output", final_name=True))
    assert f32.objdata["means"].dtype == np.float32 and f64.objdata["means"].dtype == np.float64
    for key in ("means", "stds"):
        np.testing.assert_array_equal(f32.objdata[key], f64.objdata[key].astype(np.float32))
    np.testing.assert_allclose(f32.ancil["zmode"], f64.ancil["zmode"], atol=1e-5)
    assert os.path.getsize(tmp / "d32.hdf5") < 0.7 * os.path.getsize(tmp / "d64.hdf5")  # 6 components + ancil


@pytest.mark.mpi
@pytest.mark.pipelines
@needs_mpi
def test_ceci_estimate_stage_with_nprocess_2_equals_one_process(trained):
    """The estimate stage as ceci runs it with ``nprocess: 2`` (mpiexec ... --mpi) == one process."""
    import yaml

    tmp, model, inp, one = _one_process_reference(trained, "est_ceci_ref")
    folder = tmp / "ceci_mpi"
    folder.mkdir()
    pipe = dict(
        output_dir="out", log_dir="logs", resume=False, config="config.yml", modules="rail",
        inputs=dict(input_test=inp, model_inform_deepz=model),
        stages=[dict(name="estimate_deepz", classname="DeepzEstimator", module_name="rail.estimation.algos.deepz",
                     nprocess=2, threads_per_process=1,
                     aliases=dict(input="input_test", model="model_inform_deepz", output="output_estimate_deepz"))],
        site=dict(name="local", max_threads=2, mpi_command="mpiexec -n"),
    )
    config = dict(estimate_deepz=dict(name="estimate_deepz", hdf5_groupname="photometry", chunk_size=300,
                                      num_threads=1))
    (folder / "pipe.yml").write_text(yaml.safe_dump(pipe))
    (folder / "config.yml").write_text(yaml.safe_dump(config))
    ceci = shutil.which("ceci") or os.path.join(os.path.dirname(sys.executable), "ceci")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([ceci, "pipe.yml"], cwd=folder, env=env, capture_output=True, text=True, timeout=300,
                         check=False)
    logs = "".join(p.read_text() for p in (folder / "logs").glob("*")) if (folder / "logs").exists() else ""
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:] + logs[-3000:]
    two = folder / "out" / "output_estimate_deepz.hdf5"
    assert "mpiexec -n 2" in res.stdout and "--mpi" in res.stdout  # ceci launched 2 MPI ranks
    _assert_same_datasets(one, str(two))
