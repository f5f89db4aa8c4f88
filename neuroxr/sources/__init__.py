"""Step 1 of the read path: where the bytes are. Folders, .zip archives read in place, fsspec URLs.

``open_source`` opens any of them at its top; ``Source.within`` moves down to a folder inside it.
Sources know bytes only: which folder holds a scan is the layout's business
(:mod:`neuroxr.layout.discover`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from neuroxr.sources.base import NumberedFiles, PerProcess, Source, copy_into, group_by_folder, is_ignored
from neuroxr.sources.folder import FolderFiles, FolderSource, not_openable
from neuroxr.sources.remote import RemoteFolderSource, RemoteZipSource, open_url
from neuroxr.sources.zip import ZipMembers, ZipSource

__all__ = [
    "FolderFiles",
    "FolderSource",
    "RemoteFolderSource",
    "RemoteZipSource",
    "NumberedFiles",
    "PerProcess",
    "Source",
    "ZipMembers",
    "ZipSource",
    "copy_into",
    "group_by_folder",
    "is_ignored",
    "is_url",
    "not_openable",
    "open_source",
]


def is_url(path: str | os.PathLike[str]) -> bool:
    """True for an fsspec URL (``scheme://...``) rather than a local path."""
    return "://" in os.fspath(path)


def open_source(path: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> Source:
    """The source at ``path``: a local folder, a local .zip archive, or an fsspec URL of either.

    >>> open_source(".")
    FolderSource('...')
    """
    if is_url(path):
        return open_url(os.fspath(path), storage_options)
    path = Path(path)
    if path.is_dir():
        return FolderSource(path)
    if path.is_file():
        return ZipSource(path)
    raise not_openable(path)
