"""Streaming the big arrays of a scan into NWB: rows served in any order (forward from a
:class:`~neuroxr.formats._write.BlockStream`, or spilled to a raw scratch file), the frames of
video-scan trials laid end to end (:class:`FrameRows`), the hdmf data chunk iterator that feeds
them to pynwb, and :func:`start_trial_rows`, which picks the way for a per-trial array.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from neuroxr.formats._write import BlockStream, Progress
from neuroxr.lazy import WholeReadArray

class ForwardRows:
    """Row ranges of a :class:`BlockStream`, asked for in increasing order (each block read once)."""

    def __init__(self, stream: BlockStream) -> None:
        self.shape = stream.shape
        self._blocks = iter(stream)
        self._held: list[tuple[int, np.ndarray]] = []

    def get(self, rows: np.ndarray) -> np.ndarray:
        start, stop = int(rows[0]), int(rows[-1]) + 1
        self._held = [(first, block) for first, block in self._held if first + len(block) > start]
        while not self._held or self._held[-1][0] + len(self._held[-1][1]) < stop:
            self._held.append(next(self._blocks))
        if self._held[0][0] > start:
            raise RuntimeError(f"rows are read forward only: row {start} was already released")
        parts = [
            block[max(start - first, 0) : min(stop - first, len(block))]
            for first, block in self._held
            if first < stop and first + len(block) > start
        ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def close(self) -> None:
        """Stop the stream: its background threads end and the blocks held are released."""
        self._blocks.close()
        self._held = []


class SpilledRows:
    """A dask array copied block by block to a raw scratch file, then read back rows in any order."""

    def __init__(self, stream: BlockStream, path: Path, *, on_block: Callable[[], None] | None = None) -> None:
        self.path = Path(path)
        self.shape = stream.shape
        self.dtype = np.dtype(stream.arrays[0].dtype)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._fd = -1
        try:
            with open(self.path, "wb") as file:
                for _, block in stream:
                    file.write(np.ascontiguousarray(block, dtype=self.dtype).data)
                    if on_block is not None:
                        on_block()
            self._fd = os.open(self.path, os.O_RDONLY)
        except BaseException:
            self.close()
            raise

    def get(self, rows: np.ndarray) -> np.ndarray:
        """The rows ``rows`` (any order) as a new array."""
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        if self.row_bytes == 0:
            return out
        flat = out.reshape(len(rows), -1).view(np.uint8)
        for position, row in enumerate(np.asarray(rows, dtype=np.int64).tolist()):
            if os.preadv(self._fd, [flat[position]], row * self.row_bytes) != self.row_bytes:
                raise OSError(f"{self.path}: short read of row {row}")
        return out

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.path.unlink(missing_ok=True)


class BackgroundRows:
    """A row source built in a background thread (a spill), waited for when rows are first asked for."""

    def __init__(self, make: Callable[[], Any], shape: tuple[int, ...]) -> None:
        self.shape = shape
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="neuroxr-nwb-spill")
        self._future = self._pool.submit(make)

    def get(self, rows: np.ndarray) -> np.ndarray:
        return self._future.result().get(rows)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        if self._future.exception() is None:
            self._future.result().close()


class ArrayRows:
    """Rows of an array held in memory, in any order."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values
        self.shape = values.shape

    def get(self, rows: np.ndarray) -> np.ndarray:
        return self.values[rows]

    def close(self) -> None:
        pass


class FrameRows:
    """The samples of a video scan's variable on one time axis: the frames ``[0:n_frames]`` of each
    trial (time last in the Dataset, first here), trials one after the other.

    ``trials`` serves Dataset trial rows (a :class:`ForwardRows`, or a spill for any order); NWB
    trial k is Dataset trial ``order[k]`` (k itself when ``order`` is None), ``n_frames[k]`` frames
    long. A trial holding values after its end (where the release pads with NaN) is refused, so that
    leaving the padding out loses nothing.

    >>> import dask.array as da
    >>> values = np.arange(12.0).reshape(2, 2, 3)  # 2 trials, 2 columns, 3 frames
    >>> values[0, :, 2] = np.nan
    >>> rows = FrameRows(ForwardRows(BlockStream(da.from_array(values, chunks=1))), None, np.array([2, 3]), "x")
    >>> rows.shape, rows.get(np.arange(1, 4)).tolist()
    ((5, 2), [[1.0, 4.0], [6.0, 9.0], [7.0, 10.0]])
    """

    def __init__(self, trials: Any, order: np.ndarray | None, n_frames: np.ndarray, name: str) -> None:
        self.trials = trials
        self.order = order
        self.n_frames = np.asarray(n_frames, dtype=np.int64)
        self.offsets = np.concatenate(([0], np.cumsum(self.n_frames)))
        self.name = name
        trial_shape = tuple(trials.shape)
        self.shape = (int(self.offsets[-1]), *trial_shape[1:-1])

    def get(self, rows: np.ndarray) -> np.ndarray:
        start, stop = int(rows[0]), int(rows[-1]) + 1
        first = int(np.searchsorted(self.offsets, start, side="right")) - 1
        last = int(np.searchsorted(self.offsets, stop - 1, side="right")) - 1
        wanted = np.arange(first, last + 1)
        block = self.trials.get(wanted if self.order is None else self.order[wanted])
        parts = []
        for position, k in enumerate(wanted.tolist()):
            trial = block[position]
            length = int(self.n_frames[k])
            padding = trial[..., length:]
            if padding.size and not (padding.dtype.kind == "f" and np.isnan(padding).all()):
                raise ValueError(
                    f"to_nwb: {self.name} of NWB trial {k} holds values after its n_frames={length}; "
                    "expected NaN padding there (the padding is left out of the file)"
                )
            parts.append(np.moveaxis(trial[..., :length], -1, 0))
        samples = np.concatenate(parts) if len(parts) > 1 else parts[0]
        begin = start - int(self.offsets[first])
        return samples[begin : begin + (stop - start)]

    def close(self) -> None:
        self.trials.close()


@functools.cache
def iterator_class() -> type:
    """The hdmf iterator class, defined on first use (hdmf is a heavy import)."""
    from hdmf.data_utils import GenericDataChunkIterator

    class RowsIterator(GenericDataChunkIterator):
        """hdmf iterator over a 2-D (or n-D) array whose rows come from a row source, in ``order``.

        ``on_buffer`` is called once per buffer handed to hdmf (the export's progress display).
        """

        def __init__(
            self, source: Any, order: np.ndarray | None, dtype: np.dtype, on_buffer: Callable[[], None] | None = None, **kwargs: Any
        ) -> None:
            self._source = source
            self._order = order
            self._shape = source.shape
            self._dtype_value = np.dtype(dtype)
            self._on_buffer = on_buffer
            super().__init__(display_progress=False, **kwargs)

        def _get_data(self, selection: tuple[slice, ...]) -> np.ndarray:
            first = selection[0]
            rows = np.arange(first.start or 0, first.stop)
            if self._order is not None:
                rows = self._order[rows]
            data = self._source.get(rows)
            if self._on_buffer is not None:
                self._on_buffer()
            return np.ascontiguousarray(data[(slice(None), *selection[1:])], dtype=self._dtype_value)

        def _get_maxshape(self) -> tuple[int, ...]:
            return self._shape

        def _get_dtype(self) -> np.dtype:
            return self._dtype_value

    return RowsIterator


# ----------------------------------------------------------------------------------------------
# a per-trial array's rows in NWB order


def chunked(array: xr.DataArray) -> xr.DataArray:
    """``array`` as a dask array: one chunk when it is held in memory."""
    return array.chunk({"trial": max(1, array.sizes["trial"])}) if array.chunks is None else array


def read_in_any_order(variable: xr.DataArray) -> bool:
    """Whether ``variable``'s trials are read in any order at no extra cost (held in memory, or trial
    files: a :class:`~neuroxr.lazy.WholeReadArray`), so that streaming it in presentation order needs
    no spill.

    >>> read_in_any_order(neuroxr.make_scan(n_trials=24, n_neurons=4).responses + 1)  # a dask graph
    False
    """
    return isinstance(variable.data, (np.ndarray, WholeReadArray))


def spills(variable: xr.DataArray, order: np.ndarray | None) -> bool:
    """Whether :func:`start_trial_rows` copies ``variable`` to a scratch file first: a dask array other
    than trial files, whose trials are read in another ``order`` (None: the Dataset's own).

    >>> ds = neuroxr.make_scan(n_trials=24, n_neurons=4)
    >>> spills(ds.responses, None), spills(ds.responses, np.arange(24)[::-1]), spills(ds.responses.compute(), np.arange(24)[::-1])
    (False, True, False)
    """
    return order is not None and not read_in_any_order(variable)


@dataclass(frozen=True)
class TrialRows:
    """A per-trial array in NWB row order: NWB row k is ``source.get(order[k])``, or row k itself when
    ``order`` is None (``source`` then serves rows in NWB order: blocks read forward).

    ``source`` is one of: a :class:`ForwardRows` (the Dataset's blocks, already in NWB order, or
    trial files read in NWB order), an :class:`ArrayRows` (an array in memory) or, for another
    dask array when the orders differ, the spill: the array copied in Dataset order to a raw
    scratch file by a background thread. :meth:`close` ends the background threads in every case
    (and removes the spill's file).
    """

    name: str
    source: ForwardRows | ArrayRows | BackgroundRows
    order: np.ndarray | None

    def close(self) -> None:
        """End the background threads of ``source`` and remove its scratch file, if any."""
        self.source.close()


def start_trial_rows(variable: xr.DataArray, order: np.ndarray | None, scratch: Path, display: Progress | None = None) -> TrialRows:
    """The rows of a per-trial array in NWB row order: NWB row k is Dataset trial ``order[k]`` (None:
    the Dataset's own order). ``display``: the export's progress, told of a spill's blocks.

    Blocks are read forward when the Dataset is in NWB order, and when its trials are trial files
    (a :class:`~neuroxr.lazy.WholeReadArray`, whose blocks read any trials in any order: they are
    asked for in NWB order). An array in memory gives its rows in any order. Any other dask array
    in another order is spilled to the raw file ``scratch``, starting now, in the background. The
    caller closes the result, however the export ends.

    >>> ds = neuroxr.open_scan(neuroxr.write_scan(tmp / "scan", n_trials=24, n_neurons=4))
    >>> order = np.arange(24)[::-1]
    >>> for responses in (ds.responses, ds.responses.compute(), ds.responses + 0):
    ...     rows = start_trial_rows(responses, order, tmp / "spill.raw")
    ...     print(type(rows.source).__name__, rows.order is None)
    ...     rows.close()
    ForwardRows True
    ArrayRows False
    BackgroundRows False
    """
    name = str(variable.name)
    if isinstance(variable.data, np.ndarray):
        return TrialRows(name, ArrayRows(variable.data), order)
    data = chunked(variable).data
    if order is None:
        return TrialRows(name, ForwardRows(BlockStream(data)), None)
    if not spills(variable, order):
        return TrialRows(name, ForwardRows(BlockStream(data[order])), None)  # blocks that read those trials

    stream = BlockStream(data)
    if display is not None:
        display.add(len(stream))

    def spill() -> SpilledRows:
        return SpilledRows(stream, scratch, on_block=display.advance if display is not None else None)

    shape = tuple(int(size) for size in variable.shape)
    return TrialRows(name, BackgroundRows(spill, shape), order)
