"""The .npy format: parse a header once, recognise identical headers, decode safely.

Knows nothing about Sensorium or xarray. Decoding never unpickles: an array of Python objects is
refused with an error that names the file.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from neuroxr.errors import ScanError

MAGIC = b"\x93NUMPY"
#: Enough bytes to hold the header of any array the release holds (numpy pads headers to 64 bytes).
HEADER_PROBE = 1024


@dataclass(frozen=True)
class NpyHeader:
    """The parsed header of one .npy file, with its raw bytes for fast comparison."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    raw: bytes

    @property
    def length(self) -> int:
        """Bytes before the payload (magic, version, header dict and padding)."""
        return len(self.raw)

    @property
    def payload_bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def file_bytes(self) -> int:
        return self.length + self.payload_bytes


def _refuse_objects(dtype: np.dtype, name: str) -> None:
    if dtype.hasobject:
        raise ScanError(
            name, "holds Python objects (a pickled array); neuroxr never unpickles data"
        )


def parse_header(prefix: bytes, name: str) -> NpyHeader:
    """Parse the header at the start of a .npy file (``prefix`` holds at least the whole header).

    >>> buf = io.BytesIO(); np.save(buf, np.zeros(3, "f4"))
    >>> parse_header(buf.getvalue(), "x.npy").shape
    (3,)
    """
    if not prefix.startswith(MAGIC):
        found = "an empty file" if not prefix else f"bytes {prefix[:6]!r}"
        raise ScanError(name, f"not a .npy file: expected the magic {MAGIC!r}, found {found}")
    stream = io.BytesIO(prefix)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
        else:  # version 3.0 (utf-8 field names): numpy's private reader handles it
            shape, fortran_order, dtype = np.lib.format._read_array_header(stream, version)
    except (ValueError, SyntaxError, EOFError) as error:
        raise ScanError(name, f"corrupt .npy header ({error})") from error
    _refuse_objects(dtype, name)
    return NpyHeader(tuple(shape), np.dtype(dtype), bool(fortran_order), prefix[: stream.tell()])


def load_array(data: bytes, name: str) -> np.ndarray:
    """Decode a whole .npy file held in memory, never unpickling; errors name the file."""
    header = parse_header(data, name)
    if len(data) < header.file_bytes:
        raise ScanError(
            name,
            f"truncated .npy: the header promises {header.file_bytes} bytes "
            f"({header.dtype} {header.shape}), the file has {len(data)}",
        )
    try:
        return np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
    except ValueError as error:
        raise ScanError(name, f"cannot decode .npy ({error})") from error


def header_bytes(dtype: np.dtype | str, shape: tuple[int, ...]) -> bytes:
    """The header ``np.save`` writes for an array of this dtype and shape (magic, version, dict).

    >>> header_bytes("<f4", (3,))[:6]
    b'\\x93NUMPY'
    """
    dtype = np.dtype(dtype)
    data = file_bytes(np.zeros(shape, dtype=dtype))
    return data[: len(data) - dtype.itemsize * int(np.prod(shape, dtype=np.int64))]


def file_bytes(array: np.ndarray) -> bytes:
    """The bytes of ``np.save(file, array)``."""
    stream = io.BytesIO()
    np.save(stream, array, allow_pickle=False)
    return stream.getvalue()
