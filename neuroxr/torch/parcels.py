"""Batches from ``DataLoader`` workers to the main process in reused shared memory, images as uint8.

Torch hands every batch a worker returns to the main process in fresh shared memory: the worker
faults in a new page for every 4 kB it writes, the main process maps them again, and for a batch of
release images (128 x 1 x 144 x 256 float32) that costs more than reading the batch. A worker of
:func:`neuroxr.torch.static_loaders` instead packs the raw batch into a :class:`Parcel`: one buffer of
shared memory from a small per-worker pool, the grey images as the uint8 they are (release images
are whole numbers 0-255 kept as float32; a batch that is not is sent as before), the other fields
finished. The loader's iterator (:class:`~neuroxr.torch.loaders.ScanLoader`) unpacks it in the main
process: the images cast back and standardised there, every field copied into memory of its own, then
the parcel is marked free and its worker fills it again. A batch a user holds is never in a parcel,
so nothing they hold changes.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from neuroxr.sources import PerProcess

#: Bytes before the fields: byte 0 says whether the main process is done with the parcel.
HEADER = 64
#: Whether a worker fills a released buffer again. That is safe only if the main process's reads of a
#: parcel are done before the worker sees the release: x86-64 never lets a store (the flag) pass an
#: earlier load (the copy out), nor the worker's stores pass its load of the flag. Under weaker memory
#: models (arm64) nothing here orders them, so every batch gets fresh shared memory there, as torch's own.
REUSES_BUFFERS = platform.machine().lower() in ("x86_64", "amd64")
#: Alignment of each field in a parcel.
ALIGN = 64
_BUSY, _FREE = 0, 1


def _aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


@dataclass
class Parcel:
    """One batch as a worker sends it: ``fields`` (name, dtype, shape, offset) laid out in ``buffer`` (uint8, shared).

    ``narrowed`` names the fields sent as their raw values in uint8 (read as float32, each a whole
    number 0-255), which the main process still has to finish; the others are finished float32.
    """

    buffer: torch.Tensor
    fields: tuple[tuple[str, str, tuple[int, ...], int], ...]
    narrowed: tuple[str, ...]

    @property
    def nbytes(self) -> int:
        """Bytes of the fields sent (what crosses to the main process)."""
        return sum(math.prod(shape) * np.dtype(dtype).itemsize for _, dtype, shape, _ in self.fields)

    def arrays(self) -> dict[str, np.ndarray]:
        """The fields, as views of the buffer."""
        memory = self.buffer.numpy()
        return {
            name: np.frombuffer(memory, dtype=dtype, count=math.prod(shape), offset=offset).reshape(shape)
            for name, dtype, shape, offset in self.fields
        }

    def release(self) -> None:
        """Tell the worker that made it that it may fill the buffer again (nothing may read it after this)."""
        self.buffer[0] = _FREE


class ParcelPool:
    """A worker's buffers of shared memory, handed out again once the main process released them.

    A buffer is reused only when its first byte says the main process is done with it (it sets it
    as soon as it has copied the batch out, when the batch arrives). A worker asks for its next
    buffer while the main process may still be copying its last one out, so it waits for it up to
    ``wait`` seconds; then a new one is made (kept while the pool has fewer than ``keep``): a slow
    consumer costs fresh pages, never a batch overwritten. With ``keep=0`` (the default where
    :data:`REUSES_BUFFERS` is false) every parcel is fresh memory.
    """

    def __init__(self, keep: int = 1 if REUSES_BUFFERS else 0, wait: float = 0.05) -> None:
        self.keep = keep
        self.wait = wait
        self._buffers: list[torch.Tensor] = []

    def take(self, nbytes: int) -> torch.Tensor:
        """A buffer of at least ``HEADER + nbytes`` bytes, marked busy."""
        wanted = HEADER + nbytes
        fitting = [buffer for buffer in self._buffers if len(buffer) >= wanted]
        deadline = time.monotonic() + self.wait
        free = [buffer for buffer in fitting if int(buffer[0]) == _FREE]
        while fitting and not free and time.monotonic() < deadline:
            time.sleep(self.wait / 100)
            free = [buffer for buffer in fitting if int(buffer[0]) == _FREE]
        if free:
            buffer = min(free, key=len)
        else:
            buffer = torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage._new_shared(wanted))  # as torch's collate makes its batches
            small = [kept for kept in self._buffers if len(kept) < wanted and int(kept[0]) == _FREE]
            if len(self._buffers) >= self.keep and small:  # make room: a free buffer too small for batches like this one
                self._buffers = [kept for kept in self._buffers if kept is not small[0]]
            if len(self._buffers) < self.keep:
                self._buffers.append(buffer)
        buffer[0] = _BUSY
        return buffer

    def pack(self, layout: Sequence[tuple[str, np.dtype, tuple[int, ...]]], narrowed: Sequence[str]) -> Parcel:
        """An empty parcel with room for ``layout`` (fill it through :meth:`Parcel.arrays`)."""
        fields, offset = [], HEADER
        for name, dtype, shape in layout:
            fields.append((name, np.dtype(dtype).str, tuple(int(n) for n in shape), offset))
            offset += _aligned(math.prod(shape) * np.dtype(dtype).itemsize)
        return Parcel(self.take(offset - HEADER), tuple(fields), tuple(narrowed))

    def __reduce__(self) -> tuple[Any, ...]:
        return (ParcelPool, (self.keep, self.wait))


#: This process's pool (a worker makes its own).
PARCELS = PerProcess(ParcelPool)


def narrow(values: np.ndarray, out: np.ndarray) -> bool:
    """Write ``values`` into the uint8 ``out``; True if that kept every value exactly (whole numbers 0-255).

    >>> out = np.empty(3, np.uint8)
    >>> narrow(np.array([0, 7, 255], np.float32), out), narrow(np.array([0.5, 7, 255], np.float32), out)
    (True, False)
    """
    with np.errstate(invalid="ignore", over="ignore"):
        np.copyto(out, values, casting="unsafe")
    return bool(np.array_equal(out, values))
