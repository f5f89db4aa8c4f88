"""neuroxr.lazy: trial files read a block at a time, fast where headers match, through np.load where they differ."""

from __future__ import annotations

import pickle
import shutil
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from conftest import assert_reads_on_access, eager, expect_scan_error, write_tiny_scan, zip_scan
from hypothesis import given, settings
from hypothesis import strategies as st

import neuroxr
from neuroxr.layout import read_layout
from neuroxr.lazy import HUGE_PAGE, TrialReader, TrialStackArray, allocate


def reader_of(scan: Path, variable: str, masked: np.ndarray | None = None) -> TrialReader:
    layout = read_layout(scan)
    return TrialReader(layout.variables[variable].files, layout.variables[variable].header, masked)


def byte_swapped(path: Path) -> None:
    array = np.load(path)
    np.save(path, array.astype(array.dtype.newbyteorder()))


def version_2(path: Path) -> None:
    array = np.load(path)
    with path.open("wb") as file:
        np.lib.format.write_array(file, array, version=(2, 0))


def fortran_ordered(path: Path) -> None:
    np.save(path, np.asfortranarray(np.load(path)))


# ----------------------------------------------------------------------------------------------
# the slow path that succeeds: a file whose header differs but whose array is the same


@pytest.mark.parametrize("rewrite", [byte_swapped, version_2, fortran_ordered], ids=lambda f: f.__name__)
@pytest.mark.parametrize("which", [[0], [5], [0, 5, 23]], ids=["first", "one", "several"])
def test_a_file_with_another_header_reads_equal_to_np_load(scan_folder: Path, rewrite, which: list[int]) -> None:
    names = ("images",) if rewrite is fortran_ordered else ("images", "responses")  # a 1-D array has no Fortran order
    expected = {name: eager(scan_folder, name) for name in names}
    for name in expected:
        for number in which:
            before = (scan_folder / "data" / name / f"{number}.npy").read_bytes()
            rewrite(scan_folder / "data" / name / f"{number}.npy")
            assert (scan_folder / "data" / name / f"{number}.npy").read_bytes() != before
    for name, values in expected.items():
        np.testing.assert_array_equal(eager(scan_folder, name), values)  # np.load agrees they are the same arrays
        read = reader_of(scan_folder, name).read(np.arange(24))
        assert read.dtype == values.dtype.newbyteorder("=") and read.dtype.isnative
        np.testing.assert_array_equal(read, values)
    ds = neuroxr.open_scan(scan_folder, chunks=5)
    assert ds.images.dtype == expected["images"].dtype
    for name, values in expected.items():
        np.testing.assert_array_equal(ds[name].values, values)


def test_repeats_and_any_order_in_one_read(shared_scan: Path) -> None:
    responses = eager(shared_scan, "responses")
    reader = reader_of(shared_scan, "responses")
    for trials in ([5, 2, 5, 0, 23, 2], [23, 22, 21], [7, 7, 7], [3], list(range(24))[::-1], []):
        read = reader.read(np.array(trials, dtype=np.int64))
        assert read.shape == (len(trials), 13) and read.dtype == np.float32
        np.testing.assert_array_equal(read, responses[trials])


def test_masked_trials_read_nan(shared_scan: Path) -> None:
    masked = np.zeros(24, bool)
    masked[[1, 4]] = True
    reader = reader_of(shared_scan, "behavior", masked)
    read = reader.read(np.array([4, 0, 1, 2]))
    assert np.isnan(read[[0, 2]]).all()
    np.testing.assert_array_equal(read[[1, 3]], eager(shared_scan, "behavior")[[0, 2]])


def test_integer_files_turn_float_only_when_masked(scan_folder: Path) -> None:
    (scan_folder / "data" / "eye").mkdir()
    for trial in range(24):
        np.save(scan_folder / "data" / "eye" / f"{trial}.npy", np.full(2, trial, np.int16))
    assert reader_of(scan_folder, "eye").read(np.arange(3)).dtype == np.int16
    masked = reader_of(scan_folder, "eye", np.arange(24) == 1).read(np.arange(3))
    assert masked.dtype == np.float32
    np.testing.assert_array_equal(masked, [[0, 0], [np.nan, np.nan], [2, 2]])


@pytest.mark.parametrize(
    ("replacement", "fragment"),
    [(np.zeros(12, np.float32), "float32 (12,)"), (np.zeros(13, np.float64), "float64 (13,)")],
)
def test_a_file_of_another_shape_or_dtype_is_named(scan_folder: Path, replacement: np.ndarray, fragment: str) -> None:
    np.save(scan_folder / "data" / "responses" / "5.npy", replacement)
    reader = reader_of(scan_folder, "responses")
    np.testing.assert_array_equal(reader.read(np.array([4, 6])), eager_without(scan_folder, 5)[[4, 6]])
    with pytest.raises(neuroxr.ScanError) as caught:
        reader.read(np.arange(3, 8))
    assert caught.value.path == str(scan_folder / "data" / "responses" / "5.npy")
    assert fragment in caught.value.problem and "expected float32 (13,) like" in caught.value.problem


def eager_without(scan: Path, broken: int) -> np.ndarray:
    files = sorted((scan / "data" / "responses").glob("*.npy"), key=lambda f: int(f.stem))
    return np.stack([np.load(f) if int(f.stem) != broken else np.zeros(13, np.float32) for f in files])


def test_readers_pickle_small_and_read_the_same(shared_scan: Path) -> None:
    reader = reader_of(shared_scan, "images")
    array = TrialStackArray(reader, 24)
    pickled = pickle.dumps(array)
    assert len(pickled) < 2_000
    np.testing.assert_array_equal(pickle.loads(pickled).reader.read(np.arange(24)), eager(shared_scan, "images"))


# ----------------------------------------------------------------------------------------------
# problems found while reading (moved from the old test_bad_input.py)


@pytest.mark.parametrize(
    ("replacement", "fragment"),
    [(np.zeros(12, np.float32), "float32 (12,)"), (np.zeros(13, np.float64), "float64 (13,)")],
)
def test_a_file_of_another_shape_or_dtype(untouched: Path, replacement: np.ndarray, fragment: str, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(untouched, copy)
    np.save(copy / "data" / "responses" / "5.npy", replacement)
    expect_scan_error(copy, "data/responses/5.npy", fragment, "expected float32 (13,)", compute=True)


def test_truncated_and_corrupt_npy(scan_folder: Path) -> None:
    victim = scan_folder / "data" / "images" / "3.npy"
    victim.write_bytes(victim.read_bytes()[:-10])
    expect_scan_error(scan_folder, "data/images/3.npy", "truncated", compute=True)
    victim.write_bytes(b"garbage that is not an npy file at all")
    expect_scan_error(scan_folder, "data/images/3.npy", "not a .npy file", compute=True)


def test_pickled_trial_files_are_never_unpickled(scan_folder: Path, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"

    class Bomb:
        def __reduce__(self):
            return (Path.touch, (marker,))

    np.save(scan_folder / "data" / "behavior" / "2.npy", np.array([Bomb()] * 3, dtype=object), allow_pickle=True)
    expect_scan_error(scan_folder, "data/behavior/2.npy", "Python objects", compute=True)
    assert not marker.exists()


def test_a_file_removed_after_opening_is_named(scan_folder: Path) -> None:
    ds = neuroxr.open_scan(scan_folder)
    (scan_folder / "data" / "responses" / "6.npy").unlink()
    with pytest.raises(neuroxr.ScanError, match="missing .was the scan changed after opening") as caught:
        ds.responses.values
    assert caught.value.path == str(scan_folder / "data" / "responses" / "6.npy")


# ----------------------------------------------------------------------------------------------
# indexing the lazy array


def test_lazy_isel_reads_only_the_selected_files(scan_folder: Path) -> None:
    ds = xr.open_dataset(scan_folder, engine="sensorium")
    expected = eager(scan_folder, "responses")[[5, 9]]
    for trial in range(24):
        if trial not in (5, 9):
            (scan_folder / "data" / "responses" / f"{trial}.npy").unlink()
    np.testing.assert_array_equal(ds.isel(trial=[5, 9]).responses.values, expected)


@pytest.fixture(scope="module")
def indexed_scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_scan(tmp_path_factory.mktemp("indexed"))


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_orthogonal_and_vectorised_indexing_match_numpy(indexed_scan: Path, data: st.DataObject) -> None:
    scan = indexed_scan
    ds = xr.open_dataset(scan, engine="sensorium")
    images, responses = eager(scan, "images"), eager(scan, "responses")
    trials = data.draw(st.lists(st.integers(0, 23), min_size=1, max_size=8) | st.slices(24).map(lambda s: s))
    neurons = data.draw(st.lists(st.integers(0, 12), min_size=1, max_size=5) | st.slices(13))
    lazy = ds.responses.isel(trial=trials, neuron=neurons)
    assert lazy.chunks is None  # no dask: xarray's own lazy indexing
    expected = responses[trials][:, neurons] if isinstance(trials, list) else responses[trials, neurons]
    if expected.size:
        assert_reads_on_access(lazy, scan / "data" / "responses")  # selecting read nothing
    np.testing.assert_array_equal(lazy.values, expected)
    y = data.draw(st.integers(0, 3))
    np.testing.assert_array_equal(ds.images.isel(trial=trials, y=y).values, images[trials][:, :, y] if isinstance(trials, list) else images[trials, :, y])
    points = data.draw(st.lists(st.tuples(st.integers(0, 23), st.integers(0, 12)), min_size=1, max_size=6))
    t = xr.DataArray([p[0] for p in points], dims="point")
    n = xr.DataArray([p[1] for p in points], dims="point")
    np.testing.assert_array_equal(ds.responses.isel(trial=t, neuron=n).values, responses[t.values, n.values])


# ----------------------------------------------------------------------------------------------
# regression guards that time nothing: one output array for a whole-variable load, reused block memory


@pytest.fixture(scope="module")
def sizeable_scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 trials of 64 kB images: blocks of several megabytes, where copies and fresh memory would show."""
    return write_tiny_scan(tmp_path_factory.mktemp("sizeable"), n_trials=200, n_neurons=40, image_shape=(1, 128, 128))


def peak_bytes(action) -> tuple[object, int]:  # type: ignore[no-untyped-def]
    tracemalloc.start()
    try:
        result = action()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_a_whole_variable_load_allocates_one_output_array(sizeable_scan: Path, tmp_path: Path, kind: str) -> None:
    """``ds.images.values`` reads every trial straight into the result: no blocks, no concatenation copy."""
    path = sizeable_scan if kind == "folder" else zip_scan(sizeable_scan, tmp_path / "scan.zip", zipfile.ZIP_DEFLATED)
    ds = neuroxr.open_scan(path, chunks=20)  # 10 dask chunks
    assert ds.images.data.npartitions == 10
    values, peak = peak_bytes(lambda: ds.images.values)
    np.testing.assert_array_equal(values, eager(sizeable_scan, "images"))
    assert peak < 1.2 * values.nbytes, f"{peak / values.nbytes:.2f}x the output array"
    _, through_dask = peak_bytes(lambda: ds.images.compute())  # blocks, then dask's concatenation
    assert through_dask > 1.6 * values.nbytes  # so the guard above can tell the difference
    masked = neuroxr.open_scan(write_tiny_scan(tmp_path / "c", competition=True), chunks=5)
    np.testing.assert_array_equal(masked.responses.values, masked.responses.compute().values)  # NaN where withheld


def test_streamed_blocks_reuse_the_memory_of_blocks_nobody_holds(sizeable_scan: Path) -> None:
    """A streamed read does not fault in fresh memory per block: a dropped block's buffer serves the next."""
    reader = reader_of(sizeable_scan, "images")
    expected = eager(sizeable_scan, "images")
    addresses = set()
    for start in (0, 70, 0, 70, 0, 70):  # blocks of 4.6 MB, each dropped before the next is read
        block = reader.read(np.arange(start, start + 70))
        np.testing.assert_array_equal(block, expected[start : start + 70])
        addresses.add(block.__array_interface__["data"][0])
        del block
    assert len(addresses) == 1, "every block came from fresh memory"
    held = reader.read(np.arange(0, 70))[5:10]  # a view keeps its block's buffer busy ...
    other = reader.read(np.arange(70, 140))
    assert other.__array_interface__["data"][0] != held.__array_interface__["data"][0] - 5 * held[0].nbytes
    np.testing.assert_array_equal(held, expected[5:10])  # ... so it is not overwritten
    np.testing.assert_array_equal(other, expected[70:140])


def transparent_huge_pages() -> str | None:
    """The kernel's transparent huge page mode (``always``, ``madvise``, ``never``), None where it has none."""
    try:
        setting = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return None
    return setting.split("[", 1)[1].split("]", 1)[0] if "[" in setting else None


def huge_page_eligible(address: int) -> bool:
    """Whether the kernel may back the mapping that holds ``address`` with huge pages (``THPeligible`` of /proc/self/smaps)."""
    mapping = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split(" ", 1)[0]
        if "-" in head and ":" not in head:
            low, high = (int(part, 16) for part in head.split("-"))
            mapping = low <= address < high
        elif mapping and line.startswith("THPeligible:"):
            return line.split()[1] == "1"
    raise AssertionError(f"no mapping with THPeligible holds {address:#x}")


@pytest.mark.skipif(transparent_huge_pages() in (None, "never"), reason="no transparent huge pages on this system")
def test_block_pool_memory_asks_for_huge_pages(sizeable_scan: Path) -> None:
    """The pool's buffers, reused block after block, are whole huge pages the kernel may back as such (one TLB entry per
    2 MB instead of per 4 kB: a 17.7 MB block of videos spans 4,320 small pages); a whole-variable array does not ask."""
    block = reader_of(sizeable_scan, "images").read(np.arange(70))  # 4.6 MB
    np.testing.assert_array_equal(block, eager(sizeable_scan, "images")[:70])
    owner = block
    while isinstance(owner.base, np.ndarray):
        owner = owner.base
    assert owner.nbytes % HUGE_PAGE == 0 and owner.nbytes >= block.nbytes
    assert huge_page_eligible(block.__array_interface__["data"][0])
    if transparent_huge_pages() == "madvise":  # only the pool's buffers ask (``always`` makes every mapping eligible)
        whole = allocate((8 * 2**20,), np.uint8)
        assert not huge_page_eligible(whole.__array_interface__["data"][0])
