"""NWB export and import: valid files that tools read, and an exact way back to the Dataset."""

from __future__ import annotations

import pickle
import threading
import warnings
from pathlib import Path

import dask
import dask.array as da
import h5py
import numpy as np
import pytest
import xarray as xr
from conftest import write_tiny_scan

import neuroxr
from neuroxr.errors import ScanError, TargetExistsError
from neuroxr.formats._write import BlockStream
from neuroxr.formats.nwb.streams import ForwardRows, SpilledRows
from neuroxr.formats.nwb.timeline import parse_trial_timestamps
from neuroxr.formats.nwb import open_nwb, to_nwb
from neuroxr.synthetic import make_scan

# Small scans with more trials than neurons, so nwbinspector's data-orientation check has no reason to fire.
SMALL = {"n_trials": 48, "n_neurons": 16, "image_shape": (1, 8, 12)}
TINY = {"n_trials": 24, "n_neurons": 4, "image_shape": (1, 4, 6)}
INSPECTOR_GATE = "BEST_PRACTICE_VIOLATION"
Written = dict[str, tuple[xr.Dataset, Path]]


def assert_valid(path: Path, *, allowed: frozenset[str] = frozenset()) -> None:
    """The gate for every file written: pynwb validation finds nothing, and nwbinspector (DANDI
    configuration) reports nothing of importance BEST_PRACTICE_VIOLATION or above but the ``allowed`` checks."""
    import pynwb
    from nwbinspector import Importance, inspect_nwbfile, load_config

    assert pynwb.validate(path=str(path)) == []
    gate = Importance[INSPECTOR_GATE].value
    messages = inspect_nwbfile(nwbfile_path=str(path), config=load_config("dandi"), skip_validate=True)
    found = {(m.check_function_name, m.object_name, m.message) for m in messages if m.importance.value >= gate}
    assert {check for check, _, _ in found} == set(allowed), found


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Written:
    """A normal and a competition scan (responses of test tiers and all behaviour withheld), written once."""
    folder = tmp_path_factory.mktemp("nwb")
    scans = {
        "normal": make_scan(**SMALL, seed=1),
        "competition": make_scan(**SMALL, competition=True, behavior_withheld=True, seed=2),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a normal export says nothing
        return {name: (ds, to_nwb(ds, folder / f"{name}.nwb")) for name, ds in scans.items()}


@pytest.mark.parametrize("name", ["normal", "competition"])
def test_round_trip_is_identical_and_lazy(written: Written, name: str) -> None:
    source, path = written[name]
    back = open_nwb(path)
    assert isinstance(back.responses.data, da.Array) and isinstance(back.images.data, da.Array)
    assert not isinstance(back.tier.data, da.Array)
    xr.testing.assert_identical(back, source)
    for variable in back.variables:
        assert back[variable].dtype == source[variable].dtype, variable


@pytest.mark.parametrize("name", ["normal", "competition"])
def test_file_passes_pynwb_validation_and_dandi_inspection(written: Written, name: str) -> None:
    assert_valid(written[name][1])


def test_plain_pynwb_sees_rois_trials_images_and_behaviour(written: Written) -> None:
    from pynwb import NWBHDF5IO
    from pynwb.ophys import PlaneSegmentation, RoiResponseSeries

    source, path = written["normal"]
    source = source.compute()
    with NWBHDF5IO(str(path), "r") as io:
        nwbfile = io.read()
        series = nwbfile.processing["ophys"]["Fluorescence"]["Deconvolved"]
        assert isinstance(series, RoiResponseSeries)
        assert isinstance(series.rois.table, PlaneSegmentation)
        rois = series.rois.table
        np.testing.assert_array_equal(rois.id[:], source.neuron.values)
        np.testing.assert_array_equal(np.asarray(rois["area"][:]), source.area.values)
        motor = np.asarray(rois["cell_motor_coordinates"][:])
        np.testing.assert_array_equal(motor, source.cell_motor_coordinates.values)
        trials = nwbfile.trials.to_dataframe()
        order = trials.index.to_numpy()  # file numbers, in presentation order
        assert np.all(np.diff(trials["start_time"].to_numpy()) >= 0)
        assert not np.array_equal(order, np.sort(order))  # the synthetic files are not in presentation order
        in_order = source.sel(trial=order)
        np.testing.assert_array_equal(series.data[:], in_order.responses.values)
        np.testing.assert_array_equal(trials["tier"].to_numpy(dtype=str), in_order.tier.values)
        np.testing.assert_array_equal(trials["image_id"].to_numpy(), in_order.image_id.values)
        np.testing.assert_array_equal(trials["trial_idx"].to_numpy(), in_order.trial_idx.values)
        np.testing.assert_array_equal(trials["is_response_withheld"].to_numpy(), in_order.responses_withheld.values)
        np.testing.assert_allclose(series.get_timestamps(), trials["start_time"].to_numpy())
        presentation = nwbfile.stimulus["StimulusPresentation"]
        templates = presentation.indexed_images
        shown = [templates.order_of_images[int(k)] for k in presentation.data[:5]]
        for image, trial in zip(shown, in_order.trial.values[:5]):
            assert image.data.dtype == np.uint8
            np.testing.assert_array_equal(image.data[:], source.images.sel(trial=trial).values[0])
        assert len(templates.images) == len(np.unique(source.image_id.values))
        behavior = nwbfile.processing["behavior"]
        running = in_order.behavior.sel(behavior_variable="running_speed").values
        np.testing.assert_array_equal(behavior["BehavioralTimeSeries"]["running_speed"].data[:], running)
        np.testing.assert_array_equal(behavior["EyeTracking"]["pupil_center"].data[:], in_order.pupil_center.values)
        assert set(behavior["PupilTracking"].time_series) == {"pupil_dilation", "pupil_dilation_derivative"}
        assert nwbfile.subject.species == "Mus musculus" and nwbfile.session_id == source.attrs["scan"]


def test_withheld_data_is_nan_flagged_and_wholly_withheld_behaviour_is_left_out(
    written: Written,
) -> None:
    source, path = written["competition"]
    withheld = source.responses_withheld.values
    assert withheld.any() and not withheld.all()
    with h5py.File(path, "r") as file:
        ids = file["intervals/trials/id"][:]
        flags = file["intervals/trials/is_response_withheld"][:]
        responses = file["processing/ophys/Fluorescence/Deconvolved/data"][:]
        assert "behavior" not in file["processing"]
    np.testing.assert_array_equal(flags, withheld[ids])
    assert np.isnan(responses[flags]).all() and not np.isnan(responses[~flags]).any()
    back = open_nwb(path)
    assert back.behavior.isnull().all() and back.pupil_center.isnull().all()
    assert back.attrs["withheld"] == source.attrs["withheld"]


def test_time_axis_comes_from_frame_trial_ts(written: Written) -> None:
    source, path = written["normal"]
    stamps = parse_trial_timestamps(source.frame_trial_ts.values)
    with h5py.File(path, "r") as file:
        ids = file["intervals/trials/id"][:]
        start = file["intervals/trials/start_time"][:]
        timestamps = file["processing/ophys/Fluorescence/Deconvolved/timestamps"][:]
        linked = file["processing/behavior/EyeTracking/pupil_center/timestamps"][:]
        session_start = file["session_start_time"][()].decode()
    expected = (stamps[ids] - stamps.min()) / np.timedelta64(1, "s")
    np.testing.assert_array_equal(start, expected)
    np.testing.assert_array_equal(timestamps, start)
    np.testing.assert_array_equal(linked, start)
    assert start[0] == 0 and np.all(np.diff(start) >= 0) and np.ptp(start) > 0
    assert session_start.startswith(str(stamps.min().astype("datetime64[s]")))


def test_timestamps_are_stored_once_and_every_other_series_links_to_them(written: Written) -> None:
    _, path = written["normal"]
    first = "/stimulus/presentation/StimulusPresentation/timestamps"
    others = [
        "processing/ophys/Fluorescence/Deconvolved",
        "processing/behavior/PupilTracking/pupil_dilation",
        "processing/behavior/PupilTracking/pupil_dilation_derivative",
        "processing/behavior/BehavioralTimeSeries/running_speed",
        "processing/behavior/EyeTracking/pupil_center",
    ]
    with h5py.File(path, "r") as file:
        assert isinstance(file[first], h5py.Dataset)
        for series in others:
            link = file[series].get("timestamps", getlink=True)
            assert isinstance(link, h5py.SoftLink) and link.path == first, series


def test_synthetic_time_axis_user_metadata_and_compression(tmp_path: Path) -> None:
    from pynwb import NWBHDF5IO

    source = make_scan(**SMALL, seed=3).drop_vars("frame_trial_ts")
    path = to_nwb(
        source,
        tmp_path / "no-times.nwb",
        trial_period=2.0,
        compression="gzip",
        subject={"age": "P12W/P16W", "sex": "F"},
        session={"experimenter": ["Doe, Jane"], "institution": "Somewhere", "identifier": "scan-3"},
        imaging={"indicator": "GCaMP6f"},
    )
    assert_valid(path)
    with h5py.File(path, "r") as file:
        series = file["processing/ophys/Fluorescence/Deconvolved"]
        assert "timestamps" not in series
        assert series["starting_time"][()] == 0.0 and series["starting_time"].attrs["rate"] == 0.5
        ids = file["intervals/trials/id"][:]
        np.testing.assert_array_equal(file["intervals/trials/start_time"][:], 2.0 * np.arange(len(ids)))
        images = file["stimulus/templates/StimulusImages"]
        compressed = [series["data"], *(images[name] for name in images if name != "order_of_images")]
        assert {dataset.compression for dataset in compressed} == {"gzip"}
    np.testing.assert_array_equal(ids, source.trial.values[np.argsort(source.trial_idx.values)])
    with NWBHDF5IO(str(path), "r") as io:
        nwbfile = io.read()
        assert "synthetic axis" in nwbfile.notes
        assert nwbfile.subject.age == "P12W/P16W" and nwbfile.subject.sex == "F"
        assert nwbfile.experimenter == ("Doe, Jane",) and nwbfile.identifier == "scan-3"
        assert nwbfile.imaging_planes["ImagingPlane"].indicator == "GCaMP6f"
    xr.testing.assert_identical(open_nwb(path), source)


def test_release_folder_scan_with_variant_and_fractional_images_round_trips(tmp_path: Path) -> None:
    """Read with open_scan: repeats of one image id differ in pixels, trial_idx is hashed, times are
    regular, and some images hold fractional grey levels (stored float32; the others uint8)."""
    scan = write_tiny_scan(tmp_path, competition=True, behavior_withheld=True)
    source = neuroxr.open_scan(scan)
    shift = xr.where(source.tier == "train", np.float32(0.25), np.float32(0.0)).astype(np.float32)
    source = source.assign(images=(source.images + shift).assign_attrs(source.images.attrs))
    path = to_nwb(source, tmp_path / "tiny.nwb")
    assert_valid(path)
    xr.testing.assert_identical(open_nwb(path), source)
    with h5py.File(path, "r") as file:
        group = file["stimulus/templates/StimulusImages"]
        names = set(group) - {"order_of_images"}
        dtypes = {group[name].dtype for name in names}
        series = file["processing/ophys/Fluorescence/Deconvolved"]
        assert "timestamps" not in series and series["starting_time"].attrs["rate"] == 1.0  # regular times: a rate
    test_trials = int((source.image_id == 4242).sum())
    assert {"image_4242", "image_4242_v1"} <= names
    assert len(names) == len(np.unique(source.image_id.values)) - 1 + test_trials
    assert dtypes == {np.dtype(np.uint8), np.dtype(np.float32)}


def test_datatree_goes_to_a_folder_and_comes_back(tmp_path: Path) -> None:
    scans = {
        "30001-2-3": make_scan(**TINY, seed=5),
        "30002-1-1": make_scan(**TINY, scan="30002-1-1", competition=True, seed=6),
    }
    root = xr.Dataset(attrs={"format": "sensorium-2022-static", "scans": ",".join(scans)})
    tree = xr.DataTree.from_dict({"/": root, **{f"/{key}": ds for key, ds in scans.items()}})
    folder = to_nwb(tree, tmp_path / "scans", progress=True)
    assert sorted(path.name for path in folder.iterdir()) == ["30001-2-3.nwb", "30002-1-1.nwb"]
    for path in folder.iterdir():
        assert_valid(path)
    back = open_nwb(folder)
    assert isinstance(back, xr.DataTree)
    xr.testing.assert_identical(back, tree)


def test_opened_file_pickles_and_computes_without_an_open_handle(written: Written, tmp_path: Path) -> None:
    source, path = written["competition"]
    copy = tmp_path / "copy.nwb"
    copy.write_bytes(path.read_bytes())
    back = open_nwb(copy, chunks=10)
    assert back.responses.chunks[0][:2] == (10, 10) and back.images.chunks[0] == back.responses.chunks[0]
    restored = pickle.loads(pickle.dumps(back))
    with dask.config.set(scheduler="synchronous"):
        np.testing.assert_array_equal(restored.images.values, source.images.values)
        np.testing.assert_array_equal(restored.responses[5:31].values, source.responses[5:31].values)
    with h5py.File(copy, "a"):  # nothing else holds the file open
        pass


def test_existing_target_source_and_failures(written: Written, tmp_path: Path) -> None:
    source, path = written["normal"]
    target = tmp_path / "scan.nwb"
    target.write_bytes(b"not an NWB file")
    with pytest.raises(TargetExistsError, match="not an NWB file: an export replaces only an NWB file"):
        to_nwb(source, target, overwrite=True)  # never replaces what is not a previous NWB file
    old = path.read_bytes()
    target.write_bytes(old)
    with pytest.raises(TargetExistsError):
        to_nwb(source, target)
    with pytest.raises(ValueError, match="unknown session fields"):
        to_nwb(source, target, overwrite=True, session={"colour": "blue"})
    assert target.read_bytes() == old and sorted(p.name for p in tmp_path.iterdir()) == ["scan.nwb"]
    with pytest.raises(ValueError, match="refusing to write over"):
        to_nwb(open_nwb(path), path, overwrite=True)
    plain = tmp_path / "plain.nwb"
    _write_plain_nwb(plain)
    with pytest.raises(ScanError, match="not written by neuroxr"):
        open_nwb(plain)


def _failing(ds: xr.Dataset, name: str) -> xr.Dataset:
    """``ds`` whose variable ``name`` fails to compute in its second block of 10 trials."""

    def fail_second_block(block: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        if block_info[0]["chunk-location"][0] == 1:
            raise ValueError("a block that cannot be read")
        return block

    data = ds[name].data.rechunk({0: 10}).map_blocks(fail_second_block, dtype=ds[name].dtype)
    return ds.assign({name: ds[name].copy(data=data)})


@pytest.mark.parametrize("failing", ["responses", "images"])
@pytest.mark.parametrize("order", ["reordered", "in file order"])
def test_a_failing_export_leaves_no_file_scratch_file_or_thread(tmp_path: Path, order: str, failing: str) -> None:
    """Reordered responses are spilled to a scratch file by a background thread (the images are written
    after it is read back); wherever the export fails, nothing is left behind."""
    source = make_scan(**SMALL, seed=1)
    if order == "in file order":
        source = source.drop_vars(["frame_trial_ts", "trial_idx"])
    threads = set(threading.enumerate())
    with pytest.raises(ValueError, match="a block that cannot be read"):
        to_nwb(_failing(source, failing), tmp_path / "scan.nwb")
    assert list(tmp_path.iterdir()) == []
    assert set(threading.enumerate()) <= threads


@pytest.mark.parametrize("order", ["reordered", "in file order"])
def test_an_export_leaves_no_thread_running(tmp_path: Path, order: str) -> None:
    source = make_scan(**TINY, seed=4)
    if order == "in file order":
        source = source.drop_vars(["frame_trial_ts", "trial_idx"])
    threads = set(threading.enumerate())
    to_nwb(source, tmp_path / "scan.nwb")
    assert set(threading.enumerate()) <= threads


def _write_plain_nwb(path: Path) -> None:
    from datetime import datetime, timezone

    from pynwb import NWBHDF5IO, NWBFile

    with NWBHDF5IO(str(path), "w") as io:
        io.write(NWBFile(session_description="x", identifier="x", session_start_time=datetime.now(timezone.utc)))


def test_more_neurons_than_trials_only_trips_the_orientation_check(tmp_path: Path) -> None:
    """Real scans hold more neurons than trials; nwbinspector then suspects transposed responses."""
    path = to_nwb(make_scan(n_trials=24, n_neurons=30, image_shape=(1, 4, 6), seed=8), tmp_path / "wide.nwb")
    assert_valid(path, allowed=frozenset({"check_data_orientation"}))


def test_row_sources_read_each_block_once(tmp_path: Path) -> None:
    values = np.arange(60, dtype=np.float32).reshape(20, 3)
    computed: list[int] = []

    def counted(block, block_info=None):
        computed.append(block_info[0]["chunk-location"][0])
        return block

    array = da.from_array(values, chunks=(6, 3)).map_blocks(counted, dtype=values.dtype)
    forward = ForwardRows(BlockStream(array))
    np.testing.assert_array_equal(forward.get(np.arange(0, 8)), values[0:8])
    np.testing.assert_array_equal(forward.get(np.arange(8, 20)), values[8:20])
    assert sorted(computed) == [0, 1, 2, 3]
    order = np.random.default_rng(0).permutation(20)
    spilled = SpilledRows(BlockStream(da.from_array(values, chunks=(6, 3))), tmp_path / "rows.raw")
    try:
        np.testing.assert_array_equal(spilled.get(order), values[order])
    finally:
        spilled.close()
    assert not (tmp_path / "rows.raw").exists()


def test_video_scans_are_refused_before_anything_is_written(shared_dynamic: Path, mixed_release: Path, tmp_path: Path) -> None:
    with pytest.raises(neuroxr.DatasetError, match=r"video scan \(sensorium-2023-dynamic\).*to_netcdf or neuroxr.to_zarr"):
        to_nwb(neuroxr.open_scan(shared_dynamic), tmp_path / "video.nwb")
    with pytest.raises(neuroxr.DatasetError, match="scan 29515-10-12 is a video scan"):
        to_nwb(neuroxr.open_datatree(mixed_release), tmp_path / "mixed")
    assert list(tmp_path.iterdir()) == []
