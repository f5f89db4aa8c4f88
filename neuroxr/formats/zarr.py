"""Zarr sink and reader: a scan (Dataset) or several (DataTree, one group per scan) to a Zarr v3 store.

The store has consolidated metadata. Each per-trial variable is sharded: one shard per dask chunk
(a whole block of trials, so dask writes every shard once, in parallel, with no lock), holding the
small inner chunks of the chunk policy (:func:`neuroxr.chunking.file_chunks`: one trial of
images, 64 trials x 1,000 neurons of responses), so that one trial and one neuron across all trials
are both quick reads while a whole variable still streams a shard at a time. Plain ``xr.open_zarr`` / ``xr.open_datatree(engine="zarr")``
read it back identical to the source, dtypes included: strings are stored with their numpy width
(zarr-python's ``fixed_length_utf32`` data type), booleans as booleans, uint16 as uint16.

Two warnings zarr-python emits for this on purpose are silenced, each by its exact message, only
around writing and opening: that ``fixed_length_utf32`` has no Zarr v3 specification yet (it is the only Zarr
data type that keeps a ``<U32`` a ``<U32``), and that consolidated metadata is not part of the
Zarr v3 specification (xarray uses it by default; it makes opening fast on object stores).
Every other warning passes through.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import xarray as xr

from neuroxr.datamodel import TRIAL
from neuroxr.dataset import load_labels
from neuroxr.errors import require
from neuroxr.formats import _prepare
from neuroxr.formats._write import OutputKind, dask_progress, visible_entries, write_atomically

#: Default compression: Blosc with LZ4 and byte shuffle. Measured on release-sized data
#: (docs/convert.md): it halves the store and writes as fast as no compression, because Blosc
#: is fast and dask compresses chunks in parallel; every Zarr implementation has Blosc.
DEFAULT_COMPRESSION: str | None = "blosc_lz4"

#: codec -> default level.
CODECS: dict[str, int] = {"blosc_lz4": 5, "blosc_zstd": 1, "zstd": 1, "gzip": 1}

CompressionSpec = str | Mapping[str, Any] | Sequence[Any] | None
#: zarr-python's own codec pipeline (the configuration neuroxr replaces with zarrs, and only that one).
DEFAULT_PIPELINE = "zarr.core.codec_pipeline.BatchedCodecPipeline"


def is_zarr_store(path: Path) -> bool:
    """A folder holding a Zarr group or array (v3 ``zarr.json``, v2 ``.zgroup``/``.zarray``), or nothing."""
    return any((path / name).is_file() for name in ("zarr.json", ".zgroup", ".zarray")) or not visible_entries(path)


#: What ``overwrite=True`` may replace: a Zarr store (or an empty folder), never another folder tree.
ZARR_STORE = OutputKind("a Zarr store", folder=True, recognise=is_zarr_store)


def _require_zarr() -> Any:
    """The zarr package, or a :class:`~neuroxr.errors.MissingExtraError` naming ``neuroxr[zarr]``."""
    return require("zarr", "zarr", "reading and writing Zarr")


def compressors(compression: CompressionSpec) -> tuple[Any, ...] | dict[str, Any]:
    """The Zarr v3 compressors of a compression spec (or raw encoding keys, for a mapping).

    ``compression`` is None/"none", ``"codec[:level]"`` (blosc_lz4, blosc_zstd, zstd, gzip), a
    sequence of zarr codec objects, or a mapping of xarray zarr encoding keys used as they are.

    >>> compressors("zstd:3")
    (ZstdCodec(level=3, checksum=False),)
    """
    _require_zarr()
    from zarr.codecs import BloscCodec, BloscShuffle, GzipCodec, ZstdCodec

    if isinstance(compression, Mapping):
        return dict(compression)
    if isinstance(compression, Sequence) and not isinstance(compression, str):
        return tuple(compression)
    parsed = _prepare.parse_compression(compression, CODECS, "Zarr")
    if parsed.codec is None:
        return ()
    if parsed.codec.startswith("blosc_"):
        cname = parsed.codec.removeprefix("blosc_")
        return (BloscCodec(cname=cname, clevel=parsed.level, shuffle=BloscShuffle.shuffle),)
    if parsed.codec == "zstd":
        return (ZstdCodec(level=parsed.level),)
    return (GzipCodec(level=parsed.level),)


def _variable_encodings(ds: xr.Dataset, codecs: tuple[Any, ...] | dict[str, Any], layout: str) -> dict[str, dict[str, Any]]:
    """Per variable: shards = the dask chunks (whole trial blocks, so dask writes each shard once,
    with no lock), inner chunks = the chunk policy's file chunks; codecs on data variables."""
    extra = codecs if isinstance(codecs, dict) else {"compressors": codecs}
    encodings: dict[str, dict[str, Any]] = {}
    for name, variable in ds.variables.items():
        encoding: dict[str, Any] = {}
        shards = _prepare.shard_shape(variable, layout)
        chunks = _prepare.file_chunk_shape(variable, layout) if shards is not None else _prepare.chunk_shape(variable)
        if chunks is not None:
            encoding["chunks"] = chunks
        if shards is not None:
            encoding["shards"] = shards
        if name in ds.data_vars and variable.dtype.kind not in "USO":
            encoding.update(extra)
        if encoding:
            encodings[str(name)] = encoding
    return encodings


@contextmanager
def fast_codecs() -> Iterator[None]:
    """Use the zarrs codec pipeline (Rust, part of ``neuroxr[zarr]``) inside the block, when installed.

    Sharded arrays hold many small inner chunks; zarr-python's own pipeline spends about 0.3 ms on
    each, zarrs a few microseconds (``benchmarks/bench_layout.py``). Arrays opened inside the block
    keep the pipeline they were opened with, so a Dataset opened here reads fast later too; outside
    the block zarr's configuration is as the user left it (a user's own pipeline is never replaced).
    Arrays zarrs does not support (strings) stay with zarr-python's pipeline.
    """
    import zarr

    if find_spec("zarrs") is None or zarr.config.get("codec_pipeline.path") != DEFAULT_PIPELINE:
        yield
        return
    with zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"}), warnings.catch_warnings():
        # zarrs hands what it does not support (string arrays: small label coordinates) back to
        # zarr-python's pipeline, and says so each time: that is the intended behaviour here.
        warnings.filterwarnings("ignore", message="Array is unsupported by ZarrsCodecPipeline", category=UserWarning)
        yield


@contextmanager
def _expected_zarr_warnings_silenced() -> Iterator[None]:
    """Silence exactly the two warnings the module docstring explains; nothing else."""
    from zarr.errors import UnstableSpecificationWarning, ZarrUserWarning

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"The data type \(FixedLengthUTF32", category=UnstableSpecificationWarning
        )
        warnings.filterwarnings(
            "ignore", message="Consolidated metadata is currently not part in the Zarr format 3", category=ZarrUserWarning
        )
        yield


def to_zarr(
    obj: xr.Dataset | xr.DataTree,
    path: str | os.PathLike[str],
    *,
    compression: CompressionSpec = DEFAULT_COMPRESSION,
    layout: str = "access",
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write a scan (Dataset) or several scans (DataTree, one group each) to a Zarr v3 store, streaming.

    Dask chunks are written in parallel, one shard each (the scan is never loaded); the store
    appears at ``path`` only once complete, CF-conventional, with consolidated metadata.
    ``compression``: ``"blosc_lz4[:level]"`` (default, see docs/convert.md),
    ``"blosc_zstd[:level]"``, ``"zstd[:level]"``, ``"gzip[:level]"``, None, a sequence of zarr
    codecs, or a mapping of xarray zarr encoding keys. ``layout``: ``"access"`` (default: shards
    of small inner chunks, for one-trial and one-neuron reads) or ``"blocks"`` (one chunk per
    trial block, for readers without zarrs). An existing ``path`` raises
    :class:`~neuroxr.TargetExistsError` unless ``overwrite=True`` (which replaces only a Zarr
    store); ``progress=True`` shows a progress bar. Returns ``path``.

    >>> ds = neuroxr.open_scan(neuroxr.write_scan(tmp / "scan.zip", zip=True, n_trials=60, n_neurons=20))
    >>> neuroxr.to_zarr(ds, tmp / "30001-2-3.zarr")
    PosixPath('.../30001-2-3.zarr')
    >>> xr.open_zarr(tmp / "30001-2-3.zarr").responses.sizes  # plain xarray reads it
    Frozen({'trial': 60, 'neuron': 20})
    """
    _require_zarr()
    _prepare.check_layout(layout, "Zarr")
    codecs = compressors(compression)
    prepared, nodes = _prepare.prepare(obj, cf=True)
    encodings = {group: _variable_encodings(ds, codecs, layout) for group, ds in nodes.items()}

    def write(temporary: Path) -> None:
        with _expected_zarr_warnings_silenced(), fast_codecs():
            if isinstance(prepared, xr.DataTree):
                prepared.to_zarr(temporary, mode="w-", encoding=encodings, consolidated=True, zarr_format=3)
            else:
                prepared.to_zarr(temporary, mode="w-", encoding=encodings["/"], consolidated=True, zarr_format=3)

    needed = _prepare.uncompressed_bytes(nodes) if not codecs else None
    with dask_progress(progress, f"writing {Path(path).name}"):
        return write_atomically(
            path, write, kind=ZARR_STORE, sources=_prepare.data_sources(obj), overwrite=overwrite, needed_bytes=needed
        )


def _has_groups(path: str) -> bool:
    import zarr

    with _expected_zarr_warnings_silenced():
        group = zarr.open_group(path, mode="r")
        return any(True for _ in group.group_keys())


def open_zarr(path: str | os.PathLike[str]) -> xr.Dataset | xr.DataTree:
    """Open a store written by :func:`to_zarr`: a Dataset, or a DataTree when the store has groups.

    Data variables are dask arrays of whole shards (a block of trials each); labels and statistics
    are loaded as numpy. Reads use zarrs where it is installed (see :func:`fast_codecs`).

    >>> path = neuroxr.to_zarr(neuroxr.make_scan(n_trials=60, n_neurons=20), tmp / "30001-2-3.zarr")
    >>> ds = open_zarr(path)
    >>> type(ds.responses.data).__name__, ds.tier.dtype, ds.responses_withheld.dtype
    ('Array', dtype('<U10'), dtype('bool'))
    """
    _require_zarr()
    path = os.fspath(path)
    if not Path(path).is_dir():
        raise FileNotFoundError(f"{path}: no such Zarr store (expected a folder)")
    with fast_codecs(), _expected_zarr_warnings_silenced():
        if _has_groups(path):
            tree = xr.open_datatree(path, engine="zarr", chunks=None, consolidated=True)
            nodes = {node.path: _finish(node.to_dataset(inherit=False)) for node in tree.subtree}
            return xr.DataTree.from_dict(nodes, name=tree.name)
        return _finish(xr.open_dataset(path, engine="zarr", chunks=None, consolidated=True))


def _finish(ds: xr.Dataset) -> xr.Dataset:
    """Dask chunks of whole shards (one task per block of trials); labels and statistics loaded."""
    blocks = []
    for variable in ds.data_vars.values():
        stored = variable.encoding.get("shards") or variable.encoding.get("chunks")
        if stored and TRIAL in variable.dims:
            blocks.append(int(stored[variable.dims.index(TRIAL)]))
    return load_labels(_prepare.from_cf_file(ds.chunk(_prepare.read_chunks(ds, max(blocks, default=None)))))
