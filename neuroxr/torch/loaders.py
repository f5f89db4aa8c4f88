"""The official Sensorium loaders, from any scan neuroxr opens: ``static_loaders`` (2022) and ``video_loaders`` (2023).

Both mirror the official functions (``sensorium.datasets.static_loaders`` and
``sensorium.datasets.mouse_video_loader``): the same options that change the data, the same tiers and
samplers, the same batches. What differs is how the data gets there: a batch is read in one block
(never one ``np.load`` per file), from a folder, a .zip, a URL, NetCDF, Zarr or NWB; nothing is written
into the data folder and nothing is cached unless ``cache=True``; batches pickle, so ``num_workers > 0``
works whatever the fields.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch.utils.data import DataLoader, Sampler, SubsetRandomSampler, get_worker_info

from neuroxr import datamodel
from neuroxr.analysis.standardization import StandardizationRule, standardization_rules
from neuroxr.errors import DatasetError
from neuroxr.opening import open_any
from neuroxr.sources import is_url
from neuroxr.torch.batches import ScanBatches, StaticPipeline, VideoPipeline, keep_batch
from neuroxr.torch.parcels import Parcel

#: The tiers ``static_loaders`` makes, in the official order.
STATIC_TIERS = ("train", "validation", "test", "final_test")
#: The tiers of a 2023 scan, in the order ``video_loaders`` gives them (the official order is a set's).
VIDEO_TIERS = ("train", "oracle", "live_test_main", "live_test_bonus", "final_test_main", "final_test_bonus")
#: The ``attrs["format"]`` of a 2023 video scan.
DYNAMIC_FORMAT = "sensorium-2023-dynamic"

Source = str | os.PathLike[str] | xr.Dataset | xr.DataTree | Sequence[Any]


class SubsetSequentialSampler(Sampler[int]):
    """neuralpredictors' ``SubsetSequentialSampler``: the given trials, in the given (ascending) order."""

    def __init__(self, indices: Sequence[int]) -> None:
        self.indices = [int(index) for index in indices]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class ScanLoader(DataLoader):
    """A ``DataLoader`` of a :class:`ScanBatches` whose workers send batches as parcels, unpacked as they arrive.

    Everything else is a plain ``DataLoader`` (``len``, ``dataset``, ``batch_size``, ``sampler``, the
    options): only iterating differs, and only with workers (and without ``pin_memory``), where each
    worker packs a batch into reused shared memory with its images as uint8
    (:mod:`neuroxr.torch.parcels`) and the main process finishes it into a batch of its own.

    >>> scan = neuroxr.write_scan(tmp / "scan", n_trials=60, n_neurons=20)
    >>> loader = static_loaders(scan, batch_size=4, tier="test", num_workers=2)["test"]
    >>> isinstance(loader, DataLoader), len(loader), loader.batch_size
    (True, 3, 4)
    >>> alone = static_loaders(scan, batch_size=4, tier="test")["test"]
    >>> all(torch.equal(a, b) for mine, theirs in zip(loader, alone) for a, b in zip(mine, theirs))
    True
    """

    def __init__(self, dataset: ScanBatches, **options: Any) -> None:
        self._unpacks = options.get("num_workers", 0) > 0 and not options.get("pin_memory", False)
        if self._unpacks:
            options["worker_init_fn"] = SendParcels(options.get("worker_init_fn"))
        super().__init__(dataset, **options)

    def __iter__(self) -> Iterator[Any]:
        batches = super().__iter__()
        return _Unpacked(batches, self.dataset, self.num_workers) if self._unpacks else batches


class SendParcels:
    """A ``worker_init_fn``: the worker's dataset sends parcels, then ``then`` (the user's function) runs."""

    def __init__(self, then: Callable[[int], None] | None = None) -> None:
        self.then = then

    def __call__(self, worker_id: int) -> None:
        info = get_worker_info()
        if info is not None and isinstance(info.dataset, ScanBatches):
            info.dataset.send_parcels()
        if self.then is not None:
            self.then(worker_id)


class _Unpacked:
    """A ``DataLoader`` iterator's batches, parcels unpacked; the parcels' memory stays mapped for the next ones."""

    def __init__(self, batches: Iterator[Any], dataset: ScanBatches, keep: int) -> None:
        self.batches = batches
        self.dataset = dataset
        self.mapped: collections.deque[torch.Tensor] = collections.deque(maxlen=keep)

    def __iter__(self) -> _Unpacked:
        return self

    def __next__(self) -> Any:
        batch = next(self.batches)
        if not isinstance(batch, Parcel):
            return batch
        self.mapped.append(batch.buffer)  # a worker sends the same buffers again: torch then maps nothing anew
        return self.dataset.unpack(batch)

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# Scans from any source


def open_scans(source: Source, storage_options: dict[str, Any] | None = None) -> tuple[list[xr.Dataset], bool]:
    """The scans of ``source`` and whether it holds several (a DataTree, a list, a folder of scans).

    Paths and URLs are opened with ``neuroxr.open``: a batch of a release scan (folder, .zip, URL) is
    then one block read per variable, of NetCDF, Zarr or NWB one call of their lazy indexing.
    """
    if isinstance(source, xr.Dataset):
        return [source], False
    if isinstance(source, xr.DataTree):
        return [child.to_dataset() for child in source.children.values()], True
    if isinstance(source, (str, os.PathLike)):
        opened = open_any(source, storage_options=storage_options) if is_url(source) else open_any(source)
        return open_scans(opened)
    if isinstance(source, Iterable):
        scans = [scan for item in source for scan in open_scans(item, storage_options)[0]]
        return scans, True
    raise TypeError(f"expected a path, URL, xarray Dataset or DataTree, or a list of them; found {type(source).__name__}")


def _format(ds: xr.Dataset) -> str:
    return str(ds.attrs.get("format", datamodel.FORMAT))


# ------------------------------------------------------------------------------------------------
# Options that choose neurons and trials, as the official loaders do


def select_neurons(
    ds: xr.Dataset,
    *,
    areas: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    neuron_ids: Sequence[Any] | None = None,
    neuron_n: int | None = None,
    exclude_neuron_n: int = 0,
    neuron_base_seed: int | None = None,
) -> np.ndarray:
    """Positions of the neurons ``static_loader`` keeps, in its order.

    ``areas``/``layers`` keep the neurons in them (ascending). ``neuron_n`` draws that many unit ids from
    *all* neurons (after skipping ``exclude_neuron_n``), with numpy's legacy generator seeded
    ``neuron_base_seed * neuron_n``, in the draw's order; ``neuron_ids`` picks those units, in that order.

    >>> ds = neuroxr.make_scan(n_trials=60, n_neurons=20)
    >>> select_neurons(ds, layers=["L4"]).tolist() == np.flatnonzero(ds.layer.values == "L4").tolist()
    True
    """
    unit_ids = np.asarray(ds[datamodel.NEURON].values)
    keep = np.ones(len(unit_ids), dtype=bool)
    for name, wanted in (("area", areas), ("layer", layers)):
        if wanted is not None:
            if name not in ds.coords:
                raise DatasetError(f"selecting neurons by {name} needs the {name!r} coordinate (meta/neurons/{name}.npy)")
            keep &= np.isin(ds[name].values, list(wanted))
    positions = np.flatnonzero(keep)
    if neuron_n is not None:
        state = np.random.RandomState(None if neuron_base_seed is None else neuron_base_seed * neuron_n)
        neuron_ids = state.choice(unit_ids, size=exclude_neuron_n + neuron_n, replace=False)[exclude_neuron_n:]
    if neuron_ids is not None:
        where = {unit: position for position, unit in enumerate(unit_ids.tolist())}
        missing = [unit for unit in np.asarray(neuron_ids).tolist() if unit not in where]
        if missing:
            raise DatasetError(f"neuron_ids {missing[:5]} are not among the {len(unit_ids)} unit ids of the scan")
        positions = np.array([where[unit] for unit in np.asarray(neuron_ids).tolist()], dtype=np.int64)
    return positions


def tier_trials(
    ds: xr.Dataset,
    tier: str,
    *,
    image_ids: Sequence[Any] | None = None,
    image_n: int | None = None,
    image_base_seed: int | None = None,
) -> np.ndarray:
    """The trials (file numbers, ascending) of one tier, or the official train subsets by image.

    For ``train`` only: ``image_ids`` keeps the first trial of each id, in their order; ``image_n``
    draws that many train trials (numpy's legacy generator seeded ``image_base_seed * image_n``).
    """
    if "tier" not in ds.coords:
        raise DatasetError("a loader needs the 'tier' coordinate on trial (meta/trials/tiers.npy), found none")
    tiers = np.asarray(ds["tier"].values).astype(str)
    trials = np.asarray(ds[datamodel.TRIAL].values)
    if tier == "train" and image_ids is not None:
        ids = np.asarray(ds["image_id"].values)
        return np.array([trials[np.flatnonzero(ids == image_id)[0]] for image_id in image_ids], dtype=np.int64)
    if tier == "train" and image_n is not None:
        state = np.random.RandomState(None if image_base_seed is None else image_base_seed * image_n)
        return trials[state.choice(np.flatnonzero(tiers == "train"), size=image_n, replace=False)]
    return trials[tiers == tier].astype(np.int64)


# ------------------------------------------------------------------------------------------------
# Building the loaders


def _rules(
    ds: xr.Dataset,
    fields: Sequence[str],
    neurons: np.ndarray,
    *,
    normalize: bool,
    exclude: Iterable[str] | None,
    inputs_mean: Any,
    inputs_std: Any,
    image_name: str,
) -> dict[str, StandardizationRule]:
    """NeuroNormalizer's rule per field, as numpy arrays shaped for a batch (``inputs_mean``/``inputs_std`` override the image's)."""
    if not normalize:
        return {}
    excluded = set(exclude or ())
    wanted = [name for name in fields if name not in excluded]
    if inputs_std is not None and inputs_mean is None:
        raise ValueError("inputs_std needs inputs_mean too (the official loader ignores inputs_std given alone)")
    lazy = standardization_rules(ds, variables=[name for name in wanted if not (name == image_name and inputs_mean is not None)])
    rules = {}
    for name, rule in lazy.items():
        dims = (datamodel.TRIAL, *ds[name].dims[1:])
        rules[name] = rule.arrays(dims, {datamodel.NEURON: neurons} if name == "responses" else None)
    if image_name in wanted and inputs_mean is not None:
        rules[image_name] = StandardizationRule(image_name, offset=np.asarray(inputs_mean), divisor=np.asarray(inputs_std))
    return rules


def _dataloader(
    dataset: ScanBatches,
    trials: np.ndarray,
    *,
    shuffle: bool,
    batch_size: int,
    generator: torch.Generator | None,
    num_workers: int,
    options: Mapping[str, Any],
) -> DataLoader:
    sampler: Sampler[int] = SubsetRandomSampler(trials.tolist(), generator=generator) if shuffle else SubsetSequentialSampler(trials)
    if num_workers > 0:  # one batch ahead per worker: never more than a batch per worker in memory
        options = {"prefetch_factor": 1, **options}
        if "multiprocessing_context" not in options and not dataset.forks_safely and multiprocessing.get_start_method() == "fork":
            options["multiprocessing_context"] = "forkserver"  # workers that start afresh, and get the dataset pickled
    return ScanLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=keep_batch,
        num_workers=num_workers,
        generator=generator,
        **options,
    )


def _add(
    loaders: dict[str, dict[str, DataLoader]],
    dataset: ScanBatches,
    key: str,
    trials: Mapping[str, np.ndarray],
    *,
    cache: bool,
    batch_size: int,
    generator: torch.Generator | None,
    num_workers: int,
    options: Mapping[str, Any],
) -> None:
    """One scan's loader of each tier (train shuffled, the others in file order), all over one dataset."""
    if key in next(iter(loaders.values()), {}):
        raise DatasetError(f"the scan {key} is given twice")
    if cache:
        dataset.cache()
    for name, indices in trials.items():
        loaders.setdefault(name, {})[key] = _dataloader(
            dataset, indices, shuffle=name == "train", batch_size=batch_size, generator=generator,
            num_workers=num_workers, options=options,
        )  # fmt: skip


def _generator(seed: int | None) -> torch.Generator | None:
    return None if seed is None else torch.Generator().manual_seed(int(seed))


def _arrange(loaders: dict[str, dict[str, DataLoader]], several: bool) -> dict[str, Any]:
    if several:
        return loaders
    return {tier: next(iter(by_scan.values())) for tier, by_scan in loaders.items()}


def static_loaders(
    source: Source,
    batch_size: int,
    *,
    seed: int | None = None,
    tier: str | None = None,
    areas: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    neuron_ids: Sequence[Any] | None = None,
    neuron_n: int | None = None,
    exclude_neuron_n: int = 0,
    neuron_base_seed: int | None = None,
    image_ids: Sequence[Any] | None = None,
    image_n: int | None = None,
    image_base_seed: int | None = None,
    normalize: bool = True,
    exclude: Iterable[str] | None = None,
    include_behavior: bool = False,
    add_behavior_as_channels: bool = True,
    include_eye_position: bool = False,
    add_eye_pos_as_channels: bool = False,
    select_input_channel: int | Sequence[int] | None = None,
    scale: float | None = None,
    inputs_mean: Any = None,
    inputs_std: Any = None,
    cache: bool = False,
    num_workers: int = 0,
    storage_options: dict[str, Any] | None = None,
    **dataloader_options: Any,
) -> dict[str, Any]:
    """The 2022 loaders of ``sensorium.datasets.static_loaders``, from any scan neuroxr opens.

    ``source``: a scan folder, .zip or URL, a folder of scans, a NetCDF/Zarr/NWB file, a Dataset, a
    DataTree, or a list of these. One scan gives ``{tier: DataLoader}``, several ``{tier: {scan key:
    DataLoader}}``; the tiers are ``train``, ``validation``, ``test``, ``final_test`` (or ``tier``).
    Batches are namedtuples of float32 tensors, ``images``, ``responses`` (then ``behavior`` with
    ``include_behavior``, ``pupil_center`` with ``include_eye_position``), equal to the official ones:
    NeuroNormalizer's scale (``normalize``, ``exclude``, ``inputs_mean``/``inputs_std``), behaviour and pupil
    centre as extra image channels (``add_behavior_as_channels``, on by default with ``include_behavior``;
    ``add_eye_pos_as_channels``), ``select_input_channel``, ``scale`` (bilinear, as skimage), neurons by
    ``areas``/``layers``/``neuron_ids``/``neuron_n``, train trials by ``image_ids``/``image_n``.

    Validation and test tiers come in file order; train is shuffled by a ``torch.Generator`` seeded with
    ``seed`` (the official sampler draws the same order after ``torch.manual_seed(seed)``). ``cache=True``
    reads the scan into memory once; otherwise every batch is read when it is needed. Other keyword
    arguments (``pin_memory``, ``persistent_workers``, ...) go to each ``DataLoader``.

    >>> loaders = static_loaders(neuroxr.write_scan(tmp / "scan", n_trials=60, n_neurons=20), batch_size=8, seed=0)
    >>> list(loaders)
    ['train', 'validation', 'test', 'final_test']
    >>> batch = next(iter(loaders["test"]))
    >>> batch._fields, tuple(batch.images.shape), tuple(batch.responses.shape)
    (('images', 'responses'), (8, 1, 36, 64), (8, 20))
    """
    if select_input_channel is not None:
        select_input_channel = [int(select_input_channel)] if np.ndim(select_input_channel) == 0 else list(select_input_channel)  # type: ignore[arg-type]
    fields = ["images", "responses"] + ["behavior"] * bool(include_behavior) + ["pupil_center"] * bool(include_eye_position)
    if add_eye_pos_as_channels and not include_eye_position:
        raise ValueError("add_eye_pos_as_channels needs include_eye_position=True (the pupil centre must be read)")
    scans, several = open_scans(source, storage_options)
    generator = _generator(seed)
    tiers = [tier] if tier else list(STATIC_TIERS)
    loaders: dict[str, dict[str, DataLoader]] = {}
    for ds in scans:
        if _format(ds) == DYNAMIC_FORMAT:
            raise DatasetError(f"{ds.attrs.get('scan')}: a 2023 video scan; use video_loaders")
        neurons = select_neurons(
            ds, areas=areas, layers=layers, neuron_ids=neuron_ids, neuron_n=neuron_n,
            exclude_neuron_n=exclude_neuron_n, neuron_base_seed=neuron_base_seed,
        )  # fmt: skip
        rules = _rules(
            ds, fields, neurons, normalize=normalize, exclude=exclude,
            inputs_mean=inputs_mean, inputs_std=inputs_std, image_name="images",
        )  # fmt: skip
        pipeline = StaticPipeline(
            tuple(fields), rules, neurons,
            behavior_channels=bool(include_behavior and add_behavior_as_channels),
            pupil_channels=bool(add_eye_pos_as_channels),
            select_input_channel=select_input_channel,
            scale=scale,
        )  # fmt: skip
        dataset = ScanBatches(ds, pipeline, seed)
        trials = {name: tier_trials(ds, name, image_ids=image_ids, image_n=image_n, image_base_seed=image_base_seed) for name in tiers}
        _add(loaders, dataset, dataset.key, trials, cache=cache, batch_size=batch_size, generator=generator, num_workers=num_workers, options=dataloader_options)
    return _arrange(loaders, several)


def video_loaders(
    source: Source,
    batch_size: int,
    *,
    frames: int | None = 80,
    offset: int = -1,
    max_frame: int | None = None,
    seed: int | None = None,
    tier: str | None = None,
    normalize: bool = True,
    exclude: Iterable[str] | None = None,
    include_behavior: bool = True,
    include_pupil_centers: bool = True,
    include_pupil_centers_as_channels: bool = False,
    scale: float = 1,
    inputs_mean: Any = None,
    inputs_std: Any = None,
    cache: bool = False,
    num_workers: int = 0,
    storage_options: dict[str, Any] | None = None,
    **dataloader_options: Any,
) -> dict[str, Any]:
    """The 2023 loaders of ``sensorium.datasets.mouse_video_loader``, from any video scan neuroxr opens.

    One scan gives ``{tier: DataLoader}``, several ``{tier: {release name: DataLoader}}`` (keyed by the
    scan's folder name, as the official loader is); the tiers are those present (``train``, ``oracle``,
    ``live_test_main``, ... but not ``none``). Batches are namedtuples of float32 tensors: ``videos``
    (batch, channel, frame, y, x) with behaviour (``include_behavior``) and pupil centre
    (``include_pupil_centers_as_channels``) as extra channels, ``responses`` (batch, neuron, frame),
    ``behavior`` and ``pupil_center`` (batch, 2, frame). Each trial is cut where its data end
    (``CutVideos``; ``max_frame`` takes that many frames instead), then a window of ``frames`` frames
    starting at ``offset`` (random where negative, as ``Subsequence`` draws it) is served;
    ``frames=None`` serves whole trials (the official ``to_cut=False``; batches of trials of one length).
    ``scale`` rescales each frame (the official code's order before May 2024).

    Train is shuffled by a generator seeded with ``seed``; window starts come from each process's own
    generator (seeded from it). The other options are those of :func:`static_loaders`.
    """
    fields = ["videos", "responses"] + ["behavior"] * bool(include_behavior) + ["pupil_center"] * bool(include_pupil_centers)
    if include_pupil_centers_as_channels and not include_pupil_centers:
        raise ValueError("include_pupil_centers_as_channels needs include_pupil_centers=True")
    if frames is not None and frames < 1:
        raise ValueError(f"frames must be a positive number of frames per sample (or None for whole trials), found {frames}")
    scans, several = open_scans(source, storage_options)
    generator = _generator(seed)
    loaders: dict[str, dict[str, DataLoader]] = {}
    for ds in scans:
        if _format(ds) != DYNAMIC_FORMAT:
            raise DatasetError(f"{ds.attrs.get('scan')}: a 2022 static scan ({_format(ds)}); use static_loaders")
        neurons = np.arange(ds.sizes[datamodel.NEURON])
        rules = _rules(
            ds, fields, neurons, normalize=normalize, exclude=exclude,
            inputs_mean=inputs_mean, inputs_std=inputs_std, image_name="videos",
        )  # fmt: skip
        withheld = ds[datamodel.WITHHELD_COORD].values.astype(bool) if datamodel.WITHHELD_COORD in ds.coords else None
        pipeline = VideoPipeline(
            tuple(fields), rules, neurons, frames=frames, offset=offset, max_frame=max_frame,
            behavior_channels=include_behavior, pupil_channels=include_pupil_centers_as_channels,
            scale=scale, withheld=withheld,
        )  # fmt: skip
        dataset = ScanBatches(ds, pipeline, seed)
        present = [str(name) for name in np.unique(np.asarray(ds["tier"].values).astype(str)) if name != "none"]
        names = [tier] if tier else [name for name in VIDEO_TIERS if name in present] + sorted(set(present) - set(VIDEO_TIERS))
        key = str(ds.attrs.get("release_name") or dataset.key)
        trials = {name: tier_trials(ds, name) for name in names}
        _add(loaders, dataset, key, trials, cache=cache, batch_size=batch_size, generator=generator, num_workers=num_workers, options=dataloader_options)
    return _arrange(loaders, several)


def loaders(source: Source, batch_size: int, **options: Any) -> dict[str, Any]:
    """The official loaders of ``source``: :func:`static_loaders` for 2022 scans, :func:`video_loaders` for 2023 ones.

    >>> tiers = loaders(neuroxr.make_scan(n_trials=60, n_neurons=20), batch_size=16)
    >>> len(tiers["validation"].sampler), tiers["train"].batch_size
    (5, 16)
    """
    scans, _ = open_scans(source, options.get("storage_options"))
    kinds = {_format(ds) == DYNAMIC_FORMAT for ds in scans}
    if len(kinds) > 1:
        raise DatasetError("the source mixes 2022 static and 2023 video scans; make their loaders separately")
    build = video_loaders if kinds == {True} else static_loaders
    return build(scans if len(scans) > 1 or isinstance(source, (xr.DataTree, list, tuple)) else scans[0], batch_size, **options)
