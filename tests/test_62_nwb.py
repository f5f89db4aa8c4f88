"""NWB export and import: valid files that tools read, and an exact way back to the Dataset."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
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
import neuroxr.cli
from neuroxr.errors import ScanError, TargetExistsError
from neuroxr.formats._write import BlockStream
from neuroxr.formats.nwb.streams import ForwardRows, SpilledRows, start_trial_rows
from neuroxr.formats.nwb.timeline import frame_time_axis, parse_trial_timestamps, spread_ties, trial_stops
from neuroxr.formats.nwb import open_nwb, to_nwb
from neuroxr.synthetic import make_scan

# Small scans with more trials than neurons, so nwbinspector's data-orientation check has no reason to fire.
SMALL = {"n_trials": 48, "n_neurons": 16, "image_shape": (1, 8, 12)}
TINY = {"n_trials": 24, "n_neurons": 4, "image_shape": (1, 4, 6)}
VIDEO = {"kind": "dynamic", "n_trials": 24, "n_neurons": 5, "n_frames": 20, "video_shape": (4, 6)}
INSPECTOR_GATE = "BEST_PRACTICE_VIOLATION"
KINDS = ["normal", "competition", "behaviour-withheld", "video"]
Written = dict[str, tuple[xr.Dataset, Path]]


def inspector_findings(path: Path) -> set[tuple[str, str, str]]:
    """nwbinspector's messages (DANDI configuration) of importance BEST_PRACTICE_VIOLATION or above."""
    from nwbinspector import Importance, inspect_nwbfile, load_config

    gate = Importance[INSPECTOR_GATE].value
    messages = inspect_nwbfile(nwbfile_path=str(path), config=load_config("dandi"), skip_validate=True)
    return {(m.check_function_name, m.object_name, m.message) for m in messages if m.importance.value >= gate}


def assert_valid(path: Path) -> None:
    """pynwb's validator finds nothing (the full gate, with nwbinspector and dandi, is test_gates_...)."""
    import pynwb

    assert pynwb.validate(path=str(path)) == []


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Written:
    """The four kinds of scan, written once: a normal scan, a competition scan (responses of the test
    tiers withheld), the competition scan whose behaviour is withheld too, and a video scan."""
    folder = tmp_path_factory.mktemp("nwb")
    scans = {
        "normal": make_scan(**SMALL, seed=1),
        "competition": make_scan(**SMALL, scan="30002-1-1", competition=True, seed=2),
        "behaviour-withheld": make_scan(**SMALL, scan="30003-1-1", competition=True, behavior_withheld=True, seed=3),
        "video": make_scan(**VIDEO, scan="30004-1-1", competition=True, seed=4),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a normal export says nothing
        return {name: (ds, to_nwb(ds, folder / f"{name}.nwb")) for name, ds in scans.items()}


@pytest.mark.parametrize("name", KINDS)
def test_round_trip_is_identical_and_lazy(written: Written, name: str) -> None:
    source, path = written[name]
    back = open_nwb(path)
    assert isinstance(back.responses.data, da.Array)
    stimulus = "videos" if name == "video" else "images"
    assert isinstance(back[stimulus].data, da.Array) and not isinstance(back.tier.data, da.Array)
    xr.testing.assert_identical(back, source)
    for variable in back.variables:
        assert back[variable].dtype == source[variable].dtype, variable


def test_gates_pynwb_inspector_dandi_and_pynapple(written: Written, tmp_path: Path) -> None:
    """What a DANDI curator runs, on each kind of scan: pynwb's validator, nwbinspector (DANDI
    configuration), ``dandi organize`` + ``dandi validate`` (offline), and pynapple, which loads the
    file, builds the trials IntervalSet itself and gives the per-trial mean responses of the Dataset."""
    import pynwb

    for name in KINDS:
        source, path = written[name]
        assert pynwb.validate(path=str(path)) == [], name
        assert inspector_findings(path) == set(), name
        _check_pynapple(source, path)
    if shutil.which("dandi") is None:
        return  # the dandi client is in the test extra; without it the rest of the gate is done
    organised = tmp_path / "dandiset"
    organised.mkdir()
    (organised / "dandiset.yaml").write_text('identifier: "000000"\nname: neuroxr test\ndescription: test\n')
    files = [str(path) for _, path in written.values()]
    script = (  # organize, then validate, in one process (dandi's imports take seconds)
        "import sys\nfrom dandi.cli.command import main\n"
        f"main(['organize', '--jobs', '1', '-f', 'copy', '-d', {str(organised)!r}, *{files!r}], standalone_mode=False)\n"
        f"main(['validate', {str(organised)!r}], standalone_mode=False)\n"
    )
    environment = {**os.environ, "DANDI_NO_ET": "1", "DANDI_CACHE": "ignore"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(list(organised.glob("sub-*/*.nwb"))) == len(files), result.stdout + result.stderr
    assert "No errors found" in result.stdout + result.stderr


def _check_pynapple(source: xr.Dataset, path: Path) -> None:
    nap = pytest.importorskip("pynapple")
    data = nap.load_file(str(path))
    trials = data["trials"]
    assert isinstance(trials, nap.IntervalSet) and len(trials) == source.sizes["trial"]  # nothing merged
    responses = data["Deconvolved"]
    file_numbers = np.asarray(trials["file_number"])
    means = np.stack([np.asarray(responses.restrict(trials[k]).values).mean(axis=0) for k in range(len(trials))])
    expected = source.responses.sel(trial=file_numbers)
    if "frame" in expected.dims:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # withheld trials: the mean of NaN
            expected = expected.mean("frame")
    np.testing.assert_allclose(means, expected.values, rtol=1e-6, equal_nan=True)


def test_static_trials_are_in_presentation_order_with_real_times(written: Written) -> None:
    """ids 0..N-1 in presentation order, the file number a column; starts strictly increase, each in
    its recorded second (ties spread over it), intervals never overlap; the series share those times."""
    source, path = written["normal"]
    stamps = parse_trial_timestamps(source.frame_trial_ts.values)
    with h5py.File(path, "r") as file:
        trials = file["intervals/trials"]
        ids, file_numbers = trials["id"][:], trials["file_number"][:]
        start, stop = trials["start_time"][:], trials["stop_time"][:]
        timestamps = file["stimulus/presentation/StimulusPresentation/timestamps"][:]
        session_start = file["session_start_time"][()].decode()
    np.testing.assert_array_equal(ids, np.arange(len(ids)))
    assert sorted(file_numbers) == sorted(source.trial.values)
    assert not np.array_equal(file_numbers, np.sort(file_numbers))  # the synthetic files are not in presentation order
    recorded = (stamps[file_numbers] - stamps.min()) / np.timedelta64(1, "s")
    np.testing.assert_array_equal(np.floor(start), recorded)
    assert np.all(np.diff(start) > 0) and np.all(stop > start) and np.all(stop[:-1] < start[1:])
    np.testing.assert_array_equal(timestamps, start)
    assert session_start.startswith(str(stamps.min().astype("datetime64[s]")))


def test_ties_are_spread_over_their_second_and_stops_never_overlap() -> None:
    recorded = np.array([0.0, 0.0, 0.0, 0.0, 1.0, 3.0, 3.0])
    starts = spread_ties(recorded)
    np.testing.assert_array_equal(starts, [0.0, 0.25, 0.5, 0.75, 1.0, 3.0, 3.5])
    stops = trial_stops(starts, 0.5)
    assert np.all(stops > starts) and np.all(stops[:-1] < starts[1:])
    np.testing.assert_allclose(stops, [0.249, 0.499, 0.749, 0.999, 1.5, 3.499, 4.0])


def test_video_scan_is_one_time_axis_of_frames(written: Written) -> None:
    from pynwb import NWBHDF5IO
    from pynwb.image import ImageSeries
    from pynwb.ophys import RoiResponseSeries

    source, path = written["video"]
    source = source.compute()
    with NWBHDF5IO(str(path), "r") as io:
        nwbfile = io.read()
        trials = nwbfile.trials.to_dataframe()
        order = trials["file_number"].to_numpy()
        lengths = trials["n_frames"].to_numpy()
        np.testing.assert_array_equal(order, source.trial.values[np.argsort(source.trial_idx.values)])
        np.testing.assert_array_equal(lengths, source.n_frames.sel(trial=order).values)
        start, stop = trials["start_time"].to_numpy(), trials["stop_time"].to_numpy()
        np.testing.assert_allclose(stop - start, lengths / 30.0)
        np.testing.assert_allclose(start[1:] - stop[:-1], 1.0)  # the documented gap
        np.testing.assert_array_equal(trials["tier"].to_numpy(dtype=str), source.tier.sel(trial=order).values)
        flags = trials["is_response_withheld"].to_numpy()
        np.testing.assert_array_equal(flags, source.responses_withheld.sel(trial=order).values)
        video = nwbfile.stimulus["StimulusVideo"]
        responses = nwbfile.processing["ophys"]["Fluorescence"]["Deconvolved"]
        assert isinstance(video, ImageSeries) and isinstance(responses, RoiResponseSeries)
        assert video.data.shape == (lengths.sum(), 4, 6) and responses.data.shape == (lengths.sum(), 5)
        times = video.timestamps[:]
        second, k = order[1], lengths[0]  # the second trial's frames, in the file and in the Dataset
        np.testing.assert_allclose(times[k : k + 3], start[1] + np.arange(3) / 30.0)
        clip = source.videos.sel(trial=second).values[..., : lengths[1]]
        np.testing.assert_array_equal(video.data[k : k + lengths[1]], np.moveaxis(clip, -1, 0))
        np.testing.assert_array_equal(
            responses.data[k : k + lengths[1]], source.responses.sel(trial=second).values[:, : lengths[1]].T
        )
        assert not np.isnan(video.data[:]).any()  # the padding is left out
        behavior = nwbfile.processing["behavior"]
        for series in (responses, behavior["PupilTracking"]["pupil_dilation"],
                       behavior["BehavioralTimeSeries"]["running_speed"], behavior["EyeTracking"]["pupil_center"]):  # fmt: skip
            np.testing.assert_array_equal(series.timestamps[:], times)
        assert nwbfile.imaging_planes["ImagingPlane"].imaging_rate == 30.0


def test_units_descriptions_and_no_repeated_subject_facts(written: Written) -> None:
    from pynwb import NWBHDF5IO, TimeSeries

    for name in KINDS:
        source, path = written[name]
        with NWBHDF5IO(str(path), "r") as io:
            nwbfile = io.read()
            for obj in nwbfile.objects.values():
                if isinstance(obj, TimeSeries) and obj.name != "StimulusPresentation":  # IndexSeries: N/A by schema
                    assert obj.unit not in ("", "n.a.", "N/A"), (name, obj.name)
                description = getattr(obj, "description", None)
                if isinstance(description, str):
                    assert len(description) > 15 and "(dims" not in description, (name, obj.name, description)
            assert not set(nwbfile.trials.colnames) & {"trial_animal_id", "trial_session", "trial_scan_idx"}
            assert "animal_id" not in nwbfile.processing["ophys"]["ImageSegmentation"]["PlaneSegmentation"].colnames
            misc = nwbfile.processing["misc"]
            for statistics in ("responses_statistics", "behavior_statistics"):
                table = misc[statistics]
                assert list(table["subset"][:2]) == ["all", "all"] and table["statistic"][0] == "mean"
                expected = source[statistics].values.reshape(-1, *source[statistics].shape[2:])
                np.testing.assert_array_equal(np.asarray(table["values"][:]), expected)
            plane = nwbfile.imaging_planes["ImagingPlane"]
            assert "neuroxr defaults (guesses" in plane.description and "GCaMP6s" in plane.description
            behaviour = name != "behaviour-withheld"
            assert ("behavior" in nwbfile.processing) == behaviour
            assert ("with pupil and running behaviour" in nwbfile.session_description) == behaviour
            assert nwbfile.lab_meta_data["neuroxr_layout"].document.startswith('{"format":"neuroxr-nwb"')
        with h5py.File(path, "r") as file:
            assert "scratch" not in file  # statistics and the mapping document have homes of their own
            assert "ndx-neuroxr" in file["specifications"]  # the extension travels with the file


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
        order = trials["file_number"].to_numpy()  # in presentation order
        np.testing.assert_array_equal(trials.index.to_numpy(), np.arange(len(order)))
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
    source, path = written["behaviour-withheld"]
    withheld = source.responses_withheld.values
    assert withheld.any() and not withheld.all()
    with h5py.File(path, "r") as file:
        file_numbers = file["intervals/trials/file_number"][:]
        flags = file["intervals/trials/is_response_withheld"][:]
        responses = file["processing/ophys/Fluorescence/Deconvolved/data"][:]
        assert "behavior" not in file["processing"]
        description = file["session_description"][()].decode()
    assert "without behaviour or pupil data (the release withholds them" in description
    np.testing.assert_array_equal(flags, withheld[file_numbers])
    assert np.isnan(responses[flags]).all() and not np.isnan(responses[~flags]).any()
    back = open_nwb(path)
    assert back.behavior.isnull().all() and back.pupil_center.isnull().all()
    assert back.attrs["withheld"] == source.attrs["withheld"]


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
        compression=None,
        subject={"age": "P12W/P16W", "sex": "F"},
        session={"experimenter": ["Doe, Jane"], "institution": "Somewhere", "identifier": "scan-3"},
        imaging={"indicator": "GCaMP6f"},
    )
    assert_valid(path)
    with h5py.File(path, "r") as file:
        series = file["processing/ophys/Fluorescence/Deconvolved"]
        assert "timestamps" not in series
        assert series["starting_time"][()] == 0.0 and series["starting_time"].attrs["rate"] == 0.5
        file_numbers = file["intervals/trials/file_number"][:]
        np.testing.assert_array_equal(file["intervals/trials/start_time"][:], 2.0 * np.arange(len(file_numbers)))
        images = file["stimulus/templates/StimulusImages"]
        compressed = [series["data"], *(images[name] for name in images if name != "order_of_images")]
        assert {dataset.compression for dataset in compressed} == {None}  # gzip by default
    np.testing.assert_array_equal(file_numbers, source.trial.values[np.argsort(source.trial_idx.values)])
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
    """Real static scans hold more neurons than trials; nwbinspector then suspects transposed responses
    (one sample per trial is the time axis: the documented exception, docs/nwb.md)."""
    path = to_nwb(make_scan(n_trials=24, n_neurons=30, image_shape=(1, 4, 6), seed=8), tmp_path / "wide.nwb")
    assert_valid(path)
    found = inspector_findings(path)
    assert {(check, name) for check, name, _ in found} == {("check_data_orientation", "Deconvolved")}, found


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


@pytest.mark.parametrize("zip", [False, True], ids=["folder", "zip"])
def test_release_files_stream_in_presentation_order_without_a_spill(tmp_path: Path, zip: bool) -> None:
    """Trial files read any trials in any order: a video scan out of presentation order is read in
    NWB order straight from its files, with no scratch file; the round trip is exact."""
    scan = neuroxr.write_scan(tmp_path / ("scan.zip" if zip else "scan"), zip=zip, **VIDEO, competition=True, seed=6)
    source = neuroxr.open_scan(scan)
    axis = frame_time_axis(source)
    assert not axis.identity  # the synthetic files are not in presentation order
    for name in ("videos", "responses"):
        rows = start_trial_rows(source[name], axis.rows, tmp_path / "spill.raw")
        try:
            assert isinstance(rows.source, ForwardRows) and rows.order is None
        finally:
            rows.close()
        assert not (tmp_path / "spill.raw").exists()
    path = to_nwb(source, tmp_path / "video.nwb")
    xr.testing.assert_identical(open_nwb(path), source)


def test_a_mixed_release_goes_to_a_folder_of_files_and_comes_back(mixed_release: Path, tmp_path: Path) -> None:
    tree = neuroxr.open_datatree(mixed_release)
    with pytest.raises(neuroxr.DatasetError, match=r"written as a folder of <scan>.nwb files.*found one.nwb"):
        to_nwb(tree, tmp_path / "one.nwb")
    assert list(tmp_path.iterdir()) == []
    folder = to_nwb(tree, tmp_path / "nwb")
    assert sorted(path.name for path in folder.iterdir()) == sorted(f"{name}.nwb" for name in tree.children)
    xr.testing.assert_identical(open_nwb(folder), tree)


def test_a_dask_backed_variable_of_its_own_streams_to_misc(tmp_path: Path) -> None:
    """A per-trial variable without an NWB type of its own (here: predictions, dask-backed) is a
    TimeSeries in processing/misc, streamed; nothing goes to scratch."""
    source = make_scan(**TINY, seed=9)
    predictions = (source.responses * 2).assign_attrs(units="a.u.", long_name="predicted responses of a model")
    source = source.assign(predictions=predictions)
    assert isinstance(source.predictions.data, da.Array)
    path = to_nwb(source, tmp_path / "predictions.nwb")
    assert_valid(path)
    with h5py.File(path, "r") as file:
        assert "scratch" not in file and file["processing/misc/predictions/data"].shape == (24, 4)
    xr.testing.assert_identical(open_nwb(path), source)


def test_video_padding_that_holds_values_is_refused(tmp_path: Path) -> None:
    source = make_scan(**VIDEO, seed=5)
    first = int(source.n_frames[0])
    videos = source.videos.load().copy()
    videos[0, :, :, first:] = 1.0  # values after the trial's end, where the release has NaN
    with pytest.raises(ValueError, match=r"videos of NWB trial \d+ holds values after its n_frames"):
        to_nwb(source.assign(videos=videos), tmp_path / "padded.nwb")
    assert list(tmp_path.iterdir()) == []


def test_a_metadata_file_sets_nwb_fields_and_arguments_win_over_it(tmp_path: Path) -> None:
    from pynwb import NWBHDF5IO

    metadata = tmp_path / "metadata.yaml"
    metadata.write_text(
        "NWBFile:\n  experimenter: ['Doe, Jane']\n  institution: Somewhere\n  lab: A lab\n"
        "Subject:\n  sex: F\n  age: P90D\n  genotype: Ai162\n  strain: C57BL/6J\n"
        "Ophys:\n  Device:\n    - name: Mesoscope\n      description: two-photon mesoscope\n"
        "  ImagingPlane:\n    - indicator: GCaMP6f\n      imaging_rate: 6.3\n"
        "      optical_channel:\n        - emission_lambda: 512.0\n"
    )
    as_json = tmp_path / "metadata.json"
    as_json.write_text(json.dumps({"Subject": {"sex": "M"}}))
    source = make_scan(**TINY, seed=7)
    path = to_nwb(source, tmp_path / "scan.nwb", metadata=metadata, subject={"age": "P100D"})
    with NWBHDF5IO(str(path), "r") as io:
        nwbfile = io.read()
        assert nwbfile.experimenter == ("Doe, Jane",) and nwbfile.institution == "Somewhere" and nwbfile.lab == "A lab"
        subject = nwbfile.subject
        assert (subject.sex, subject.age, subject.genotype, subject.strain) == ("F", "P100D", "Ai162", "C57BL/6J")
        plane = nwbfile.imaging_planes["ImagingPlane"]
        assert plane.indicator == "GCaMP6f" and plane.imaging_rate == 6.3
        assert plane.optical_channel[0].emission_lambda == 512.0
        assert "excitation_lambda 920.0" in plane.description and "indicator" not in plane.description.split("guesses")[1]
        assert nwbfile.devices["Microscope"].description == "two-photon mesoscope"
    assert inspector_findings(path) == set()
    json_path = to_nwb(source, tmp_path / "json.nwb", metadata=as_json)
    with NWBHDF5IO(str(json_path), "r") as io:
        assert io.read().subject.sex == "M"
    cli = tmp_path / "cli.nwb"
    assert neuroxr.cli.main(["convert", "-q", str(json_path), str(cli), "--metadata", str(metadata)]) == 0
    with NWBHDF5IO(str(cli), "r") as io:
        assert io.read().subject.genotype == "Ai162"


@pytest.mark.parametrize(
    ("content", "key"),
    [
        ("Subject:\n  colour: blue\n", "Subject.colour: unknown field"),
        ("Session:\n  lab: x\n", "Session: unknown section"),
        ("Ophys:\n  ImagingPlane:\n    - indicator: a\n    - indicator: b\n", "Ophys.ImagingPlane: expected one entry"),
        ("Ophys:\n  ImagingPlane:\n    - optical_channel: [{colour: red}]\n", "Ophys.ImagingPlane.optical_channel.colour"),
        ("NWBFile: [\n", "not valid YAML"),
    ],
)
def test_a_bad_metadata_file_names_the_file_and_the_key(tmp_path: Path, content: str, key: str) -> None:
    metadata = tmp_path / "bad.yaml"
    metadata.write_text(content)
    with pytest.raises(neuroxr.MetadataError, match=re.escape(f"{metadata}: {key}") if "YAML" not in key else "not valid YAML"):
        to_nwb(make_scan(**TINY, seed=7), tmp_path / "scan.nwb", metadata=metadata)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bad.yaml"]
