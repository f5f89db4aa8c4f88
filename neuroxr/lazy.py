"""Step 3 of the read path: a variable's trial files read a block at a time, as an xarray ``BackendArray``.

Inside a block the header of file 0 is known; each file's header bytes are compared with it and its
payload is read straight into the output array (one ``preadv`` per file on a folder; a remote
source fetches the block in one batch). A file whose header differs is decoded with a pickle-free
``np.load`` and accepted only if it holds the same shape and type. Withheld cells are set to NaN
here, so masking stays lazy.

Two things keep reads at the speed of the disk: a whole-variable load (:meth:`TrialReader.read_parallel`,
which ``np.asarray`` and ``.values`` of an opened variable reach through :class:`WholeReadArray`)
reads every trial straight into the one output array, blocks in parallel threads, with no dask
concatenation after; and streamed blocks come from a :class:`BlockPool` that reuses the memory of
blocks nobody holds any more, so a reduction or an export does not fault in fresh pages per block.

``checks`` see each block's stored values before the masking (the layout's promises about a block,
e.g. a video scan's trial lengths, are verified as the block is read); in a video scan only a
withheld trial's frames are masked, its padding is left as stored (``masked_frames``).
"""

from __future__ import annotations

import math
import mmap
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from collections.abc import Callable, Sequence
from typing import Any

import dask
import dask.array
import numpy as np
from xarray.backends import BackendArray
from xarray.core import indexing

from neuroxr import chunking
from neuroxr.errors import ScanError
from neuroxr.npy import HEADER_PROBE, NpyHeader, load_array
from neuroxr.sources import NumberedFiles, PerProcess


#: Arrays of at least this many bytes get memory of their own from the kernel (see :func:`allocate`).
MAPPED_BYTES = 4 * 2**20
#: The size of a transparent huge page (x86-64, and arm64 with 4 kB pages): buffers of the block pool are multiples of it.
HUGE_PAGE = 2 * 2**20


def allocate(shape: tuple[int, ...], dtype: np.dtype | str, huge_pages: bool = False) -> np.ndarray:
    """A new, uninitialised array; a large one in an anonymous memory mapping of its own.

    numpy asks the kernel for transparent huge pages for large arrays; where the kernel then
    compacts memory synchronously to find them (``defrag=madvise``, a common default), the first
    touch of a gigabyte can stall for seconds. Plain pages cost a fault each, but never stall. The
    mapping is unmapped when the last array using it is gone.

    ``huge_pages=True`` asks for them all the same (``MADV_HUGEPAGE``, where the platform has it):
    for memory that is touched once and then reused many times, as the buffers of
    :class:`BlockPool` are, where a TLB entry per 2 MB instead of per 4 kB pays on every reuse.

    >>> allocate((2, 3), "f4").shape
    (2, 3)
    """
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < MAPPED_BYTES or dtype.hasobject:
        return np.empty(shape, dtype)
    memory = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if huge_pages and hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            memory.madvise(mmap.MADV_HUGEPAGE)
        except OSError:  # a kernel without transparent huge pages: plain pages, as asked for otherwise
            pass
    return np.ndarray(shape, dtype=dtype, buffer=memory)  # its base is the mapping: views of it refer to it


class BlockPool:
    """Memory for trial blocks, reused once nothing refers to a block any more.

    A streamed read (a reduction, an export) makes one block after another and drops each; fresh
    memory for every block costs the kernel a page fault per page, which is most of the time of a
    read from the page cache. The pool keeps up to ``keep`` buffers (of any size; at most
    ``keep`` x 64 MB with the default chunks) and hands one out again only when no array refers to
    it: every view of a block refers to the buffer that owns its memory, so CPython's reference
    count says so exactly. Blocks smaller than ``smallest`` bytes come straight from ``np.empty``.

    A buffer is a whole number of transparent huge pages and asks the kernel for them
    (:func:`allocate` with ``huge_pages=True``): the kernel copies a file into a block page by page,
    and a 17.7 MB block of videos in 4 kB pages spans more pages than the TLB holds, so every read
    paid for page-table walks that a 2.9 MB buffer reused by ``open(f).read()`` does not (measured:
    a single-threaded read into blocks of 6 videos went from 0.81-0.88 to 0.91-0.99 of raw reads).
    """

    def __init__(self, keep: int = 4, smallest: int = 2**20) -> None:
        self.keep = keep
        self.smallest = smallest
        self._buffers: list[np.ndarray] = []
        self._lock = threading.Lock()

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """An uninitialised array of ``shape`` and ``dtype``, in reused memory where some is free."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes < self.smallest or dtype.hasobject:
            return np.empty(shape, dtype)
        with self._lock:
            free = [buffer for buffer in self._buffers if sys.getrefcount(buffer) == 3]  # the list, this name, the call
            fits = [buffer for buffer in free if len(buffer) >= nbytes]
            if fits:
                buffer = min(fits, key=len)
            else:  # whole huge pages (a mapping of a multiple of their size starts on one, on Linux >= 6.7)
                buffer = allocate((-(-nbytes // HUGE_PAGE) * HUGE_PAGE,), np.uint8, huge_pages=True)
                if free:  # make room: a free buffer too small for blocks like this one
                    smallest = min(free, key=len)
                    self._buffers = [kept for kept in self._buffers if kept is not smallest]
                if len(self._buffers) < self.keep:
                    self._buffers.append(buffer)
            del free, fits
        return buffer[:nbytes].view(dtype).reshape(shape)

    @property
    def held(self) -> int:
        """Bytes of memory the pool keeps."""
        with self._lock:
            return sum(len(buffer) for buffer in self._buffers)

    def __reduce__(self) -> tuple[Any, ...]:
        return (BlockPool, (self.keep, self.smallest))  # a worker gets a pool of its own


#: The pool every reader in this process shares (a forked worker makes its own).
BLOCKS = PerProcess(BlockPool)


def _threads() -> int:
    """Threads for a whole-variable read: dask's ``num_workers`` if set, else the machine's cores."""
    return int(dask.config.get("num_workers", None) or os.cpu_count() or 1)


#: The threads that run the parts of one read or computation at once (:func:`in_parts`; this process's, a
#: forked process makes its own). A thread starts only when no other is idle, so a call runs as many
#: parts at once as it hands over, up to this many.
PART_THREADS = PerProcess(lambda: ThreadPoolExecutor(max(32, 2 * (os.cpu_count() or 1)), thread_name_prefix="neuroxr-parts"))


def even_parts(count: int, parts: int) -> list[slice]:
    """``range(count)`` in at most ``parts`` contiguous slices of about equal length.

    >>> even_parts(10, 3), even_parts(1, 2), even_parts(0, 2)
    ([slice(0, 4, None), slice(4, 8, None), slice(8, 10, None)], [slice(0, 1, None)], [])
    """
    step = max(1, -(-count // max(1, parts)))
    return [slice(start, min(start + step, count)) for start in range(0, count, step)]


def in_parts(work: Callable[[slice], object], parts: Sequence[slice]) -> None:
    """Run ``work`` on every slice of ``parts`` at once: the first on this thread, the others on
    :data:`PART_THREADS`. Every part is done, or has failed, before it returns or raises the first error.

    >>> seen = []
    >>> in_parts(seen.append, even_parts(10, 2))
    >>> sorted(index for part in seen for index in range(10)[part]) == list(range(10))
    True
    """
    others = [PART_THREADS.get().submit(work, part) for part in parts[1:]]
    try:
        if parts:
            work(parts[0])
    finally:
        wait(others)  # nothing may use the rows, nor the error be raised, while a part still runs
    for other in others:
        other.result()


#: A check of a block as read: ``check(trials, stored_values, files)`` raises a ScanError naming a file, or returns.
BlockCheck = Callable[[np.ndarray, np.ndarray, NumberedFiles], None]


class TrialReader:
    """Reads any set of trials of one variable into a new array. Picklable: paths and offsets only."""

    def __init__(
        self,
        files: NumberedFiles,
        header: NpyHeader,
        masked_trials: np.ndarray | None = None,
        checks: Sequence[BlockCheck] = (),
        masked_frames: np.ndarray | None = None,
    ) -> None:
        self.files = files
        self.header = header
        self.masked_trials = masked_trials  # bool per trial: cells to set to NaN
        self.checks = tuple(checks)  # picklable callables, run on each block's stored values
        self.masked_frames = masked_frames  # per trial: only its first k frames (last axis) are masked; None: all
        self.stored_dtype = header.dtype.newbyteorder("=")
        masking = masked_trials is not None and bool(masked_trials.any())
        self.dtype = np.result_type(self.stored_dtype, np.float32) if masking else self.stored_dtype
        self.fast = not (header.fortran_order and len(header.shape) > 1) and header.dtype.isnative

    def read(self, trials: np.ndarray) -> np.ndarray:
        """Stack the files of ``trials`` (file numbers, any order, repeats allowed) into a new array."""
        trials = np.asarray(trials, dtype=np.int64)
        out = BLOCKS.get().empty((len(trials), *self.header.shape), self.dtype)
        self.read_into(trials, out)
        return out

    def read_into(self, trials: np.ndarray, out: np.ndarray) -> None:
        """Read the files of ``trials`` into ``out`` (shape ``(len(trials), *header.shape)``, dtype :attr:`dtype`)."""
        trials = np.asarray(trials, dtype=np.int64)
        distinct = len(trials) < 2 or bool(np.all(trials[1:] > trials[:-1])) or len(np.unique(trials)) == len(trials)
        if distinct and self.dtype == self.stored_dtype:  # each file straight into its row, in any order
            self._fill(trials, out)
            for check in self.checks:
                check(trials, out, self.files)
        else:  # repeats or a wider type: read each file once, then place the rows
            numbers, where = np.unique(trials, return_inverse=True)
            distinct = np.empty((len(numbers), *self.header.shape), dtype=self.stored_dtype)
            self._fill(numbers, distinct)
            for check in self.checks:
                check(numbers, distinct, self.files)
            out[...] = distinct[where.ravel()]
        if self.masked_trials is not None:
            rows = self.masked_trials[trials]
            if self.masked_frames is None:
                out[rows] = np.nan
            else:  # a video scan: the trial's frames, its padding left as stored
                for row in np.flatnonzero(rows).tolist():
                    out[row, ..., : self.masked_frames[trials[row]]] = np.nan

    def read_parallel(self, trials: np.ndarray, out: np.ndarray | None = None, threads: int | None = None) -> np.ndarray:
        """The files of ``trials`` read straight into one array (``out``, or a new one), in blocks on parallel threads.

        >>> from neuroxr.layout import read_layout
        >>> variable = read_layout(neuroxr.write_scan(tmp / "scan", n_trials=40, n_neurons=10)).variables["responses"]
        >>> TrialReader(variable.files, variable.header).read_parallel(np.arange(40)).shape
        (40, 10)
        """
        trials = np.asarray(trials, dtype=np.int64)
        count = len(trials)
        if out is None:
            out = allocate((count, *self.header.shape), self.dtype)
        threads = max(1, min(threads or _threads(), count))
        per_block = max(1, min(chunking.trials_per_chunk(self.header.payload_bytes, count), math.ceil(count / threads)))
        blocks = [slice(start, min(start + per_block, count)) for start in range(0, count, per_block)]

        def read(group: slice) -> None:  # one thread's share of the blocks, in order
            for block in blocks[group]:
                self.read_into(trials[block], out[block])

        in_parts(read, even_parts(len(blocks), threads))
        return out

    def _fill(self, numbers: np.ndarray, out: np.ndarray) -> None:
        """Each file's header and payload read in one call, the payload straight into its row of ``out``.

        A file whose size or header bytes differ from file 0's is decoded on its own (:meth:`_decode`).
        """
        expected = self.header.raw
        length, wanted = len(expected), self.header.file_bytes
        count = len(numbers)
        headers = np.empty((count, length), dtype=np.uint8)
        heads = memoryview(headers.reshape(-1))  # slices of flat byte views: no numpy row object per file
        step = out.nbytes // max(1, count)
        if step:
            rows = memoryview(out.reshape(-1).view(np.uint8))  # ``out`` is C-contiguous (a new block, or rows of one)
            buffers = [[heads[row * length : (row + 1) * length], rows[row * step : (row + 1) * step]] for row in range(count)]
        else:
            buffers = [[heads[at : at + length]] for at in range(0, count * length, length)]
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


class FileGridArray(BackendArray):
    """Whole files laid out on the two leading axes of one array, NaN where no file is; lazily indexed.

    A variable's statistics: one file per (subset, statistic), all of one shape. Each cell is read by a
    :class:`TrialReader` of its own file's header (files may differ in dtype; each is cast to ``dtype``),
    and only the cells an index selects are read. Picklable: numbered files and headers only.
    """

    def __init__(self, files: NumberedFiles, cells: dict[tuple[int, int], tuple[int, NpyHeader]], shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.files = files
        self.cells = cells  #: (row, column) -> (file number, header)
        self.shape = shape
        self.dtype = np.dtype(dtype)

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.OUTER, self._read)

    def _read(self, key: tuple) -> np.ndarray:
        rows, columns = (np.arange(size)[index] for index, size in zip(key[:2], self.shape[:2]))
        grid = np.full((np.size(rows), np.size(columns), *self.shape[2:]), np.nan, dtype=self.dtype)
        for i, row in enumerate(np.atleast_1d(rows).tolist()):
            for j, column in enumerate(np.atleast_1d(columns).tolist()):
                if (row, column) in self.cells:
                    number, header = self.cells[row, column]
                    reader = TrialReader(self.files, header)
                    cell = grid[i, j][np.newaxis] if reader.dtype == self.dtype else np.empty((1, *header.shape), reader.dtype)
                    reader.read_into(np.array([number]), cell)
                    grid[i, j] = cell[0]
        grid = grid.reshape(np.shape(rows) + np.shape(columns) + self.shape[2:])
        rest = key[2:]
        first = grid.ndim - len(rest)
        for axis in reversed(range(len(rest))):  # outer indexing, one axis at a time, last first
            if not (isinstance(rest[axis], slice) and rest[axis] == slice(None)):
                grid = grid[(slice(None),) * (first + axis) + (rest[axis],)]
        return grid


class WholeReadArray(dask.array.Array):
    """The dask array of one opened variable (or of some of its trials), which reads only what is asked of it.

    It is the usual block-per-chunk dask array: every operation on it builds the usual graph and
    gives a plain dask array. Two things differ:

    * selecting trials (``ds.responses.isel(trial=...)``, ``.sel(trial=ds.tier == "test")``, a
      group of repeats) gives blocks that read only the selected trials' files or members, instead
      of whole blocks to be cut down after;
    * computing the array itself, which ``np.asarray(da)`` and ``DataArray.values`` do, reads its
      trials straight into the result (:meth:`TrialReader.read_parallel`) when the scheduler is
      local: one output array, no blocks to concatenate. Under ``dask.distributed`` it computes
      as any dask array does.
    """

    reader: TrialReader
    trials: np.ndarray  #: the file numbers of the rows, in order

    @classmethod
    def of(cls, array: dask.array.Array, reader: TrialReader, trials: np.ndarray | None = None) -> WholeReadArray:
        """``array`` (the dask array of ``trials`` of ``reader``'s variable, default all) as a :class:`WholeReadArray`."""
        whole = cls(array.dask, array.name, array.chunks, meta=np.empty((0,) * array.ndim, dtype=array.dtype))
        whole.reader = reader
        whole.trials = np.arange(array.shape[0]) if trials is None else np.asarray(trials, dtype=np.int64)
        return whole

    def compute(self, **kwargs: Any) -> Any:
        scheduler = _scheduler(self)
        if kwargs or scheduler not in (dask.threaded.get, dask.local.get_sync):
            return super().compute(**kwargs)
        return self.reader.read_parallel(self.trials, threads=1 if scheduler is dask.local.get_sync else None)

    def __getitem__(self, key: Any) -> Any:
        index = key if isinstance(key, tuple) else (key,)
        first = index[0] if index else slice(None)
        plain = (isinstance(first, slice) and first == slice(None)) or not isinstance(first, (int, np.integer, slice, list, np.ndarray))
        if plain or any(part is None or part is Ellipsis for part in index):
            return super().__getitem__(key)
        try:
            chosen = self.trials[first]
        except (IndexError, TypeError, ValueError):
            return super().__getitem__(key)
        subset = self._of_trials(np.atleast_1d(chosen))
        rest = index[1:]
        if np.ndim(chosen) == 0:
            return dask.array.Array.__getitem__(subset, (0, *rest))
        return subset[(slice(None), *rest)] if rest else subset

    def _of_trials(self, trials: np.ndarray) -> WholeReadArray:
        """The rows of ``trials`` (file numbers), in blocks of this array's chunk length that read only them."""
        from dask.base import tokenize

        per_block = max(1, max(self.chunks[0], default=1))
        starts = range(0, len(trials), per_block) if len(trials) else range(1)
        name = f"trials-{tokenize(self.name, trials)}"
        zeros = (0,) * (self.ndim - 1)
        graph = {(name, block, *zeros): (self.reader.read, trials[start : start + per_block]) for block, start in enumerate(starts)}
        chunks = (tuple(len(trials[start : start + per_block]) for start in starts), *((size,) for size in self.shape[1:]))
        array = dask.array.Array(graph, name, chunks, meta=np.empty((0,) * self.ndim, dtype=self.dtype))
        if any(len(sizes) > 1 for sizes in self.chunks[1:]):
            array = array.rechunk((array.chunks[0], *self.chunks[1:]))
        return WholeReadArray.of(array, self.reader, trials)

    def copy(self) -> WholeReadArray:
        """The same array (dask arrays are immutable); xarray copies arrays when it aligns them."""
        return WholeReadArray.of(super().copy(), self.reader, self.trials)

    def __reduce__(self) -> tuple[Any, ...]:
        return (WholeReadArray._rebuilt, (super().__reduce__(), self.reader, self.trials))

    @staticmethod
    def _rebuilt(plain: tuple[Any, ...], reader: TrialReader, trials: np.ndarray) -> WholeReadArray:
        function, arguments = plain
        return WholeReadArray.of(function(*arguments), reader, trials)


def _scheduler(array: dask.array.Array) -> Any:
    """The scheduler dask would compute ``array`` with; asked without importing ``distributed`` when nothing did
    (no client can exist then), which saves a fresh process most of a second."""
    from dask.base import get_scheduler

    if "distributed" in sys.modules or dask.config.get("scheduler", None) is not None:
        return get_scheduler(collections=[array])
    return dask.threaded.get


def in_memory(data: Any) -> bool:
    """True for a numpy array as xarray wraps one in adapters (a label read at open), nothing to read lazily."""
    while not isinstance(data, np.ndarray):
        if isinstance(data, (TrialStackArray, BackendArray)) or not hasattr(data, "array"):
            return False
        data = data.array
    return True


def whole_reader(data: Any) -> TrialReader | None:
    """The reader of ``data`` if it is all of one variable's trials as xarray wraps them (adapters around a
    :class:`TrialStackArray`, indexed by nothing but full slices), else None."""
    while not isinstance(data, TrialStackArray):
        key = getattr(data, "key", None)
        if key is not None and not all(
            isinstance(k, slice) and k.indices(size) == (0, size, 1) for k, size in zip(key.tuple, data.array.shape)
        ):
            return None
        data = getattr(data, "array", None)
        if data is None:
            return None
    return data.reader


def on_file_grid(data: Any) -> bool:
    """True for a :class:`FileGridArray` as xarray wraps it in adapters (statistics read when first accessed)."""
    while not isinstance(data, FileGridArray):
        data = getattr(data, "array", None)
        if data is None:
            return False
    return True
