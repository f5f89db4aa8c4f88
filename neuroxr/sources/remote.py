"""Remote sources: files behind any fsspec URL (``https://``, ``s3://``, ``gs://``, ``file://``), read in place.

A remote .zip is never downloaded whole: its central directory is read with two or three range
requests, and a batch of members (a block of trials, or the meta/ arrays) is fetched as concurrent
range requests, adjacent members merged into one range, each member inflated in a worker thread as
its range arrives, like a local member (:mod:`neuroxr.sources.zipmember`). A remote folder (object
stores, or anything fsspec can list) works the same way with whole-file reads.

Every response is checked before it is used. Over HTTP(S) neuroxr makes the requests itself
(through fsspec's session, so its ``storage_options`` apply): a range is accepted only as a
``206`` whose ``Content-Range`` and length are the range asked for, of a file of the size, ETag and
Last-Modified seen when it was opened; a server that ignores ``Range`` is refused before its body
is read. Every request has a timeout and a bounded number of retries (``storage_options`` keys
``timeout``, seconds, default :data:`DEFAULT_TIMEOUT`, and ``retries``, default
:data:`DEFAULT_RETRIES`); failures are :class:`~neuroxr.errors.RemoteError` s that say whether the
file was not found, the connection refused, the request timed out or unauthorised. Numbered files
hold the URL, the options, the version and offsets: they pickle and run on any worker.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from neuroxr.errors import MissingExtraError, RemoteError, ScanError, require
from neuroxr.sources.base import Buffers, PerProcess, copy_into, group_by_folder, is_ignored, read_whole, total_bytes
from neuroxr.sources.zipmember import (
    LOCAL_HEADER,
    TAIL_BYTES,
    Directory,
    MemberTable,
    compressed_prefix,
    data_offset,
    header_span,
    inflate_into,
    member_template,
    read_directory,
)

#: Seconds one remote request may take before it is tried again (``storage_options={"timeout": ...}``).
DEFAULT_TIMEOUT = 20.0
#: Further tries of a request that timed out, was dropped or met a server error (``storage_options={"retries": ...}``).
DEFAULT_RETRIES = 2
#: Bytes fetched beyond a member's name in the hope of covering its local extra field in one request.
EXTRA_SLACK = 256
#: Members closer than this in the archive are fetched in one range (the gap is fetched and dropped): adjacent
#: members (only a local header between them), never a trial file of images or responses between two others.
MERGE_GAP = 2**10
#: The longest merged range: longer runs of members are split, so their ranges still arrive concurrently.
MERGE_BLOCK = 16 * 2**20
_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class Remote:
    """One remote file or folder as it was opened: where, how to reach it, which version was seen (picklable)."""

    url: str
    options: dict[str, Any] = field(default_factory=dict)  #: fsspec storage options (neuroxr's own keys removed)
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    size: int | None = None
    etag: str | None = None
    modified: str | None = None

    @classmethod
    def of(cls, url: str, storage_options: dict[str, Any] | None) -> Remote:
        """The remote at ``url``; ``timeout`` and ``retries`` are taken out of ``storage_options``, the rest goes to fsspec."""
        options = dict(storage_options or {})
        timeout = float(options.pop("timeout", DEFAULT_TIMEOUT))
        retries = int(options.pop("retries", DEFAULT_RETRIES))
        if timeout <= 0 or retries < 0:
            raise ScanError(url, f"expected a positive timeout and retries >= 0, found timeout={timeout}, retries={retries}")
        return cls(url, options, timeout, retries)

    @property
    def storage_options(self) -> dict[str, Any]:
        """The options as the user gave them (``timeout`` and ``retries`` included)."""
        return {**self.options, "timeout": self.timeout, "retries": self.retries}

    @property
    def is_http(self) -> bool:
        return self.url.split("://", 1)[0].lower() in ("http", "https")

    def at(self, url: str) -> Remote:
        """The same options for another URL (a file of a folder), its version not yet known."""
        return replace(self, url=url, size=None, etag=None, modified=None)

    def filesystem(self) -> Any:
        """The fsspec file system of the URL."""
        fsspec = require("fsspec", "remote", "reading remote scans")
        options = dict(self.options)
        if self.url.startswith("s3://"):  # botocore's own timeouts and retries, unless the user set them
            config = dict(options.get("config_kwargs") or {})
            config.setdefault("connect_timeout", self.timeout)
            config.setdefault("read_timeout", self.timeout)
            config.setdefault("retries", {"max_attempts": self.retries + 1})
            options["config_kwargs"] = config
        try:
            fs, _ = fsspec.core.url_to_fs(self.url, **options)
        except ImportError as error:
            raise MissingExtraError(getattr(error, "name", None) or "an fsspec backend", "remote", f"reading {self.url}") from error
        except ValueError as error:
            raise ScanError(self.url, f"not a URL neuroxr can read ({error})") from error
        return fs

    def run(self, coroutine_function: Callable[[Any], Any]) -> Any:
        """Run ``coroutine_function(fs)`` on the file system's event loop and return its result."""
        asyn = require("fsspec.asyn", "remote", "reading remote scans")
        fs = self.filesystem()
        loop = getattr(fs, "loop", None) or asyn.get_loop()
        return asyn.sync(loop, coroutine_function, fs)


# ----------------------------------------------------------------------------------------------
# requests: HTTP(S) made and checked here, other file systems through fsspec


def _classify(error: BaseException, remote: Remote, label: str) -> RemoteError:
    """The :class:`RemoteError` for an exception raised by fsspec, aiohttp or a cloud SDK."""
    if isinstance(error, RemoteError):
        return error
    name = type(error).__name__
    text = str(error).splitlines()[0] if str(error) else name
    if isinstance(error, FileNotFoundError):
        return RemoteError(label, "not found", "not found")
    if isinstance(error, PermissionError) or name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
        hint = " (no credentials found: set them up, or pass storage_options={'anon': True} for a public bucket)" if "Credentials" in name else ""
        return RemoteError(label, "unauthorised", f"unauthorised{hint}: {text}")
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)) or "Timeout" in name:
        return RemoteError(label, "timed out", f"timed out after {remote.timeout:g} s ({remote.retries + 1} {'try' if remote.retries == 0 else 'tries'})")
    if isinstance(error, ConnectionRefusedError) or name in ("ClientConnectorError", "EndpointConnectionError"):
        return RemoteError(label, "refused", f"connection refused or host unreachable ({text})")
    return RemoteError(label, "failed", f"cannot be fetched ({name}: {text})")


async def _read_body(response: Any, expected: int | None, label: str) -> bytes:
    """The body of ``response``, refused (unread past it) if longer than ``expected``."""
    if expected is None:
        return await response.read()
    chunks, total = [], 0
    while total <= expected:
        chunk = await response.content.read(expected + 1 - total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    if total > expected:
        raise RemoteError(label, "bad response", f"the server sent more than the {expected} bytes asked for")
    return b"".join(chunks)


async def _http(fs: Any, remote: Remote, method: str, byte_range: tuple[int, int] | None, label: str) -> tuple[dict[str, str], bytes]:
    """One checked HTTP request (``byte_range`` = [start, end)), tried again on time-outs, drops and server errors."""
    aiohttp = require("aiohttp", "remote", "reading scans over HTTP")
    session = await fs.set_session()
    kwargs = dict(fs.kwargs)
    headers = dict(kwargs.pop("headers", None) or {})
    if byte_range is not None:
        headers["Range"] = f"bytes={byte_range[0]}-{byte_range[1] - 1}"
    url = fs.encode_url(remote.url)
    last: BaseException | None = None
    for attempt in range(remote.retries + 1):
        if attempt:
            await asyncio.sleep(min(1.0, 0.05 * 2**attempt))
        try:
            async with asyncio.timeout(remote.timeout):
                async with session.request(method, url, headers=headers, **kwargs) as response:
                    if response.status in _RETRY_STATUS:
                        last = RemoteError(label, "bad response", f"the server answered HTTP {response.status} ({remote.retries + 1} tries)")
                        continue
                    expected = _check_response(response, remote, byte_range, label)
                    body = b"" if method == "HEAD" else await _read_body(response, expected, label)
                    if expected is not None and len(body) != expected:
                        last = RemoteError(label, "bad response", f"the response was cut short: {len(body)} of {expected} bytes")
                        continue
                    return {key.lower(): value for key, value in response.headers.items()}, body
        except RemoteError:
            raise
        except (asyncio.TimeoutError, TimeoutError) as error:
            last = error
        except aiohttp.ClientConnectorError as error:
            last = error
        except aiohttp.ClientPayloadError as error:
            last = RemoteError(label, "bad response", f"the response was cut short ({type(error).__name__}) ({remote.retries + 1} tries)")
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, ConnectionError) as error:
            last = RemoteError(label, "bad response", f"the connection dropped ({type(error).__name__}) ({remote.retries + 1} tries)")
        except aiohttp.ClientError as error:
            raise _classify(error, remote, label) from error
    assert last is not None
    raise _classify(last, remote, label)


def _check_response(response: Any, remote: Remote, byte_range: tuple[int, int] | None, label: str) -> int | None:
    """Refuse a response that is not what was asked of the file as it was opened; return the body's expected length."""
    status = response.status
    if status == 404 or status == 410:
        raise RemoteError(label, "not found", f"not found (HTTP {status})")
    if status in (401, 403, 407):
        raise RemoteError(label, "unauthorised", f"unauthorised (HTTP {status}): check the credentials in storage_options")
    if status == 416:
        raise RemoteError(label, "changed", "the server says the range is past the file's end (was it changed after opening?)")
    for header, seen in (("ETag", remote.etag), ("Last-Modified", remote.modified)):
        now = response.headers.get(header)
        if seen is not None and now is not None and now != seen:
            raise RemoteError(label, "changed", f"changed since it was opened ({header} {seen} then, {now} now)")
    if byte_range is None:
        if status != 200:
            raise RemoteError(label, "bad response", f"the server answered HTTP {status}, expected 200")
        return None
    start, end = byte_range
    if status == 200:
        raise RemoteError(label, "bad response", "the server ignored the Range request (HTTP 200 with the whole file); "
                          "a server or cache that honours ranges is needed")  # fmt: skip
    if status != 206:
        raise RemoteError(label, "bad response", f"the server answered HTTP {status} to a range request, expected 206")
    match = _RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    if match is None or (int(match.group(1)), int(match.group(2)) + 1) != (start, end):
        found = response.headers.get("Content-Range", "none")
        raise RemoteError(label, "bad response", f"the server sent another range than bytes {start}-{end - 1} (Content-Range: {found})")
    if match.group(3) != "*" and remote.size is not None and int(match.group(3)) != remote.size:
        raise RemoteError(label, "changed", f"changed since it was opened ({remote.size} bytes then, {match.group(3)} now)")
    length = response.headers.get("Content-Length")
    if length is not None and length.isdigit() and int(length) != end - start:
        raise RemoteError(label, "bad response", f"the server announced {length} bytes for a range of {end - start}")
    return end - start


async def _get_range(fs: Any, remote: Remote, start: int, end: int, label: str) -> bytes:
    """Bytes [start, end) of the remote file, checked (HTTP: status, range, length, version; others: length)."""
    if end <= start:
        return b""
    if remote.is_http:
        return (await _http(fs, remote, "GET", (start, end), label))[1]
    path = fs._strip_protocol(remote.url)
    try:
        if getattr(fs, "async_impl", False):
            data = await asyncio.wait_for(fs._cat_file(path, start=start, end=end), remote.timeout * (remote.retries + 1))
        else:
            data = await asyncio.get_running_loop().run_in_executor(None, lambda: fs.cat_file(path, start=start, end=end))
    except Exception as error:  # the boundary to fsspec's backends: every failure becomes a RemoteError
        raise _classify(error, remote, label) from error
    if len(data) != end - start:
        raise RemoteError(label, "changed", f"{len(data)} bytes where bytes {start}-{end - 1} were asked for (was it changed after opening?)")
    return data


async def _stat(fs: Any, remote: Remote) -> Remote:
    """``remote`` with the size and version of the file as it is now."""
    if remote.is_http:
        headers, _ = await _http(fs, remote, "HEAD", None, remote.url)
        length = headers.get("content-length")
        if length is None or not length.isdigit():
            raise RemoteError(remote.url, "bad response", "the server does not say the file's size (no Content-Length)")
        return replace(remote, size=int(length), etag=headers.get("etag"), modified=headers.get("last-modified"))
    try:
        info = await fs._info(fs._strip_protocol(remote.url)) if getattr(fs, "async_impl", False) else fs.info(remote.url)
    except Exception as error:  # the boundary to fsspec's backends
        raise _classify(error, remote, remote.url) from error
    if info.get("type") == "directory":
        raise ScanError(remote.url, "is a folder, expected a .zip archive")
    etag = info.get("ETag") or info.get("etag")
    return replace(remote, size=int(info.get("size") or 0), etag=str(etag) if etag else None)


#: Threads that inflate members as their ranges arrive (libdeflate releases the GIL); each process its own.
INFLATE_THREADS = PerProcess(lambda: ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="neuroxr-inflate"))


# ----------------------------------------------------------------------------------------------
# zip members


def fetch_members(remote: Remote, table: MemberTable, buffers: Sequence[Buffers], labels: Sequence[str]) -> list[int]:
    """Fetch every member of ``table`` into its ``buffers`` (see ``NumberedFiles.read_into``); return their sizes.

    Members whose ranges lie within :data:`MERGE_GAP` of each other are fetched in one range of at most
    :data:`MERGE_BLOCK` bytes; all ranges are requested at once, and each member is inflated and
    verified in a worker thread as soon as its range has arrived.
    """
    n = len(table)
    if n == 0:
        return []
    starts = table.offsets
    wanted = np.array([compressed_prefix(table, row, total_bytes(buffers[row])) for row in range(n)], dtype=np.int64)
    ends = starts + LOCAL_HEADER.size + table.name_lengths + EXTRA_SLACK + wanted  # leading bytes: a prefix of the data
    if remote.size is not None:
        ends = np.minimum(ends, remote.size)
    order = np.argsort(starts, kind="stable")
    groups: list[list[int]] = []
    group_start = group_end = -1
    for row in order.tolist():
        start, end = int(starts[row]), int(ends[row])
        if groups and start <= group_end + MERGE_GAP and max(group_end, end) - group_start <= MERGE_BLOCK:
            groups[-1].append(row)
            group_end = max(group_end, end)
        else:
            groups.append([row])
            group_start, group_end = start, end
    sizes = [0] * n

    async def place(fs: Any, rows: list[int]) -> None:
        begin = int(starts[rows[0]])
        chunk = await _get_range(fs, remote, begin, max(int(ends[row]) for row in rows), labels[rows[0]])
        loop = asyncio.get_running_loop()
        for row in rows:
            local = int(starts[row]) - begin
            head = memoryview(chunk)[local : local + header_span(table, row)]
            data_start = local + data_offset(head, table, row, labels[row])
            length, at = int(wanted[row]), begin + data_start
            raw: bytes | memoryview = memoryview(chunk)[data_start : data_start + length]
            if len(raw) < length:  # a long local extra field: fetch the rest
                raw = await _get_range(fs, remote, at, at + length, labels[row])
            size = await loop.run_in_executor(INFLATE_THREADS.get(), inflate_into, raw, table, row, buffers[row], labels[row])
            if size is None:  # the prefix fell short of the leading bytes: all of the data
                raw = await _get_range(fs, remote, at, at + int(table.compressed[row]), labels[row])
                size = await loop.run_in_executor(INFLATE_THREADS.get(), inflate_into, raw, table, row, buffers[row], labels[row])
            assert size is not None  # all of the data inflates, or is refused
            sizes[row] = size

    async def fetch_all(fs: Any) -> None:
        await _gather([place(fs, rows) for rows in groups])

    remote.run(fetch_all)
    return sizes


async def _gather(coroutines: list[Any]) -> None:
    """Run ``coroutines`` together; the first failure cancels the rest and is raised."""
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class RemoteZipMembers:
    """Numbered members of a remote zip, fetched a batch at a time with concurrent, merged range requests."""

    def __init__(self, remote: Remote, template: str, table: MemberTable) -> None:
        self.remote = remote
        self.template = template
        self.table = table

    @property
    def url(self) -> str:
        return self.remote.url

    def __repr__(self) -> str:
        return f"RemoteZipMembers({self.remote.url!r}, {self.template!r}, {len(self.table)} members)"

    def label(self, number: int) -> str:
        return f"{self.remote.url}::{self.template.format(number)}"

    def size(self, number: int) -> int:
        return int(self.table.sizes[number])

    def read(self, number: int, limit: int | None = None) -> bytearray:
        return read_whole(self, number, limit)

    def fetch(self, numbers: Sequence[int]) -> list[bytes]:
        """The verified bytes of each member in ``numbers``, fetched concurrently."""
        numbers = [int(number) for number in numbers]
        buffers = [bytearray(self.size(number)) for number in numbers]
        self.read_into(numbers, [[memoryview(buffer)] for buffer in buffers])
        return [bytes(buffer) for buffer in buffers]

    def read_into(self, numbers: Sequence[int], buffers: Sequence[Buffers]) -> list[int]:
        rows = np.asarray(numbers, dtype=np.int64)
        labels = [self.label(int(number)) for number in rows]
        return fetch_members(self.remote, self.table.take(rows), buffers, labels)


class RemoteZipSource:
    """The members under one folder of a remote .zip archive (the whole archive when ``prefix`` is "")."""

    def __init__(self, url: str | Remote, storage_options: dict[str, Any] | None = None, prefix: str = "",
                 directory: Directory | None = None) -> None:  # fmt: skip
        remote = url if isinstance(url, Remote) else Remote.of(url, storage_options)
        if directory is None:
            remote, directory = _open_archive(remote)
        self.remote = remote
        self.url = remote.url
        self.storage_options = remote.storage_options
        self.prefix = prefix
        self._directory = directory
        stem = self.url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".zip")
        self.name = prefix.rstrip("/").rsplit("/", 1)[-1] if prefix else stem

    def __repr__(self) -> str:
        return f"RemoteZipSource({self.url!r}, prefix={self.prefix!r})"

    def listing(self) -> dict[str, list[str]]:
        return self._directory.listing(self.prefix)

    def label(self, relative: str) -> str:
        return f"{self.url}::{self.prefix}{relative}"

    def _table(self, relatives: Sequence[str]) -> MemberTable:
        table = self._directory.table.take(self._directory.rows_in(self.prefix, relatives, self.label))
        table.check(lambda row: self.label(relatives[row]), self._directory.data_end)
        return table

    def read(self, relative: str) -> bytes | bytearray:
        return self.read_many([relative])[0]

    def read_many(self, relatives: Sequence[str]) -> list[bytes | bytearray]:
        """Several members in one batch of concurrent requests (the meta/ arrays)."""
        table = self._table(relatives)
        found = [bytearray(int(size)) for size in table.sizes]
        fetch_members(self.remote, table, [[memoryview(buffer)] for buffer in found], [self.label(r) for r in relatives])
        return found

    def within(self, folder: str) -> RemoteZipSource:
        if not folder:
            return self
        return RemoteZipSource(self.remote, prefix=self.prefix + folder.rstrip("/") + "/", directory=self._directory)

    def numbered(self, directory: str, count: int, suffix: str) -> RemoteZipMembers:
        template = member_template(self.prefix, directory, suffix)
        rows = self._directory.numbered_rows(self.prefix + directory, count, suffix, lambda name: f"{self.url}::{name}")
        table = self._directory.table.take(rows)
        table.check(lambda index: f"{self.url}::{template.format(index)}", self._directory.data_end)
        return RemoteZipMembers(self.remote, template, table)

    def listed(self, relatives: Sequence[str]) -> RemoteZipMembers:
        return _RemoteMembers(self.remote, [self.label(relative) for relative in relatives], self._table(relatives))


class _RemoteMembers(RemoteZipMembers):
    """Members of any names of a remote zip, numbered in the order given."""

    def __init__(self, remote: Remote, labels: list[str], table: MemberTable) -> None:
        super().__init__(remote, "", table)
        self._labels = labels

    def label(self, number: int) -> str:
        return self._labels[number]


def _open_archive(remote: Remote) -> tuple[Remote, Directory]:
    """The archive's version (size, ETag, Last-Modified) and its central directory, read with checked range requests."""

    async def open_it(fs: Any) -> tuple[Remote, bytes, int]:
        opened = await _stat(fs, remote)
        assert opened.size is not None
        tail_start = max(0, opened.size - TAIL_BYTES)
        return opened, await _get_range(fs, opened, tail_start, opened.size, remote.url), tail_start

    opened, tail, tail_start = remote.run(open_it)

    def read_at(offset: int, length: int) -> bytes:
        if offset >= tail_start:
            return tail[offset - tail_start : offset - tail_start + length]
        return opened.run(lambda fs: _get_range(fs, opened, offset, offset + length, remote.url))

    assert opened.size is not None
    return opened, read_directory(read_at, opened.size, remote.url)


# ----------------------------------------------------------------------------------------------
# folders


def fetch_files(remote: Remote, urls: Sequence[str], sizes: Sequence[int], buffers: Sequence[Buffers]) -> list[int]:
    """Whole files of known sizes, fetched concurrently, each placed in its buffers; return their sizes."""

    async def one(fs: Any, url: str, size: int, targets: Buffers) -> None:
        copy_into(await _get_range(fs, remote.at(url), 0, size, url), targets)

    async def all_files(fs: Any) -> None:
        await _gather([one(fs, url, int(size), targets) for url, size, targets in zip(urls, sizes, buffers)])

    remote.run(all_files)
    return [int(size) for size in sizes]


class RemoteFolderFiles:
    """Numbered files in a remote folder, fetched a batch at a time."""

    def __init__(self, remote: Remote, suffix: str, sizes: np.ndarray) -> None:
        self.remote = remote
        self.url = remote.url.rstrip("/")
        self.suffix = suffix
        self.sizes = sizes

    def __repr__(self) -> str:
        return f"RemoteFolderFiles({self.url!r}, {self.suffix!r})"

    def label(self, number: int) -> str:
        return f"{self.url}/{number}{self.suffix}"

    def size(self, number: int) -> int:
        size = int(self.sizes[number])
        if size < 0:
            raise ScanError(self.label(number), "missing from the folder's listing")
        return size

    def read(self, number: int, limit: int | None = None) -> bytearray:
        return read_whole(self, number, limit)

    def fetch(self, numbers: Sequence[int]) -> list[bytes]:
        buffers = [bytearray(self.size(int(number))) for number in numbers]
        self.read_into(numbers, [[memoryview(buffer)] for buffer in buffers])
        return [bytes(buffer) for buffer in buffers]

    def read_into(self, numbers: Sequence[int], buffers: Sequence[Buffers]) -> list[int]:
        sizes = [self.size(int(number)) for number in numbers]
        wanted = [min(size, sum(len(b) for b in targets) + 1) for size, targets in zip(sizes, buffers)]
        fetch_files(self.remote, [self.label(int(number)) for number in numbers], wanted, buffers)
        return sizes


class RemoteFolderSource:
    """The files under a URL that fsspec can list (object stores, ``file://``, ...)."""

    def __init__(self, url: str | Remote, storage_options: dict[str, Any] | None = None, files: dict[str, int] | None = None) -> None:
        remote = url if isinstance(url, Remote) else Remote.of(url, storage_options)
        self.remote = remote.at(remote.url.rstrip("/"))
        self.url = self.remote.url
        self.storage_options = self.remote.storage_options
        self._files = self._list() if files is None else files  # relative path -> size in bytes
        self.name = self.url.rsplit("/", 1)[-1]

    def _list(self) -> dict[str, int]:
        fs = self.remote.filesystem()
        root = fs._strip_protocol(self.url)
        try:
            listed = fs.find(root, detail=True, withdirs=True)
        except Exception as error:  # the boundary to fsspec's backends
            raise _classify(error, self.remote, self.url) from error
        files = {}
        for path, info in listed.items():
            relative = path[len(root) :].lstrip("/")
            if not relative or is_ignored(relative):
                continue
            if info.get("type", "file") == "file":
                files[relative] = int(info.get("size") or 0)
            elif relative.endswith(".npy"):
                files[relative + "/"] = -1  # a folder named like a file: listed so the layout refuses it
        if not files:
            raise RemoteError(self.url, "not found", "nothing found there (a web server's folder cannot be listed; use the .zip)")
        return files

    def __repr__(self) -> str:
        return f"RemoteFolderSource({self.url!r})"

    def listing(self) -> dict[str, list[str]]:
        listing = group_by_folder(relative for relative in self._files if not relative.endswith("/"))
        for relative in self._files:
            if relative.endswith("/"):
                listing.setdefault(relative.rstrip("/"), [])
        return listing

    def label(self, relative: str) -> str:
        return f"{self.url}/{relative}"

    def read(self, relative: str) -> bytes | bytearray:
        return self.read_many([relative])[0]

    def read_many(self, relatives: Sequence[str]) -> list[bytes | bytearray]:
        """Several small files in one batch of concurrent requests."""
        missing = next((relative for relative in relatives if self._files.get(relative, -1) < 0), None)
        if missing is not None:
            raise ScanError(self.label(missing), "missing from the folder's listing")
        sizes = [self._files[relative] for relative in relatives]
        found = [bytearray(size) for size in sizes]
        fetch_files(self.remote, [self.label(relative) for relative in relatives], sizes, [[memoryview(b)] for b in found])
        return found

    def within(self, folder: str) -> RemoteFolderSource:
        if not folder:
            return self
        prefix = folder.rstrip("/") + "/"
        files = {name[len(prefix) :]: size for name, size in self._files.items() if name.startswith(prefix)}
        return RemoteFolderSource(self.remote.at(f"{self.url}/{folder.rstrip('/')}"), files=files)

    def numbered(self, directory: str, count: int, suffix: str) -> RemoteFolderFiles:
        sizes = np.array([self._files.get(f"{directory}/{number}{suffix}", -1) for number in range(count)], dtype=np.int64)
        return RemoteFolderFiles(self.remote.at(f"{self.url}/{directory}"), suffix, sizes)

    def listed(self, relatives: Sequence[str]) -> RemoteFolderFiles:
        sizes = np.array([self._files.get(relative, -1) for relative in relatives], dtype=np.int64)
        return _RemoteListedFiles(self.remote, [self.label(relative) for relative in relatives], sizes)


class _RemoteListedFiles(RemoteFolderFiles):
    """Files of any names under a remote folder, numbered in the order given."""

    def __init__(self, remote: Remote, urls: list[str], sizes: np.ndarray) -> None:
        super().__init__(remote, "", sizes)
        self.urls = urls

    def label(self, number: int) -> str:
        return self.urls[number]


def open_url(url: str, storage_options: dict[str, Any] | None = None) -> RemoteZipSource | RemoteFolderSource:
    """The source at an fsspec URL: a .zip read with range requests, or a listable folder."""
    if url.rstrip("/").lower().endswith(".zip"):
        return RemoteZipSource(url, storage_options)
    return RemoteFolderSource(url, storage_options)
