"""Benchmark: converting a release-size scan to NetCDF and Zarr, beside a plain numpy baseline.

Two measurements:

``convert`` (default)
    For each scan size, a synthetic scan (``make_scan(preset="release", n_trials=N)``) is written in
    the release layout with ``to_folder``, then converted in a fresh subprocess per measurement:

    - neuroxr: ``open_scan(folder)`` then ``to_netcdf`` / ``to_zarr`` (default compression of each);
    - baseline: a plain ``np.load`` loop over the same files, one preallocated block of trials at a
      time, written with ``netCDF4`` / ``zarr`` directly with the same chunks and compression.

    Reported: seconds (including fsync of the output), throughput (data bytes / s), the ratio of
    neuroxr's throughput to the baseline's, and the peak RSS of the subprocess. With ``--cold`` the
    page cache is dropped before each run (needs root); otherwise the input files are warm.

``compression``
    A release-size block of trials is generated into memory, then written with every compression
    setting of both formats. Reported: write throughput including fsync, CPU seconds per GB written
    (all threads; steadier than wall time on a shared machine), size ratio per variable, warm
    read-back throughput. The defaults of ``to_netcdf``/``to_zarr`` were chosen from this table.

Usage::

    python benchmarks/bench_convert.py convert --trials 3500 7000 [--workdir DIR] [--repeats 2] [--cold]
    python benchmarks/bench_convert.py compression [--trials 1365]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DATA_VARIABLES = ("images", "responses", "behavior", "pupil_center")
DIMS = {
    "images": ("channel", "y", "x"),
    "responses": ("neuron",),
    "behavior": ("behavior_variable",),
    "pupil_center": ("pupil_axis",),
}


# ----------------------------------------------------------------------------------------------
# helpers


def fsync_tree(path: Path) -> None:
    """Flush a file, or every file of a folder, to the disk."""
    paths = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for file in paths:
        descriptor = os.open(file, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def size_of(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def drop_caches() -> bool:
    """Drop the page cache (needs root); True when done."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM; ru_maxrss would carry the parent's over fork+exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB; macOS: bytes


# ----------------------------------------------------------------------------------------------
# one measurement, run in its own subprocess


def run_neuroxr(kind: str, folder: str, target: str) -> None:
    import neuroxr

    ds = neuroxr.open_scan(folder)
    if kind == "netcdf":
        neuroxr.to_netcdf(ds, target)
    else:
        neuroxr.to_zarr(ds, target)


def _blocks(folder: Path, name: str, n_trials: int, block: int):
    """Yield (start, array) blocks of one variable read with a plain np.load loop."""
    first = np.load(folder / "data" / name / "0.npy")
    for start in range(0, n_trials, block):
        stop = min(start + block, n_trials)
        values = np.empty((stop - start, *first.shape), dtype=first.dtype)
        for i in range(start, stop):
            values[i - start] = np.load(folder / "data" / name / f"{i}.npy")
        yield start, values


def run_baseline(kind: str, folder_text: str, target: str, block: int) -> None:
    folder = Path(folder_text)
    n_trials = len(list((folder / "data" / "responses").glob("*.npy")))
    shapes = {name: np.load(folder / "data" / name / "0.npy") for name in DATA_VARIABLES}
    if kind == "netcdf":
        import netCDF4

        from neuroxr.formats.netcdf import DEFAULT_COMPRESSION, compression_encoding

        keys = compression_encoding(DEFAULT_COMPRESSION, "netcdf4")
        with netCDF4.Dataset(target, "w", format="NETCDF4") as nc:
            nc.createDimension("trial", n_trials)
            for name, first in shapes.items():
                for dim, size in zip(DIMS[name], first.shape):
                    if dim not in nc.dimensions:
                        nc.createDimension(dim, size)
            for name, first in shapes.items():
                chunks = (min(block, n_trials), *first.shape)
                variable = nc.createVariable(name, first.dtype, ("trial", *DIMS[name]), chunksizes=chunks, **keys)
                for start, values in _blocks(folder, name, n_trials, block):
                    variable[start : start + len(values)] = values
    else:
        import zarr

        from neuroxr.formats.zarr import DEFAULT_COMPRESSION, compressors

        root = zarr.open_group(target, mode="w-", zarr_format=3)
        for name, first in shapes.items():
            array = root.create_array(
                name,
                shape=(n_trials, *first.shape),
                chunks=(min(block, n_trials), *first.shape),
                dtype=first.dtype,
                compressors=compressors(DEFAULT_COMPRESSION),
                dimension_names=("trial", *DIMS[name]),
            )
            for start, values in _blocks(folder, name, n_trials, block):
                array[start : start + len(values)] = values
        zarr.consolidate_metadata(target)


def child(argv: list[str]) -> None:
    """Entry of the measurement subprocess: prints one JSON line."""
    import warnings

    warnings.simplefilter("ignore")  # the baseline's zarr consolidated-metadata warning
    who, kind, folder, target, block = argv
    if who == "neuroxr":
        import neuroxr  # noqa: F401  (import outside the clock for both sides)
        import neuroxr.formats.netcdf  # noqa: F401
        import neuroxr.formats.zarr  # noqa: F401
    else:
        import neuroxr.formats.netcdf  # noqa: F401
        import neuroxr.formats.zarr  # noqa: F401
    import netCDF4  # noqa: F401
    import zarr  # noqa: F401

    start = time.perf_counter()
    if who == "neuroxr":
        run_neuroxr(kind, folder, target)
    else:
        run_baseline(kind, folder, target, int(block))
    fsync_tree(Path(target))
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "output_bytes": size_of(Path(target))}))


def measure(who: str, kind: str, folder: Path, target: Path, block: int, cold: bool) -> dict[str, Any]:
    cold = cold and drop_caches()
    result = subprocess.run(
        [sys.executable, __file__, "_child", who, kind, str(folder), str(target), str(block)],
        check=True,
        capture_output=True,
        text=True,
    )
    shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
    return {**json.loads(result.stdout.strip().splitlines()[-1]), "cold": cold}


# ----------------------------------------------------------------------------------------------
# convert


def convert(sizes: list[int], workdir: Path, repeats: int, cold: bool) -> None:
    import neuroxr
    from neuroxr.formats.release import to_folder

    print(f"# convert: cpus={os.cpu_count()}, workdir={workdir}")
    print("| trials | data GB | format | neuroxr s | baseline s | neuroxr MB/s | baseline MB/s | ratio | neuroxr peak RSS MB | baseline peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n_trials in sizes:
        folder = workdir / f"scan-{n_trials}"
        if not folder.exists():
            to_folder(neuroxr.make_scan(preset="release", n_trials=n_trials), folder)
        ds = neuroxr.open_scan(folder)
        data_bytes = sum(ds[name].nbytes for name in DATA_VARIABLES)
        block = int(ds.images.chunks[0][0])
        for kind, suffix in (("netcdf", ".nc"), ("zarr", ".zarr")):
            runs: dict[str, list[dict[str, Any]]] = {"neuroxr": [], "baseline": []}
            for _ in range(repeats):
                for who in ("baseline", "neuroxr"):
                    runs[who].append(measure(who, kind, folder, workdir / f"out-{who}{suffix}", block, cold))
            ours = statistics.median(r["seconds"] for r in runs["neuroxr"])
            base = statistics.median(r["seconds"] for r in runs["baseline"])
            rss_ours = max(r["peak_rss_mb"] for r in runs["neuroxr"])
            rss_base = max(r["peak_rss_mb"] for r in runs["baseline"])
            print(
                f"| {n_trials} | {data_bytes / 1e9:.2f} | {kind} | {ours:.1f} | {base:.1f} | "
                f"{data_bytes / ours / 1e6:.0f} | {data_bytes / base / 1e6:.0f} | {base / ours:.2f} | "
                f"{rss_ours:.0f} | {rss_base:.0f} |",
                flush=True,
            )
    state = "cold (dropped before each run)" if cold and os.geteuid() == 0 else "warm"
    print(f"(page cache: {state}; median of {repeats} runs; ratio = baseline s / neuroxr s)")


# ----------------------------------------------------------------------------------------------
# compression


NETCDF_SETTINGS: list[tuple[str, Any]] = [
    ("none", None),
    ("zlib:1, no shuffle", {"compression": "zlib", "complevel": 1, "shuffle": False}),
    ("zlib:1 + shuffle", "zlib:1"),
    ("zlib:4 + shuffle", "zlib:4"),
    ("zstd:1", "zstd:1"),
    ("zstd:3", "zstd:3"),
]


def _zarr_settings() -> list[tuple[str, Any]]:
    from zarr.codecs import BloscCodec, BloscShuffle

    return [
        ("none", None),
        ("zstd:0 (zarr's default)", "zstd:0"),
        ("zstd:1", "zstd:1"),
        ("zstd:3", "zstd:3"),
        ("gzip:1", "gzip:1"),
        ("blosc_lz4:5, no shuffle", [BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.noshuffle)]),
        ("blosc_lz4:5 + shuffle", "blosc_lz4"),
        ("blosc_zstd:1 + shuffle", "blosc_zstd"),
    ]


def _variable_sizes(kind: str, path: Path) -> dict[str, int]:
    if kind == "zarr":
        return {name: size_of(path / name) for name in ("images", "responses")}
    import h5py

    with h5py.File(path) as file:
        return {name: file[name].id.get_storage_size() for name in ("images", "responses")}


def compression(n_trials: int, workdir: Path, repeats: int) -> None:
    import neuroxr
    from neuroxr.formats.netcdf import open_netcdf, to_netcdf
    from neuroxr.formats.zarr import open_zarr, to_zarr

    source = neuroxr.make_scan(preset="release", n_trials=n_trials)
    block = int(source.images.chunks[0][0])
    ds = source.compute().chunk({"trial": block})
    raw = {name: ds[name].nbytes for name in ("images", "responses")}
    total = sum(ds[name].nbytes for name in DATA_VARIABLES)
    print(f"# compression: {n_trials} trials x (images 1x144x256 + 8000 responses), {total / 1e6:.0f} MB, chunks of {block} trials")
    print("| format | compression | write MB/s (incl. fsync) | write CPU s/GB | size ratio images | size ratio responses | read MB/s (warm) |")
    print("|---|---|---|---|---|---|---|")
    formats = [("netcdf", NETCDF_SETTINGS, to_netcdf, open_netcdf, ".nc"), ("zarr", _zarr_settings(), to_zarr, open_zarr, ".zarr")]
    for kind, settings, write, read, suffix in formats:
        for label, spec in settings:
            target = workdir / f"compression{suffix}"
            writes, cpu, reads = [], [], []
            for _ in range(repeats):
                if target.exists():
                    shutil.rmtree(target) if target.is_dir() else target.unlink()
                os.sync()
                start, start_cpu = time.perf_counter(), time.process_time()
                write(ds, target, compression=spec)
                fsync_tree(target)
                writes.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
                start = time.perf_counter()
                back = read(target)
                for name in DATA_VARIABLES:
                    back[name].values  # noqa: B018
                reads.append(time.perf_counter() - start)
            sizes = _variable_sizes(kind, target)
            print(
                f"| {kind} | {label} | {total / statistics.median(writes) / 1e6:.0f} | "
                f"{statistics.median(cpu) / (total / 1e9):.2f} | "
                f"{raw['images'] / sizes['images']:.2f} | {raw['responses'] / sizes['responses']:.2f} | "
                f"{total / statistics.median(reads) / 1e6:.0f} |",
                flush=True,
            )
            shutil.rmtree(target) if target.is_dir() else target.unlink()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="convert", choices=["convert", "compression"])
    parser.add_argument("--trials", type=int, nargs="+", help="scan sizes (convert: default 3500 7000; compression: 1365)")
    parser.add_argument("--workdir", type=Path, help="where to write (default: a temporary folder, removed after)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--cold", action="store_true", help="drop the page cache before each conversion (root only)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="neuroxr-bench-", dir=os.environ.get("TMPDIR")))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if args.what == "convert":
            convert(args.trials or [3500, 7000], workdir, args.repeats, args.cold)
        else:
            compression((args.trials or [1365])[0], workdir, args.repeats)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
