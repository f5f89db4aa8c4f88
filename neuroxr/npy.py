"""The .npy format: parse a header once, recognise identical headers, decode safely.

Knows nothing about Sensorium or xarray. Decoding never unpickles: an array of Python objects is
refused with an error that names the file. Headers of format 1.0, 2.0 and 3.0 are read up to
numpy's own limit on their length (:data:`MAX_HEADER_TEXT`); every size is checked before anything
is allocated, so a header that claims an absurd shape is an error, never an attempt to allocate it.
"""

from __future__ import annotations

import ast
import io
import math
import struct
import tokenize
from dataclasses import dataclass

import numpy as np

from neuroxr.errors import ScanError

MAGIC = b"\x93NUMPY"
#: numpy's limit on the length of the header text (``np.load``'s ``max_header_size`` default).
MAX_HEADER_TEXT = 10_000
#: Bytes that hold the longest header numpy reads: magic and version, a 4-byte length, the text.
HEADER_PROBE = len(MAGIC) + 2 + 4 + 4 * MAX_HEADER_TEXT  # utf-8 (format 3.0) takes up to 4 bytes a character
_LENGTH_FIELDS = {(1, 0): ("<H", "latin1"), (2, 0): ("<I", "latin1"), (3, 0): ("<I", "utf8")}


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
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def file_bytes(self) -> int:
        return self.length + self.payload_bytes

    def describe(self) -> str:
        """``float32 (8000,)``: the dtype and shape, as messages show them."""
        return f"{self.dtype} {self.shape}"


def _refuse_objects(dtype: np.dtype, name: str) -> None:
    if dtype.hasobject:
        raise ScanError(
            name, "holds Python objects (a pickled array); neuroxr never unpickles data"
        )


def parse_header(prefix: bytes | memoryview, name: str) -> NpyHeader:
    """Parse the header at the start of a .npy file (``prefix`` holds at least the whole header).

    Reads what ``np.load`` reads (format 1.0, 2.0 and 3.0, headers up to numpy's length limit) and
    refuses, naming the file, whatever it would refuse, plus pickled arrays and negative sizes.

    >>> buf = io.BytesIO(); np.save(buf, np.zeros(3, "f4"))
    >>> parse_header(buf.getvalue(), "x.npy").shape
    (3,)
    """
    prefix = bytes(prefix[:HEADER_PROBE])
    if not prefix.startswith(MAGIC):
        found = "an empty file" if not prefix else f"bytes {prefix[:6]!r}"
        raise ScanError(name, f"not a .npy file: expected the magic {MAGIC!r}, found {found}")
    try:
        shape, fortran_order, dtype, end = _read_header(prefix)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, SyntaxError, MemoryError, RecursionError,
            UnicodeDecodeError, struct.error) as error:
        raise ScanError(name, f"corrupt .npy header ({_first_line(error)})") from error
    _refuse_objects(dtype, name)
    if any(size < 0 for size in shape):
        raise ScanError(name, f"corrupt .npy header: negative size in shape {shape}")
    return NpyHeader(shape, dtype, fortran_order, prefix[:end])


def declared_length(prefix: bytes | memoryview) -> int | None:
    """The bytes before the payload that the start of a .npy file declares; None if ``prefix`` is too short to say.

    >>> declared_length(header_bytes("<f4", (3,)))
    128
    """
    prefix = bytes(prefix[:12])
    length_type = _LENGTH_FIELDS.get((prefix[6], prefix[7]), ("<I",))[0] if len(prefix) >= 8 else None
    if length_type is None or len(prefix) < 8 + struct.calcsize(length_type):
        return None
    return 8 + struct.calcsize(length_type) + struct.unpack_from(length_type, prefix, 8)[0]


def _read_header(prefix: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """``(shape, fortran_order, dtype, header length)``, checked as numpy's ``_read_array_header`` checks them."""
    if len(prefix) < len(MAGIC) + 2:
        raise ValueError("the file ends inside the format version")
    version = (prefix[6], prefix[7])
    if version not in _LENGTH_FIELDS:
        raise ValueError(f"format version {version[0]}.{version[1]} is not one numpy reads (1.0, 2.0, 3.0)")
    length_type, encoding = _LENGTH_FIELDS[version]
    start = len(MAGIC) + 2 + struct.calcsize(length_type)
    if len(prefix) < start:
        raise ValueError("the file ends inside the header length")
    (length,) = struct.unpack_from(length_type, prefix, len(MAGIC) + 2)
    if length > len(prefix) - start:
        if length > HEADER_PROBE:
            raise ValueError(f"a header of {length} bytes is longer than numpy reads ({MAX_HEADER_TEXT} characters)")
        raise ValueError(f"the header is cut short: {len(prefix) - start} of {length} bytes")
    text = prefix[start : start + length].decode(encoding)
    if len(text) > MAX_HEADER_TEXT:
        raise ValueError(f"a header of {len(text)} characters is longer than numpy reads ({MAX_HEADER_TEXT})")
    try:
        header = ast.literal_eval(text)
    except SyntaxError:
        if version == (3, 0):
            raise
        header = ast.literal_eval(_python2_header(text))  # numpy repairs these headers the same way
    if not isinstance(header, dict) or header.keys() != {"descr", "fortran_order", "shape"}:
        raise ValueError(f"expected a dict of descr, fortran_order and shape, found {_short(header)}")
    shape, fortran_order = header["shape"], header["fortran_order"]
    if not isinstance(shape, tuple) or not all(isinstance(size, int) for size in shape):
        raise ValueError(f"shape is not valid: {_short(shape)}")
    if not isinstance(fortran_order, bool):
        raise ValueError(f"fortran_order is not a valid bool: {_short(fortran_order)}")
    return tuple(int(size) for size in shape), fortran_order, np.lib.format.descr_to_dtype(header["descr"]), start + length


def _python2_header(text: str) -> str:
    """A header written by Python 2, its long integers (``3L``) made plain, as numpy's ``_filter_header`` does."""
    tokens, after_number = [], False
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if not (after_number and token.type == tokenize.NAME and token.string == "L"):
                tokens.append(token)
            after_number = token.type == tokenize.NUMBER
    except tokenize.TokenError as error:
        raise SyntaxError(str(error)) from error
    return tokenize.untokenize(tokens)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def load_array(data: bytes | bytearray | memoryview, name: str) -> np.ndarray:
    """Decode a whole .npy file held in memory, never unpickling; errors name the file.

    The file must hold exactly what its header promises (no less, no trailing bytes). A file held
    in a ``bytearray`` (as sources read them) is decoded in place, without a copy.
    """
    header = parse_header(data, name)
    check_size(header, len(data), name)
    payload = memoryview(data)[header.length : header.file_bytes]
    order = "F" if header.fortran_order else "C"
    if header.dtype.itemsize == 0:
        return np.empty(header.shape, header.dtype, order=order)
    try:
        flat = np.frombuffer(payload, dtype=header.dtype)
        if flat.size and not flat.flags.writeable:  # held in bytes: copied into an array of its own
            flat = flat.copy()
    except ValueError as error:
        raise ScanError(name, f"cannot decode .npy ({_first_line(error)})") from error
    return flat.reshape(header.shape, order=order)


def check_size(header: NpyHeader, size: int, name: str) -> None:
    """Refuse a file of ``size`` bytes that does not hold exactly what ``header`` promises."""
    if size != header.file_bytes:
        problem = "truncated" if size < header.file_bytes else "has trailing bytes"
        raise ScanError(
            name, f"{problem}: {size} bytes, the header promises {header.file_bytes} ({header.describe()})"
        )


def header_bytes(dtype: np.dtype | str, shape: tuple[int, ...]) -> bytes:
    """The header ``np.save`` writes for an array of this dtype and shape (magic, version, dict).

    >>> header_bytes("<f4", (3,))[:6]
    b'\\x93NUMPY'
    """
    dtype = np.dtype(dtype)
    data = file_bytes(np.zeros(shape, dtype=dtype))
    return data[: len(data) - dtype.itemsize * math.prod(shape)]


def file_bytes(array: np.ndarray) -> bytes:
    """The bytes of ``np.save(file, array)``."""
    stream = io.BytesIO()
    np.save(stream, array, allow_pickle=False)
    return stream.getvalue()
