"""The full check of a scan (``neuroxr validate``): every trial and statistics file read whole, its header, size and (zip) CRC-32."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from neuroxr.errors import ScanError
from neuroxr.layout import ScanLayout, StatisticFile
from neuroxr.npy import HEADER_PROBE, check_size, parse_header

#: Files read in one batch (one round of requests for remote sources).
BATCH = 64


def files_to_check(layout: ScanLayout) -> int:
    """How many files :func:`check_files` reads: every trial file and every statistics file."""
    return layout.n_trials * len(layout.variables) + (len(_statistics_files(layout)) if layout.statistics_files is not None else 0)


def check_files(layout: ScanLayout, progress: Callable[[int], None] | None = None) -> Iterator[str]:
    """Read every trial and statistics file whole; yield one message per problem, the file named first.

    A file must have file 0's header (or one that decodes to the same shape and type), hold exactly
    what its header promises, and, in a .zip, match the CRC-32 the archive records. Reads are
    bounded: no file is read past the size its variable's header allows. ``progress`` is called
    with 1 after each file (:func:`files_to_check` in all).
    """
    for variable in layout.variables.values():
        expected = variable.header
        wanted = expected.file_bytes
        for first in range(0, layout.n_trials, BATCH):
            numbers = list(range(first, min(first + BATCH, layout.n_trials)))
            buffers = [bytearray(wanted) for _ in numbers]
            try:
                sizes = variable.files.read_into(numbers, [[memoryview(buffer)] for buffer in buffers])
            except ScanError:  # one file of the batch is at fault: read them one by one to name it
                sizes = [None] * len(numbers)
            for number, buffer, size in zip(numbers, buffers, sizes):
                problem = _check_one(variable, number, buffer, size)
                if problem is not None:
                    yield problem
                if progress is not None:
                    progress(1)
    yield from _check_statistics(layout, progress)


def _statistics_files(layout: ScanLayout) -> list[StatisticFile]:
    """The statistics files of ``layout``, in their source's order."""
    stored = (file for subsets in layout.statistics.values() for stats in subsets.values() for file in stats.values())
    return sorted(stored, key=lambda file: file.number)


def _check_statistics(layout: ScanLayout, progress: Callable[[int], None] | None) -> Iterator[str]:
    """Read every statistics file whole (opening read their headers only): its size and, in a .zip, its CRC-32."""
    files = layout.statistics_files
    if files is None:
        return
    stored = _statistics_files(layout)
    for first in range(0, len(stored), BATCH):
        batch = stored[first : first + BATCH]
        buffers = [bytearray(file.header.file_bytes) for file in batch]
        try:
            sizes: list[int | None] = list(files.read_into([file.number for file in batch], [[memoryview(b)] for b in buffers]))
        except ScanError:  # one file of the batch is at fault: read them one by one to name it
            sizes = [None] * len(batch)
        for file, buffer, size in zip(batch, buffers, sizes):
            label = files.label(file.number)
            try:
                if size is None:
                    size = files.read_into([file.number], [[memoryview(buffer)]])[0]
                check_size(file.header, size if size <= len(buffer) else files.size(file.number), label)
            except ScanError as error:
                yield str(error)
            if progress is not None:
                progress(1)


def _check_one(variable, number: int, buffer: bytearray, size: int | None) -> str | None:  # type: ignore[no-untyped-def]
    """The problem with one trial file, or None (``size`` is what the batch read returned, None to read it again)."""
    expected = variable.header
    files = variable.files
    label = files.label(number)
    try:
        if size is None:
            size = files.read_into([number], [[memoryview(buffer)]])[0]
        if size == expected.file_bytes and buffer.startswith(expected.raw):
            return None
        if size <= len(buffer):
            header = parse_header(memoryview(buffer)[:size], label)
        else:  # longer than file 0: its size, and its header alone
            size = files.size(number)
            probe = bytearray(HEADER_PROBE)
            got = files.read_into([number], [[memoryview(probe)]])[0]
            header = parse_header(memoryview(probe)[: min(got, len(probe))], label)
        if header.shape != expected.shape or not _same_type(header.dtype, expected.dtype):
            return f"{label}: holds {header.describe()}, expected {expected.describe()} like {files.label(0)}"
        check_size(header, size, label)
    except ScanError as error:
        return str(error)
    return None


def _same_type(found: np.dtype, expected: np.dtype) -> bool:
    """Equal dtypes, byte order aside (a byte-swapped file decodes to the same values)."""
    return found.newbyteorder("=") == expected.newbyteorder("=")
