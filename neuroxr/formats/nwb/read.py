"""NWB reading: a file written by ``to_nwb`` back into the identical, lazy Dataset.

The reader follows the mapping document the writer left in ``/general/neuroxr_layout`` (where each
variable lives, its dtype, dims and attributes) and reads with h5py alone, which is much faster
than building pynwb's object tree. Labels, coordinates and statistics are read at once; per-trial
data variables become dask arrays over small picklable wrappers that hold the file's path (never an
open handle) and open it inside each task, so the graph pickles and runs on ``dask.distributed``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from neuroxr import chunking
from neuroxr.errors import ScanError
from neuroxr.formats.nwb import mapping

#: Chunks are a multiple of the responses' file chunk (512 trials) when they are at least that long.
FILE_CHUNK_ROWS = 512


def _read_rows(dataset: Any, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` (any order) of an h5py dataset: one slice if they are dense, else a sorted selection."""
    if len(rows) == 0:
        return np.asarray(dataset[0:0])
    low, high = int(rows.min()), int(rows.max()) + 1
    if high - low == len(rows) and np.all(np.diff(rows) == 1):
        return np.asarray(dataset[low:high])
    if high - low <= 4 * len(rows):
        return np.asarray(dataset[low:high])[rows - low]
    unique, inverse = np.unique(rows, return_inverse=True)
    return np.asarray(dataset[unique])[inverse]


def _as_text(dataset: Any, dtype: np.dtype) -> Any:
    """The dataset decoded to str when the Dataset variable is a string one."""
    return dataset.asstr() if dtype.kind == "U" and dataset.dtype.kind in "OS" else dataset


class _Rows:
    """Base of the picklable lazy arrays: shape, dtype, and reading a selection by path."""

    def __init__(self, path: str, shape: Sequence[int], dtype: np.dtype) -> None:
        self.path = str(path)
        self.shape = tuple(int(size) for size in shape)
        self.dtype = np.dtype(dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        import h5py

        if not isinstance(key, tuple):
            key = (key,)
        key = key + (slice(None),) * (self.ndim - len(key))
        positions = np.arange(self.shape[0])[key[0]]
        scalar = np.ndim(positions) == 0
        positions = np.atleast_1d(positions).astype(np.int64)
        with h5py.File(self.path, "r") as file:
            data = self._read(file, positions)
        if any(part != slice(None) for part in key[1:]):
            data = data[(slice(None), *key[1:])]
        return data[0] if scalar else data

    def _read(self, file: Any, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class StoredRows(_Rows):
    """A per-trial array held by one HDF5 dataset, or by several side by side (one per column), in stored row order.

    >>> path = neuroxr.to_nwb(neuroxr.make_scan(n_trials=60, n_neurons=20), tmp / "scan.nwb")
    >>> array = StoredRows(str(path), ["processing/ophys/Fluorescence/Deconvolved/data"], (60, 20), np.float32)
    >>> array[:10].shape
    (10, 20)
    """

    def __init__(self, path: str, datasets: Sequence[str], shape: Sequence[int], dtype: np.dtype) -> None:
        super().__init__(path, shape, dtype)
        self.datasets = tuple(datasets)

    def _read(self, file: Any, rows: np.ndarray) -> np.ndarray:
        parts = [_read_rows(_as_text(file[name], self.dtype), rows) for name in self.datasets]
        if len(parts) == 1:
            data = parts[0]
        else:
            data = np.concatenate([part.reshape(len(rows), -1) for part in parts], axis=1)
        return np.asarray(data, dtype=self.dtype).reshape((len(rows), *self.shape[1:]))

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return (type(self).__name__, _file_token(self.path), self.datasets, self.shape, self.dtype.str)


class StoredImages(_Rows):
    """The images of the trials (Dataset order), rebuilt from the distinct images an IndexSeries points at."""

    def __init__(
        self,
        path: str,
        images: Sequence[str],
        image_of_trial: np.ndarray,
        shape: Sequence[int],
        dtype: np.dtype,
        channel_first: bool,
    ) -> None:
        super().__init__(path, shape, dtype)
        self.images = tuple(images)
        self.image_of_trial = np.asarray(image_of_trial, dtype=np.int64)
        self.channel_first = channel_first

    def _read(self, file: Any, rows: np.ndarray) -> np.ndarray:
        import h5py

        needed, which = np.unique(self.image_of_trial[rows], return_inverse=True)
        stack: np.ndarray | None = None
        for position, index in enumerate(needed.tolist()):
            dataset = h5py.h5d.open(file.id, self.images[index].encode())
            image = np.empty(dataset.shape, dtype=dataset.dtype)
            if image.size:
                dataset.read(h5py.h5s.ALL, h5py.h5s.ALL, image)
            if stack is None:
                stack = np.empty((len(needed), *image.shape), dtype=image.dtype)
            elif image.dtype != stack.dtype:
                stack = stack.astype(np.result_type(stack.dtype, image.dtype))
            stack[position] = image
        if stack is None:
            return np.empty((0, *self.shape[1:]), dtype=self.dtype)
        if self.channel_first:
            stack = stack[:, np.newaxis] if stack.ndim == 3 else np.moveaxis(stack, -1, 1)
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        np.take(stack.astype(self.dtype, copy=False), which.reshape(-1), axis=0, out=out)
        return out

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return (type(self).__name__, _file_token(self.path), len(self.images), self.shape, self.dtype.str,
                _rows_token(self.image_of_trial))  # fmt: skip


class StoredFrames(_Rows):
    """A per-trial array of a video scan, time last, rebuilt from series whose samples are the trials'
    frames end to end (one dataset, or several side by side, one per column); NaN after each trial's end.

    ``trial_samples[i]`` is where Dataset trial i's frames start in the series, ``n_frames[i]`` how many.
    """

    def __init__(self, path: str, datasets: Sequence[str], trial_samples: np.ndarray, n_frames: np.ndarray,
                 shape: Sequence[int], dtype: np.dtype) -> None:  # fmt: skip
        super().__init__(path, shape, dtype)
        self.datasets = tuple(datasets)
        self.trial_samples = np.asarray(trial_samples, dtype=np.int64)
        self.n_frames = np.asarray(n_frames, dtype=np.int64)

    def _read(self, file: Any, rows: np.ndarray) -> np.ndarray:
        out = np.full((len(rows), *self.shape[1:]), np.nan, dtype=self.dtype)
        datasets = [file[name] for name in self.datasets]
        for position, row in enumerate(rows.tolist()):
            first, length = int(self.trial_samples[row]), int(self.n_frames[row])
            parts = [np.asarray(dataset[first : first + length]) for dataset in datasets]
            samples = parts[0] if len(parts) == 1 else np.stack(parts, axis=1)
            out[position, ..., :length] = np.moveaxis(samples, 0, -1)
        return out

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return (type(self).__name__, _file_token(self.path), self.datasets, self.shape, self.dtype.str,
                _rows_token(self.trial_samples))  # fmt: skip


def _file_token(path: str) -> tuple[str, int, int]:
    stat = os.stat(path)
    return (os.path.abspath(path), stat.st_mtime_ns, stat.st_size)


def _rows_token(rows: np.ndarray | None) -> Any:
    if rows is None:
        return None
    import hashlib

    return hashlib.blake2b(np.ascontiguousarray(rows).data, digest_size=16).hexdigest()


def _dask(array: _Rows, chunk_rows: int, name: str) -> Any:
    import dask.array as da
    from dask.base import tokenize

    chunks = (chunk_rows, *array.shape[1:])
    return da.from_array(
        array,
        chunks=chunks,
        name=f"nwb-{name}-{tokenize(array, chunks)}",
        lock=False,
        asarray=True,
        meta=np.empty((0,) * array.ndim, dtype=array.dtype),
    )


def _chunk_rows(document: Mapping[str, Any], chunks: int | Mapping[str, int] | None, n_trials: int) -> int:
    """Trials per dask chunk: the user's, else the chunk policy's, cut to a multiple of the file chunk."""
    _, requested = chunking.trial_chunk_request(chunks)
    if requested is not None:
        return max(1, min(requested, max(1, n_trials)))
    if chunks is not None:
        raise ValueError(f"open_nwb: expected chunks as trials per chunk (int) or {{'trial': int}}, found {chunks!r}")
    per_trial = 1
    for name in document["data_vars"]:
        entry = document["variables"][name]
        if entry["dims"][:1] == ["trial"]:
            size = int(np.prod(entry["shape"][1:], dtype=np.int64)) * np.dtype(entry["dtype"]).itemsize
            per_trial = max(per_trial, size)
    rows = chunking.trials_per_chunk(per_trial, max(1, n_trials))
    if rows >= FILE_CHUNK_ROWS:
        rows -= rows % FILE_CHUNK_ROWS
    return rows


def _eager(
    file: Any, store: Mapping[str, Any], dtype: np.dtype, shape: Sequence[int], rows: np.ndarray | None
) -> np.ndarray:
    data = np.asarray(_as_text(file[store["path"]], dtype)[()])
    if store.get("trial_rows") and rows is not None:
        data = data[rows]
    return data.astype(dtype, copy=False).reshape(shape)  # statistics tables hold (subset x statistic) rows


def _values(store: Mapping[str, Any], dtype: np.dtype, shape: Sequence[int]) -> np.ndarray:
    values = store["values"]
    if dtype.kind == "M":
        return np.array(values, dtype="datetime64[ns]").astype(dtype).reshape(shape)
    return np.array(values, dtype=dtype).reshape(shape)


def open_nwb_file(
    path: str | os.PathLike[str], *, chunks: int | Mapping[str, int] | None = None
) -> tuple[xr.Dataset, dict[str, Any]]:
    """The Dataset of one file written by ``to_nwb``, and its mapping document."""
    import dask.array as da
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such NWB file")
    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise ScanError(path, f"not an HDF5 (NWB) file: {error}") from error
    with file:
        document = mapping.load_mapping(file, path)
        entries = document["variables"]
        if document["dataset_rows"] in ("sorted_file_numbers", "sorted_ids"):  # "sorted_ids": version 1 files
            column = "file_number" if document["dataset_rows"] == "sorted_file_numbers" else "id"
            rows = np.argsort(np.asarray(file[f"{mapping.TRIALS_PATH}/{column}"][()]), kind="stable")
        else:
            rows = np.asarray(document["dataset_rows"], dtype=np.int64)
        row_map = None if np.array_equal(rows, np.arange(len(rows))) else rows
        n_trials = len(rows)
        chunk_rows = _chunk_rows(document, chunks, n_trials)
        variables: dict[str, xr.Variable] = {}
        for name in [*document["coords"], *document["data_vars"]]:
            entry = entries[name]
            dims, shape, dtype, store = entry["dims"], entry["shape"], np.dtype(entry["dtype"]), entry["store"]
            kind = store["kind"]
            lazy = name in document["data_vars"] and dims[:1] == ["trial"]
            if kind == "values":
                data: Any = _values(store, dtype, shape)
            elif kind == "constant":
                data = np.full(shape, store["value"], dtype=dtype)
            elif kind == "frames":
                n_frames_rows = np.asarray(file[store["n_frames"]][()], dtype=np.int64)  # NWB row order
                starts = np.concatenate(([0], np.cumsum(n_frames_rows)[:-1]))
                datasets = store["paths"] if "paths" in store else [store["path"]]
                array = StoredFrames(str(path), datasets, starts[rows], n_frames_rows[rows], shape, dtype)
                data = _dask(array, chunk_rows, name)
            elif kind == "absent":
                data = da.full(shape, np.nan, dtype=dtype, chunks=(chunk_rows, *shape[1:]))
            elif kind == "images":
                presented = np.asarray(file[store["presentation"]][()], dtype=np.int64)
                # The names, in the order of order_of_images (dereferencing thousands of references is slow).
                group = store["order"].rsplit("/", 1)[0]
                if "names" in store:
                    image_paths = [f"{group}/{image_name}" for image_name in store["names"]]
                else:
                    image_paths = [file[reference].name for reference in file[store["order"]][()]]
                image_of_trial = presented if row_map is None else presented[row_map]
                channel_first = store["channel_axis"] == "first"
                array = StoredImages(str(path), image_paths, image_of_trial, shape, dtype, channel_first)
                data = _dask(array, chunk_rows, name)
            elif lazy:
                datasets = store["paths"] if kind == "columns" else [store["path"]]
                array = StoredRows(str(path), datasets, shape, dtype)
                permuted = row_map is not None and store.get("trial_rows")
                if permuted:
                    # Read in stored (presentation) order, one task per file chunk, then shuffle rows with
                    # dask: a full load reads each chunk once, however the two orders differ.
                    stored_rows = file[datasets[0]].chunks[0] if file[datasets[0]].chunks else chunk_rows
                    data = _dask(array, stored_rows, name)[row_map].rechunk({0: chunk_rows})
                else:
                    data = _dask(array, chunk_rows, name)
            else:
                data = _eager(file, store, dtype, shape, row_map)
            variables[name] = xr.Variable(dims, data, entry["attrs"])
    coords = {name: variables[name] for name in document["coords"]}
    data_vars = {name: variables[name] for name in document["data_vars"]}
    ds = xr.Dataset(data_vars, coords, document["attrs"])
    ds.encoding["source"] = str(path)
    return ds, document
