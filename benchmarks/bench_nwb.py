"""Benchmark: NWB export of a release-size scan against writing the same arrays with h5py directly.

The source is a synthetic scan of release size (``make_scan(preset="release")``: 7,000 trials x 8,000
neurons, images 1 x 144 x 256), written once to the release folder layout (``to_folder``, cached in
the work folder) and opened lazily with ``open_scan``, so that both writers read real files.

Each case runs in its own process (peak memory is that process's ``ru_maxrss``); the libraries are
imported before the clock starts (pynwb alone takes about a second to import):

- ``nwb``: ``neuroxr.to_nwb`` (distinct images, responses in presentation order, behaviour, tables).
- ``h5py``: the same arrays with h5py alone, same chunking and compression: the distinct images
  (uint8 when exact) one dataset each, responses (trials x neurons, file order) block by block,
  behaviour and pupil position. No NWB objects, no reordering, no validation.
- ``read``: ``neuroxr.open_nwb`` of the NWB file, then every variable loaded.

Usage::

    python benchmarks/bench_nwb.py [--workdir /tmp/neuroxr-bench] [--repeat 2] [--compression gzip]

Targets: NWB export within 2x of the h5py baseline; peak memory under 1 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

MB = 2**20


def _source(workdir: Path) -> Any:
    """The lazy release-size scan: from the cached release folder when the folder sink exists."""
    import neuroxr

    folder = workdir / "release-scan"
    try:
        from neuroxr.formats.release import to_folder
    except ImportError:  # no folder sink: straight from the generator
        return neuroxr.make_scan(preset="release")
    if not (folder / "meta").is_dir():
        print(f"writing the release-size synthetic scan to {folder} (once) ...", file=sys.stderr)
        to_folder(neuroxr.make_scan(preset="release"), folder, overwrite=True)
    return neuroxr.open_scan(folder)


def _source_bytes(ds: Any) -> int:
    return int(sum(ds[name].nbytes for name in ("images", "responses", "behavior", "pupil_center") if name in ds))


def write_with_h5py(ds: Any, path: Path, compression: str | None, level: int) -> None:
    """The baseline: the arrays the NWB file holds, written with h5py, same chunks and compression."""
    import h5py

    from neuroxr.formats.nwb.images import exact_as_uint8
    from neuroxr.formats._write import BlockStream
    from neuroxr.formats.nwb.write import response_chunks

    options: dict[str, Any] = {}
    if compression == "gzip":
        options = {"compression": "gzip", "compression_opts": level}
    elif compression:
        options = {"compression": compression}
    with h5py.File(path, "w") as file:
        images = file.create_group("images")
        image_ids = np.asarray(ds.image_id.values)
        seen: set[int] = set()
        for first, block in BlockStream(ds.images.data):
            small, exact = exact_as_uint8(block[:, 0])
            for offset in range(len(block)):
                image_id = int(image_ids[first + offset])
                if image_id in seen:
                    continue
                seen.add(image_id)
                data = small[offset] if exact[offset] else block[offset, 0]
                images.create_dataset(str(image_id), data=data, chunks=data.shape if options else None, **options)
        shape = ds.responses.shape
        shuffled = {**options, "shuffle": True} if options else {}
        responses = file.create_dataset(
            "responses", shape=shape, dtype=ds.responses.dtype, chunks=response_chunks(shape), **shuffled
        )
        for first, block in BlockStream(ds.responses.data):
            responses[first : first + len(block)] = block
        for name in ("behavior", "pupil_center"):
            file.create_dataset(name, data=ds[name].values)


def run_case(case: str, workdir: Path, compression: str | None, level: int) -> dict[str, Any]:
    """One measurement, in this process. Library imports happen before the clock starts, in every case."""
    import h5py  # noqa: F401
    import pynwb  # noqa: F401

    import neuroxr
    import neuroxr.formats.nwb  # noqa: F401

    if case == "read":
        opened = neuroxr.open_nwb(workdir / "scan.nwb")
        source_bytes = _source_bytes(opened)
        begin = time.perf_counter()
        for name in ("images", "responses", "behavior", "pupil_center"):
            opened[name].load()
        written = 0
    else:
        ds = _source(workdir)
        source_bytes = _source_bytes(ds)
        target = workdir / ("scan.nwb" if case == "nwb" else "scan.h5")
        target.unlink(missing_ok=True)
        begin = time.perf_counter()
        if case == "nwb":
            neuroxr.to_nwb(ds, target, compression=compression, compression_level=level)
        else:
            write_with_h5py(ds, target, compression, level)
        written = target.stat().st_size
    seconds = time.perf_counter() - begin
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    return {"case": case, "seconds": seconds, "source_bytes": source_bytes, "written_bytes": written, "peak_rss": peak}


def _in_subprocess(case: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--case", case, "--workdir", str(args.workdir), "--level", str(args.level)]
    if args.compression:
        command += ["--compression", args.compression]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/neuroxr-bench"))
    parser.add_argument("--repeat", type=int, default=2, help="runs per case; the fastest counts")
    parser.add_argument("--compression", default=None, help="None (default), gzip or lzf")
    parser.add_argument("--level", type=int, default=1, help="gzip level")
    parser.add_argument("--case", choices=["nwb", "h5py", "read"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.case:
        print(json.dumps(run_case(args.case, args.workdir, args.compression, args.level)))
        return
    _source(args.workdir)  # build the cached source folder before timing anything
    best: dict[str, dict[str, Any]] = {}
    for _ in range(args.repeat):
        for case in ("h5py", "nwb", "read"):
            result = _in_subprocess(case, args)
            if case not in best or result["seconds"] < best[case]["seconds"]:
                best[case] = result
    baseline = best["h5py"]["seconds"]
    compression = args.compression or "none"
    print(f"release-size synthetic scan, compression={compression}, best of {args.repeat}, {os.cpu_count()} CPUs")
    print(f"{'case':<6} {'seconds':>8} {'source MB/s':>12} {'file MB':>9} {'peak RSS MB':>12} {'time / h5py':>12}")
    for case in ("h5py", "nwb", "read"):
        result = best[case]
        print(
            f"{case:<6} {result['seconds']:8.2f} {result['source_bytes'] / MB / result['seconds']:12.0f} "
            f"{result['written_bytes'] / MB:9.0f} {result['peak_rss'] / MB:12.0f} {result['seconds'] / baseline:12.2f}"
        )
    ratio = best["nwb"]["seconds"] / baseline
    peak = best["nwb"]["peak_rss"] / MB
    print(f"targets: NWB within 2x of h5py: {'met' if ratio <= 2 else 'MISSED'} ({ratio:.2f}x); "
          f"peak memory under 1 GB: {'met' if peak < 1024 else 'MISSED'} ({peak:.0f} MB)")  # fmt: skip


if __name__ == "__main__":
    main()
