"""What every source offers: the :class:`Source` and :class:`NumberedFiles` protocols, and helpers they share.

A *source* is where the bytes of a scan are. It lists the files under its root, reads whole small
files (one at a time or many in one batch), narrows itself to a folder inside it, and hands out
*numbered files* (``dir/0.npy``, ``dir/1.npy``, ...) that a worker reads by number into
caller-supplied buffers, many at a time. Numbered files hold paths and offsets only, never an open
handle, so they pickle small and work on any dask scheduler. Nothing here knows about Sensorium or .npy.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from neuroxr.errors import ScanError

#: Entries every source ignores: macOS resource forks and Finder files.
IGNORED_PARTS = ("__MACOSX",)
IGNORED_PREFIXES = ("._",)
IGNORED_NAMES = (".DS_Store",)
#: Hidden names holding this are an export's own files beside its target (a partial output, a lock,
#: a previous output moved aside): never part of a scan. ``formats/_write.py`` names them.
EXPORT_MARKER = ".neuroxr-"

Buffers = Sequence[memoryview]
T = TypeVar("T")


class PerProcess(Generic[T]):
    """A process-wide resource (a thread pool, a lock, buffers), made on first use in each process.

    A forked child (a ``DataLoader`` worker) inherits its parent's objects but none of its threads: a
    thread pool there waits forever for workers that do not exist, a lock a parent thread held stays
    held. So every module-level pool, loop or lock of neuroxr is one of these: after a fork the child
    forgets the parent's value (``os.register_at_fork``) and makes its own on first use.

    >>> pool = PerProcess(lambda: object())
    >>> pool.get() is pool.get()
    True
    """

    _all: weakref.WeakSet[PerProcess[Any]] = weakref.WeakSet()

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._value: T | None = None
        self._lock = threading.Lock()
        PerProcess._all.add(self)

    def get(self) -> T:
        """This process's value, made now if it has none yet."""
        if self._value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._make()
        return self._value

    def forget(self) -> None:
        """Drop this process's value (kept alive only by what still refers to it): the next :meth:`get` makes a new one."""
        self._value = None
        self._lock = threading.Lock()


def _forget_after_fork() -> None:
    for resource in list(PerProcess._all):
        resource.forget()


os.register_at_fork(after_in_child=_forget_after_fork)


def is_ignored(relative: str) -> bool:
    """True for archive clutter (``__MACOSX/``, ``._x``, ``.DS_Store``) and export leftovers, never part of a scan.

    >>> is_ignored("__MACOSX/scan/._data"), is_ignored(".scan.neuroxr-partial-1a2b/data"), is_ignored("scan/data/0.npy")
    (True, True, False)
    """
    if not may_be_ignored(relative):
        return False  # the common case, without splitting
    parts = relative.split("/")
    return (
        any(part in IGNORED_PARTS or (part.startswith(".") and EXPORT_MARKER in part) for part in parts)
        or parts[-1] in IGNORED_NAMES
        or parts[-1].startswith(IGNORED_PREFIXES)
    )


def may_be_ignored(text: str) -> bool:
    """False when no path in ``text`` (one, or many joined) can be clutter or an export's leftover: a test on all names at once.

    >>> may_be_ignored("scan/data/0.npy scan/data/1.npy"), may_be_ignored("scan/._0.npy")
    (False, True)
    """
    return "__MACOSX" in text or ".DS_Store" in text or "._" in text or EXPORT_MARKER in text


def group_by_folder(relatives: Iterable[str]) -> dict[str, list[str]]:
    """Relative paths as ``{folder: [file names]}``, archive clutter left out.

    >>> group_by_folder(["meta/a.npy", "meta/b.npy", "x.txt"])
    {'meta': ['a.npy', 'b.npy'], '': ['x.txt']}
    """
    folders: dict[str, list[str]] = {}
    for relative in relatives:
        if not is_ignored(relative):
            folder, _, name = relative.rpartition("/")
            folders.setdefault(folder, []).append(name)
    return folders


def copy_into(data: bytes | memoryview, buffers: Buffers) -> int:
    """Copy ``data`` into ``buffers`` in turn, as far as they reach; return the bytes copied.

    >>> target = bytearray(3); copy_into(b"abcdef", [memoryview(target)]), bytes(target)
    (3, b'abc')
    """
    view = memoryview(data)
    done = 0
    for buffer in buffers:
        take = min(len(buffer), len(view) - done)
        if take <= 0:
            break
        buffer[:take] = view[done : done + take]
        done += take
    return done


def read_whole(files: NumberedFiles, number: int, limit: int | None) -> bytearray:
    """File ``number`` of ``files`` whose size is known without reading it, read whole into a new buffer.

    A file of more than ``limit`` bytes is refused unread (its size is what a zip directory or a
    listing declares, so nothing larger is ever allocated).
    """
    size = files.size(number)
    if limit is not None and size > limit:
        raise ScanError(files.label(number), f"holds {size} bytes, expected at most {limit}")
    buffer = bytearray(size)
    files.read_into([number], [[memoryview(buffer)]])
    return buffer


def total_bytes(buffers: Buffers) -> int:
    """The bytes ``buffers`` hold together."""
    return sum(len(buffer) for buffer in buffers)


def limit_to(buffers: Buffers, size: int) -> list[memoryview]:
    """The leading part of ``buffers`` that holds at most ``size`` bytes (never read past a file)."""
    kept: list[memoryview] = []
    for buffer in buffers:
        take = min(len(buffer), size)
        if take <= 0:
            break
        kept.append(buffer[:take])
        size -= take
    return kept


class NumberedFiles(Protocol):
    """Numbered files ``{directory}/{k}{suffix}``, read by number; picklable."""

    def label(self, number: int) -> str:
        """Where file ``number`` is, as a user would find it."""
        ...

    def size(self, number: int) -> int:
        """The size of file ``number`` in bytes (uncompressed), without reading it."""
        ...

    def read(self, number: int, limit: int | None = None) -> bytes | bytearray:
        """The whole file ``number``, verified; a file of more than ``limit`` bytes is refused unread."""
        ...

    def read_into(self, numbers: Sequence[int], buffers: Sequence[Buffers]) -> list[int]:
        """Fill ``buffers[k]`` in turn with the leading bytes of file ``numbers[k]``, for every k.

        Returns each file's size: the bytes placed when the file fits its buffers (a zip member is
        then verified whole), and more than its buffers hold when it is longer: its leading bytes
        placed (a header, say), nothing much past them read; a compressed zip member is then
        inflated from a prefix of its data only as far as the buffers reach, and not verified (its
        CRC-32 is checked whenever it is read whole). Never reads past the end of a file, never
        blocks on a file that is not a regular one. Sources that fetch over a network fetch them together.
        """
        ...


class Source(Protocol):
    """The files under one folder: a scan folder, an archive, a folder inside an archive, a URL."""

    name: str  #: the folder's name (for a scan: its release name), or the archive's stem

    def listing(self) -> dict[str, list[str]]:
        """Every file under the root, as ``{folder: [file names]}`` (POSIX, relative to the root)."""
        ...

    def label(self, relative: str) -> str:
        """Where a file is, as a user would find it."""
        ...

    def read(self, relative: str) -> bytes | bytearray:
        """A whole (small) file, verified (zip members: CRC-32; only regular files are read)."""
        ...

    def read_many(self, relatives: Sequence[str]) -> list[bytes | bytearray]:
        """Several whole (small) files, in the order asked; one batch of requests where that helps."""
        ...

    def within(self, folder: str) -> Source:
        """The same source with its root moved down to ``folder`` (relative; "" is the root itself)."""
        ...

    def numbered(self, directory: str, count: int, suffix: str) -> NumberedFiles:
        """The numbered files ``directory/0{suffix}`` .. ``directory/{count-1}{suffix}``."""
        ...

    def listed(self, relatives: Sequence[str]) -> NumberedFiles:
        """The files ``relatives`` (any names) as numbered files, numbered in the order given."""
        ...
