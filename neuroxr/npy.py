"""The .npy format: parse a header once, recognise identical headers, decode safely.

Knows nothing about Sensorium or xarray. Decoding never unpickles: an array of Python objects is
refused with an error that names the file.
"""

from __future__ import annotations

import ast
import io
import struct
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
        elif version == (3, 0):
            shape, fortran_order, dtype = _read_header_3_0(stream)
        else:
            raise ValueError(f"format version {version[0]}.{version[1]} is not one numpy writes (1.0, 2.0, 3.0)")
    except (ValueError, TypeError, SyntaxError, EOFError, struct.error) as error:
        raise ScanError(name, f"corrupt .npy header ({error})") from error
    _refuse_objects(dtype, name)
    return NpyHeader(tuple(shape), np.dtype(dtype), bool(fortran_order), prefix[: stream.tell()])


def _read_header_3_0(stream: io.BytesIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    """A version 3.0 header (numpy has no public reader of it): 2.0's layout, the dict encoded in utf-8."""
    (length,) = struct.unpack("<I", stream.read(4))
    text = stream.read(length)
    if len(text) != length:
        raise EOFError(f"the header is cut short: {len(text)} of {length} bytes")
    header = ast.literal_eval(text.decode("utf-8"))
    if not isinstance(header, dict) or header.keys() != {"descr", "fortran_order", "shape"}:
        raise ValueError(f"expected a dict of descr, fortran_order and shape, found {header!r}")
    shape, fortran_order = header["shape"], header["fortran_order"]
    if not isinstance(shape, tuple) or not all(isinstance(size, int) for size in shape) or not isinstance(fortran_order, bool):
        raise ValueError(f"invalid shape or fortran_order: {header!r}")
    return shape, fortran_order, np.lib.format.descr_to_dtype(header["descr"])


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
