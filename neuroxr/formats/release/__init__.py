"""Write a scan Dataset back to the Sensorium release layout: a scan folder, or a .zip holding one.

The layout (see ``docs/sensorium-format.md``)::

    data/{images,responses,behavior,pupil_center}/{k}.npy   one file per trial
    meta/trials/*.npy  meta/neurons/*.npy                    one array per coordinate
    meta/statistics/{variable}/{subset}/{statistic}.npy

Trial files are numbered by position: ``data/*/{k}.npy`` and row ``k`` of every meta/trials array
hold the k-th trial along the Dataset's ``trial`` dimension, whatever its ``trial`` labels are
(after ``ds.isel(trial=[7, 3])`` they become 0.npy and 1.npy). Every path comes from the data
model, never from an attribute: a data variable goes to ``data/<name>/``, its statistics to
``meta/statistics/<name>/<subset>/<statistic>.npy``, a coordinate to the meta file of its name
(``tier`` to ``meta/trials/tiers.npy``). A coordinate is written when it records a release file
(its ``sensorium_file`` attribute) or is one of the contract's; derived coordinates such as
``responses_withheld`` are not. A name that could not name a file inside the target (``..``, a
``/``) is refused with a :class:`~neuroxr.errors.DatasetError`. Withheld cells are written as the
release ships them: zeros (in a video scan, the trial's frames: the padding after ``n_frames`` is
written as it is). Statistics that are all NaN stand for absent files and are not written; a
statistics file stored in another dtype than its variable is written back in it. Both kinds of
scan (``data/images`` and ``data/videos``) are written the same way.

Every .npy file is byte-identical to what ``np.save`` writes for the same array. Data is streamed
block by block along the Dataset's dask chunks, so a scan larger than memory can be written.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from neuroxr import chunking, datamodel
from neuroxr.errors import DatasetError
from neuroxr.formats._prepare import data_sources, uncompressed_bytes
from neuroxr.formats._write import BlockStream, OutputKind, Progress, is_zip_file, output_name, visible_entries, write_atomically
from neuroxr.formats.release.writers import FolderWriter, ReleaseWriter, ZipWriter, as_saveable
from neuroxr.npy import file_bytes, header_bytes

#: At most this many blocks are computed ahead (in parallel) while one is being written ...
MAX_PARALLEL_BLOCKS = 4
#: ... and at most about this many bytes of them.
BYTES_IN_FLIGHT = 256 * 2**20

COMPRESSIONS = {None: zipfile.ZIP_STORED, "stored": zipfile.ZIP_STORED, "deflated": zipfile.ZIP_DEFLATED}

# The contract's coordinates, written even when they lost their ``sensorium_file`` attribute.
_TRIAL_CONTRACT = {"trial_idx", "frame_image_class", "frame_trial_ts", "condition_hash", *datamodel.TRIAL_RENAMES.values()}
_TRIAL_CONTRACT |= {f"{datamodel.TRIAL_CLASH_PREFIX}{name}" for name in ("animal_id", "session", "scan_idx")}
_NEURON_CONTRACT = {"area", "layer", "scan_idx", "cell_motor_coordinates", datamodel.NEURON, *datamodel.NEURON_RENAMES.values()}
_TRIAL_STEMS = {coord: stem for stem, coord in datamodel.TRIAL_RENAMES.items()}
_NEURON_STEMS = {coord: stem for stem, coord in datamodel.NEURON_RENAMES.items()} | {datamodel.NEURON: datamodel.NEURON_INDEX_FILE}


# --------------------------------------------------------------------------------------------
# xarray glue: what goes into which file
# --------------------------------------------------------------------------------------------
def _file_stems(name: str, on_trials: bool, ds: xr.Dataset) -> list[str]:
    """The release file stems the data model allows for a coordinate, the usual one first.

    ``tier`` is ``tiers``, ``neuron`` is ``unit_ids``, ``trial_animal_id`` (a trial file named like
    a neuron coordinate) is ``animal_id``; any other coordinate is its own name.
    """
    if on_trials:
        unprefixed = name.removeprefix(datamodel.TRIAL_CLASH_PREFIX)
        if unprefixed != name and (unprefixed in ds.variables or unprefixed in ds.dims):
            return [unprefixed, name]
        return [_TRIAL_STEMS[name], name] if name in _TRIAL_STEMS else [name]
    return [_NEURON_STEMS[name], name] if name in _NEURON_STEMS else [name]


def _coordinate_file(name: str, coord: xr.DataArray, ds: xr.Dataset) -> str | None:
    """Release path of a coordinate (``meta/trials/<stem>.npy`` or ``meta/neurons/<stem>.npy``), or None.

    A coordinate has a release file when it records one (its ``sensorium_file`` attribute) or is
    one of the contract's; derived ones (``responses_withheld``, the ``trial`` numbers) have none.
    The path is the data model's: the recorded one only chooses among the stems the data model
    allows for that name (so a crafted attribute can never send a file elsewhere).
    """
    on_trials = datamodel.TRIAL in coord.dims
    recorded = coord.attrs.get(datamodel.FILE_ATTR)
    if recorded is not None and not str(recorded).endswith(".npy"):
        return None
    contract = _TRIAL_CONTRACT if on_trials else _NEURON_CONTRACT
    if name in (datamodel.WITHHELD_COORD, datamodel.TRIAL) or (recorded is None and name not in contract):
        return None
    directory = datamodel.TRIALS_DIR if on_trials else datamodel.NEURONS_DIR
    stems = _file_stems(name, on_trials, ds)
    stem = next((stem for stem in stems if recorded == f"{directory}/{stem}.npy"), stems[0])
    return f"{directory}/{output_name(stem, f'coordinate {name!r}')}.npy"


def _meta_files(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """Release path -> array of every meta/trials and meta/neurons file."""
    files: dict[str, np.ndarray] = {}
    owners: dict[str, str] = {}
    for name, coord in ds.coords.items():
        leading = [dim for dim in ("trial", "neuron") if dim in coord.dims]
        if not leading:
            continue
        path = _coordinate_file(str(name), coord, ds)
        if path is None:
            continue
        if path in owners:
            raise DatasetError(f"coordinates {owners[path]!r} and {name!r} would both be written to {path}; rename one")
        owners[path] = str(name)
        values = coord.transpose(*leading, ...).values
        files[path] = as_saveable(values, f"coordinate {name!r} ({path})")
    return files


def _statistics_files(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """Release path -> array of every statistics file present (not all NaN), in its stored dtype."""
    files: dict[str, np.ndarray] = {}
    for variable in datamodel.kind_of([*ds.variables, *ds.dims], ds.attrs).data_variables:
        name = datamodel.statistics_name(variable)
        if name not in ds:
            continue
        statistics = ds[name]
        for dim in ("subset", "statistic"):
            if dim not in statistics.dims:  # e.g. after ds.sel(subset="all")
                if dim not in statistics.coords:
                    raise ValueError(f"{name}: expected a {dim!r} dimension or coordinate, found neither")
                statistics = statistics.expand_dims(dim)
        statistics = statistics.transpose("subset", "statistic", ...)
        stored = dict(str(entry).rsplit("=", 1) for entry in np.atleast_1d(statistics.attrs.get(datamodel.FILE_DTYPES_ATTR, [])))
        values = statistics.values
        for i, subset in enumerate(statistics["subset"].values.tolist()):
            for j, statistic in enumerate(statistics["statistic"].values.tolist()):
                array = np.asarray(values[i, j])
                if array.dtype.kind == "f" and np.isnan(array).all():
                    continue
                subset_name = output_name(subset, f"{name}: statistics subset")
                statistic_name = output_name(statistic, f"{name}: statistic")
                dtype = stored.get(f"{subset}/{statistic}")
                files[datamodel.statistics_file(variable, subset_name, statistic_name)] = array.astype(dtype) if dtype else array
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
    n_frames: np.ndarray | None = None  # a video scan: only each trial's first n_frames (last axis) are zeroed

    @property
    def bytes_per_trial(self) -> int:
        return int(self.variable.dtype.itemsize * np.prod(self.variable.shape[1:], dtype=np.int64))

    def block(self, values: np.ndarray, start: int) -> np.ndarray:
        """The block of trials from ``start`` as contiguous stored values (withheld cells zeroed)."""
        values = np.ascontiguousarray(values, dtype=self.variable.dtype)
        rows = None if self.zero_rows is None else self.zero_rows[start : start + len(values)]
        if (rows is not None and rows.any()) or self.zero_nan:
            values = values.copy()  # never modify the computed array in place: it may be a view
            inside = np.ones(values.shape, dtype=bool)  # the cells of the trial (not its padding)
            if self.n_frames is not None:
                frames = np.arange(values.shape[-1]) < self.n_frames[start : start + len(values), None]
                inside = np.broadcast_to(frames.reshape(len(values), *(1,) * (values.ndim - 2), -1), values.shape)
            if rows is not None:
                values[inside & rows.reshape(-1, *(1,) * (values.ndim - 1))] = 0
            if self.zero_nan and values.dtype.kind == "f":
                values[inside & np.isnan(values)] = 0
        return values


def _data_files(ds: xr.Dataset) -> list[_DataFiles]:
    withheld = datamodel.withheld_variables(ds.attrs)
    withheld_rows = None
    if datamodel.WITHHELD_COORD in ds.coords and ds[datamodel.WITHHELD_COORD].dims == ("trial",):
        withheld_rows = np.asarray(ds[datamodel.WITHHELD_COORD].values, dtype=bool)
    kind = datamodel.kind_of([*ds.variables, *ds.dims], ds.attrs)
    n_frames = None
    if datamodel.N_FRAMES in ds.coords and ds[datamodel.N_FRAMES].dims == ("trial",):
        n_frames = np.asarray(ds[datamodel.N_FRAMES].values, dtype=np.int64)
    plan = []
    for name in kind.data_variables:
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
                folder=f"{datamodel.DATA_DIR}/{name}",
                header=header_bytes(variable.dtype, variable.shape[1:]),
                zero_rows=zero_rows,
                zero_nan=zero_nan,
                n_frames=n_frames if n_frames is not None and variable.dims[-1] == kind.time_dim else None,
            )
        )
    return plan


def _trial_blocks(plan: list[_DataFiles]) -> tuple[int, ...]:
    """Trials per written block: the trial chunks of the largest dask variable, else the chunk policy's."""
    n_trials = plan[0].variable.shape[0]
    chunked = [files for files in plan if files.variable.chunks is not None]
    if chunked:
        largest = max(chunked, key=lambda files: files.bytes_per_trial)
        return tuple(int(size) for size in largest.variable.chunks[0] if size)  # type: ignore[index]
    per_block = chunking.trials_per_chunk(max(files.bytes_per_trial for files in plan), n_trials)
    return tuple(min(per_block, n_trials - start) for start in range(0, n_trials, per_block))


def _block_stream(plan: list[_DataFiles]) -> BlockStream:
    """The data variables' blocks, computed together (they may share inputs), a few ahead."""
    import dask.array as da

    chunks = _trial_blocks(plan)
    arrays = []
    for files in plan:
        data = files.variable.data
        if not isinstance(data, da.Array):
            data = da.from_array(np.asarray(files.variable.values), chunks=(chunks, *files.variable.shape[1:]))
        arrays.append(data.rechunk({0: chunks}))
    block_bytes = max(chunks) * sum(files.bytes_per_trial for files in plan)
    ahead = max(1, min(os.cpu_count() or 1, MAX_PARALLEL_BLOCKS, BYTES_IN_FLIGHT // max(block_bytes, 1)))
    return BlockStream(arrays, ahead=ahead)


def is_release_folder(path: Path) -> bool:
    """A folder holding only a scan's ``data/`` and ``meta/`` folders (and hidden files), or nothing."""
    entries = visible_entries(path)
    return all(entry.is_dir() and entry.name in (datamodel.DATA_DIR, "meta") for entry in entries)


#: What ``overwrite=True`` may replace: a scan folder (or an empty folder), or a zip archive.
RELEASE_FOLDER = OutputKind("a scan folder (data/ and meta/ only)", folder=True, recognise=is_release_folder)
RELEASE_ZIP = OutputKind("a zip archive", folder=False, recognise=is_zip_file)


def _write_scan(ds: xr.Dataset, writer: ReleaseWriter, progress: Progress) -> None:
    plan = _data_files(ds)
    arrays = {**_meta_files(ds), **_statistics_files(ds)}
    for folder in sorted({path.rsplit("/", 1)[0] for path in arrays} | {data_files.folder for data_files in plan}):
        writer.mkdir(folder)
    for path, array in arrays.items():
        writer.write(path, file_bytes(array))
    if not plan or plan[0].variable.shape[0] == 0:
        return
    stream = _block_stream(plan)
    progress.add(len(stream))
    for start, blocks in stream:
        for data_files, values in zip(plan, blocks, strict=True):
            writer.write_trials(data_files.folder, start, data_files.header, data_files.block(values, start))
        progress.advance()


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

    The .zip holds one top-level folder named like the archive (its stem, as in the release:
    ``static...-GrayImageNet-<hash>.zip`` holds ``static...-GrayImageNet-<hash>/``), its members
    stored, or deflated with ``compression="deflated"``. Trial files are numbered by position along
    ``trial``; every path comes from the data model (see the module docstring). Variables missing
    from ``ds`` are not written. The target appears only when complete; ``overwrite=True``
    replaces a previous scan folder or zip archive (never another folder tree); the scan ``ds`` is
    read from is never overwritten. ``progress=True`` shows a bar over the written blocks.

    >>> path = to_folder(neuroxr.make_scan(n_trials=40, n_neurons=8), tmp / "scan.zip", zip=True)
    >>> neuroxr.open_scan(path).responses.shape
    (40, 8)
    """
    target = Path(path)
    if compression not in COMPRESSIONS:
        raise ValueError(f"{target}: expected compression None, 'stored' or 'deflated', found {compression!r}")
    if compression is not None and not zip:
        raise ValueError(f"{target}: compression={compression!r} applies only with zip=True")
    top = target.stem if target.suffix.lower() == ".zip" else target.name

    def write(temporary: Path) -> None:
        with Progress(progress, f"writing {target.name}") as display:
            if zip:
                with zipfile.ZipFile(temporary, "w", compression=COMPRESSIONS[compression]) as archive:
                    _write_scan(ds, ZipWriter(archive, top, COMPRESSIONS[compression]), display)
            else:
                writer = FolderWriter(temporary)
                try:
                    _write_scan(ds, writer, display)
                finally:
                    writer.close()

    needed = None if compression == "deflated" else uncompressed_bytes({"/": ds})
    kind = RELEASE_ZIP if zip else RELEASE_FOLDER
    return write_atomically(target, write, kind=kind, sources=data_sources(ds), overwrite=overwrite, needed_bytes=needed)
