"""Reading and converting a Sensorium 2023 video scan of release shape: every figure a ratio measured in the same run.

    python benchmarks/bench_dynamic.py                 # 240 trials: videos 36 x 64 x 320, responses 8,000 x 320 (~3.2 GB)
    python benchmarks/bench_dynamic.py --trials 60     # a quick look
    python benchmarks/bench_dynamic.py --dir DIR       # build the scans in DIR once, and reuse them on later runs

Builds one synthetic video scan (``make_scan(kind="dynamic", preset="release")``: per trial videos
36 x 64 x 320 float32, responses 8,000 x 320 float32, behaviour and pupil 2 x 320, time-resolved
statistics) as a folder and a deflated zip (as the release ships it), then measures with a warm page
cache, repeats interleaved and the median taken:

* open: ``neuroxr.open_scan`` of each (listing, meta/ and the statistics, row 0 of every trial's
  behaviour for ``n_frames``; no video is read); target below 1 s;
* streamed full reads of responses and of videos (every block computed and dropped, as reductions
  and exports consume a scan), against raw byte reads of the same files (``open(f).read()``) for the
  folder and a one-core zlib inflate loop over the same members for the zip; target >= 0.9; the
  ``np.stack(np.load)`` loop a user writes, for comparison. The first read of each video after opening
  also checks its first NaN frame against ``n_frames`` (one more pass over it); that read is timed on
  its own, from a scan freshly opened each time. Beside them, to say where a streamed read's time goes:
  the same blocks read by neuroxr's reader on every core without dask, and ``dask.array.store`` of
  as many blocks that hold nothing (dask's own cost of such a pass);
* the peak RSS of a fresh process converting the scan to Zarr, for the whole scan and for half of
  its trials: below 1 GB and flat in the number of trials.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dask.array
import numpy as np
from bench_read import deflated_members, medians, print_rows, raw_read, stream, trial_files, zlib_loop

import neuroxr
from neuroxr.formats.release import to_folder
from neuroxr.lazy import WholeReadArray
from neuroxr.synthetic import make_scan

VARIABLES = ("responses", "videos")
READER_ALONE = "neuroxr, folder, the same blocks without dask"
DASK_ALONE = "dask.array.store of as many blocks, nothing read"

# The peak is read from /proc/self/status (VmHWM): getrusage's ru_maxrss of a child outlives exec, so it
# would report the parent's size at the fork.
CONVERT_RSS = """
import shutil, sys, tempfile
from pathlib import Path
import neuroxr
ds = neuroxr.open_scan(sys.argv[1])
if int(sys.argv[2]) < ds.sizes["trial"]:
    ds = ds.isel(trial=slice(0, int(sys.argv[2])))
target = Path(tempfile.mkdtemp(dir=sys.argv[3])) / "scan.zarr"
neuroxr.to_zarr(ds, target)
shutil.rmtree(target.parent)
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")))
"""


def build(root: Path, n_trials: int) -> dict[str, Path]:
    """The video scan as a folder and as a deflated zip (written from the folder: generated once)."""
    paths = {"folder": root / "video-scan", "deflated zip": root / "video-scan.zip"}
    if all(path.exists() for path in paths.values()):
        return paths
    started = time.perf_counter()
    synthetic = make_scan(kind="dynamic", preset="release", n_trials=n_trials)
    to_folder(synthetic, paths["folder"], overwrite=True)
    generated = time.perf_counter() - started
    to_folder(neuroxr.open_scan(paths["folder"]), paths["deflated zip"], zip=True, compression="deflated", overwrite=True)
    print(f"built a {n_trials}-trial video scan in {generated:.0f} s, deflated it in {time.perf_counter() - started - generated:.0f} s")
    return paths


def peak_rss(path: Path, n_trials: int, scratch: Path) -> float:
    """MB of peak RSS of a fresh process converting the first ``n_trials`` of the scan to Zarr."""
    code = CONVERT_RSS.replace("sys.argv[1]", repr(str(path))).replace("sys.argv[2]", repr(str(n_trials)))
    code = code.replace("sys.argv[3]", repr(str(scratch)))
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return int(output) / 1024


def first_read(path: Path, variable: str, repeats: int) -> float:
    """The median time of the first streamed read of ``variable`` after opening (opening not timed)."""
    times = []
    for _ in range(repeats):
        ds = neuroxr.open_scan(path)
        started = time.perf_counter()
        stream(ds[variable].data)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def blocks_without_dask(array: WholeReadArray) -> Callable[[], None]:
    """Every block of ``array`` read by neuroxr's reader into the block pool, on every core, and dropped: a streamed
    read without dask's scheduler."""
    starts = np.cumsum((0, *array.chunks[0][:-1]))
    blocks = [array.trials[start : start + size] for start, size in zip(starts.tolist(), array.chunks[0])]
    pool = ThreadPoolExecutor(os.cpu_count() or 1)
    return lambda: list(pool.map(lambda trials: array.reader.read(trials).shape, blocks))


def dask_alone(array: dask.array.Array) -> Callable[[], None]:
    """A ``stream`` of as many one-element blocks as ``array`` has: dask's own cost of a streamed pass, nothing read."""
    empty = dask.array.zeros(len(array.chunks[0]), chunks=1)
    return lambda: stream(empty)


def run(root: Path, n_trials: int, repeats: int) -> None:
    paths = build(root, n_trials)
    folder = paths["folder"]
    first = neuroxr.open_scan(folder)
    per_trial = {name: first[name].nbytes / first.sizes["trial"] / 1e6 for name in VARIABLES}
    print(f"\n{n_trials} trials; per trial videos {first.videos.shape[1:]} ({per_trial['videos']:.1f} MB), responses "
          f"{first.responses.shape[1:]} ({per_trial['responses']:.1f} MB); median of {repeats}, repeats interleaved")  # fmt: skip

    opened = medians({name: (lambda p=path: neuroxr.open_scan(p)) for name, path in paths.items()}, repeats + 2)
    print("\n| open | seconds | target |\n|---|---|---|")
    for name, seconds in opened.items():
        print(f"| {name} | {seconds:.3f} | < 1 s: {'met' if seconds < 1 else 'MISSED'} |")

    datasets = {name: neuroxr.open_scan(path) for name, path in paths.items()}
    print("\n| variable | method | seconds | MB/s | ratio | against |\n|---|---|---|---|---|---|")
    for variable in VARIABLES:
        files = trial_files(folder, variable)
        megabytes = raw_read(files) / 1e6  # also warms the page cache
        members = deflated_members(paths["deflated zip"], variable)
        functions: dict[str, Callable[[], object]] = {
            "raw byte reads (limit)": lambda f=files: raw_read(f),
            "zlib inflate loop, one core": lambda m=members: zlib_loop(paths["deflated zip"], m),
            "np.stack(np.load) loop": lambda f=files: np.stack([np.load(file) for file in f]),
        }
        for name, ds in datasets.items():
            stream(ds[variable].data)  # the first read checks each video's length: timed apart below, not in these repeats
            functions[f"neuroxr, {name}, streamed"] = lambda d=ds, v=variable: stream(d[v].data)
        functions[READER_ALONE] = blocks_without_dask(datasets["folder"][variable].data)
        functions[DASK_ALONE] = dask_alone(datasets["folder"][variable].data)
        measured = medians(functions, repeats)
        if variable == "videos":
            for name, path in paths.items():
                measured[f"neuroxr, {name}, streamed, first read (each video checked)"] = first_read(path, variable, repeats)
        against = {
            "neuroxr, folder, streamed": "raw byte reads (limit)",
            "neuroxr, deflated zip, streamed": "zlib inflate loop, one core",
            "neuroxr, folder, streamed, first read (each video checked)": "raw byte reads (limit)",
            "neuroxr, deflated zip, streamed, first read (each video checked)": "zlib inflate loop, one core",
            "np.stack(np.load) loop": "raw byte reads (limit)",
            READER_ALONE: "raw byte reads (limit)",
        }
        print_rows(variable, measured, against, megabytes)

    print("\n| convert to Zarr (fresh process) | trials | peak RSS (MB) |\n|---|---|---|")
    half = max(1, n_trials // 2)
    for name, path in paths.items():
        for count in (half, n_trials):
            print(f"| from the {name} | {count} | {peak_rss(path, count, root):,.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=240, help="trials of the scan (default 240, ~3.2 GB)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", help="build the scans here, or reuse those built by an earlier run (default: a temporary folder)")
    args = parser.parse_args()
    if args.dir:
        Path(args.dir).mkdir(parents=True, exist_ok=True)
        run(Path(args.dir), args.trials, args.repeats)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            run(Path(tmp), args.trials, args.repeats)


if __name__ == "__main__":
    main()
