"""What the sinks share before writing: a Dataset (or DataTree) made ready to write.

- Attributes are normalised to what every format stores as it is (str, int, float, 1-D lists).
- Encodings left over from whatever the Dataset was read from are dropped (stale chunk sizes and
  compressors clash with new ones).
- Dask chunks are made regular and the same along ``trial`` for every variable, so that each dask
  chunk is exactly one chunk of the file: writes need no read-modify-write and Zarr needs no lock.
- The numpy dtypes of string variables are recorded, for formats that cannot keep a ``<U`` width.
- Compression specs (``None``, ``"zstd"``, ``"zlib:4"``, ``"blosc_lz4:5"``) are parsed here; each
  format maps them onto its own encoding keys.
- The files a lazy Dataset reads from are found here, in the data itself, for the guard against
  writing over them.

Nothing here knows a file format.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from neuroxr import chunking, datamodel

#: A file chunk of a single variable is kept below this many bytes (HDF5 refuses chunks of 4 GiB).
MAX_CHUNK_BYTES = 1 << 30

Scans = xr.Dataset | xr.DataTree


# ----------------------------------------------------------------------------------------------
# attributes


def _number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def normalise_attr(value: Any) -> Any:
    """An attribute value every format stores as it is, or ``None`` to drop it.

    str, int, float and 1-D lists of those pass; bools become 0/1; dicts, nested or mixed lists and
    other objects become JSON text; ``None`` is dropped.

    >>> normalise_attr(True), normalise_attr({"a": 1}), normalise_attr((1, 2))
    (1, '{"a": 1}', [1, 2])
    """
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (str, bytes)) or _number(value):
        return value
    if isinstance(value, np.ndarray) and value.ndim <= 1:
        value = value.tolist() if value.ndim else value.item()
        return normalise_attr(value)
    if isinstance(value, (list, tuple)):
        items = [int(item) if isinstance(item, (bool, np.bool_)) else item for item in value]
        if all(isinstance(item, str) for item in items) or all(_number(item) for item in items):
            return items
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return str(value)


def normalise_attrs(attrs: Mapping[Any, Any]) -> dict[str, Any]:
    """``attrs`` with every value passed through :func:`normalise_attr` (dropped ones removed)."""
    normalised = {str(key): normalise_attr(value) for key, value in attrs.items()}
    return {key: value for key, value in normalised.items() if value is not None}


# ----------------------------------------------------------------------------------------------
# chunks


def _regular(chunks: tuple[int, ...]) -> bool:
    """Every chunk but the last has the same size, and the last is no larger."""
    return len(chunks) <= 1 or (len(set(chunks[:-1])) == 1 and chunks[-1] <= chunks[0])


def trial_block(ds: xr.Dataset) -> int | None:
    """The trials per chunk to write: that of the largest dask variable along ``trial``.

    The block is cut down when one chunk of some variable would exceed
    :data:`MAX_CHUNK_BYTES`.
    """
    chunked = [v for v in ds.data_vars.values() if v.chunks is not None and datamodel.TRIAL in v.dims]
    if not chunked:
        return None
    largest = max(chunked, key=lambda v: v.nbytes)
    block = max(largest.chunksizes[datamodel.TRIAL])
    for variable in chunked:
        per_trial = variable.nbytes // max(1, variable.sizes[datamodel.TRIAL])
        if per_trial and block * per_trial > MAX_CHUNK_BYTES:
            block = max(1, block // math.ceil(block * per_trial / MAX_CHUNK_BYTES))
    return block


def regular_chunks(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with every dask variable chunked regularly and all of them alike along ``trial``.

    Variables in memory stay in memory; a dask variable whose chunks are already regular and match
    the trial block is left untouched (no new graph layer).
    """
    block = trial_block(ds)
    changed: dict[str, xr.Variable] = {}
    for name, variable in ds.variables.items():
        if variable.chunks is None:
            continue
        wanted: dict[str, int] = {}
        for dim, chunks in zip(variable.dims, variable.chunks):
            if dim == datamodel.TRIAL and block is not None and (chunks[0] != block or not _regular(chunks)):
                wanted[dim] = block
            elif not _regular(chunks):
                wanted[dim] = max(chunks)
        if wanted:
            changed[str(name)] = variable.chunk(wanted)
    if not changed:
        return ds
    ds = ds.copy()
    for name, variable in changed.items():
        ds[name] = variable
    return ds


def chunk_shape(variable: xr.Variable) -> tuple[int, ...] | None:
    """The (regular) dask chunk of a dask variable: a block of trials; None for a numpy variable."""
    if variable.chunks is None:
        return None
    return tuple(max(1, chunks[0]) for chunks in variable.chunks)


#: File layouts: ``"access"`` (small file chunks for one-trial and one-neuron reads, the default)
#: or ``"blocks"`` (one file chunk per dask chunk, as neuroxr 0.1 wrote). docs/convert.md compares them.
LAYOUTS = ("access", "blocks")


def check_layout(layout: str, fmt: str) -> str:
    """``layout`` if it is one of :data:`LAYOUTS`, else a ValueError naming the choices."""
    if layout not in LAYOUTS:
        raise ValueError(f"{fmt} layout: expected one of {', '.join(map(repr, LAYOUTS))}, found {layout!r}")
    return layout


def file_chunk_shape(variable: xr.Variable, layout: str = "access") -> tuple[int, ...] | None:
    """The file chunk to write a dask variable with: with ``layout="access"`` the chunk policy's for
    a ``(trial, ...)`` variable (:func:`neuroxr.chunking.file_chunks`), else its dask chunk; None
    for a numpy variable."""
    block = chunk_shape(variable)
    if block is None or layout == "blocks" or datamodel.TRIAL not in variable.dims or 0 in variable.shape:
        return block
    dims = tuple(str(dim) for dim in variable.dims)
    return chunking.file_chunks(dims, variable.shape, variable.dtype.itemsize, block[dims.index(datamodel.TRIAL)])


def shard_shape(variable: xr.Variable, layout: str = "access") -> tuple[int, ...] | None:
    """A Zarr shard for a dask variable: its dask chunk, grown to a multiple of its file chunk; None
    when one file chunk is the whole dask chunk (no shard needed) or for a numpy variable."""
    block, inner = chunk_shape(variable), file_chunk_shape(variable, layout)
    if block is None or inner is None or inner == block:
        return None
    return tuple(-(-size // piece) * piece for size, piece in zip(block, inner))


def read_chunks(ds: xr.Dataset, file_trials: int | None = None) -> dict[str, int]:
    """The dask chunks for a Dataset read back from a file: whole blocks of trials, every other
    dimension whole (one task per block, as ``open_scan`` gives).

    The block is the chunk policy's for the largest per-trial variable, or ``file_trials`` (the
    file's own block, e.g. a Zarr shard) when given.
    """
    chunks: dict[str, int] = {str(dim): -1 for dim in ds.dims}
    per_trial = [
        int(v.dtype.itemsize * np.prod([size for dim, size in v.sizes.items() if dim != datamodel.TRIAL], dtype=np.int64))
        for v in ds.data_vars.values()
        if datamodel.TRIAL in v.dims
    ]
    if datamodel.TRIAL in ds.dims and per_trial:
        n_trials = ds.sizes[datamodel.TRIAL]
        chunks[datamodel.TRIAL] = file_trials or chunking.trials_per_chunk(max(per_trial), max(1, n_trials))
    return chunks


# ----------------------------------------------------------------------------------------------
# preparing a Dataset or a DataTree


def _check_writable(ds: xr.Dataset, where: str) -> None:
    for name, index in ds.xindexes.items():
        if type(index).__name__ == "PandasMultiIndex":
            raise ValueError(
                f"{where}: coordinate {name!r} is a MultiIndex, which NetCDF and Zarr cannot store; "
                f"call .reset_index({name!r}) first"
            )
    for name, variable in ds.variables.items():
        if variable.dtype.kind == "O" and variable.chunks is not None:
            raise ValueError(
                f"{where}: variable {name!r} is a dask array of Python objects; expected numbers or "
                "strings of a numpy dtype (convert it with .astype(str) or .astype(float))"
            )


def prepare_dataset(ds: xr.Dataset, where: str = "dataset") -> xr.Dataset:
    """``ds`` ready to write: no stale encodings, normalised attrs, regular chunks."""
    _check_writable(ds, where)
    ds = ds.drop_encoding()
    ds.attrs = normalise_attrs(ds.attrs)
    for variable in ds.variables.values():
        variable.attrs = normalise_attrs(variable.attrs)
    return regular_chunks(ds)


def node_datasets(obj: Scans) -> dict[str, xr.Dataset]:
    """Group path -> the Dataset stored there (only the node's own variables); ``{"/": ds}`` for a Dataset."""
    if isinstance(obj, xr.DataTree):
        return {node.path: node.to_dataset(inherit=False) for node in obj.subtree}
    if isinstance(obj, xr.Dataset):
        return {"/": obj}
    raise TypeError(f"expected an xarray.Dataset or xarray.DataTree, found {type(obj).__name__}")


def prepare(obj: Scans, *, cf: bool = False) -> tuple[Scans, dict[str, xr.Dataset]]:
    """The object to write (same kind as ``obj``) and its prepared Dataset per group path.

    ``cf=True`` (NetCDF and Zarr) adds what the CF conventions ask of a file (:func:`for_cf_file`).
    """
    nodes = {path: prepare_dataset(ds, where=path) for path, ds in node_datasets(obj).items()}
    if cf:
        nodes = {path: for_cf_file(ds, root=path == "/") for path, ds in nodes.items()}
    if isinstance(obj, xr.DataTree):
        return xr.DataTree.from_dict(nodes, name=obj.name), nodes
    return nodes["/"], nodes


# ----------------------------------------------------------------------------------------------
# CF conventions in the files


#: The CF version the NetCDF and Zarr files follow (what cfchecker checks them against).
CONVENTIONS = "CF-1.8"
#: The size-1 dimension (and coordinate) that names a file's scan.
SCAN = "scan"
ANCILLARY = "ancillary_variables"


def for_cf_file(ds: xr.Dataset, *, root: bool) -> xr.Dataset:
    """``ds`` as a CF file holds it: ``Conventions`` (at the root), a ``scan`` coordinate, and
    ``coordinates`` only where CF puts them.

    - ``scan``: a dimension of size 1 whose coordinate is ``attrs["scan"]``. ``xr.open_mfdataset``
      over several scans then combines them along ``scan`` (each scan keeps its own neurons,
      labelled by unit id within the scan), or, with ``join="exact"``, refuses to line up
      unrelated neurons; without it, two scans sharing unit ids would be lined up silently.
    - ``coordinates``: CF names a coordinate in a data variable's ``coordinates`` attribute only
      when the variable spans all of the coordinate's dimensions, and has no global
      ``coordinates`` attribute (where xarray puts the rest). A coordinate no data variable spans
      (``cell_motor_coordinates``, along neurons and space) is written as a variable of its own,
      named in the ``ancillary_variables`` attribute of the data variables along its first
      dimension, as CF describes variables that say something about a data variable.

    :func:`from_cf_file` undoes all three.
    """
    ds = ds.copy()
    if root:
        ds.attrs.setdefault("Conventions", CONVENTIONS)
    scan = ds.attrs.get("scan")
    if isinstance(scan, str) and SCAN not in ds.variables and SCAN not in ds.dims and ds.data_vars:
        ds = ds.assign_coords({SCAN: ((SCAN,), np.array([scan]), {"long_name": "scan (animal-session-scan)"})})
    unspanned = [
        str(name)
        for name, coord in ds.coords.items()
        if name not in ds.dims and coord.dims and not any(set(coord.dims) <= set(data.dims) for data in ds.data_vars.values())
    ]
    described = {str(name): [c for c in unspanned if ds[c].dims[0] in data.dims] for name, data in ds.data_vars.items()}
    ds = ds.reset_coords(unspanned)
    for name, names in described.items():
        if names:
            own = str(ds[name].attrs.get(ANCILLARY, "")).split()
            ds[name].attrs[ANCILLARY] = " ".join([*own, *names])
    return ds


def from_cf_file(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` as read from a file :func:`for_cf_file` prepared: the Dataset that was written."""
    if SCAN in ds.dims and ds.sizes[SCAN] == 1 and [str(v) for v in ds.variables if SCAN in ds[v].dims] == [SCAN]:
        if str(ds[SCAN].values[0]) == ds.attrs.get("scan"):
            ds = ds.drop_dims(SCAN)
    if ds.attrs.get("Conventions") == CONVENTIONS:
        ds.attrs = {key: value for key, value in ds.attrs.items() if key != "Conventions"}
    coordinates: set[str] = set()
    for data in ds.data_vars.values():
        names = str(data.attrs.get(ANCILLARY, "")).split()
        if names and all(name in ds.data_vars for name in names):
            coordinates.update(names)
            data.attrs = {key: value for key, value in data.attrs.items() if key != ANCILLARY}
    return ds.set_coords(sorted(coordinates)) if coordinates else ds


# ----------------------------------------------------------------------------------------------
# the files a lazy Dataset reads


def data_sources(obj: Scans) -> list[str]:
    """Every local file or folder a lazy Dataset (or tree) still reads from, found in the data itself.

    The lazy arrays behind each variable are followed (through dask graphs and xarray's lazy
    indexing wrappers) to the objects that read files: neuroxr's trial readers (a scan folder or
    .zip), NWB row readers, and xarray's NetCDF and Zarr backend arrays. So the sources survive what
    drops ``encoding`` (``ds.where(...)``, ``xr.merge(...)``, arithmetic); data held in memory has
    none. For a scan folder, the scan folder itself is given (not only its ``data/<name>`` folders).

    >>> scan = neuroxr.write_scan(tmp / "scan", n_trials=20, n_neurons=5)
    >>> ds = neuroxr.open_scan(scan)
    >>> data_sources(ds.where(ds.responses > 0)) == [str(scan.resolve())]
    True
    """
    found: dict[str, None] = {}
    for ds in node_datasets(obj).values():
        for variable in ds.variables.values():
            for leaf in _lazy_leaves(getattr(variable, "_data", None)):
                for path in _paths_read_by(leaf):
                    found.setdefault(path)
    return list(found)


def _lazy_leaves(data: Any) -> Iterator[Any]:
    """The objects a variable's data reads from: the values in its dask graph, unwrapped, or its lazy array."""
    if data is None or isinstance(data, np.ndarray):
        return
    graph = getattr(data, "__dask_graph__", None)
    roots = list(dict(graph()).values()) if callable(graph) and graph() is not None else [data]
    pending, seen = roots, set()
    while pending:
        value = pending.pop()
        if id(value) in seen or isinstance(value, (str, bytes, int, float, np.ndarray, type(None))):
            continue
        seen.add(id(value))
        if isinstance(value, (list, tuple, set, frozenset)):
            pending.extend(value)
        elif isinstance(value, dict):
            pending.extend(value.values())
        elif hasattr(value, "args") and hasattr(value, "func"):  # a dask task: its arguments
            pending.extend([*value.args, *getattr(value, "kwargs", {}).values()])
        elif type(value).__name__ == "DataNode" and hasattr(value, "value"):  # a dask literal
            pending.append(value.value)
        elif hasattr(value, "__self__") and hasattr(value, "__func__"):  # a bound method (a reader's read)
            pending.append(value.__self__)
        else:
            yield value
            inner = getattr(value, "array", None)  # xarray's lazy indexing wrappers
            if inner is not None and not isinstance(inner, np.ndarray):
                pending.append(inner)


def _paths_read_by(leaf: Any) -> list[str]:
    """The local paths one lazy reader reads (empty for anything that reads no local file)."""
    candidates: list[Any] = []
    reader = getattr(leaf, "reader", leaf)  # neuroxr's TrialStackArray, or its TrialReader itself
    files = getattr(reader, "files", None)
    if files is not None:
        directory = getattr(files, "directory", None)
        if directory is not None:  # <scan>/data/<name>/: the scan folder is what to protect
            folder = Path(directory)
            candidates.append(folder.parent.parent if folder.parent.name == datamodel.DATA_DIR else folder)
        candidates.append(getattr(files, "archive", None))
    datastore = getattr(leaf, "datastore", None)  # xarray's NetCDF (netCDF4, h5netcdf) arrays
    if datastore is not None:
        candidates.append(getattr(datastore, "_filename", None))
    zarr_array = getattr(leaf, "_array", None)  # xarray's Zarr arrays
    if zarr_array is not None:
        candidates.append(getattr(getattr(zarr_array, "store", None), "root", None))
    if type(leaf).__module__.startswith("neuroxr."):  # neuroxr's NWB readers
        candidates.append(getattr(leaf, "path", None))
    paths = []
    for candidate in candidates:
        if isinstance(candidate, (str, os.PathLike)) and "://" not in str(candidate):
            paths.append(str(Path(candidate).resolve()))
    return paths


# ----------------------------------------------------------------------------------------------
# string dtypes


def string_dtypes(ds: xr.Dataset) -> dict[str, str]:
    """Variable name -> numpy dtype string (e.g. ``"<U32"``) of each fixed-width unicode variable."""
    return {str(name): v.dtype.str for name, v in ds.variables.items() if v.dtype.kind == "U"}


def restore_string_dtypes(ds: xr.Dataset, dtypes: Mapping[str, str]) -> xr.Dataset:
    """``ds`` with each string variable cast back to its recorded numpy dtype (widths included)."""
    updates: dict[str, xr.Variable] = {}
    for name, dtype in dtypes.items():
        variable = ds.variables.get(name)
        if variable is None or variable.dtype.kind not in "UO" or variable.dtype == np.dtype(dtype):
            continue
        updates[name] = variable.astype(dtype)
    if not updates:
        return ds
    coords = {name: v for name, v in updates.items() if name in ds.coords}
    data = {name: v for name, v in updates.items() if name not in ds.coords}
    return ds.assign_coords(coords).assign(data)


# ----------------------------------------------------------------------------------------------
# compression


@dataclass(frozen=True)
class Compression:
    """A codec and its level; ``codec=None`` means no compression."""

    codec: str | None
    level: int | None = None

    def __str__(self) -> str:
        if self.codec is None:
            return "none"
        return self.codec if self.level is None else f"{self.codec}:{self.level}"


def parse_compression(spec: str | None, codecs: Mapping[str, int], fmt: str) -> Compression:
    """Parse ``"codec[:level]"`` (or None / ``"none"``) against the codecs a format offers.

    ``codecs`` maps each codec name to its default level.

    >>> parse_compression("zstd:3", {"zstd": 1}, "NetCDF")
    Compression(codec='zstd', level=3)
    """
    if spec is None or str(spec).strip().lower() in ("", "none", "off", "false"):
        return Compression(None)
    name, _, level = str(spec).strip().lower().partition(":")
    if name not in codecs:
        offered = ", ".join(["none", *codecs])
        raise ValueError(f"{fmt} compression: expected one of {offered} (optionally ':level'), found {spec!r}")
    if not level:
        return Compression(name, codecs[name])
    try:
        return Compression(name, int(level))
    except ValueError:
        raise ValueError(f"{fmt} compression: the level in {spec!r} must be an integer") from None


def uncompressed_bytes(nodes: Mapping[str, xr.Dataset]) -> int:
    """Bytes of every variable of the prepared Datasets: what an uncompressed export writes."""
    return sum(int(variable.nbytes) for ds in nodes.values() for variable in ds.variables.values())
