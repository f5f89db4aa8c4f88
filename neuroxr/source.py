"""Sources: where the bytes of a scan are. A folder, or a .zip read in place (never extracted).

A source lists the files under the scan's root, reads whole small files, and hands out
*series*: numbered files (``dir/0.npy``, ``dir/1.npy``, ...) that a worker can read by number
into caller-supplied buffers. Series hold paths and offsets only, never an open handle, so they
pickle small and work on any dask scheduler. Nothing here knows about Sensorium or .npy.
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from pathlib import Path
from collections.abc import Iterable
from typing import Protocol

import numpy as np

from neuroxr.errors import ScanError

#: Entries every source ignores: macOS resource forks and Finder files.
IGNORED_PARTS = ("__MACOSX",)
IGNORED_PREFIXES = ("._",)
IGNORED_NAMES = (".DS_Store",)


def is_ignored(relative: str) -> bool:
    """True for archive clutter (``__MACOSX/``, ``._x``, ``.DS_Store``) that is never part of a scan."""
    parts = relative.split("/")
    return (
        any(part in IGNORED_PARTS for part in parts)
        or parts[-1] in IGNORED_NAMES
        or parts[-1].startswith(IGNORED_PREFIXES)
    )


def group_by_folder(relatives: Iterable[str]) -> dict[str, list[str]]:
    """Relative paths as ``{folder: [file names]}``, archive clutter left out."""
    folders: dict[str, list[str]] = {}
    for relative in relatives:
        if not is_ignored(relative):
            folder, _, name = relative.rpartition("/")
            folders.setdefault(folder, []).append(name)
    return folders


def scatter(data: bytes, buffers: list[memoryview]) -> int:
    """Copy ``data`` into ``buffers`` in turn; return the bytes copied."""
    view = memoryview(data)
    done = 0
    for buffer in buffers:
        take = min(len(buffer), len(view) - done)
        buffer[:take] = view[done : done + take]
        done += take
    return done


class Series(Protocol):
    """Numbered files ``{directory}/{k}{suffix}``, read by number; picklable."""

    def label(self, number: int) -> str:
        """Where file ``number`` is, as a user would find it."""

    def readinto(self, number: int, buffers: list[memoryview]) -> int:
        """Fill ``buffers`` in turn with the file's bytes; return how many bytes were read."""

    def read(self, number: int) -> bytes:
        """The whole file."""


class Source(Protocol):
    """The files of one scan."""

    name: str  #: the scan folder's name (the release name), or the archive's stem

    def listing(self) -> dict[str, list[str]]:
        """Every file under the scan's root, as ``{folder: [file names]}`` (POSIX, relative to the root)."""

    def read(self, relative: str) -> bytes:
        """A whole (small) file."""

    def label(self, relative: str) -> str:
        """Where a file is, as a user would find it."""

    def series(self, directory: str, count: int, suffix: str) -> Series:
        """The numbered files ``directory/0{suffix}`` .. ``directory/{count-1}{suffix}``."""


# -- folders ---------------------------------------------------------------------------------------


class FolderSeries:
    """Numbered files in a folder, read with one ``preadv`` each."""

    def __init__(self, directory: str, suffix: str) -> None:
        self.directory = directory
        self.suffix = suffix
        self._prefix = os.path.join(directory, "")

    def label(self, number: int) -> str:
        return f"{self._prefix}{number}{self.suffix}"

    def readinto(self, number: int, buffers: list[memoryview]) -> int:
        fd = os.open(f"{self._prefix}{number}{self.suffix}", os.O_RDONLY)
        try:
            return os.preadv(fd, buffers, 0)
        finally:
            os.close(fd)

    def read(self, number: int) -> bytes:
        with open(self.label(number), "rb") as file:
            return file.read()


if not hasattr(os, "preadv"):  # pragma: no cover - Windows and macOS < 11

    def _readinto_portable(self: FolderSeries, number: int, buffers: list[memoryview]) -> int:
        with open(self.label(number), "rb", buffering=0) as file:
            return sum(file.readinto(buffer) or 0 for buffer in buffers)

    FolderSeries.readinto = _readinto_portable  # type: ignore[method-assign]


class FolderSource:
    """A scan stored as a plain folder."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.abspath(root)
        self.name = os.path.basename(self.root)

    def __repr__(self) -> str:
        return f"FolderSource({self.root!r})"

    def listing(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}

        def visit(relative: str) -> None:
            path = os.path.join(self.root, relative)
            if relative.count("/") == 1 and relative.startswith("data/"):  # thousands of trial files: no stat
                found[relative] = [name for name in os.listdir(path) if not name.startswith(".")]
                return
            names = []
            with os.scandir(path) as entries:
                for entry in entries:
                    if is_ignored(entry.name):
                        continue
                    if entry.is_dir():
                        visit(f"{relative}/{entry.name}" if relative else entry.name)
                    else:
                        names.append(entry.name)
            if names:
                found[relative] = names

        visit("")
        return found

    def read(self, relative: str) -> bytes:
        with open(os.path.join(self.root, relative), "rb") as file:
            return file.read()

    def label(self, relative: str) -> str:
        return os.path.join(self.root, relative)

    def series(self, directory: str, count: int, suffix: str) -> FolderSeries:
        return FolderSeries(os.path.join(self.root, directory), suffix)


# -- zip archives ----------------------------------------------------------------------------------

_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., name length, extra length
_LOCAL_SIGNATURE = b"PK\x03\x04"


class ZipSeries:
    """Numbered members of a zip archive: offsets and sizes only, the archive reopened per read."""

    def __init__(
        self,
        archive: str,
        template: str,
        offsets: np.ndarray,
        compressed: np.ndarray,
        sizes: np.ndarray,
        methods: np.ndarray,
    ) -> None:
        self.archive = archive
        self.template = template  # "prefix/data/responses/{}.npy"
        self.offsets = offsets
        self.compressed = compressed
        self.sizes = sizes
        self.methods = methods

    def label(self, number: int) -> str:
        return f"{self.archive}::{self.template.format(number)}"

    def _raw(self, fd: int, number: int) -> tuple[int, bytes | None]:
        """The member's data offset, and its compressed bytes when it is not stored."""
        offset = int(self.offsets[number])
        local = os.pread(fd, _LOCAL_HEADER.size, offset)
        if len(local) < _LOCAL_HEADER.size:
            raise ScanError(self.label(number), "corrupt zip: the archive ends inside a member header")
        signature, name_length, extra_length = _LOCAL_HEADER.unpack(local)
        if signature != _LOCAL_SIGNATURE:
            raise ScanError(self.label(number), "corrupt zip: no local header where the directory points")
        start = offset + _LOCAL_HEADER.size + name_length + extra_length
        if self.methods[number] == zipfile.ZIP_STORED:
            return start, None
        return start, os.pread(fd, int(self.compressed[number]), start)

    def _inflate(self, number: int, raw: bytes) -> bytes:
        method = int(self.methods[number])
        if method == zipfile.ZIP_DEFLATED:
            try:
                return zlib.decompress(raw, -15, int(self.sizes[number]) or zlib.DEF_BUF_SIZE)
            except zlib.error as error:
                raise ScanError(self.label(number), f"corrupt zip member ({error})") from error
        with zipfile.ZipFile(self.archive) as archive:  # bzip2, lzma: rare, let zipfile do it
            return archive.read(self.template.format(number))

    def readinto(self, number: int, buffers: list[memoryview]) -> int:
        fd = os.open(self.archive, os.O_RDONLY)
        try:
            start, raw = self._raw(fd, number)
            if raw is None:
                size = int(self.sizes[number])
                total, wanted = 0, []
                for buffer in buffers:  # never read past the member into the next one
                    take = min(len(buffer), size - total)
                    if take <= 0:
                        break
                    wanted.append(buffer[:take])
                    total += take
                return os.preadv(fd, wanted, start) if wanted else 0
        finally:
            os.close(fd)
        return scatter(self._inflate(number, raw), buffers)

    def read(self, number: int) -> bytes:
        fd = os.open(self.archive, os.O_RDONLY)
        try:
            start, raw = self._raw(fd, number)
            if raw is None:
                return os.pread(fd, int(self.sizes[number]), start)
        finally:
            os.close(fd)
        return self._inflate(number, raw)


class ZipSource:
    """A scan inside a .zip archive, read in place.

    ``prefix`` is the folder inside the archive that holds ``data/`` and ``meta/`` ("" when they sit at
    the top). The central directory is read once; reads seek to the members.
    """

    def __init__(self, archive: str | os.PathLike[str], prefix: str, infos: dict[str, zipfile.ZipInfo]) -> None:
        self.archive = os.path.abspath(archive)
        self.prefix = prefix
        self._infos = infos  # relative path -> ZipInfo
        self.name = prefix.rstrip("/").rsplit("/", 1)[-1] if prefix else Path(archive).stem

    def __repr__(self) -> str:
        return f"ZipSource({self.archive!r}, prefix={self.prefix!r})"

    def __getstate__(self) -> dict[str, object]:
        raise TypeError("a ZipSource is not sent to workers; its series are")

    def listing(self) -> dict[str, list[str]]:
        return group_by_folder(self._infos)

    def label(self, relative: str) -> str:
        return f"{self.archive}::{self.prefix}{relative}"

    def read(self, relative: str) -> bytes:
        info = self._infos[relative]
        series = self._series_of([info], self.prefix + relative.replace("{", "{{").replace("}", "}}"))
        return series.read(0)

    def _series_of(self, infos: list[zipfile.ZipInfo], template: str) -> ZipSeries:
        for info in infos:
            if info.flag_bits & 0x1:
                raise ScanError(f"{self.archive}::{info.filename}", "encrypted zip members are not supported")
        return ZipSeries(
            self.archive,
            template,
            np.array([info.header_offset for info in infos], dtype=np.int64),
            np.array([info.compress_size for info in infos], dtype=np.int64),
            np.array([info.file_size for info in infos], dtype=np.int64),
            np.array([info.compress_type for info in infos], dtype=np.int16),
        )

    def series(self, directory: str, count: int, suffix: str) -> ZipSeries:
        infos = [self._infos[f"{directory}/{number}{suffix}"] for number in range(count)]
        return self._series_of(infos, f"{self.prefix}{directory}/{{}}{suffix}")


# -- opening ---------------------------------------------------------------------------------------


def is_scan_folder(path: Path) -> bool:
    """A folder holding a scan: ``data/`` and ``meta/`` side by side."""
    return (path / "data").is_dir() and (path / "meta").is_dir()


def scan_folders_in(path: Path) -> list[Path]:
    """The scan folders directly inside ``path``, sorted by name."""
    return sorted(child for child in path.iterdir() if not is_ignored(child.name) and child.is_dir() and is_scan_folder(child))


def _zip_roots(names: list[str]) -> set[str]:
    """Folders inside an archive that hold both ``data/`` and ``meta/``."""
    data_parents, meta_parents = set(), set()
    for name in names:
        if is_ignored(name):
            continue
        for marker, parents in (("data/", data_parents), ("meta/", meta_parents)):
            index = name.find(marker)
            while index != -1:
                if index == 0 or name[index - 1] == "/":
                    parents.add(name[:index])
                index = name.find(marker, index + 1)
    return data_parents & meta_parents


def open_zip(path: str | os.PathLike[str]) -> ZipSource:
    """Read an archive's central directory and find the one scan inside it."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except zipfile.BadZipFile as error:
        raise ScanError(path, f"not a readable zip archive ({error})") from error
    names = [info.filename for info in infos]
    roots = _zip_roots(names)
    if not roots:
        raise ScanError(path, "not a Sensorium scan: the archive holds no folder with both data/ and meta/")
    if len(roots) > 1:
        listed = ", ".join(sorted(root or "(top level)" for root in roots))
        raise ScanError(path, f"holds {len(roots)} scans ({listed}); open them with neuroxr.open_datatree")
    (prefix,) = roots
    members = {
        info.filename[len(prefix) :]: info
        for info in infos
        if info.filename.startswith(prefix) and not info.is_dir() and not is_ignored(info.filename)
    }
    return ZipSource(path, prefix, members)


def find_scan_folder(path: Path) -> Path:
    """The scan folder at ``path``: itself, or the single scan folder inside it."""
    if is_scan_folder(path):
        return path
    candidates = scan_folders_in(path)
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        raise ScanError(
            path, f"holds {len(candidates)} scans; open one of them, or all with neuroxr.open_datatree"
        )
    missing = [part for part in ("data", "meta") if not (path / part).is_dir()]
    raise ScanError(path, f"not a Sensorium scan: no {' or '.join(p + '/' for p in missing)} folder here or one level down")


def open_source(path: str | os.PathLike[str], storage_options: dict | None = None) -> Source:
    """The source of the scan at ``path``: a scan folder, a folder holding one, a .zip, or an fsspec URL.

    >>> open_source("static21067-10-18-GrayImageNet-94c6ff995dac583098847cfecd43e7b6.zip")  # doctest: +SKIP
    ZipSource('.../static21067-10-18-...zip', prefix='static21067-10-18-.../')
    """
    if "://" in os.fspath(path):
        from neuroxr.remote import open_remote

        return open_remote(os.fspath(path), storage_options)
    path = Path(path)
    if path.is_dir():
        return FolderSource(find_scan_folder(path))
    if path.is_file():
        return open_zip(path)
    raise ScanError(path, "no such file or folder")
