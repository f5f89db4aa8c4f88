"""Analysis of a release-size scan: per-neuron train statistics and the oracle, neuroxr against numpy.

    python benchmarks/bench_analysis.py            # 7,000 trials x 8,000 neurons, 144 x 256 images
    python benchmarks/bench_analysis.py --small    # a quick run on a tenth of the trials

Builds the synthetic release-size scan once and writes it in the release layout (one .npy per trial)
to a temporary folder, then measures in the same run, with a warm page cache, each method in a fresh
process (so that its peak resident memory is its own), ``--repeats`` times in turn:

  * numpy: what a user writes without neuroxr: ``np.stack([np.load(f) for f in files])`` of every
    responses file, then the train-tier mean and std (``ddof=1``) per neuron and the official
    leave-one-out oracle of the test tier (neuralpredictors' ``oracle_corr_jackknife`` loop);
  * neuroxr: ``open_scan`` of the folder, ``neuroxr.standardization.train_statistics`` (the same mean and
    std, accumulated in float64) and ``neuroxr.metrics.oracle_correlation`` of the test tier, in one
    ``dask.compute`` (one pass over the files, dask's default threaded scheduler).

Each process runs its method twice and reports the second run (the first pays the imports; its time
is shown apart). Times include opening and reading the files. Peak memory is the process's peak
resident set size (VmHWM), and that minus its size before the measured run. Ratios compare the two
methods of the same run; absolute times drift on a shared machine, ratios hold better.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _peak_mb() -> float:
    """Peak resident memory of this process (VmHWM: unlike ru_maxrss, not inherited from the parent)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def run_numpy(scan: Path) -> tuple:
    import numpy as np

    folder = scan / "data" / "responses"
    files = [folder / f"{number}.npy" for number in range(len(list(folder.iterdir())))]
    responses = np.stack([np.load(file) for file in files])
    tiers = np.load(scan / "meta" / "trials" / "tiers.npy")
    image_ids = np.load(scan / "meta" / "trials" / "frame_image_id.npy")
    train = responses[tiers == "train"]
    mean, std = train.mean(axis=0), train.std(axis=0, ddof=1)

    test, test_ids = responses[tiers == "test"], image_ids[tiers == "test"]
    repeated = [test[test_ids == image_id] for image_id in np.unique(test_ids)]
    oracles = []
    for outputs in repeated:
        oracle = (outputs.sum(axis=0, keepdims=True) - outputs) / (outputs.shape[0] - 1)
        oracle[np.isnan(oracle)] = 0
        oracles.append(oracle)
    y1, y2 = np.vstack(repeated), np.vstack(oracles)
    y1 = (y1 - y1.mean(axis=0, keepdims=True)) / (y1.std(axis=0, keepdims=True, ddof=0) + 1e-8)
    y2 = (y2 - y2.mean(axis=0, keepdims=True)) / (y2.std(axis=0, keepdims=True, ddof=0) + 1e-8)
    return mean, std, (y1 * y2).mean(axis=0)


def run_neuroxr(scan: Path) -> tuple:
    import dask

    import neuroxr
    from neuroxr import metrics
    from neuroxr.analysis.standardization import train_statistics

    ds = neuroxr.open_scan(scan)
    train = train_statistics(ds, ["responses"]).responses_statistics.sel(subset="all")
    train, oracle = dask.compute(train, metrics.oracle_correlation(ds, tier="test"))
    return train.sel(statistic="mean").values, train.sel(statistic="std").values, oracle.values


METHODS = {"numpy": run_numpy, "neuroxr": run_neuroxr}


def worker(method: str, scan: Path) -> dict[str, object]:
    """Run ``method`` twice: the first run pays the imports, the second is the measurement."""
    seconds = []
    for _ in range(2):
        baseline = _rss_mb()
        started = time.perf_counter()
        values = METHODS[method](scan)
        seconds.append(time.perf_counter() - started)
    return {
        "first_seconds": seconds[0],
        "seconds": seconds[1],
        "peak_mb": _peak_mb(),
        "baseline_mb": baseline,
        "values": [np.asarray(array, dtype=float).tolist() for array in values],
    }


def measure(method: str, scan: Path) -> dict[str, object]:
    """One run of ``method`` in a fresh Python process."""
    output = subprocess.run(
        [sys.executable, __file__, "--worker", method, str(scan)], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output.splitlines()[-1])


def build(root: Path, small: bool) -> Path:
    from neuroxr.formats.release import to_folder
    from neuroxr.synthetic import make_scan

    started = time.perf_counter()
    synthetic = make_scan(preset="release", n_trials=700) if small else make_scan(preset="release")
    scan = to_folder(synthetic, root / synthetic.attrs["release_name"])
    sizes = synthetic.sizes
    print(f"wrote a {sizes['trial']} x {sizes['neuron']} scan (images 1x144x256) in {time.perf_counter() - started:.0f} s")
    return Path(scan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="a tenth of the release's trials")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", help="where to build the scan (default: a temporary folder)")
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "SCAN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        method, scan = args.worker
        print(json.dumps(worker(method, Path(scan))))
        return

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        scan = build(Path(tmp), args.small)
        for file in (scan / "data" / "responses").iterdir():  # warm the page cache
            file.read_bytes()
        runs: dict[str, list[dict]] = {method: [] for method in METHODS}
        for _ in range(args.repeats):
            for method in METHODS:
                runs[method].append(measure(method, scan))

    numpy_values = [np.array(v) for v in runs["numpy"][0]["values"]]
    neuroxr_values = [np.array(v) for v in runs["neuroxr"][0]["values"]]
    for name, ours, theirs in zip(("train mean", "train std", "oracle"), neuroxr_values, numpy_values):
        scale = max(float(np.nanmax(np.abs(theirs))), 1e-30)
        print(f"{name}: max |neuroxr - numpy| = {float(np.nanmax(np.abs(ours - theirs))):.2e} (max |value| {scale:.3g})")

    seconds = {method: statistics.median(run["seconds"] for run in results) for method, results in runs.items()}
    peaks = {method: max(run["peak_mb"] for run in results) for method, results in runs.items()}
    base = {method: statistics.median(run["baseline_mb"] for run in results) for method, results in runs.items()}
    first = {method: statistics.median(run["first_seconds"] for run in results) for method, results in runs.items()}
    print(f"\nmedian of {args.repeats} processes per method, warm page cache; each process runs the method twice")
    print("and the second run is timed (the first, which pays the imports, is shown apart)\n")
    print("| method | seconds | speed-up vs numpy | first run s | peak RSS MB | above imports MB |")
    print("|---|---|---|---|---|---|")
    for method in METHODS:
        print(
            f"| {method} | {seconds[method]:.2f} | {seconds['numpy'] / seconds[method]:.2f} | {first[method]:.2f} | "
            f"{peaks[method]:,.0f} | {peaks[method] - base[method]:,.0f} |"
        )


if __name__ == "__main__":
    main()
