"""neuroxr.analysis.standardization: the official loader's normalisation, lazily, on scans opened with open_scan."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from conftest import write_tiny_dynamic_scan, write_tiny_scan

from neuroxr import datamodel as model
from neuroxr import open_scan
from neuroxr.analysis.standardization import response_precision, response_precision_from_std, standardize, train_statistics
from neuroxr.errors import DatasetError

SMALL = {"n_trials": 120, "n_neurons": 20, "image_shape": (1, 9, 16)}


@pytest.fixture
def opened(tmp_path_factory: pytest.TempPathFactory):
    """``opened(**write_tiny_scan_kwargs)``: a tiny scan written with np.save and opened with open_scan in blocks of 7 trials.

    Dask data variables; numpy statistics of the train tier (subsets "all" and "stimulus_Frame").
    """

    def scan(*, mask_withheld: bool = True, **kwargs) -> xr.Dataset:
        folder = write_tiny_scan(tmp_path_factory.mktemp("standardize"), **kwargs)
        return open_scan(folder, chunks=7, mask_withheld=mask_withheld)

    return scan


def _stored(ds: xr.Dataset, variable: str, statistic: str) -> np.ndarray:
    return ds[model.statistics_name(variable)].sel(subset="all", statistic=statistic).values


def _official(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """NeuroNormalizer's transforms, trial by trial as the official loader applies them, in numpy."""
    ds = ds.compute()
    s = _stored(ds, "responses", "std")
    threshold = 0.01 * np.nanmean(s)
    idx = s > threshold
    precision = np.ones_like(s) / threshold
    precision[idx] = 1 / s[idx]
    out = {name: [] for name in model.DATA_VARIABLES}
    for trial in range(ds.sizes["trial"]):
        out["images"].append((ds.images.values[trial] - _stored(ds, "images", "mean")) / _stored(ds, "images", "std"))
        out["responses"].append(ds.responses.values[trial] * precision)
        out["behavior"].append(ds.behavior.values[trial] * (1 / _stored(ds, "behavior", "std")))
        pupil = ds.pupil_center.values[trial]
        out["pupil_center"].append((pupil - _stored(ds, "pupil_center", "mean")) / _stored(ds, "pupil_center", "std"))
    return {name: np.stack(values) for name, values in out.items()}


def test_matches_the_official_normalizer_including_the_std_threshold(opened):
    ds = opened()
    std = ds.responses_statistics.values
    std[0, 1, 2] = 1e-5  # far below 1% of the mean std: raised to the threshold
    std[0, 1, 4] = 0.0
    result = standardize(ds)
    expected = _official(ds)
    for name in model.DATA_VARIABLES:
        assert result[name].dtype == np.float32
        np.testing.assert_allclose(result[name].values, expected[name], rtol=1e-6, atol=1e-6)
    threshold = 0.01 * np.nanmean(std[0, 1])
    np.testing.assert_allclose(response_precision(ds).values[[2, 4]], 1 / threshold, rtol=1e-6)


def test_behavior_is_divided_not_centred_and_pupil_is_centred(opened):
    ds = opened()
    result = standardize(ds)
    behavior = result.behavior.mean("trial").values
    assert behavior[0] > 1  # pupil dilation mean ~5, std ~2: not centred
    assert abs(float(result.pupil_center.sel(trial=ds.tier == "train").mean())) < 1e-5


def test_is_lazy_and_keeps_coordinates_and_records_attrs(opened, forbidden_scheduler):
    ds = opened()
    with forbidden_scheduler():
        for statistics in ("stored", "train"):
            result = standardize(ds, statistics=statistics)
            for name in model.DATA_VARIABLES:
                assert isinstance(result[name].data, da.Array)
                assert result[name].chunks == ds[name].chunks
            assert result.attrs[("standardization_statistics")] == statistics
    assert result.attrs["standardized"] == "images,responses,behavior,pupil_center"
    assert result.attrs["scan"] == "30001-2-3"
    assert "standardization" in result.responses.attrs
    assert result.responses.attrs[model.FILE_ATTR] == "data/responses"
    for name in ds.coords:
        xr.testing.assert_identical(result[name], ds[name])
    xr.testing.assert_identical(result.responses_statistics, ds.responses_statistics)


def test_train_statistics_equal_the_stored_ones_when_those_came_from_the_train_tier(opened):
    ds = opened(seed=3)
    stored = standardize(ds)
    train = standardize(ds, statistics="train")
    for name in model.DATA_VARIABLES:
        np.testing.assert_allclose(train[name].values, stored[name].values, rtol=2e-5, atol=2e-5)
    precision = response_precision(ds, statistics="train").values
    np.testing.assert_allclose(precision, 1 / _stored(ds, "responses", "std"), rtol=1e-5)


def test_train_statistics_are_laid_out_like_the_stored_ones(opened, forbidden_scheduler):
    ds = opened(seed=5)
    with forbidden_scheduler():
        computed = train_statistics(ds)
    for name in model.DATA_VARIABLES:
        stored = ds[model.statistics_name(name)].sel(subset=["all"], statistic=["mean", "std"])
        result = computed[model.statistics_name(name)]
        assert result.dims == stored.dims and result.dtype == np.float32
        assert list(result.statistic.values) == ["mean", "std"] and list(result.subset.values) == ["all"]
        np.testing.assert_allclose(result.values, stored.values, rtol=1e-5)
    assert list(train_statistics(ds, ["responses"]).data_vars) == ["responses_statistics"]
    in_memory = train_statistics(ds.compute())
    for name in computed.data_vars:
        assert isinstance(in_memory[name].data, np.ndarray)
        np.testing.assert_allclose(in_memory[name].values, computed[name].values, rtol=1e-6)
    uneven = train_statistics(ds.chunk(trial=4, neuron=2, y=1)).compute()
    xr.testing.assert_allclose(uneven, computed.compute(), rtol=1e-6)


def test_train_statistics_use_only_train_trials_with_ddof_1(opened):
    ds = opened(seed=4)
    ds = ds.drop_vars([model.statistics_name(name) for name in model.DATA_VARIABLES])
    result = standardize(ds, statistics="train")
    train = ds.tier.values == "train"
    responses = ds.responses.values.astype(np.float64)
    np.testing.assert_allclose(result.responses.values, responses / responses[train].std(0, ddof=1), rtol=1e-5)
    images = ds.images.values.astype(np.float64)
    expected = (images - images[train].mean()) / images[train].std(ddof=1)
    np.testing.assert_allclose(result.images.values, expected, rtol=1e-5, atol=1e-5)


def test_withheld_values_stay_nan_and_zero_std_gives_nan_without_warnings(opened):
    ds = opened(behavior_withheld=True, competition=True)  # withheld responses and behaviour read NaN
    ds["pupil_center"] = opened(behavior_withheld=True, competition=True, mask_withheld=False).pupil_center  # the stored zeros
    assert np.isnan(ds.behavior.values).all() and (ds.pupil_center.values == 0).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = standardize(ds)
        values = {name: result[name].values for name in model.DATA_VARIABLES}
    withheld = ds.responses_withheld.values
    assert (ds.tier.values[withheld] != "train").all() and "test" in ds.tier.values[withheld]
    assert np.isnan(values["responses"][withheld]).all()
    assert not np.isnan(values["responses"][~withheld]).any()
    assert np.isnan(values["behavior"]).all()
    assert np.isnan(values["pupil_center"]).all()  # zeros on disk, but the stored std is zero
    assert np.isfinite(values["images"]).all()


def test_missing_stored_statistics_name_the_file_and_point_to_train(opened):
    ds = opened().drop_vars("responses_statistics")
    with pytest.raises(DatasetError, match=r"meta/statistics/responses/all/std\.npy.*statistics='train'"):
        standardize(ds)
    nan_stats = opened()
    nan_stats["behavior_statistics"] = nan_stats.behavior_statistics * np.nan
    with pytest.raises(DatasetError, match="behavior/all/std"):
        standardize(nan_stats)


def test_refuses_twice_and_unknown_sources(opened):
    ds = opened()
    with pytest.raises(ValueError, match="already standardised"):
        standardize(standardize(ds))
    with pytest.raises(ValueError, match="'stored' or 'train'"):
        standardize(ds, statistics="test")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="train trials"):
        standardize(ds.isel(trial=ds.tier.values == "test"), statistics="train")


def test_variables_absent_from_the_dataset_are_skipped(opened):
    ds = opened().drop_vars(["images", "behavior"])
    result = standardize(ds)
    assert result.attrs["standardized"] == "responses,pupil_center"
    assert "images" not in result


def test_precision_from_std_follows_the_official_formula():
    std = np.array([2.0, 0.0, np.nan, 4.0, 1e-4], dtype=np.float32)
    threshold = 0.01 * np.nanmean(std)
    expected = np.array([0.5, 1 / threshold, 1 / threshold, 0.25, 1 / threshold], dtype=np.float32)
    np.testing.assert_allclose(response_precision_from_std(std), expected, rtol=1e-6)
    assert response_precision_from_std(std).dtype == np.float32
    assert np.isnan(response_precision_from_std(np.zeros(3))).all()


def test_synthetic_scan_train_statistics_reproduce_the_stored_ones(synthetic):
    ds = synthetic(**SMALL, seed=2)
    stored = standardize(ds)
    train = standardize(ds, statistics="train")
    for name in model.DATA_VARIABLES:
        np.testing.assert_allclose(train[name].values, stored[name].values, rtol=1e-5, atol=1e-5)
    on_train = stored.responses.sel(trial=ds.tier == "train").std("trial", ddof=1).values
    threshold = 0.01 * np.nanmean(_stored(ds, "responses", "std"))
    regular = _stored(ds, "responses", "std") > threshold
    np.testing.assert_allclose(on_train[regular], 1, rtol=1e-4)


def test_synthetic_competition_scan_keeps_withheld_cells_nan(synthetic):
    ds = synthetic(**SMALL, competition=True, behavior_withheld=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = standardize(ds).compute()
    withheld = ds[model.WITHHELD_COORD].values
    assert withheld.any() and np.isnan(result.responses.values[withheld]).all()
    assert np.isfinite(result.responses.values[~withheld]).all()
    assert np.isnan(result.behavior.values).all() and np.isnan(result.pupil_center.values).all()


def test_neuroxr_standardize_is_the_function(opened):
    import neuroxr

    ds = opened()
    assert neuroxr.standardize is standardize
    assert neuroxr.standardize(ds).attrs["standardized"] == "images,responses,behavior,pupil_center"


# --------------------------------------------------------------------------------------------------
# 2023 video scans: NeuroNormalizer(in_name="videos") on the uncut, NaN-padded trials


def _official_video(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """neuralpredictors@43faede NeuroNormalizer with in_name="videos", trial by trial, on the stored arrays."""
    ds = ds.compute()
    s = _stored(ds, "responses", "std")
    threshold = 0.01 * np.nanmean(s)  # over every entry, frames included
    idx = s > threshold
    precision = np.ones_like(s) / threshold
    precision[idx] = 1 / s[idx]
    out = {name: [] for name in model.DYNAMIC.data_variables}
    for trial in range(ds.sizes["trial"]):
        out["videos"].append((ds.videos.values[trial] - _stored(ds, "videos", "mean")) / _stored(ds, "videos", "std"))
        out["responses"].append(ds.responses.values[trial] * precision)
        out["behavior"].append(ds.behavior.values[trial] * (1 / _stored(ds, "behavior", "std")))
        pupil = ds.pupil_center.values[trial]
        out["pupil_center"].append((pupil - _stored(ds, "pupil_center", "mean")) / _stored(ds, "pupil_center", "std"))
    return {name: np.stack(values) for name, values in out.items()}


def test_video_scans_are_standardized_as_the_2023_loader_does(shared_dynamic):
    ds = open_scan(shared_dynamic, chunks=4, mask_withheld=False)
    result = standardize(ds)
    assert result.attrs["standardized"] == "videos,responses,behavior,pupil_center"
    assert isinstance(result.videos.data, da.Array) and result.videos.dims == ("trial", "y", "x", "frame")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # frames no train trial reaches have NaN statistics
        expected = _official_video(ds)
    for name, values in expected.items():
        np.testing.assert_allclose(result[name].values, values, rtol=1e-6, equal_nan=True, err_msg=name)
        assert np.array_equal(np.isnan(result[name].values), np.isnan(values)), name  # padding stays NaN
    assert "transform" not in result.videos.attrs and result.videos.attrs["standardization"].startswith("(x - mean) / std")
    precision = response_precision(ds)
    assert precision.dims == ("neuron", "frame")


def test_train_statistics_of_a_video_scan_leave_the_padding_out(shared_dynamic):
    ds = open_scan(shared_dynamic, chunks=4)
    stats = train_statistics(ds)
    for name in model.DYNAMIC.data_variables:
        for statistic in ("mean", "std"):
            computed = stats[model.statistics_name(name)].sel(subset="all", statistic=statistic).values
            np.testing.assert_allclose(computed, _stored(ds, name, statistic), rtol=2e-6, equal_nan=True, err_msg=f"{name} {statistic}")
    assert stats.videos_statistics.dims == ("subset", "statistic", "y", "x", "frame")  # per pixel and frame, as the release
    standardized = standardize(ds, statistics="train")
    assert standardized.attrs["standardization_statistics"] == "train" and standardized.responses.dims == ("trial", "neuron", "frame")


def test_video_statistics_of_other_shapes_are_used_by_name(tmp_path):
    scan = write_tiny_dynamic_scan(tmp_path / "a")
    for stat in ("mean", "std", "min", "max", "median"):  # per-neuron response statistics, (N, 1)
        path = scan / "meta" / "statistics" / "responses" / "all" / f"{stat}.npy"
        np.save(path, np.nanmean(np.load(path), axis=1, keepdims=True))
    ds = open_scan(scan, mask_withheld=False)
    std = ds.responses_statistics.sel(subset="all", statistic="std").values  # (N, 1)
    threshold = 0.01 * np.nanmean(std)
    expected = ds.responses.values * np.where(std > threshold, 1 / std, 1 / threshold)
    np.testing.assert_allclose(standardize(ds).responses.values, expected, rtol=1e-6, equal_nan=True)
    longer = open_scan(write_tiny_dynamic_scan(tmp_path / "b", statistics_frames=14), mask_withheld=False)
    assert longer.sizes["videos_statistics_frame"] == 14
    mean = longer.videos_statistics.sel(subset="all", statistic="mean").values[..., :12]  # cropped to the trials' frames
    std = longer.videos_statistics.sel(subset="all", statistic="std").values[..., :12]
    np.testing.assert_allclose(standardize(longer).videos.values, (longer.videos.values - mean) / std, rtol=1e-6, equal_nan=True)
    shorter = open_scan(write_tiny_dynamic_scan(tmp_path / "c", statistics_frames=10), mask_withheld=False)
    assert np.isnan(standardize(shorter).videos.values[..., 10:]).all()  # no statistics for the last two frames
