"""Writing DeepzEstimator output under MPI when h5py has no parallel (MPI-IO) driver.

RAIL's estimators write one HDF5 file collectively (``h5py`` built with MPI). Without that
driver, every rank writes the chunks it processed to its own part file
(``<output>.rank<r>-of-<n>``, rows in processing order), and after all ranks are done rank 0
copies the parts, dataset by dataset and chunk by chunk, into the single output file. The
result holds exactly the rows and values a one-process run writes. Part files are removed
after the merge; the output itself is written under ceci's ``inprogress_`` name and renamed
only when the stage finishes, so a crash never leaves a file that looks complete.
"""

from __future__ import annotations

import os
from typing import Any

import h5py
from rail.core.data import QPHandle

__all__ = ["rank_ranges", "part_path", "RankPartQPHandle", "merge_parts", "parallel_hdf5_available"]


def parallel_hdf5_available() -> bool:
    """True when h5py was built with MPI (collective writes to one file are possible)."""
    return bool(h5py.get_config().mpi)


def rank_ranges(n_rows: int, chunk_size: int, size: int, rank: int) -> list[tuple[int, int]]:
    """Row ranges [start, end) of the chunks rank ``rank`` of ``size`` processes (chunk i -> rank i % size)."""
    n_chunks = -(-n_rows // chunk_size)
    return [(i * chunk_size, min((i + 1) * chunk_size, n_rows)) for i in range(rank, n_chunks, size)]


def part_path(path: str, rank: int, size: int) -> str:
    """File holding rank ``rank``'s rows of ``path``."""
    return f"{path}.rank{rank}-of-{size}"


class RankPartQPHandle(QPHandle):
    """A QPHandle writing one rank's chunks, packed in processing order, to a part file.

    ``ranges`` are the global row ranges this rank will process; ``write_chunk(start, end)``
    takes global rows and writes them at their packed offset. Collective (MPI) writing is off.
    """

    def set_ranges(self, ranges: list[tuple[int, int]]) -> None:
        self.ranges = list(ranges)
        self._offsets: dict[tuple[int, int], int] = {}
        offset = 0
        for r in self.ranges:
            self._offsets[r] = offset
            offset += r[1] - r[0]
        self._length = offset

    def initialize_write(self, data_length: int, **kwargs: Any) -> None:
        kwargs.pop("communicator", None)
        super().initialize_write(self._length, **kwargs)

    def write_chunk(self, start: int, end: int, **kwargs: Any) -> None:
        offset = self._offsets.get((start, end))
        if offset is None:
            raise RuntimeError(f"rows {start}-{end} are not among this rank's expected chunks {self.ranges}")
        return super().write_chunk(offset, offset + end - start, **kwargs)


def merge_parts(path: str, n_rows: int, parts: list[tuple[str, list[tuple[int, int]]]]) -> None:
    """Copy every part file's rows to their global positions in one new HDF5 file ``path``.

    ``parts``: (part file, its global row ranges in packed order). The ``meta`` group is taken
    from the first part; every other dataset is allocated with ``n_rows`` rows and filled range
    by range (memory bounded by the largest chunk). Part files are deleted afterwards.
    """
    parts = [(p, r) for p, r in parts if r]
    if not parts:
        raise ValueError(f"no part files to merge into {path}")
    covered = sorted(rr for _, ranges in parts for rr in ranges)
    expected_start = 0
    for start, end in covered:
        if start != expected_start:
            raise RuntimeError(f"merging {path}: rows {expected_start}-{start} are missing from the part files")
        expected_start = end
    if expected_start != n_rows:
        raise RuntimeError(f"merging {path}: part files hold {expected_start} rows, expected {n_rows}")
    with h5py.File(parts[0][0], "r") as first, h5py.File(path, "w") as out:
        names: list[str] = []
        first.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        row_names = [name for name in names if not name.startswith("meta/")]  # one row per galaxy
        for name in names:
            ds = first[name]
            if name in row_names:
                out.create_dataset(name, shape=(n_rows,) + ds.shape[1:], dtype=ds.dtype)
            else:
                out.create_dataset(name, data=ds[()])
        for ppath, ranges in parts:
            with h5py.File(ppath, "r") as part:
                offset = 0
                for start, end in ranges:
                    for name in row_names:
                        out[name][start:end] = part[name][offset : offset + end - start]
                    offset += end - start
    for ppath, _ in parts:
        os.remove(ppath)
