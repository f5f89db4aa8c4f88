"""Bytes into the release layout: files in a folder, or members under one top-level folder of a .zip.

Knows nothing of xarray; the release sink (:mod:`neuroxr.formats.release`) decides what goes where.
Both writers check every path they are given (:func:`~neuroxr.formats._write.output_path`), so no
file or member can land outside the folder or the archive's top folder, whatever the caller passes.
"""

from __future__ import annotations

import concurrent.futures
import time
import zipfile
from pathlib import Path
from typing import Protocol

import numpy as np

from neuroxr.formats._write import output_path

#: Threads creating the files of a block in a folder (small-file creation waits on the file system).
FILE_WRITER_THREADS = 4


class ReleaseWriter(Protocol):
    """Where release files go: ``mkdir``, ``write`` one file, ``write_trials`` a block of numbered files."""

    def mkdir(self, relative: str) -> None: ...
    def write(self, relative: str, *parts: bytes | memoryview) -> None: ...
    def write_trials(self, folder: str, start: int, header: bytes, block: np.ndarray) -> None: ...


def write_trials_one_by_one(writer: ReleaseWriter, folder: str, start: int, header: bytes, block: np.ndarray) -> None:
    for j in range(len(block)):
        writer.write(f"{folder}/{start + j}.npy", header, memoryview(block[j]))


class FolderWriter:
    """Writes files under a folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()
        self._writers = concurrent.futures.ThreadPoolExecutor(max_workers=FILE_WRITER_THREADS)

    def mkdir(self, relative: str) -> None:
        (self.root / output_path(relative, "folder")).mkdir(parents=True, exist_ok=True)

    def write(self, relative: str, *parts: bytes | memoryview) -> None:
        with open(self.root / output_path(relative, "file"), "xb") as file:
            for part in parts:
                file.write(part)

    def write_trials(self, folder: str, start: int, header: bytes, block: np.ndarray) -> None:
        """Write ``{folder}/{start + j}.npy`` for each row j of ``block``, a few threads at once.

        Creating many small files waits on the file system more than on the CPU, so threads help.
        """
        pieces = min(FILE_WRITER_THREADS, max(1, len(block) // 16))
        bounds = np.linspace(0, len(block), pieces + 1).astype(int).tolist()
        futures = [
            self._writers.submit(write_trials_one_by_one, self, folder, start + a, header, block[a:b])
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        concurrent.futures.wait(futures)  # all of them, even if one failed
        for future in futures:
            future.result()

    def close(self) -> None:
        self._writers.shutdown()


class ZipWriter:
    """Writes members under one top-level folder of an open zip archive."""

    def __init__(self, archive: zipfile.ZipFile, top: str, compression: int) -> None:
        if not top or top in (".", "..") or "/" in top or "\\" in top:
            raise ValueError(f"zip archive: {top!r} cannot be its top folder")
        self.archive = archive
        self.top = top
        self.compression = compression
        self.date_time = time.localtime()[:6]
        self.folders: set[str] = set()
        self.mkdir("")

    def mkdir(self, relative: str) -> None:
        parts = output_path(relative, "folder").split("/") if relative else []
        for depth in range(len(parts) + 1):
            name = "/".join([self.top, *parts[:depth]]) + "/"
            if name not in self.folders:
                self.folders.add(name)
                info = zipfile.ZipInfo(name, date_time=self.date_time)
                info.external_attr = (0o40755 << 16) | 0x10
                self.archive.writestr(info, b"")

    def write(self, relative: str, *parts: bytes | memoryview) -> None:
        info = zipfile.ZipInfo(f"{self.top}/{output_path(relative, 'member')}", date_time=self.date_time)
        info.compress_type = self.compression
        info.external_attr = 0o100644 << 16
        with self.archive.open(info, "w") as member:
            for part in parts:
                member.write(part)

    def write_trials(self, folder: str, start: int, header: bytes, block: np.ndarray) -> None:
        write_trials_one_by_one(self, folder, start, header, block)


def as_saveable(values: np.ndarray, where: str) -> np.ndarray:
    """``values`` with object or variable-width strings turned into fixed-width ``<U`` (no pickles)."""
    if values.dtype.kind == "O" or values.dtype.kind == "T":
        try:
            return np.asarray(values.tolist(), dtype=str)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}: expected numbers or strings, found {values.dtype} values") from error
    return values
