"""Where the scans are: scan folders, the folder of an archive that holds a scan, the scans in a folder.

A scan is a folder holding ``data/`` and ``meta/`` side by side. This is the one place that knows it:
opening, the xarray backend's ``guess_can_open`` and ``open_datatree`` all ask here.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from neuroxr import datamodel
from neuroxr.errors import ScanError
from neuroxr.sources import FolderSource, Source, ZipSource, is_ignored, is_url, not_openable, open_url

#: The two folders that make a folder a scan.
MARKERS = (datamodel.DATA_DIR, "meta")


def is_scan_folder(path: Path) -> bool:
    """A local folder holding a scan: ``data/`` and ``meta/`` side by side."""
    return all((path / marker).is_dir() for marker in MARKERS)


def scan_folders_in(path: Path) -> list[Path]:
    """The scan folders directly inside ``path``, sorted by name."""
    return sorted(child for child in path.iterdir() if not is_ignored(child.name) and child.is_dir() and is_scan_folder(child))


def scan_roots(folders: Iterable[str]) -> set[str]:
    """The folders (as prefixes: ``""`` or ``"name/"``) that hold both ``data/`` and ``meta/``, from a listing.

    >>> sorted(scan_roots(["a/data/images", "a/meta/trials", "b/data/x"]))
    ['a/']
    """
    parents: dict[str, set[str]] = {marker: set() for marker in MARKERS}
    for folder in folders:
        if is_ignored(folder):
            continue
        path = f"{folder}/" if folder else ""
        for marker in MARKERS:
            index = path.find(f"{marker}/")
            while index != -1:
                if index == 0 or path[index - 1] == "/":
                    parents[marker].add(path[:index])
                index = path.find(f"{marker}/", index + 1)
    found = parents[MARKERS[0]]
    for marker in MARKERS[1:]:
        found = found & parents[marker]
    return found


def scan_root(source: Source) -> str:
    """The one folder of an archive (or remote folder) that holds a scan, as a prefix ("" at the top)."""
    roots = scan_roots(source.listing())
    where = source.label("").removesuffix("::").rstrip("/")
    if not roots:
        raise ScanError(where, "not a Sensorium scan: it holds no folder with both data/ and meta/")
    if len(roots) > 1:
        listed = ", ".join(sorted(root.rstrip("/") or "(top level)" for root in roots))
        raise ScanError(where, f"holds {len(roots)} scans ({listed}); open them with neuroxr.open_datatree")
    return next(iter(roots))


def find_scan_folder(path: Path) -> Path:
    """The scan folder at ``path``: itself, or the single scan folder inside it."""
    if is_scan_folder(path):
        return path
    candidates = scan_folders_in(path)
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        names = ", ".join(candidate.name for candidate in candidates)
        raise ScanError(path, f"holds {len(candidates)} scans ({names}); open one of them, or all with neuroxr.open_datatree")
    missing = [f"{marker}/" for marker in MARKERS if not (path / marker).is_dir()]
    raise ScanError(path, f"not a Sensorium scan: no {' or '.join(missing)} folder here or one level down")


def open_scan_source(path: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> Source:
    """The source of the scan at ``path``: a scan folder, a folder holding one, a .zip, or an fsspec URL."""
    if is_url(path):
        source: Source = open_url(os.fspath(path), storage_options)
        return source.within(scan_root(source))
    path = Path(path)
    if path.is_dir():
        return FolderSource(find_scan_folder(path))
    if path.is_file():
        archive = ZipSource(path)
        return archive.within(scan_root(archive))
    raise not_openable(path)


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


def scan_urls(url: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """The scans behind a URL, as :func:`scan_paths` finds them in a local folder.

    The URL itself when it is a .zip or a scan folder; else the .zip archives and scan folders in
    the folder it names (which must be one fsspec can list), sorted by name.
    """
    if url.rstrip("/").lower().endswith(".zip"):
        return [url]
    source = open_url(url, storage_options)
    listing = source.listing()
    roots = scan_roots(listing)
    if "" in roots:
        return [url]
    base = source.label("").rstrip("/")
    folders = {root.rstrip("/") for root in roots if root.count("/") == 1}
    found = [f"{base}/{folder}" for folder in folders]
    found += [  # a scan both unpacked and as its .zip is taken from the folder, as scan_paths does
        f"{base}/{name}" for name in listing.get("", []) if name.lower().endswith(".zip") and name[:-4] not in folders
    ]
    if not found:
        raise ScanError(url, "holds no scan: expected scan folders (with data/ and meta/) or .zip archives")
    return sorted(found)


def looks_like_scan(path: str | os.PathLike[str]) -> bool:
    """Cheap test: a scan folder, a folder holding exactly one, a .zip archive, a .zip URL."""
    if is_url(path):
        return os.fspath(path).lower().endswith(".zip")
    path = Path(path)
    if path.is_dir():
        return is_scan_folder(path) or len(scan_folders_in(path)) == 1
    return path.suffix.lower() == ".zip" and path.is_file() and zipfile.is_zipfile(path)
