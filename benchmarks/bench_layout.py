"""Benchmark: how fast the files neuroxr writes serve the reads people make, against the release files.

One run writes a release-size synthetic scan (7,000 trials, 8,000 neurons, 1 x 144 x 256 images)
in every layout compared, then measures, warm (the files were just written):

- **one trial**: all four variables of a random trial (images, responses, behavior, pupil_center),
  median over random trials. Baseline: ``np.load`` of that trial's four release files.
- **one neuron**: the responses of a random neuron across all trials, median over random neurons.
  Baseline: NWB's 512 x 512 HDF5 chunks (the file ``neuroxr.to_nwb`` writes, read with h5py).
- **whole variable**: responses and images streamed a dask chunk at a time through xarray
  (``.sum().compute()`` on the threaded scheduler), in MB/s. Baseline: the 0.1 layout.

Layouts: the default ``to_zarr`` (shards of whole blocks of small inner chunks) and ``to_netcdf``
(HDF5 chunks of the same shape), and the 0.1 layout (one chunk per 455-trial block, Blosc-LZ4 for
Zarr, uncompressed for NetCDF). Zarr is read with zarr-python and the zarrs codec pipeline (what
``neuroxr.open_zarr`` uses when installed), and once with zarr-python's own pipeline. Single reads
go through each library's own API (``zarr``, ``netCDF4``, ``h5py``), as ``np.load`` does for the
baseline; the whole-variable streams go through xarray and dask, as analyses do.

Printed: milliseconds, MB/s and the ratios the targets are stated in (one trial within 10x of
``np.load``, one neuron within 25x of NWB, whole-variable throughput at least 0.1's).

Usage::

    python benchmarks/bench_layout.py [--trials 7000] [--neurons 8000] [--repeats 41] [--workdir DIR] [--small]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

import neuroxr
from neuroxr.formats.zarr import fast_codecs

VARIABLES = ("images", "responses", "behavior", "pupil_center")
OLD_BLOCK = 455  # trials per chunk in neuroxr 0.1 (64 MB of release images)
RESPONSES_NWB = "processing/ophys/Fluorescence/Deconvolved/data"


def median_ms(read: Callable[[Any], Any], keys: list[Any]) -> float:
    """Median wall time of ``read(key)`` over ``keys``, in milliseconds (one untimed warm-up call)."""
    read(keys[0])
    times = []
    for key in keys:
        started = time.perf_counter()
        read(key)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def stream_mb_s(array: xr.DataArray, repeats: int = 2) -> float:
    """Best of ``repeats`` whole-variable passes, a dask chunk at a time, in MB/s."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        array.sum().compute()
        best = min(best, time.perf_counter() - started)
    return array.nbytes / best / 1e6


def write_old_zarr(ds: xr.Dataset, path: Path) -> None:
    """The 0.1 layout: one Zarr chunk per 455-trial block, Blosc-LZ4 with byte shuffle, no shards."""
    from zarr.codecs import BloscCodec, BloscShuffle

    blosc = (BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.shuffle),)
    data = ds[list(VARIABLES)].chunk({"trial": OLD_BLOCK})
    encoding = {name: {"chunks": data[name].data.chunksize, "compressors": blosc} for name in VARIABLES}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data.drop_vars([name for name in data.coords if name != "trial"]).to_zarr(path, encoding=encoding, zarr_format=3, consolidated=True)


def write_old_netcdf(ds: xr.Dataset, path: Path) -> None:
    """The 0.1 layout in NetCDF: one HDF5 chunk per 455-trial block, uncompressed."""
    data = ds[list(VARIABLES)].chunk({"trial": OLD_BLOCK})
    data = data.drop_vars([name for name in data.coords if name != "trial"])
    data.to_netcdf(path, engine="netcdf4", encoding={name: {"chunksizes": data[name].data.chunksize} for name in VARIABLES})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=7000)
    parser.add_argument("--neurons", type=int, default=8000)
    parser.add_argument("--repeats", type=int, default=41, help="random trials and neurons per measurement")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--small", action="store_true", help="1,400 trials, 2,000 neurons: a quick run")
    args = parser.parse_args()
    if args.small:
        args.trials, args.neurons = 1400, 2000
    import h5py
    import netCDF4
    import zarr

    work = Path(tempfile.mkdtemp(prefix="neuroxr-layout-", dir=args.workdir))
    try:
        started = time.perf_counter()
        ds = neuroxr.make_scan(preset="release", n_trials=args.trials, n_neurons=args.neurons)
        folder = neuroxr.to_folder(ds, work / "scan")
        ds = neuroxr.open_scan(folder)  # every layout is written from the release files
        paths = {
            "zarr": neuroxr.to_zarr(ds, work / "scan.zarr"),
            "netcdf": neuroxr.to_netcdf(ds, work / "scan.nc"),
            "nwb": neuroxr.to_nwb(ds, work / "scan.nwb"),
            "zarr 0.1": work / "old.zarr",
            "netcdf 0.1": work / "old.nc",
        }
        write_old_zarr(ds, paths["zarr 0.1"])
        write_old_netcdf(ds, paths["netcdf 0.1"])
        print(f"scan: {args.trials} trials, {args.neurons} neurons, {ds.nbytes / 1e9:.2f} GB; "
              f"written in every layout in {time.perf_counter() - started:.0f} s")  # fmt: skip

        rng = np.random.default_rng(0)
        trials = rng.integers(0, args.trials, args.repeats).tolist()
        neurons = rng.integers(0, args.neurons, args.repeats).tolist()

        def npy_trial(k: int) -> None:
            for name in VARIABLES:
                np.load(folder / "data" / name / f"{k}.npy")

        def zarr_arrays(path: Path, fast: bool) -> dict[str, Any]:
            if fast:
                with fast_codecs(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    group = zarr.open_group(path, mode="r")
                    return {name: group[name] for name in VARIABLES}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                group = zarr.open_group(path, mode="r")
                return {name: group[name] for name in VARIABLES}

        readers: dict[str, dict[str, Any]] = {
            "zarr": zarr_arrays(paths["zarr"], fast=True),
            "zarr (zarr-python's own codecs)": zarr_arrays(paths["zarr"], fast=False),
            "zarr 0.1": zarr_arrays(paths["zarr 0.1"], fast=True),
        }
        netcdf_files = {key: netCDF4.Dataset(paths[key]) for key in ("netcdf", "netcdf 0.1")}
        for file in netcdf_files.values():
            file.set_auto_mask(False)
        readers.update({key: {name: file[name] for name in VARIABLES} for key, file in netcdf_files.items()})
        nwb = h5py.File(paths["nwb"], "r")

        # one trial
        trial_ms = {"np.load (release files)": median_ms(npy_trial, trials)}
        for key, arrays in readers.items():
            trial_ms[key] = median_ms(lambda k, arrays=arrays: [arrays[name][k] for name in VARIABLES], trials)
        opened = neuroxr.open_zarr(paths["zarr"])
        trial_ms["neuroxr.open_zarr + isel + load (xarray, dask)"] = median_ms(
            lambda k: opened[list(VARIABLES)].isel(trial=k).load(), trials
        )
        per_variable = {
            name: (median_ms(lambda k, name=name: np.load(folder / "data" / name / f"{k}.npy"), trials),
                   median_ms(lambda k, name=name: readers["zarr"][name][k], trials))
            for name in VARIABLES
        }  # fmt: skip

        # one neuron
        neuron_ms = {"NWB 512 x 512 (h5py)": median_ms(lambda n: nwb[RESPONSES_NWB][:, n], neurons)}
        for key, arrays in readers.items():
            neuron_ms[key] = median_ms(lambda n, arrays=arrays: arrays["responses"][:, n], neurons)
        few = neurons[:3]
        neuron_ms["np.load of every responses file"] = median_ms(
            lambda n: [np.load(folder / "data" / "responses" / f"{k}.npy")[n] for k in range(args.trials)], few
        )

        # whole variables, through xarray and dask
        streams: dict[str, dict[str, float]] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sources = {
                "release files (open_scan)": ds,
                "zarr": neuroxr.open_zarr(paths["zarr"]),
                "zarr 0.1": xr.open_zarr(paths["zarr 0.1"]),
                "netcdf": neuroxr.open_netcdf(paths["netcdf"]),
                "netcdf 0.1": xr.open_dataset(paths["netcdf 0.1"], chunks={}),
            }
            for key, source in sources.items():
                streams[key] = {name: stream_mb_s(source[name]) for name in ("responses", "images")}

        print("load average before measuring: %.1f %.1f %.1f (2 cores: above 2, other jobs compete)\n" % os.getloadavg())
        print("one random trial, all four variables (median ms)")
        base = trial_ms["np.load (release files)"]
        for key, value in trial_ms.items():
            print(f"  {key:48s} {value:8.3f} ms   {value / base:6.1f} x np.load")
        print("  per variable, default Zarr / np.load of its file:")
        for name, (npy, zarr_ms) in per_variable.items():
            print(f"    {name:14s} np.load {npy:6.3f} ms  zarr {zarr_ms:6.3f} ms  {zarr_ms / npy:5.1f} x")
        print("\none random neuron across all trials (median ms)")
        base = neuron_ms["NWB 512 x 512 (h5py)"]
        for key, value in neuron_ms.items():
            print(f"  {key:48s} {value:9.2f} ms   {value / base:7.1f} x NWB")
        print("\nwhole variable, a dask chunk at a time (MB/s, best of 2); load average now %.1f" % os.getloadavg()[0])
        for key, values in streams.items():
            old = streams.get(f"{key} 0.1")
            ratio = "".join(f"  {values[n] / old[n]:4.2f} x 0.1 ({n})" for n in values) if old else ""
            print(f"  {key:28s} responses {values['responses']:7.0f}  images {values['images']:7.0f}{ratio}")
        nwb.close()
        for file in netcdf_files.values():
            file.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
