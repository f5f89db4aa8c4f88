"""One epoch over the train tier of a release-size scan: neuroxr's loaders against per-item ``np.load`` loaders.

    python benchmarks/bench_torch.py              # 7,000 trials x 8,000 neurons, 144 x 256 images (~1.2 GB)
    python benchmarks/bench_torch.py --small      # a tenth of the trials
    PYTHONPATH=/path/to/neuralpredictors python benchmarks/bench_torch.py   # adds neuralpredictors 0.3.0

Builds the synthetic scan once (a folder; ``--dir`` keeps it between runs), then times, in the same run
and at ``--workers`` (default 0 and 2), the first epoch of the train tier (batch 128, the 2022 notebooks'
size; images and responses on the official scale, shuffled):

* **neuroxr**: ``neuroxr.torch.static_loaders(folder)``: a batch is one block read per variable;
* **per-item np.load**: what the official loader does before its cache fills, written plainly: a
  ``Dataset`` whose ``__getitem__`` does ``np.load`` of each file of the trial and NeuroNormalizer's
  arithmetic, batches made by the default collate;
* **neuralpredictors** (when it imports): the official ``FileTreeDataset`` with ``NeuroNormalizer``,
  ``Subsample`` and ``ToTensor`` (0.3.0 imports ``collections.Iterable``, gone since Python 3.10: it is
  aliased first). Its first epoch fills its cache, so it runs on a copy of the scan, like the official
  code writes ``config.json`` into it.

* **bound: raw reads** (without workers): each batch's files read whole by ``readinto`` into reused
  buffers on every core, nothing decoded or standardised: what the page cache gives; the per-item
  loader's time over this one is the most any loader of these files can reach in one process;
* **neuroxr, plain DataLoader** (with workers): neuroxr's dataset in a plain ``DataLoader``: its workers
  finish each batch and torch hands it over as it is (what the loaders did before their workers sent
  parcels, images as uint8, finished in the main process);
* **floor: ready-made batches** (with workers): a dataset that reads nothing and returns new shared
  memory of the batches' shapes and dtypes, written once: torch's own hand-over of float32 batches
  from its workers, which no loader of these batches can beat. The per-item loader's time over this
  one is the most any such loader can reach here; the script says whether that is below 5x.

For each it prints the median seconds per first epoch (``--repeats`` rounds, loaders made anew each
round), the ratio to the per-item loader (and the range of each round's own ratio), and the peak memory
one more epoch added (proportional set size of the process and its workers, sampled every 20 ms) in
batches of 128. The memory epoch comes first (a loader's first batches make its buffers) and is not timed: reading ``smaps`` takes about a quarter of a core, which
would slow a loader that uses both cores more than one that uses one.
Every neuroxr batch is checked against the per-item loader's batch with the same trials first.
The page cache is warm for all of them (the scan was just written or read); absolute times drift on
a shared machine, the ratios measured in one run hold.
"""

from __future__ import annotations

import argparse
import collections
import collections.abc
import gc
import os
import pickle
import statistics
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import torch
from torch.utils.data import DataLoader, Dataset, SubsetRandomSampler

import neuroxr
import neuroxr.lazy
import neuroxr.torch
from neuroxr.synthetic import release_name

BATCH = 128
FLOOR = "floor: ready-made batches"
BOUND = "bound: raw reads"
DataPoint = collections.namedtuple("DataPoint", ["images", "responses"])


class PerItemScan(Dataset):
    """The plain per-item loader: np.load of each file of a trial, NeuroNormalizer's arithmetic, float32 tensors."""

    def __init__(self, scan: Path) -> None:
        self.scan = scan
        stats = scan / "meta" / "statistics"
        self.mean = np.load(stats / "images/all/mean.npy")[()]
        self.std = np.load(stats / "images/all/std.npy")[()]
        s = np.load(stats / "responses/all/std.npy")
        threshold = 0.01 * np.nanmean(s)
        self.precision = np.where(s > threshold, 1 / np.where(s > threshold, s, 1), 1 / threshold).astype(s.dtype)

    def __len__(self) -> int:
        return len(list((self.scan / "data" / "responses").iterdir()))

    def __getitem__(self, item: int) -> DataPoint:
        images = np.load(self.scan / "data" / "images" / f"{item}.npy")
        responses = np.load(self.scan / "data" / "responses" / f"{item}.npy")
        return DataPoint(
            torch.from_numpy(((images - self.mean) / self.std).astype(np.float32)),
            torch.from_numpy((responses * self.precision).astype(np.float32)),
        )


class ReadyMade(Dataset):
    """The floor of any loader through torch's workers: batches of the same shapes and dtypes, made without reading.

    A batch is new shared memory written once from a template, as torch's default collate makes a
    worker's batch; torch then hands it to the main process like any other. No loader that delivers
    these float32 batches from its workers can be faster than this.
    """

    def __init__(self, n_trials: int) -> None:
        self.n_trials = n_trials
        self.templates = (torch.rand(BATCH, 1, 144, 256), torch.rand(BATCH, 8000))

    def __len__(self) -> int:
        return self.n_trials

    def __getitems__(self, trials: list[int]) -> DataPoint:
        fields = []
        for template in self.templates:
            part = template[: len(trials)]
            storage = torch.UntypedStorage._new_shared(part.numel() * part.element_size())
            fields.append(torch.empty(0, dtype=part.dtype).set_(storage).view(part.shape).copy_(part))
        return DataPoint(*fields)


class RawReads:
    """The bound of any loader in one process: each batch's files read whole into two reused arrays, on every core.

    The train trials in a seeded random order, each batch's image and response files read by
    ``readinto`` (headers included, nothing decoded or standardised) into the rows of preallocated
    buffers, the batch's trials split across the cores. What the page cache gives; no loader that
    reads these files can be faster.
    """

    def __init__(self, scan: Path, train: np.ndarray) -> None:
        self.paths = [[scan / "data" / name / f"{trial}.npy" for trial in train] for name in ("images", "responses")]
        self.order = np.random.default_rng(0).permutation(len(train))
        sizes = [paths[0].stat().st_size for paths in self.paths]
        self.buffers = [np.empty((BATCH, size), dtype=np.uint8) for size in sizes]

    def _read(self, rows: range, items: np.ndarray) -> None:
        for paths, buffer in zip(self.paths, self.buffers):
            for row in rows:
                with open(paths[items[row]], "rb", buffering=0) as file:
                    file.readinto(buffer[row])

    def __iter__(self) -> Iterator[tuple[np.ndarray, ...]]:
        cores = os.cpu_count() or 1
        with ThreadPoolExecutor(cores) as pool:
            for start in range(0, len(self.order), BATCH):
                items = self.order[start : start + BATCH]
                step = -(-len(items) // cores)
                parts = [range(first, min(first + step, len(items))) for first in range(0, len(items), step)]
                list(pool.map(lambda rows: self._read(rows, items), parts))
                yield tuple(buffer[: len(items)] for buffer in self.buffers)


def whole(batch: DataPoint) -> DataPoint:
    return batch


class Memory:
    """Peak memory of this process and its workers while the block runs, above what it was before.

    Proportional set sizes (a page shared by n processes counts 1/n in each), so forked workers'
    shared pages are not counted twice.
    """

    def __enter__(self) -> Memory:
        self.process = psutil.Process()
        self.before = self._now()
        self.peak = self.before
        self.running = True
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _now(self) -> int:
        total = 0
        for process in [self.process, *self.process.children(recursive=True)]:
            try:
                total += process.memory_full_info().pss
            except psutil.NoSuchProcess:
                pass
        return total

    def _watch(self) -> None:
        while self.running:
            self.peak = max(self.peak, self._now())
            time.sleep(0.02)

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.thread.join()

    @property
    def added(self) -> int:
        return self.peak - self.before


def epoch(loader: DataLoader) -> int:
    count = 0
    for batch in loader:
        count += len(batch[0])
    return count


def neuralpredictors_loader(scan: Path, train: np.ndarray, workers: int) -> DataLoader | None:
    for name in ("Iterable", "Mapping", "Sequence", "MutableMapping"):  # neuralpredictors 0.3.0 on Python >= 3.10
        setattr(collections, name, getattr(collections.abc, name))
    try:
        from neuralpredictors.data.datasets import FileTreeDataset
        from neuralpredictors.data.transforms import NeuroNormalizer, Subsample, ToTensor
    except ImportError as error:
        print(f"neuralpredictors: not importable ({error}); skipped")
        return None
    dataset = FileTreeDataset(str(scan), "images", "responses")
    dataset.transforms.extend([NeuroNormalizer(dataset), Subsample(np.arange(len(dataset.neurons.unit_ids))), ToTensor(False)])
    if workers:
        try:
            pickle.dumps(dataset[int(train[0])])
        except (pickle.PicklingError, AttributeError, TypeError) as error:  # its batches cannot leave a worker
            print(f"  {'neuralpredictors 0.3.0':24s} fails with workers: {error}")
            return None
    return DataLoader(dataset, sampler=SubsetRandomSampler(train), batch_size=BATCH, num_workers=workers)


def plain_dataloader(scan: Path, workers: int) -> DataLoader | None:
    """neuroxr's dataset in a plain ``DataLoader``: its workers finish each batch and torch hands it over as it is."""
    if not workers:
        return None
    loader = neuroxr.torch.static_loaders(scan, batch_size=BATCH, tier="train", seed=0, num_workers=workers)["train"]
    return DataLoader(loader.dataset, sampler=loader.sampler, batch_size=BATCH, num_workers=workers, collate_fn=whole, prefetch_factor=1)


def check(scan: Path, trials: np.ndarray) -> None:
    """neuroxr's batch of ``trials`` equals the per-item loader's."""
    ours = neuroxr.torch.static_loaders(scan, batch_size=BATCH, tier="train")["train"].dataset.__getitems__(trials)
    plain = PerItemScan(scan)
    for field, index in (("images", 0), ("responses", 1)):
        reference = torch.stack([plain[int(trial)][index] for trial in trials])
        torch.testing.assert_close(getattr(ours, field), reference, rtol=1e-6, atol=1e-6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="a tenth of the release's trials")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--dir", help="where to build (or find) the scan; default: a temporary folder")
    parser.add_argument("--repeats", type=int, default=3, help="epochs of each loader, interleaved; the median is shown")
    args = parser.parse_args()
    n_trials = 700 if args.small else 7000
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench-torch-"))
    root.mkdir(parents=True, exist_ok=True)
    scan = root / release_name("21067-10-18")
    if not (scan / "meta").exists():
        started = time.perf_counter()
        neuroxr.write_scan(scan, preset="release", n_trials=n_trials, scan="21067-10-18")
        print(f"built {scan.name} ({n_trials} trials) in {time.perf_counter() - started:.0f} s")
    tiers = np.load(scan / "meta" / "trials" / "tiers.npy")
    train = np.flatnonzero(tiers == "train")
    batch_bytes = BATCH * (4 * 144 * 256 + 4 * 8000)
    print(f"train tier: {len(train)} trials, batch {BATCH} ({batch_bytes / 2**20:.0f} MiB of float32)")
    check(scan, np.random.default_rng(0).choice(train, BATCH, replace=False))
    print("neuroxr's batches equal the per-item loader's (rtol 1e-6)")
    epoch(DataLoader(PerItemScan(scan), sampler=SubsetRandomSampler(train), batch_size=BATCH))  # warm the page cache

    copy = root / "neuralpredictors-copy"
    if not copy.exists():
        shutil.copytree(scan, copy)
    builders: dict[str, Callable[[int], DataLoader | None]] = {
        "per-item np.load": lambda workers: DataLoader(PerItemScan(scan), sampler=SubsetRandomSampler(train), batch_size=BATCH, num_workers=workers),
        "neuroxr": lambda workers: neuroxr.torch.static_loaders(scan, batch_size=BATCH, tier="train", seed=0, num_workers=workers)["train"],
        "neuroxr, plain DataLoader": lambda workers: plain_dataloader(scan, workers),
        "neuralpredictors 0.3.0": lambda workers: neuralpredictors_loader(copy, train, workers),
        BOUND: lambda workers: RawReads(scan, train) if not workers else None,
        FLOOR: lambda workers: DataLoader(
            ReadyMade(len(tiers)), sampler=SubsetRandomSampler(train), batch_size=BATCH, num_workers=workers, collate_fn=whole, prefetch_factor=1
        )
        if workers
        else None,
    }
    for workers in args.workers:
        print(f"\nworkers={workers} (median of {args.repeats} first epochs, each loader made anew; {os.getloadavg()[0]:.1f} load average)")
        times: dict[str, list[float]] = collections.defaultdict(list)
        memory_added: dict[str, list[int]] = collections.defaultdict(list)
        running = dict(builders)
        for name, build in running.items():  # first one epoch each under the memory sampler (it takes a core's quarter)
            loader = build(workers)
            if loader is not None:
                neuroxr.lazy.BLOCKS.forget()  # each loader starts without pooled buffers: they count as its memory
                gc.collect()
                with Memory() as memory:
                    epoch(loader)
                memory_added[name].append(memory.added)
        for _ in range(args.repeats):  # then the timed epochs, nothing else running
            for name, build in running.items():
                loader = build(workers)
                if loader is None:
                    continue
                started = time.perf_counter()
                served = epoch(loader)
                times[name].append(time.perf_counter() - started)
                assert served == len(train), (name, served)
            running = {name: build for name, build in running.items() if name in times}
        baseline = statistics.median(times["per-item np.load"])
        for name in times:
            seconds, added = statistics.median(times[name]), max(memory_added[name])
            rounds = [plain / mine for plain, mine in zip(times["per-item np.load"], times[name])]  # each round's own ratio
            print(
                f"  {name:28s} {seconds:7.2f} s/epoch   {baseline / seconds:5.1f}x the per-item loader "
                f"({min(rounds):4.1f}-{max(rounds):4.1f}x by round)   "
                f"peak memory added {added / 2**20:7.0f} MiB ({added / batch_bytes:5.1f} batches)"
            )
        if BOUND in times:
            best = baseline / statistics.median(times[BOUND])
            print(f"  the bound: per-item / raw reads = {best:.1f}x is the most any loader that reads these files gets in one process")
        if FLOOR in times:
            best = baseline / statistics.median(times[FLOOR])
            verdict = "so 5x is out of reach for float32 batches through torch's workers here" if best < 5 else "5x is within reach"
            print(f"  the floor: per-item / ready-made = {best:.1f}x is the most any loader of these float32 batches gets from {workers} workers ({verdict})")
    if not args.dir:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
