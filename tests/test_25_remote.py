"""Remote sources: a .zip on a real HTTP server on 127.0.0.1 that honours Range requests, and ``file://`` URLs."""

from __future__ import annotations

import io
import pickle
import re
import struct
import threading
import zipfile
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from conftest import METHODS, N_FILES, TOP, contents, write_tiny_scan, write_zip, zip_scan

import neuroxr
from neuroxr.cli import main
from neuroxr.sources import RemoteFolderSource, RemoteZipSource, open_source
from neuroxr.sources.remote import EXTRA_SLACK

pytest.importorskip("fsspec")
pytest.importorskip("aiohttp")


class RangeHandler(SimpleHTTPRequestHandler):
    """Static files with single-range support; counts the body bytes it serves."""

    served: list[int]

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def send_head(self):  # type: ignore[override]
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return None
        size = path.stat().st_size
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        start, end = 0, size - 1
        if match:
            start = int(match.group(1))
            end = min(int(match.group(2)) if match.group(2) else size - 1, size - 1)
        with path.open("rb") as file:
            file.seek(start)
            body = file.read(end + 1 - start)
        if match:
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if self.command == "GET":
            self.served.append(len(body))
        return io.BytesIO(body if self.command == "GET" else b"")


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path, list[int]]]:
    served: list[int] = []
    handler = type("CountingHandler", (RangeHandler,), {"served": served})
    server_class = type("Server", (ThreadingHTTPServer,), {"request_queue_size": 256, "daemon_threads": True})
    server = server_class(("127.0.0.1", 0), partial(handler, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path, served
    finally:
        server.shutdown()
        server.server_close()


# ----------------------------------------------------------------------------------------------
# scans over HTTP


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_remote_zip_is_read_in_place_with_range_requests(http_root, compression: int) -> None:
    url, root, served = http_root
    scan = write_tiny_scan(root / "src", n_trials=60, n_neurons=20, image_shape=(1, 72, 128))
    archive = zip_scan(scan, root / "scan.zip", compression)
    local = neuroxr.open_scan(archive).load()

    remote = neuroxr.open_scan(f"{url}/scan.zip", chunks=20)
    opened = sum(served)
    assert opened < archive.stat().st_size / 5, "opening fetched more than the directory and meta arrays"
    responses = remote.responses.mean("trial").compute()
    xr.testing.assert_allclose(responses, local.responses.mean("trial"), rtol=1e-6)
    fetched = sum(served) - opened
    images_bytes = 60 * 72 * 128 * 4
    assert fetched < images_bytes / 4, "computing on responses must not download the images"

    xr.testing.assert_identical(remote.load(), local)
    assert sum(served) < 1.5 * archive.stat().st_size


@pytest.mark.parametrize("compression", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA], ids=["bzip2", "lzma"])
def test_remote_scans_in_bzip2_and_lzma_zips(http_root, shared_scan: Path, compression: int) -> None:
    url, root, _ = http_root
    archive = zip_scan(shared_scan, root / "scan.zip", compression)
    xr.testing.assert_identical(neuroxr.open_scan(f"{url}/scan.zip").load(), neuroxr.open_scan(archive).load())


def test_neuroxr_open_accepts_urls(http_root) -> None:
    url, root, _ = http_root
    scan = write_tiny_scan(root / "src")
    zip_scan(scan, root / "scan.zip")
    ds = neuroxr.open(f"{url}/scan.zip")
    np.testing.assert_array_equal(ds.responses.values, neuroxr.open_scan(scan).responses.values)


def test_remote_errors_name_the_url(http_root) -> None:
    url, root, _ = http_root
    (root / "junk.zip").write_bytes(b"not a zip at all")
    with pytest.raises(neuroxr.ScanError, match="junk.zip"):
        neuroxr.open_scan(f"{url}/junk.zip")
    with pytest.raises(neuroxr.ScanError, match="missing.zip"):
        neuroxr.open_scan(f"{url}/missing.zip")


def test_fsspec_folder_url(tmp_path: Path) -> None:
    scan = write_tiny_scan(tmp_path)
    remote = neuroxr.open_scan(f"file://{scan}")
    xr.testing.assert_identical(remote.load(), neuroxr.open_scan(scan).load())


# ----------------------------------------------------------------------------------------------
# the remote zip source, member by member


@pytest.mark.parametrize("method", METHODS)
def test_every_compression_method_reads_what_zipfile_reads(http_root, method: str) -> None:
    url, root, _ = http_root
    archive = write_zip(root / "a.zip", METHODS[method])
    source = open_source(f"{url}/a.zip")
    assert isinstance(source, RemoteZipSource) and source.name == "a"
    source = source.within(f"{TOP}/")
    assert source.name == TOP
    series = source.numbered("data/x", N_FILES, ".npy")
    with zipfile.ZipFile(archive) as reference:
        expected = [reference.read(f"{TOP}/data/x/{k}.npy") for k in range(N_FILES)]
    assert series.fetch([3, 0, 6, 3]) == [expected[3], expected[0], expected[6], expected[3]]
    assert [series.read(k) for k in range(N_FILES)] == expected
    assert [series.size(k) for k in range(N_FILES)] == [len(data) for data in expected]
    order = ["notes.txt", "data/x/5.npy", "meta/a.npy"]
    assert source.read_many(order) == [contents()[relative] for relative in order]
    assert source.label("meta/a.npy") == f"{url}/a.zip::{TOP}/meta/a.npy"
    assert series.label(2) == f"{url}/a.zip::{TOP}/data/x/2.npy"


def test_read_into_never_reads_past_a_member(http_root) -> None:
    url, root, _ = http_root
    write_zip(root / "a.zip", zipfile.ZIP_STORED)
    series = RemoteZipSource(f"{url}/a.zip").within(f"{TOP}/").numbered("data/x", N_FILES, ".npy")
    data = contents()["data/x/5.npy"]
    buffer = bytearray(b"\xab" * (len(data) + 100))
    assert series.read_into([5], [[memoryview(buffer)]]) == [len(data)]
    assert bytes(buffer[: len(data)]) == data and bytes(buffer[len(data) :]) == b"\xab" * 100


def test_remote_series_pickle_small_and_read_the_same(http_root) -> None:
    url, root, _ = http_root
    write_zip(root / "a.zip", zipfile.ZIP_DEFLATED)
    series = RemoteZipSource(f"{url}/a.zip").within(f"{TOP}/").numbered("data/x", N_FILES, ".npy")
    pickled = pickle.dumps(series)
    assert len(pickled) < 2_000
    assert pickle.loads(pickled).read(4) == contents()["data/x/4.npy"]


def test_a_member_that_cannot_be_fetched_is_named(http_root) -> None:
    url, root, _ = http_root
    archive = write_zip(root / "a.zip", zipfile.ZIP_DEFLATED)
    source = RemoteZipSource(f"{url}/a.zip").within(f"{TOP}/")
    series = source.numbered("data/x", N_FILES, ".npy")
    archive.unlink()  # gone from the server after opening
    with pytest.raises(neuroxr.ScanError, match="cannot be fetched") as caught:
        series.read(2)
    assert caught.value.path == f"{url}/a.zip::{TOP}/data/x/2.npy"
    with pytest.raises(neuroxr.ScanError, match="cannot be fetched") as caught:
        source.read_many(["meta/a.npy"])
    assert caught.value.path == f"{url}/a.zip::{TOP}/meta/a.npy"


def test_a_file_of_a_remote_folder_that_cannot_be_fetched_is_named(tmp_path: Path) -> None:
    scan = write_tiny_scan(tmp_path)
    source = open_source(f"file://{scan}")
    assert isinstance(source, RemoteFolderSource)
    series = source.numbered("data/responses", 24, ".npy")
    assert series.read(3) == (scan / "data/responses/3.npy").read_bytes()
    (scan / "data/responses/3.npy").unlink()
    with pytest.raises(neuroxr.ScanError, match="cannot be fetched") as caught:
        series.read(3)
    assert caught.value.path == f"file://{scan}/data/responses/3.npy"
    with pytest.raises(neuroxr.ScanError, match="nothing found there"):
        open_source(f"file://{tmp_path}/empty-or-missing")


def test_a_corrupt_local_header_is_a_scan_error(http_root) -> None:
    url, root, _ = http_root
    archive = write_zip(root / "a.zip", zipfile.ZIP_STORED)
    member = f"{TOP}/data/x/5.npy"
    with zipfile.ZipFile(archive) as reference:
        offset = reference.getinfo(member).header_offset
    data = bytearray(archive.read_bytes())
    data[offset : offset + 4] = b"PK\x05\x06"  # another record's signature where the local header should be
    archive.write_bytes(bytes(data))
    series = RemoteZipSource(f"{url}/a.zip").within(f"{TOP}/").numbered("data/x", N_FILES, ".npy")
    assert series.read(4) == contents()["data/x/4.npy"]
    with pytest.raises(neuroxr.ScanError, match="no local header where the central directory points") as caught:
        series.read(5)
    assert caught.value.path == f"{url}/a.zip::{member}"


@pytest.mark.parametrize("method", ["stored", "deflated"])
def test_a_local_extra_field_longer_than_the_first_range(http_root, method: str) -> None:
    """The first range of a member covers EXTRA_SLACK bytes of local extra field; a longer one costs a second request."""
    url, root, served = http_root
    files = contents()
    with zipfile.ZipFile(root / "a.zip", "w") as archive:
        for relative, data in files.items():
            info = zipfile.ZipInfo(f"{TOP}/{relative}")
            if relative.startswith("data/"):
                info.extra = struct.pack("<HH", 0x4E58, EXTRA_SLACK + 144) + b"\x00" * (EXTRA_SLACK + 144)
            archive.writestr(info, data, compress_type=METHODS[method])
    raw = (root / "a.zip").read_bytes()
    with zipfile.ZipFile(root / "a.zip") as reference:
        offset = reference.getinfo(f"{TOP}/data/x/6.npy").header_offset
    assert struct.unpack_from("<H", raw, offset + 28)[0] > EXTRA_SLACK  # the local header's own extra length
    series = RemoteZipSource(f"{url}/a.zip").within(f"{TOP}/").numbered("data/x", N_FILES, ".npy")
    before = len(served)
    assert series.fetch(list(range(N_FILES))) == [files[f"data/x/{k}.npy"] for k in range(N_FILES)]
    assert len(served) - before == 2 * N_FILES  # one batch of ranges, then the rest of each member


# ----------------------------------------------------------------------------------------------
# neuroxr validate on URLs (it once reported every file of a URL unreadable)


def test_validate_a_healthy_scan_behind_file_urls(shared_scan: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = zip_scan(shared_scan, tmp_path / "scan.zip", zipfile.ZIP_DEFLATED)
    for url in (f"file://{shared_scan}", f"file://{archive}"):
        assert main(["validate", "-q", url]) == 0, url
        out = capsys.readouterr().out
        assert "problem" not in out and out.rstrip().endswith(": ok"), out
        assert "96 trial files in 4 variables" in out


def test_validate_names_a_truncated_file_behind_a_url(scan_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    victim = scan_folder / "data" / "images" / "9.npy"
    victim.write_bytes(victim.read_bytes()[:-4])
    assert main(["validate", "-q", f"file://{scan_folder}"]) == 1
    out = capsys.readouterr().out
    assert f"file://{scan_folder}/data/images/9.npy: truncated" in out and "1 problem" in out
