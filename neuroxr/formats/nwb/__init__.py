"""NWB export and import of scans: ``to_nwb`` writes one NWB 2 (HDF5) file per scan, ``open_nwb`` reads it back.

The files use the core NWB types tools understand (PlaneSegmentation, RoiResponseSeries, Images +
IndexSeries or, for a video scan, an ImageSeries, PupilTracking, BehavioralTimeSeries, EyeTracking,
the trials table, DynamicTables of the statistics); what NWB has no place for is kept in a JSON
mapping document (``/general/neuroxr_layout``), so that ``open_nwb`` returns a Dataset identical to
the one written. The mapping and its reasons are in ``docs/nwb.md``; the writer is
:mod:`~neuroxr.formats.nwb.write`, the reader :mod:`~neuroxr.formats.nwb.read`, the names they share
:mod:`~neuroxr.formats.nwb.mapping`. A DataTree of scans becomes a folder of files, one per scan.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import xarray as xr

from neuroxr.errors import DatasetError
from neuroxr.formats._prepare import data_sources, node_datasets, uncompressed_bytes
from neuroxr.formats._write import OutputKind, Progress, is_hdf5_file, output_name, visible_entries, write_atomically
from neuroxr.formats.nwb.mapping import NWB_SUFFIX, json_attrs
from neuroxr.formats.nwb.read import open_nwb_file
from neuroxr.formats.nwb.metadata import load_metadata
from neuroxr.formats.nwb.write import (
    DEFAULT_COMPRESSION,
    ExportOptions,
    scratch_bytes,
    write_nwb_file,
)


def to_nwb(
    data: xr.Dataset | xr.DataTree,
    path: str | os.PathLike[str],
    *,
    metadata: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    subject: Mapping[str, Any] | Any = None,
    session: Mapping[str, Any] | None = None,
    imaging: Mapping[str, Any] | None = None,
    stimulus_duration: float = 0.5,
    trial_period: float = 1.0,
    trial_gap: float = 1.0,
    compression: str | None = DEFAULT_COMPRESSION,
    compression_level: int | None = 1,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write a scan to one NWB file, or a DataTree of scans to a folder of ``<scan>.nwb`` files.

    ``metadata`` is a metadata file (YAML or JSON, or its content as a mapping) in neuroconv's shape:
    ``NWBFile`` fields, ``Subject`` fields, ``Ophys`` (``Device``, ``ImagingPlane`` with its
    ``optical_channel``); ``subject``, ``session`` and ``imaging`` (flat microscope fields:
    ``indicator``, ``excitation_lambda``, ``emission_lambda`` in nm, ``location``, ``imaging_rate``,
    ``device_description``, ...) win over it, and both over the defaults, which say what the release
    knows and label the rest unknown or guessed. Static scans: trial times come from
    ``frame_trial_ts`` (without it trial k starts at ``k * trial_period`` s); trials last
    ``stimulus_duration`` s. Video scans: every frame at the frame rate, ``trial_gap`` s between
    trials. ``compression`` is ``"gzip"`` (level ``compression_level``, the default), ``"lzf"`` or
    None. The file is written under a temporary name and renamed at the end; an existing target
    needs ``overwrite=True``.

    >>> ds = neuroxr.make_scan(n_trials=60, n_neurons=20)
    >>> path = neuroxr.to_nwb(ds, tmp / "30001-2-3.nwb", subject={"age": "P12W/P16W"})
    >>> neuroxr.open_nwb(path).responses.shape
    (60, 20)
    """
    options = ExportOptions(
        subject=subject,
        session=session,
        imaging=imaging,
        metadata=None if metadata is None else load_metadata(metadata),
        stimulus_duration=stimulus_duration,
        trial_period=trial_period,
        trial_gap=trial_gap,
        compression=compression,
        compression_level=compression_level,
        progress=progress,
    )
    description = f"writing {Path(path).name}"
    if isinstance(data, xr.DataTree):
        scans = _tree_scans(data)
        if Path(path).suffix == NWB_SUFFIX:
            raise DatasetError(
                f"to_nwb: a DataTree of {len(scans)} scans is written as a folder of <scan>.nwb files; expected a "
                f"folder name without the {NWB_SUFFIX} suffix, found {Path(path).name} (write one scan, "
                f"e.g. tree[{next(iter(scans))!r}].to_dataset(), to get one file)"
            )
        tree_attrs = json_attrs(data.attrs)
        kind = NWB_FOLDER

        def write(temporary: Path) -> None:
            temporary.mkdir()
            with Progress(progress, description) as display:
                for name, ds in scans.items():
                    node_options = replace(options, tree={"name": name, "root_attrs": tree_attrs}, display=display)
                    write_nwb_file(ds, temporary / f"{name}{NWB_SUFFIX}", node_options)

    elif isinstance(data, xr.Dataset):
        kind = NWB_FILE

        def write(temporary: Path) -> None:
            with Progress(progress, description) as display:
                write_nwb_file(data, temporary, replace(options, display=display))

    else:
        raise TypeError(f"to_nwb: expected an xarray.Dataset or xarray.DataTree, found {type(data).__name__}")
    needed = _needed_bytes(data)
    return write_atomically(path, write, kind=kind, sources=data_sources(data), overwrite=overwrite, needed_bytes=needed)


#: An NWB file's bytes beyond its data, as a bound: the cached namespaces (about 0.3 MB), the HDF5
#: structure, and gzip's few bytes more on chunks that do not compress (measured up to 1.36x the data
#: on a tiny random scan, 0.3 MB over it).
FILE_OVERHEAD_BYTES, FILE_OVERHEAD_FRACTION = 1 << 20, 0.02


def _needed_bytes(data: xr.Dataset | xr.DataTree) -> int:
    """The free space an export needs, as a bound: every variable's bytes uncompressed (whatever the
    compression: HDF5 does not survive a full disk in the middle of a write, so the bound must hold),
    the files' own overhead, and the scratch files written beside them at the same time."""
    scans = list(_tree_scans(data).values()) if isinstance(data, xr.DataTree) else [data]
    data_bytes = uncompressed_bytes(node_datasets(data))
    overhead = len(scans) * FILE_OVERHEAD_BYTES + int(FILE_OVERHEAD_FRACTION * data_bytes)
    return data_bytes + overhead + sum(scratch_bytes(ds) for ds in scans)


def is_nwb_folder(path: Path) -> bool:
    """A folder holding only NWB (HDF5) files (and hidden ones), or nothing: what a DataTree export writes."""
    return all(entry.suffix == NWB_SUFFIX and is_hdf5_file(entry) for entry in visible_entries(path))


#: What ``overwrite=True`` may replace: an NWB file; for a DataTree, a folder of NWB files only.
NWB_FILE = OutputKind("an NWB file", folder=False, recognise=is_hdf5_file)
NWB_FOLDER = OutputKind("a folder of NWB files", folder=True, recognise=is_nwb_folder)


def _tree_scans(tree: xr.DataTree) -> dict[str, xr.Dataset]:
    """The scans of a tree: its children, each a Dataset; the root may hold attributes only."""
    if tree.to_dataset(inherit=False).variables:
        raise ValueError("to_nwb: expected a DataTree whose root holds attributes only (one NWB file per scan)")
    scans: dict[str, xr.Dataset] = {}
    for node in tree.subtree:
        if node is tree:
            continue
        if node.parent is not tree:
            if node.to_dataset(inherit=False).variables:
                raise ValueError(f"to_nwb: expected scans as children of the root, found data at {node.path}")
            continue
        scans[output_name(node.name, "to_nwb: scan (DataTree node)")] = node.to_dataset(inherit=False)
    if not scans:
        raise ValueError("to_nwb: the DataTree holds no scan")
    return scans


def open_nwb(
    path: str | os.PathLike[str], *, chunks: int | Mapping[str, int] | None = None
) -> xr.Dataset | xr.DataTree:
    """Open an NWB file written by :func:`to_nwb` as the lazy Dataset it was written from.

    A folder of such files opens as a DataTree, one child per scan. Data variables are dask arrays
    whose tasks open the file by path (the graph pickles, so it runs on ``dask.distributed``);
    ``chunks`` is the number of trials per chunk (default: about 64 MB of the largest variable).

    >>> path = neuroxr.to_nwb(neuroxr.make_scan(n_trials=60, n_neurons=20), tmp / "scan.nwb")
    >>> ds = neuroxr.open_nwb(path)
    >>> ds.responses.chunks is not None
    True
    """
    target = Path(path)
    if target.is_dir():
        files = sorted(
            child for child in target.iterdir() if child.suffix == NWB_SUFFIX and not child.name.startswith(".")
        )
        if not files:
            raise FileNotFoundError(f"{target}: expected a folder of .nwb files written by neuroxr.to_nwb, found none")
        nodes: dict[str, xr.Dataset] = {}
        root_attrs: dict[str, Any] = {}
        for file in files:
            ds, document = open_nwb_file(file, chunks=chunks)
            tree_info = document.get("tree") or {}
            name = str(tree_info.get("name") or file.stem)
            if name in nodes:
                raise ValueError(f"{file}: scan {name!r} appears twice in {target}")
            nodes[name] = ds
            root_attrs = root_attrs or dict(tree_info.get("root_attrs") or {})
        children = {f"/{name}": ds for name, ds in nodes.items()}
        return xr.DataTree.from_dict({"/": xr.Dataset(attrs=root_attrs), **children})
    ds, _ = open_nwb_file(target, chunks=chunks)
    return ds
