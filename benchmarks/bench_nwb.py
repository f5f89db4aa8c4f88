"""Benchmark: NWB export of a release-size scan against writing the same arrays with h5py directly.

The source is a synthetic scan of release size, written once to the release folder layout
(``to_folder``, cached in the work folder) and opened lazily with ``open_scan``, so that both
writers read real files: ``--kind static`` (``make_scan(preset="release")``: 7,000 trials x 8,000
neurons, images 1 x 144 x 256) or ``--kind dynamic`` (``make_scan(kind="dynamic",
preset="release")``: per trial videos 36 x 64 x 320 and responses 8,000 x 320; ``--trials`` of the
release's 680, 120 by default: a release-size scan holds 9 GB).

Each case runs in its own process (peak memory is that process's ``ru_maxrss``); the libraries are
imported before the clock starts (pynwb alone takes about a second to import):

- ``nwb``: ``neuroxr.to_nwb`` (static: distinct images, responses in presentation order, behaviour,
  tables; dynamic: every frame of the videos and responses on one time axis, in presentation order,
  the padding left out, behaviour, tables).
- ``h5py``: the same arrays with h5py alone, same chunking and compression: static: the distinct
  images (uint8 when exact) one dataset each, responses (trials x neurons, file order) block by
  block; dynamic: the frames of the videos (frames x y x x) and of the responses (frames x neurons),
  trial after trial in file order, the padding left out; both: behaviour and pupil position. No NWB
  objects, no reordering, no validation.
- ``read``: ``neuroxr.open_nwb`` of the NWB file, then every variable loaded.

Usage::

    python benchmarks/bench_nwb.py [--kind static|dynamic] [--trials 120] [--workdir /tmp/neuroxr-bench]
                                   [--repeat 2] [--compression gzip|lzf|none]

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


def _source(workdir: Path, kind: str, trials: int) -> Any:
    """The lazy release-size scan, from its release folder (written once, cached in ``workdir``)."""
    import neuroxr
    from neuroxr.formats.release import to_folder

    folder = workdir / ("release-scan" if kind == "static" else f"video-scan-{trials}")
    if not (folder / "meta").is_dir():
        print(f"writing the release-size synthetic {kind} scan to {folder} (once) ...", file=sys.stderr)
        if kind == "static":
            synthetic = neuroxr.make_scan(preset="release")
        else:
            synthetic = neuroxr.make_scan(kind="dynamic", preset="release", n_trials=trials)
        to_folder(synthetic, folder, overwrite=True)
    return neuroxr.open_scan(folder)


def _source_bytes(ds: Any) -> int:
    names = ("images", "videos", "responses", "behavior", "pupil_center")
    return int(sum(ds[name].nbytes for name in names if name in ds))


def _options(compression: str | None, level: int) -> dict[str, Any]:
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": level}
    return {"compression": compression} if compression else {}


def write_frames_with_h5py(ds: Any, path: Path, compression: str | None, level: int) -> None:
    """The dynamic baseline: each trial's frames [0:n_frames] of the videos (frames, y, x) and the
    responses (frames, neurons), trial after trial in file order, with the NWB file's chunks and
    compression (shuffle on), then behaviour and pupil position the same way (small)."""
    import h5py

    from neuroxr.formats._write import BlockStream
    from neuroxr.formats.nwb.write import series_chunks

    options = _options(compression, level)
    shuffled = {**options, "shuffle": True} if options else {}
    lengths = np.asarray(ds.n_frames.values, dtype=np.int64)
    samples = int(lengths.sum())
    with h5py.File(path, "w") as file:
        for name in ("videos", "responses", "behavior", "pupil_center"):
            variable = ds[name]
            shape = (samples, *variable.shape[1:-1])
            target = file.create_dataset(name, shape=shape, dtype=variable.dtype,
                                         chunks=series_chunks(shape, variable.dtype.itemsize), **shuffled)  # fmt: skip
            offset = 0
            for first, block in BlockStream(variable.data):
                frames = [np.moveaxis(trial[..., :length], -1, 0) for trial, length in zip(block, lengths[first:])]
                joined = np.concatenate(frames)
                target[offset : offset + len(joined)] = joined
                offset += len(joined)


def write_with_h5py(ds: Any, path: Path, compression: str | None, level: int) -> None:
    """The baseline: the arrays the NWB file holds, written with h5py, same chunks and compression."""
    import h5py

    from neuroxr.formats.nwb.images import exact_as_uint8
    from neuroxr.formats._write import BlockStream
    from neuroxr.formats.nwb.write import response_chunks

    options = _options(compression, level)
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


def run_case(case: str, args: argparse.Namespace) -> dict[str, Any]:
    """One measurement, in this process. Library imports happen before the clock starts, in every case."""
    import h5py  # noqa: F401
    import pynwb  # noqa: F401

    import neuroxr
    import neuroxr.formats.nwb  # noqa: F401

    workdir, compression, level = args.workdir, _compression(args), args.level
    if case == "read":
        opened = neuroxr.open_nwb(workdir / f"{args.kind}.nwb")
        source_bytes = _source_bytes(opened)
        begin = time.perf_counter()
        for name in ("images", "videos", "responses", "behavior", "pupil_center"):
            if name in opened:
                opened[name].load()
        written = 0
    else:
        ds = _source(workdir, args.kind, args.trials)
        source_bytes = _source_bytes(ds)
        target = workdir / (f"{args.kind}.nwb" if case == "nwb" else f"{args.kind}.h5")
        target.unlink(missing_ok=True)
        begin = time.perf_counter()
        if case == "nwb":
            neuroxr.to_nwb(ds, target, compression=compression, compression_level=level)
        elif args.kind == "dynamic":
            write_frames_with_h5py(ds, target, compression, level)
        else:
            write_with_h5py(ds, target, compression, level)
        written = target.stat().st_size
    seconds = time.perf_counter() - begin
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    return {"case": case, "seconds": seconds, "source_bytes": source_bytes, "written_bytes": written, "peak_rss": peak}


def _compression(args: argparse.Namespace) -> str | None:
    return None if args.compression == "none" else args.compression


def _in_subprocess(case: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--case", case, "--workdir", str(args.workdir), "--level", str(args.level),
               "--kind", args.kind, "--trials", str(args.trials), "--compression", args.compression]  # fmt: skip
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/neuroxr-bench"))
    parser.add_argument("--repeat", type=int, default=2, help="runs per case; the fastest counts")
    parser.add_argument("--kind", choices=["static", "dynamic"], default="static")
    parser.add_argument("--trials", type=int, default=120, help="trials of the dynamic scan (the release: 680)")
    parser.add_argument("--compression", default="gzip", choices=["gzip", "lzf", "none"], help="as to_nwb (default gzip)")
    parser.add_argument("--level", type=int, default=1, help="gzip level")
    parser.add_argument("--case", choices=["nwb", "h5py", "read"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.case:
        print(json.dumps(run_case(args.case, args)))
        return
    _source(args.workdir, args.kind, args.trials)  # build the cached source folder before timing anything
    best: dict[str, dict[str, Any]] = {}
    for _ in range(args.repeat):
        for case in ("h5py", "nwb", "read"):
            result = _in_subprocess(case, args)
            if case not in best or result["seconds"] < best[case]["seconds"]:
                best[case] = result
    baseline = best["h5py"]["seconds"]
    size = "release-size" if args.kind == "static" else f"{args.trials}-trial release-shape"
    print(f"{size} synthetic {args.kind} scan, compression={args.compression}, best of {args.repeat}, {os.cpu_count()} CPUs")
    print(f"{'case':<6} {'seconds':>8} {'source MB/s':>12} {'file MB':>9} {'peak RSS MB':>12} {'time / h5py':>12}")
    for case in ("h5py", "nwb", "read"):
        result = best[case]
        print(
            f"{case:<6} {result['seconds']:8.2f} {result['source_bytes'] / MB / result['seconds']:12.0f} "
            f"{result['written_bytes'] / MB:9.0f} {result['peak_rss'] / MB:12.0f} {result['seconds'] / baseline:12.2f}"
        )
    ratio = best["nwb"]["seconds"] / baseline
    peak = best["nwb"]["peak_rss"] / MB
    memory = peak / (best["h5py"]["peak_rss"] / MB)
    print(f"targets: NWB within 2x of h5py: {'met' if ratio <= 2 else 'MISSED'} ({ratio:.2f}x); "
          f"peak memory under 1 GB: {'met' if peak < 1024 else 'MISSED'} ({peak:.0f} MB, {memory:.2f}x h5py's)")  # fmt: skip


if __name__ == "__main__":
    main()
