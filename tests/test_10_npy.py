"""neuroxr.npy: .npy headers parsed and written as numpy does, arrays decoded without ever unpickling."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from neuroxr.errors import ScanError
from neuroxr.npy import file_bytes, header_bytes, load_array, parse_header


def saved(array: np.ndarray, version: tuple[int, int] | None = None) -> bytes:
    buffer = io.BytesIO()
    if version is None:
        np.save(buffer, array)
    else:
        np.lib.format.write_array(buffer, array, version=version)
    return buffer.getvalue()


def test_npy_header_matches_np_save() -> None:
    for dtype, shape in (("<f4", (1, 144, 256)), ("<f4", ()), ("<u2", (7,)), ("<U32", (3,)), (">f8", (2, 3))):
        array = np.zeros(shape, dtype=dtype)
        assert header_bytes(dtype, shape) + array.tobytes() == saved(array)


@pytest.mark.parametrize("version", [None, (1, 0), (2, 0), (3, 0)])
@pytest.mark.parametrize(
    "array",
    [np.arange(6, dtype="<f4").reshape(2, 3), np.arange(6, dtype=">i8"), np.asfortranarray(np.arange(6.0).reshape(2, 3)),
     np.array(["a", "bcd"]), np.float32(3.5)],
    ids=["f4", "big-endian", "fortran", "str", "scalar"],
)
def test_headers_of_every_version_parse_like_numpy(array: np.ndarray, version: tuple[int, int] | None) -> None:
    data = saved(array, version)
    header = parse_header(data, "x.npy")
    reference = np.load(io.BytesIO(data))
    assert header.shape == reference.shape and header.dtype == reference.dtype
    assert header.fortran_order == (reference.ndim > 1 and np.isfortran(reference))
    assert header.file_bytes == len(data) and data.startswith(header.raw)
    assert header.payload_bytes == reference.nbytes
    loaded = load_array(data, "x.npy")
    assert loaded.dtype == reference.dtype
    np.testing.assert_array_equal(loaded, reference)


def test_a_version_3_header_with_utf8_field_names() -> None:
    array = np.zeros(3, dtype=[("θ高", "<f4"), ("x", "<i2")])
    with pytest.warns(UserWarning, match="format 3.0"):
        data = saved(array)
    assert data[6:8] == b"\x03\x00"  # np.save needs version 3.0 for these names
    header = parse_header(data, "x.npy")
    assert header.dtype == array.dtype and header.shape == (3,) and header.file_bytes == len(data)
    np.testing.assert_array_equal(load_array(data, "x.npy"), array)
    for damaged in (data[:12], data.replace(b"'shape'", b"'shapes'"), data.replace(b"(3,)", b"(3.5,)")):
        with pytest.raises(ScanError, match=r"x\.npy: corrupt \.npy header"):
            parse_header(damaged, "x.npy")
    with pytest.raises(ScanError, match=r"x\.npy: corrupt \.npy header.*version 4\.0"):
        parse_header(data[:6] + b"\x04\x00" + data[8:], "x.npy")


def test_file_bytes_are_np_save() -> None:
    array = np.arange(12, dtype=np.uint16).reshape(3, 4)
    assert file_bytes(array) == saved(array)


def test_not_npy_truncated_and_corrupt_name_the_file() -> None:
    with pytest.raises(ScanError, match=r"^a/0\.npy: not a \.npy file.*an empty file"):
        parse_header(b"", "a/0.npy")
    with pytest.raises(ScanError, match=r"a/1\.npy: not a \.npy file.*b'PK\\x03\\x04"):
        parse_header(b"PK\x03\x04 a zip, not an array", "a/1.npy")
    data = saved(np.zeros(10, np.float32))
    with pytest.raises(ScanError, match=r"a/2\.npy: truncated \.npy: the header promises 168 bytes \(float32 \(10,\)\), the file has 160"):
        load_array(data[:-8], "a/2.npy")
    broken = data.replace(b"'shape'", b"'shapes'")
    with pytest.raises(ScanError, match=r"a/3\.npy: corrupt \.npy header"):
        parse_header(broken, "a/3.npy")


def test_pickled_arrays_are_refused_without_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"

    class Bomb:
        def __reduce__(self):
            return (Path.touch, (marker,))

    buffer = io.BytesIO()
    np.save(buffer, np.array([Bomb()], dtype=object), allow_pickle=True)
    for decode in (parse_header, load_array):
        with pytest.raises(ScanError, match="Python objects"):
            decode(buffer.getvalue(), "meta/trials/x.npy")
    assert not marker.exists()
