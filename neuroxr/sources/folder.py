"""A folder on the local file system as a source: files read with ``preadv`` straight into buffers."""

from __future__ import annotations

import os
from collections.abc import Sequence

from neuroxr.sources.base import Buffers, is_ignored


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
        return os.stat(self.label(number)).st_size

    def read(self, number: int) -> bytes:
        with open(self.label(number), "rb") as file:
            return file.read()

    def read_into(self, numbers: Sequence[int], buffers: Sequence[Buffers]) -> list[int]:
        return [_read_file_into(f"{self._prefix}{number}{self.suffix}", targets) for number, targets in zip(numbers, buffers)]


def _read_file_into(path: str, buffers: Buffers) -> int:
    """Read the start of the file at ``path`` into ``buffers`` in turn (one ``preadv``); return the bytes read."""
    if not hasattr(os, "preadv"):  # pragma: no cover - Windows and macOS < 11
        with open(path, "rb", buffering=0) as file:
            return sum(file.readinto(buffer) or 0 for buffer in buffers)
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.preadv(fd, list(buffers), 0)
    finally:
        os.close(fd)


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
        found: dict[str, list[str]] = {}

        def visit(relative: str, depth: int) -> None:
            names = []
            with os.scandir(os.path.join(self.root, relative)) as entries:
                for entry in entries:  # is_dir() comes from the directory entry: no stat per file
                    if is_ignored(entry.name) or entry.name.startswith("."):
                        continue
                    if not entry.is_dir():
                        names.append(entry.name)
                    elif depth < MAX_DEPTH:
                        visit(f"{relative}/{entry.name}" if relative else entry.name, depth + 1)
            if names:
                found[relative] = names

        visit("", 0)
        return found

    def label(self, relative: str) -> str:
        return os.path.join(self.root, relative)

    def read(self, relative: str) -> bytes:
        with open(os.path.join(self.root, relative), "rb") as file:
            return file.read()

    def read_many(self, relatives: Sequence[str]) -> list[bytes]:
        return [self.read(relative) for relative in relatives]

    def within(self, folder: str) -> FolderSource:
        return FolderSource(os.path.join(self.root, folder)) if folder else self

    def numbered(self, directory: str, count: int, suffix: str) -> FolderFiles:
        return FolderFiles(os.path.join(self.root, directory), suffix)
