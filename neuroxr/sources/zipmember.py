"""Zip members read in place: the one parser of zip records and the one decompressor, for local and remote archives.

:func:`read_directory` parses the end record and the central directory itself (no ``ZipInfo`` per
member: a release archive has 28,000 of them) into a :class:`Directory`: member names and a
:class:`MemberTable` of numpy columns (small to pickle). Reading a member then needs its local
header (30 bytes and the name; the extra field's length only the local header tells) and its
compressed bytes: a local archive reads them with ``pread``, a remote one with verified range
requests, and both hand them to :func:`data_offset` and :func:`inflate_into` here.

Every read is verified and bounded: the local header must carry the name the directory gives (so a
directory entry cannot point at another member), nothing inflates past the size the directory
declares, and the CRC-32 of every member read whole is compared with the directory's (a member's leading
bytes alone, a header, are inflated from a prefix of its compressed bytes, as far as they reach, and
verified when the member is read whole: :func:`compressed_prefix`, :func:`inflate_into`). Deflate runs
in libdeflate (the ``deflate`` package: about 2.3x zlib on one core here, and it releases the GIL,
so members inflate in parallel); CRC-32 too (about 15 GB/s here, against 2 GB/s for ``zlib.crc32``).
Where the package's extension exports libdeflate's C functions (its wheels do), they are called
directly (:data:`INFLATER`): a member whose buffer is one piece of memory (a whole member read)
inflates straight into it, instead of into a new ``bytearray`` that is then copied.
"""

from __future__ import annotations

import bz2
import ctypes
import itertools
import lzma
import operator
import struct
import threading
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import deflate
import numpy as np

from neuroxr.errors import ScanError
from neuroxr.sources.base import Buffers, copy_into, is_ignored, may_be_ignored, total_bytes

LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., name length, extra length
LOCAL_SIGNATURE = b"PK\x03\x04"
_END = struct.Struct("<4s4H2LH")  # end of central directory record
_END_SIGNATURE = b"PK\x05\x06"
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_END = struct.Struct("<4sQ2H2L4Q")
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
_CENTRAL_SIGNATURE = b"PK\x01\x02"
_MAX_COMMENT = 0xFFFF
#: Compression methods read here; others are refused with an error naming the member.
METHODS = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflated",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}
_ENCRYPTED = 0x1
#: Flags no read can honour, refused as :mod:`zipfile` refuses them: encryption, patched data, strong encryption.
_UNREADABLE_FLAGS = 0x1 | 0x20 | 0x40
_UTF8 = 0x800
#: The newest "version needed to extract" that :mod:`zipfile` reads (6.3); an archive that needs more is refused.
MAX_EXTRACT_VERSION = 63
#: Deflate cannot expand data more than this (258 bytes from a 2-bit code, plus block overhead).
DEFLATE_MAX_RATIO = 1032

#: Bytes at an archive's end that hold its end records: the end record, its longest comment and the zip64 records.
TAIL_BYTES = 22 + 0xFFFF + 20 + 56
#: ``read_at(offset, length) -> bytes``: how a directory parser reads an archive (local or remote).
ReadAt = Callable[[int, int], bytes]


def crc32(buffers: Sequence[bytes | bytearray | memoryview], value: int = 0) -> int:
    """The CRC-32 (as zip files use it) of ``buffers`` in turn (libdeflate's; about 15 GB/s here).

    >>> crc32([b"neuro", b"xr"]) == zlib.crc32(b"neuroxr")
    True
    """
    for buffer in buffers:
        value = deflate.crc32(buffer, value)
    return value


@dataclass(frozen=True)
class MemberTable:
    """What the central directory says of some members, row by row (numpy arrays: small to pickle)."""

    offsets: np.ndarray  #: int64, the local header's position in the archive
    compressed: np.ndarray  #: int64, bytes of compressed data
    sizes: np.ndarray  #: int64, bytes once decompressed
    methods: np.ndarray  #: int16, compression method
    flags: np.ndarray  #: uint16, general purpose flags
    name_lengths: np.ndarray  #: int32, bytes of the member's name (as stored)
    name_crcs: np.ndarray  #: uint32, CRC-32 of the stored name: the local header must carry the same
    crcs: np.ndarray  #: uint32, CRC-32 of the decompressed bytes

    def __len__(self) -> int:
        return len(self.offsets)

    def take(self, rows: np.ndarray | Sequence[int]) -> MemberTable:
        """The table of ``rows`` (in that order)."""
        rows = np.asarray(rows, dtype=np.int64)
        return MemberTable(*(getattr(self, field.name)[rows] for field in fields(self)))

    def check(self, labels: Callable[[int], str], data_end: int) -> None:
        """Refuse, naming the member, what no read could verify: encryption, unknown methods, impossible sizes."""
        bad = np.flatnonzero(
            (self.flags & _UNREADABLE_FLAGS).astype(bool)
            | ~np.isin(self.methods, list(METHODS))
            | ((self.methods == zipfile.ZIP_STORED) & (self.sizes != self.compressed))
            | ((self.methods == zipfile.ZIP_DEFLATED) & (self.sizes > self.compressed * DEFLATE_MAX_RATIO + 64))
            | (self.offsets + LOCAL_HEADER.size + self.name_lengths + self.compressed > data_end)
        )
        if not len(bad):
            return
        row = int(bad[0])
        method, size, packed = int(self.methods[row]), int(self.sizes[row]), int(self.compressed[row])
        if self.flags[row] & _ENCRYPTED:
            problem = "encrypted zip members are not supported"
        elif self.flags[row] & _UNREADABLE_FLAGS:
            problem = f"zip members with flags {int(self.flags[row]):#06x} (patched data or strong encryption) are not supported"
        elif method not in METHODS:
            problem = f"zip compression method {method} is not supported (expected one of {', '.join(METHODS.values())})"
        elif method == zipfile.ZIP_STORED and size != packed:
            problem = f"corrupt zip directory: a stored member of {size} bytes with {packed} bytes of data"
        elif method == zipfile.ZIP_DEFLATED and size > packed * DEFLATE_MAX_RATIO + 64:
            problem = f"corrupt zip directory: declares {size} bytes from {packed} deflated bytes, more than deflate can produce"
        else:
            problem = f"corrupt zip directory: the member's {packed} bytes run past the end of the archive's data"
        raise ScanError(labels(row), problem)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as one compressed buffer: numbered members' offsets and sizes are regular, so a 7,000-member
        table goes to workers in tens of kilobytes instead of a quarter of a megabyte."""
        columns = [getattr(self, field.name) for field in fields(self)]
        packed = zlib.compress(b"".join(np.ascontiguousarray(column).tobytes() for column in columns), 1)
        return (_unpack_table, (packed, len(self), tuple(column.dtype.str for column in columns)))


def _unpack_table(packed: bytes, rows: int, dtypes: tuple[str, ...]) -> MemberTable:
    """The :class:`MemberTable` that :meth:`MemberTable.__reduce__` packed."""
    buffer = zlib.decompress(packed)
    columns, start = [], 0
    for dtype in map(np.dtype, dtypes):
        columns.append(np.frombuffer(buffer, dtype, rows, start))
        start += rows * dtype.itemsize
    return MemberTable(*columns)


@dataclass(frozen=True)
class Directory:
    """An archive's central directory: its file members' table, and where each is by folder."""

    table: MemberTable
    #: ``{folder: {file name: row of the table}}``, archive clutter left out; a folder entry named like a
    #: file (``x.npy/``) is kept, even empty, for the layout to refuse
    tree: dict[str, dict[str, int]]
    data_end: int  #: where the members' data must end (the start of the central directory)

    def listing(self, prefix: str) -> dict[str, list[str]]:
        """The members under ``prefix`` (``""`` or ``"folder/"``) as ``{folder: [file names]}``, relative to it."""
        top = prefix.rstrip("/")
        found = {}
        for folder, files in self.tree.items():
            if folder == top:
                found[""] = list(files)
            elif folder.startswith(prefix) or not prefix:
                found[folder[len(prefix) :]] = list(files)
        return found

    def rows_in(self, prefix: str, relatives: Sequence[str], label: Callable[[str], str]) -> np.ndarray:
        """The rows of the members ``prefix + relative``; a missing one is refused, named by ``label``."""
        tree, rows = self.tree, np.empty(len(relatives), dtype=np.int64)
        for index, relative in enumerate(relatives):
            folder, _, file = (prefix + relative).rpartition("/")
            row = tree.get(folder, {}).get(file)
            if row is None:
                raise ScanError(label(relative), "missing from the archive")
            rows[index] = row
        return rows

    def numbered_rows(self, folder: str, count: int, suffix: str, label: Callable[[str], str]) -> np.ndarray:
        """The rows of ``folder/0{suffix}`` .. ``folder/{count-1}{suffix}``."""
        files = self.tree.get(folder, {})
        try:
            names = map(("{}" + suffix.replace("{", "{{").replace("}", "}}")).format, range(count))
            return np.fromiter(map(files.__getitem__, names), dtype=np.int64, count=count)  # no Python frame per file
        except KeyError as error:
            raise ScanError(label(f"{folder}/{error.args[0]}"), "missing from the archive") from None


def member_template(prefix: str, directory: str, suffix: str) -> str:
    """``prefix + directory/{}suffix`` for ``str.format``, any braces of the names escaped.

    >>> member_template("scan{1}/", "data/x", ".npy").format(7)
    'scan{1}/data/x/7.npy'
    """
    escape = lambda text: text.replace("{", "{{").replace("}", "}}")  # noqa: E731
    return f"{escape(prefix)}{escape(directory)}/{{}}{escape(suffix)}"


def read_directory(read_at: ReadAt, size: int, label: str) -> Directory:
    """Parse the central directory of an archive of ``size`` bytes that ``read_at`` reads.

    Reads the end record (one read of the archive's tail) and the directory (one more read, unless
    the tail held it); zip64 archives and archives with data before them (self-extracting) are read
    as :mod:`zipfile` reads them. Directory entries (names ending in ``/``) are left out.
    """
    tail_start = max(0, size - TAIL_BYTES)
    tail = read_at(tail_start, size - tail_start)
    end = _find_end(tail)
    if end is None:
        raise ScanError(label, "not a readable zip archive (no end of central directory record)")
    _, disk, cd_disk, _, entries, cd_size, cd_offset, _ = _END.unpack_from(tail, end)
    end_at = tail_start + end
    directory_end = end_at
    locator_at = end_at - _ZIP64_LOCATOR.size  # zip64 records, where present, hold the values (as zipfile reads them)
    locator = tail[locator_at - tail_start : end] if locator_at >= tail_start else b""
    if locator[:4] == b"PK\x06\x07":
        _, _, _, disks = _ZIP64_LOCATOR.unpack(locator)
        record_at = locator_at - _ZIP64_END.size
        record = tail[record_at - tail_start : locator_at - tail_start] if record_at >= tail_start else b""
        if len(record) != _ZIP64_END.size or record[:4] != b"PK\x06\x06":
            raise ScanError(label, "not a readable zip archive (corrupt zip64 end record)")
        fields64 = _ZIP64_END.unpack(record)
        disk, cd_disk, entries, cd_size, cd_offset = fields64[4], fields64[5], fields64[7], fields64[8], fields64[9]
        directory_end = record_at
        if disks > 1:
            disk = disks
    if disk != 0 or cd_disk != 0:
        raise ScanError(label, "not a readable zip archive (archives spanning several disks are not supported)")
    cd_start = directory_end - cd_size
    concat = cd_start - cd_offset  # bytes before the archive proper (a self-extracting stub)
    if cd_start < 0 or concat < 0:
        raise ScanError(label, f"not a readable zip archive (a central directory of {cd_size} bytes does not fit before its end record)")
    if cd_start >= tail_start:
        central = tail[cd_start - tail_start : directory_end - tail_start]
    else:
        central = read_at(cd_start, cd_size)
    if len(central) != cd_size:
        raise ScanError(label, f"not a readable zip archive (the central directory is cut short: {len(central)} of {cd_size} bytes)")
    return _parse_central(central, entries, concat, cd_start, label)


def _find_end(tail: bytes) -> int | None:
    """Where the end of central directory record starts in ``tail`` (the last one whose comment fits)."""
    at = tail.rfind(_END_SIGNATURE)
    while at != -1:
        if at + _END.size <= len(tail):
            (comment,) = struct.unpack_from("<H", tail, at + 20)
            if at + _END.size + comment <= len(tail):
                return at
        at = tail.rfind(_END_SIGNATURE, 0, at)
    return None


#: The fixed part of a central directory entry, as numpy reads all of them at once.
_CENTRAL_FIELDS = np.dtype([
    ("signature", "S4"), ("made_by", "<u2"), ("needed", "<u2"), ("flags", "<u2"), ("method", "<u2"),
    ("time", "<u2"), ("date", "<u2"), ("crc", "<u4"), ("compressed", "<u4"), ("size", "<u4"),
    ("name_length", "<u2"), ("extra_length", "<u2"), ("comment_length", "<u2"), ("disk", "<u2"),
    ("internal", "<u2"), ("external", "<u4"), ("offset", "<u4"),
])  # fmt: skip
_ENTRY_LENGTHS = struct.Struct("<4s24xHHH")


def _parse_central(central: bytes, entries: int, concat: int, data_end: int, label: str) -> Directory:
    """The file members of a central directory, as a table and a tree of names.

    Numpy reads the fixed fields of every entry at once, so a 28,000-member directory parses in
    milliseconds; the names are decoded and sorted into the tree in bulk (:func:`_name_tree`).
    """
    starts = _entry_starts(central, label)
    if len(starts) != entries:
        raise ScanError(label, f"not a readable zip archive (the directory lists {len(starts)} entries, its end record {entries})")
    entry_size = _CENTRAL.size
    raw = np.frombuffer(central, dtype=np.uint8)
    fields = raw[starts[:, None] + np.arange(entry_size)].view(_CENTRAL_FIELDS).ravel()
    if len(fields) and int(fields["needed"].max()) > MAX_EXTRACT_VERSION:
        needed = int(fields["needed"].max())
        raise ScanError(label, f"not a readable zip archive (an entry needs zip version {needed / 10:.1f}, more than 6.3)")
    sizes, compressed, offsets = (fields[name].astype(np.int64) for name in ("size", "compressed", "offset"))
    name_lengths = fields["name_length"].astype(np.int64)
    name_starts = (starts + entry_size).tolist()
    try:
        for row in np.flatnonzero(fields["extra_length"]).tolist():
            name_end = name_starts[row] + int(name_lengths[row])
            extra = central[name_end : name_end + int(fields["extra_length"][row])]
            _check_extra(extra)
            if 0xFFFFFFFF in (sizes[row], compressed[row], offsets[row]):
                sizes[row], compressed[row], offsets[row] = _zip64_sizes(extra, int(sizes[row]), int(compressed[row]), int(offsets[row]))
        if np.any(((sizes == 0xFFFFFFFF) | (compressed == 0xFFFFFFFF) | (offsets == 0xFFFFFFFF)) & (fields["extra_length"] == 0)):
            raise struct.error("a zip64 member without its zip64 extra field")
        raw_names = [central[start : start + length] for start, length in zip(name_starts, name_lengths.tolist())]
        last = np.asarray(name_starts, dtype=np.int64) + name_lengths - 1
        folder_entries = (name_lengths > 0) & (raw[np.maximum(last, 0)] == ord("/")) if len(raw) else np.zeros(0, dtype=bool)
        tree, kept, name_crcs = _name_tree(raw_names, fields["flags"], folder_entries)
    except (struct.error, UnicodeDecodeError) as error:
        raise ScanError(label, f"not a readable zip archive ({error})") from error
    table = MemberTable(
        offsets=offsets[kept] + concat,
        compressed=compressed[kept],
        sizes=sizes[kept],
        methods=fields["method"][kept].astype(np.int16),
        flags=fields["flags"][kept].astype(np.uint16),
        name_lengths=name_lengths[kept].astype(np.int32),
        name_crcs=name_crcs,
        crcs=fields["crc"][kept].astype(np.uint32),
    )
    return Directory(table, tree, data_end)


def _entry_starts(central: bytes, label: str) -> np.ndarray:
    """Where each entry of a central directory starts.

    The entries' signatures are found all at once and accepted if each entry's lengths lead exactly
    to the next one and the last to the end; otherwise (a signature inside a name or comment) the
    entries are walked one by one.
    """
    entry_size = _CENTRAL.size
    raw = np.frombuffer(central, dtype=np.uint8)
    candidates = np.flatnonzero(raw[: max(0, len(raw) - entry_size + 1)] == _CENTRAL_SIGNATURE[0])
    for at, byte in enumerate(_CENTRAL_SIGNATURE[1:], 1):
        candidates = candidates[raw[candidates + at] == byte]
    if len(candidates) and candidates[0] == 0:
        lengths = raw[candidates[:, None] + np.arange(28, 34)].copy().view("<u2").astype(np.int64)
        following = candidates + entry_size + lengths.sum(axis=1)
        if np.array_equal(following[:-1], candidates[1:]) and following[-1] == len(central):
            return candidates
    starts: list[int] = []
    unpack, at, total = _ENTRY_LENGTHS.unpack_from, 0, len(central)
    while at + entry_size <= total:
        signature, name_length, extra_length, comment_length = unpack(central, at)
        if signature != _CENTRAL_SIGNATURE:
            break
        starts.append(at)
        at += entry_size + name_length + extra_length + comment_length
    if at != total:
        problem = "an entry runs past its end" if at > total else f"{total - at} bytes after its last entry are no entry"
        raise ScanError(label, f"not a readable zip archive (the central directory is corrupt: {problem})")
    return np.asarray(starts, dtype=np.int64)


#: The tree of names, the rows of the file members (directory entries left out), and their names' CRC-32s.
NameTree = tuple[dict[str, dict[str, int]], np.ndarray, np.ndarray]


def _name_tree(raw_names: list[bytes], flags: np.ndarray, folder_entries: np.ndarray) -> NameTree:
    """The members' names sorted into ``{folder: {file name: row of the file members}}`` (see :class:`Directory`).

    ``folder_entries`` says which names end in ``/``. Plain ASCII names without line breaks or archive
    clutter (every release archive's) are decoded, split and grouped in bulk: one decode of all names
    joined, a folder's files added to its dict in one call, the clutter looked for once in the
    folders and once in the files. Any other directory is read name by name
    (:func:`_name_tree_by_row`), with the same result.
    """
    joined = b"\n".join(raw_names)
    if not (joined.isascii() and joined.count(b"\n") == max(0, len(raw_names) - 1)):
        return _name_tree_by_row(_decode_names(raw_names, flags), raw_names)
    names = joined.decode("ascii").split("\n") if raw_names else []
    keep = np.flatnonzero(~folder_entries)
    entries = np.flatnonzero(folder_entries).tolist()
    files_named, kept_raw = names, raw_names
    if entries:
        files_named, kept_raw = names.copy(), raw_names.copy()
        for row in reversed(entries):
            del files_named[row], kept_raw[row]
    cuts = [name.rfind("/") for name in files_named]  # ints and strings only: nothing for the garbage collector to track
    folders = [name[:cut] if cut > 0 else "" for name, cut in zip(files_named, cuts)]
    files = [name[cut + 1 :] for name, cut in zip(files_named, cuts)]
    starts = [0, *itertools.compress(itertools.count(1), map(operator.ne, folders[1:], folders))] if folders else []
    if may_be_ignored("\n".join(folders[start] for start in starts)) or may_be_ignored("\n".join(files)) or any(
        may_be_ignored(names[row]) for row in entries
    ):  # a clutter name never spans a "/": it shows in a folder or in a file name
        return _name_tree_by_row(names, raw_names)
    # a folder entry ``x.npy/`` comes into the tree where the name-by-name reading puts it: after the files before it
    before = np.searchsorted(keep, np.asarray(entries, dtype=np.int64)).tolist()
    pending = [(at, names[row][:-1]) for at, row in zip(before, entries) if names[row].endswith(".npy/")][::-1]
    tree: dict[str, dict[str, int]] = {}
    for start, end in zip(starts, [*starts[1:], len(folders)]):
        while pending and pending[-1][0] <= start:
            tree.setdefault(pending.pop()[1], {})
        members = tree.get(folders[start])
        if members is None:
            members = tree[folders[start]] = {}
        members.update(zip(files[start:end], range(start, end)))  # a repeated name: the later member, as zipfile
    for _, folder in pending[::-1]:
        tree.setdefault(folder, {})
    crcs = np.fromiter(map(zlib.crc32, kept_raw), dtype=np.uint32, count=len(kept_raw))
    return tree, keep, crcs


def _name_tree_by_row(names: list[str], raw_names: list[bytes]) -> NameTree:
    """:func:`_name_tree` one name at a time, archive clutter left out of the tree (but kept in the table)."""
    tree: dict[str, dict[str, int]] = {}
    keep, name_crcs = [], []
    crc, files, folder_of_files = zlib.crc32, None, None
    for row, name in enumerate(names):
        if name.endswith("/"):
            if name.endswith(".npy/") and not is_ignored(name):
                tree.setdefault(name[:-1], {})
            continue
        if not is_ignored(name):
            folder, _, file = name.rpartition("/")
            if folder != folder_of_files:  # members of one folder come together: one lookup per folder
                files = tree.get(folder)
                if files is None:
                    files = tree[folder] = {}
                folder_of_files = folder
            files[file] = len(keep)  # type: ignore[index]
        keep.append(row)
        name_crcs.append(crc(raw_names[row]))
    return tree, np.asarray(keep, dtype=np.int64), np.asarray(name_crcs, dtype=np.uint32)


def _decode_names(raw_names: list[bytes], flags: np.ndarray) -> list[str]:
    """Every member's name (see :func:`_decode_name`)."""
    utf8 = (flags & _UTF8).tolist()
    return [_decode_name(raw, flag) for raw, flag in zip(raw_names, utf8)]


def _decode_name(raw: bytes, utf8: int) -> str:
    """A member's name: UTF-8 where its flag says so, else code page 437 (plain ASCII either way, nearly always)."""
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        return raw.decode("utf-8" if utf8 else "cp437")


def _check_extra(extra: bytes) -> None:
    """Refuse an extra field whose records run past its end (as :mod:`zipfile` does)."""
    at = 0
    while at + 4 <= len(extra):
        kind, length = struct.unpack_from("<HH", extra, at)
        if at + 4 + length > len(extra):
            raise struct.error(f"corrupt extra field {kind:04x} (size={length})")
        at += 4 + length


def _zip64_sizes(extra: bytes, size: int, packed: int, offset: int) -> tuple[int, int, int]:
    """Sizes and offset from a zip64 extra field, for those the 32-bit fields mark as 0xFFFFFFFF."""
    at = 0
    while at + 4 <= len(extra):
        kind, length = struct.unpack_from("<HH", extra, at)
        if kind == 0x0001:
            values = iter(struct.unpack_from(f"<{length // 8}Q", extra, at + 4))
            if size == 0xFFFFFFFF:
                size = next(values)
            if packed == 0xFFFFFFFF:
                packed = next(values)
            if offset == 0xFFFFFFFF:
                offset = next(values)
            return size, packed, offset
        at += 4 + length
    raise struct.error("a zip64 member without its zip64 extra field")


def data_offset(header: bytes | memoryview, table: MemberTable, row: int, label: str) -> int:
    """Where member ``row``'s data starts, counted from its local header; ``header`` holds the header and the name.

    The local header must carry the name the central directory gives, so an entry cannot point at another member.
    """
    return check_local_header(header, int(table.name_lengths[row]), int(table.name_crcs[row]), label)


def check_local_header(header: bytes | memoryview, name_length: int, name_crc: int, label: str) -> int:
    """:func:`data_offset` of a member whose name has ``name_length`` bytes and the CRC-32 ``name_crc``."""
    if len(header) < LOCAL_HEADER.size:
        raise ScanError(label, "corrupt zip: the archive ends inside a member's local header")
    signature, length, extra_length = LOCAL_HEADER.unpack_from(header)
    if signature != LOCAL_SIGNATURE:
        raise ScanError(label, "corrupt zip: no local header where the central directory points")
    name = header[LOCAL_HEADER.size : LOCAL_HEADER.size + length]
    if length != name_length or zlib.crc32(name) != name_crc:
        found = bytes(name).decode("utf-8", "replace")
        raise ScanError(label, f"corrupt zip: the local header names {found!r}, not the member the central directory lists")
    return LOCAL_HEADER.size + length + extra_length


def header_span(table: MemberTable, row: int) -> int:
    """Bytes of member ``row``'s local header and name (what :func:`data_offset` needs)."""
    return LOCAL_HEADER.size + int(table.name_lengths[row])


def verify_crc(found: int, table: MemberTable, row: int, label: str) -> None:
    """Refuse a member whose bytes do not have the CRC-32 the directory records."""
    check_crc(found, int(table.crcs[row]), label)


def check_crc(found: int, expected: int, label: str) -> None:
    """Refuse a member whose bytes have the CRC-32 ``found``, not the directory's ``expected``."""
    if found != expected:
        raise ScanError(label, f"corrupt zip member: CRC-32 {found:08x}, the directory records {expected:08x}")


def inflate(raw: bytes | bytearray | memoryview, table: MemberTable, row: int, label: str) -> bytes | bytearray | memoryview:
    """The verified bytes of member ``row`` from its compressed data: never more than its declared size, CRC checked."""
    method, size = int(table.methods[row]), int(table.sizes[row])
    if method == zipfile.ZIP_STORED:
        data: bytes | bytearray | memoryview = raw
    elif method == zipfile.ZIP_DEFLATED:
        try:
            data = deflate.deflate_decompress(raw, size)  # libdeflate fails rather than write past ``size``
        except deflate.DeflateError as error:
            raise ScanError(label, f"corrupt zip member: the deflate stream does not inflate to {size} bytes ({error})") from error
    else:
        data = _inflate_other(raw, method, size + 1, label)  # one more, to see if it runs on
    if len(data) != size:
        raise ScanError(label, f"corrupt zip member: {len(data)} bytes, the directory declares {size}")
    verify_crc(crc32([data]), table, row, label)
    return data


class _LibDeflate:
    """libdeflate's decompressor, called through ctypes (which releases the GIL for the call).

    The ``deflate`` package's extension is libdeflate built in: its C functions are bound here so a
    member inflates into memory the caller chose. Each thread has a decompressor of its own (they
    are not shared), freed with the thread, and a buffer it reuses for the compressed bytes it reads.
    """

    _ERRORS = {1: "bad data", 2: "it ends early", 3: "it runs on past that"}

    def __init__(self, library: ctypes.CDLL) -> None:
        pointer, size = ctypes.c_void_p, ctypes.c_size_t
        self._alloc = library.libdeflate_alloc_decompressor
        self._alloc.argtypes, self._alloc.restype = [], pointer
        self._free = library.libdeflate_free_decompressor
        self._free.argtypes, self._free.restype = [pointer], None
        self._decompress = library.libdeflate_deflate_decompress_ex
        self._decompress.argtypes = [pointer, pointer, size, pointer, size, pointer, pointer]
        self._decompress.restype = ctypes.c_int
        self._local = threading.local()

    @classmethod
    def bind(cls) -> _LibDeflate | None:
        """The binding, or None where the ``deflate`` package's extension does not export libdeflate's functions."""
        path = getattr(getattr(deflate, "_deflate", None), "__file__", None)
        try:
            binding = cls(ctypes.CDLL(path)) if path else None
            if binding is not None:  # a stream inflated now, so a build whose functions differ falls back here
                probe, out = b"neuroxr" * 64, bytearray(448)
                binding.inflate(deflate.deflate_compress(probe, 6), memoryview(out), len(out), "a probe")
                del binding._local.state
                if out != probe:
                    return None
            return binding
        except (OSError, AttributeError, MemoryError, ScanError):
            return None

    def thread(self) -> _ThreadState:
        """This thread's decompressor and scratch buffers, made on its first call."""
        state = getattr(self._local, "state", None)
        if state is None:
            state = self._local.state = _ThreadState(self._alloc, self._free)
        return state

    def inflate(self, raw: bytes | bytearray | memoryview, out: memoryview, size: int, label: str) -> None:
        """Inflate the whole deflate stream ``raw`` into ``out``, which must receive exactly ``size`` bytes."""
        state = self.thread()
        source = memoryview(raw)
        written = state.written
        code = self._decompress(state.handle, _address(source), source.nbytes, _address(out), size, None, ctypes.byref(written))
        if code:
            problem = self._ERRORS.get(code, f"libdeflate error {code}")
            raise ScanError(label, f"corrupt zip member: the deflate stream does not inflate to {size} bytes ({problem})")
        if written.value != size:
            raise ScanError(label, f"corrupt zip member: {written.value} bytes, the directory declares {size}")


#: Bytes of buffer a thread keeps for reuse (members of more compressed bytes get buffers of their own).
SCRATCH_KEPT = 4 * 2**20


class _ThreadState:
    """One thread's libdeflate decompressor (freed when the thread's state goes) and its buffer for compressed bytes."""

    def __init__(self, alloc: Any, free: Any) -> None:
        self.handle = alloc()
        if not self.handle:
            raise MemoryError("libdeflate could not allocate a decompressor")
        self._free = free
        self.written = ctypes.c_size_t()
        self._buffer = np.empty(1, dtype=np.uint8)

    def input(self, size: int) -> memoryview:
        """A buffer of ``size`` bytes to read compressed bytes into, reused up to :data:`SCRATCH_KEPT` bytes."""
        if size > len(self._buffer):
            if size > SCRATCH_KEPT:  # a video's member: a buffer of its own, not kept by the thread
                return memoryview(np.empty(size, dtype=np.uint8))
            self._buffer = np.empty(min(max(size, 2 * len(self._buffer)), SCRATCH_KEPT), dtype=np.uint8)
        return memoryview(self._buffer)[:size]

    def __del__(self) -> None:
        if self.handle:
            self._free(self.handle)
            self.handle = None


_NOTHING = np.zeros(1, dtype=np.uint8)  # what an empty buffer points at


def _address(view: memoryview) -> int:
    """Where the bytes of ``view`` (one contiguous piece) start in memory."""
    if not view.nbytes:
        return _NOTHING.ctypes.data
    if not view.readonly:
        return ctypes.addressof(ctypes.c_char.from_buffer(view))
    return int(np.frombuffer(view, dtype=np.uint8).ctypes.data)


_LIBDEFLATE = _LibDeflate.bind()
#: How deflated members read whole into one buffer are inflated: ``"libdeflate-ctypes"`` (libdeflate's C
#: functions, from the ``deflate`` package's extension, straight into the buffer) or, with a build of the
#: package that does not export them, ``"deflate-package"`` (``deflate.deflate_decompress``, then a copy).
#: Members placed in several buffers (a trial block's header and payload) take ``deflate.deflate_decompress``
#: and a copy either way: its call costs less than a ctypes call and the ``bytearray`` it makes.
INFLATER = "libdeflate-ctypes" if _LIBDEFLATE is not None else "deflate-package"


def read_buffer(size: int) -> memoryview | None:
    """A buffer of ``size`` bytes this thread reuses, to read a member's compressed bytes into (None without the binding).

    Valid until the thread's next call; :func:`inflate_into` never inflates into it.
    """
    return _LIBDEFLATE.thread().input(size) if _LIBDEFLATE is not None else None


def _inflate_other(raw: bytes | bytearray | memoryview, method: int, most: int, label: str) -> bytes:
    """A bzip2 or lzma member (or a prefix of its compressed bytes), inflated to at most ``most`` bytes."""
    try:
        if method == zipfile.ZIP_BZIP2:
            decompressor: Any = bz2.BZ2Decompressor()
            stream = bytes(raw)
        else:  # zip's lzma: a version, the properties' length, the LZMA1 properties, then the raw stream
            (properties_length,) = struct.unpack_from("<H", raw, 2)
            properties = bytes(raw[4 : 4 + properties_length])
            if len(properties) < 5:
                raise ValueError("the lzma properties are cut short")
            lc_lp_pb, dictionary = properties[0], struct.unpack_from("<I", properties, 1)[0]
            pb, rest = divmod(lc_lp_pb, 45)
            lp, lc = divmod(rest, 9)
            filters = [{"id": lzma.FILTER_LZMA1, "lc": lc, "lp": lp, "pb": pb, "dict_size": dictionary}]
            decompressor = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=filters)
            stream = bytes(raw[4 + properties_length :])
        return decompressor.decompress(stream, max_length=most)
    except (OSError, EOFError, ValueError, lzma.LZMAError, struct.error, MemoryError) as error:
        raise ScanError(label, f"corrupt zip member ({error})") from error


#: Compressed bytes read first for a member's leading bytes, beyond twice their number (deflate spends at
#: most 15 bits on a literal; a dynamic block's code tables take a few hundred bytes).
HEAD_SLACK = 1024


def compressed_prefix(table: MemberTable, row: int, wanted: int) -> int:
    """The compressed bytes of member ``row`` to read for its leading ``wanted`` bytes: all of them for a member
    read whole (or bzip2, which decodes whole blocks), else a bounded prefix (:func:`inflate_into` says if it
    fell short).

    >>> table = MemberTable(*(np.array([value]) for value in (0, 90_000, 100_000, zipfile.ZIP_DEFLATED, 0, 9, 0, 0)))
    >>> compressed_prefix(table, 0, 256), compressed_prefix(table, 0, 100_000)
    (1536, 90000)
    """
    packed, method = int(table.compressed[row]), int(table.methods[row])
    if wanted >= int(table.sizes[row]) or method == zipfile.ZIP_BZIP2:
        return packed
    if method == zipfile.ZIP_STORED:
        return min(packed, wanted)
    return min(packed, 2 * wanted + HEAD_SLACK)


def _inflate_head(raw: bytes | bytearray | memoryview, method: int, wanted: int, label: str) -> bytes | bytearray | memoryview:
    """The leading ``wanted`` bytes (or fewer) that ``raw``, the start of a member's compressed bytes, inflates to."""
    if method == zipfile.ZIP_STORED:
        return raw[:wanted]
    if method == zipfile.ZIP_DEFLATED:
        try:
            return zlib.decompressobj(-15).decompress(raw, wanted)  # libdeflate inflates whole streams only
        except zlib.error as error:
            raise ScanError(label, f"corrupt zip member: the deflate stream does not inflate ({error})") from error
    return _inflate_other(raw, method, wanted, label)


def inflate_into(raw: bytes | bytearray | memoryview, table: MemberTable, row: int, buffers: Buffers, label: str) -> int | None:
    """Inflate member ``row`` into ``buffers`` in turn; return its size (see ``NumberedFiles.read_into``).

    A member that fits the buffers is inflated whole from all its compressed bytes ``raw`` and verified
    (see :func:`inflate`). A longer one fills them with its leading bytes, inflated from ``raw``, the
    :func:`compressed_prefix` read of its compressed bytes, as far as they reach and unverified (its
    CRC-32 is checked whenever it is read whole); None if that prefix falls short: read them all and call again.
    """
    size, wanted = int(table.sizes[row]), total_bytes(buffers)
    if wanted >= size:
        first = buffers[0] if buffers else None
        if (_LIBDEFLATE is not None and int(table.methods[row]) == zipfile.ZIP_DEFLATED and first is not None
                and len(first) >= size and not first.readonly and first.contiguous and first.itemsize == 1):  # fmt: skip
            _inflate_deflated(_LIBDEFLATE, raw, table, row, first, label)  # no copy: the member's buffer is one piece
        else:  # a ctypes call costs more than the new bytearray it saves: where the bytes are copied anyway, the package's call
            copy_into(inflate(raw, table, row, label), buffers)
        return size
    head = _inflate_head(raw, int(table.methods[row]), wanted, label)
    if len(head) < wanted:
        if len(raw) < int(table.compressed[row]):
            return None
        raise ScanError(label, f"corrupt zip member: inflates to {len(head)} bytes, the directory declares {size}")
    copy_into(head, buffers)
    return size


def _inflate_deflated(binding: _LibDeflate, raw: bytes | bytearray | memoryview, table: MemberTable, row: int, out: memoryview, label: str) -> None:
    """Inflate deflated member ``row`` whole straight into ``out`` (one writable piece of memory) and verify it."""
    size = int(table.sizes[row])
    binding.inflate(raw, out[:size], size, label)
    verify_crc(deflate.crc32(out[:size]), table, row, label)
