"""neuroxr.dataset and neuroxr.backend: the data-model Dataset of a scan, against an eager np.load of every file."""

from __future__ import annotations

import zipfile
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from conftest import DYNAMIC_NAME, RELEASE_NAME, assert_reads_on_access, eager, expect_scan_error, write_tiny_dynamic_scan, zip_scan

import neuroxr
from neuroxr import datamodel as model
from neuroxr.backend import SensoriumBackendEntrypoint
from neuroxr.dataset import build_dataset, load_labels, tree_of, wholly_withheld, withheld_trials
from neuroxr.layout import read_layout


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


def test_backend_engine_and_guess(scan_folder: Path, tmp_path: Path) -> None:
    ds = xr.open_dataset(scan_folder, engine="sensorium", drop_variables=["images"])
    assert "images" not in ds and "responses" in ds
    assert ds.responses.chunks is None  # the backend alone: lazily indexed, no dask
    assert_reads_on_access(ds.responses, scan_folder / "data" / "responses")  # nothing was read at open
    np.testing.assert_array_equal(ds.responses.values, eager(scan_folder, "responses"))
    assert xr.open_dataset(scan_folder, drop_variables="images").attrs["scan"] == "30001-2-3"  # guessed engine
    entry = SensoriumBackendEntrypoint()
    assert entry.guess_can_open(scan_folder)
    assert entry.guess_can_open(zip_scan(scan_folder, tmp_path / "s.zip"))
    (tmp_path / "notes.txt").write_text("x")
    for junk in (tmp_path / "notes.txt", tmp_path / "missing", 42, None, b"\x00"):
        assert entry.guess_can_open(junk) is False


def test_the_engine_takes_chunks_and_trials_per_chunk(shared_scan: Path) -> None:
    ds = xr.open_dataset(shared_scan, engine="sensorium", chunks={}, trials_per_chunk=10)
    assert ds.responses.chunks[0] == (10, 10, 4) and ds.images.chunks[0] == (10, 10, 4)
    assert ds.responses.encoding["preferred_chunks"] == {"trial": 10}


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


def test_what_the_release_withholds(competition_folder: Path, shared_scan: Path) -> None:
    layout = read_layout(competition_folder)
    np.testing.assert_array_equal(withheld_trials(layout), np.isin(layout.trials["tiers"], ["test", "final_test"]))
    assert wholly_withheld(layout, "behavior") and wholly_withheld(layout, "pupil_center")
    assert not wholly_withheld(layout, "responses") and not wholly_withheld(layout, "eye")
    plain = read_layout(shared_scan)  # test responses of a pre-training scan are not withheld
    assert not withheld_trials(plain).any() and not wholly_withheld(plain, "behavior")


def test_build_dataset_is_lazy_and_drops_what_is_asked(scan_folder: Path) -> None:
    ds = build_dataset(read_layout(scan_folder), drop_variables=["images", "pupil_center"])
    assert set(ds.data_vars) == {"responses", "behavior", "responses_statistics", "behavior_statistics"}
    assert "channel" not in ds.dims
    assert_reads_on_access(ds.behavior, scan_folder / "data" / "behavior")
    np.testing.assert_array_equal(ds.behavior.values, eager(scan_folder, "behavior"))


def test_statistics_of_different_shapes_are_named(scan_folder: Path) -> None:
    np.save(scan_folder / "meta/statistics/responses/stimulus_Frame/max.npy", np.zeros(12, np.float32))
    expect_scan_error(scan_folder, "meta/statistics/responses/stimulus_Frame/max.npy", "shape (12,) differs from (13,)")


def test_a_missing_statistic_reads_nan(scan_folder: Path) -> None:
    (scan_folder / "meta/statistics/behavior/stimulus_Frame/median.npy").unlink()
    ds = neuroxr.open_scan(scan_folder)
    assert np.isnan(ds.behavior_statistics.sel(subset="stimulus_Frame", statistic="median")).all()
    assert np.isfinite(ds.behavior_statistics.sel(subset="all", statistic="median")).all()


def test_load_labels_and_tree_of(shared_scan: Path) -> None:
    lazy = xr.open_dataset(shared_scan, engine="sensorium", chunks={})
    assert isinstance(lazy.responses_statistics.data, da.Array)
    loaded = load_labels(lazy)
    assert isinstance(loaded.responses_statistics.data, np.ndarray) and isinstance(loaded.tier.data, np.ndarray)
    assert isinstance(loaded.responses.data, da.Array)  # data stays lazy
    tree = tree_of({"30001-2-3": loaded, "30002-1-1": loaded.isel(trial=slice(0, 5))})
    assert tree.attrs == {"format": model.FORMAT, "scans": "30001-2-3,30002-1-1"}
    assert not tree.to_dataset().data_vars and tree["30002-1-1"].sizes["trial"] == 5


def test_xarray_open_datatree_with_the_engine(release: Path) -> None:
    ours = neuroxr.open_datatree(release)
    theirs = xr.open_datatree(release, engine="sensorium")
    assert sorted(theirs.children) == sorted(ours.children)
    for name in ours.children:
        xr.testing.assert_identical(theirs[name].to_dataset().load(), ours[name].to_dataset().load())


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_the_engine_opens_a_zip_like_the_folder(shared_scan: Path, tmp_path: Path, compression: int) -> None:
    archive = zip_scan(shared_scan, tmp_path / "scan.zip", compression)
    xr.testing.assert_identical(xr.open_dataset(archive, engine="sensorium").load(), xr.open_dataset(shared_scan, engine="sensorium").load())


# ----------------------------------------------------------------------------------------------
# 2023 video scans: the same builder, one more dimension


def test_a_video_scan_matches_np_load(shared_dynamic: Path) -> None:
    ds = neuroxr.open_scan(shared_dynamic)
    dims = {"videos": ("y", "x", "frame"), "responses": ("neuron", "frame"), "behavior": ("behavior_variable", "frame")}
    dims["pupil_center"] = ("pupil_axis", "frame")
    stored = {name: eager(shared_dynamic, name) for name in dims}
    withheld = ds.responses_withheld.values
    for name, per_trial in dims.items():
        assert ds[name].dims == ("trial", *per_trial)
        assert ds[name].dtype == stored[name].dtype  # as stored: float32, and float64 for behaviour
        expected = stored[name]
        if name == "responses":
            np.testing.assert_array_equal(ds[name].values[~withheld], expected[~withheld])
        else:
            np.testing.assert_array_equal(ds[name].values, expected)
    assert ds.behavior.dtype == np.float64 and ds.videos.dtype == np.float32
    assert ds.attrs == {"scan": "30001-2-3", "release_name": DYNAMIC_NAME, "withheld": "responses",
                        "format": "sensorium-2023-dynamic", "frame_rate": 30.0}  # fmt: skip
    np.testing.assert_array_equal(ds.frame.values, np.arange(12))
    np.testing.assert_allclose(ds.time.values, np.arange(12) / 30.0)
    assert ds.time.dims == ("frame",) and ds.time.attrs["units"] == "s"
    assert list(ds.behavior_variable.values) == ["pupil_dilation", "running_speed"]
    np.testing.assert_array_equal(ds.tier.values, meta(shared_dynamic, "meta/trials/tiers.npy"))
    assert ds.cell_motor_coordinates.dtype == np.int64 and ds.cell_motor_coordinates.dims == ("neuron", "space")
    lengths = ds.n_frames.values
    for trial, video in enumerate(stored["videos"]):
        assert not np.isnan(video[..., : lengths[trial]]).any() and np.isnan(video[..., lengths[trial] :]).all()


def test_video_scan_statistics_are_time_resolved_and_keep_their_dtypes(shared_dynamic: Path) -> None:
    ds = neuroxr.open_scan(shared_dynamic)
    assert ds.videos_statistics.dims == ("subset", "statistic", "y", "x", "frame")
    assert ds.responses_statistics.dims == ("subset", "statistic", "neuron", "frame")
    assert ds.behavior_statistics.dims == ("subset", "statistic", "behavior_variable", "frame")
    for name in ("videos", "responses", "behavior", "pupil_center"):
        statistics = ds[f"{name}_statistics"]
        assert statistics.dtype == np.float64
        assert statistics.attrs[model.FILE_DTYPES_ATTR] == ["all/min=<f4", "all/max=<f4"]
        for stat in ("mean", "std", "min", "max", "median"):
            stored = meta(shared_dynamic, f"meta/statistics/{name}/all/{stat}.npy")
            np.testing.assert_array_equal(statistics.sel(subset="all", statistic=stat).values, stored)


def test_statistics_of_other_shapes_in_a_video_scan(tmp_path: Path) -> None:
    longer = neuroxr.open_scan(write_tiny_dynamic_scan(tmp_path / "a", statistics_frames=14))
    assert longer.responses_statistics.dims == ("subset", "statistic", "neuron", "responses_statistics_frame")
    assert longer.sizes["responses_statistics_frame"] == 14 and longer.sizes["frame"] == 12
    scan = write_tiny_dynamic_scan(tmp_path / "b")
    for stat in ("mean", "std", "min", "max", "median"):  # per-neuron statistics, (N, 1) as broadcasting wants them
        path = scan / "meta" / "statistics" / "responses" / "all" / f"{stat}.npy"
        np.save(path, np.load(path)[:, :1])
    ds = neuroxr.open_scan(scan)
    assert ds.responses_statistics.dims == ("subset", "statistic", "neuron", "responses_statistics_dim_2")


def test_withheld_test_responses_of_a_video_scan(shared_dynamic: Path) -> None:
    ds = neuroxr.open_scan(shared_dynamic)
    tiers = ds.tier.values
    tested = np.isin(tiers, ["live_test_main", "live_test_bonus", "final_test_main", "final_test_bonus"])
    np.testing.assert_array_equal(ds.responses_withheld.values, tested)
    assert np.isnan(ds.responses.values[tested]).all()
    raw = neuroxr.open_scan(shared_dynamic, mask_withheld=False)
    stored = eager(shared_dynamic, "responses")
    np.testing.assert_array_equal(raw.responses.values, stored)  # the stored zeros, NaN padding and all
    assert raw.attrs["withheld"] == "" and (np.nan_to_num(stored[tested]) == 0).all()
    assert not np.isnan(stored[~tested][:, :, 0]).any()


def test_real_test_responses_are_not_withheld(tmp_path: Path) -> None:
    # a copy with the test responses put back: the first trial of each test tier holds values, so nothing is masked
    scan = write_tiny_dynamic_scan(tmp_path, test_responses="values")
    ds = neuroxr.open_scan(scan)
    assert not ds.responses_withheld.any() and ds.attrs["withheld"] == ""
    np.testing.assert_array_equal(ds.responses.values, eager(scan, "responses"))


def test_a_test_tier_is_withheld_only_if_its_first_trial_holds_only_zeros_past_its_first_values(tmp_path: Path) -> None:
    """Withheld detection looks at the first values of a tier's first trial, and reads the trial whole where those
    are zeros: a value past them (here the last neuron's) still counts, from a folder and a deflated zip alike."""
    scan = write_tiny_dynamic_scan(tmp_path, n_neurons=1500)
    tiers = meta(scan, "meta/trials/tiers.npy")
    path = scan / "data" / "responses" / f"{np.flatnonzero(tiers == 'live_test_main')[0]}.npy"
    values = np.load(path)
    assert values.nbytes > 2**16 and np.nan_to_num(values).max() == 0
    values[-1, 0] = 0.5
    np.save(path, values)
    expected = np.isin(tiers, ["live_test_bonus", "final_test_main", "final_test_bonus"])
    for opened in (scan, zip_scan(scan, tmp_path / "scan.zip", zipfile.ZIP_DEFLATED)):
        np.testing.assert_array_equal(neuroxr.open_scan(opened).responses_withheld.values, expected)


def test_a_withheld_trial_holding_values_is_an_error_not_nan(dynamic_folder: Path) -> None:
    tiers = meta(dynamic_folder, "meta/trials/tiers.npy")
    second = np.flatnonzero(tiers == "live_test_main")[1]  # the first one still holds zeros
    path = dynamic_folder / "data" / "responses" / f"{second}.npy"
    values = np.load(path)
    np.save(path, np.where(np.isnan(values), np.nan, 0.5).astype(np.float32))
    expect_scan_error(dynamic_folder, f"data/responses/{second}.npy", "holds non-zero responses", "mask_withheld=False", compute=True)
    np.testing.assert_array_equal(neuroxr.open_scan(dynamic_folder, mask_withheld=False).responses.values, eager(dynamic_folder, "responses"))


def test_withheld_zeros_without_padding_are_masked_in_the_trial_only(tmp_path: Path) -> None:
    scan = write_tiny_dynamic_scan(tmp_path, test_responses="zeros-unpadded")
    ds = neuroxr.open_scan(scan)
    withheld = ds.responses_withheld.values
    assert withheld.sum() == 8
    values = ds.responses.values[withheld]
    inside = np.arange(12)[None, None, :] < ds.n_frames.values[withheld][:, None, None]
    assert np.isnan(values[np.broadcast_to(inside, values.shape)]).all()
    assert (values[np.broadcast_to(~inside, values.shape)] == 0).all()  # past the trial's end: as stored


def test_the_trial_lengths_are_checked_against_each_video_read(dynamic_folder: Path) -> None:
    lengths = neuroxr.open_scan(dynamic_folder).n_frames.values
    trial = int(np.flatnonzero(lengths == 12)[0])
    path = dynamic_folder / "data" / "videos" / f"{trial}.npy"
    video = np.load(path)
    video[..., 9:] = np.nan  # the video ends three frames before its behaviour does
    np.save(path, video)
    ds = neuroxr.open_scan(dynamic_folder)
    assert ds.n_frames.values[trial] == 12  # read from behaviour: no video is read at open
    np.testing.assert_array_equal(ds.responses.values.shape, (21, 7, 12))  # other variables read fine
    expect_scan_error(dynamic_folder, f"data/videos/{trial}.npy", "first NaN frame is 9, but n_frames is 12",
                      "row 0 of data/behavior", "n_frames_from='videos'", compute=True)  # fmt: skip
    from_videos = neuroxr.open_scan(dynamic_folder, n_frames_from="videos")
    assert from_videos.n_frames.values[trial] == 9
    np.testing.assert_array_equal(from_videos.videos.values, eager(dynamic_folder, "videos"))
    with pytest.raises(neuroxr.ScanError, match="cannot read the trial lengths from it"):
        neuroxr.open_scan(dynamic_folder, n_frames_from="eye")


def test_unknown_variables_of_a_video_scan_keep_the_time_axis(dynamic_folder: Path) -> None:
    (dynamic_folder / "data" / "eye").mkdir()
    for trial in range(21):
        np.save(dynamic_folder / "data" / "eye" / f"{trial}.npy", np.full((3, 12), trial, np.int16))
    ds = neuroxr.open_scan(dynamic_folder)
    assert ds.eye.dims == ("trial", "eye_dim_1", "frame")
    np.testing.assert_array_equal(ds.eye.values, eager(dynamic_folder, "eye"))


def test_a_tree_of_image_and_video_scans(mixed_release: Path) -> None:
    tree = neuroxr.open_datatree(mixed_release)
    assert sorted(tree.children) == ["21067-10-18", "29515-10-12"]
    assert tree.attrs["format"] == "sensorium-2022-static,sensorium-2023-dynamic"
    assert tree["29515-10-12"].to_dataset().attrs["format"] == "sensorium-2023-dynamic"
    assert "frame" not in tree["21067-10-18"].to_dataset().dims
    theirs = xr.open_datatree(mixed_release, engine="sensorium")
    for name in tree.children:
        xr.testing.assert_identical(theirs[name].to_dataset().load(), tree[name].to_dataset().load())
