"""neuroxr.synthetic: the lazy synthetic scan is what open_scan gives for a real one, and it looks real."""

from __future__ import annotations

import contextlib
import re

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from neuroxr import datamodel as model
from neuroxr import open_scan
from neuroxr.formats.release import to_folder
from neuroxr.synthetic import make_scan, release_scan, write_scan

SMALL = {"n_trials": 60, "n_neurons": 24, "image_shape": (1, 12, 20)}


@pytest.fixture(scope="module")
def scan():
    return make_scan(**SMALL, seed=3, chunk_trials=16)


@pytest.fixture(scope="module")
def loaded(scan):
    return scan.compute()


@pytest.fixture(scope="module")
def competition():
    return make_scan(**SMALL, competition=True, seed=4).compute()


def test_dims_dtypes_and_laziness(scan):
    sizes = {"trial": 60, "channel": 1, "y": 12, "x": 20, "neuron": 24}
    sizes |= {"behavior_variable": 3, "pupil_axis": 2, "space": 3, "subset": 2, "statistic": 5}
    assert dict(scan.sizes) == sizes
    for name, dims in model.DATA_DIMS.items():
        variable = scan[name]
        assert variable.dims == ("trial", *dims)
        assert variable.dtype == np.float32
        assert isinstance(variable.data, da.Array)
        assert variable.attrs[model.FILE_ATTR] == f"data/{name}"
        assert variable.attrs["long_name"]
        # chunked along trial only, with the same chunks for every variable
        assert variable.data.chunks[0] == (16, 16, 16, 12)
        assert all(len(chunks) == 1 for chunks in variable.data.chunks[1:])
        statistics = scan[model.statistics_name(name)]
        assert statistics.dims[:2] == ("subset", "statistic")
        assert statistics.attrs[model.FILE_ATTR] == f"meta/statistics/{name}"
        assert statistics.variable.chunks is None  # not dask
        assert isinstance(statistics.values, np.ndarray) and statistics.dtype == np.float32
    assert scan.images_statistics.shape == (2, 5)
    assert scan.responses_statistics.dims == ("subset", "statistic", "neuron")
    assert list(scan.subset.values) == ["all", "stimulus_Frame"]
    assert list(scan.statistic.values) == list(model.STATISTICS)
    assert list(scan.behavior_variable.values) == list(model.BEHAVIOR_VARIABLES)
    assert list(scan.pupil_axis.values) == ["x", "y"] and list(scan.space.values) == ["x", "y", "z"]
    for dim in ("trial", "channel", "y", "x"):
        assert scan[dim].dtype == np.int64
    assert scan.attrs == {
        "scan": "30001-2-3",
        "format": model.FORMAT,
        "release_name": scan.attrs["release_name"],
        "withheld": "",
    }
    assert re.fullmatch(r"static30001-2-3-GrayImageNet-[0-9a-f]{32}", scan.attrs["release_name"])


def test_coordinates(scan):
    expected = {
        "tier": ("trial", "U", "meta/trials/tiers.npy"),
        "image_id": ("trial", "i", "meta/trials/frame_image_id.npy"),
        "trial_idx": ("trial", "i", "meta/trials/trial_idx.npy"),
        "frame_image_class": ("trial", "U", "meta/trials/frame_image_class.npy"),
        "frame_trial_ts": ("trial", "U", "meta/trials/frame_trial_ts.npy"),
        "condition_hash": ("trial", "U", "meta/trials/condition_hash.npy"),
        "trial_animal_id": ("trial", "i", "meta/trials/animal_id.npy"),
        "trial_session": ("trial", "i", "meta/trials/session.npy"),
        "trial_scan_idx": ("trial", "i", "meta/trials/scan_idx.npy"),
        "area": ("neuron", "U", "meta/neurons/area.npy"),
        "layer": ("neuron", "U", "meta/neurons/layer.npy"),
        "animal_id": ("neuron", "u", "meta/neurons/animal_ids.npy"),
        "session": ("neuron", "u", "meta/neurons/sessions.npy"),
        "scan_idx": ("neuron", "u", "meta/neurons/scan_idx.npy"),
    }
    for name, (dim, kind, path) in expected.items():
        coord = scan.coords[name]
        assert coord.dims == (dim,), name
        assert coord.dtype.kind == kind, name
        assert coord.attrs[model.FILE_ATTR] == path, name
        assert coord.variable.chunks is None  # loaded eagerly, not dask
    assert scan.trial_idx.dtype == np.int64
    assert scan.neuron.dtype == np.uint16 and scan.animal_id.dtype == np.uint16
    assert scan.session.dtype == np.uint8 and scan.scan_idx.dtype == np.uint8
    assert (scan.animal_id == 30001).all() and (scan.session == 2).all() and (scan.scan_idx == 3).all()
    assert (scan.trial_animal_id == 30001).all() and (scan.trial_scan_idx == 3).all()
    motor = scan.cell_motor_coordinates
    assert motor.dims == ("neuron", "space") and motor.dtype == np.float32
    assert motor.attrs[model.FILE_ATTR] == "meta/neurons/cell_motor_coordinates.npy"
    assert float(motor.sel(space="z").min()) >= 100 and float(motor.sel(space="z").max()) <= 340
    withheld = scan.coords[model.WITHHELD_COORD]
    assert withheld.dtype == bool and not withheld.any() and model.FILE_ATTR not in withheld.attrs
    units = scan.neuron.values
    assert units[0] == 1 and np.all(np.diff(units.astype(int)) >= 1) and units[-1] > len(units)


def test_tiers_order_and_labels(scan):
    tiers = scan.tier.values
    counts = {tier: int((tiers == tier).sum()) for tier in np.unique(tiers)}
    assert set(counts) == {"train", "validation", "test"}
    assert 0.6 < counts["train"] / 60 < 0.9 and counts["validation"] >= 1
    test_ids = scan.image_id.values[tiers == "test"]
    repeats = np.unique(test_ids, return_counts=True)[1]
    assert len(repeats) >= 3 and (repeats >= 3).all()
    others = scan.image_id.values[tiers != "test"]
    assert len(np.unique(others)) == len(others) and not np.isin(others, test_ids).any()
    # files are shuffled relative to presentation order; trial_idx is that order
    order = scan.trial_idx.values
    assert sorted(order) == list(range(60)) and not np.array_equal(order, np.arange(60))
    stamps = scan.frame_trial_ts.values[np.argsort(order)]
    assert all(re.fullmatch(r"Timestamp\('\d{4}-\d\d-\d\d \d\d:\d\d:\d\d'\)", s) for s in stamps)
    seconds = np.array([np.datetime64(s[11:-2]) for s in stamps]).astype("datetime64[s]").astype(np.int64)
    assert np.all(np.diff(seconds) >= 1) and np.all(np.diff(seconds) <= 10)
    hashes = scan.condition_hash.values
    assert all(len(h) == 20 for h in hashes)
    first = {image: h for image, h in zip(scan.image_id.values, hashes, strict=True)}
    assert all(first[image] == h for image, h in zip(scan.image_id.values, hashes, strict=True))


def test_images_integral_repeats_identical_and_shared_across_scans(loaded):
    images = loaded.images.values
    assert images.min() >= 0 and images.max() <= 255 and np.array_equal(images, np.rint(images))
    assert images.std() > 10  # not flat
    test = loaded.tier.values == "test"
    for image_id in np.unique(loaded.image_id.values[test]):
        shown = images[loaded.image_id.values == image_id]
        assert len(shown) >= 3 and (shown == shown[0]).all()
    other = make_scan(**SMALL, seed=99)
    other_test = other.tier.values == "test"
    shared = np.intersect1d(other.image_id.values[other_test], loaded.image_id.values[test])
    assert len(shared) >= 3  # test images are the same in every synthetic scan
    a = other.images.values[other.image_id.values == shared[0]][0]
    assert np.array_equal(a, images[loaded.image_id.values == shared[0]][0])


def test_responses_look_like_deconvolved_activity(loaded):
    responses = loaded.responses.values
    assert responses.dtype == np.float32 and (responses > 0).all()
    tiny = (responses >= 1e-8) & (responses <= 1e-7)
    assert 0.1 < tiny.mean() < 0.8  # many near-zero values, but not exact zeros
    active = responses[responses > 1e-6]
    assert np.percentile(active, 99.5) > 8 * np.median(active)  # heavy-tailed


def test_repeats_correlate():
    ds = make_scan(n_trials=200, n_neurons=40, image_shape=(1, 18, 32), seed=5).compute()
    test = ds.tier.values == "test"
    responses, ids = ds.responses.values[test], ds.image_id.values[test]
    single, loo = [], []
    for image_id in np.unique(ids):
        group = responses[ids == image_id]
        for j in range(len(group)):
            single.append(group[j])
            loo.append(np.delete(group, j, axis=0).mean(axis=0))
    a, b = np.array(single), np.array(loo)
    a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    oracle = (a * b).sum(axis=0) / np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))
    assert np.nanmean(oracle) > 0.3


def test_behavior(loaded):
    behavior, pupil = loaded.behavior.values, loaded.pupil_center.values
    assert behavior.dtype == np.float32 and pupil.dtype == np.float32
    assert np.isfinite(behavior).all() and np.isfinite(pupil).all()
    assert (behavior[:, 0] > 0).all()  # pupil dilation
    in_time = behavior[np.argsort(loaded.trial_idx.values)]
    np.testing.assert_allclose(in_time[:, 1], np.gradient(in_time[:, 0]), rtol=1e-4, atol=1e-4)


def test_statistics_equal_numpy_on_train_tier(loaded):
    train = loaded.tier.values == "train"
    for name in model.DATA_VARIABLES:
        values = loaded[name].values[train].astype(np.float64)
        axis = None if name == "images" else 0
        expected = {
            "mean": values.mean(axis=axis),
            "std": values.std(axis=axis, ddof=1),
            "min": values.min(axis=axis),
            "max": values.max(axis=axis),
            "median": np.median(values, axis=axis),
        }
        statistics = loaded[model.statistics_name(name)]
        for subset in ("all", "stimulus_Frame"):
            for statistic, value in expected.items():
                got = statistics.sel(subset=subset, statistic=statistic).values
                np.testing.assert_allclose(got, value, rtol=2e-6, err_msg=f"{name} {statistic}")


def test_competition_scan(competition):
    tiers = competition.tier.values
    assert set(np.unique(tiers)) == {"train", "validation", "test", "final_test"}
    final = competition.image_id.values[tiers == "final_test"]
    assert (np.unique(final, return_counts=True)[1] >= 3).all()
    assert not np.isin(final, competition.image_id.values[tiers == "test"]).any()
    assert competition.trial_idx.dtype == np.dtype("<U32")
    assert all(re.fullmatch(r"[0-9a-f]{32}", h) for h in competition.trial_idx.values)
    assert len(set(competition.trial_idx.values)) == competition.sizes["trial"]
    withheld = np.isin(tiers, ["test", "final_test"])
    assert np.array_equal(competition.responses_withheld.values, withheld)
    responses = competition.responses.values
    assert np.isnan(responses[withheld]).all() and np.isfinite(responses[~withheld]).all()
    assert np.isfinite(competition.behavior.values).all()
    assert competition.attrs["withheld"] == "responses"
    assert np.isfinite(competition.responses_statistics.values).all()


def test_behavior_withheld():
    ds = make_scan(**SMALL, competition=True, behavior_withheld=True).compute()
    assert ds.attrs["withheld"] == "responses,behavior,pupil_center"
    assert np.isnan(ds.behavior.values).all() and np.isnan(ds.pupil_center.values).all()
    assert (ds.behavior_statistics.values == 0).all() and (ds.pupil_center_statistics.values == 0).all()
    assert (ds.responses_statistics.sel(statistic="std") > 0).all()


def test_deterministic_and_independent_of_chunking(loaded):
    again = make_scan(**SMALL, seed=3, chunk_trials=7).compute()
    assert again.responses.data.shape == loaded.responses.shape
    for name in ("images", "responses", "behavior", "pupil_center", "responses_statistics", "images_statistics"):
        np.testing.assert_array_equal(again[name].values, loaded[name].values)
    assert np.array_equal(again.trial_idx.values, loaded.trial_idx.values)
    other = make_scan(**SMALL, seed=8)
    assert not np.array_equal(other.image_id.values, loaded.image_id.values)
    assert other.attrs["release_name"] != loaded.attrs["release_name"]


def test_release_preset_is_lazy(forbidden_scheduler):
    with forbidden_scheduler():
        ds = release_scan()
    assert ds.images.shape == (7000, 1, 144, 256) and ds.responses.shape == (7000, 8000)
    assert ds.images.dtype == np.float32 and ds.responses.dtype == np.float32
    chunks = ds.images.data.chunks[0]
    assert ds.responses.data.chunks[0] == chunks == ds.behavior.data.chunks[0]
    assert 32 * 2**20 <= chunks[0] * 1 * 144 * 256 * 4 <= 64 * 2**20
    assert ds.responses_statistics.shape == (2, 5, 8000)
    with forbidden_scheduler(), pytest.raises(AssertionError, match="something was computed"):
        ds.responses_statistics.values  # computed only when read
    assert ds.tier.size == 7000 and (ds.tier == "test").sum() >= 500


def test_invalid_arguments():
    with pytest.raises(ValueError, match="n_trials=10"):
        make_scan(n_trials=10)
    with pytest.raises(ValueError, match="scan like"):
        make_scan(scan="mouse-1")
    with pytest.raises(ValueError, match="preset"):
        make_scan(preset="huge")


def test_write_scan(tmp_path):
    path = write_scan(tmp_path / "scan", n_trials=30, n_neurons=5, image_shape=(1, 4, 4))
    assert path == tmp_path / "scan"
    assert len(list((path / "data" / "responses").iterdir())) == 30
    assert np.load(path / "meta" / "neurons" / "unit_ids.npy").dtype == np.uint16


@pytest.mark.parametrize("kind", ["plain", "competition"])
def test_make_scan_is_what_open_scan_returns(tmp_path, kind):
    """The guard of the one builder: a synthetic scan written out and opened again is the same Dataset."""
    options = {"competition": True, "behavior_withheld": True} if kind == "competition" else {}
    ds = make_scan(n_trials=30, n_neurons=9, image_shape=(1, 6, 10), chunk_trials=12, seed=2, **options)
    path = to_folder(ds, tmp_path / ds.attrs["release_name"])
    opened = open_scan(path)
    xr.testing.assert_identical(opened.compute(), ds.compute())
    for name, variable in ds.variables.items():
        assert opened[name].dtype == variable.dtype, name
        assert (opened[name].chunks is None) == (variable.chunks is None), name


# --------------------------------------------------------------------------------------------------
# 2023 video scans

VIDEO = {"kind": "dynamic", "n_trials": 70, "n_neurons": 16, "video_shape": (18, 32), "n_frames": 64}
TESTS = ("live_test_main", "live_test_bonus", "final_test_main", "final_test_bonus")


@pytest.fixture(scope="module")
def video_scan():
    return make_scan(**VIDEO, seed=3, chunk_trials=16)


@pytest.fixture(scope="module")
def videos_loaded(video_scan):
    return video_scan.compute()


def _clip_groups(videos: np.ndarray) -> np.ndarray:
    """A group number per trial: trials whose videos are identical share it (the test's own rule)."""
    keys = [np.nan_to_num(video, nan=-1).tobytes() for video in videos]
    return np.unique(keys, return_inverse=True)[1]


def test_video_scan_dims_dtypes_and_laziness(video_scan):
    assert dict(video_scan.sizes) == {"trial": 70, "y": 18, "x": 32, "frame": 64, "neuron": 16, "behavior_variable": 2,
                                      "pupil_axis": 2, "subset": 1, "statistic": 5, "space": 3}  # fmt: skip
    dtypes = {"videos": np.float32, "responses": np.float32, "behavior": np.float64, "pupil_center": np.float32}
    for name, dims in model.DYNAMIC.data_dims.items():
        variable = video_scan[name]
        assert variable.dims == ("trial", *dims) and variable.dtype == dtypes[name]
        assert isinstance(variable.data, da.Array) and variable.data.chunks[0] == (16, 16, 16, 16, 6)
        assert video_scan[model.statistics_name(name)].dims == ("subset", "statistic", *dims)
        assert video_scan[model.statistics_name(name)].variable.chunks is None
    assert video_scan.attrs["format"] == "sensorium-2023-dynamic" and video_scan.attrs["frame_rate"] == 30.0
    assert re.fullmatch(r"dynamic30001-2-3-Video-[0-9a-f]{32}", video_scan.attrs["release_name"])
    assert video_scan.cell_motor_coordinates.dtype == np.int64
    np.testing.assert_allclose(video_scan.time.values, np.arange(64) / 30)


def test_video_scan_tiers_clips_and_trial_lengths(videos_loaded):
    tiers = videos_loaded.tier.values
    assert set(tiers) == set(model.DYNAMIC.tiers)
    assert 0.55 < (tiers == "train").mean() < 0.8
    groups = _clip_groups(videos_loaded.videos.values)
    for tier in ("oracle", *TESTS):
        counts = np.unique(groups[tiers == tier], return_counts=True)[1]
        assert len(counts) >= 2 and (counts >= 2).all(), tier  # a few clips, each repeated
    train = groups[tiers == "train"]
    assert len(np.unique(train)) == len(train) and not np.isin(train, groups[tiers != "train"]).any()
    lengths = videos_loaded.n_frames.values
    assert (lengths == 60).mean() > 0.4 and (lengths < 60).any() and lengths.min() >= 38  # mostly 15/16 of 64 frames
    for name in model.DYNAMIC.data_variables:  # every variable is NaN from the trial's length on, and only there
        values = videos_loaded[name].values
        after = np.arange(64) >= lengths[:, None]
        flat = values.reshape(len(values), -1, 64)
        assert np.isnan(flat.transpose(0, 2, 1)[after]).all(), name
        assert not np.isnan(flat.transpose(0, 2, 1)[~after]).any(), name


def test_videos_look_like_videos(videos_loaded):
    videos = videos_loaded.videos.values
    lengths = videos_loaded.n_frames.values
    known = videos[~np.isnan(videos)]
    assert known.min() >= 0 and known.max() <= 255 and np.array_equal(known, np.rint(known))
    natural = np.flatnonzero(videos_loaded.tier.values == "train")
    step = [np.abs(np.diff(videos[t, ..., : lengths[t]], axis=-1)).mean() for t in natural]
    spread = [videos[t, ..., : lengths[t]].std() for t in natural]
    assert np.mean(step) < 0.25 * np.mean(spread)  # smooth in time: frames change little from one to the next
    other = make_scan(**{**VIDEO, "n_trials": 120}, seed=11).compute()
    groups = _clip_groups(np.concatenate([videos, other.videos.values]))
    tested = np.isin(videos_loaded.tier.values, TESTS)
    assert np.isin(groups[:70][tested], groups[70:]).all()  # the test clips are the same in every synthetic scan


def test_video_responses_follow_the_video(videos_loaded):
    responses = videos_loaded.responses.values
    lengths = videos_loaded.n_frames.values
    assert (np.nan_to_num(responses, nan=1) > 0).all()
    groups = _clip_groups(videos_loaded.videos.values)
    oracle = np.flatnonzero(videos_loaded.tier.values == "oracle")
    same, different = [], []
    for a in oracle:
        for b in oracle[oracle > a]:
            n = min(lengths[a], lengths[b])
            r = [np.corrcoef(responses[a, k, :n], responses[b, k, :n])[0, 1] for k in range(16)]
            (same if groups[a] == groups[b] else different).append(np.nanmean(r))
    assert np.mean(same) > 0.3 and np.mean(same) > np.mean(different) + 0.2  # repeats of a clip correlate
    trace = responses[0, :, : lengths[0]]
    lag1 = [np.corrcoef(row[:-1], row[1:])[0, 1] for row in trace]
    assert np.nanmean(lag1) > 0.8  # calcium-like: smooth, a rise and a slow decay


def test_video_behaviour(videos_loaded):
    behavior = videos_loaded.behavior.sel(behavior_variable="pupil_dilation").values
    speed = videos_loaded.behavior.sel(behavior_variable="running_speed").values
    assert np.nanmin(behavior) >= 3 and np.nanmax(speed) > 5 and (np.abs(speed[~np.isnan(speed)]) < 1).mean() > 0.3
    assert np.isfinite(videos_loaded.pupil_center.values[:, :, 0]).all()


def test_video_statistics_equal_numpy_on_the_train_tier(videos_loaded):
    train = videos_loaded.tier.values == "train"
    with np.errstate(all="ignore"):
        for name in model.DYNAMIC.data_variables:
            values = videos_loaded[name].values[train].astype(np.float64)
            with pytest.warns(RuntimeWarning) if np.isnan(values).all(axis=0).any() else contextlib.nullcontext():
                expected = {"mean": np.nanmean(values, 0), "std": np.nanstd(values, 0, ddof=1), "min": np.nanmin(values, 0),
                            "max": np.nanmax(values, 0), "median": np.nanmedian(values, 0)}  # fmt: skip
            statistics = videos_loaded[model.statistics_name(name)]
            for statistic, value in expected.items():
                got = statistics.sel(subset="all", statistic=statistic).values
                assert got.dtype == np.float32
                np.testing.assert_allclose(got, value.astype(np.float32), rtol=1e-6, err_msg=f"{name} {statistic}")


def test_competition_video_scan_withholds_the_test_tiers():
    ds = make_scan(**VIDEO, competition=True, seed=3).compute()
    withheld = np.isin(ds.tier.values, TESTS)
    np.testing.assert_array_equal(ds.responses_withheld.values, withheld)
    assert np.isnan(ds.responses.values[withheld]).all() and ds.attrs["withheld"] == "responses"
    assert not np.isnan(ds.responses.values[~withheld][:, :, 0]).any()


def test_video_scan_deterministic_and_independent_of_chunking(videos_loaded):
    again = make_scan(**VIDEO, seed=3, chunk_trials=9).compute()
    xr.testing.assert_identical(again, videos_loaded)


def test_video_release_preset_is_lazy(forbidden_scheduler):
    with forbidden_scheduler():
        ds = make_scan(kind="dynamic", preset="release")
    assert ds.videos.shape == (680, 36, 64, 320) and ds.responses.shape == (680, 8000, 320)
    assert ds.responses_statistics.shape == (1, 5, 8000, 320)
    assert ds.responses.data.chunks[0] == ds.videos.data.chunks[0] and 32 * 2**20 <= ds.responses.data.chunks[0][0] * 8000 * 320 * 4 <= 64 * 2**20


def test_video_scan_options_are_checked():
    with pytest.raises(ValueError, match="image_shape is not an option of a dynamic scan"):
        make_scan(kind="dynamic", image_shape=(1, 2, 3))
    with pytest.raises(ValueError, match="n_frames is not an option of a static scan"):
        make_scan(n_frames=10)
    with pytest.raises(ValueError, match="kind"):
        make_scan(kind="2023")
    with pytest.raises(ValueError, match="n_trials=20"):
        make_scan(kind="dynamic", n_trials=20)


@pytest.mark.parametrize("options", [{}, {"competition": True}], ids=["plain", "competition"])
def test_make_scan_of_a_video_scan_is_what_open_scan_returns(tmp_path, options):
    ds = make_scan(kind="dynamic", n_trials=50, n_neurons=6, video_shape=(6, 10), n_frames=20, chunk_trials=12, seed=2, **options)
    for path in (to_folder(ds, tmp_path / ds.attrs["release_name"]), to_folder(ds, tmp_path / "s.zip", zip=True, compression="deflated")):
        opened = open_scan(path)
        if path.suffix == ".zip":
            opened.attrs["release_name"] = ds.attrs["release_name"]
        xr.testing.assert_identical(opened.compute(), ds.compute())
        for name, variable in ds.variables.items():
            assert opened[name].dtype == variable.dtype, name
