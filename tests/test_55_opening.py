"""neuroxr.opening: open_scan, open_datatree and neuroxr.open, the top of the read side."""

from __future__ import annotations

import os
import pickle
import shutil
import zipfile
from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr
from conftest import RELEASE_NAME, assert_reads_on_access, eager, write_tiny_scan, zip_scan

import neuroxr
from neuroxr import datamodel as model
from neuroxr.chunking import ChunksError, trials_per_chunk


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


def test_opening_computes_nothing_but_the_labels(shared_scan: Path, forbidden_scheduler) -> None:
    ds = neuroxr.open_scan(shared_scan)
    with forbidden_scheduler():
        selected = ds.responses.sel(trial=ds.tier == "test").mean("trial")
        with pytest.raises(AssertionError, match="something was computed"):
            selected.values
    np.testing.assert_allclose(selected.values, eager(shared_scan, "responses")[ds.tier.values == "test"].mean(0), rtol=1e-6)


def test_default_chunks_hold_about_64_mb_and_are_shared(shared_scan: Path) -> None:
    assert trials_per_chunk(147_456, 7_000) == 448  # release images: ~64 MB per chunk, a multiple of 64 trials
    assert trials_per_chunk(100, 7_000) == 7_000
    ds = neuroxr.open_scan(shared_scan)
    assert {ds[name].chunks[0] for name in model.DATA_VARIABLES} == {(24,)}  # one block boundary for every variable
    big = neuroxr.make_scan(preset="release")
    assert {big[name].chunks[0] for name in model.DATA_VARIABLES} == {big.images.chunks[0]}
    assert big.images.chunks[0][0] == trials_per_chunk(1 * 144 * 256 * 4, 7_000)


def test_chunks_argument(shared_scan: Path) -> None:
    assert neuroxr.open_scan(shared_scan, chunks={"trial": 10}).responses.chunks[0] == (10, 10, 4)
    assert neuroxr.open_scan(shared_scan, chunks={"trial": 10, "neuron": 5}).responses.chunks == ((10, 10, 4), (5, 5, 3))
    for wrong in (0, -3, True, {"trial": 0}):
        with pytest.raises(ChunksError, match="expected"):
            neuroxr.open_scan(shared_scan, chunks=wrong)
    assert issubclass(ChunksError, ValueError) and issubclass(ChunksError, neuroxr.NeuroxrError)


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_zip_in_place_equals_folder(scan_folder: Path, tmp_path: Path, compression: int) -> None:
    archive = zip_scan(scan_folder, tmp_path / "scan.zip", compression)
    (scan_folder / "config.json").write_text('{"links": {}}')  # written by the official loader; ignored
    from_folder = neuroxr.open_scan(scan_folder)
    from_zip = neuroxr.open_scan(archive)
    xr.testing.assert_identical(from_folder.load(), from_zip.load())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([RELEASE_NAME, "scan.zip"])


def test_braces_in_the_scan_folder_name(tmp_path: Path) -> None:
    folder = write_tiny_scan(tmp_path, name="scan{1}-{x}")
    archive = zip_scan(folder, tmp_path / "braces.zip", zipfile.ZIP_DEFLATED)
    from_zip = neuroxr.open_scan(archive).load()
    assert from_zip.attrs["release_name"] == "scan{1}-{x}"
    xr.testing.assert_identical(from_zip, neuroxr.open_scan(folder).load())


def test_folder_holding_one_scan(scan_folder: Path) -> None:
    xr.testing.assert_identical(neuroxr.open_scan(scan_folder.parent).load(), neuroxr.open_scan(scan_folder).load())


def test_pickle(scan_folder: Path, tmp_path: Path) -> None:
    for path in (scan_folder, zip_scan(scan_folder, tmp_path / "s.zip", zipfile.ZIP_DEFLATED)):
        ds = neuroxr.open_scan(path, chunks=7)
        restored = pickle.loads(pickle.dumps(ds))
        assert len(pickle.dumps(ds.responses.data)) < 20_000  # paths and offsets, not data or handles
        np.testing.assert_array_equal(restored.responses.values, eager(scan_folder, "responses"))
        lazy = pickle.loads(pickle.dumps(xr.open_dataset(path, engine="sensorium")))
        assert lazy.images.chunks is None
        assert_reads_on_access(lazy.images, path if path.suffix == ".zip" else path / "data" / "images")
        np.testing.assert_array_equal(lazy.images.values, eager(scan_folder, "images"))


# ----------------------------------------------------------------------------------------------
# several scans


def test_open_datatree_of_a_release_folder(release: Path) -> None:
    tree = neuroxr.open_datatree(release)
    assert sorted(tree.children) == ["21067-10-18", "26872-17-20"]
    assert tree.attrs["scans"] == "21067-10-18,26872-17-20"
    pre, competition = tree["21067-10-18"].to_dataset(), tree["26872-17-20"].to_dataset()
    assert (pre.sizes["trial"], pre.sizes["neuron"]) == (90, 30)
    assert (competition.sizes["trial"], competition.sizes["neuron"]) == (120, 25)
    assert competition.attrs["withheld"] == "responses"
    # the unpacked folder wins over its own .zip
    assert Path(pre.encoding["source"]).is_dir()
    xr.testing.assert_identical(pre.load(), neuroxr.open_scan(next(release.glob("*21067*.zip"))).load())


def test_open_datatree_from_a_list_refuses_duplicates(release: Path) -> None:
    folder = next(p for p in release.iterdir() if p.is_dir())
    with pytest.raises(neuroxr.ScanError, match="given twice"):
        neuroxr.open_datatree([folder, release / f"{folder.name}.zip"])


def test_open_dispatches_on_what_it_is_given(release: Path, tmp_path: Path) -> None:
    assert isinstance(neuroxr.open(release), xr.DataTree)
    scan_zip = release / "static26872-17-20.zip"
    ds = neuroxr.open(scan_zip)
    assert isinstance(ds, xr.Dataset) and ds.attrs["scan"] == "26872-17-20"
    nc = neuroxr.to_netcdf(ds, tmp_path / "scan.nc")
    zarr = neuroxr.to_zarr(ds, tmp_path / "scan.zarr")
    for path in (nc, zarr):
        xr.testing.assert_identical(neuroxr.open(path).load(), ds.load())
    tree_nc = neuroxr.to_netcdf(neuroxr.open(release), tmp_path / "release.nc")
    reopened = neuroxr.open(tree_nc)
    assert isinstance(reopened, xr.DataTree) and sorted(reopened.children) == ["21067-10-18", "26872-17-20"]
    with pytest.raises(neuroxr.ScanError, match="no such file"):
        neuroxr.open(tmp_path / "nothing")
    if hasattr(os, "mkfifo"):  # there, but not a file neuroxr reads: said so, at once
        os.mkfifo(tmp_path / "pipe.zip")
        for opener in (neuroxr.open, neuroxr.open_scan):
            with pytest.raises(neuroxr.ScanError, match="pipe.zip: is a FIFO, not a regular file"):
                opener(tmp_path / "pipe.zip")


# ----------------------------------------------------------------------------------------------
# 2023 video scans


@pytest.mark.parametrize("kind", ["folder", "stored", "deflated"])
def test_a_video_scan_from_a_folder_or_a_zip_equals_np_load(shared_dynamic: Path, tmp_path: Path, kind: str) -> None:
    methods = {"stored": zipfile.ZIP_STORED, "deflated": zipfile.ZIP_DEFLATED}
    path = shared_dynamic if kind == "folder" else zip_scan(shared_dynamic, tmp_path / "scan.zip", methods[kind])
    ds = neuroxr.open_scan(path, mask_withheld=False, chunks=4)
    for variable in ("videos", "responses", "behavior", "pupil_center"):
        expected = eager(shared_dynamic, variable)
        assert isinstance(ds[variable].data, dask.array.Array) and ds[variable].chunks[0] == (4, 4, 4, 4, 4, 1)
        assert ds[variable].dtype == expected.dtype
        np.testing.assert_array_equal(ds[variable].values, expected)
    assert ds.attrs["format"] == "sensorium-2023-dynamic" and ds.sizes["frame"] == 12
    if kind != "folder":
        xr.testing.assert_identical(ds.load(), neuroxr.open_scan(shared_dynamic, mask_withheld=False).load())


def test_video_scans_are_lazy_along_frame_and_trial(shared_dynamic: Path, forbidden_scheduler, tmp_path: Path) -> None:
    ds = neuroxr.open_scan(shared_dynamic, chunks=5)
    with forbidden_scheduler():
        window = ds.videos.isel(trial=[3, 17], frame=slice(2, 6))
        mean = ds.responses.sel(trial=ds.tier == "train").isel(frame=slice(0, 4)).mean("trial")
    assert window.shape == (2, 4, 6, 4) and mean.shape == (7, 4)
    stored = eager(shared_dynamic, "videos")
    np.testing.assert_array_equal(window.values, stored[[3, 17]][..., 2:6])
    responses = eager(shared_dynamic, "responses")
    np.testing.assert_allclose(mean.values, responses[ds.tier.values == "train"][..., :4].mean(0), rtol=1e-6)
    # the plain backend reads only the trials asked for
    copy = tmp_path / "copy"
    shutil.copytree(shared_dynamic, copy)
    lazy = xr.open_dataset(copy, engine="sensorium")
    (copy / "data" / "videos" / "5.npy").unlink()
    np.testing.assert_array_equal(lazy.videos.isel(trial=[3, 17], frame=[0, 11]).values, stored[[3, 17]][..., [0, 11]])
    with pytest.raises(neuroxr.ScanError, match="5.npy"):
        lazy.videos.isel(trial=5).values


def test_a_video_scan_pickles_small(shared_dynamic: Path, tmp_path: Path) -> None:
    for path in (shared_dynamic, zip_scan(shared_dynamic, tmp_path / "s.zip", zipfile.ZIP_DEFLATED)):
        ds = neuroxr.open_scan(path, chunks=7)
        assert len(pickle.dumps(ds.videos.data)) < 20_000
        restored = pickle.loads(pickle.dumps(ds))
        np.testing.assert_array_equal(restored.videos.values, eager(shared_dynamic, "videos"))
        np.testing.assert_array_equal(restored.n_frames.values, ds.n_frames.values)


def test_open_a_folder_of_image_and_video_scans(mixed_release: Path) -> None:
    tree = neuroxr.open(mixed_release)
    assert isinstance(tree, xr.DataTree) and sorted(tree.children) == ["21067-10-18", "29515-10-12"]
    video = tree["29515-10-12"].to_dataset()
    assert Path(video.encoding["source"]).is_dir()  # the unpacked folder wins over its .zip
    archive = next(mixed_release.glob("dynamic*.zip"))
    xr.testing.assert_identical(video.load(), neuroxr.open(archive).load())
    assert video.attrs["withheld"] == "responses" and video.responses_withheld.sum() > 0
