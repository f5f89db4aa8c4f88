"""A folder on the local file system as a source: files read with ``preadv`` straight into buffers.

Reads are bounded and never block: files are opened with ``O_NONBLOCK`` (a FIFO opens at once and
then refuses a positioned read), the fast path reads at most the caller's buffers plus one byte (so
a file longer than expected, or a device that never ends, is seen for what it is), and a whole-file
read takes only regular files, of at most the size the caller allows. Every ``OSError`` becomes a
:class:`~neuroxr.errors.ScanError` naming the file.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence

from neuroxr.errors import ScanError
from neuroxr.sources.base import Buffers, is_ignored

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_FOLDER_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
#: One byte past the caller's buffers: its value is never used, so threads may share it.
_ONE_MORE = memoryview(bytearray(1))
_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}  # fmt: skip
#: The most ``preadv`` moves in one call on Linux.
_MAX_READ = 0x7FFFF000


def not_openable(path: str | os.PathLike[str]) -> ScanError:
    """The error for a local path that is neither a folder nor a regular file: missing, or what it is instead.

    >>> not_openable("/dev/null")
    ScanError('/dev/null: is a character device, not a regular file (expected a scan folder or a .zip archive)')
    """
    try:
        info = os.stat(path)
    except OSError:
        return ScanError(path, "no such file or folder")
    kind = _KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
    return ScanError(path, f"is {kind}, not a regular file (expected a scan folder or a .zip archive)")


def os_error(error: OSError, label: str) -> ScanError:
    """The :class:`ScanError` that says, in the file's terms, why it could not be read."""
    code = error.errno
    if code == errno.ENOENT:
        problem = "missing (was the scan changed after opening?)"
    elif code == errno.EISDIR:
        problem = "is a folder, expected a file"
    elif code == errno.ELOOP:
        problem = "is a loop of symbolic links"
    elif code in (errno.ESPIPE, errno.ENXIO, errno.EAGAIN, errno.EINVAL):
        problem = "is not a regular file (a FIFO, socket or device), expected a file"
    elif code in (errno.EACCES, errno.EPERM):
        problem = "cannot be read: permission denied"
    elif code == errno.ENOTDIR:
        problem = "missing: a part of its path is a file, not a folder"
    else:
        problem = f"cannot be read ({error.strerror or error})"
    scan_error = ScanError(label, problem)
    scan_error.__cause__ = error
    return scan_error


def read_file_into(path: str, buffers: Buffers) -> int:
    """Read the start of the file at ``path`` into ``buffers`` (one ``preadv``); return its size, or more than they hold.

    >>> import tempfile; f = tempfile.NamedTemporaryFile(); _ = f.write(b"abc"); f.flush()
    >>> target = bytearray(2); read_file_into(f.name, [memoryview(target)]), bytes(target)
    (3, b'ab')
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
        try:
            return os.preadv(fd, [*buffers, _ONE_MORE], 0)
        finally:
            os.close(fd)
    except OSError as error:
        raise os_error(error, path) from error


def read_file(path: str, limit: int | None = None) -> bytearray:
    """The whole regular file at ``path``; refused, unread, if it is not one or holds more than ``limit`` bytes."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                kind = _KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
                raise ScanError(path, f"is {kind}, expected a regular file")
            if limit is not None and info.st_size > limit:
                raise ScanError(path, f"holds {info.st_size} bytes, expected at most {limit}")
            data = bytearray(info.st_size)
            view, done = memoryview(data), 0
            while done < len(data):
                got = os.preadv(fd, [view[done : done + _MAX_READ]], done)
                if got == 0:
                    raise ScanError(path, f"changed while being read: {done} of {len(data)} bytes")
                done += got
            return data
        finally:
            os.close(fd)
    except OSError as error:
        raise os_error(error, path) from error


class FolderFiles:
    """Numbered files in a folder, each read with one ``preadv``."""

    def __init__(self, directory: str, suffix: str) -> None:
        self.directory = directory
        self.suffix = suffix
        self._prefix = os.path.join(directory, "")

    def __repr__(self) -> str:
        return f"FolderFiles({self.directory!r}, {self.suffix!r})"

    def label(self, number: int) -> str:
        return f"{self._prefix}{number}{self.suffix}"

    def size(self, number: int) -> int:
        try:
            return os.stat(self.label(number)).st_size
        except OSError as error:
            raise os_error(error, self.label(number)) from error

    def read(self, number: int, limit: int | None = None) -> bytearray:
        return read_file(self.label(number), limit)

    def read_into(self, numbers: Sequence[int], buffers: Sequence[Buffers]) -> list[int]:
        """Each file opened relative to the folder, opened once per call (no path walk per file), and read with one ``preadv``."""
        suffix, flags, one_more = self.suffix, _OPEN_FLAGS, _ONE_MORE
        try:
            folder = os.open(self.directory, _FOLDER_FLAGS)
        except OSError as error:  # named by its first file, as a per-file open would have said it
            raise os_error(error, self.label(numbers[0]) if len(numbers) else self.directory) from error
        sizes, number = [], 0
        try:
            for number, targets in zip(numbers, buffers):
                fd = os.open(f"{number}{suffix}", flags, dir_fd=folder)
                try:
                    sizes.append(os.preadv(fd, [*targets, one_more], 0))
                finally:
                    os.close(fd)
        except OSError as error:
            raise os_error(error, self.label(number)) from error
        finally:
            os.close(folder)
        return sizes


class ListedFolderFiles(FolderFiles):
    """Files of any names under the folder ``directory``, numbered in the order given, each read with one ``preadv``."""

    def __init__(self, directory: str, relatives: Sequence[str]) -> None:
        super().__init__(directory, "")
        self.paths = [os.path.join(directory, relative) for relative in relatives]

    def __repr__(self) -> str:
        return f"ListedFolderFiles({len(self.paths)} files)"

    def label(self, number: int) -> str:
        return self.paths[number]

    def read_into(self, numbers: Sequence[int], buffers: Sequence[Buffers]) -> list[int]:
        return [read_file_into(self.paths[number], targets) for number, targets in zip(numbers, buffers)]


#: Folders deeper than this below the root are not listed (nothing a source serves is deeper; bounds link loops).
MAX_DEPTH = 6


class FolderSource:
    """The files under a local folder."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.abspath(root)
        self.name = os.path.basename(self.root)

    def __repr__(self) -> str:
        return f"FolderSource({self.root!r})"

    def listing(self) -> dict[str, list[str]]:
        """Every file, by folder. A folder named like a file (``x.npy/``) is listed, even empty, so the layout can refuse it."""
        found: dict[str, list[str]] = {}

        def visit(relative: str, depth: int) -> None:
            names = []
            try:
                with os.scandir(os.path.join(self.root, relative)) as entries:
                    for entry in entries:  # is_dir() comes from the directory entry: no stat per file
                        if is_ignored(entry.name) or entry.name.startswith("."):
                            continue
                        try:
                            folder = entry.is_dir()
                        except OSError:  # a link loop: listed, so reading it says what it is
                            folder = False
                        if not folder:
                            names.append(entry.name)
                        elif depth < MAX_DEPTH:
                            visit(f"{relative}/{entry.name}" if relative else entry.name, depth + 1)
            except OSError as error:
                raise os_error(error, self.label(relative)) from error
            if names or relative.endswith(".npy"):
                found[relative] = names

        visit("", 0)
        return found

    def label(self, relative: str) -> str:
        return os.path.join(self.root, relative)

    def read(self, relative: str) -> bytearray:
        return read_file(self.label(relative))

    def read_many(self, relatives: Sequence[str]) -> list[bytes | bytearray]:
        return [self.read(relative) for relative in relatives]

    def within(self, folder: str) -> FolderSource:
        return FolderSource(os.path.join(self.root, folder)) if folder else self

    def numbered(self, directory: str, count: int, suffix: str) -> FolderFiles:
        return FolderFiles(os.path.join(self.root, directory), suffix)

    def listed(self, relatives: Sequence[str]) -> ListedFolderFiles:
        return ListedFolderFiles(self.root, relatives)
