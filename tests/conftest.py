import os
import shutil

import numpy as np
import pytest
import torch
import tables_io
from rail.utils.path_utils import find_rail_file

BANDS = [f"mag_{b}_lsst" for b in "ugrizy"]
ERR_BANDS = [f"mag_err_{b}_lsst" for b in "ugrizy"]

# small, fast informer settings for plumbing tests (use the ``tiny`` fixture)
_TINY = dict(
    epochs_per_step=[3, 1, 1],
    n_folds=2,
    encoder_layers=[16, 16],
    decoder_layers=[16, 16],
    mdn_layers=[16, 16],
    n_gaussians=3,
    batch_size=64,
    seed=11,
)


@pytest.fixture(scope="session")
def tiny():
    """The one set of small, fast DeepzInformer settings: ``tiny(**overrides)`` returns a new dict."""
    def settings(**overrides):
        return {**_TINY, **overrides}
    return settings


def _read(rel):
    return tables_io.read(find_rail_file(rel))["photometry"]


@pytest.fixture(scope="session")
def dc2_train():
    return _read("examples_data/testdata/test_dc2_training_9816.hdf5")


@pytest.fixture(scope="session")
def dc2_valid():
    return _read("examples_data/testdata/test_dc2_validation_9816.hdf5")


@pytest.fixture(scope="session")
def dc2_valid_path():
    return find_rail_file("examples_data/testdata/test_dc2_validation_9816.hdf5")


@pytest.fixture()
def small_train(dc2_train):
    """1,000 DC2 training rows (a copy, safe to modify)."""
    return {k: np.array(v[:1000]) for k, v in dc2_train.items()}


@pytest.fixture()
def in_tmp(tmp_path):
    old = os.getcwd()
    os.chdir(tmp_path)
    yield tmp_path
    os.chdir(old)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small tensors: one torch thread is much faster on a busy machine; restored afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def mpi_available() -> bool:
    """mpiexec on PATH and mpi4py importable (the MPI tests skip otherwise)."""
    if shutil.which("mpiexec") is None:
        return False
    try:
        import mpi4py  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
        return False
    return True


needs_mpi = pytest.mark.skipif(not mpi_available(), reason="mpiexec or mpi4py not installed")

# tests with these markers are also slow: `pytest -m "not slow"` leaves them all out
_SLOW_KINDS = ("mpi", "notebooks", "pipelines", "docs")


def pytest_collection_modifyitems(config, items):  # pylint: disable=unused-argument
    for item in items:
        if any(item.get_closest_marker(kind) for kind in _SLOW_KINDS) and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)
