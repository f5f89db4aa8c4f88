"""A local .zip archive as a source, read in place (never extracted).

The central directory is parsed once when the archive is opened (:func:`~neuroxr.sources.zipmember.read_directory`:
two reads and no ``ZipInfo`` objects); numbered members keep the offsets and sizes of their members
and reopen the archive per read (``pread``: no shared file position, safe in threads and picklable).
Stored members are read straight into the caller's buffers and their CRC-32 computed there;
deflated ones are inflated by libdeflate. Every member read whole is verified; for a member's leading
bytes alone (a header), only a prefix of its compressed data is read and inflated.
"""

from __future__ import annotations

import os
import stat
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from neuroxr.errors import ScanError
from neuroxr.sources.base import Buffers, limit_to, read_whole, total_bytes
from neuroxr.sources.folder import os_error
from neuroxr.sources.zipmember import (
    LOCAL_HEADER,
    Directory,
    MemberTable,
    compressed_prefix,
    check_crc,
    check_local_header,
    crc32,
    data_offset,
    header_span,
    inflate,
    inflate_into,
    member_template,
    read_buffer,
    read_directory,
)


#: Compressed members to read together beyond which they are inflated on parallel threads.
PARALLEL_BYTES = 8 * 2**20


def open_directory(archive: str) -> Directory:
    """The central directory of the local archive ``archive`` (a regular file)."""
    try:
        fd = os.open(archive, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ScanError(archive, "is not a regular file, expected a .zip archive")
            return read_directory(lambda offset, length: os.pread(fd, length, offset), info.st_size, archive)
        finally:
            os.close(fd)
    except OSError as error:
        raise os_error(error, archive) from error


class ZipMembers:
    """Numbered members of a zip archive: offsets and sizes only, the archive reopened per read."""

    def __init__(self, archive: str, template: str, table: MemberTable) -> None:
        self.archive = archive
        self.template = template  # "prefix/data/responses/{}.npy"
        self.table = table

    def __repr__(self) -> str:
        return f"ZipMembers({self.archive!r}, {self.template!r}, {len(self.table)} members)"

    def label(self, number: int) -> str:
        return f"{self.archive}::{self.template.format(number)}"

    def size(self, number: int) -> int:
        return int(self.table.sizes[number])

    def read(self, number: int, limit: int | None = None) -> bytes | bytearray | memoryview:
        return read_whole(self, number, limit)

    def read_into(self, numbers: Sequence[int], buffers: Sequence[Buffers]) -> list[int]:
        """Each member's local header and data in one ``preadv`` (see :func:`_read_member`), the archive opened once."""
        rows = np.asarray(numbers, dtype=np.int64)
        table, number = self.table.take(rows), -1  # the rows' columns, once per call: no numpy scalar per member
        try:
            fd = os.open(self.archive, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            try:
                done, extra, head = [], 0, bytearray(256)
                members = zip(
                    numbers, buffers, table.offsets.tolist(), table.sizes.tolist(), table.methods.tolist(),
                    table.name_lengths.tolist(), table.name_crcs.tolist(), table.crcs.tolist(),
                )  # fmt: skip
                for index, (number, targets, offset, size, method, name_length, name_crc, crc) in enumerate(members):
                    if method == zipfile.ZIP_STORED:
                        span = LOCAL_HEADER.size + name_length
                        if len(head) < span + extra:
                            head = bytearray(span + extra)
                        extra = _read_stored(fd, offset, size, span, name_length, name_crc, crc, targets, extra, head)
                    else:
                        size, extra = _read_member(fd, table, index, targets, extra)
                    done.append(size)
                return done
            except ScanError as error:  # members are read unnamed (a name per member costs more than its checks)
                raise ScanError(self.label(number), error.problem) from error.__cause__
            finally:
                os.close(fd)
        except OSError as error:
            raise os_error(error, self.label(number) if number >= 0 else self.archive) from error


def _read_stored(fd: int, offset: int, size: int, span: int, name_length: int, name_crc: int, crc: int, targets: Buffers, extra: int, head: bytearray) -> int:
    """Read a stored member (its local header at ``offset``) into ``targets``; return its extra field's length.

    The local header, the name and ``extra`` bytes of extra field (the length the previous member's
    had: an archive's members nearly always agree) are read into ``head`` in the same call as the
    data; where the header says otherwise, the data is read again from where it does start. The
    data lands in ``targets`` and its CRC-32 is computed there. Errors name no member: the caller names it.
    """
    placed = total_bytes(targets)
    wanted = targets if placed <= size else limit_to(targets, size)  # never read past the member
    placed = min(placed, size)
    prefix = memoryview(head)[: span + extra]
    got = os.preadv(fd, [prefix, *wanted], offset)
    start = check_local_header(prefix[: min(span, got)], name_length, name_crc, "")
    got -= len(prefix)
    if start != len(prefix):  # another extra field: the data starts elsewhere
        extra = start - span
        got = os.preadv(fd, wanted, offset + start) if wanted else 0
    if got < placed:
        raise ScanError("", f"corrupt zip: the archive ends inside the member ({max(0, got)} of {size} bytes)")
    if placed == size:
        check_crc(crc32(wanted), crc, "")
    return extra


def _read_member(fd: int, table: MemberTable, row: int, targets: Buffers, extra: int) -> tuple[int, int]:
    """Read compressed member ``row`` of the archive open as ``fd`` into ``targets``; return its size (see ``read_into``) and its extra field's length.

    As :func:`_read_stored`, the local header and name come in the same read as the data (into a
    buffer the thread reuses, where the fast libdeflate binding is in use: see ``zipmember.INFLATER``).
    """
    offset, span = int(table.offsets[row]), header_span(table, row)
    packed = int(table.compressed[row])
    wanted = compressed_prefix(table, row, total_bytes(targets))  # a member's leading bytes: a prefix of its data
    data = _pread(fd, span + extra + wanted, offset)
    start = data_offset(data[:span], table, row, "")
    if start != span + extra:
        extra = start - span
        data = _pread(fd, wanted, offset + start)
    else:
        data = data[start:]
    if len(data) != wanted:
        raise ScanError("", f"corrupt zip: the archive ends inside the member ({len(data)} of {packed} bytes)")
    size = inflate_into(data, table, row, targets, "")
    if size is None:  # the prefix fell short of the leading bytes: all of the data
        data = _pread(fd, packed, offset + start)
        if len(data) != packed:
            raise ScanError("", f"corrupt zip: the archive ends inside the member ({len(data)} of {packed} bytes)")
        size = inflate_into(data, table, row, targets, "")
    assert size is not None  # all of the data inflates, or is refused
    return size, extra


def _pread(fd: int, length: int, offset: int) -> memoryview:
    """Up to ``length`` bytes at ``offset``: into this thread's reused buffer where there is one, else new bytes."""
    buffer = read_buffer(length)
    if buffer is None:
        return memoryview(os.pread(fd, length, offset))
    return buffer[: os.preadv(fd, [buffer], offset)]


class ZipSource:
    """The members under one folder of a local .zip archive (the whole archive when ``prefix`` is "")."""

    def __init__(self, archive: str | os.PathLike[str], prefix: str = "", directory: Directory | None = None) -> None:
        self.archive = os.path.abspath(archive)
        self.prefix = prefix
        self._directory = open_directory(self.archive) if directory is None else directory
        self.name = prefix.rstrip("/").rsplit("/", 1)[-1] if prefix else Path(archive).stem

    def __repr__(self) -> str:
        return f"ZipSource({self.archive!r}, prefix={self.prefix!r})"

    def __getstate__(self) -> dict[str, object]:
        raise TypeError("a ZipSource is not sent to workers; its numbered members are")

    def listing(self) -> dict[str, list[str]]:
        """Every member, by folder; a folder entry named like a file (``x.npy/``) is listed, even empty, so the layout can refuse it."""
        return self._directory.listing(self.prefix)

    def label(self, relative: str) -> str:
        return f"{self.archive}::{self.prefix}{relative}"

    def _checked(self, rows: np.ndarray, label: Callable[[int], str]) -> MemberTable:
        """The table of ``rows``, refusing (named by ``label(index)``) what no read could verify."""
        table = self._directory.table.take(rows)
        table.check(label, self._directory.data_end)
        return table

    def read(self, relative: str) -> bytes | bytearray | memoryview:
        return self.read_many([relative])[0]

    def read_many(self, relatives: Sequence[str]) -> list[bytes | bytearray | memoryview]:
        """Several whole members; large compressed ones (a video scan's statistics) inflated on parallel threads."""
        members = self.listed(relatives)
        table = members.table
        packed = table.methods != zipfile.ZIP_STORED
        if int(table.sizes[packed].sum()) < PARALLEL_BYTES:  # in one call: the archive opened once
            found = [bytearray(size) for size in table.sizes.tolist()]
            members.read_into(range(len(found)), [[memoryview(buffer)] for buffer in found])
            return list(found)
        with ThreadPoolExecutor(os.cpu_count() or 2, thread_name_prefix="neuroxr-meta") as pool:  # libdeflate releases the GIL
            return list(pool.map(members.read, range(len(relatives))))

    def within(self, folder: str) -> ZipSource:
        if not folder:
            return self
        return ZipSource(self.archive, self.prefix + folder.rstrip("/") + "/", self._directory)

    def numbered(self, directory: str, count: int, suffix: str) -> ZipMembers:
        template = member_template(self.prefix, directory, suffix)
        rows = self._directory.numbered_rows(self.prefix + directory, count, suffix, lambda name: f"{self.archive}::{name}")
        table = self._checked(rows, lambda index: f"{self.archive}::{template.format(index)}")
        return ZipMembers(self.archive, template, table)

    def listed(self, relatives: Sequence[str]) -> ZipMembers:
        rows = self._directory.rows_in(self.prefix, relatives, self.label)
        table = self._checked(rows, lambda index: self.label(relatives[index]))
        return _Members(self.archive, [self.label(relative) for relative in relatives], table)


class _Members(ZipMembers):
    """Members of any names (the small meta files), numbered in the order given."""

    def __init__(self, archive: str, labels: list[str], table: MemberTable) -> None:
        super().__init__(archive, "", table)
        self._labels = labels

    def label(self, number: int) -> str:
        return self._labels[number]


__all__ = ["ZipMembers", "ZipSource", "inflate", "open_directory"]
