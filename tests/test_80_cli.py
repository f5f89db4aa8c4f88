"""neuroxr.cli: the neuroxr command, run in-process and once as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import fingerprint

import numpy as np
import pytest
import xarray as xr

import neuroxr
from neuroxr.cli import main


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("demo")
    assert main(["demo", str(target), "--trials", "200", "--neurons", "40"]) == 0
    return target


def test_demo_writes_a_folder_and_a_zip_that_open_identically(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folders = [p for p in demo.iterdir() if p.is_dir()]
    archives = list(demo.glob("*.zip"))
    assert len(folders) == 1 and len(archives) == 1
    assert archives[0].stem == folders[0].name
    xr.testing.assert_identical(neuroxr.open_scan(folders[0]).load(), neuroxr.open_scan(archives[0]).load())


def test_demo_prints_what_a_new_user_needs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", str(tmp_path), "--trials", "120", "--neurons", "20", "--competition"]) == 0
    out = capsys.readouterr().out
    for expected in ("neuroxr.open_scan(", "trials             120", "tiers", "withheld           responses of", "Data variables"):
        assert expected in out


def test_info(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = next(demo.glob("*.zip"))
    assert main(["info", str(archive)]) == 0
    out = capsys.readouterr().out
    ds = neuroxr.open_scan(archive)
    assert f"trials             {ds.sizes['trial']}" in out
    assert f"train {int((ds.tier == 'train').sum())}" in out
    assert "neurons per area   V1" in out and "neurons per layer" in out
    assert "withheld           nothing" in out


def test_validate_and_errors(demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-q", str(next(demo.glob("*.zip")))]) == 0
    assert ": ok" in capsys.readouterr().out
    assert main(["validate", "-q", str(tmp_path)]) == 1
    assert "not a Sensorium scan" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "missing")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_validate_progress_counts_every_file_it_reads(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = next(p for p in demo.iterdir() if p.is_dir())
    files = len(list((folder / "data").glob("*/*.npy"))) + len(list((folder / "meta" / "statistics").rglob("*.npy")))
    assert main(["validate", str(folder)]) == 0
    assert f"{files}/{files}" in capsys.readouterr().err


def test_convert_to_the_release_layout_and_zip(demo: Path, tmp_path: Path) -> None:
    folder = next(p for p in demo.iterdir() if p.is_dir())
    assert main(["convert", "-q", str(folder), str(tmp_path / "copy.zip")]) == 0
    assert main(["convert", "-q", str(tmp_path / "copy.zip"), str(tmp_path / "copy")]) == 0
    original, copy = neuroxr.open_scan(folder).load(), neuroxr.open_scan(tmp_path / "copy").load()
    assert copy.attrs.pop("release_name") == "copy"  # a scan folder's name is its release name
    original.attrs.pop("release_name")
    xr.testing.assert_identical(original, copy)
    assert main(["convert", "-q", str(folder), str(tmp_path / "copy")]) == 2  # exists: refused
    assert main(["convert", "-q", "--overwrite", str(folder), str(tmp_path / "copy")]) == 0


def test_plot_writes_a_png(demo: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    target = tmp_path / "summary.png"
    assert main(["plot", str(next(demo.glob("*.zip"))), "-o", str(target)]) == 0
    header = target.read_bytes()[:8]
    assert header == b"\x89PNG\r\n\x1a\n" and target.stat().st_size > 20_000


def test_console_script_runs(demo: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "neuroxr.cli", "info", str(next(demo.glob("*.zip")))], capture_output=True, text=True, check=True
    )
    assert "neurons per layer" in done.stdout
    assert "neurons per area" in done.stdout and done.stderr == ""


def test_convert_a_folder_of_scans_to_one_netcdf(release: Path, tmp_path: Path) -> None:
    assert main(["convert", "-q", str(release), str(tmp_path / "all.nc")]) == 0
    tree = xr.open_datatree(tmp_path / "all.nc")
    assert sorted(tree.children) == ["21067-10-18", "26872-17-20"]
    original = neuroxr.open_scan(release / "static26872-17-20.zip").responses.values
    np.testing.assert_array_equal(tree["26872-17-20"].responses.values, original)


def test_convert_a_folder_of_scans_to_nwb_files(release: Path, tmp_path: Path) -> None:
    assert main(["convert", "-q", str(release), str(tmp_path / "nwb"), "--to", "nwb"]) == 0
    assert sorted(p.name for p in (tmp_path / "nwb").iterdir()) == ["21067-10-18.nwb", "26872-17-20.nwb"]
    tree = neuroxr.open(tmp_path / "nwb")
    assert isinstance(tree, xr.DataTree) and sorted(tree.children) == ["21067-10-18", "26872-17-20"]
    source = neuroxr.open_scan(release / "static26872-17-20.zip")
    xr.testing.assert_identical(tree["26872-17-20"].to_dataset().load(), source.load())


def test_a_missing_extra_is_one_line_naming_what_to_install(
    shared_scan: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "zarr", None)  # as if zarr were not installed
    assert main(["convert", str(shared_scan), str(tmp_path / "x.zarr")]) != 0
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert "pip install 'neuroxr[zarr]'" in lines[0] and "Traceback" not in captured.err
    assert not (tmp_path / "x.zarr").exists() and list(tmp_path.iterdir()) == []


def test_convert_refuses_what_it_cannot_tell(shared_scan: Path, release: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="cannot tell the format .*--to"):
        main(["convert", str(shared_scan), str(tmp_path / "x.csv")])
    with pytest.raises(SystemExit, match="takes one scan"):
        main(["convert", "-q", str(release), str(tmp_path / "all.zip")])
    assert list(tmp_path.iterdir()) == []


def test_the_video_demo_info_validate_plot_and_convert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video_demo = tmp_path / "demo"
    assert main(["demo", str(video_demo), "--dynamic", "--competition", "--trials", "60", "--neurons", "20"]) == 0
    archive = next(video_demo.glob("*.zip"))
    folder = next(p for p in video_demo.iterdir() if p.is_dir())
    assert archive.stem == folder.name and folder.name.startswith("dynamic30001-2-3-Video-")
    ds = neuroxr.open_scan(archive)
    xr.testing.assert_identical(ds.load(), neuroxr.open_scan(folder).load())
    out = capsys.readouterr().out
    assert 'ds.responses.sel(trial=ds.tier == "oracle").mean("trial")' in out and "20 neurons x 90 frames" in out
    assert main(["info", str(archive)]) == 0
    out = capsys.readouterr().out
    lengths = ds.n_frames.values
    assert "frames             90 per trial as stored (padded), 30 Hz (3.0 s)" in out
    assert f"trial lengths      {lengths.min()}-{lengths.max()} frames" in out and "live_test_main" in out
    assert main(["validate", "-q", str(archive)]) == 0
    assert f"a dynamic scan, 240 trial files in 4 variables, {lengths.min()}-{lengths.max()} frames per trial" in capsys.readouterr().out
    assert main(["convert", "-q", str(archive), str(tmp_path / "scan.zarr")]) == 0
    xr.testing.assert_identical(neuroxr.open(tmp_path / "scan.zarr").load(), ds.load())
    assert main(["convert", "-q", str(archive), str(tmp_path / "copy")]) == 0
    assert fingerprint(tmp_path / "copy") == fingerprint(folder)  # the release layout again, byte for byte
    assert main(["convert", "-q", str(archive), str(tmp_path / "scan.nwb")]) == 0
    xr.testing.assert_identical(neuroxr.open(tmp_path / "scan.nwb").load(), ds.load())
    pytest.importorskip("matplotlib")
    assert main(["plot", str(archive), "-o", str(tmp_path / "video.png")]) == 0
    assert (tmp_path / "video.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_validate_a_broken_video_scan(dynamic_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(dynamic_folder / "data" / "videos" / "3.npy", np.zeros((4, 6, 11), np.float32))
    (dynamic_folder / "data" / "responses" / "5.npy").unlink()
    np.save(dynamic_folder / "meta" / "trials" / "tiers.npy", np.array(["train"] * 20))
    assert main(["validate", "-q", str(dynamic_folder)]) == 1
    out = capsys.readouterr().out
    assert "data/responses: trial files must be numbered 0..19 without gaps; 5.npy is missing" in out
    assert "meta/trials/tiers.npy: expected one entry per trial (21), found length 20" in out
    assert "data/videos/3.npy: holds float32 (4, 6, 11), expected float32 (4, 6, 12)" in out
    assert "3 problems" in out


# ----------------------------------------------------------------------------------------------
# errors: one line, a non-zero status, never a traceback


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("neuroxr: ") and "Traceback" not in captured.err, captured.err
    return lines[0]


def test_export_refusals_are_one_line_in_the_commands_terms(
    shared_scan: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "scan.nc"
    assert main(["convert", "-q", str(shared_scan), str(target)]) == 0
    capsys.readouterr()
    assert main(["convert", "-q", str(shared_scan), str(target)]) == 2
    line = one_error_line(capsys)
    assert "already exists; use --overwrite to replace it" in line and "overwrite=True" not in line
    assert main(["convert", "-q", str(target), str(target), "--overwrite"]) == 2  # its own source
    assert "refusing to write over the data being exported" in one_error_line(capsys)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("x")
    assert main(["convert", "-q", str(shared_scan), str(tmp_path / "mine"), "--to", "zarr", "--overwrite"]) == 2
    line = one_error_line(capsys)
    assert "not a Zarr store" in line and "--overwrite" not in line.split("not a Zarr store")[1]
    assert (tmp_path / "mine" / "thesis.tex").exists()


def test_a_full_disk_is_one_line_from_the_real_command(tmp_path: Path) -> None:
    from conftest import small_filesystem

    scan = neuroxr.write_scan(tmp_path / "scan", n_trials=40, n_neurons=2000, image_shape=(1, 36, 64))  # ~0.7 MB
    with small_filesystem(tmp_path / "small", "128k") as small:
        for target in (small / "scan.nc", small / "scan.nwb", small / "scan.zip"):
            run = subprocess.run(
                [sys.executable, "-m", "neuroxr.cli", "convert", "-q", str(scan), str(target)],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert run.returncode == 2, run.stderr
            assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, run.stderr
            assert str(target) in run.stderr and ("no space left" in run.stderr or "not enough space" in run.stderr)
        assert list(small.iterdir()) == []


def test_an_unexpected_error_is_one_line_and_a_debug_variable_shows_the_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "broken.nc"
    broken.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)  # an HDF5 signature and nothing else
    assert main(["info", str(broken)]) in (2, 3)
    assert "broken.nc" in one_error_line(capsys)
    monkeypatch.setenv("NEUROXR_DEBUG", "1")
    assert main(["info", str(broken)]) in (2, 3)
    assert "Traceback" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# the command itself: --version, storage options, a closed pipe, one progress display


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0 and capsys.readouterr().out.strip() == f"neuroxr {neuroxr.__version__}"


def test_storage_options_reach_the_remote_reader(shared_scan: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("aiohttp")
    from conftest import zip_scan
    from test_25_remote import serve

    zip_scan(shared_scan, tmp_path / "scan.zip")
    server, _ = serve(tmp_path, {"mode": "stall", "seconds": 3})
    url = f"http://127.0.0.1:{server.server_address[1]}/scan.zip"
    try:
        status = main(["info", url, "--storage-option", "timeout=0.3", "--storage-option", "retries=0"])
        # the server stalls 3 s and then drops the connection: only the 0.3 s timeout makes it "timed out"
        assert status == 2 and "timed out after 0.3 s (1 try)" in one_error_line(capsys)
    finally:
        server.shutdown()
        server.server_close()
    assert main(["info", str(shared_scan), "--anon"]) == 2
    assert "apply to URLs" in one_error_line(capsys)
    assert main(["validate", "-q", str(shared_scan), "--storage-option", "no-equals-sign"]) == 2
    assert "expected KEY=VALUE" in one_error_line(capsys)


def test_a_closed_pipe_ends_the_command_quietly(release: Path) -> None:
    read, write = os.pipe()
    os.close(read)  # the reader (``| head``) is gone before anything is written
    try:
        run = subprocess.run([sys.executable, "-m", "neuroxr.cli", "info", str(release)], stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert run.returncode == 1 and run.stderr == "", run.stderr


def test_an_nwb_export_shows_one_progress_display(shared_scan: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", str(shared_scan), str(tmp_path / "scan.nwb")]) == 0
    err = capsys.readouterr().err
    assert "writing scan.nwb" in err and "nwb: images" not in err and "nwb: responses" not in err  # no per-stage bars
    descriptions = {part.split(":")[0].strip() for part in err.replace("\r", "\n").splitlines() if "%" in part}
    assert descriptions == {"writing scan.nwb"}, descriptions
