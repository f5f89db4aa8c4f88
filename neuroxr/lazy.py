"""Step 3 of the read path: a variable's trial files read a block at a time, as an xarray ``BackendArray``.

Inside a block the header of file 0 is known; each file's header bytes are compared with it and its
payload is read straight into the output array (one ``preadv`` per file on a folder; a remote
source fetches the block in one batch). A file whose header differs is decoded with a pickle-free
``np.load`` and accepted only if it holds the same shape and type. Withheld cells are set to NaN
here, so masking stays lazy.
"""

from __future__ import annotations

import numpy as np
from xarray.backends import BackendArray
from xarray.core import indexing

from neuroxr.errors import ScanError
from neuroxr.npy import HEADER_PROBE, NpyHeader, load_array
from neuroxr.sources import NumberedFiles


class TrialReader:
    """Reads any set of trials of one variable into a new array. Picklable: paths and offsets only."""

    def __init__(self, files: NumberedFiles, header: NpyHeader, masked_trials: np.ndarray | None = None) -> None:
        self.files = files
        self.header = header
        self.masked_trials = masked_trials  # bool per trial: cells to set to NaN
        self.stored_dtype = header.dtype.newbyteorder("=")
        masking = masked_trials is not None and bool(masked_trials.any())
        self.dtype = np.result_type(self.stored_dtype, np.float32) if masking else self.stored_dtype
        self.fast = not (header.fortran_order and len(header.shape) > 1) and header.dtype.isnative

    def read(self, trials: np.ndarray) -> np.ndarray:
        """Stack the files of ``trials`` (file numbers, any order, repeats allowed)."""
        trials = np.asarray(trials, dtype=np.int64)
        numbers, where = np.unique(trials, return_inverse=True)
        out = np.empty((len(trials), *self.header.shape), dtype=self.stored_dtype)
        if len(numbers) == len(trials) and np.all(numbers == trials):
            self._fill(numbers, out)
        else:  # repeats or another order: read each file once, then place the rows
            distinct = np.empty((len(numbers), *self.header.shape), dtype=self.stored_dtype)
            self._fill(numbers, distinct)
            np.take(distinct, where.ravel(), axis=0, out=out)
        if self.dtype != self.stored_dtype:
            out = out.astype(self.dtype)
        if self.masked_trials is not None:
            out[self.masked_trials[trials]] = np.nan
        return out

    def _fill(self, numbers: np.ndarray, out: np.ndarray) -> None:
        """Each file's header and payload read in one call, the payload straight into its row of ``out``.

        A file whose size or header bytes differ from file 0's is decoded on its own (:meth:`_decode`).
        """
        expected = self.header.raw
        length, wanted = len(expected), self.header.file_bytes
        count = len(numbers)
        headers = np.empty((count, length), dtype=np.uint8)
        payloads = out.reshape(count, -1).view(np.uint8) if out.nbytes else None
        buffers = []
        for row in range(count):
            header = memoryview(headers[row])
            buffers.append([header, memoryview(payloads[row])] if payloads is not None else [header])
        numbers_list = numbers.tolist()
        if self.fast:
            got = np.asarray(self.files.read_into(numbers_list, buffers), dtype=np.int64)
            differ = (got != wanted) | (headers != np.frombuffer(expected, dtype=np.uint8)).any(axis=1)
        else:
            differ = np.ones(count, dtype=bool)
        for row in np.flatnonzero(differ).tolist():
            out[row] = self._decode(numbers_list[row])

    def _decode(self, number: int) -> np.ndarray:
        """The slow path: decode one whole file (of at most the longest header numpy reads plus the payload) and check it matches file 0."""
        label = self.files.label(number)
        array = load_array(self.files.read(number, limit=self.header.payload_bytes + HEADER_PROBE), label)
        if array.shape != self.header.shape or array.dtype.newbyteorder("=") != self.stored_dtype:
            raise ScanError(
                label,
                f"holds {array.dtype} {array.shape}, expected {self.header.describe()} like {self.files.label(0)}",
            )
        return array


class TrialStackArray(BackendArray):
    """All trials of one variable as a lazily indexed ``(trial, ...)`` array (outer indexing)."""

    def __init__(self, reader: TrialReader, n_trials: int) -> None:
        self.reader = reader
        self.shape = (n_trials, *reader.header.shape)
        self.dtype = reader.dtype

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        if isinstance(key, (indexing.BasicIndexer, indexing.OuterIndexer)) and any(
            isinstance(k, slice) and (k.step or 1) < 0 for k in key.tuple
        ):  # reversed slices become index arrays (xarray's slice decomposition fails on empty ones)
            key = indexing.OuterIndexer(
                tuple(
                    np.arange(size)[k] if isinstance(k, slice) and (k.step or 1) < 0 else k
                    for k, size in zip(key.tuple, self.shape)
                )
            )
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.OUTER, self._read)

    def _read(self, key: tuple) -> np.ndarray:
        trial_key, rest = key[0], key[1:]
        if isinstance(trial_key, slice):
            trials = np.arange(self.shape[0])[trial_key]
        else:
            trials = np.atleast_1d(np.asarray(trial_key, dtype=np.int64))
        block = self.reader.read(trials)
        if not isinstance(trial_key, slice) and np.ndim(trial_key) == 0:
            block = block[0]
        first = block.ndim - len(rest)
        for axis in reversed(range(len(rest))):  # last axis first, so an int index shifts nothing pending
            index = rest[axis]
            if not (isinstance(index, slice) and index == slice(None)):
                block = block[(slice(None),) * (first + axis) + (index,)]
        return block

