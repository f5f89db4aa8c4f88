"""neuroxr.sources: local folders and zip archives as bytes; every member read as ``zipfile`` reads it."""

from __future__ import annotations

import os
import pickle
import struct
import threading
import tracemalloc
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import METHODS, N_FILES, TOP, contents, expect_scan_error, npy, write_folder, write_zip, zip_scan

from neuroxr.errors import ScanError
from neuroxr.sources import FolderFiles, FolderSource, ZipMembers, ZipSource, open_source

@pytest.fixture(params=["folder", *METHODS])
def source(request: pytest.FixtureRequest, tmp_path: Path) -> FolderSource | ZipSource:
    """The same files as a folder, and as zips of each compression method, rooted at ``scan{1}/``."""
    if request.param == "folder":
        return FolderSource(write_folder(tmp_path))
    return ZipSource(write_zip(tmp_path / "a.zip", METHODS[request.param])).within(f"{TOP}/")


def test_listing_skips_clutter(source: FolderSource | ZipSource) -> None:
    listing = {folder: sorted(names) for folder, names in source.listing().items()}
    assert listing == {
        "data/x": sorted(f"{k}.npy" for k in range(N_FILES)),
        "meta": ["a.npy", "empty.bin"],
        "": ["notes.txt"],
    }
    assert source.name == TOP


def test_whole_files_read_like_zipfile(source: FolderSource | ZipSource) -> None:
    files = contents()
    for relative, data in files.items():
        assert source.read(relative) == data, relative
    order = ["meta/a.npy", "data/x/3.npy", "notes.txt", "data/x/0.npy", "meta/empty.bin", "data/x/3.npy"]
    assert source.read_many(order) == [files[relative] for relative in order]


@pytest.mark.parametrize("method", METHODS)
def test_every_compression_method_reads_what_zipfile_reads(tmp_path: Path, method: str) -> None:
    archive = write_zip(tmp_path / "a.zip", METHODS[method])
    source = ZipSource(archive).within(f"{TOP}/")
    series = source.numbered("data/x", N_FILES, ".npy")
    with zipfile.ZipFile(archive) as reference:
        assert {info.compress_type for info in reference.infolist()} == {METHODS[method]}
        for k in range(N_FILES):
            expected = reference.read(f"{TOP}/data/x/{k}.npy")
            assert series.read(k) == expected
            assert series.size(k) == len(expected)
            assert source.read(f"data/x/{k}.npy") == expected
        assert source.read("meta/a.npy") == reference.read(f"{TOP}/meta/a.npy")


def test_labels_name_the_file_as_a_user_finds_it(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "a.zip", zipfile.ZIP_STORED)
    source = ZipSource(archive).within(f"{TOP}/")
    assert source.label("meta/a.npy") == f"{archive}::{TOP}/meta/a.npy"
    assert source.numbered("data/x", N_FILES, ".npy").label(5) == f"{archive}::{TOP}/data/x/5.npy"
    folder = FolderSource(write_folder(tmp_path / "unpacked"))
    assert folder.label("meta/a.npy") == str(tmp_path / "unpacked" / TOP / "meta" / "a.npy")
    assert folder.numbered("data/x", N_FILES, ".npy").label(5) == str(tmp_path / "unpacked" / TOP / "data" / "x" / "5.npy")


def test_within_moves_the_root_down(source: FolderSource | ZipSource) -> None:
    assert source.within("") is source
    data = source.within("data")
    assert data.name == "data"
    assert {folder: sorted(names) for folder, names in data.listing().items()} == {"x": sorted(f"{k}.npy" for k in range(N_FILES))}
    assert data.read("x/2.npy") == contents()["data/x/2.npy"]
    assert data.label("x/2.npy") == source.label("data/x/2.npy")
    assert data.numbered("x", N_FILES, ".npy").read(4) == source.numbered("data/x", N_FILES, ".npy").read(4)


def test_sizes(source: FolderSource | ZipSource) -> None:
    series = source.numbered("data/x", N_FILES, ".npy")
    assert [series.size(k) for k in range(N_FILES)] == [len(contents()[f"data/x/{k}.npy"]) for k in range(N_FILES)]


def test_read_into_never_reads_past_a_file(source: FolderSource | ZipSource) -> None:
    """Buffers larger than the file: the bytes beyond it stay as they were, and the count is the file's size."""
    series = source.numbered("data/x", N_FILES, ".npy")
    numbers = [4, 1, 3, 0, 4]  # any order, repeats, the empty file 0.npy among them
    buffers, expected = [], []
    for number in numbers:
        data = contents()[f"data/x/{number}.npy"]
        head, rest = bytearray(b"\xab" * 10), bytearray(b"\xcd" * (len(data) + 64))
        buffers.append([memoryview(head), memoryview(rest)])
        expected.append((head, rest, data))
    counts = series.read_into(numbers, buffers)
    for count, (head, rest, data) in zip(counts, expected, strict=True):
        assert count == len(data)  # the file's size
        placed = bytes(head + rest)
        assert placed[: len(data)] == data
        untouched = placed[len(data) :]
        assert untouched == (b"\xab" * 10 + b"\xcd" * (len(data) + 64))[len(data) :]


def test_read_into_fills_short_buffers_with_the_leading_bytes(source: FolderSource | ZipSource) -> None:
    """A file longer than its buffers: they get its leading bytes, and the count says it is longer than they are."""
    series = source.numbered("data/x", N_FILES, ".npy")
    first, second = bytearray(5), bytearray(7)
    (count,) = series.read_into([6], [[memoryview(first), memoryview(second)]])
    assert count > 12
    assert bytes(first + second) == contents()["data/x/6.npy"][:12]


def test_series_pickle_small_and_read_the_same(tmp_path: Path) -> None:
    n = 7000
    data = npy(np.zeros(40, np.float32))
    with zipfile.ZipFile(tmp_path / "big.zip", "w") as archive:
        for k in range(n):
            archive.writestr(f"scan/data/responses/{k}.npy", data)
    source = ZipSource(tmp_path / "big.zip").within("scan/")
    series = source.numbered("data/responses", n, ".npy")
    pickled = pickle.dumps(series)
    assert len(pickled) < 200_000, f"a {n}-member series pickles to {len(pickled)} bytes"
    restored = pickle.loads(pickled)
    assert isinstance(restored, ZipMembers)
    assert [restored.read(k) for k in (0, 4321, n - 1)] == [data] * 3
    assert restored.label(4321) == series.label(4321) and restored.size(4321) == len(data)
    with pytest.raises(TypeError, match="not sent to workers"):
        pickle.dumps(source)
    folder_series = pickle.loads(pickle.dumps(FolderSource(tmp_path).numbered("data/x", n, ".npy")))
    assert isinstance(folder_series, FolderFiles) and len(pickle.dumps(folder_series)) < 1000


def _set_encrypted(archive: Path, member: str) -> None:
    """Set the 'encrypted' flag bit of ``member`` in its local and central headers (zipfile cannot write one)."""
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as reference:
        local = reference.getinfo(member).header_offset
    assert data[local : local + 4] == b"PK\x03\x04"
    data[local + 6] |= 0x1
    start = data.find(b"PK\x01\x02")
    found = 0
    while start != -1:
        (name_length,) = struct.unpack_from("<H", data, start + 28)
        if data[start + 46 : start + 46 + name_length].decode() == member:
            data[start + 8] |= 0x1
            found += 1
        start = data.find(b"PK\x01\x02", start + 4)
    assert found == 1
    archive.write_bytes(bytes(data))


def test_an_encrypted_member_is_refused_naming_it(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "a.zip", zipfile.ZIP_STORED)
    member = f"{TOP}/data/x/2.npy"
    _set_encrypted(archive, member)
    with zipfile.ZipFile(archive) as reference, pytest.raises(RuntimeError, match="password required"):
        reference.read(member)  # zipfile sees the flag too
    source = ZipSource(archive).within(f"{TOP}/")
    assert source.read("data/x/1.npy") == contents()["data/x/1.npy"]  # the others still read
    for attempt in (lambda: source.read("data/x/2.npy"), lambda: source.numbered("data/x", N_FILES, ".npy")):
        with pytest.raises(ScanError, match="encrypted") as caught:
            attempt()
        assert caught.value.path == f"{archive}::{member}"


def test_an_encrypted_member_of_a_scan_is_refused_at_open(shared_scan: Path, tmp_path: Path) -> None:
    archive = zip_scan(shared_scan, tmp_path / "scan.zip")
    _set_encrypted(archive, f"{shared_scan.name}/data/behavior/7.npy")
    expect_scan_error(archive, f"scan.zip::{shared_scan.name}/data/behavior/7.npy", "encrypted zip members are not supported")


def test_a_broken_local_header_is_named(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "a.zip", zipfile.ZIP_DEFLATED)
    member = f"{TOP}/data/x/5.npy"
    with zipfile.ZipFile(archive) as reference:
        offset = reference.getinfo(member).header_offset
    data = bytearray(archive.read_bytes())
    data[offset : offset + 4] = b"XX\x03\x04"
    archive.write_bytes(bytes(data))
    series = ZipSource(archive).within(f"{TOP}/").numbered("data/x", N_FILES, ".npy")
    assert series.read(4) == contents()["data/x/4.npy"]
    with pytest.raises(ScanError, match="no local header where the central directory points") as caught:
        series.read(5)
    assert caught.value.path == f"{archive}::{member}"


def test_corrupt_zip(scan_folder: Path, tmp_path: Path) -> None:
    archive = zip_scan(scan_folder, tmp_path / "scan.zip", zipfile.ZIP_DEFLATED)
    data = bytearray(archive.read_bytes())
    data[-30:] = b"\x00" * 30  # break the end of the central directory
    (tmp_path / "broken.zip").write_bytes(bytes(data))
    expect_scan_error(tmp_path / "broken.zip", "broken.zip", "not a readable zip archive")
    with zipfile.ZipFile(archive) as z:
        info = z.getinfo(f"{scan_folder.name}/data/responses/4.npy")
    data = bytearray(archive.read_bytes())
    start = info.header_offset + 30 + len(info.filename)
    data[start + 2 : start + 40] = b"\xff" * 38  # damage the deflate stream
    (tmp_path / "damaged.zip").write_bytes(bytes(data))
    expect_scan_error(tmp_path / "damaged.zip", "damaged.zip::", "data/responses/4.npy", compute=True)


def test_open_source_dispatches_on_what_is_there(tmp_path: Path) -> None:
    folder = write_folder(tmp_path)
    archive = write_zip(tmp_path / "a.zip", zipfile.ZIP_STORED)
    assert isinstance(open_source(folder), FolderSource)
    assert isinstance(open_source(archive), ZipSource) and open_source(archive).name == "a"
    assert open_source(os.fspath(archive)).listing() == ZipSource(archive).listing()
    with pytest.raises(ScanError, match="no such file or folder") as caught:
        open_source(tmp_path / "missing")
    assert caught.value.path == str(tmp_path / "missing")
    if hasattr(os, "mkfifo"):  # a FIFO named like an archive is not missing: it is said what it is, without blocking
        os.mkfifo(tmp_path / "pipe.zip")
        with pytest.raises(ScanError, match="pipe.zip: is a FIFO, not a regular file"):
            open_source(tmp_path / "pipe.zip")
    (tmp_path / "notes.zip").write_bytes(b"plain text")
    with pytest.raises(ScanError, match="not a readable zip archive"):
        open_source(tmp_path / "notes.zip")


# ------------------------------------------------------------------------------------------------
# every read verified: CRC-32, the local header's name, declared sizes (zip bombs), special files


def _payload_offset(archive: Path, member: str) -> int:
    with zipfile.ZipFile(archive) as reference:
        info = reference.getinfo(member)
    return info.header_offset + 30 + len(info.filename.encode())


@pytest.mark.parametrize("method", ["stored", "deflated"])
def test_a_flipped_bit_in_a_member_is_refused_by_its_crc(tmp_path: Path, method: str) -> None:
    archive = write_zip(tmp_path / "a.zip", METHODS[method])
    member = f"{TOP}/data/x/6.npy"
    data = bytearray(archive.read_bytes())
    data[_payload_offset(archive, member) + 20] ^= 0x10
    archive.write_bytes(bytes(data))
    with zipfile.ZipFile(archive) as reference, pytest.raises((zipfile.BadZipFile, zlib.error)):
        reference.read(member)  # zipfile refuses it too
    source = ZipSource(archive).within(f"{TOP}/")
    series = source.numbered("data/x", N_FILES, ".npy")
    assert series.read(5) == contents()["data/x/5.npy"]
    for attempt in (lambda: series.read(6), lambda: source.read("data/x/6.npy"),
                    lambda: series.read_into([6], [[memoryview(bytearray(1000))]])):  # fmt: skip
        with pytest.raises(ScanError, match="corrupt zip member") as caught:
            attempt()
        assert caught.value.path == f"{archive}::{member}"


@pytest.mark.parametrize("method", METHODS)
def test_a_members_leading_bytes_are_inflated_from_a_prefix_and_verified_only_when_read_whole(tmp_path: Path, method: str) -> None:
    """A header read inflates only the start of the member: a flipped bit far past it goes unseen there,
    and is refused by the CRC-32 of a whole read (which ``validate`` and every computation make)."""
    rng = np.random.default_rng(3)
    payload = npy(np.cumsum(rng.standard_normal(60_000)).astype("f4"))  # ~240 kB, compressible but not trivially
    archive = write_zip(tmp_path / "a.zip", METHODS[method], {"data/x/0.npy": payload})
    member = f"{TOP}/data/x/0.npy"
    with zipfile.ZipFile(archive) as reference:
        info = reference.getinfo(member)
    series = ZipSource(archive).within(f"{TOP}/").numbered("data/x", 1, ".npy")
    for wanted in (1, 128, 256, 5000):
        buffer = bytearray(wanted)
        assert series.read_into([0], [[memoryview(buffer)]]) == [len(payload)]
        assert bytes(buffer) == payload[:wanted]
    data = bytearray(archive.read_bytes())
    data[_payload_offset(archive, member) + info.compress_size - 10] ^= 0x10  # near the end of the member
    archive.write_bytes(bytes(data))
    series = ZipSource(archive).within(f"{TOP}/").numbered("data/x", 1, ".npy")
    if METHODS[method] != zipfile.ZIP_BZIP2:  # bzip2 decodes whole blocks: its one block is inflated (and refused) whole
        buffer = bytearray(256)
        series.read_into([0], [[memoryview(buffer)]])
        assert bytes(buffer) == payload[:256]
    with pytest.raises(ScanError, match="corrupt zip member"):
        series.read(0)


def test_leading_bytes_behind_a_long_run_of_empty_deflate_blocks_are_read_from_all_of_the_data(tmp_path: Path) -> None:
    """A prefix of the usual length inflates to nothing here (empty stored blocks first): the rest is read."""
    payload = npy(np.arange(1000, dtype="f4"))
    packer = zlib.compressobj(6, zlib.DEFLATED, -15)
    raw = b"\x00\x00\x00\xff\xff" * 2000 + packer.compress(payload) + packer.flush()  # 2,000 empty non-final blocks
    archive = _raw_zip(tmp_path / "a.zip", "s/data/x/0.npy", zipfile.ZIP_DEFLATED, raw, len(payload), zlib.crc32(payload))
    assert zlib.decompress(raw, -15) == payload
    series = ZipSource(archive).within("s/").numbered("data/x", 1, ".npy")
    buffer = bytearray(256)
    assert series.read_into([0], [[memoryview(buffer)]]) == [len(payload)]
    assert bytes(buffer) == payload[:256]
    assert series.read(0) == payload


def test_a_directory_entry_pointing_at_another_member_is_refused(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "a.zip", zipfile.ZIP_STORED, {f"data/x/{k}.npy": npy(np.arange(4, dtype="f4")) for k in range(2)})
    with zipfile.ZipFile(archive) as reference:
        first, second = (reference.getinfo(f"{TOP}/data/x/{k}.npy") for k in range(2))
    data = bytearray(archive.read_bytes())
    entry = data.find(b"PK\x01\x02")
    while data[entry + 46 : entry + 46 + len(second.filename)] != second.filename.encode():
        entry = data.find(b"PK\x01\x02", entry + 4)
    struct.pack_into("<L", data, entry + 42, first.header_offset)  # 1.npy's entry now points at 0.npy's data
    archive.write_bytes(bytes(data))
    with zipfile.ZipFile(archive) as reference, pytest.raises(zipfile.BadZipFile, match="differ"):
        reference.read(second.filename)
    series = ZipSource(archive).within(f"{TOP}/").numbered("data/x", 2, ".npy")
    with pytest.raises(ScanError, match="the local header names .*0.npy.*not the member") as caught:
        series.read(1)
    assert caught.value.path == f"{archive}::{second.filename}"


def _raw_zip(path: Path, name: str, method: int, raw: bytes, declared: int, crc: int) -> Path:
    """An archive of one member written by hand: any compressed bytes under any declared size and CRC."""
    encoded = name.encode()
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0, crc, len(raw), declared, len(encoded), 0)
    central = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 0, crc, len(raw), declared,
                          len(encoded), 0, 0, 0, 0, 0, 0)  # fmt: skip
    directory_at = len(local) + len(encoded) + len(raw)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(central) + len(encoded), directory_at, 0)
    path.write_bytes(local + encoded + raw + central + encoded + end)
    return path


def _deflated_zeros(megabytes: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(2**20)
    return b"".join(packer.compress(chunk) for _ in range(megabytes)) + packer.flush()


def test_a_zip_bomb_is_refused_within_a_memory_bound(tmp_path: Path) -> None:
    """A member that inflates to 200 MB under a declared 40 kB, and one that declares 4 GB: refused, never inflated."""
    bomb = _deflated_zeros(200)
    small = _raw_zip(tmp_path / "bomb.zip", "s/data/x/0.npy", zipfile.ZIP_DEFLATED, bomb, 40_000, zlib.crc32(bytes(40_000)))
    huge = _raw_zip(tmp_path / "huge.zip", "s/data/x/0.npy", zipfile.ZIP_DEFLATED, bomb[:100_000], 0xFFFFFFF0, 0)
    tracemalloc.start()
    try:
        with pytest.raises(ScanError, match="does not inflate to 40000 bytes") as caught:
            ZipSource(small).read("s/data/x/0.npy")
        assert caught.value.path == f"{small}::s/data/x/0.npy"
        with pytest.raises(ScanError, match="more than deflate can produce"):
            ZipSource(huge).within("s/").numbered("data/x", 1, ".npy")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, f"peak {peak / 2**20:.0f} MB"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_special_files_are_refused_without_blocking_or_reading_them_whole(tmp_path: Path) -> None:
    """A FIFO, a link to /dev/zero, a link loop and a folder where files belong: refused at once, each named."""
    folder = write_folder(tmp_path)
    fifo, zero, loop, directory = (folder / "data" / "x" / f"{k}.npy" for k in (1, 2, 3, 4))
    for path in (fifo, zero, loop, directory):
        path.unlink()
    os.mkfifo(fifo)
    zero.symlink_to("/dev/zero")
    loop.symlink_to(loop.with_name("3b.npy"))
    loop.with_name("3b.npy").symlink_to(loop)
    directory.mkdir()
    source = FolderSource(folder)
    series = source.numbered("data/x", N_FILES, ".npy")
    expected = {1: "is a FIFO", 2: "is a character device", 3: "loop of symbolic links", 4: "is a folder"}
    done = threading.Event()
    problems: dict[int, str] = {}

    def attempt() -> None:
        for number in expected:
            with pytest.raises(ScanError) as caught:
                series.read(number)
            assert caught.value.path == series.label(number)
            problems[number] = caught.value.problem
            buffer = bytearray(64)
            try:  # the fast path reads at most the buffer (and one more byte), or refuses
                assert series.read_into([number], [[memoryview(buffer)]])[0] <= 65
            except ScanError as error:
                assert error.path == series.label(number)
        with pytest.raises(ScanError, match="character device"):
            source.read("data/x/2.npy")
        done.set()

    tracemalloc.start()
    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout=20)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert done.is_set(), "a read blocked or failed"
    assert peak < 20 * 2**20
    for number, fragment in expected.items():
        assert fragment in problems[number], problems[number]


def test_zip64_end_records_are_read_as_zipfile_reads_them(tmp_path: Path) -> None:
    """Python's zipfile writes zip64 end records once the directory lies past 2 GB, even with 32-bit values in the end record."""
    archive = write_zip(tmp_path / "a.zip", zipfile.ZIP_DEFLATED)
    data = archive.read_bytes()
    end = data.rfind(b"PK\x05\x06")
    _, _, _, _, entries, size, offset, _ = struct.unpack_from("<4s4H2LH", data, end)
    record = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, size, offset)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, end, 1)
    (tmp_path / "z64.zip").write_bytes(data[:end] + record + locator + data[end:])
    with zipfile.ZipFile(tmp_path / "z64.zip") as reference:
        expected = {info.filename: reference.read(info) for info in reference.infolist()}
    source = ZipSource(tmp_path / "z64.zip").within(f"{TOP}/")
    for relative, content in contents().items():
        assert source.read(relative) == content == expected[f"{TOP}/{relative}"]
    damaged = bytearray(data[:end] + record + locator + data[end:])
    damaged[end + 1] ^= 0xFF  # the zip64 record's signature
    (tmp_path / "bad64.zip").write_bytes(bytes(damaged))
    with pytest.raises(ScanError, match="corrupt zip64 end record"):
        ZipSource(tmp_path / "bad64.zip")


def test_a_zip64_directory_that_the_end_record_does_not_announce(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """zipfile writes zip64 end records as soon as the directory starts past 2 GiB, with the plain end
    record still holding the true values (no 0xFFFFFFFF mark): every archive of more than 2 GiB it writes,
    a 2023 video scan among them. A lower limit makes zipfile write one of a few kilobytes."""
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 2000)  # zipfile's own constant: members past 2 kB get zip64 offsets
    archive = write_zip(tmp_path / "zip64.zip", zipfile.ZIP_DEFLATED)
    monkeypatch.undo()
    data = archive.read_bytes()
    end = data.rfind(b"PK\x05\x06")
    assert data[end - 20 : end - 16] == b"PK\x06\x07" and b"PK\x06\x06" in data[end - 76 : end - 72]  # zip64 records ...
    assert struct.unpack_from("<I", data, end + 16)[0] != 0xFFFFFFFF  # ... that the end record does not mark
    source = ZipSource(archive).within(f"{TOP}/")
    with zipfile.ZipFile(archive) as reference:
        for relative in contents():
            assert source.read(relative) == reference.read(f"{TOP}/{relative}")


def _use_after_fork(queue: Any) -> None:
    from neuroxr.sources.remote import INFLATE_THREADS

    queue.put(INFLATE_THREADS.get().submit(os.getpid).result(timeout=10))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_process_wide_thread_pools_are_made_anew_in_a_forked_child() -> None:
    """A forked DataLoader worker inherits the pool object but not its threads: it must make its own."""
    import multiprocessing

    from neuroxr.sources.remote import INFLATE_THREADS

    assert INFLATE_THREADS.get().submit(os.getpid).result() == os.getpid()
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_use_after_fork, args=(queue,))
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0 and queue.get(timeout=1) == child.pid


# ----------------------------------------------------------------------------------------------
# regression guard that times nothing: one read system call per file or member


def _read_calls() -> int:
    """Read system calls (read, pread, preadv, ...) this thread has made so far (Linux' per-thread I/O accounting)."""
    with open("/proc/thread-self/io") as accounting:
        return int(next(line.split()[1] for line in accounting if line.startswith("syscr")))


@pytest.mark.skipif(not os.path.exists("/proc/thread-self/io"), reason="no per-thread I/O accounting here")
@pytest.mark.parametrize("kind", ["folder", "stored", "deflated"])
def test_read_into_makes_one_read_call_per_file_or_member(tmp_path: Path, kind: str) -> None:
    """A zip member's local header is read with its data (one ``preadv``), a file with its folder opened once per batch;
    members whose extra fields differ in length from the one before are read again from where their data starts."""
    n, data = 60, [npy(np.full(300 + k % 3, k, np.float32)) for k in range(60)]
    if kind == "folder":
        (tmp_path / "s" / "data" / "x").mkdir(parents=True)
        for k, payload in enumerate(data):
            (tmp_path / "s" / "data" / "x" / f"{k}.npy").write_bytes(payload)
        series = FolderSource(tmp_path / "s").numbered("data/x", n, ".npy")
    else:
        with zipfile.ZipFile(tmp_path / "a.zip", "w", METHODS[kind]) as archive:
            for k, payload in enumerate(data):
                info = zipfile.ZipInfo(f"s/data/x/{k}.npy")
                info.compress_type = METHODS[kind]
                if k >= n - 2:  # the last two members: local extra fields of another length than the rest's
                    info.extra = struct.pack("<HH", 0xCAFE, 4 * (k % 2 + 1)) + bytes(4 * (k % 2 + 1))
                archive.writestr(info, payload)
        series = ZipSource(tmp_path / "a.zip").within("s/").numbered("data/x", n, ".npy")
    buffers = [bytearray(len(payload)) for payload in data]
    before = _read_calls()
    sizes = series.read_into(list(range(n)), [[memoryview(buffer)] for buffer in buffers])
    calls = _read_calls() - before - 1  # the accounting file's own read
    assert [bytes(buffer) for buffer in buffers] == data and sizes == [len(payload) for payload in data]
    assert calls == n + (2 if kind != "folder" else 0), f"{calls} read calls for {n} files"


# ----------------------------------------------------------------------------------------------
# regression guard that times nothing: a deflated member read whole inflates into its buffer, no copy


def _exports_libdeflate() -> bool:
    """Whether the installed ``deflate`` package's extension exports libdeflate's C functions (asked with ctypes, not neuroxr)."""
    import ctypes

    import deflate

    try:
        return hasattr(ctypes.CDLL(deflate._deflate.__file__), "libdeflate_deflate_decompress_ex")
    except (AttributeError, OSError):
        return False


def _deflated_series(tmp_path: Path, n: int, size: int) -> tuple[ZipMembers, list[bytes]]:
    rng = np.random.default_rng(5)
    data = [npy(np.cumsum(rng.integers(-2, 3, size // 4)).astype("f4")) for _ in range(n)]  # compressible, not trivially
    archive = write_zip(tmp_path / "a.zip", zipfile.ZIP_DEFLATED, {f"data/x/{k}.npy": payload for k, payload in enumerate(data)})
    return ZipSource(archive).within(f"{TOP}/").numbered("data/x", n, ".npy"), data


def test_a_deflated_member_read_whole_is_inflated_into_its_one_buffer(tmp_path: Path) -> None:
    """``read`` allocates the member's buffer and nothing more of its size: libdeflate writes straight into it
    (``deflate.deflate_decompress`` made a second buffer of the member's size, then copied it: 2.2x its size)."""
    from neuroxr.sources.zipmember import INFLATER

    if not _exports_libdeflate():
        assert INFLATER == "deflate-package"
        pytest.skip("this build of the deflate package does not export libdeflate's functions")
    assert INFLATER == "libdeflate-ctypes"
    series, data = _deflated_series(tmp_path, 3, 400_000)
    assert series.read(0) == data[0]
    tracemalloc.start()
    try:
        got = series.read(1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == data[1]
    assert peak < len(data[1]) * 1.25, f"{peak} bytes allocated at the peak of reading one member of {len(data[1])} bytes"


def test_without_the_libdeflate_binding_members_read_the_same(tmp_path: Path) -> None:
    """A build of the deflate package whose extension neuroxr cannot bind falls back to ``deflate.deflate_decompress``,
    says so, and reads, verifies and refuses as before (a process where the extension module is hidden)."""
    import subprocess
    import sys

    archive = write_zip(tmp_path / "a.zip", zipfile.ZIP_DEFLATED)
    data = bytearray(archive.read_bytes())
    data[_payload_offset(archive, f"{TOP}/data/x/6.npy") + 20] ^= 0x10
    (tmp_path / "bad.zip").write_bytes(bytes(data))
    code = f"""
import deflate, zipfile
del deflate._deflate
from neuroxr.errors import ScanError
from neuroxr.sources import ZipSource
from neuroxr.sources.zipmember import INFLATER
print(INFLATER)
series = ZipSource({str(archive)!r}).within({TOP + "/"!r}).numbered("data/x", {N_FILES}, ".npy")
with zipfile.ZipFile({str(archive)!r}) as reference:
    assert all(series.read(k) == reference.read({TOP!r} + f"/data/x/{{k}}.npy") for k in range({N_FILES}))
try:
    ZipSource({str(tmp_path / "bad.zip")!r}).within({TOP + "/"!r}).numbered("data/x", {N_FILES}, ".npy").read(6)
except ScanError as error:
    print(error.problem.split(":")[0])
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["deflate-package", "corrupt zip member"]
