"""Reading a release-size scan: open time and full-load throughput against np.load loops and raw reads.

    python benchmarks/bench_read.py            # 7,000 trials x 8,000 neurons, 144 x 256 images (~1.2 GB)
    python benchmarks/bench_read.py --small    # a quick run on a tenth of that

Builds the synthetic scan once (folder, stored zip, deflated zip) in a temporary folder, then measures,
in the same run and with a warm page cache (median of --repeats):
  * open: ``neuroxr.open_scan`` of the folder and of each zip;
  * load: responses and images read whole by neuroxr (folder, stored zip, deflated zip), by the loop
    ``np.stack([np.load(f) for f in files])`` a user would write, and by ``open(f).read()`` of every
    file (raw byte reads: what the disk and the kernel allow). neuroxr is timed twice: "into memory"
    (``ds[v].compute()``: one new array, so it adds page faults and dask's final concatenation) and
    "streamed" (every block read and dropped, as a reduction or an export consumes them), plus a
    load through the plain lazy backend (``xr.open_dataset(..., engine="sensorium")``, no dask).
Ratios are printed against the baselines measured in the same run; absolute times drift on a shared
machine, ratios hold.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import dask.array
import numpy as np
import xarray as xr

import neuroxr
from neuroxr.formats.release import to_folder
from neuroxr.synthetic import make_scan


def median_time(function: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def trial_files(scan: Path, variable: str) -> list[Path]:
    folder = scan / "data" / variable
    return [folder / f"{number}.npy" for number in range(len(list(folder.iterdir())))]


def raw_read(files: list[Path]) -> int:
    total = 0
    for file in files:
        with open(file, "rb") as handle:
            total += len(handle.read())
    return total


def np_load_loop(files: list[Path]) -> np.ndarray:
    return np.stack([np.load(file) for file in files])


class Discard:
    """A ``da.store`` target that drops what it is given: streams every block, keeps nothing."""

    def __setitem__(self, key: object, value: object) -> None:
        pass


def stream(array: dask.array.Array) -> None:
    dask.array.store(array, Discard(), lock=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="a tenth of the release size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", help="where to build the scan (default: a temporary folder)")
    args = parser.parse_args()
    n_trials, n_neurons = (700, 8000) if args.small else (7000, 8000)

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        synthetic = make_scan(n_trials=n_trials, n_neurons=n_neurons, image_shape=(1, 144, 256))
        folder = to_folder(synthetic, root / "scan")
        stored = to_folder(synthetic, root / "stored.zip", zip=True)
        deflated = to_folder(synthetic, root / "deflated.zip", zip=True, compression="deflated")
        print(f"built a {n_trials} x {n_neurons} scan with 1x144x256 images in {time.perf_counter() - started:.0f} s")
        sources = {"folder": Path(folder), "stored zip": Path(stored), "deflated zip": Path(deflated)}

        rows = []
        for name, path in sources.items():
            rows.append((f"open ({name})", median_time(lambda p=path: neuroxr.open_scan(p), args.repeats), None))
        print("\n| step | seconds |\n|---|---|")
        for step, seconds, _ in rows:
            print(f"| {step} | {seconds:.3f} |")

        print("\n| variable | method | seconds | MB/s | vs raw read | vs np.load loop |\n|---|---|---|---|---|---|")
        for variable in ("responses", "images"):
            files = trial_files(Path(folder), variable)
            megabytes = raw_read(files) / 1e6  # also warms the page cache
            raw = median_time(lambda f=files: raw_read(f), args.repeats)
            loop = median_time(lambda f=files: np_load_loop(f), args.repeats)
            measured = {"raw byte reads (limit)": raw, "np.stack(np.load) loop": loop}
            for name, path in sources.items():
                dataset = neuroxr.open_scan(path)
                measured[f"neuroxr, {name}, into memory"] = median_time(
                    lambda d=dataset, v=variable: d[v].compute(), args.repeats
                )
                measured[f"neuroxr, {name}, streamed"] = median_time(
                    lambda d=dataset, v=variable: stream(d[v].data), args.repeats
                )
            lazy = xr.open_dataset(sources["folder"], engine="sensorium", cache=False)  # no dask: one read, one array
            measured["neuroxr, folder, into memory without dask"] = median_time(
                lambda d=lazy, v=variable: d[v].variable.to_numpy(), args.repeats
            )
            for method, seconds in measured.items():
                print(
                    f"| {variable} | {method} | {seconds:.3f} | {megabytes / seconds:,.0f} | "
                    f"{raw / seconds:.2f} | {loop / seconds:.2f} |"
                )


if __name__ == "__main__":
    main()
