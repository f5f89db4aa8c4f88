"""neuroxr.npy: .npy headers parsed and written as numpy does, arrays decoded without ever unpickling."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    with pytest.raises(ScanError, match=r"a/2\.npy: truncated: 160 bytes, the header promises 168 \(float32 \(10,\)\)"):
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


# ------------------------------------------------------------------------------------------------
# the header decoder beside np.load: generated and damaged headers, every version, any length


_DESCRS = ["<f4", ">f4", "<f8", "|u1", "<i2", ">u8", "|b1", "<c8", "<U3", "|S2", "|V4", "|O", "<M8[s]", "<f2",
           [("a", "<f4"), ("b", "|u1")], [("x", "<i4", (2,))], "<f4 ", "f4", "<q", "float32", "<f5", 3, None]  # fmt: skip


def _header_file(descr: object, fortran: object, shape: object, version: tuple[int, int], pad: int, payload: int) -> bytes:
    """A .npy file written by hand: any header dict (valid or not), padded, then ``payload`` bytes."""
    text = "{'descr': %r, 'fortran_order': %r, 'shape': %r, }" % (descr, fortran, shape)
    text = text + " " * pad + "\n"
    encoded = text.encode("utf8" if version == (3, 0) else "latin1", "replace")
    length = np.array(len(encoded), dtype="<u2" if version == (1, 0) else "<u4").tobytes()
    return b"\x93NUMPY" + bytes(version) + length + encoded + bytes(range(256)) * (payload // 256) + bytes(payload % 256)


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(
    descr=st.sampled_from(_DESCRS),
    fortran=st.sampled_from([False, True, 0, "no"]),
    shape=st.one_of(
        st.lists(st.integers(-2, 6), max_size=3).map(tuple),
        st.sampled_from([(), (2**62, 8), (3.0,), [3], "3", (2, 2**40)]),
    ),
    version=st.sampled_from([(1, 0), (2, 0), (3, 0), (4, 0), (0, 9)]),
    pad=st.sampled_from([0, 10, 2000, 9900, 10_100]),
    payload=st.integers(0, 300),
    cut=st.one_of(st.none(), st.integers(0, 40)),
)
def test_the_header_decoder_reads_what_np_load_reads(descr, fortran, shape, version, pad, payload, cut) -> None:  # type: ignore[no-untyped-def]
    """Every file np.load reads (pickles aside) decodes to the same array; every other one is a ScanError naming it."""
    data = _header_file(descr, fortran, shape, version, pad, payload)
    if cut is not None:
        data = data[: max(0, len(data) - cut)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception:  # noqa: BLE001 - numpy refuses: so must neuroxr
        expected = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = parse_header(data, "t/x.npy")
            found = load_array(data, "t/x.npy")
    except ScanError as error:
        assert error.path == "t/x.npy"
        # refused: numpy refuses too, or the file holds more than its header promises (numpy ignores trailing bytes)
        assert expected is None or "has trailing bytes" in error.problem, error.problem
        return
    assert expected is not None, "neuroxr decoded a file np.load refuses"
    assert found.dtype == expected.dtype and found.shape == expected.shape and header.shape == expected.shape
    assert found.flags.f_contiguous == expected.flags.f_contiguous or found.ndim < 2
    np.testing.assert_array_equal(found.view(np.uint8) if found.dtype.kind == "V" else found,
                                  expected.view(np.uint8) if expected.dtype.kind == "V" else expected)  # fmt: skip


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_long_valid_headers_are_read(version: tuple[int, int]) -> None:
    """Headers up to numpy's limit (10,000 characters) are read, however long; a longer one is refused like numpy refuses it."""
    for pad in (1500, 9800):
        if version == (1, 0) and pad > 9000:
            continue
        data = _header_file("<f4", False, (3,), version, pad, 12)
        np.testing.assert_array_equal(load_array(data, "x.npy"), np.load(io.BytesIO(data)))
    data = _header_file("<f4", False, (3,), (2, 0), 10_050, 12)
    with pytest.raises(ValueError):
        np.load(io.BytesIO(data))
    with pytest.raises(ScanError, match="longer than numpy reads"):
        parse_header(data, "x.npy")


def test_zero_size_and_absurd_shapes() -> None:
    for array in (np.zeros((0, 8), np.float32), np.zeros((3, 0)), np.zeros(0, "<U0")):
        data = saved(array)
        loaded = load_array(data, "x.npy")
        assert loaded.shape == array.shape and loaded.dtype == array.dtype
    absurd = _header_file("<f4", False, (2**62, 8), (1, 0), 0, 16)
    assert parse_header(absurd, "x.npy").shape == (2**62, 8)  # the header itself is well formed ...
    with pytest.raises(ScanError, match=r"x\.npy: truncated: .* the header promises"):
        load_array(absurd, "x.npy")  # ... but promises more than the file holds
