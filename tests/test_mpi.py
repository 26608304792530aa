"""Inform under MPI: ensemble members spread over 2 ranks, gathered into one model on rank 0.

Runs ``mpiexec -n 2 python <script>`` (skipped when mpiexec or mpi4py is missing) and checks that
the model has every member and equals the model one process trains with the same seed.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import needs_mpi
from rail.deepz.model_io import load_model
from rail.estimation.algos.deepz import DeepzInformer

SCRIPT = """
import json, sys
import numpy as np, tables_io
from mpi4py import MPI
from rail.utils.path_utils import find_rail_file
from rail.estimation.algos.deepz import DeepzInformer

config, path = json.loads(sys.argv[1]), sys.argv[2]
table = tables_io.read(find_rail_file("examples_data/testdata/test_dc2_training_9816.hdf5"))["photometry"]
table = {k: np.asarray(v[:1000]) for k, v in table.items()}
stage = DeepzInformer.make_stage(name="inform_mpi", model=path, hdf5_groupname="", comm=MPI.COMM_WORLD,
                                 num_threads=1, **config)
stage.inform(table)
print(f"rank {MPI.COMM_WORLD.Get_rank()} done", flush=True)
"""



@pytest.mark.mpi
@needs_mpi
def test_two_rank_inform_equals_one_process(tiny, small_train, in_tmp, one_torch_thread):
    config = tiny(n_folds=3)  # 3 members: ranks train 2 + 1
    script = in_tmp / "inform_mpi.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    res = subprocess.run(["mpiexec", "-n", "2", sys.executable, str(script), json.dumps(config), "mpi.npz"],
                         cwd=in_tmp, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "rank 0 done" in res.stdout and "rank 1 done" in res.stdout
    mpi = load_model(str(in_tmp / "mpi.npz"))
    assert mpi["meta"]["n_members"] == 3 and len(mpi["meta"]["training"]["best_val_loss"]) == 3

    serial = DeepzInformer.make_stage(name="inform_serial", model="serial.npz", hdf5_groupname="", **config)
    serial.inform(small_train)
    one = serial.get_data("model")
    assert mpi["arrays"].keys() == one["arrays"].keys()
    for key, arr in one["arrays"].items():
        np.testing.assert_array_equal(mpi["arrays"][key], arr, err_msg=key)
    assert mpi["meta"]["calibration"] == one["meta"]["calibration"]
    assert mpi["meta"]["training"]["best_epoch"] == one["meta"]["training"]["best_epoch"]
