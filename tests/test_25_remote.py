"""Remote sources: a .zip on a real HTTP server on 127.0.0.1 that honours Range requests, and ``file://`` URLs."""

from __future__ import annotations

import io
import os
import pickle
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr
from conftest import METHODS, N_FILES, TOP, contents, eager, write_tiny_dynamic_scan, write_tiny_scan, write_zip, zip_scan

import neuroxr
from neuroxr.cli import main
from neuroxr.sources import RemoteFolderSource, RemoteZipSource, open_source
from neuroxr.sources.remote import EXTRA_SLACK, MERGE_GAP

pytest.importorskip("fsspec")
pytest.importorskip("aiohttp")


class RangeHandler(SimpleHTTPRequestHandler):
    """Static files with single-range support, ETag and Last-Modified; counts the body bytes it serves.

    ``faults`` makes it misbehave, from the request numbered ``faults["after"]`` on (GET requests
    counted from 0): ``ignore-range`` (200 and the whole file), ``wrong-range`` (the bytes one
    further on), ``truncate`` (half the body, then the connection closed), ``drop`` (no answer),
    ``stall`` (no answer for ``faults["seconds"]``), ``500`` (``faults["times"]`` server errors, then
    the right answer), ``401`` (unauthorised), ``no-version`` (no ETag or Last-Modified).
    """

    served: list[int]
    faults: dict[str, object]
    count: list[int]

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def _fault(self) -> str | None:
        if self.command != "GET":
            return None
        self.count[0] += 1
        mode = self.faults.get("mode")
        return str(mode) if mode and self.count[0] > int(self.faults.get("after", 0)) else None  # type: ignore[call-overload]

    def send_head(self):  # type: ignore[override]
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return None
        fault = self._fault()
        if fault == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return None
        if fault == "stall":
            time.sleep(float(self.faults.get("seconds", 5)))  # type: ignore[arg-type]
            self.close_connection = True
            return None
        if fault == "401":
            self.send_error(401)
            return None
        if fault == "500" and int(self.faults.get("times", 1)) > 0:  # type: ignore[call-overload]
            self.faults["times"] = int(self.faults.get("times", 1)) - 1  # type: ignore[call-overload]
            self.send_error(500)
            return None
        info = path.stat()
        size = info.st_size
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if fault == "ignore-range":
            match = None
        start, end = 0, size - 1
        if match:
            start = int(match.group(1))
            end = min(int(match.group(2)) if match.group(2) else size - 1, size - 1)
        shift = 1 if fault == "wrong-range" and end + 1 < size else 0
        with path.open("rb") as file:
            file.seek(start + shift)
            body = file.read(end + 1 - start)
        if match:
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start + shift}-{end + shift}/{size}")
        else:
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        if fault != "no-version" and self.faults.get("mode") != "no-version":
            self.send_header("ETag", f'"{info.st_mtime_ns:x}-{size:x}"')
            self.send_header("Last-Modified", self.date_time_string(int(info.st_mtime)))
        self.end_headers()
        if fault == "truncate":
            body = body[: len(body) // 2]
            self.close_connection = True
        if self.command == "GET":
            self.served.append(len(body))
        return io.BytesIO(body if self.command == "GET" else b"")


def serve(root: Path, faults: dict[str, object] | None = None) -> tuple[ThreadingHTTPServer, list[int]]:
    """A server of the files under ``root`` on 127.0.0.1 (see :class:`RangeHandler`), running in a thread."""
    served: list[int] = []
    attributes = {"served": served, "faults": {} if faults is None else faults, "count": [0]}
    handler = type("CountingHandler", (RangeHandler,), attributes)
    server_class = type("Server", (ThreadingHTTPServer,), {"request_queue_size": 256, "daemon_threads": True})
    server = server_class(("127.0.0.1", 0), partial(handler, directory=str(root)))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    return server, served


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path, list[int]]]:
    server, served = serve(tmp_path)
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


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_opening_a_remote_video_scan_reads_no_video(http_root, compression: int) -> None:
    url, root, served = http_root
    scan = write_tiny_dynamic_scan(root / "src", n_trials=40, n_neurons=5, video_shape=(36, 64), frames=40)
    archive = zip_scan(scan, root / "video.zip", compression)
    remote = neuroxr.open_scan(f"{url}/video.zip")
    videos_bytes = sum(path.stat().st_size for path in (scan / "data" / "videos").iterdir())
    meta_bytes = sum(path.stat().st_size for path in (scan / "meta").rglob("*.npy"))  # time-resolved statistics among them
    assert sum(served) - meta_bytes < videos_bytes / 10, "opening fetched videos"
    np.testing.assert_array_equal(remote.n_frames.values, neuroxr.open_scan(scan).n_frames.values)
    xr.testing.assert_identical(remote.load(), neuroxr.open_scan(archive).load())


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


def test_file_urls_of_a_zip_and_a_folder_in_a_fresh_process(tmp_path: Path) -> None:
    """What a user's first call does, before anything else imported fsspec's event loop machinery."""
    scan = write_tiny_scan(tmp_path)
    archive = zip_scan(scan, tmp_path / "scan.zip", zipfile.ZIP_DEFLATED)
    code = (
        "import sys, neuroxr\n"
        "for url in sys.argv[1:]:\n"
        "    print(float(neuroxr.open_scan(url).responses.sum()))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, f"file://{archive}", f"file://{scan}/"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    expected = float(neuroxr.open_scan(scan).responses.sum())
    assert [float(line) for line in done.stdout.split()] == [expected, expected]


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
    with pytest.raises(neuroxr.RemoteError, match=r"not found \(HTTP 404\)") as caught:
        series.read(2)
    assert caught.value.path == f"{url}/a.zip::{TOP}/data/x/2.npy" and caught.value.reason == "not found"
    with pytest.raises(neuroxr.RemoteError, match="not found") as caught:
        source.read_many(["meta/a.npy"])
    assert caught.value.path == f"{url}/a.zip::{TOP}/meta/a.npy"


def test_a_file_of_a_remote_folder_that_cannot_be_fetched_is_named(tmp_path: Path) -> None:
    scan = write_tiny_scan(tmp_path)
    source = open_source(f"file://{scan}")
    assert isinstance(source, RemoteFolderSource)
    series = source.numbered("data/responses", 24, ".npy")
    assert series.read(3) == (scan / "data/responses/3.npy").read_bytes()
    (scan / "data/responses/3.npy").unlink()
    with pytest.raises(neuroxr.RemoteError, match="not found") as caught:
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
    assert len(served) - before == 2  # adjacent members in one merged range, then the rest of the last one
    before = len(served)
    assert series.fetch([2, 5]) == [files["data/x/2.npy"], files["data/x/5.npy"]]
    assert len(served) - before <= 4  # at most one range and its rest per member


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


# ----------------------------------------------------------------------------------------------
# a server that misbehaves: every bad answer refused, named, in bounded time; nothing wrong is returned

FAST = {"timeout": 0.5, "retries": 1}


def within(seconds: float, action: Callable[[], object]) -> object:
    """Run ``action`` in a thread; fail the test if it has not finished after ``seconds`` (a hang, not a speed claim)."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = action()
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome["error"] = error

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome.get("value")


@pytest.fixture
def faulty(shared_scan: Path, tmp_path: Path) -> Iterator[tuple[str, dict[str, object], Path]]:
    """A deflated scan .zip behind a server whose faults the test sets after opening; yields (url, faults, archive)."""
    faults: dict[str, object] = {}
    archive = zip_scan(shared_scan, tmp_path / "scan.zip", zipfile.ZIP_DEFLATED)
    server, _ = serve(tmp_path, faults)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/scan.zip", faults, archive
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("mode", "reason", "fragment"),
    [
        ("ignore-range", "bad response", "ignored the Range request"),
        ("wrong-range", "bad response", "another range than"),
        ("truncate", "bad response", "cut short"),
        ("drop", "bad response", "dropped"),
        ("stall", "timed out", "timed out after 0.5 s (2 tries)"),
        ("500", "bad response", "HTTP 500 (2 tries)"),
        ("401", "unauthorised", "unauthorised (HTTP 401)"),
    ],
)
def test_a_misbehaving_server_is_refused_in_bounded_time(faulty, mode: str, reason: str, fragment: str) -> None:
    url, faults, _ = faulty
    ds = neuroxr.open_scan(url, storage_options=FAST)
    faults.update(mode=mode, seconds=3, times=10)
    with pytest.raises(neuroxr.RemoteError) as caught:
        within(30, lambda: ds.responses.values)
    assert caught.value.reason == reason and fragment in caught.value.problem, caught.value
    assert caught.value.path.startswith(f"{url}::")


def test_a_server_error_or_a_drop_is_tried_again(faulty) -> None:
    url, faults, archive = faulty
    expected = neuroxr.open_scan(archive).responses.values
    faults.update(mode="500", times=1)
    np.testing.assert_array_equal(within(30, lambda: neuroxr.open_scan(url, storage_options=FAST).responses.values), expected)


def test_a_server_that_stops_honouring_ranges_midway(faulty) -> None:
    url, faults, _ = faulty
    ds = neuroxr.open_scan(url, storage_options=FAST, chunks=6)
    faults.update(mode="ignore-range", after=faults.get("after", 0))
    faults["after"] = 10**9  # honour every range ...
    ds.responses.isel(trial=slice(0, 6)).values
    faults["after"] = 0  # ... then no more
    with pytest.raises(neuroxr.RemoteError, match="ignored the Range request"):
        within(30, lambda: ds.responses.values)


@pytest.mark.parametrize("versioned", [True, False], ids=["etag", "crc-only"])
def test_a_file_changed_after_opening_is_refused(faulty, shared_scan: Path, tmp_path: Path, versioned: bool) -> None:
    """Replaced by another scan of the same size: the ETag says so where the server gives one, the CRC-32 always."""
    url, faults, archive = faulty
    if not versioned:
        faults["mode"] = "no-version"
    ds = neuroxr.open_scan(url, storage_options=FAST)
    other = write_tiny_scan(tmp_path / "other", seed=7)
    replacement = zip_scan(other, tmp_path / "other.zip", zipfile.ZIP_DEFLATED).read_bytes()
    original = archive.read_bytes()
    replacement = replacement[: len(original)].ljust(len(original), b"\0")  # the same size
    time.sleep(0.01)
    archive.write_bytes(replacement)
    with pytest.raises(neuroxr.ScanError) as caught:
        within(30, lambda: ds.responses.values)
    if versioned:
        assert isinstance(caught.value, neuroxr.RemoteError) and caught.value.reason == "changed", caught.value
    else:
        assert "corrupt zip" in caught.value.problem, caught.value


def test_distinct_errors_for_not_found_refused_and_timed_out(http_root, tmp_path: Path) -> None:
    url, _, _ = http_root
    with pytest.raises(neuroxr.RemoteError) as caught:
        neuroxr.open_scan(f"{url}/missing.zip", storage_options=FAST)
    assert caught.value.reason == "not found" and "HTTP 404" in str(caught.value)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    with pytest.raises(neuroxr.RemoteError) as caught:
        within(30, lambda: neuroxr.open_scan(f"http://127.0.0.1:{closed}/scan.zip", storage_options=FAST))
    assert caught.value.reason == "refused" and "connection refused" in str(caught.value)
    faults = {"mode": "stall", "seconds": 3}
    server, _ = serve(tmp_path, faults)
    (tmp_path / "scan.zip").write_bytes(b"PK")
    try:
        with pytest.raises(neuroxr.RemoteError) as caught:
            within(30, lambda: neuroxr.open_scan(f"http://127.0.0.1:{server.server_address[1]}/scan.zip", storage_options=FAST))
    finally:
        server.shutdown()
        server.server_close()
    assert caught.value.reason == "timed out"
    for message in (str(caught.value),):
        assert "\n" not in message


def test_missing_s3_credentials_are_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("s3fs")
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    options = {"client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}, "timeout": 2, "retries": 0}
    with pytest.raises(neuroxr.RemoteError) as caught:
        within(60, lambda: neuroxr.open_scan("s3://bucket/scan.zip", storage_options=options))
    assert caught.value.reason == "unauthorised" and "no credentials found" in str(caught.value)
    assert "\n" not in str(caught.value) and caught.value.path == "s3://bucket/scan.zip"


# ----------------------------------------------------------------------------------------------
# subsets read only themselves; adjacent members come in merged ranges; URLs wherever paths go


def test_a_subset_fetches_only_its_members_in_merged_ranges(http_root) -> None:
    url, root, served = http_root
    scan = write_tiny_scan(root / "src", n_trials=120, n_neurons=20, image_shape=(1, 36, 64))
    archive = zip_scan(scan, root / "scan.zip", zipfile.ZIP_DEFLATED, numeric=True)
    ds = neuroxr.open_scan(f"{url}/scan.zip", chunks=60)
    test = np.flatnonzero(ds.tier.values == "test")
    with zipfile.ZipFile(archive) as reference:
        member = lambda k: reference.getinfo(f"{scan.name}/data/images/{k}.npy")  # noqa: E731
        selected = sum(member(k).compress_size for k in test)
        everything = sum(member(k).compress_size for k in range(120))
    before, requests = sum(served), len(served)
    per_image = ds.images.sel(trial=ds.tier == "test").groupby("image_id").mean().values
    np.testing.assert_allclose(per_image[0], eager(scan, "images")[test].mean(axis=0), rtol=1e-6)
    fetched = sum(served) - before
    assert fetched < selected + len(test) * MERGE_GAP and fetched < everything / 4, (fetched, selected, everything)
    requests = len(served)
    with dask.config.set(num_workers=1):  # one read block, not one per thread
        np.testing.assert_array_equal(ds.images.isel(trial=slice(10, 50)).values, eager(scan, "images")[10:50])
    assert len(served) - requests == 1, "40 adjacent members in one merged range"


def test_a_subset_of_a_folder_reads_only_its_files(scan_folder: Path) -> None:
    ds = neuroxr.open_scan(scan_folder, chunks=8, mask_withheld=False)
    test = np.flatnonzero(ds.tier.values == "test")
    expected = eager(scan_folder, "responses")
    for trial in set(range(24)) - set(test.tolist()) - {2, 17}:
        (scan_folder / "data" / "responses" / f"{trial}.npy").unlink()  # nothing else may be read
    np.testing.assert_allclose(ds.responses.sel(trial=ds.tier == "test").groupby("image_id").mean().values[0],
                               expected[test].mean(axis=0), rtol=1e-6)  # fmt: skip
    np.testing.assert_array_equal(ds.responses.isel(trial=[17, 2, 17]).values, expected[[17, 2, 17]])
    np.testing.assert_array_equal(ds.responses.isel(trial=17, neuron=[0, 4]).values, expected[17, [0, 4]])
    np.testing.assert_array_equal(ds.responses.where(ds.tier == "test", drop=True).values, expected[test])


def test_open_datatree_and_open_take_urls(http_root, release: Path) -> None:
    url, root, _ = http_root
    for archive in sorted(release.glob("*.zip")):
        (root / archive.name).write_bytes(archive.read_bytes())
    urls = [f"{url}/{archive.name}" for archive in sorted(release.glob("*.zip"))]
    tree = neuroxr.open_datatree(urls)
    local = neuroxr.open_datatree(sorted(release.glob("*.zip")))
    assert sorted(tree.children) == sorted(local.children) == ["21067-10-18", "26872-17-20"]
    xr.testing.assert_identical(tree["21067-10-18"].to_dataset().load(), local["21067-10-18"].to_dataset().load())
    assert tree["21067-10-18"].to_dataset().encoding.get("source", urls[0]).startswith("http://")
    folder = neuroxr.open_datatree(f"file://{release}")  # a folder of scans behind a URL
    assert sorted(folder.children) == ["21067-10-18", "26872-17-20"]
    assert sorted(neuroxr.open(f"file://{release}").children) == ["21067-10-18", "26872-17-20"]
    assert sorted(xr.open_datatree(f"file://{release}", engine="sensorium").children) == ["21067-10-18", "26872-17-20"]
