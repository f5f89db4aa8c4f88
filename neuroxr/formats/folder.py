"""Write a scan Dataset back to the Sensorium release layout: a scan folder, or a .zip holding one.

The layout (see ``docs/sensorium-format.md``)::

    data/{images,responses,behavior,pupil_center}/{k}.npy   one file per trial
    meta/trials/*.npy  meta/neurons/*.npy                    one array per coordinate
    meta/statistics/{variable}/{subset}/{statistic}.npy

Trial files are numbered by position: ``data/*/{k}.npy`` and row ``k`` of every meta/trials array
hold the k-th trial along the Dataset's ``trial`` dimension, whatever its ``trial`` labels are
(after ``ds.isel(trial=[7, 3])`` they become 0.npy and 1.npy). Each coordinate goes to the file
named by its ``sensorium_file`` attribute (the contract's coordinates fall back to their release
names when the attribute is missing); derived coordinates such as ``responses_withheld`` and any
other coordinate without a release file are not written. Withheld cells are written as the
release ships them: zeros. Statistics that are all NaN stand for absent files and are not written.

Every .npy file is byte-identical to what ``np.save`` writes for the same array. Data is streamed
block by block along the Dataset's dask chunks, so a scan larger than memory can be written.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import os
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import xarray as xr

from neuroxr import model
from neuroxr.formats._atomic import atomic_target, refuse_to_overwrite_source
from neuroxr.npy import file_bytes, header_bytes

#: Trials per written block when the Dataset is not chunked: about this many bytes per block.
BLOCK_BYTES = 64 * 2**20
#: Threads creating the files of a block in a folder (small-file creation waits on the file system).
FILE_WRITER_THREADS = 4
#: At most this many blocks are computed ahead (in parallel) while one is being written ...
MAX_PARALLEL_BLOCKS = 4
#: ... and at most about this many bytes of them.
BYTES_IN_FLIGHT = 256 * 2**20

COMPRESSIONS = {None: zipfile.ZIP_STORED, "stored": zipfile.ZIP_STORED, "deflated": zipfile.ZIP_DEFLATED}

# Release file stems of the contract's coordinates, for coordinates that lost their
# ``sensorium_file`` attribute. Coordinate name -> file stem.
_TRIAL_FALLBACK = {
    **{name: name for name in ("trial_idx", "frame_image_class", "frame_trial_ts", "condition_hash")},
    **{coord: stem for stem, coord in model.TRIAL_RENAMES.items()},
    **{f"{model.TRIAL_CLASH_PREFIX}{name}": name for name in ("animal_id", "session", "scan_idx")},
}
_NEURON_FALLBACK = {
    **{name: name for name in ("area", "layer", "scan_idx", "cell_motor_coordinates")},
    **{coord: stem for stem, coord in model.NEURON_RENAMES.items()},
    "neuron": model.NEURON_INDEX_FILE,
}


# --------------------------------------------------------------------------------------------
# Format logic: .npy bytes and the two kinds of target (no xarray here)
# --------------------------------------------------------------------------------------------
class _Sink(Protocol):
    def mkdir(self, relative: str) -> None: ...
    def write(self, relative: str, *parts: bytes | memoryview) -> None: ...
    def write_trials(self, folder: str, start: int, header: bytes, block: np.ndarray) -> None: ...


def _write_trials_one_by_one(sink: _Sink, folder: str, start: int, header: bytes, block: np.ndarray) -> None:
    for j in range(len(block)):
        sink.write(f"{folder}/{start + j}.npy", header, memoryview(block[j]))


class _FolderSink:
    """Writes files under a folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()
        self._writers = concurrent.futures.ThreadPoolExecutor(max_workers=FILE_WRITER_THREADS)

    def mkdir(self, relative: str) -> None:
        (self.root / relative).mkdir(parents=True, exist_ok=True)

    def write(self, relative: str, *parts: bytes | memoryview) -> None:
        with open(self.root / relative, "wb") as file:
            for part in parts:
                file.write(part)

    def write_trials(self, folder: str, start: int, header: bytes, block: np.ndarray) -> None:
        """Write ``{folder}/{start + j}.npy`` for each row j of ``block``, a few threads at once.

        Creating many small files waits on the file system more than on the CPU, so threads help.
        """
        pieces = min(FILE_WRITER_THREADS, max(1, len(block) // 16))
        bounds = np.linspace(0, len(block), pieces + 1).astype(int).tolist()
        futures = [
            self._writers.submit(_write_trials_one_by_one, self, folder, start + a, header, block[a:b])
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        concurrent.futures.wait(futures)  # all of them, even if one failed
        for future in futures:
            future.result()

    def close(self) -> None:
        self._writers.shutdown()


class _ZipSink:
    """Writes members under one top-level folder of an open zip archive."""

    def __init__(self, archive: zipfile.ZipFile, top: str, compression: int) -> None:
        self.archive = archive
        self.top = top
        self.compression = compression
        self.date_time = time.localtime()[:6]
        self.folders: set[str] = set()
        self.mkdir("")

    def mkdir(self, relative: str) -> None:
        parts = [part for part in relative.split("/") if part]
        for depth in range(len(parts) + 1):
            name = "/".join([self.top, *parts[:depth]]) + "/"
            if name not in self.folders:
                self.folders.add(name)
                info = zipfile.ZipInfo(name, date_time=self.date_time)
                info.external_attr = (0o40755 << 16) | 0x10
                self.archive.writestr(info, b"")

    def write(self, relative: str, *parts: bytes | memoryview) -> None:
        info = zipfile.ZipInfo(f"{self.top}/{relative}", date_time=self.date_time)
        info.compress_type = self.compression
        info.external_attr = 0o100644 << 16
        with self.archive.open(info, "w") as member:
            for part in parts:
                member.write(part)

    def write_trials(self, folder: str, start: int, header: bytes, block: np.ndarray) -> None:
        _write_trials_one_by_one(self, folder, start, header, block)


def _as_saveable(values: np.ndarray, where: str) -> np.ndarray:
    """``values`` with object or variable-width strings turned into fixed-width ``<U`` (no pickles)."""
    if values.dtype.kind == "O" or values.dtype.kind == "T":
        try:
            return np.asarray(values.tolist(), dtype=str)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}: expected numbers or strings, found {values.dtype} values") from error
    return values


# --------------------------------------------------------------------------------------------
# xarray glue: what goes into which file
# --------------------------------------------------------------------------------------------
def _coordinate_file(name: str, coord: xr.DataArray) -> str | None:
    """Release path of a coordinate, or None for a coordinate that has no release file."""
    path = coord.attrs.get(model.FILE_ATTR)
    if path is not None:
        return str(path) if str(path).endswith(".npy") else None
    if name == model.WITHHELD_COORD:
        return None
    if "trial" in coord.dims and name in _TRIAL_FALLBACK:
        return f"{model.TRIALS_DIR}/{_TRIAL_FALLBACK[name]}.npy"
    if "neuron" in coord.dims and name in _NEURON_FALLBACK:
        return f"{model.NEURONS_DIR}/{_NEURON_FALLBACK[name]}.npy"
    return None


def _meta_files(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """Release path -> array of every meta/trials and meta/neurons file."""
    files: dict[str, np.ndarray] = {}
    for name, coord in ds.coords.items():
        leading = [dim for dim in ("trial", "neuron") if dim in coord.dims]
        if not leading:
            continue
        path = _coordinate_file(str(name), coord)
        if path is None:
            continue
        values = coord.transpose(*leading, ...).values
        files[path] = _as_saveable(values, f"coordinate {name!r} ({path})")
    return files


def _statistics_files(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """Release path -> array of every statistics file present (not all NaN)."""
    files: dict[str, np.ndarray] = {}
    for variable in model.DATA_VARIABLES:
        name = model.statistics_name(variable)
        if name not in ds:
            continue
        statistics = ds[name]
        for dim in ("subset", "statistic"):
            if dim not in statistics.dims:  # e.g. after ds.sel(subset="all")
                if dim not in statistics.coords:
                    raise ValueError(f"{name}: expected a {dim!r} dimension or coordinate, found neither")
                statistics = statistics.expand_dims(dim)
        statistics = statistics.transpose("subset", "statistic", ...)
        folder = str(statistics.attrs.get(model.FILE_ATTR, f"{model.STATISTICS_DIR}/{variable}"))
        values = statistics.values
        for i, subset in enumerate(statistics["subset"].values.tolist()):
            for j, statistic in enumerate(statistics["statistic"].values.tolist()):
                array = np.asarray(values[i, j])
                if array.dtype.kind == "f" and np.isnan(array).all():
                    continue
                files[f"{folder}/{subset}/{statistic}.npy"] = array
    return files


@dataclass
class _DataFiles:
    """One data variable's per-trial files."""

    name: str
    variable: xr.Variable  # dims (trial, ...)
    folder: str
    header: bytes
    zero_rows: np.ndarray | None  # trials whose values are withheld (written as zeros)
    zero_nan: bool  # write NaN cells as zeros (the variable is named in attrs["withheld"])

    @property
    def bytes_per_trial(self) -> int:
        return int(self.variable.dtype.itemsize * np.prod(self.variable.shape[1:], dtype=np.int64))

    def block(self, values: np.ndarray, start: int) -> np.ndarray:
        """The block of trials from ``start`` as contiguous stored values (withheld cells zeroed)."""
        values = np.ascontiguousarray(values, dtype=self.variable.dtype)
        rows = None if self.zero_rows is None else self.zero_rows[start : start + len(values)]
        if (rows is not None and rows.any()) or self.zero_nan:
            values = values.copy()  # never modify the computed array in place: it may be a view
            if rows is not None:
                values[rows] = 0
            if self.zero_nan and values.dtype.kind == "f":
                values[np.isnan(values)] = 0
        return values


def _data_files(ds: xr.Dataset) -> list[_DataFiles]:
    withheld = {name.strip() for name in str(ds.attrs.get("withheld", "")).split(",") if name.strip()}
    withheld_rows = None
    if model.WITHHELD_COORD in ds.coords and ds[model.WITHHELD_COORD].dims == ("trial",):
        withheld_rows = np.asarray(ds[model.WITHHELD_COORD].values, dtype=bool)
    plan = []
    for name in model.DATA_VARIABLES:
        if name not in ds.data_vars:
            continue
        variable = ds[name].variable
        if "trial" not in variable.dims:
            raise ValueError(f"{name}: expected a 'trial' dimension, found dims {variable.dims}")
        if variable.dtype.kind not in "biuf":
            raise ValueError(f"{name}: expected a numeric dtype, found {variable.dtype}")
        variable = variable.transpose("trial", ...)
        zero_rows = withheld_rows if name == "responses" else None
        zero_nan = name in withheld and zero_rows is None
        plan.append(
            _DataFiles(
                name=name,
                variable=variable,
                folder=str(ds[name].attrs.get(model.FILE_ATTR, f"{model.DATA_DIR}/{name}")),
                header=header_bytes(variable.dtype, variable.shape[1:]),
                zero_rows=zero_rows,
                zero_nan=zero_nan,
            )
        )
    return plan


def _trial_blocks(plan: list[_DataFiles]) -> list[tuple[int, int]]:
    """(start, stop) of each block: the trial chunks of the largest dask variable, else ~64 MB."""
    if not plan:
        return []
    n_trials = plan[0].variable.shape[0]
    chunked = [files for files in plan if files.variable.chunks is not None]
    if chunked:
        largest = max(chunked, key=lambda files: files.bytes_per_trial)
        sizes = largest.variable.chunks[0]  # type: ignore[index]
        bounds = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
    per_block = max(1, BLOCK_BYTES // max(1, sum(files.bytes_per_trial for files in plan)))
    return [(start, min(start + per_block, n_trials)) for start in range(0, n_trials, per_block)]


def _load_block(plan: list[_DataFiles], start: int, stop: int) -> list[np.ndarray]:
    """Values of each variable for one block; dask variables are computed together."""
    import dask

    lazy = [
        files.variable.data[start:stop] if files.variable.chunks is not None else files.variable[start:stop].values
        for files in plan
    ]
    return list(dask.compute(*lazy))


def _iterate_loaded(
    plan: list[_DataFiles], blocks: list[tuple[int, int]], parallel: int
) -> Iterator[tuple[tuple[int, int], list[np.ndarray]]]:
    """Yield (block, values per variable) in order, computing up to ``parallel`` blocks ahead.

    At most ``parallel + 1`` blocks are in memory: the one being written and those computing.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as executor:
        remaining = iter(blocks)
        pending: collections.deque[tuple[tuple[int, int], concurrent.futures.Future[list[np.ndarray]]]]
        pending = collections.deque()
        try:
            for block in itertools.islice(remaining, parallel):
                pending.append((block, executor.submit(_load_block, plan, *block)))
            while pending:
                block, future = pending.popleft()
                values = future.result()
                following = next(remaining, None)
                if following is not None:
                    pending.append((following, executor.submit(_load_block, plan, *following)))
                yield block, values
                del values
        finally:
            for _, future in pending:
                future.cancel()


def _write_scan(ds: xr.Dataset, sink: _Sink, progress: bool, description: str) -> None:
    from tqdm import tqdm

    plan = _data_files(ds)
    arrays = {**_meta_files(ds), **_statistics_files(ds)}
    for folder in sorted({path.rsplit("/", 1)[0] for path in arrays} | {data_files.folder for data_files in plan}):
        sink.mkdir(folder)
    for path, array in arrays.items():
        sink.write(path, file_bytes(array))
    blocks = _trial_blocks(plan)
    block_bytes = max((stop - start) * sum(files.bytes_per_trial for files in plan) for start, stop in blocks or [(0, 0)])
    parallel = max(1, min(os.cpu_count() or 1, MAX_PARALLEL_BLOCKS, BYTES_IN_FLIGHT // max(block_bytes, 1)))
    with tqdm(total=len(blocks), unit="block", desc=description, disable=not progress) as bar:
        for (start, _), loaded in _iterate_loaded(plan, blocks, parallel):
            for data_files, values in zip(plan, loaded, strict=True):
                sink.write_trials(data_files.folder, start, data_files.header, data_files.block(values, start))
            bar.update()


def to_folder(
    ds: xr.Dataset,
    path: str | os.PathLike[str],
    *,
    zip: bool = False,
    compression: str | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write a scan Dataset in the release layout: a scan folder at ``path``, or a .zip with ``zip=True``.

    The .zip holds one top-level folder named ``ds.attrs["release_name"]`` (else the file stem),
    its members stored, or deflated with ``compression="deflated"``. Trial files are numbered by
    position along ``trial``. Variables missing from ``ds`` are not written. The target appears
    only when complete; an existing one is replaced only with ``overwrite=True``; the scan ``ds``
    was read from is never overwritten. ``progress=True`` shows a bar over the written blocks.

    >>> from neuroxr.synthetic import make_scan
    >>> to_folder(make_scan(n_trials=40, n_neurons=8), "/tmp/scan.zip", zip=True)  # doctest: +SKIP
    PosixPath('/tmp/scan.zip')
    """
    target = Path(path)
    if compression not in COMPRESSIONS:
        raise ValueError(f"{target}: expected compression None, 'stored' or 'deflated', found {compression!r}")
    if compression is not None and not zip:
        raise ValueError(f"{target}: compression={compression!r} applies only with zip=True")
    refuse_to_overwrite_source(ds.encoding.get("source"), target)
    description = f"writing {target.name}"
    with atomic_target(target, overwrite=overwrite) as temporary:
        if zip:
            top = str(ds.attrs.get("release_name") or (target.stem if target.suffix == ".zip" else target.name))
            with zipfile.ZipFile(temporary, "w", compression=COMPRESSIONS[compression]) as archive:
                _write_scan(ds, _ZipSink(archive, top, COMPRESSIONS[compression]), progress, description)
        else:
            sink = _FolderSink(temporary)
            try:
                _write_scan(ds, sink, progress, description)
            finally:
                sink.close()
    return target
