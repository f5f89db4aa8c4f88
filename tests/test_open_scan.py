"""open_scan and the sensorium backend against an eager np.load of every file."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr
from conftest import RELEASE_NAME, write_tiny_scan, zip_scan
from hypothesis import given, settings
from hypothesis import strategies as st

import neuroxr
from neuroxr import datamodel as model
from neuroxr.backend import SensoriumBackendEntrypoint


def eager(scan: Path, variable: str) -> np.ndarray:
    files = sorted((scan / "data" / variable).glob("*.npy"), key=lambda f: int(f.stem))
    return np.stack([np.load(f) for f in files])


def meta(scan: Path, relative: str) -> np.ndarray:
    return np.load(scan / relative)


def test_values_labels_and_dtypes_match_np_load(scan_folder: Path) -> None:
    ds = neuroxr.open_scan(scan_folder)
    for variable in model.DATA_VARIABLES:
        expected = eager(scan_folder, variable)
        assert ds[variable].dtype == expected.dtype
        np.testing.assert_array_equal(ds[variable].values, expected)
    assert ds.sizes["trial"] == 24 and ds.sizes["neuron"] == 13
    assert ds.images.dims == ("trial", "channel", "y", "x")
    np.testing.assert_array_equal(ds.neuron.values, meta(scan_folder, "meta/neurons/unit_ids.npy"))
    assert ds.neuron.dtype == np.uint16
    np.testing.assert_array_equal(ds.trial.values, np.arange(24))
    np.testing.assert_array_equal(ds.tier.values, meta(scan_folder, "meta/trials/tiers.npy"))
    np.testing.assert_array_equal(ds.image_id.values, meta(scan_folder, "meta/trials/frame_image_id.npy"))
    assert ds.frame_trial_ts.dtype == np.dtype("<U32")
    assert ds.animal_id.dtype == np.uint16 and ds.session.dtype == np.uint8
    # a meta/trials file named like a neuron coordinate keeps its data under a trial_ prefix
    np.testing.assert_array_equal(ds.trial_scan_idx.values, meta(scan_folder, "meta/trials/scan_idx.npy"))
    assert ds.trial_scan_idx.attrs[model.FILE_ATTR] == "meta/trials/scan_idx.npy"
    assert ds.cell_motor_coordinates.dims == ("neuron", "space")
    assert list(ds.behavior_variable.values) == list(model.BEHAVIOR_VARIABLES)
    assert list(ds.subset.values) == ["all", "stimulus_Frame"]
    std = ds.responses_statistics.sel(subset="all", statistic="std")
    np.testing.assert_array_equal(std.values, meta(scan_folder, "meta/statistics/responses/all/std.npy"))
    assert ds.images_statistics.dims == ("subset", "statistic")
    assert ds.attrs == {
        "scan": "30001-2-3",
        "format": model.FORMAT,
        "release_name": RELEASE_NAME,
        "withheld": "",
    }
    assert not ds.responses_withheld.any()


def test_data_is_lazy_and_labels_are_in_memory(scan_folder: Path) -> None:
    ds = neuroxr.open_scan(scan_folder, chunks=5)
    for variable in model.DATA_VARIABLES:
        assert isinstance(ds[variable].data, dask.array.Array)
        assert ds[variable].chunks[0] == (5, 5, 5, 5, 4)
    for name, coord in ds.coords.items():
        assert isinstance(coord.data, np.ndarray), name
    assert isinstance(ds.responses_statistics.data, np.ndarray)
    # one task per block of trials, never one per file
    assert len(ds.responses.data.__dask_graph__()) <= 2 * 5 + 1


def test_default_chunks_hold_about_64_mb_and_are_shared() -> None:
    from neuroxr.chunking import trials_per_chunk

    assert trials_per_chunk(147_456, 7_000) == 455  # release images: ~64 MB per chunk
    assert trials_per_chunk(100, 7_000) == 7_000


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_zip_in_place_equals_folder(scan_folder: Path, tmp_path: Path, compression: int) -> None:
    archive = zip_scan(scan_folder, tmp_path / "scan.zip", compression)
    (scan_folder / "config.json").write_text('{"links": {}}')  # written by the official loader; ignored
    from_folder = neuroxr.open_scan(scan_folder)
    from_zip = neuroxr.open_scan(archive)
    xr.testing.assert_identical(from_folder.load(), from_zip.load())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([RELEASE_NAME, "scan.zip"])


def test_folder_holding_one_scan(scan_folder: Path) -> None:
    xr.testing.assert_identical(neuroxr.open_scan(scan_folder.parent).load(), neuroxr.open_scan(scan_folder).load())


def test_backend_engine_and_guess(scan_folder: Path, tmp_path: Path) -> None:
    ds = xr.open_dataset(scan_folder, engine="sensorium", drop_variables=["images"])
    assert "images" not in ds and "responses" in ds
    assert not ds.responses.variable._in_memory
    assert xr.open_dataset(scan_folder, drop_variables="images").attrs["scan"] == "30001-2-3"  # guessed engine
    entry = SensoriumBackendEntrypoint()
    assert entry.guess_can_open(scan_folder)
    assert entry.guess_can_open(zip_scan(scan_folder, tmp_path / "s.zip"))
    (tmp_path / "notes.txt").write_text("x")
    for junk in (tmp_path / "notes.txt", tmp_path / "missing", 42, None, b"\x00"):
        assert entry.guess_can_open(junk) is False


def test_lazy_isel_reads_only_the_selected_files(scan_folder: Path) -> None:
    ds = xr.open_dataset(scan_folder, engine="sensorium")
    expected = eager(scan_folder, "responses")[[5, 9]]
    for trial in range(24):
        if trial not in (5, 9):
            (scan_folder / "data" / "responses" / f"{trial}.npy").unlink()
    np.testing.assert_array_equal(ds.isel(trial=[5, 9]).responses.values, expected)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_orthogonal_and_vectorised_indexing_match_numpy(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    scan = _shared_scan(tmp_path_factory)
    ds = xr.open_dataset(scan, engine="sensorium")
    images, responses = eager(scan, "images"), eager(scan, "responses")
    trials = data.draw(st.lists(st.integers(0, 23), min_size=1, max_size=8) | st.slices(24).map(lambda s: s))
    neurons = data.draw(st.lists(st.integers(0, 12), min_size=1, max_size=5) | st.slices(13))
    lazy = ds.responses.isel(trial=trials, neuron=neurons)
    assert not lazy.variable._in_memory
    expected = responses[trials][:, neurons] if isinstance(trials, list) else responses[trials, neurons]
    np.testing.assert_array_equal(lazy.values, expected)
    y = data.draw(st.integers(0, 3))
    np.testing.assert_array_equal(ds.images.isel(trial=trials, y=y).values, images[trials][:, :, y] if isinstance(trials, list) else images[trials, :, y])
    points = data.draw(st.lists(st.tuples(st.integers(0, 23), st.integers(0, 12)), min_size=1, max_size=6))
    t = xr.DataArray([p[0] for p in points], dims="point")
    n = xr.DataArray([p[1] for p in points], dims="point")
    np.testing.assert_array_equal(ds.responses.isel(trial=t, neuron=n).values, responses[t.values, n.values])


_SCANS: dict[str, Path] = {}


def _shared_scan(factory: pytest.TempPathFactory) -> Path:
    if "scan" not in _SCANS:
        _SCANS["scan"] = write_tiny_scan(factory.mktemp("shared"))
    return _SCANS["scan"]


def test_pickle(scan_folder: Path, tmp_path: Path) -> None:
    for path in (scan_folder, zip_scan(scan_folder, tmp_path / "s.zip", zipfile.ZIP_DEFLATED)):
        ds = neuroxr.open_scan(path, chunks=7)
        restored = pickle.loads(pickle.dumps(ds))
        assert len(pickle.dumps(ds.responses.data)) < 20_000  # paths and offsets, not data or handles
        np.testing.assert_array_equal(restored.responses.values, eager(scan_folder, "responses"))
        lazy = pickle.loads(pickle.dumps(xr.open_dataset(path, engine="sensorium")))
        assert not lazy.images.variable._in_memory
        np.testing.assert_array_equal(lazy.images.values, eager(scan_folder, "images"))


def test_local_cluster_with_process_workers(scan_folder: Path, tmp_path: Path, cluster_client) -> None:
    archive = zip_scan(scan_folder, tmp_path / "s.zip", zipfile.ZIP_DEFLATED)
    for path in (scan_folder, archive):
        ds = neuroxr.open_scan(path, chunks=5)
        threaded = ds.responses.mean("trial").compute(scheduler="threads")
        on_cluster = cluster_client.compute(ds.responses.mean("trial")).result()
        xr.testing.assert_allclose(threaded, on_cluster)
        np.testing.assert_array_equal(cluster_client.compute(ds.images).result().values, eager(scan_folder, "images"))


def test_competition_scan_masks_withheld_cells(competition_folder: Path) -> None:
    ds = neuroxr.open_scan(competition_folder)
    tiers = meta(competition_folder, "meta/trials/tiers.npy")
    withheld = np.isin(tiers, ["test", "final_test"])
    np.testing.assert_array_equal(ds.responses_withheld.values, withheld)
    assert np.isnan(ds.responses.values[withheld]).all()
    np.testing.assert_array_equal(ds.responses.values[~withheld], eager(competition_folder, "responses")[~withheld])
    assert np.isnan(ds.behavior.values).all() and np.isnan(ds.pupil_center.values).all()
    assert ds.attrs["withheld"] == "responses,behavior,pupil_center"
    assert ds.trial_idx.dtype.kind == "U" and len(ds.trial_idx.values[0]) == 32
    raw = neuroxr.open_scan(competition_folder, mask_withheld=False)
    np.testing.assert_array_equal(raw.responses.values, eager(competition_folder, "responses"))
    assert raw.attrs["withheld"] == "" and raw.responses_withheld.values.sum() == withheld.sum()
    assert raw.responses.dtype == np.float32 and ds.responses.dtype == np.float32
