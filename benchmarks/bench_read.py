"""Reading a release-size scan: neuroxr against the limits of the machine, every figure a ratio measured in the same run.

    python benchmarks/bench_read.py                  # 7,000 trials x 8,000 neurons, 144 x 256 images (~1.3 GB)
    python benchmarks/bench_read.py --small          # a tenth of that, for a quick look
    python benchmarks/bench_read.py --dir DIR        # build the scans in DIR once, and reuse them on later runs
    python benchmarks/bench_read.py --kind dynamic   # a 2023 video scan: 680 trials x 8,000 neurons x 320 frames
    python benchmarks/bench_read.py --kind dynamic --trials 170   # a quarter of one (fits a 24 GB page cache)

Builds one synthetic scan three ways (folder, stored zip, deflated zip), then measures with a warm
page cache, repeats interleaved and the median taken (the machine is shared: absolute times drift,
ratios measured side by side hold):

* open: ``neuroxr.open_scan`` of each, against the folder;
* the limits and baselines, per variable: raw byte reads (``open(f).read()`` of every file),
  every payload read into one fresh array (``np.empty`` + ``readinto``), a one-core ``zlib``
  inflate loop over the deflated members and the same loop with libdeflate (times the cores: the bound
  of the deflated path), the ``np.stack(np.load)`` loop a user writes;
* neuroxr: the variable into memory (``ds[v].values``) and streamed (every block computed and
  dropped, as reductions and exports consume a scan) from each source;
* a fresh process that opens the scan and loads images and responses, against neuralpredictors'
  first epoch item by item (its ``FileTreeDataset`` calls ``np.load`` per trial and key), beside a
  fresh process that only imports xarray and dask.array: the bound of any process that opens a scan
  as the data model's Dataset;
* the peak RSS of a fresh process streaming the deflated zip.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import dask.array
import numpy as np

import neuroxr
from neuroxr.formats.release import to_folder
from neuroxr.lazy import allocate
from neuroxr.sources.zipmember import LOCAL_HEADER
from neuroxr.sources.zip import open_directory
from neuroxr.synthetic import make_scan

#: The variables measured, per kind of scan.
VARIABLES = {"static": ("responses", "images"), "dynamic": ("responses", "videos")}


def medians(functions: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """The median time of each function, the repeats interleaved so drifts of the machine hit all alike."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            started = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def trial_files(scan: Path, variable: str) -> list[Path]:
    folder = scan / "data" / variable
    return [folder / f"{number}.npy" for number in range(len(list(folder.iterdir())))]


def raw_read(files: list[Path]) -> int:
    total = 0
    for file in files:
        with open(file, "rb") as handle:
            total += len(handle.read())
    return total


def fresh_array(files: list[Path]) -> np.ndarray:
    """Every payload read into one new array: the limit of a whole-variable load.

    The array is allocated as neuroxr allocates its own (an anonymous mapping, see
    ``neuroxr.lazy.allocate``), so the two differ in how they read, not in whether the kernel
    compacts memory for huge pages first.
    """
    first = np.load(files[0])
    header = files[0].stat().st_size - first.nbytes
    out = allocate((len(files), *first.shape), first.dtype)
    for row, file in enumerate(files):
        with open(file, "rb", buffering=0) as handle:
            handle.seek(header)
            handle.readinto(out[row])
    return out


def deflated_members(archive: Path, variable: str) -> list[tuple[int, int, int]]:
    """(data offset, compressed size, size) of each trial member of ``variable`` in the deflated archive."""
    directory = open_directory(str(archive))
    top = next(folder for folder in directory.tree if folder.endswith(f"/data/{variable}"))
    rows = directory.numbered_rows(top, len(directory.tree[top]), ".npy", str)
    table = directory.table.take(rows)
    found = []
    with open(archive, "rb") as file:
        for row in range(len(table)):
            offset = int(table.offsets[row])
            _, name_length, extra_length = LOCAL_HEADER.unpack(os.pread(file.fileno(), LOCAL_HEADER.size, offset))
            found.append((offset + LOCAL_HEADER.size + name_length + extra_length, int(table.compressed[row]), int(table.sizes[row])))
    return found


def zlib_loop(archive: Path, members: list[tuple[int, int, int]]) -> None:
    """A one-core zlib inflate loop over the members (each read with ``pread``): the baseline of the deflated path."""
    fd = os.open(archive, os.O_RDONLY)
    try:
        for offset, packed, size in members:
            zlib.decompress(os.pread(fd, packed, offset), -15, size)
    finally:
        os.close(fd)


def libdeflate_loop(archive: Path, members: list[tuple[int, int, int]]) -> None:
    """The same loop with libdeflate (``deflate.deflate_decompress``, what neuroxr inflates with): one core of it.

    Its speed times the cores is what they can inflate at most, the bound of the deflated path against
    :func:`zlib_loop`; it depends on the data (libdeflate gains less over zlib on nearly random bytes).
    """
    import deflate

    fd = os.open(archive, os.O_RDONLY)
    try:
        for offset, packed, size in members:
            deflate.deflate_decompress(os.pread(fd, packed, offset), size)
    finally:
        os.close(fd)


class Discard:
    """A ``da.store`` target that drops what it is given: streams every block, keeps nothing."""

    def __setitem__(self, key: object, value: object) -> None:
        pass


def stream(array: dask.array.Array) -> None:
    dask.array.store(array, Discard(), lock=False)


def fresh_process(code: str, *arguments: str, repeats: int) -> float:
    """The median wall time of ``python -c code arguments`` (interpreter start and imports included)."""
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(dir=Path(arguments[0]).parent) as scratch:
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code, *arguments, scratch], check=True)
            times.append(time.perf_counter() - started)
    return statistics.median(times)


#: neuralpredictors 0.3.0 (the 2022 loaders' pin) does not import on Python >= 3.10 (``from collections import
#: Iterable``), so its first epoch is emulated as its code runs it (/work/notes/official-loaders.md, 1.5-1.6):
#: FileTreeDataset counts the files of each data key, ``__getitem__`` calls ``np.load`` per key, NeuroNormalizer
#: and ToTensor(cuda=False) transform each item, a DataLoader of batch_size 128 collates the epoch. Given a .zip,
#: FileTreeDataset first extracts it beside itself.
NEURALPREDICTORS_EPOCH = """
import pathlib, sys, zipfile, numpy as np, torch
from collections import namedtuple
from torch.utils.data import DataLoader, Dataset
path = pathlib.Path(sys.argv[1])
if path.suffix == ".zip":  # FileTreeDataset: extract the archive, then read the folder
    with zipfile.ZipFile(path) as archive:
        archive.extractall(sys.argv[2])
        path = pathlib.Path(sys.argv[2]) / archive.namelist()[0].split("/")[0]
keys = ("images", "responses")
class FileTreeDataset(Dataset):
    def __init__(self, root, *keys):
        self.root, self.keys = root, keys
        counts = {len(list((root / "data" / key).glob("*"))) for key in keys}
        assert len(counts) == 1
        self._len = counts.pop()
        self.DataPoint = namedtuple("DefaultDataPoint", keys)
        stat = lambda key, name: np.load(root / "meta" / "statistics" / key / "all" / f"{name}.npy")
        self.mean, self.std = stat("images", "mean")[()], stat("images", "std")[()]
        s = stat("responses", "std")
        threshold = 0.01 * s.mean()
        self.precision = np.ones_like(s) / threshold
        self.precision[s > threshold] = 1 / s[s > threshold]
        self.cache = {}
    def __len__(self):
        return self._len
    def __getitem__(self, i):
        raw = [np.load(self.root / "data" / key / f"{i}.npy") for key in self.keys]
        self.cache[i] = raw  # use_cache=True keeps the raw arrays
        x = self.DataPoint(*raw)
        x = self.DataPoint((x.images - self.mean) / self.std, x.responses * self.precision)  # NeuroNormalizer
        return self.DataPoint(*(torch.from_numpy(value.astype(np.float32)) for value in x))  # ToTensor(cuda=False)
for batch in DataLoader(FileTreeDataset(path, *keys), batch_size=128):
    pass
"""
NEUROXR_LOAD = """
import sys, neuroxr
ds = neuroxr.open_scan(sys.argv[1])
images, responses = ds.images.values, ds.responses.values
"""
#: The peak is VmHWM, of this process's own memory: ru_maxrss would include the benchmark's, which the
#: child inherits at fork.
STREAM_RSS = """
import sys, dask.array, neuroxr
class Discard:
    def __setitem__(self, key, value): pass
ds = neuroxr.open_scan(sys.argv[1])
dask.array.store([ds.images.data, ds.responses.data], [Discard(), Discard()], lock=False)
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")))
"""


def build(root: Path, kind: str, n_trials: int | None, small: bool) -> dict[str, Path]:
    paths = {"folder": root / "scan", "stored zip": root / "stored.zip", "deflated zip": root / "deflated.zip"}
    if all(path.exists() for path in paths.values()):
        return paths
    started = time.perf_counter()
    sizes: dict[str, int] = {}
    if n_trials is not None or small:
        sizes["n_trials"] = n_trials or (700 if kind == "static" else 68)
    synthetic = make_scan(kind=kind, preset="release", **sizes)
    to_folder(synthetic, paths["folder"], overwrite=True)
    to_folder(synthetic, paths["stored zip"], zip=True, overwrite=True)
    to_folder(synthetic, paths["deflated zip"], zip=True, compression="deflated", overwrite=True)
    print(f"built the scans in {time.perf_counter() - started:.0f} s")
    return paths


def run(root: Path, kind: str, n_trials: int | None, small: bool, repeats: int) -> None:
    paths = build(root, kind, n_trials, small)
    folder = paths["folder"]
    opened_scan = neuroxr.open_scan(folder)
    shape = " x ".join(f"{size:,} {dim}s" for dim, size in opened_scan.responses.sizes.items())
    print(f"\n{kind} scan, responses {shape}; median of {repeats}, repeats interleaved")

    opened = medians({name: (lambda p=path: neuroxr.open_scan(p)) for name, path in paths.items()}, repeats + 2)
    print("\n| open | seconds | vs the folder |\n|---|---|---|")
    for name, seconds in opened.items():
        print(f"| {name} | {seconds:.3f} | {seconds / opened['folder']:.2f}x |")

    datasets = {name: neuroxr.open_scan(path) for name, path in paths.items()}
    print("\n| variable | method | seconds | MB/s | ratio | against |\n|---|---|---|---|---|---|")
    for variable in VARIABLES[kind]:
        files = trial_files(folder, variable)
        megabytes = raw_read(files) / 1e6  # also warms the page cache
        members = deflated_members(paths["deflated zip"], variable)
        raw_read(files)
        functions: dict[str, Callable[[], object]] = {
            "raw byte reads (limit)": lambda: raw_read(files),
            "one fresh array (limit)": lambda: fresh_array(files),
            "zlib inflate loop, one core": lambda: zlib_loop(paths["deflated zip"], members),
            LIBDEFLATE_LOOP: lambda: libdeflate_loop(paths["deflated zip"], members),
        }
        if kind == "static":  # a video scan's list of arrays and their stack would not fit in memory twice
            functions["np.stack(np.load) loop"] = lambda: np.stack([np.load(file) for file in files])
        for name, ds in datasets.items():
            functions[f"neuroxr, {name}, into memory"] = lambda d=ds: d[variable].values
            functions[f"neuroxr, {name}, streamed"] = lambda d=ds: stream(d[variable].data)
        measured = medians(functions, repeats)
        against = {
            "neuroxr, folder, into memory": "one fresh array (limit)",
            "neuroxr, stored zip, into memory": "one fresh array (limit)",
            "neuroxr, deflated zip, into memory": "zlib inflate loop, one core",
            "neuroxr, folder, streamed": "raw byte reads (limit)",
            "neuroxr, stored zip, streamed": "raw byte reads (limit)",
            "neuroxr, deflated zip, streamed": "zlib inflate loop, one core",
            "np.stack(np.load) loop": "raw byte reads (limit)",
            LIBDEFLATE_LOOP: "zlib inflate loop, one core",
        }
        print_rows(variable, measured, against, megabytes)
        cores = os.cpu_count() or 1
        bound = cores * measured["zlib inflate loop, one core"] / measured[LIBDEFLATE_LOOP]
        print(f"| {variable} | the bound of the deflated path: libdeflate on {cores} cores | | | {bound:.2f} | zlib inflate loop, one core |")

    if kind == "static":
        compare_fresh_processes(paths, repeats)
    output = subprocess.run([sys.executable, "-c", STREAM_RSS.replace("images", VARIABLES[kind][1]), str(paths["deflated zip"])],
                            check=True, capture_output=True, text=True).stdout  # fmt: skip
    print(f"\npeak RSS of a fresh process streaming {VARIABLES[kind][1]} and responses from the deflated zip: {int(output) / 1024:.0f} MB")


LIBDEFLATE_LOOP = "libdeflate inflate loop, one core"

#: What every ``open_scan`` imports before it reads a byte: the data model is an xarray Dataset of dask
#: arrays (xarray brings pandas, dask.array brings scipy.sparse). Its time bounds any fresh process.
IMPORTS_ALONE = """
import sys, xarray, dask.array
"""


def compare_fresh_processes(paths: dict[str, Path], repeats: int) -> None:
    """A fresh process that opens and loads images and responses, against neuralpredictors' first epoch,
    beside the imports alone: the epoch's time over theirs is the most any such process can reach."""
    print("\n| fresh process: open + load images and responses | seconds | speed-up |\n|---|---|---|")
    rounds = max(1, repeats // 2)
    for kind in ("folder", "deflated zip"):
        epoch = fresh_process(NEURALPREDICTORS_EPOCH, str(paths[kind]), repeats=rounds)
        load = fresh_process(NEUROXR_LOAD, str(paths[kind]), repeats=rounds)
        imports = fresh_process(IMPORTS_ALONE, str(paths[kind]), repeats=rounds)
        unpack = " (it extracts the zip first)" if kind != "folder" else ""
        print(f"| {kind}: neuralpredictors' first epoch, item by item{unpack} | {epoch:.2f} | 1.00 |")
        print(f"| {kind}: neuroxr.open_scan + .values | {load:.2f} | **{epoch / load:.1f}x** |")
        print(f"| {kind}: `import xarray, dask.array` alone (the bound) | {imports:.2f} | {epoch / imports:.1f}x at most |")


def print_rows(variable: str, measured: dict[str, float], against: dict[str, str], megabytes: float) -> None:
    """One table row per method: seconds, MB/s, and the ratio to its baseline (another row) where it has one."""
    for method, seconds in measured.items():
        baseline = against.get(method)
        ratio = f"**{measured[baseline] / seconds:.2f}**" if baseline else ""
        print(f"| {variable} | {method} | {seconds:.3f} | {megabytes / seconds:,.0f} | {ratio} | {baseline or ''} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="a tenth of the release size")
    parser.add_argument("--kind", choices=sorted(VARIABLES), default="static", help="a 2022 image scan or a 2023 video scan")
    parser.add_argument("--trials", type=int, help="trials of the scan (default: the release's)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", help="build the scans here, or reuse those built by an earlier run (default: a temporary folder)")
    args = parser.parse_args()
    if args.dir:
        Path(args.dir).mkdir(parents=True, exist_ok=True)
        run(Path(args.dir), args.kind, args.trials, args.small, args.repeats)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            run(Path(tmp), args.kind, args.trials, args.small, args.repeats)


if __name__ == "__main__":
    main()
