"""Every sink under faults and attack: races, kills, full, read-only and overlapping targets, crafted names.

The export is the user's data leaving neuroxr; these tests check the promises of
``formats/_write.py`` through the public writers only: an export never writes outside its target,
never deletes what it did not make, publishes in one rename, lets exactly one of two concurrent
exports win, and leaves nothing a later open or export stumbles on when it is killed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import dask
import h5py
import netCDF4
import numpy as np
import pytest
import xarray as xr

import neuroxr
from neuroxr.errors import DatasetError, SourceOverwriteError, TargetBusyError, TargetExistsError
from conftest import fingerprint, small_filesystem

SMALL = {"n_trials": 40, "n_neurons": 6, "image_shape": (1, 4, 6), "chunk_trials": 10}
WRITERS: dict[str, tuple[Callable[..., Path], str]] = {
    "netcdf": (lambda ds, path, **kw: neuroxr.to_netcdf(ds, path, **kw), ".nc"),
    "zarr": (lambda ds, path, **kw: neuroxr.to_zarr(ds, path, **kw), ".zarr"),
    "nwb": (lambda ds, path, **kw: neuroxr.to_nwb(ds, path, **kw), ".nwb"),
    "folder": (lambda ds, path, **kw: neuroxr.to_folder(ds, path, **kw), ""),
    "zip": (lambda ds, path, **kw: neuroxr.to_folder(ds, path, zip=True, **kw), ".zip"),
}
ENV = {**os.environ, "PYTHONPATH": str(Path(neuroxr.__file__).parent.parent)}


@pytest.fixture
def scan(synthetic) -> xr.Dataset:
    return synthetic(**SMALL)


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def export_files(folder: Path) -> list[str]:
    """The export's own files beside its targets (partial outputs, locks, previous outputs)."""
    return [name for name in entries(folder) if ".neuroxr-" in name]


def with_hook(ds: xr.Dataset, hook: Callable[[], None]) -> xr.Dataset:
    """``ds`` whose responses run ``hook`` once, when their first block is computed (mid-export)."""
    done: list[bool] = []

    def run_once(block: np.ndarray) -> np.ndarray:
        if block.size and not done:  # not on dask's call with an empty block (for the dtype)
            done.append(True)
            hook()
        return block

    return ds.assign(responses=ds.responses.copy(data=ds.responses.data.map_blocks(run_once, dtype=ds.responses.dtype)))


# ----------------------------------------------------------------------------------------------
# races


RACER = """
import sys, time
from pathlib import Path
import numpy as np
import neuroxr
fmt, target, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
ds = neuroxr.make_scan(n_trials=40, n_neurons=6, image_shape=(1, 4, 6), chunk_trials=10)
def slow(block):
    time.sleep(0.15)  # four blocks: the export takes long enough for the other one to start
    return block
ds = ds.assign(responses=ds.responses.copy(data=ds.responses.data.map_blocks(slow, dtype=np.float32)))
while not go.exists():
    time.sleep(0.005)
write = {"netcdf": neuroxr.to_netcdf, "zarr": neuroxr.to_zarr, "folder": neuroxr.to_folder}[fmt]
try:
    write(ds, target)
    print("won")
except neuroxr.NeuroxrError as error:
    print(type(error).__name__, error)
"""


@pytest.mark.parametrize("fmt", ["netcdf", "folder"])  # a file and a folder: the lock and the exclusive rename of each
def test_two_concurrent_exports_to_one_new_target_exactly_one_wins(tmp_path: Path, scan, fmt: str) -> None:
    script = tmp_path / "racer.py"
    script.write_text(textwrap.dedent(RACER))
    target = tmp_path / f"out{WRITERS[fmt][1]}"
    go = tmp_path / "go"
    racers = [
        subprocess.Popen([sys.executable, str(script), fmt, str(target), str(go)], env=ENV, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    time.sleep(1.0)  # both imported and waiting (or close to it)
    go.write_text("go")
    outputs = [racer.communicate(timeout=120)[0].strip() for racer in racers]
    assert sorted(output.split(" ")[0] for output in outputs) in (["TargetBusyError", "won"], ["TargetExistsError", "won"]), outputs
    loser = next(output for output in outputs if output != "won")
    assert str(target) in loser
    back = neuroxr.open(target)
    np.testing.assert_array_equal(back.responses.values, scan.responses.values)
    assert export_files(tmp_path) == []


@pytest.mark.parametrize("fmt", WRITERS)
def test_a_path_the_user_takes_during_the_export_is_left_alone(tmp_path: Path, scan, fmt: str) -> None:
    write, suffix = WRITERS[fmt]
    target = tmp_path / f"out{suffix}"
    users = {"file": lambda: target.write_text("my notes"), "empty folder": lambda: target.mkdir()}
    for what, take in users.items():
        with pytest.raises(TargetExistsError, match="appeared while the export was running"):
            write(with_hook(scan, take), target)
        assert (target.read_text() == "my notes") if what == "file" else (target.is_dir() and not any(target.iterdir()))
        assert entries(tmp_path) == [target.name]
        with contextlib.suppress(NotADirectoryError):
            target.rmdir()
        target.unlink(missing_ok=True)


@pytest.mark.parametrize("fmt", ["zarr", "folder", "netcdf"])
def test_an_overwrite_never_deletes_what_took_the_previous_outputs_place(tmp_path: Path, scan, fmt: str) -> None:
    write, suffix = WRITERS[fmt]
    target = write(scan.isel(trial=slice(0, 10)), tmp_path / f"out{suffix}")

    def replace_with_the_users_work() -> None:
        if target.is_dir():
            import shutil

            shutil.rmtree(target)
        else:
            target.unlink()
        target.mkdir()
        (target / "thesis.tex").write_text("years of work")

    with pytest.raises(TargetExistsError, match="changed while the export was running"):
        write(with_hook(scan, replace_with_the_users_work), target, overwrite=True)
    assert (target / "thesis.tex").read_text() == "years of work"
    assert entries(tmp_path) == [target.name]


def test_an_export_waits_for_no_one_and_says_who_holds_the_target(tmp_path: Path, scan) -> None:
    """While one export runs, a second to the same target fails at once, naming the lock."""
    target = tmp_path / "out.nc"
    seen: list[BaseException] = []

    def second_export() -> None:
        try:
            neuroxr.to_netcdf(scan, target)
        except TargetBusyError as error:
            seen.append(error)

    with dask.config.set(scheduler="synchronous"):
        neuroxr.to_netcdf(with_hook(scan, second_export), target)
    assert len(seen) == 1 and ".out.nc.neuroxr-lock" in str(seen[0]) and "another export" in str(seen[0])
    np.testing.assert_array_equal(neuroxr.open(target).responses.values, scan.responses.values)
    assert entries(tmp_path) == ["out.nc"]


# ----------------------------------------------------------------------------------------------
# kills


KILLED = """
import sys, time
from pathlib import Path
import dask, numpy as np
import neuroxr
fmt, target, marker = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
ds = neuroxr.make_scan(n_trials=40, n_neurons=6, image_shape=(1, 4, 6), chunk_trials=10)
calls = []
def hang_in_the_second_block(block):
    if not block.size:  # dask's call for the dtype
        return block
    if calls:
        marker.write_text("writing")
        time.sleep(120)
    calls.append(1)
    return block
ds = ds.assign(responses=ds.responses.copy(data=ds.responses.data.map_blocks(hang_in_the_second_block, dtype=np.float32)))
write = {"netcdf": neuroxr.to_netcdf, "zarr": neuroxr.to_zarr, "nwb": neuroxr.to_nwb, "folder": neuroxr.to_folder,
         "zip": lambda ds, path: neuroxr.to_folder(ds, path, zip=True)}[fmt]
with dask.config.set(scheduler="synchronous"):
    write(ds, target)
"""


def test_killed_exports_leave_nothing_discovery_sees_and_the_next_export_cleans_up(tmp_path: Path, scan) -> None:
    """SIGKILL an export of every kind mid-write, in a folder that also holds a complete scan."""
    folder = tmp_path / "release"
    folder.mkdir()
    complete = neuroxr.write_scan(folder / "static30002-4-5-GrayImageNet-0123", scan="30002-4-5", n_trials=20, n_neurons=4)
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(KILLED))
    runs = {fmt: (folder / f"out-{fmt}{suffix}", tmp_path / f"marker-{fmt}") for fmt, (_, suffix) in WRITERS.items()}
    processes = {
        fmt: subprocess.Popen([sys.executable, str(script), fmt, str(target), str(marker)], env=ENV)
        for fmt, (target, marker) in runs.items()
    }
    try:
        deadline = time.monotonic() + 120
        for fmt, (_, marker) in runs.items():
            while not marker.exists() and processes[fmt].poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert marker.exists(), f"the {fmt} export never started writing"
            processes[fmt].send_signal(signal.SIGKILL)
            processes[fmt].wait(timeout=30)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
    leftovers = export_files(folder)
    for fmt, (target, _) in runs.items():
        assert not target.exists()
        assert any(name.startswith(f".{target.name}.neuroxr-partial-") for name in leftovers), (fmt, leftovers)
    partial_scan = next(folder.glob(".out-folder.neuroxr-partial-*"))
    assert (partial_scan / "data").is_dir() and (partial_scan / "meta").is_dir()  # it looks like a scan

    # discovery sees only the complete scan: the partial scan folder (data/ + meta/) is not a scan
    assert neuroxr.open(folder).attrs["scan"] == "30002-4-5"
    assert list(neuroxr.open_datatree(folder).children) == ["30002-4-5"]
    info = subprocess.run([sys.executable, "-m", "neuroxr.cli", "info", str(folder)], env=ENV, capture_output=True, text=True)
    assert info.returncode == 0 and "30002-4-5" in info.stdout and "Traceback" not in info.stderr

    # the next export to each target removes what the killed one left, and nothing else
    before = fingerprint(complete)
    for fmt, (target, _) in runs.items():
        WRITERS[fmt][0](scan, target)
    assert export_files(folder) == []
    assert fingerprint(complete) == before
    np.testing.assert_array_equal(neuroxr.open(runs["folder"][0]).responses.values, scan.responses.values)


def test_a_previous_output_set_aside_by_a_killed_overwrite_is_put_back(tmp_path: Path, scan) -> None:
    """Where the system cannot swap two folders, an overwrite moves the old one aside for an instant;
    killed then, the old output is recovered by the next export to that target."""
    store = neuroxr.to_zarr(scan.isel(trial=slice(0, 10)), tmp_path / "out.zarr")
    aside = tmp_path / ".out.zarr.neuroxr-previous-0badc0de"
    store.rename(aside)  # the state such a killed overwrite leaves: no target, the old one aside
    with pytest.raises(TargetExistsError, match="overwrite=True"):
        neuroxr.to_zarr(scan, store)  # the old store is back first, so this is an overwrite
    assert neuroxr.open(store).sizes["trial"] == 10 and entries(tmp_path) == ["out.zarr"]


# ----------------------------------------------------------------------------------------------
# full, read-only and overlapping targets


FILLER = """
import sys
import neuroxr
fmt, target = sys.argv[1], sys.argv[2]
big = neuroxr.make_scan(n_trials=40, n_neurons=2000, image_shape=(1, 36, 64), chunk_trials=10)  # ~1 MB of data
compressed = {"netcdf": "zlib", "zarr": "zstd", "nwb": "gzip", "zip": "deflated"}  # no free-space check first
write = {"netcdf": neuroxr.to_netcdf, "zarr": neuroxr.to_zarr, "nwb": neuroxr.to_nwb, "folder": neuroxr.to_folder,
         "zip": lambda ds, path, **kw: neuroxr.to_folder(ds, path, zip=True, **kw)}[fmt]
try:
    write(big, target, **({"compression": compressed[fmt]} if fmt in compressed else {}))
except OSError as error:
    print(error.errno, error)
"""


def test_a_device_that_fills_up_mid_write_leaves_nothing(tmp_path: Path) -> None:
    """Each export in its own process (HDF5 is not always usable again in a process after ENOSPC)."""
    script = tmp_path / "filler.py"
    script.write_text(textwrap.dedent(FILLER))
    with small_filesystem(tmp_path / "small", "256k") as small:
        (small / "keep.txt").write_text("mine")
        targets = {fmt: small / f"out{suffix}" for fmt, (_, suffix) in WRITERS.items()}
        runs = {
            fmt: subprocess.Popen([sys.executable, str(script), fmt, str(target)], env=ENV, stdout=subprocess.PIPE, text=True)
            for fmt, target in targets.items()
        }
        for fmt, run in runs.items():
            output = run.communicate(timeout=120)[0].strip()
            assert output.startswith("28 ") and str(targets[fmt]) in output, (fmt, output)
            assert "no space left" in output or "not enough space" in output, (fmt, output)
        assert entries(small) == ["keep.txt"]


NEARLY_FULL = """
import os, shutil, sys
from pathlib import Path
import neuroxr
device = Path(sys.argv[1])
scan = neuroxr.make_scan(n_trials=40, n_neurons=2000, image_shape=(1, 36, 64), chunk_trials=10)
scan = scan.isel(trial=scan.trial.values.argsort()[::-1])  # out of presentation order: spilled first
for free in map(int, sys.argv[2:]):
    with open(device / "fill", "wb") as fill:
        fill.write(bytes(shutil.disk_usage(device).free - free))
    try:
        neuroxr.to_nwb(scan, device / "out.nwb", compression="gzip")
        print("ok", sorted(os.listdir(device)), flush=True)
    except OSError as error:
        print(error.errno, error, sorted(os.listdir(device)), flush=True)
    for name in os.listdir(device):
        os.remove(device / name)
"""


def test_a_compressed_nwb_export_never_meets_a_full_disk_half_way(tmp_path: Path) -> None:
    """HDF5 does not survive a full disk in the middle of a write (the process may crash closing the
    file), so the free-space check must bound what the export writes, scratch files included, whatever
    the compression: at every free space the export is written or refused before it starts."""
    script = tmp_path / "nearly_full.py"
    script.write_text(textwrap.dedent(NEARLY_FULL))
    with small_filesystem(tmp_path / "small", "8m") as small:
        sizes = [100_000 * k for k in (3, 6, 9, 12, 15, 18, 21, 24, 30)]
        run = subprocess.run([sys.executable, str(script), str(small), *map(str, sizes)], env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert len(lines) == len(sizes), run.stdout
    for line in lines:
        written = line == "ok ['fill', 'out.nwb']"
        refused = line.startswith("28 ") and "not enough space: the export needs about" in line and line.endswith("['fill']")
        assert written or refused, line
    assert lines[-1].startswith("ok") and lines[0].startswith("28 "), lines


def test_a_device_that_is_already_full_is_named_by_every_export(tmp_path: Path, scan) -> None:
    """Not one block free: the first write of an export (its lock file) already fails, and says where."""
    with small_filesystem(tmp_path / "full", "64k") as full:
        (full / "keep.txt").write_text("mine")
        with contextlib.suppress(OSError), (full / "filler").open("wb") as filler:
            while True:
                filler.write(b"\0" * 4096)
                filler.flush()
        for fmt, (write, suffix) in WRITERS.items():
            target = full / f"out{suffix}"
            with pytest.raises(OSError) as caught:
                write(scan.isel(trial=slice(0, 5)), target)
            assert caught.value.errno == errno.ENOSPC and str(target) in str(caught.value), (fmt, caught.value)
        assert entries(full) == ["filler", "keep.txt"]


def test_a_read_only_target_is_one_clear_error(tmp_path: Path, scan) -> None:
    with small_filesystem(tmp_path / "ro", "1m", read_only=True) as read_only:
        for fmt, (write, suffix) in WRITERS.items():
            with pytest.raises(OSError, match="not writable|Read-only") as caught:
                write(scan, read_only / f"out{suffix}")
            assert str(read_only) in str(caught.value), fmt


@pytest.mark.parametrize("fmt", ["netcdf", "zarr", "nwb", "folder"])
def test_overlapping_source_and_target_are_refused_after_where_and_merge(tmp_path: Path, scan, fmt: str) -> None:
    write, suffix = WRITERS[fmt]
    source = write(scan, tmp_path / f"source{suffix}")
    before = fingerprint(tmp_path) if source.is_dir() else source.read_bytes()
    opened = neuroxr.open(source)
    for ds in (opened, opened.where(opened.responses >= 0), xr.merge([opened.responses, opened.behavior])):
        for target in (source, source / "inside.zarr", tmp_path):  # the same, inside it, holding it
            with pytest.raises(SourceOverwriteError, match="refusing to write over the data being exported"):
                neuroxr.to_zarr(ds, target, overwrite=True)
    assert (fingerprint(tmp_path) if source.is_dir() else source.read_bytes()) == before


# ----------------------------------------------------------------------------------------------
# crafted files: names that try to leave the target


def _crafted(scan: xr.Dataset, how: str) -> xr.Dataset:
    ds = scan.copy()
    if how == "sensorium_file":
        for name in ("tier", "area", "cell_motor_coordinates"):
            ds[name].attrs["sensorium_file"] = f"../../../escaped-{name}.npy"
        ds["responses"].attrs["sensorium_file"] = "/tmp/escaped-responses"
        ds["responses_statistics"].attrs["sensorium_file"] = "../../escaped-statistics"
        ds.attrs["release_name"] = "../../escaped"
    elif how == "subset label":
        ds = ds.assign_coords(subset=["all", "../../../escaped"])
    elif how == "statistic label":
        ds = ds.assign_coords(statistic=["mean", "/tmp/escaped", "min", "max", "median"])
    elif how == "coordinate name":
        ds = ds.rename({"condition_hash": "../../escaped"})
    return ds


CRAFTED = ["sensorium_file", "subset label", "statistic label", "coordinate name"]


@pytest.mark.parametrize("carrier", ["netcdf", "zarr", "nwb"])
@pytest.mark.parametrize("how", CRAFTED)
def test_crafted_files_never_write_outside_the_target(tmp_path: Path, scan, carrier: str, how: str) -> None:
    """A crafted NetCDF/Zarr/NWB file, converted to the release layout, writes inside the target or nowhere."""
    write, suffix = WRITERS[carrier]
    if how == "coordinate name":  # each format carries what its names allow
        if carrier == "netcdf":
            with pytest.raises(ValueError, match="not allowed"):  # netCDF names cannot hold '/' (nor '.' first)
                write(_crafted(scan, how), tmp_path / f"crafted{suffix}")
            return
        path = write(scan, tmp_path / f"crafted{suffix}")
        if carrier == "nwb":
            _rename_in_nwb_mapping(path, "condition_hash", "../../escaped")
        else:  # Zarr refuses '..' as a name but takes a hidden one
            path = neuroxr.to_zarr(neuroxr.open(path).rename({"condition_hash": ".escaped"}), tmp_path / "hidden.zarr")
    else:
        path = write(_crafted(scan, how), tmp_path / f"crafted{suffix}")
    opened = neuroxr.open(path)
    work = tmp_path / "deep" / "er"
    work.mkdir(parents=True)
    before = sorted(str(p) for p in Path("/tmp").glob("escaped*")) + sorted(str(p) for p in tmp_path.rglob("escaped*"))
    for as_zip in (False, True):
        target = work / ("out.zip" if as_zip else "out")
        try:
            neuroxr.to_folder(opened, target, zip=as_zip)
        except DatasetError as error:
            assert "cannot name a file inside the target" in str(error)
            assert not target.exists()
            continue
        assert how == "sensorium_file"  # attributes are not names: the export goes ahead, inside
        if as_zip:
            with zipfile.ZipFile(target) as archive:
                names = archive.namelist()
            assert all(not name.startswith("/") and ".." not in name.split("/") for name in names)
            assert {name.split("/")[0] for name in names} == {"out"}
        else:
            assert all(p.resolve().is_relative_to(target.resolve()) for p in target.rglob("*"))
            assert (target / "meta/trials/tiers.npy").is_file() and (target / "meta/statistics/responses/all/mean.npy").is_file()
    after = sorted(str(p) for p in Path("/tmp").glob("escaped*")) + sorted(str(p) for p in tmp_path.rglob("escaped*"))
    assert after == before == []


def _rename_in_nwb_mapping(path: Path, old: str, new: str) -> None:
    """Rename a variable in the mapping document an NWB file carries (what a crafted file could say)."""
    with h5py.File(path, "r+") as file:
        document = json.loads(file["general/neuroxr_layout/document"][()])
        file["general/neuroxr_layout/document"][()] = json.dumps(document).replace(f'"{old}"', f'"{new}"')


def test_crafted_tree_names_never_name_files_outside_an_nwb_folder(tmp_path: Path, scan) -> None:
    tree = xr.DataTree.from_dict({"/": xr.Dataset(), "/..": scan})
    with pytest.raises(DatasetError, match="cannot name a file inside the target"):
        neuroxr.to_nwb(tree, tmp_path / "out")
    assert entries(tmp_path) == []


def test_netcdf_attributes_alone_do_not_change_where_files_go(tmp_path: Path, scan) -> None:
    """The same crafted attributes written with the netCDF4 library directly, not by neuroxr."""
    path = neuroxr.to_netcdf(scan, tmp_path / "plain.nc")
    with netCDF4.Dataset(path, "a") as file:
        file["tier"].sensorium_file = "../../../escaped.npy"
        file.release_name = "/tmp/escaped"
    out = neuroxr.to_folder(neuroxr.open(path), tmp_path / "out")
    assert (out / "meta/trials/tiers.npy").is_file()
    assert not list(Path("/tmp").glob("escaped*")) and not list(tmp_path.rglob("escaped*"))
