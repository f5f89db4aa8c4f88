"""Remote sources: files behind any fsspec URL (``https://``, ``s3://``, ``gs://``, ``file://``), read in place.

A remote .zip is never downloaded whole: its central directory is read with a few range requests,
and a batch of members (a block of trials, or the meta/ arrays) is fetched as one batch of
concurrent range requests, one per member, then decompressed like a local member
(:mod:`neuroxr.sources.zipmember`). A remote folder (object stores, or anything fsspec can list)
works the same way with whole-file reads. NumberedFiles hold the URL, the storage options and offsets:
they pickle and run on any worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from neuroxr.errors import ScanError, require
from neuroxr.sources.base import Buffers, copy_into, group_by_folder, is_ignored
from neuroxr.sources.zipmember import (
    LOCAL_HEADER,
    MemberTable,
    data_offset,
    decompress,
    member_template,
    read_directory,
)

#: Bytes fetched beyond a member's name in the hope of covering its local extra field in one request.
EXTRA_SLACK = 256


def filesystem(url: str, storage_options: dict[str, Any] | None) -> Any:
    """The fsspec file system of ``url``."""
    fsspec = require("fsspec", "remote", "reading remote scans")
    fs, _ = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return fs


def fetch_members(fs: Any, url: str, table: MemberTable, rows: Sequence[int], labels: Sequence[str]) -> list[bytes]:
    """The decompressed bytes of members ``rows`` of ``table``, fetched in one batch of concurrent requests."""
    rows = np.asarray(rows, dtype=np.int64)
    starts = table.offsets[rows]
    ends = starts + LOCAL_HEADER.size + table.name_lengths[rows] + EXTRA_SLACK + table.compressed[rows]
    chunks = fs.cat_ranges([url] * len(rows), starts.tolist(), ends.tolist(), on_error="return")
    found = []
    for row, chunk, label in zip(rows.tolist(), chunks, labels):
        if isinstance(chunk, Exception):
            raise ScanError(label, f"cannot be fetched ({chunk})")
        start = data_offset(chunk, label)
        length = int(table.compressed[row])
        raw = chunk[start : start + length]
        if len(raw) < length:  # a long local extra field: fetch the rest
            begin = int(table.offsets[row]) + start
            raw = fs.cat_file(url, start=begin, end=begin + length)
        found.append(decompress(raw, int(table.methods[row]), int(table.sizes[row]), int(table.crcs[row]), label))
    return found


def fetch_files(fs: Any, paths: Sequence[str]) -> list[bytes]:
    """Whole files, fetched in one batch of concurrent requests, in the order asked."""
    found = fs.cat_ranges(list(paths), None, None, on_error="return")
    for path, value in zip(paths, found):
        if isinstance(value, Exception):
            raise ScanError(path, f"cannot be fetched ({value})")
    return found


class RemoteZipMembers:
    """Numbered members of a remote zip, fetched a batch at a time with concurrent range requests."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None, template: str, table: MemberTable) -> None:
        self.url = url
        self.storage_options = storage_options or {}
        self.template = template
        self.table = table

    def label(self, number: int) -> str:
        return f"{self.url}::{self.template.format(number)}"

    def size(self, number: int) -> int:
        return int(self.table.sizes[number])

    def read(self, number: int) -> bytes:
        return self.fetch([number])[0]

    def fetch(self, numbers: Sequence[int]) -> list[bytes]:
        """The decompressed bytes of each member in ``numbers``, fetched concurrently."""
        fs = filesystem(self.url, self.storage_options)
        return fetch_members(fs, self.url, self.table, numbers, [self.label(int(number)) for number in numbers])

    def read_into(self, numbers: Sequence[int], buffers: Sequence[Buffers]) -> list[int]:
        return [copy_into(data, targets) for data, targets in zip(self.fetch(numbers), buffers)]


class RemoteZipSource:
    """The members under one folder of a remote .zip archive (the whole archive when ``prefix`` is "")."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None, prefix: str = "",
                 infos: dict[str, Any] | None = None) -> None:  # fmt: skip
        self.url = url
        self.storage_options = storage_options or {}
        self.prefix = prefix
        if infos is None:
            fs = filesystem(url, storage_options)
            try:
                with fs.open(url, "rb", block_size=2**16, cache_type="readahead") as file:
                    infos = {info.filename: info for info in read_directory(file, url) if not info.is_dir()}
            except (OSError, ValueError) as error:
                raise ScanError(url, f"cannot be opened ({error})") from error
        self._infos = {name: info for name, info in infos.items() if not is_ignored(name)}
        stem = url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".zip")
        self.name = prefix.rstrip("/").rsplit("/", 1)[-1] if prefix else stem

    def __repr__(self) -> str:
        return f"RemoteZipSource({self.url!r}, prefix={self.prefix!r})"

    def listing(self) -> dict[str, list[str]]:
        return group_by_folder(self._infos)

    def label(self, relative: str) -> str:
        return f"{self.url}::{self.prefix}{relative}"

    def read(self, relative: str) -> bytes:
        return self.read_many([relative])[0]

    def read_many(self, relatives: Sequence[str]) -> list[bytes]:
        """Several members in one batch of concurrent requests (the meta/ arrays)."""
        fs = filesystem(self.url, self.storage_options)
        table = MemberTable.of([self._infos[relative] for relative in relatives], self.url)
        return fetch_members(fs, self.url, table, range(len(relatives)), [self.label(relative) for relative in relatives])

    def within(self, folder: str) -> RemoteZipSource:
        if not folder:
            return self
        prefix = folder.rstrip("/") + "/"
        members = {name[len(prefix) :]: info for name, info in self._infos.items() if name.startswith(prefix)}
        return RemoteZipSource(self.url, self.storage_options, self.prefix + prefix, members)

    def numbered(self, directory: str, count: int, suffix: str) -> RemoteZipMembers:
        infos = [self._infos[f"{directory}/{number}{suffix}"] for number in range(count)]
        template = member_template(self.prefix, directory, suffix)
        return RemoteZipMembers(self.url, self.storage_options, template, MemberTable.of(infos, self.url))


class RemoteFolderFiles:
    """Numbered files in a remote folder, fetched a batch at a time."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None, suffix: str, sizes: np.ndarray) -> None:
        self.url = url.rstrip("/")
        self.storage_options = storage_options or {}
        self.suffix = suffix
        self.sizes = sizes

    def label(self, number: int) -> str:
        return f"{self.url}/{number}{self.suffix}"

    def size(self, number: int) -> int:
        return int(self.sizes[number])

    def read(self, number: int) -> bytes:
        return self.fetch([number])[0]

    def fetch(self, numbers: Sequence[int]) -> list[bytes]:
        fs = filesystem(self.url, self.storage_options)
        return fetch_files(fs, [self.label(int(number)) for number in numbers])

    def read_into(self, numbers: Sequence[int], buffers: Sequence[Buffers]) -> list[int]:
        return [copy_into(data, targets) for data, targets in zip(self.fetch(numbers), buffers)]


class RemoteFolderSource:
    """The files under a URL that fsspec can list (object stores, ``file://``, ...)."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None, files: dict[str, int] | None = None) -> None:
        self.url = url.rstrip("/")
        self.storage_options = storage_options or {}
        if files is None:
            files = self._list()
        self._files = files  # relative path -> size in bytes
        self.name = self.url.rsplit("/", 1)[-1]

    def _list(self) -> dict[str, int]:
        fs = filesystem(self.url, self.storage_options)
        root = fs._strip_protocol(self.url)
        try:
            listed = fs.find(root, detail=True)
        except (OSError, ValueError) as error:
            raise ScanError(self.url, f"cannot be listed ({error})") from error
        files = {}
        for path, info in listed.items():
            relative = path[len(root) :].lstrip("/")
            if relative and not is_ignored(relative) and info.get("type", "file") == "file":
                files[relative] = int(info.get("size") or 0)
        if not files:
            raise ScanError(self.url, "nothing found there (a web server's folder cannot be listed; use the .zip)")
        return files

    def __repr__(self) -> str:
        return f"RemoteFolderSource({self.url!r})"

    def listing(self) -> dict[str, list[str]]:
        return group_by_folder(self._files)

    def label(self, relative: str) -> str:
        return f"{self.url}/{relative}"

    def read(self, relative: str) -> bytes:
        return self.read_many([relative])[0]

    def read_many(self, relatives: Sequence[str]) -> list[bytes]:
        """Several small files in one batch of concurrent requests."""
        fs = filesystem(self.url, self.storage_options)
        return fetch_files(fs, [self.label(relative) for relative in relatives])

    def within(self, folder: str) -> RemoteFolderSource:
        if not folder:
            return self
        prefix = folder.rstrip("/") + "/"
        files = {name[len(prefix) :]: size for name, size in self._files.items() if name.startswith(prefix)}
        return RemoteFolderSource(f"{self.url}/{folder.rstrip('/')}", self.storage_options, files)

    def numbered(self, directory: str, count: int, suffix: str) -> RemoteFolderFiles:
        sizes = np.array([self._files.get(f"{directory}/{number}{suffix}", -1) for number in range(count)], dtype=np.int64)
        return RemoteFolderFiles(f"{self.url}/{directory}", self.storage_options, suffix, sizes)


def open_url(url: str, storage_options: dict[str, Any] | None = None) -> RemoteZipSource | RemoteFolderSource:
    """The source at an fsspec URL: a .zip read with range requests, or a listable folder."""
    if url.rstrip("/").lower().endswith(".zip"):
        return RemoteZipSource(url, storage_options)
    return RemoteFolderSource(url, storage_options)
