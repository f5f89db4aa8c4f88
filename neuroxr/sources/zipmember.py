"""Zip members read in place: the one parser of local headers and the one decompressor, for local and remote archives.

The central directory is read with :mod:`zipfile`; what it says about some numbered members is kept
in a :class:`MemberTable` of numpy arrays (small to pickle). Reading a member then needs its local
header (30 bytes, plus the name and extra field whose length only the local header tells) and its
compressed bytes: a local archive reads them with ``pread``, a remote one fetches them with range
requests, and both hand them to :func:`data_offset` and :func:`decompress` here.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, BinaryIO

import numpy as np

from neuroxr.errors import ScanError

LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., name length, extra length
LOCAL_SIGNATURE = b"PK\x03\x04"
#: Compression methods read here; others are refused with an error naming the member.
METHODS = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflated",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}
_ENCRYPTED = 0x1


@dataclass(frozen=True)
class MemberTable:
    """What the central directory says of some members, row by row (numpy arrays: small to pickle)."""

    offsets: np.ndarray  #: int64, the local header's position in the archive
    compressed: np.ndarray  #: int64, bytes of compressed data
    sizes: np.ndarray  #: int64, bytes once decompressed
    methods: np.ndarray  #: int16, compression method
    name_lengths: np.ndarray  #: int32, bytes of the member's name (as stored)
    crcs: np.ndarray  #: uint32, CRC-32 of the decompressed bytes

    @classmethod
    def of(cls, infos: Sequence[zipfile.ZipInfo], label: str) -> MemberTable:
        """The table of ``infos``; encrypted members and unknown methods are refused here, at open."""
        for info in infos:
            where = f"{label}::{info.filename}"
            if info.flag_bits & _ENCRYPTED:
                raise ScanError(where, "encrypted zip members are not supported")
            if info.compress_type not in METHODS:
                raise ScanError(
                    where, f"zip compression method {info.compress_type} is not supported (expected one of "
                    f"{', '.join(METHODS.values())})",
                )
        return cls(
            offsets=np.array([info.header_offset for info in infos], dtype=np.int64),
            compressed=np.array([info.compress_size for info in infos], dtype=np.int64),
            sizes=np.array([info.file_size for info in infos], dtype=np.int64),
            methods=np.array([info.compress_type for info in infos], dtype=np.int16),
            name_lengths=np.array([len(info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437"))
                                   for info in infos], dtype=np.int32),  # fmt: skip
            crcs=np.array([info.CRC for info in infos], dtype=np.uint32),
        )

    def __len__(self) -> int:
        return len(self.offsets)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as one compressed buffer: numbered members' offsets and sizes are regular, so a 7,000-member
        table goes to workers in tens of kilobytes instead of a quarter of a megabyte."""
        columns = [getattr(self, field.name) for field in fields(self)]
        packed = zlib.compress(b"".join(column.tobytes() for column in columns), 1)
        return (_unpack_table, (packed, len(self), tuple(column.dtype.str for column in columns)))


def _unpack_table(packed: bytes, rows: int, dtypes: tuple[str, ...]) -> MemberTable:
    """The :class:`MemberTable` that :meth:`MemberTable.__reduce__` packed."""
    buffer = zlib.decompress(packed)
    columns, start = [], 0
    for dtype in map(np.dtype, dtypes):
        columns.append(np.frombuffer(buffer, dtype, rows, start))
        start += rows * dtype.itemsize
    return MemberTable(*columns)


def member_template(prefix: str, directory: str, suffix: str) -> str:
    """``prefix + directory/{}suffix`` for ``str.format``, any braces of the names escaped.

    >>> member_template("scan{1}/", "data/x", ".npy").format(7)
    'scan{1}/data/x/7.npy'
    """
    escape = lambda text: text.replace("{", "{{").replace("}", "}}")  # noqa: E731
    return f"{escape(prefix)}{escape(directory)}/{{}}{escape(suffix)}"


def read_directory(file: str | BinaryIO, label: str) -> list[zipfile.ZipInfo]:
    """The central directory of an archive (a path or an open binary file), as ``ZipInfo`` rows."""
    try:
        with zipfile.ZipFile(file) as archive:
            return archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError) as error:
        raise ScanError(label, f"not a readable zip archive ({error})") from error


def data_offset(header: bytes, label: str) -> int:
    """Where a member's data starts, counted from its local header (whose first bytes are ``header``)."""
    if len(header) < LOCAL_HEADER.size:
        raise ScanError(label, "corrupt zip: the archive ends inside a member's local header")
    signature, name_length, extra_length = LOCAL_HEADER.unpack_from(header)
    if signature != LOCAL_SIGNATURE:
        raise ScanError(label, "corrupt zip: no local header where the central directory points")
    return LOCAL_HEADER.size + name_length + extra_length


def decompress(raw: bytes | memoryview, method: int, size: int, crc: int, label: str) -> bytes:
    """The bytes of a member from its compressed data (stored members pass through)."""
    if method == zipfile.ZIP_STORED:
        return bytes(raw)
    if method == zipfile.ZIP_DEFLATED:
        try:
            return zlib.decompress(raw, -15, size or zlib.DEF_BUF_SIZE)
        except zlib.error as error:
            raise ScanError(label, f"corrupt zip member ({error})") from error
    # bzip2 and lzma members are rare: let zipfile's own decompressors read them.
    info = zipfile.ZipInfo("member")
    info.compress_type, info.compress_size, info.file_size, info.CRC = method, len(raw), size, crc
    try:
        with zipfile.ZipExtFile(io.BytesIO(raw), "r", info) as member:
            return member.read()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise ScanError(label, f"corrupt zip member ({error})") from error
