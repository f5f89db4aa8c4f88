"""Remote scans: a .zip on a real HTTP server on 127.0.0.1 that honours Range requests."""

from __future__ import annotations

import io
import re
import threading
import zipfile
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from conftest import write_tiny_scan, zip_scan

import neuroxr

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
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path, served
    finally:
        server.shutdown()
        server.server_close()


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
