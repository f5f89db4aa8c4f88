"""A local .zip archive as a source, read in place (never extracted).

The central directory is read once when the archive is opened; its numbered members keep the offsets and sizes
of its members and reopens the archive per read (``pread``: no shared file position, safe in
threads and picklable). Stored members are read straight into the caller's buffers.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

from neuroxr.sources.base import Buffers, copy_into, group_by_folder, is_ignored, limit_to
from neuroxr.sources.zipmember import (
    LOCAL_HEADER,
    MemberTable,
    data_offset,
    decompress,
    member_template,
    read_directory,
)


class ZipMembers:
    """Numbered members of a zip archive: offsets and sizes only, the archive reopened per read."""

    def __init__(self, archive: str, template: str, table: MemberTable) -> None:
        self.archive = archive
        self.template = template  # "prefix/data/responses/{}.npy"
        self.table = table

    def __repr__(self) -> str:
        return f"ZipMembers({self.archive!r}, {self.template!r}, {len(self.table)} members)"

    def label(self, number: int) -> str:
        return f"{self.archive}::{self.template.format(number)}"

    def size(self, number: int) -> int:
        return int(self.table.sizes[number])

    def read(self, number: int) -> bytes:
        buffer = bytearray(self.size(number))
        got = self.read_into([number], [[memoryview(buffer)]])[0]
        return bytes(buffer[:got])

    def read_into(self, numbers: Sequence[int], buffers: Sequence[Buffers]) -> list[int]:
        table = self.table
        fd = os.open(self.archive, os.O_RDONLY)
        try:
            done = []
            for number, targets in zip(numbers, buffers):
                offset = int(table.offsets[number])
                start = offset + data_offset(os.pread(fd, LOCAL_HEADER.size, offset), self.label(number))
                method, size = int(table.methods[number]), int(table.sizes[number])
                if method == zipfile.ZIP_STORED:
                    wanted = limit_to(targets, size)
                    done.append(os.preadv(fd, wanted, start) if wanted else 0)
                    continue
                raw = os.pread(fd, int(table.compressed[number]), start)
                data = decompress(raw, method, size, int(table.crcs[number]), self.label(number))
                done.append(copy_into(data, targets))
            return done
        finally:
            os.close(fd)


class ZipSource:
    """The members under one folder of a local .zip archive (the whole archive when ``prefix`` is "")."""

    def __init__(self, archive: str | os.PathLike[str], prefix: str = "", infos: dict[str, zipfile.ZipInfo] | None = None) -> None:
        self.archive = os.path.abspath(archive)
        self.prefix = prefix
        if infos is None:
            infos = {info.filename: info for info in read_directory(self.archive, self.archive) if not info.is_dir()}
        self._infos = {name: info for name, info in infos.items() if not is_ignored(name)}  # relative -> ZipInfo
        self.name = prefix.rstrip("/").rsplit("/", 1)[-1] if prefix else Path(archive).stem

    def __repr__(self) -> str:
        return f"ZipSource({self.archive!r}, prefix={self.prefix!r})"

    def __getstate__(self) -> dict[str, object]:
        raise TypeError("a ZipSource is not sent to workers; its numbered members are")

    def listing(self) -> dict[str, list[str]]:
        return group_by_folder(self._infos)

    def label(self, relative: str) -> str:
        return f"{self.archive}::{self.prefix}{relative}"

    def read(self, relative: str) -> bytes:
        return self.read_many([relative])[0]

    def read_many(self, relatives: Sequence[str]) -> list[bytes]:
        table = MemberTable.of([self._infos[relative] for relative in relatives], self.archive)
        members = _Members(self.archive, [self.label(relative) for relative in relatives], table)
        return [members.read(number) for number in range(len(relatives))]

    def within(self, folder: str) -> ZipSource:
        if not folder:
            return self
        prefix = folder.rstrip("/") + "/"
        members = {name[len(prefix) :]: info for name, info in self._infos.items() if name.startswith(prefix)}
        return ZipSource(self.archive, self.prefix + prefix, members)

    def numbered(self, directory: str, count: int, suffix: str) -> ZipMembers:
        infos = [self._infos[f"{directory}/{number}{suffix}"] for number in range(count)]
        return ZipMembers(self.archive, member_template(self.prefix, directory, suffix), MemberTable.of(infos, self.archive))


class _Members(ZipMembers):
    """Members of any names (the small meta files), numbered in the order given."""

    def __init__(self, archive: str, labels: list[str], table: MemberTable) -> None:
        super().__init__(archive, "", table)
        self._labels = labels

    def label(self, number: int) -> str:
        return self._labels[number]
