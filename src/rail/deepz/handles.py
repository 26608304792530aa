"""RAIL data handles of pz-rail-deepz: the model file, and the estimator's output under MPI.

:class:`DeepzModelHandle` reads and writes model files through :mod:`rail.deepz.model_io`
(numpy archive + JSON metadata, no pickle).

:class:`TurnTakingQPHandle` writes DeepzEstimator output under MPI when h5py has no parallel
(MPI-IO) driver.

RAIL's estimators write one HDF5 file collectively (``h5py`` built with MPI). Without that
driver, the ranks still write one file, but in turn: rank 0 creates it with every dataset sized
for all rows (qp's layout, its ``meta`` group included) and closes it; chunk i (processed by rank
i % N) is written once chunk i - 1 is, by opening the file, writing the chunk's rows at their
global position and closing it, after which its rank passes the turn (an MPI message) to the
rank of chunk i + 1. Only the writes are serialised: a rank computes its next chunk while the
others write, so the cost is about one chunk's write, with no copy of the output at the end. The
file holds exactly the rows and values a one-process run writes; it is written under ceci's
``inprogress_`` name and renamed only when the stage finishes, so a crash never leaves a file
that looks complete.
"""

from __future__ import annotations

from typing import Any

import h5py
from rail.core.data import ModelHandle, QPHandle

from .model_io import load_model, save_model

__all__ = ["DeepzModelHandle", "rank_ranges", "TurnTakingQPHandle", "parallel_hdf5_available"]

_TURN_TAG = 7301  # MPI tag of the "chunk i is written" messages


def parallel_hdf5_available() -> bool:
    """True when h5py was built with MPI (collective writes to one file are possible)."""
    return bool(h5py.get_config().mpi)


def rank_ranges(n_rows: int, chunk_size: int, size: int, rank: int) -> list[tuple[int, int]]:
    """Row ranges [start, end) of the chunks rank ``rank`` of ``size`` processes (chunk i -> rank i % size)."""
    n_chunks = -(-n_rows // chunk_size)
    return [(i * chunk_size, min((i + 1) * chunk_size, n_rows)) for i in range(rank, n_chunks, size)]


class TurnTakingQPHandle(QPHandle):
    """A QPHandle whose chunks, from all MPI ranks, go to one HDF5 file, one rank at a time.

    Call :meth:`set_turns` before writing. ``initialize_write`` creates the file on rank 0 (the
    rank of chunk 0, whose ensemble gives the layout) and is a no-op elsewhere; ``write_chunk``
    waits for the turn of its chunk, writes and passes the turn on; ``finalize_write`` has
    nothing left to do (the ``meta`` group is written with the layout).
    """

    def set_turns(self, comm: Any, n_rows: int, chunk_size: int) -> None:
        """Rows are dealt in chunks of ``chunk_size``, chunk i to rank i % comm size."""
        self.comm = comm
        self.chunk_size = int(chunk_size)
        self.n_chunks = -(-int(n_rows) // self.chunk_size)
        self.ranges = rank_ranges(n_rows, chunk_size, comm.Get_size(), comm.Get_rank())

    def initialize_write(self, data_length: int, **kwargs: Any) -> None:
        if self.comm.Get_rank() == 0:
            if self.path is None:  # pragma: no cover
                raise ValueError("QPHandle.initialize_write() called but path has not been specified")
            _, fout = self.data.initializeHdf5Write(self.path, data_length, None)
            self.data.finalizeHdf5Write(fout)  # writes the meta group and closes the file

    def write_chunk(self, start: int, end: int, **kwargs: Any) -> None:
        if (start, end) not in self.ranges:
            raise RuntimeError(f"rows {start}-{end} are not among this rank's expected chunks {self.ranges}")
        if self.data is None:
            raise ValueError(f"QPHandle.write_chunk() called for path {self.path} with no data")
        i = start // self.chunk_size
        size = self.comm.Get_size()
        if i > 0:
            done = self.comm.recv(source=(i - 1) % size, tag=_TURN_TAG)
            if done != i - 1:
                raise RuntimeError(f"output turn-taking out of order: chunk {i} got the turn of chunk {done + 1}")
        with h5py.File(self.path, "r+") as fout:
            # the row groups only: qp writes every group it is given, and meta is already there
            self.data.writeHdf5Chunk({k: g for k, g in fout.items() if k != "meta"}, start, end)
        if i + 1 < self.n_chunks:
            self.comm.send(i, dest=(i + 1) % size, tag=_TURN_TAG)

    def finalize_write(self, **kwargs: Any) -> None:
        return None


class DeepzModelHandle(ModelHandle):
    """RAIL data handle for Deepz model files (numpy archive + JSON metadata, no pickle).

    ``suffix`` is RAIL's model suffix, ``pkl``: in ceci pipelines the informer writes
    ``<output_dir>/model_<stage>.pkl``, the name RAIL's tools expect for any estimator's model
    (pz-rail-pipelines' ``EstimatePipeline``, rail_projects' ``model_inform_<algo>.pkl``). The file is
    still a numpy zip archive, never a pickle: :func:`~rail.deepz.model_io.load_model` recognises the
    format by content, whatever the file is called, so explicit paths such as ``model="deepz_model.npz"``
    work as before.
    """

    suffix = "pkl"

    @classmethod
    def _open(cls, path: str, **kwargs: Any) -> Any:
        if kwargs.get("mode", "r") == "w":
            raise NotImplementedError("DeepzModelHandle writes through write(), not open(mode='w')")
        return load_model(path)

    @classmethod
    def _read(cls, path: str, **kwargs: Any) -> dict:
        return load_model(path)

    @classmethod
    def _write(cls, data: Any, path: str, **kwargs: Any) -> None:
        save_model(data, path)
