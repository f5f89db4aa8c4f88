"""Bad input: every problem raises ScanError naming the file, and the input is never written to."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

import neuroxr
from neuroxr.cli import main
from neuroxr.errors import ScanError


def fingerprint(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def untouched(scan_folder: Path):
    """The scan folder; the test fails if anything under it changed."""
    before = fingerprint(scan_folder)
    yield scan_folder
    assert fingerprint(scan_folder) == before


def expect(path: Path, *fragments: str, compute: bool = False) -> ScanError:
    with pytest.raises(ScanError) as caught:
        ds = neuroxr.open_scan(path)
        if compute:
            ds.load()
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    return caught.value


def test_not_a_scan(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    expect(tmp_path / "empty", "empty", "not a Sensorium scan", "data/")
    expect(tmp_path / "nothing-here", "no such file or folder")
    (tmp_path / "notes.zip").write_bytes(b"plain text, not an archive")
    expect(tmp_path / "notes.zip", "notes.zip", "not a readable zip archive")


@pytest.mark.parametrize(
    ("part", "fragments"),
    [
        ("meta/neurons", ("meta/neurons", "missing")),
        ("meta/trials", ("meta/trials", "missing")),
        ("meta/neurons/unit_ids.npy", ("unit_ids.npy", "missing")),
    ],
)
def test_missing_parts(scan_folder: Path, part: str, fragments: tuple[str, ...]) -> None:
    import shutil

    target = scan_folder / part
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()
    expect(scan_folder, *fragments)


def test_empty_data_folder(scan_folder: Path) -> None:
    import shutil

    shutil.rmtree(scan_folder / "data")
    (scan_folder / "data").mkdir()
    expect(scan_folder, "data", "no per-trial data folders")


def test_counts_differ(scan_folder: Path) -> None:
    (scan_folder / "data" / "behavior" / "23.npy").unlink()
    expect(scan_folder, "data", "different numbers of trial files", "behavior: 23", "responses: 24")


def test_missing_or_non_numeric_file_number(scan_folder: Path) -> None:
    responses = scan_folder / "data" / "responses"
    (responses / "7.npy").rename(responses / "seven.npy")
    expect(scan_folder, "data/responses/seven.npy", "<number>.npy")
    (responses / "seven.npy").rename(responses / "7.npy")
    for variable in ("images", "responses", "behavior", "pupil_center"):
        (scan_folder / "data" / variable / "7.npy").rename(scan_folder / "data" / variable / "24.npy")
    expect(scan_folder, "data/", "7.npy is missing")


@pytest.mark.parametrize(
    ("replacement", "fragment"),
    [(np.zeros(12, np.float32), "float32 (12,)"), (np.zeros(13, np.float64), "float64 (13,)")],
)
def test_a_file_of_another_shape_or_dtype(untouched: Path, replacement: np.ndarray, fragment: str, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(untouched, copy)
    np.save(copy / "data" / "responses" / "5.npy", replacement)
    expect(copy, "data/responses/5.npy", fragment, "expected float32 (13,)", compute=True)


def test_truncated_and_corrupt_npy(scan_folder: Path) -> None:
    victim = scan_folder / "data" / "images" / "3.npy"
    victim.write_bytes(victim.read_bytes()[:-10])
    expect(scan_folder, "data/images/3.npy", "truncated", compute=True)
    victim.write_bytes(b"garbage that is not an npy file at all")
    expect(scan_folder, "data/images/3.npy", "not a .npy file", compute=True)


def test_pickled_arrays_are_never_unpickled(scan_folder: Path, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"

    class Bomb:
        def __reduce__(self):
            return (Path.touch, (marker,))

    np.save(scan_folder / "meta" / "trials" / "frame_image_class.npy", np.array([Bomb()] * 24, dtype=object), allow_pickle=True)
    expect(scan_folder, "meta/trials/frame_image_class.npy", "Python objects")
    np.save(scan_folder / "meta" / "trials" / "frame_image_class.npy", np.array(["imagenet"] * 24))
    np.save(scan_folder / "data" / "behavior" / "2.npy", np.array([Bomb()] * 3, dtype=object), allow_pickle=True)
    expect(scan_folder, "data/behavior/2.npy", "Python objects", compute=True)
    assert not marker.exists()


def test_meta_arrays_of_the_wrong_length(scan_folder: Path) -> None:
    np.save(scan_folder / "meta" / "trials" / "tiers.npy", np.array(["train"] * 23))
    expect(scan_folder, "meta/trials/tiers.npy", "one entry per trial (24)", "length 23")
    np.save(scan_folder / "meta" / "trials" / "tiers.npy", np.array(["train"] * 24))
    np.save(scan_folder / "meta" / "neurons" / "area.npy", np.array(["V1"] * 12))
    expect(scan_folder, "meta/neurons/area.npy", "one entry per neuron (13)", "length 12")
    np.save(scan_folder / "meta" / "neurons" / "area.npy", np.array(["V1"] * 13))
    np.save(scan_folder / "meta" / "neurons" / "unit_ids.npy", np.arange(14, dtype=np.uint16))
    expect(scan_folder, "data/responses/0.npy", "14 neurons")


def test_validate_reports_every_problem(untouched: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-q", str(untouched)]) == 0
    assert "ok" in capsys.readouterr().out
    import shutil

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
