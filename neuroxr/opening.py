"""Opening anything: several scans as one DataTree, and ``neuroxr.open`` for every format neuroxr writes.

Analysis code calls ``neuroxr.open(path)`` and gets the data model back, whether ``path`` is a scan
folder, a release .zip, a folder of scans, a NetCDF file, a Zarr store or NWB files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import xarray as xr

from neuroxr import model
from neuroxr.errors import ScanError
from neuroxr.source import is_ignored, is_scan_folder, scan_folders_in

NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".h5", ".hdf5")


def scan_paths(folder: str | os.PathLike[str]) -> list[Path]:
    """The scans in a folder: scan folders and .zip archives, one per scan, sorted by name.

    A scan present both unpacked and as its .zip (the usual state after unzipping the release) is
    taken from the folder, which reads faster.
    """
    folder = Path(folder)
    if is_scan_folder(folder):
        return [folder]
    if not folder.is_dir():
        raise ScanError(folder, "not a folder of scans")
    entries = sorted(child for child in folder.iterdir() if not is_ignored(child.name))
    folders = scan_folders_in(folder)
    names = {child.name for child in folders}
    archives = [child for child in entries if child.suffix.lower() == ".zip" and child.is_file() and child.stem not in names]
    found = sorted(folders + archives, key=lambda path: path.name)
    if not found:
        raise ScanError(folder, "holds no scan: expected scan folders (with data/ and meta/) or .zip archives")
    return found


def open_datatree(
    paths_or_folder: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    chunks: int | str | Mapping[str, int] | None = None,
    mask_withheld: bool = True,
) -> xr.DataTree:
    """Several scans side by side: one child node per scan, named by its scan key.

    Scans differ in trials and neurons, so they are siblings under an attribute-only root.

    >>> tree = neuroxr.open_datatree("sensorium2022/")  # doctest: +SKIP
    >>> tree["21067-10-18"].dataset.responses  # doctest: +SKIP
    """
    from neuroxr.dataset import open_scan

    if isinstance(paths_or_folder, (str, os.PathLike)):
        paths = scan_paths(paths_or_folder)
    else:
        paths = [Path(path) for path in paths_or_folder]
    scans: dict[str, xr.Dataset] = {}
    for path in paths:
        ds = open_scan(path, chunks=chunks, mask_withheld=mask_withheld)
        key = ds.attrs["scan"]
        if key in scans:
            raise ScanError(path, f"scan {key} is given twice (also {scans[key].encoding.get('source')})")
        ds.encoding["source"] = str(path)
        scans[key] = ds
    return tree_of(scans)


def tree_of(scans: Mapping[str, xr.Dataset]) -> xr.DataTree:
    """A DataTree with one child per scan under a root that holds only attributes."""
    root = xr.Dataset(attrs={"format": model.FORMAT, "scans": ",".join(scans)})
    return xr.DataTree.from_dict({"/": root, **{f"/{key}": ds for key, ds in scans.items()}})


def open(path: str | os.PathLike[str], **kwargs: object) -> xr.Dataset | xr.DataTree:  # noqa: A001
    """Open whatever neuroxr reads or writes as the data model: a Dataset for one scan, a DataTree for several.

    Recognised: a scan folder or .zip, a folder of scans, a NetCDF file (``.nc``), a Zarr store
    (``.zarr``), an NWB file (``.nwb``) or a folder of NWB files. ``kwargs`` go to the reader.

    >>> ds = neuroxr.open("21067-10-18.nc")  # doctest: +SKIP
    """
    text = os.fspath(path)
    if "://" in text:
        from neuroxr.dataset import open_scan

        return open_scan(text, **kwargs)  # type: ignore[arg-type]
    path = Path(text)
    suffix = path.suffix.lower()
    if suffix in NETCDF_SUFFIXES:
        from neuroxr.formats.netcdf import open_netcdf

        return open_netcdf(path, **kwargs)
    if suffix == ".zarr":
        from neuroxr.formats.zarr import open_zarr

        return open_zarr(path, **kwargs)
    if suffix == ".nwb" or (path.is_dir() and any(path.glob("*.nwb")) and not is_scan_folder(path)):
        from neuroxr.formats.nwb import open_nwb

        return open_nwb(path, **kwargs)
    if not path.exists():
        raise ScanError(path, "no such file or folder")
    if path.is_dir() and not is_scan_folder(path):
        found = scan_paths(path)
        if len(found) > 1:
            return open_datatree(found, **kwargs)  # type: ignore[arg-type]
        path = found[0]
    from neuroxr.dataset import open_scan

    return open_scan(path, **kwargs)  # type: ignore[arg-type]
