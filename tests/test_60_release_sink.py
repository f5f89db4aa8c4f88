"""neuroxr.formats.release.to_folder: the release layout, byte for byte, written atomically."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import neuroxr
from neuroxr import datamodel as model
from neuroxr.errors import TargetExistsError
from neuroxr import open_scan
from neuroxr.formats.release import to_folder
from neuroxr.synthetic import make_scan

SMALL = {"n_trials": 30, "n_neurons": 9, "image_shape": (1, 6, 10), "chunk_trials": 12}
N_TRIALS = 30


@pytest.fixture(scope="module")
def scan(synthetic):
    return synthetic(**SMALL, competition=True, behavior_withheld=True, seed=11)


@pytest.fixture(scope="module")
def values(scan):
    return scan.compute()


@pytest.fixture(scope="module")
def written(scan, tmp_path_factory):
    return to_folder(scan, tmp_path_factory.mktemp("out") / "scan")


def saved(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array))
    return buffer.getvalue()


def stored(values, name: str) -> np.ndarray:
    """What the release stores for a data variable: withheld cells as zeros."""
    array = values[name].values.copy()
    if name == "responses":
        array[values.responses_withheld.values] = 0
    if name in values.attrs["withheld"].split(","):
        array[np.isnan(array)] = 0
    return array


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


TRIAL_FILES = ("tiers", "frame_image_id", "trial_idx", "frame_image_class", "frame_trial_ts", "condition_hash",
               "animal_id", "session", "scan_idx")
NEURON_FILES = ("unit_ids", "area", "layer", "animal_ids", "sessions", "scan_idx", "cell_motor_coordinates")
EXPECTED_META = {f"meta/trials/{name}.npy" for name in TRIAL_FILES} | {
    f"meta/neurons/{name}.npy" for name in NEURON_FILES
}


def test_layout(written):
    files = all_files(written)
    data = {path for path in files if path.startswith("data/")}
    assert data == {f"data/{name}/{k}.npy" for name in model.DATA_VARIABLES for k in range(N_TRIALS)}
    assert {path for path in files if path.startswith("meta/") and "statistics" not in path} == EXPECTED_META
    statistics = {path for path in files if path.startswith("meta/statistics/")}
    assert statistics == {
        model.statistics_file(name, subset, stat)
        for name in model.DATA_VARIABLES
        for subset in ("all", "stimulus_Frame")
        for stat in model.STATISTICS
    }
    assert not any("withheld" in path for path in files)


def test_files_are_byte_identical_to_np_save(written, values):
    for name in model.DATA_VARIABLES:
        array = stored(values, name)
        for k in (0, 17, N_TRIALS - 1):
            assert (written / f"data/{name}/{k}.npy").read_bytes() == saved(array[k]), (name, k)
    for name, coord in values.coords.items():
        path = coord.attrs.get(model.FILE_ATTR)
        if path:
            assert (written / path).read_bytes() == saved(coord.values), name
    statistics = values.responses_statistics.sel(subset="all", statistic="median").values
    assert (written / "meta/statistics/responses/all/median.npy").read_bytes() == saved(statistics)
    assert np.load(written / "meta/statistics/images/all/mean.npy").shape == ()


def test_np_load_round_trip_equals_dataset(written, values):
    for name in model.DATA_VARIABLES:
        loaded = np.stack([np.load(written / f"data/{name}/{k}.npy") for k in range(N_TRIALS)])
        assert loaded.dtype == values[name].dtype
        np.testing.assert_array_equal(loaded, stored(values, name))
    for name, coord in values.coords.items():
        path = coord.attrs.get(model.FILE_ATTR)
        if path:
            loaded = np.load(written / path)  # no pickles needed
            assert loaded.dtype == coord.dtype and loaded.shape == coord.shape
            np.testing.assert_array_equal(loaded, coord.values)
    for name in model.DATA_VARIABLES:
        statistics = values[model.statistics_name(name)]
        for subset in statistics.subset.values:
            for stat in statistics.statistic.values:
                loaded = np.load(written / model.statistics_file(name, subset, stat))
                assert loaded.dtype == np.float32
                np.testing.assert_array_equal(loaded, statistics.sel(subset=subset, statistic=stat).values)


def test_withheld_cells_are_zeros(written, values):
    withheld = np.flatnonzero(values.responses_withheld.values)
    kept = np.flatnonzero(~values.responses_withheld.values)
    assert len(withheld) and len(kept)
    assert all((np.load(written / f"data/responses/{k}.npy") == 0).all() for k in withheld)
    assert all((np.load(written / f"data/responses/{k}.npy") > 0).all() for k in kept)
    for name in ("behavior", "pupil_center"):
        assert all((np.load(written / f"data/{name}/{k}.npy") == 0).all() for k in range(N_TRIALS))
    assert np.isnan(values.responses.values[withheld]).all()  # the Dataset itself is untouched


@pytest.mark.parametrize("compression", [None, "deflated"])
def test_zip(scan, written, tmp_path, compression):
    top = scan.attrs["release_name"]  # named like the release's archives: the top folder is the stem
    path = to_folder(scan, tmp_path / f"{top}.zip", zip=True, compression=compression)
    expected = zipfile.ZIP_DEFLATED if compression else zipfile.ZIP_STORED
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        members = [info for info in archive.infolist() if not info.is_dir()]
        assert {info.filename.split("/")[0] for info in archive.infolist()} == {top}
        assert {info.compress_type for info in members} == {expected}
        reference = all_files(written)
        assert {info.filename[len(top) + 1 :] for info in members} == set(reference)
        for info in members:
            content = archive.read(info)
            assert content == reference[info.filename[len(top) + 1 :]]
        array = np.load(archive.open(f"{top}/data/images/3.npy"))
        np.testing.assert_array_equal(array, np.load(written / "data/images/3.npy"))


def test_zip_top_folder_is_the_archive_stem_whatever_the_attributes_say(scan, tmp_path):
    crafted = scan.isel(trial=slice(0, 3))
    crafted.attrs["release_name"] = "../../outside"
    with zipfile.ZipFile(to_folder(crafted, tmp_path / "my-scan.zip", zip=True)) as archive:
        assert {name.split("/")[0] for name in archive.namelist()} == {"my-scan"}
    assert neuroxr.open_scan(tmp_path / "my-scan.zip").attrs["scan"] == scan.attrs["scan"]  # from meta/neurons


def test_files_numbered_by_position_and_unchunked_input(values, tmp_path):
    picked = values.isel(trial=[7, 2, 25])  # numpy-backed, not dask
    path = to_folder(picked, tmp_path / "picked")
    assert sorted(p.name for p in (path / "data/images").iterdir()) == ["0.npy", "1.npy", "2.npy"]
    np.testing.assert_array_equal(np.load(path / "data/images/0.npy"), values.images.values[7])
    np.testing.assert_array_equal(np.load(path / "data/images/1.npy"), values.images.values[2])
    np.testing.assert_array_equal(np.load(path / "meta/trials/tiers.npy"), values.tier.values[[7, 2, 25]])


def test_absent_variables_and_nan_statistics_are_not_written(values, tmp_path):
    reduced = values.drop_vars(["images", "pupil_center_statistics"])
    statistics = reduced.responses_statistics.copy()
    statistics.loc[{"subset": "stimulus_Frame"}] = np.nan
    reduced["responses_statistics"] = statistics
    path = to_folder(reduced, tmp_path / "reduced")
    assert not (path / "data/images").exists()
    assert not (path / "meta/statistics/pupil_center").exists()
    assert (path / "meta/statistics/images/all/mean.npy").exists()
    assert (path / "meta/statistics/responses/all/std.npy").exists()
    assert not (path / "meta/statistics/responses/stimulus_Frame").exists()


def test_missing_file_attrs_fall_back_to_release_names(values, written, tmp_path):
    bare = values.copy()
    for name in list(bare.coords):
        bare[name].attrs = {}
    bare = bare.assign_coords(extra=("trial", np.arange(N_TRIALS)))  # derived: not written
    path = to_folder(bare, tmp_path / "bare")
    files = all_files(path)
    assert {p for p in files if p.startswith("meta/") and "statistics" not in p} == EXPECTED_META
    reference = all_files(written)
    assert all(files[p] == reference[p] for p in EXPECTED_META)


def test_existing_target_is_refused_unless_overwrite(scan, tmp_path):
    target = to_folder(scan.isel(trial=slice(0, 3)), tmp_path / "scan")
    with pytest.raises(TargetExistsError, match="overwrite=True"):
        to_folder(scan, target)
    assert len(list((target / "data/images").iterdir())) == 3
    to_folder(scan, target, overwrite=True)
    assert len(list((target / "data/images").iterdir())) == N_TRIALS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan"]  # no lock, no partial, no previous left


@pytest.mark.parametrize("as_zip", [False, True])
def test_overwrite_never_replaces_what_is_not_a_previous_output(scan, tmp_path, as_zip):
    """A folder tree of the user's (or a file where a folder goes) is not the release layout: kept."""
    mine = tmp_path / ("mine.zip" if as_zip else "mine")
    if as_zip:
        mine.write_text("my notes")
    else:
        (mine / "data").mkdir(parents=True)  # a data/ folder, but also something else
        (mine / "data" / "keep.txt").write_text("x")
        (mine / "thesis.tex").write_text("x")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    with pytest.raises(TargetExistsError, match="an export replaces only") as caught:
        to_folder(scan, mine, zip=as_zip, overwrite=True)
    assert not caught.value.replaceable
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


def test_refuses_to_overwrite_the_source_whatever_was_done_to_the_data(scan, tmp_path):
    """The guard finds the files in the data (its dask graph), not in ``encoding``, which xarray drops."""
    source = to_folder(scan, tmp_path / "source")
    archive = to_folder(scan, tmp_path / "source.zip", zip=True)
    before = all_files(source), archive.read_bytes()
    for path in (source, archive):
        opened = open_scan(path)
        derived = {
            "as opened": opened,
            "where": opened.where(opened.responses > 0),
            "merge": xr.merge([opened.responses, opened.behavior]),
            "isel": opened.isel(trial=slice(0, 5)),  # a subset reads only its own trials' files
            "sel": opened.sel(trial=opened.tier == "train"),
            "arithmetic": opened[["responses"]] * 2,
        }
        for how, ds in derived.items():
            if how in ("where", "merge"):
                assert "source" not in ds.encoding  # what the guard used to rely on
            for target in (path, path.parent / path.name / "inside", path.parent):
                with pytest.raises(neuroxr.SourceOverwriteError, match="refusing"):
                    to_folder(ds, target, overwrite=True)
    assert (all_files(source), archive.read_bytes()) == before
    in_memory = open_scan(source).load()  # nothing read lazily any more: writing over the source is safe
    to_folder(in_memory, source, overwrite=True)
    assert all_files(source) == before[0]


@pytest.mark.parametrize("as_zip", [False, True])
@pytest.mark.parametrize("trials_per_block", [12, 70])  # 70: a block is written by several threads
def test_failure_mid_write_leaves_nothing(tmp_path, as_zip, trials_per_block):
    scan = make_scan(n_trials=140, n_neurons=3, image_shape=(1, 2, 2), chunk_trials=trials_per_block)

    def fail_in_the_second_block(block, block_info=None):
        if block_info[0]["chunk-location"][0] == 1:
            raise OSError("disk on fire")
        return block

    failing = scan.responses.data.map_blocks(fail_in_the_second_block, dtype=scan.responses.dtype)
    scan = scan.assign(responses=scan.responses.copy(data=failing))
    target = tmp_path / ("scan.zip" if as_zip else "scan")
    with pytest.raises(OSError, match="disk on fire"):
        to_folder(scan, target, zip=as_zip)
    assert list(tmp_path.iterdir()) == []


def test_progress_and_argument_errors(scan, tmp_path, capsys):
    to_folder(scan.isel(trial=slice(0, 5)), tmp_path / "p", progress=True)
    assert "block" in capsys.readouterr().err
    with pytest.raises(ValueError, match="compression"):
        to_folder(scan, tmp_path / "a.zip", zip=True, compression="lzma")
    with pytest.raises(ValueError, match="only with zip=True"):
        to_folder(scan, tmp_path / "b", compression="deflated")
    assert not (tmp_path / "a.zip").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("as_zip", [False, True])
def test_round_trip_through_open_scan_is_byte_identical(written, synthetic, tmp_path, as_zip):
    source = written
    if as_zip:
        same_scan = synthetic(**SMALL, competition=True, behavior_withheld=True, seed=11)
        source = to_folder(same_scan, tmp_path / "source.zip", zip=True)
    ds = open_scan(source)
    again = to_folder(ds, tmp_path / "again")
    assert all_files(again) == all_files(written)


# --------------------------------------------------------------------------------------------------
# 2023 video scans


@pytest.mark.parametrize("archive", [None, "stored", "deflated"])
def test_a_video_scan_goes_back_to_its_files_byte_for_byte(shared_dynamic: Path, tmp_path: Path, archive) -> None:
    """A scan written with np.save (mixed float32 and float64, time-resolved statistics, withheld zeros with NaN padding)."""
    ds = open_scan(shared_dynamic)
    assert ds.responses_withheld.any() and ds.attrs["withheld"] == "responses"
    if archive is None:
        copy = to_folder(ds, tmp_path / "copy")
        assert all_files(copy) == all_files(shared_dynamic)
        return
    path = to_folder(ds, tmp_path / "copy.zip", zip=True, compression=None if archive == "stored" else archive)
    with zipfile.ZipFile(path) as zipped:
        members = {name.split("/", 1)[1]: zipped.read(name) for name in zipped.namelist() if not name.endswith("/")}
        assert {info.compress_type for info in zipped.infolist() if not info.is_dir()} == {
            zipfile.ZIP_STORED if archive == "stored" else zipfile.ZIP_DEFLATED
        }
    assert members == all_files(shared_dynamic)


def test_withheld_video_responses_are_written_as_zeros_inside_the_trial(tmp_path: Path) -> None:
    ds = make_scan(kind="dynamic", n_trials=50, n_neurons=5, video_shape=(4, 6), n_frames=30, competition=True, seed=1)
    path = to_folder(ds, tmp_path / "scan")
    lengths = ds.n_frames.values
    for trial in np.flatnonzero(ds.responses_withheld.values).tolist():
        written = np.load(path / "data" / "responses" / f"{trial}.npy")
        assert (written[:, : lengths[trial]] == 0).all() and np.isnan(written[:, lengths[trial] :]).all()
    for name in ("videos", "behavior", "pupil_center"):
        trial = int(np.argmin(lengths))
        assert (path / "data" / name / f"{trial}.npy").read_bytes() == saved(ds[name].values[trial])
    assert (path / "meta" / "trials" / "tiers.npy").read_bytes() == saved(ds.tier.values)
    assert not (path / "meta" / "trials" / "n_frames.npy").exists()  # derived, not a release file
    assert sorted(p.name for p in (path / "meta" / "statistics").iterdir()) == ["behavior", "pupil_center", "responses", "videos"]
