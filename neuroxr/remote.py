"""Remote sources: a scan behind any fsspec URL (``https://``, ``s3://``, ``gs://``, ...), read in place.

A remote .zip is never downloaded whole: its central directory is read with a few range requests,
and each block of trials is fetched as one batch of concurrent range requests, one per member.
A remote folder (object stores, or anything fsspec can list) works the same way with whole-file
reads. Series hold the URL, the storage options and offsets: they pickle and run on any worker.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from neuroxr.errors import ScanError
from neuroxr.source import _zip_roots, group_by_folder, is_ignored, scatter

#: Bytes fetched beyond a member's name in the hope of covering its local extra field in one request.
EXTRA_SLACK = 256
_LOCAL_HEADER = struct.Struct("<4s22xHH")


def _filesystem(url: str, storage_options: dict[str, Any] | None) -> Any:
    try:
        import fsspec
    except ModuleNotFoundError as error:  # pragma: no cover - depends on the environment
        raise ModuleNotFoundError(
            "reading remote scans needs fsspec: pip install 'neuroxr[remote]'", name="fsspec"
        ) from error
    fs, _ = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return fs


def fetch_members(fs: Any, url: str, rows: np.ndarray, labels: Sequence[str]) -> list[bytes]:
    """Fetch zip members (rows of header offset, compressed size, size, method, name length) in one batch."""
    starts = rows[:, 0]
    ends = starts + 30 + rows[:, 4] + EXTRA_SLACK + rows[:, 1]
    chunks = fs.cat_ranges([url] * len(rows), starts.tolist(), ends.tolist(), on_error="return")
    return [_member(fs, url, row, chunk, label) for row, chunk, label in zip(rows, chunks, labels)]


def _member(fs: Any, url: str, row: np.ndarray, chunk: bytes | Exception, label: str) -> bytes:
    if isinstance(chunk, Exception):
        raise ScanError(label, f"cannot be fetched ({chunk})")
    signature, name_length, extra_length = _LOCAL_HEADER.unpack(chunk[:30])
    if signature != b"PK\x03\x04":
        raise ScanError(label, "corrupt zip: no local header where the directory points")
    start = 30 + name_length + extra_length
    raw = chunk[start : start + int(row[1])]
    if len(raw) < row[1]:  # a long local extra field: fetch the rest
        offset = int(row[0]) + start
        raw = fs.cat_file(url, start=offset, end=offset + int(row[1]))
    if row[3] == zipfile.ZIP_STORED:
        return raw
    if row[3] == zipfile.ZIP_DEFLATED:
        try:
            return zlib.decompress(raw, -15, int(row[2]) or zlib.DEF_BUF_SIZE)
        except zlib.error as error:
            raise ScanError(label, f"corrupt zip member ({error})") from error
    raise ScanError(label, f"zip compression method {int(row[3])} is not supported remotely")


class _FetchedSeries:
    """Single reads of a series that fetches in batches (``fetch(numbers) -> list[bytes]``)."""

    def fetch(self, numbers: Sequence[int]) -> list[bytes]:
        raise NotImplementedError

    def read(self, number: int) -> bytes:
        return self.fetch([number])[0]

    def readinto(self, number: int, buffers: list[memoryview]) -> int:
        return scatter(self.read(number), buffers)


class RemoteZipSeries(_FetchedSeries):
    """Numbered members of a remote zip, fetched a batch at a time with concurrent range requests."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None, template: str, table: np.ndarray) -> None:
        self.url = url
        self.storage_options = storage_options or {}
        self.template = template
        self.table = table  # rows: header offset, compressed size, size, method, name length

    def label(self, number: int) -> str:
        return f"{self.url}::{self.template.format(number)}"

    def fetch(self, numbers: Sequence[int]) -> list[bytes]:
        """The decompressed bytes of each member in ``numbers``, fetched concurrently."""
        fs = _filesystem(self.url, self.storage_options)
        rows = self.table[np.asarray(numbers, dtype=np.int64)]
        return fetch_members(fs, self.url, rows, [self.label(int(number)) for number in numbers])



class RemoteZipSource:
    """A scan inside a remote .zip archive."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.storage_options = storage_options or {}
        fs = _filesystem(url, storage_options)
        try:
            with fs.open(url, "rb", block_size=2**16, cache_type="readahead") as file:
                infos = zipfile.ZipFile(file).infolist()
        except zipfile.BadZipFile as error:
            raise ScanError(url, f"not a readable zip archive ({error})") from error
        except (OSError, ValueError) as error:
            raise ScanError(url, f"cannot be opened ({error})") from error
        roots = _zip_roots([info.filename for info in infos])
        if len(roots) != 1:
            raise ScanError(url, f"expected one scan (a folder with data/ and meta/) in the archive, found {len(roots)}")
        (self.prefix,) = roots
        self._infos = {
            info.filename[len(self.prefix) :]: info
            for info in infos
            if info.filename.startswith(self.prefix) and not info.is_dir() and not is_ignored(info.filename)
        }
        stem = url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".zip")
        self.name = self.prefix.rstrip("/").rsplit("/", 1)[-1] if self.prefix else stem

    def __repr__(self) -> str:
        return f"RemoteZipSource({self.url!r})"

    def listing(self) -> dict[str, list[str]]:
        return group_by_folder(self._infos)

    def label(self, relative: str) -> str:
        return f"{self.url}::{self.prefix}{relative}"

    def read(self, relative: str) -> bytes:
        return self.read_many([relative])[0]

    def read_many(self, relatives: Sequence[str]) -> list[bytes]:
        """Several small files in one batch of concurrent requests (the meta/ arrays)."""
        fs = _filesystem(self.url, self.storage_options)
        rows = _table([self._infos[relative] for relative in relatives])
        return fetch_members(fs, self.url, rows, [self.label(relative) for relative in relatives])

    def series(self, directory: str, count: int, suffix: str) -> RemoteZipSeries:
        infos = [self._infos[f"{directory}/{number}{suffix}"] for number in range(count)]
        return RemoteZipSeries(self.url, self.storage_options, f"{self.prefix}{directory}/{{}}{suffix}", _table(infos))


def _table(infos: Sequence[zipfile.ZipInfo]) -> np.ndarray:
    rows = [[i.header_offset, i.compress_size, i.file_size, i.compress_type, len(i.filename.encode())] for i in infos]
    return np.array(rows, dtype=np.int64).reshape(-1, 5)


def fetch_files(fs: Any, paths: Sequence[str]) -> list[bytes]:
    """Whole files, fetched in one batch of concurrent requests, in the order asked."""
    found = fs.cat_ranges(list(paths), None, None, on_error="return")
    for path, value in zip(paths, found):
        if isinstance(value, Exception):
            raise ScanError(path, f"cannot be fetched ({value})")
    return found


class RemoteFolderSeries(_FetchedSeries):
    """Numbered files in a remote folder, fetched a batch at a time."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None, suffix: str) -> None:
        self.url = url.rstrip("/")
        self.storage_options = storage_options or {}
        self.suffix = suffix

    def label(self, number: int) -> str:
        return f"{self.url}/{number}{self.suffix}"

    def fetch(self, numbers: Sequence[int]) -> list[bytes]:
        fs = _filesystem(self.url, self.storage_options)
        return fetch_files(fs, [self.label(int(number)) for number in numbers])



class RemoteFolderSource:
    """A scan folder behind a URL that fsspec can list (object stores, ``file://``, ...)."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url.rstrip("/")
        self.storage_options = storage_options or {}
        fs = _filesystem(url, storage_options)
        root = fs._strip_protocol(self.url)
        try:
            listed = fs.find(root, detail=True)
        except (OSError, ValueError) as error:
            raise ScanError(url, f"cannot be listed ({error})") from error
        self._files = {}
        for path, info in listed.items():
            relative = path[len(root) :].lstrip("/")
            if relative and not is_ignored(relative) and info.get("type", "file") == "file":
                self._files[relative] = int(info.get("size") or -1)
        if not self._files:
            raise ScanError(url, "not a scan: nothing found there (a web server's folder cannot be listed; use the .zip)")
        self.name = self.url.rsplit("/", 1)[-1]

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
        fs = _filesystem(self.url, self.storage_options)
        return fetch_files(fs, [self.label(relative) for relative in relatives])

    def series(self, directory: str, count: int, suffix: str) -> RemoteFolderSeries:
        return RemoteFolderSeries(f"{self.url}/{directory}", self.storage_options, suffix)


def open_remote(url: str, storage_options: dict[str, Any] | None = None) -> RemoteZipSource | RemoteFolderSource:
    """The source of a scan at an fsspec URL: a .zip read with range requests, or a listable folder."""
    if url.rstrip("/").lower().endswith(".zip"):
        return RemoteZipSource(url, storage_options)
    return RemoteFolderSource(url, storage_options)
