"""neuroxr.layout: what a scan holds, from its listing, meta/ arrays and first headers; every problem names the file."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import RELEASE_NAME, eager, expect_scan_error, write_tiny_dynamic_scan, write_tiny_scan, zip_scan

import neuroxr
from neuroxr import datamodel as model
from neuroxr.cli import main
from neuroxr.dataset import build_dataset
from neuroxr.layout import layout_of, read_layout
from neuroxr.layout.check import check_files, files_to_check
from neuroxr.layout.discover import find_scan_folder, looks_like_scan, scan_paths, scan_root
from neuroxr.sources import ZipSource, open_source

# ----------------------------------------------------------------------------------------------
# what the layout reads


@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_the_layout_of_a_scan(shared_scan: Path, tmp_path: Path, kind: str) -> None:
    path = shared_scan if kind == "folder" else zip_scan(shared_scan, tmp_path / "scan.zip", zipfile.ZIP_DEFLATED)
    layout = read_layout(path)
    assert layout.n_trials == 24 and layout.n_neurons == 13
    assert layout.release_name == RELEASE_NAME and layout.scan_key == "30001-2-3"
    assert list(layout.variables) == ["images", "responses", "behavior", "pupil_center"]
    for name, variable in layout.variables.items():
        reference = np.load(shared_scan / "data" / name / "0.npy")
        assert variable.header.shape == reference.shape and variable.header.dtype == reference.dtype
        assert variable.header.file_bytes == (shared_scan / "data" / name / "0.npy").stat().st_size
        assert variable.files.read(5) == (shared_scan / "data" / name / "5.npy").read_bytes()
    assert sorted(layout.trials) == ["frame_image_class", "frame_image_id", "frame_trial_ts", "scan_idx", "tiers", "trial_idx"]
    np.testing.assert_array_equal(layout.trials["tiers"], np.load(shared_scan / "meta/trials/tiers.npy"))
    np.testing.assert_array_equal(layout.neurons["unit_ids"], np.load(shared_scan / "meta/neurons/unit_ids.npy"))
    assert sorted(layout.statistics) == ["behavior", "images", "pupil_center", "responses"]
    assert sorted(layout.statistics["responses"]) == ["all", "stimulus_Frame"]
    np.testing.assert_array_equal(
        layout.read_statistic("responses", "all", "std"), np.load(shared_scan / "meta/statistics/responses/all/std.npy")
    )


def test_the_scan_key_comes_from_the_neurons_when_the_name_has_none(tmp_path: Path) -> None:
    layout = read_layout(write_tiny_scan(tmp_path, name="my scan"))
    assert layout.release_name == "my scan" and layout.scan_key == "30001-2-3"


def test_a_variable_beyond_the_four_is_kept_after_them(scan_folder: Path) -> None:
    (scan_folder / "data" / "eye").mkdir()
    for trial in range(24):
        np.save(scan_folder / "data" / "eye" / f"{trial}.npy", np.full(2, trial, np.int16))
    assert list(read_layout(scan_folder).variables) == ["images", "responses", "behavior", "pupil_center", "eye"]


# ----------------------------------------------------------------------------------------------
# where the scan is


def test_discovery_of_scan_folders_and_archives(shared_scan: Path, tmp_path: Path) -> None:
    assert find_scan_folder(shared_scan) == shared_scan
    assert find_scan_folder(shared_scan.parent) == shared_scan  # a folder holding one scan
    release = tmp_path / "release"
    release.mkdir()
    folder = write_tiny_scan(release, name="static1-2-3-GrayImageNet-a")
    zip_scan(folder, release / "static1-2-3-GrayImageNet-a.zip")  # the unpacked folder wins over its .zip
    other = zip_scan(write_tiny_scan(tmp_path, name="static4-5-6-GrayImageNet-b"), release / "static4-5-6-GrayImageNet-b.zip")
    (release / "__MACOSX").mkdir()
    (release / "notes.txt").write_text("x")
    assert scan_paths(release) == [folder, other]
    assert scan_paths(folder) == [folder]
    with pytest.raises(neuroxr.ScanError, match="holds 2 scans .*open_datatree"):
        find_scan_folder(_two_folders(tmp_path))
    assert looks_like_scan(folder) and looks_like_scan(other) and looks_like_scan("https://host/x.zip")
    assert not looks_like_scan(release / "notes.txt") and not looks_like_scan(tmp_path / "missing")
    with pytest.raises(neuroxr.ScanError, match="holds no scan"):
        scan_paths(tmp_path / "release" / "__MACOSX")


def _two_folders(root: Path) -> Path:
    parent = root / "two"
    write_tiny_scan(parent, name="a")
    write_tiny_scan(parent, name="b")
    return parent


def test_an_archive_holding_two_scans_says_so(shared_scan: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "two.zip", "w") as archive:
        for top in ("first", "second"):
            for file in sorted(shared_scan.rglob("*.npy")):
                archive.write(file, f"{top}/{file.relative_to(shared_scan).as_posix()}")
    with pytest.raises(neuroxr.ScanError, match=r"holds 2 scans \(first, second\); open them with neuroxr.open_datatree"):
        scan_root(ZipSource(tmp_path / "two.zip"))
    expect_scan_error(tmp_path / "two.zip", "two.zip", "holds 2 scans")


# ----------------------------------------------------------------------------------------------
# problems, each naming the file (moved from the old test_bad_input.py)


def test_not_a_scan(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    expect_scan_error(tmp_path / "empty", "empty", "not a Sensorium scan", "data/")
    expect_scan_error(tmp_path / "nothing-here", "no such file or folder")
    (tmp_path / "notes.zip").write_bytes(b"plain text, not an archive")
    expect_scan_error(tmp_path / "notes.zip", "notes.zip", "not a readable zip archive")


@pytest.mark.parametrize(
    ("part", "fragments"),
    [
        ("meta/neurons", ("meta/neurons", "missing")),
        ("meta/trials", ("meta/trials", "missing")),
        ("meta/neurons/unit_ids.npy", ("unit_ids.npy", "missing")),
    ],
)
def test_missing_parts(scan_folder: Path, part: str, fragments: tuple[str, ...]) -> None:
    target = scan_folder / part
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()
    expect_scan_error(scan_folder, *fragments)
    with pytest.raises(neuroxr.ScanError, match="missing"):
        read_layout(scan_folder)


def test_empty_data_folder(scan_folder: Path) -> None:
    shutil.rmtree(scan_folder / "data")
    (scan_folder / "data").mkdir()
    expect_scan_error(scan_folder, "data", "no per-trial data folders")


def test_counts_differ(scan_folder: Path) -> None:
    (scan_folder / "data" / "behavior" / "23.npy").unlink()
    expect_scan_error(scan_folder, "data", "different numbers of trial files", "behavior: 23", "responses: 24")


def test_missing_or_non_numeric_file_number(scan_folder: Path) -> None:
    responses = scan_folder / "data" / "responses"
    (responses / "7.npy").rename(responses / "seven.npy")
    expect_scan_error(scan_folder, "data/responses/seven.npy", "<number>.npy")
    (responses / "seven.npy").rename(responses / "7.npy")
    (responses / "7.npy").rename(responses / "07.npy")
    expect_scan_error(scan_folder, "data/responses/07.npy", "<number>.npy")
    (responses / "07.npy").rename(responses / "7.npy")
    for variable in ("images", "responses", "behavior", "pupil_center"):
        (scan_folder / "data" / variable / "7.npy").rename(scan_folder / "data" / variable / "24.npy")
    expect_scan_error(scan_folder, "data/", "7.npy is missing")


def test_pickled_meta_arrays_are_never_unpickled(scan_folder: Path, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"

    class Bomb:
        def __reduce__(self):
            return (Path.touch, (marker,))

    np.save(scan_folder / "meta" / "trials" / "frame_image_class.npy", np.array([Bomb()] * 24, dtype=object), allow_pickle=True)
    expect_scan_error(scan_folder, "meta/trials/frame_image_class.npy", "Python objects")
    assert not marker.exists()


def test_meta_arrays_of_the_wrong_length(scan_folder: Path) -> None:
    np.save(scan_folder / "meta" / "trials" / "tiers.npy", np.array(["train"] * 23))
    expect_scan_error(scan_folder, "meta/trials/tiers.npy", "one entry per trial (24)", "length 23")
    np.save(scan_folder / "meta" / "trials" / "tiers.npy", np.array("train"))
    expect_scan_error(scan_folder, "meta/trials/tiers.npy", "one entry per trial (24)", "found a scalar")
    np.save(scan_folder / "meta" / "trials" / "tiers.npy", np.array(["train"] * 24))
    np.save(scan_folder / "meta" / "neurons" / "area.npy", np.array(["V1"] * 12))
    expect_scan_error(scan_folder, "meta/neurons/area.npy", "one entry per neuron (13)", "length 12")
    np.save(scan_folder / "meta" / "neurons" / "area.npy", np.array(["V1"] * 13))
    np.save(scan_folder / "meta" / "neurons" / "unit_ids.npy", np.arange(14, dtype=np.uint16))
    expect_scan_error(scan_folder, "data/responses/0.npy", "14 neurons")
    np.save(scan_folder / "meta" / "neurons" / "unit_ids.npy", np.ones(13, dtype=np.uint16))
    expect_scan_error(scan_folder, "meta/neurons/unit_ids.npy", "unit ids are not unique")


# ----------------------------------------------------------------------------------------------
# the full check (neuroxr validate)


def test_validate_checks_the_crc_of_every_statistics_member_that_opening_read_only_the_header_of(tmp_path: Path) -> None:
    """Opening a deflated zip inflates a statistics member's first bytes only; ``check_files`` reads it whole."""
    scan = write_tiny_dynamic_scan(tmp_path, video_shape=(12, 16), statistics_frames=12)
    archive = zip_scan(scan, tmp_path / "video.zip", zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(archive) as reference:
        stats = [info for info in reference.infolist() if "/meta/statistics/" in info.filename]
        victim = max(stats, key=lambda info: info.compress_size)
        assert victim.compress_size > 4 * 2**10  # far past the prefix a header read inflates
    data = bytearray(archive.read_bytes())
    data[victim.header_offset + 30 + len(victim.filename.encode()) + victim.compress_size - 8] ^= 0x10
    archive.write_bytes(bytes(data))
    with zipfile.ZipFile(archive) as reference, pytest.raises(zipfile.BadZipFile):
        reference.read(victim.filename)  # zipfile refuses it too
    layout = read_layout(archive)  # the header is intact: opening does not see it
    problems = list(check_files(layout))
    assert len(problems) == 1 and problems[0].startswith(f"{archive}::{victim.filename}: corrupt zip member"), problems
    variable, subset, statistic = victim.filename.removesuffix(".npy").split("/")[-3:]
    with pytest.raises(neuroxr.ScanError, match="corrupt zip member"):
        neuroxr.open_scan(archive)[f"{variable}_statistics"].sel(subset=subset, statistic=statistic).values


def test_check_files_yields_one_message_per_problem_and_counts_every_file(scan_folder: Path) -> None:
    layout = read_layout(scan_folder)
    done: list[int] = []
    assert list(check_files(layout, progress=done.append)) == []
    files = len(list((scan_folder / "data").glob("*/*.npy"))) + len(list((scan_folder / "meta" / "statistics").rglob("*.npy")))
    assert done == [1] * files and files_to_check(layout) == files > 96  # 96 trial files, then the statistics
    np.save(scan_folder / "data" / "responses" / "5.npy", np.zeros(13, np.float64))
    victim = scan_folder / "data" / "behavior" / "2.npy"
    victim.write_bytes(victim.read_bytes() + b"\x00\x00")
    np.save(scan_folder / "data" / "pupil_center" / "3.npy", np.zeros(2, ">f4"))  # byte order aside, the same type
    (scan_folder / "data" / "images" / "4.npy").write_bytes(b"not npy")
    problems = list(check_files(read_layout(scan_folder)))
    assert len(problems) == 3, problems  # the byte-swapped pupil file is no problem
    assert problems[0].startswith(f"{scan_folder}/data/images/4.npy: not a .npy file")
    assert problems[1].startswith(f"{scan_folder}/data/responses/5.npy: holds float64 (13,), expected float32 (13,)")
    assert problems[2] == f"{scan_folder}/data/behavior/2.npy: has trailing bytes: 142 bytes, the header promises 140 (float32 (3,))"


def test_validate_reports_every_problem(untouched: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-q", str(untouched)]) == 0
    assert "ok" in capsys.readouterr().out
    broken = tmp_path / "broken"
    shutil.copytree(untouched, broken)
    np.save(broken / "data" / "responses" / "5.npy", np.zeros(12, np.float32))
    victim = broken / "data" / "images" / "9.npy"
    victim.write_bytes(victim.read_bytes()[:-4])
    np.save(broken / "data" / "behavior" / "1.npy", np.zeros(3, np.float64))
    assert main(["validate", "-q", str(broken)]) == 1
    out = capsys.readouterr().out
    assert "data/responses/5.npy: holds float32 (12,)" in out
    assert "data/images/9.npy: truncated" in out
    assert "data/behavior/1.npy: holds float64 (3,)" in out
    assert "3 problems" in out


# ------------------------------------------------------------------------------------------------
# what the tree may not hold is refused, naming it; valid files numpy reads are read


def test_a_data_folder_that_is_a_file_is_refused(scan_folder: Path) -> None:
    shutil.rmtree(scan_folder / "data" / "pupil_center")
    (scan_folder / "data" / "pupil_center").write_bytes(b"not a folder")
    expect_scan_error(scan_folder, "data/pupil_center", "is a file, expected a folder of trial files")


@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_a_meta_npy_that_is_a_folder_is_refused(scan_folder: Path, tmp_path: Path, kind: str) -> None:
    victim = scan_folder / "meta" / "trials" / "frame_image_class.npy"
    victim.unlink()
    victim.mkdir()
    (victim / "inside.txt").write_text("a folder where a .npy file belongs")
    path = scan_folder if kind == "folder" else zip_scan(scan_folder, tmp_path / "scan.zip")
    expect_scan_error(path, "meta/trials/frame_image_class.npy", "is a folder, expected a .npy file")
    (victim / "inside.txt").unlink()  # an empty folder too
    if kind == "folder":
        expect_scan_error(scan_folder, "meta/trials/frame_image_class.npy", "is a folder")


def test_a_statistics_file_of_text_is_refused(scan_folder: Path) -> None:
    np.save(scan_folder / "meta" / "statistics" / "responses" / "all" / "max.npy", np.array(["12.5"] * 13))
    expect_scan_error(scan_folder, "meta/statistics/responses/all/max.npy", "holds <U4 values, expected numbers")


def test_a_header_claiming_more_than_the_file_holds_is_refused_at_open(scan_folder: Path) -> None:
    victim = scan_folder / "data" / "images" / "0.npy"
    data = victim.read_bytes()
    victim.write_bytes(data.replace(b"(1, 4, 6)", b"(1, 4, 6000000000000)", 1))
    expect_scan_error(scan_folder, "data/images/0.npy", "truncated", "the header promises 96000000000")


@pytest.mark.parametrize("kind", ["folder", "stored", "deflated"])
def test_valid_files_numpy_reads_are_read(tmp_path: Path, kind: str) -> None:
    """Zero-size trials, byte-swapped files, format 2.0 and 3.0 headers and headers longer than a kilobyte."""
    scan = write_tiny_scan(tmp_path, name="scan{1}")
    for trial in range(24):
        np.save(scan / "data" / "behavior" / f"{trial}.npy", np.arange(3, dtype=">f4") + trial)  # byte-swapped
        empty = scan / "data" / "empty"
        empty.mkdir(exist_ok=True)
        np.save(empty / f"{trial}.npy", np.zeros((0, 2), np.float32))  # zero-size trials
    long_header = np.dtype([(f"field_{k:03d}", "<f4") for k in range(60)])  # a header of about 1.6 kB
    with open(scan / "data" / "pupil_center" / "5.npy", "wb") as file:
        np.lib.format.write_array(file, np.array([120.0, 80.0], np.float32), version=(3, 0))
    for trial in range(24):
        with open(scan / "data" / "responses" / f"{trial}.npy", "rb") as file:
            values = np.load(file)
        with open(scan / "data" / "responses" / f"{trial}.npy", "wb") as file:
            np.lib.format.write_array(file, values, version=(2, 0))
    wide = scan / "data" / "wide"
    wide.mkdir()
    for trial in range(24):
        values = np.zeros(2, long_header)
        values["field_059"] = trial
        np.save(wide / f"{trial}.npy", values)
    assert len(np.lib.format.header_data_from_array_1_0(values)["descr"]) == 60
    assert (wide / "0.npy").stat().st_size - values.nbytes > 1024
    path = scan if kind == "folder" else zip_scan(scan, tmp_path / "scan.zip", zipfile.ZIP_STORED if kind == "stored" else zipfile.ZIP_DEFLATED)
    ds = neuroxr.open_scan(path, mask_withheld=False)
    for variable in ("behavior", "empty", "pupil_center", "responses"):
        np.testing.assert_array_equal(ds[variable].values, eager(scan, variable))
    assert ds["empty"].shape == (24, 0, 2)
    assert ds["wide"].values.dtype == long_header
    assert ds["wide"].values["field_059"].tolist() == [[float(t)] * 2 for t in range(24)]
    assert list(check_files(read_layout(path))) == []


# ----------------------------------------------------------------------------------------------
# every structural problem in one run (neuroxr validate), one ScanError listing them (open_scan)


def _five_faults(scan: Path) -> None:
    (scan / "data" / "responses" / "notes.txt").write_text("stray")  # a stray file
    (scan / "data" / "images" / "7.npy").unlink()  # a gap
    np.save(scan / "meta" / "trials" / "tiers.npy", np.array(["train"] * 23))  # a meta array too short
    np.save(scan / "meta" / "neurons" / "layer.npy", np.array(["L4"] * 12))  # another
    np.save(scan / "meta" / "neurons" / "area.npy", np.array([{"a": 1}] * 13, dtype=object), allow_pickle=True)  # pickled


FIVE_FAULTS = (
    "data/responses/notes.txt: unexpected file",
    "data/images: trial files must be numbered 0..22 without gaps; 7.npy is missing",
    "meta/trials/tiers.npy: expected one entry per trial (24), found length 23",
    "meta/neurons/layer.npy: expected one entry per neuron (13), found length 12",
    "meta/neurons/area.npy: holds Python objects",
)


def test_every_structural_problem_is_found_in_one_run(scan_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _five_faults(scan_folder)
    layout = read_layout(scan_folder, strict=False)
    assert len(layout.problems) == 5, layout.problems
    for fault in FIVE_FAULTS:
        assert sum(fault in problem for problem in layout.problems) == 1, (fault, layout.problems)
    error = expect_scan_error(scan_folder, "5 problems", *FIVE_FAULTS)
    assert error.path == str(scan_folder)
    assert main(["validate", "-q", str(scan_folder)]) == 1
    out = capsys.readouterr().out
    assert all(fault in out for fault in FIVE_FAULTS) and "5 problems" in out
    # the folders that are intact are still checked file by file
    np.save(scan_folder / "data" / "behavior" / "4.npy", np.zeros(4, np.float32))
    assert main(["validate", "-q", str(scan_folder)]) == 1
    out = capsys.readouterr().out
    assert "data/behavior/4.npy: holds float32 (4,), expected float32 (3,)" in out and "6 problems" in out


def test_every_missing_file_number_is_named(scan_folder: Path) -> None:
    for number in (3, 9, 11):
        (scan_folder / "data" / "responses" / f"{number}.npy").unlink()
    (scan_folder / "data" / "responses" / "23.npy").unlink()
    expect_scan_error(scan_folder, "data/responses", "3.npy, 9.npy, 11.npy are missing")


# ----------------------------------------------------------------------------------------------
# the kind of scan, and what differs in a 2023 video scan


def test_the_kind_is_recognised_from_what_the_scan_holds(shared_scan: Path, shared_dynamic: Path, tmp_path: Path) -> None:
    assert read_layout(shared_scan).kind is model.STATIC and read_layout(shared_dynamic).kind is model.DYNAMIC
    # the name is a hint only: a folder named like a video scan that holds images is a 2022 scan
    misnamed = write_tiny_scan(tmp_path, name="dynamic1-2-3-Video-abc")
    assert read_layout(misnamed).kind is model.STATIC
    # without a stimulus folder, the responses' time axis tells
    no_videos = tmp_path / "no-videos"
    shutil.copytree(shared_dynamic, no_videos)
    shutil.rmtree(no_videos / "data" / "videos")
    assert read_layout(no_videos).kind is model.DYNAMIC
    both = tmp_path / "both"
    shutil.copytree(shared_dynamic, both)
    shutil.copytree(shared_scan / "data" / "images", both / "data" / "images")
    with pytest.raises(neuroxr.ScanError, match="holds both data/images and data/videos"):
        read_layout(both)


@pytest.mark.parametrize("kind", ["folder", "stored", "deflated"])
def test_trial_lengths_are_the_first_nan_frame_of_each_video(shared_dynamic: Path, tmp_path: Path, kind: str) -> None:
    methods = {"stored": zipfile.ZIP_STORED, "deflated": zipfile.ZIP_DEFLATED}
    path = shared_dynamic if kind == "folder" else zip_scan(shared_dynamic, tmp_path / "scan.zip", methods[kind])
    layout = read_layout(path)
    videos = eager(shared_dynamic, "videos")
    first_nan = [int(np.argmax(np.isnan(video).any(axis=(0, 1)))) if np.isnan(video).any() else video.shape[-1] for video in videos]
    np.testing.assert_array_equal(layout.n_frames.values, first_nan)
    assert layout.n_frames.source == "row 0 of data/behavior/<trial>.npy"
    assert min(first_nan) < 12 and max(first_nan) == 12  # some trials are padded, some are not
    from_videos = read_layout(path, n_frames_from="videos")
    np.testing.assert_array_equal(from_videos.n_frames.values, first_nan)
    assert from_videos.n_frames.source == "pixel (0, 0) of data/videos/<trial>.npy"


def test_a_variable_whose_padded_length_differs(dynamic_folder: Path) -> None:
    for trial in range(21):
        path = dynamic_folder / "data" / "behavior" / f"{trial}.npy"
        np.save(path, np.load(path)[:, :11])
    expect_scan_error(dynamic_folder, "data/behavior/0.npy", "holds 11 frames", "shorter than the 12 of", "data/responses/0.npy", "padded to one length")


def test_a_video_shorter_than_its_responses(dynamic_folder: Path) -> None:
    for trial in range(21):
        path = dynamic_folder / "data" / "videos" / f"{trial}.npy"
        np.save(path, np.load(path)[..., :10])
    expect_scan_error(dynamic_folder, "data/videos/0.npy", "holds 10 frames (float32 (4, 6, 10)), shorter than the 12")


def test_one_trial_padded_to_another_length_is_named(dynamic_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(dynamic_folder / "data" / "behavior" / "5.npy", np.load(dynamic_folder / "data" / "behavior" / "5.npy")[:, :10])
    expect_scan_error(dynamic_folder, "data/behavior/5.npy", "holds float64 (2, 10), expected float64 (2, 12)", "padded to one length")
    assert main(["validate", "-q", str(dynamic_folder)]) == 1
    assert "data/behavior/5.npy: holds float64 (2, 10), expected float64 (2, 12)" in capsys.readouterr().out


def test_a_video_scan_without_its_time_axis(dynamic_folder: Path) -> None:
    for trial in range(21):
        path = dynamic_folder / "data" / "pupil_center" / f"{trial}.npy"
        np.save(path, np.load(path)[:, 0])
    expect_scan_error(dynamic_folder, "data/pupil_center/0.npy", "expected 2 axes (pupil_axis, frame)", "time axis last")


def test_the_frame_count_check_agrees_with_each_videos_first_nan_frame_exactly(tmp_path: Path) -> None:
    """The check of a block (a reduction over the frames kept, exact where it cannot tell) refuses exactly the
    trials whose first NaN frame differs from ``n_frames``: a lone NaN pixel early on, infinities, no padding."""
    from neuroxr.layout.frames import FrameCountCheck, first_nan_frames
    from neuroxr.sources import FolderFiles

    rng = np.random.default_rng(7)
    files = FolderFiles(str(tmp_path), ".npy")
    for _ in range(40):
        block = rng.random((5, 3, 4, 10), dtype=np.float32)
        lengths = rng.integers(0, 11, 5)
        for row, length in enumerate(lengths):
            block[row, ..., length:] = np.nan
        row = int(rng.integers(5))
        if rng.random() < 0.5:  # a NaN pixel inside a trial, or an infinity that is no padding
            block[row, rng.integers(3), rng.integers(4), rng.integers(10)] = np.nan if rng.random() < 0.5 else -np.inf
        claimed = lengths.copy()
        if rng.random() < 0.3:
            claimed[row] = rng.integers(0, 11)
        truth = first_nan_frames(block)
        check = FrameCountCheck(claimed, "row 0 of data/behavior/<trial>.npy")
        if np.array_equal(truth, claimed):
            check(np.arange(5), block, files)
        else:
            first = int(np.flatnonzero(truth != claimed)[0])
            with pytest.raises(neuroxr.ScanError, match=f"first NaN frame is {truth[first]}, but n_frames is {claimed[first]}"):
                check(np.arange(5), block, files)
    integers = np.ones((2, 3, 10), np.int16)
    FrameCountCheck(np.array([10, 10]), "x")(np.arange(2), integers, files)
    with pytest.raises(neuroxr.ScanError, match="first NaN frame is 10, but n_frames is 4"):
        FrameCountCheck(np.array([10, 4]), "x")(np.arange(2), integers, files)


class _CountingFiles:
    """Numbered files that record, per file, the bytes each read placed (to see what opening reads)."""

    def __init__(self, files, placed: dict[str, int]) -> None:
        self.files, self.placed = files, placed

    def label(self, number):
        return self.files.label(number)

    def size(self, number):
        return self.files.size(number)

    def read(self, number, limit=None):
        data = self.files.read(number, limit)
        self.placed[self.label(number)] = self.placed.get(self.label(number), 0) + len(data)
        return data

    def read_into(self, numbers, buffers):
        sizes = self.files.read_into(numbers, buffers)
        for number, size, targets in zip(numbers, sizes, buffers):
            label = self.label(number)
            self.placed[label] = self.placed.get(label, 0) + min(size, sum(len(target) for target in targets))
        return sizes


class _CountingSource:
    def __init__(self, source, placed: dict[str, int]) -> None:
        self.source, self.placed, self.name = source, placed, source.name

    def __getattr__(self, name):
        return getattr(self.source, name)

    def read_many(self, relatives):
        found = self.source.read_many(relatives)
        for relative, data in zip(relatives, found):
            self.placed[self.label(relative)] = self.placed.get(self.label(relative), 0) + len(data)
        return found

    def read(self, relative):
        return self.read_many([relative])[0]

    def listed(self, relatives):
        return _CountingFiles(self.source.listed(relatives), self.placed)


def test_opening_reads_only_the_statistics_headers_and_one_std(tmp_path: Path) -> None:
    scan = write_tiny_dynamic_scan(tmp_path, video_shape=(8, 12), statistics_frames=12)
    placed: dict[str, int] = {}
    ds = build_dataset(layout_of(_CountingSource(open_source(scan), placed)))
    files = sorted((scan / "meta" / "statistics").rglob("*.npy"))
    # withheld detection reads the std of behaviour (the first source of the trial lengths) and of the pupil, whole
    whole = {scan / "meta/statistics" / variable / "all/std.npy" for variable in ("behavior", "pupil_center")}
    for path in files:  # every file: its first 256 bytes (the 128-byte header, at most 128 of payload); those two once whole
        size = path.stat().st_size
        assert placed.get(str(path), 0) == min(size, 256) + (size if path in whole else 0), path
    assert any(path.stat().st_size > 10 * 256 for path in files)  # time-resolved statistics, left unread
    for path in files:  # the lazy statistics hold what the files hold
        variable, subset, statistic = path.relative_to(scan / "meta" / "statistics").with_suffix("").parts
        values = ds[f"{variable}_statistics"].sel(subset=subset, statistic=statistic).values
        np.testing.assert_array_equal(values, np.load(path))
        widest = np.result_type(*(np.load(f).dtype for f in (scan / "meta" / "statistics" / variable).rglob("*.npy")), np.float32)
        assert values.dtype == widest  # the widest of the variable's files (narrower ones recorded, to be written back so)
