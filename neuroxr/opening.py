"""The top of the read side: ``open_scan``, ``open_datatree``, and ``neuroxr.open`` for every format neuroxr writes.

Analysis code calls ``neuroxr.open(path)`` and gets the data model back, whether ``path`` is a scan
folder, a release .zip, a folder of scans, a NetCDF file, a Zarr store or NWB files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import xarray as xr
from xarray.core import indexing
from xarray.namedarray.daskmanager import DaskManager

from neuroxr import chunking, datamodel
from neuroxr.backend import SensoriumBackendEntrypoint
from neuroxr.dataset import load_labels, tree_of
from neuroxr.errors import ScanError
from neuroxr.formats.netcdf import open_netcdf
from neuroxr.formats.nwb import open_nwb
from neuroxr.formats.zarr import open_zarr
from neuroxr.layout.discover import is_scan_folder, scan_paths, scan_urls
from neuroxr.lazy import WholeReadArray, in_memory, on_file_grid, whole_reader
from neuroxr.sources import is_ignored, is_url

NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".h5", ".hdf5")


class WholeReadDaskManager(DaskManager):
    """xarray's dask chunk manager, except that a variable of trial files becomes a :class:`~neuroxr.lazy.WholeReadArray`
    and labels already in memory stay numpy arrays.

    Given to ``xr.open_dataset`` by :func:`open_scan`, so that ``ds.responses.values`` reads every
    trial straight into one array instead of concatenating dask's blocks, and selecting trials
    reads only them; labels (tiers, image ids) are in memory as the data model says, and statistics are
    read from their files on first access (only the cells selected), then kept in memory.
    """

    def from_array(self, data, chunks, **kwargs):  # type: ignore[no-untyped-def, override]
        if in_memory(data):
            return np.asarray(data)
        if on_file_grid(data):  # statistics: read on first access, once (dask arrays of another type cannot mix with these)
            return indexing.MemoryCachedArray(data.array if isinstance(data, indexing.ImplicitToExplicitIndexingAdapter) else data)
        array = super().from_array(data, chunks, **kwargs)
        reader = whole_reader(data)
        return array if reader is None else WholeReadArray.of(array, reader)


def open_scan(
    path: str | os.PathLike[str],
    *,
    chunks: int | str | Mapping[str, int] | None = None,
    mask_withheld: bool = True,
    drop_variables: Iterable[str] | None = None,
    storage_options: dict | None = None,
    n_frames_from: str | None = None,
) -> xr.Dataset:
    """Open a Sensorium scan (folder, .zip, a folder holding one scan, or an fsspec URL) as one lazy, labelled Dataset.

    2022 image scans and 2023 video scans alike: the kind is recognised from what the scan holds
    (``data/images`` or ``data/videos``). Only the listing, ``meta/trials``, ``meta/neurons``, one header
    per variable and the header of each statistics file are read (the statistics, time-resolved in a
    video scan, are read from their files when first accessed), and, for a video scan, row 0 of each
    trial's behaviour: the trial lengths ``n_frames``, checked against each video as it is read
    (``n_frames_from="videos"`` reads them from the videos instead, ``"pupil_center"`` from the pupil). Data variables are dask arrays
    with one task per block of trials (about 64 MB per chunk; ``chunks=500`` asks for 500 trials per
    chunk, any xarray ``chunks=`` also works); label coordinates are in memory. A URL
    (``https://.../scan.zip``, ``s3://bucket/scan/``) is read in place with range requests;
    ``storage_options`` go to fsspec. ``mask_withheld=False`` gives the stored zeros where the release
    withholds data (NaN by default).

    >>> ds = neuroxr.open_scan(neuroxr.write_scan(tmp / "scan.zip", zip=True, n_trials=60, n_neurons=20))
    >>> ds.responses.sizes
    Frozen({'trial': 60, 'neuron': 20})
    >>> per_image = ds.responses.sel(trial=ds.tier == "test").groupby("image_id").mean()
    >>> videos = neuroxr.open_scan(neuroxr.write_scan(tmp / "video", kind="dynamic", n_trials=40, n_neurons=10))
    >>> videos.videos.dims, videos.attrs["frame_rate"]
    (('trial', 'y', 'x', 'frame'), 30.0)
    """
    xarray_chunks, block = chunking.trial_chunk_request(chunks)
    ds = xr.open_dataset(
        path,
        engine=SensoriumBackendEntrypoint,
        chunks=xarray_chunks,
        chunked_array_type=WholeReadDaskManager(),
        mask_withheld=mask_withheld,
        drop_variables=drop_variables,
        trials_per_chunk=block,
        storage_options=storage_options,
        n_frames_from=n_frames_from,
    )
    return load_labels(ds, lazy=[datamodel.statistics_name(str(name)) for name in ds.data_vars])  # read when computed


def open_datatree(
    paths_or_folder: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    chunks: int | str | Mapping[str, int] | None = None,
    mask_withheld: bool = True,
    storage_options: dict | None = None,
) -> xr.DataTree:
    """Several scans side by side: one child node per scan, named by its scan key.

    ``paths_or_folder`` is a folder of scans (scan folders and .zip archives; a local path or a URL
    fsspec can list) or a list of scans (paths or URLs). Scans differ in trials and neurons, so
    they are siblings under an attribute-only root. ``storage_options`` go to fsspec for URLs.

    >>> folder = tmp / "release"
    >>> folder.mkdir()
    >>> for seed, scan in enumerate(["30001-2-3", "30002-4-5"]):
    ...     _ = neuroxr.write_scan(folder / f"{scan}.zip", zip=True, scan=scan, seed=seed, n_trials=40, n_neurons=10)
    >>> tree = neuroxr.open_datatree(folder)
    >>> sorted(tree.children)
    ['30001-2-3', '30002-4-5']
    """
    if isinstance(paths_or_folder, (str, os.PathLike)) and is_url(paths_or_folder):
        paths: list[str | Path] = list(scan_urls(os.fspath(paths_or_folder), storage_options))
    elif isinstance(paths_or_folder, (str, os.PathLike)):
        paths = list(scan_paths(paths_or_folder))
    else:
        paths = [path if is_url(path) else Path(path) for path in paths_or_folder]  # type: ignore[misc]
    scans: dict[str, xr.Dataset] = {}
    for path in paths:
        ds = open_scan(path, chunks=chunks, mask_withheld=mask_withheld, storage_options=storage_options)
        key = ds.attrs["scan"]
        if key in scans:
            raise ScanError(path, f"scan {key} is given twice (also {scans[key].encoding.get('source')})")
        ds.encoding["source"] = str(path)
        scans[key] = ds
    return tree_of(scans)


def open_any(path: str | os.PathLike[str], **kwargs: object) -> xr.Dataset | xr.DataTree:
    """Open whatever neuroxr reads or writes as the data model: a Dataset for one scan, a DataTree for several.

    Public as ``neuroxr.open``. Recognised: a scan folder or .zip, a folder of scans, a NetCDF file
    (``.nc``), a Zarr store (``.zarr``), an NWB file (``.nwb``) or a folder of NWB files, and URLs
    of scans. ``kwargs`` go to the reader.

    >>> path = neuroxr.to_netcdf(neuroxr.make_scan(n_trials=40, n_neurons=10), tmp / "scan.nc")
    >>> neuroxr.open(path).attrs["scan"]
    '30001-2-3'
    """
    text = os.fspath(path)
    if is_url(text):
        found = scan_urls(text, kwargs.get("storage_options"))  # type: ignore[arg-type]
        if len(found) > 1:
            return open_datatree(found, **kwargs)  # type: ignore[arg-type]
        return open_scan(found[0], **kwargs)  # type: ignore[arg-type]
    path = Path(text)
    suffix = path.suffix.lower()
    if suffix in NETCDF_SUFFIXES:
        return open_netcdf(path, **kwargs)  # type: ignore[arg-type]
    if suffix == ".zarr":
        return open_zarr(path, **kwargs)  # type: ignore[arg-type]
    if suffix == ".nwb" or (path.is_dir() and any(not is_ignored(p.name) for p in path.glob("*.nwb")) and not is_scan_folder(path)):
        return open_nwb(path, **kwargs)  # type: ignore[arg-type]
    if not path.exists():
        raise ScanError(path, "no such file or folder")
    if path.is_dir() and not is_scan_folder(path):
        found = scan_paths(path)
        if len(found) > 1:
            return open_datatree(found, **kwargs)  # type: ignore[arg-type]
        path = found[0]
    return open_scan(path, **kwargs)  # type: ignore[arg-type]
