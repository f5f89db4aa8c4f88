"""NetCDF sink and reader: a scan (Dataset) or several (DataTree, one group per scan) to one netCDF-4 file.

The file is plain netCDF-4 that ``xr.open_dataset`` / ``xr.open_datatree`` read back with nothing
from neuroxr: same names, values and attributes (booleans as booleans, uint16 as uint16), and it
follows the CF conventions (``Conventions = "CF-1.8"``; ``long_name`` and ``units`` from the data
model; strings as character arrays, which CF-1.8 and cfchecker accept; ``coordinates`` attributes
on the data variables; a ``scan`` coordinate, see :func:`neuroxr.formats._prepare.for_cf_file`).
Plain xarray gives strings back as Python strings (object dtype) and a size-1 ``scan`` dimension;
:func:`open_netcdf` gives back the exact Dataset written: the declared string widths are recorded
in an unused named enum type per group (``neuroxr_string_dtypes``, members ``"<name>=<dtype>"``),
which xarray ignores.

Data variables are written block by block from dask, to a temporary name beside the target that is
renamed at the end. The HDF5 chunks are the chunk policy's file chunks
(:func:`neuroxr.chunking.file_chunks`: one trial of images, 64 trials x 1,000 neurons of
responses), so one trial and one neuron across all trials are quick reads; :func:`open_netcdf`
gives dask chunks of whole blocks of trials.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from neuroxr.dataset import load_labels
from neuroxr.formats import _prepare
from neuroxr.formats._write import OutputKind, dask_progress, is_netcdf_file, write_atomically

#: Default compression: none. Measured on release-sized data (docs/convert.md): zlib costs several
#: times the write time, zstd needs an HDF5 filter plugin that h5py/h5netcdf and older netCDF builds
#: lack; uncompressed chunked files write at disk speed and every netCDF-4 reader opens them.
DEFAULT_COMPRESSION: str | None = None

#: codec -> default level, per engine.
CODECS: dict[str, dict[str, int]] = {
    "netcdf4": {"zlib": 1, "zstd": 1},
    "h5netcdf": {"zlib": 1},
}
STRING_DTYPES_TYPE = "neuroxr_string_dtypes"
#: What ``overwrite=True`` may replace: a netCDF file (never a folder or another kind of file).
NETCDF_FILE = OutputKind("a netCDF file", folder=False, recognise=is_netcdf_file)

CompressionSpec = str | Mapping[str, Any] | None


def compression_encoding(compression: CompressionSpec, engine: str) -> dict[str, Any]:
    """The per-variable encoding keys of a compression spec for an engine.

    ``compression`` is None/"none", ``"codec[:level]"`` (netcdf4: zlib, zstd; h5netcdf: zlib), or
    a mapping of raw encoding keys passed to xarray as they are. (The HDF5 Blosc filter is not
    offered: it fails the write on a chunk it cannot compress.)

    >>> compression_encoding("zlib:4", "netcdf4")
    {'compression': 'zlib', 'complevel': 4, 'shuffle': True}
    """
    if isinstance(compression, Mapping):
        return dict(compression)
    if engine not in CODECS:
        raise ValueError(f"NetCDF engine: expected one of {', '.join(CODECS)}, found {engine!r}")
    parsed = _prepare.parse_compression(compression, CODECS[engine], f"NetCDF ({engine})")
    if parsed.codec is None:
        return {}
    if engine == "h5netcdf":
        return {"compression": "gzip", "compression_opts": parsed.level, "shuffle": True}
    # netCDF4-python applies the HDF5 shuffle filter with zlib only.
    return {"compression": parsed.codec, "complevel": parsed.level, "shuffle": parsed.codec == "zlib"}


def _variable_encodings(ds: xr.Dataset, compression: Mapping[str, Any], layout: str) -> dict[str, dict[str, Any]]:
    """chunksizes = the chunk policy's file chunks (they tile the dask chunks), compression on chunked data variables."""
    encodings: dict[str, dict[str, Any]] = {}
    for name, variable in ds.variables.items():
        if variable.dtype.kind in "UO":  # character arrays (CF's strings; netCDF-4 vlen strings are not CF-1.8)
            encodings[str(name)] = {"dtype": "S1"}
            continue
        shape = _prepare.file_chunk_shape(variable, layout)
        if shape is None or variable.dtype.kind in "S" or 0 in variable.shape:
            continue
        encodings[str(name)] = {"chunksizes": shape, **(compression if name in ds.data_vars else {})}
    return encodings


def _record_string_dtypes(path: Path, nodes: Mapping[str, xr.Dataset]) -> None:
    """Add the ``neuroxr_string_dtypes`` enum type to each group that holds string variables."""
    import netCDF4

    with netCDF4.Dataset(path, "a") as root:
        for group_path, ds in nodes.items():
            dtypes = _prepare.string_dtypes(ds)
            if not dtypes:
                continue
            group = root if group_path == "/" else root[group_path.lstrip("/")]
            members = {f"{name}={dtype}": code for code, (name, dtype) in enumerate(sorted(dtypes.items()))}
            base = np.uint8 if len(members) <= 255 else np.uint32
            group.createEnumType(base, STRING_DTYPES_TYPE, members)


def _recorded_string_dtypes(path: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """Group path -> {variable: dtype} as recorded by :func:`_record_string_dtypes`."""
    import netCDF4

    found: dict[str, dict[str, str]] = {}

    def visit(group: Any, group_path: str) -> None:
        enum = group.enumtypes.get(STRING_DTYPES_TYPE)
        if enum is not None:
            found[group_path] = dict(member.rsplit("=", 1) for member in enum.enum_dict)
        for name, child in group.groups.items():
            visit(child, f"{group_path.rstrip('/')}/{name}")

    with netCDF4.Dataset(path) as root:
        visit(root, "/")
    return found


def to_netcdf(
    obj: xr.Dataset | xr.DataTree,
    path: str | os.PathLike[str],
    *,
    engine: str = "netcdf4",
    compression: CompressionSpec = DEFAULT_COMPRESSION,
    layout: str = "access",
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write a scan (Dataset) or several scans (DataTree, one group each) to a netCDF-4 file, streaming.

    Dask chunks are written one by one (the scan is never loaded); the file appears at ``path``
    only once complete, CF-conventional (docs/convert.md). ``compression``: None (default, see
    docs/convert.md), ``"zlib[:level]"`` (with byte shuffle), ``"zstd[:level]"`` or a mapping of
    xarray encoding keys. ``layout``: ``"access"`` (default: HDF5 chunks for one-trial and
    one-neuron reads) or ``"blocks"`` (one chunk per trial block). An existing ``path`` raises
    :class:`~neuroxr.TargetExistsError` unless ``overwrite=True`` (which replaces only a netCDF
    file); ``progress=True`` shows a progress bar. Returns ``path``.

    >>> ds = neuroxr.open_scan(neuroxr.write_scan(tmp / "scan.zip", zip=True, n_trials=60, n_neurons=20))
    >>> neuroxr.to_netcdf(ds, tmp / "30001-2-3.nc")
    PosixPath('.../30001-2-3.nc')
    >>> with xr.open_dataset(tmp / "30001-2-3.nc") as plain:  # plain xarray reads it
    ...     plain.responses.sizes
    Frozen({'trial': 60, 'neuron': 20})
    """
    compression_keys = compression_encoding(compression, engine)
    _prepare.check_layout(layout, "NetCDF")
    prepared, nodes = _prepare.prepare(obj, cf=True)
    encodings = {group: _variable_encodings(ds, compression_keys, layout) for group, ds in nodes.items()}

    def write(temporary: Path) -> None:
        if isinstance(prepared, xr.DataTree):
            prepared.to_netcdf(temporary, engine=engine, format="NETCDF4", encoding=encodings)
        else:
            prepared.to_netcdf(temporary, engine=engine, format="NETCDF4", encoding=encodings["/"])
        _record_string_dtypes(temporary, nodes)

    needed = _prepare.uncompressed_bytes(nodes) if not compression_keys else None
    with dask_progress(progress, f"writing {Path(path).name}"):
        return write_atomically(
            path, write, kind=NETCDF_FILE, sources=_prepare.data_sources(obj), overwrite=overwrite, needed_bytes=needed
        )


def _has_groups(path: str | os.PathLike[str]) -> bool:
    import netCDF4

    with netCDF4.Dataset(path) as root:
        return bool(root.groups)


def _finish(ds: xr.Dataset, dtypes: Mapping[str, str]) -> xr.Dataset:
    """Dask chunks of whole blocks of trials, exact string dtypes, labels and statistics loaded."""
    ds = _prepare.restore_string_dtypes(ds.chunk(_prepare.read_chunks(ds)), dtypes)
    return load_labels(_prepare.from_cf_file(ds))


def open_netcdf(path: str | os.PathLike[str], *, engine: str = "netcdf4") -> xr.Dataset | xr.DataTree:
    """Open a file written by :func:`to_netcdf`: a Dataset, or a DataTree when the file has groups.

    Data variables are dask arrays of whole blocks of trials (about 64 MB, as ``open_scan`` gives);
    labels and statistics are loaded as numpy; string variables get back their exact numpy dtypes.

    >>> path = neuroxr.to_netcdf(neuroxr.make_scan(n_trials=60, n_neurons=20), tmp / "30001-2-3.nc")
    >>> ds = open_netcdf(path)
    >>> type(ds.responses.data).__name__, ds.tier.dtype, ds.responses_withheld.dtype
    ('Array', dtype('<U10'), dtype('bool'))
    """
    path = os.fspath(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such NetCDF file")
    dtypes = _recorded_string_dtypes(path)
    if _has_groups(path):
        tree = xr.open_datatree(path, engine=engine, chunks=None)
        nodes = {node.path: _finish(node.to_dataset(inherit=False), dtypes.get(node.path, {})) for node in tree.subtree}
        return xr.DataTree.from_dict(nodes, name=tree.name)
    ds = xr.open_dataset(path, engine=engine, chunks=None)
    return _finish(ds, dtypes.get("/", {}))
