"""The full check of a scan (``neuroxr validate``): the header and size of every trial file."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from neuroxr.errors import ScanError
from neuroxr.layout import ScanLayout
from neuroxr.npy import HEADER_PROBE, parse_header



def check_files(layout: ScanLayout, progress: Callable[[int], None] | None = None) -> Iterator[str]:
    """Read the header and size of every trial file; yield one message per problem, the file named first.

    ``progress`` is called with 1 after each file.
    """
    for variable in layout.variables.values():
        expected = variable.header
        buffer = bytearray(HEADER_PROBE)
        for number in range(layout.n_trials):
            label = variable.files.label(number)
            try:
                got = variable.files.read_into([number], [[memoryview(buffer)]])[0]
                prefix = bytes(buffer[:got])
                header = expected if prefix.startswith(expected.raw) else parse_header(prefix, label)
                if header.shape != expected.shape or not _same_type(header.dtype, expected.dtype):
                    yield (
                        f"{label}: holds {header.dtype} {header.shape}, "
                        f"expected {expected.dtype} {expected.shape} like {variable.files.label(0)}"
                    )
                else:
                    size = variable.files.size(number)
                    if size != header.file_bytes:
                        problem = "truncated" if size < header.file_bytes else "has trailing bytes"
                        yield f"{label}: {problem}: {size} bytes, the header promises {header.file_bytes}"
            except ScanError as error:
                yield str(error)
            except OSError as error:
                yield f"{label}: cannot be read ({error.strerror or error})"
            if progress is not None:
                progress(1)


def _same_type(found: np.dtype, expected: np.dtype) -> bool:
    """Equal dtypes, byte order aside (a byte-swapped file decodes to the same values)."""
    return found.newbyteorder("=") == expected.newbyteorder("=")
