"""A scan as a PyTorch ``Dataset`` whose batches equal the official loaders' batches, read a batch at a time.

:class:`ScanBatches` holds one scan's Dataset (lazily indexed, dask-backed or in memory) and a
pipeline of the official transforms. The ``DataLoader`` hands it a whole batch of trials
(``__getitems__``); it reads each variable's trials in one call of the Dataset's own lazy indexing
(one :meth:`neuroxr.lazy.TrialReader.read` for a release scan), then runs the transforms on the batch
at once. It holds no open file, so it pickles small and works with ``num_workers > 0``; in a worker of
a :class:`~neuroxr.torch.loaders.ScanLoader` it sends release images as uint8 in a reused parcel
(:meth:`ScanBatches.parcel`), which the loader finishes in the main process (:meth:`ScanBatches.unpack`).

- :class:`StaticPipeline` is 2022's ``static_loader`` chain: ``NeuroNormalizer`` ->
  ``AddBehaviorAsChannels`` -> ``AddPupilCenterAsChannels`` -> ``SelectInputChannel`` -> ``ScaleInputs``
  -> ``Subsample`` -> ``ToTensor``.
- :class:`VideoPipeline` is 2023's ``mouse_video_loader`` chain: ``NeuroNormalizer`` -> ``Subsample`` ->
  ``CutVideos`` -> ``Subsequence`` -> ``ExpandChannels`` -> ``AddBehaviorAsChannels`` ->
  ``AddPupilCenterAsChannels`` -> ``ScaleInputs`` -> ``ToTensor``.
"""

from __future__ import annotations

import os
from collections import namedtuple
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import dask
import dask.array
import numpy as np
import torch
import xarray as xr
from torch.utils.data import Dataset, get_worker_info
from xarray.core import indexing as xr_indexing

from neuroxr import datamodel
from neuroxr.analysis.standardization import StandardizationRule
from neuroxr.errors import DatasetError
from neuroxr.lazy import BLOCKS, TrialReader, WholeReadArray, even_parts, in_parts
from neuroxr.torch import transforms
from neuroxr.torch.parcels import PARCELS, Parcel, narrow

TRIAL = datamodel.TRIAL
FRAME = "frame"


@lru_cache(maxsize=None)
def batch_type(fields: tuple[str, ...]) -> type:
    """The namedtuple of a batch with ``fields`` (as the official ``DataPoint``), picklable by its fields.

    >>> Batch = batch_type(("images", "responses"))
    >>> Batch._fields, Batch.__name__
    (('images', 'responses'), 'Batch')
    """
    base = namedtuple("Batch", fields)  # type: ignore[misc]

    def __reduce__(self: Any) -> tuple[Any, ...]:
        return make_batch, (self._fields, tuple(self))

    return type("Batch", (base,), {"__slots__": (), "__reduce__": __reduce__, "__module__": __name__})


def make_batch(fields: tuple[str, ...], values: Sequence[Any]) -> Any:
    """A batch of ``fields`` holding ``values`` (what unpickling a batch calls)."""
    return batch_type(tuple(fields))(*values)


def keep_batch(batch: Any) -> Any:
    """The ``collate_fn`` of the loaders: a batch comes out of ``__getitems__`` whole."""
    return batch


def _tensor(values: np.ndarray) -> torch.Tensor:
    """``ToTensor``: float32, as every official batch field is."""
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))


@dataclass
class StaticPipeline:
    """The 2022 ``static_loader`` transforms on a batch of raw trials (trial first)."""

    fields: tuple[str, ...]
    rules: dict[str, StandardizationRule]  #: numpy rules of the variables to standardise (responses: kept neurons)
    neurons: np.ndarray  #: positions of the kept neurons (``Subsample``), in output order
    behavior_channels: bool = False
    pupil_channels: bool = False
    select_input_channel: list[int] | None = None
    scale: float | None = None

    @property
    def variables(self) -> tuple[str, ...]:
        return self.fields

    @property
    def deferrable(self) -> tuple[str, ...]:
        """The fields whose only transform is ``NeuroNormalizer`` (then ``ToTensor``): :meth:`finish` can run later, elsewhere."""
        plain = not (self.behavior_channels or self.pupil_channels or self.select_input_channel is not None or self.scale is not None)
        return ("images",) if plain else ()

    def finish(self, name: str, values: np.ndarray) -> np.ndarray:
        """A deferred field of float32 files, sent as ``values`` (its values, exactly, in a narrower type): what :meth:`__call__` makes of it.

        Cast back and standardised a few trials at a time, each block still in the cache for the
        arithmetic: one pass over the new float32 array (memory from the block pool, reused once no
        batch refers to it any more).
        """
        out = BLOCKS.get().empty(values.shape, np.dtype(np.float32))
        rows = max(1, CACHE_BLOCK // max(1, out[:1].nbytes))
        for start in range(0, len(out), rows):
            block = out[start : start + rows]
            np.copyto(block, values[start : start + rows])
            _standardized(self.rules, name, block, to_float32=True)  # float32 data: in place
        return out

    def __call__(self, raw: Mapping[str, np.ndarray], rng: np.random.Generator, deferred: Sequence[str] = ()) -> dict[str, np.ndarray]:
        """The transformed fields; those in ``deferred`` (some of :attr:`deferrable`) are left out, for :meth:`finish`."""
        values = {**raw, "responses": _neurons(raw["responses"], self.neurons, axis=-1)}
        if deferred:
            return {name: _standardized(self.rules, name, values[name], to_float32=True) for name in self.fields if name not in deferred}
        rescaled = {"images"} if self.scale is not None else set()
        values = {name: _standardized(self.rules, name, values[name], to_float32=name not in rescaled) for name in self.fields}
        values["images"] = self._images(values)
        return values

    def _images(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        """Channels added, selected and rescaled, in the official order (constant channels stay constant)."""
        images = values["images"]
        channels: list[tuple[str, int]] = [("images", c) for c in range(images.shape[1])] if images.ndim == 4 else []
        if self.behavior_channels:
            channels += [("behavior", k) for k in range(values["behavior"].shape[1])]
        if self.pupil_channels:
            channels += [("pupil_center", k) for k in range(values["pupil_center"].shape[1])]
        if images.ndim != 4 or channels == [("images", c) for c in range(images.shape[1])]:
            if self.select_input_channel is not None:
                images = images[:, self.select_input_channel] if images.ndim == 4 else images[self.select_input_channel]
            return images if self.scale is None else transforms.rescale_bilinear(images, self.scale)
        if self.select_input_channel is not None:
            channels = [channels[c] for c in self.select_input_channel]
        picked = [c for source, c in channels if source == "images"]
        scaled = images[:, picked]
        if self.scale is not None:
            scaled = transforms.rescale_bilinear(scaled, self.scale)
        shape = scaled.shape[-2:]
        out = np.empty((len(images), len(channels), *shape), dtype=np.result_type(scaled.dtype, np.float64))
        image_channel = 0
        for position, (source, k) in enumerate(channels):
            if source == "images":
                out[:, position] = scaled[:, image_channel]
                image_channel += 1
            else:
                out[:, position] = transforms.constant_channels(values[source][:, k], shape)
        return out


@dataclass
class VideoPipeline:
    """The 2023 ``mouse_video_loader`` transforms on a batch of raw trials (trial first, frames last)."""

    fields: tuple[str, ...]
    rules: dict[str, StandardizationRule]
    neurons: np.ndarray
    frames: int | None = None  #: frames per sample (``Subsequence``); None keeps the whole cut trial
    offset: int = -1
    max_frame: int | None = None
    behavior_channels: bool = True
    pupil_channels: bool = False
    scale: float = 1.0
    withheld: np.ndarray | None = None  #: per trial: responses withheld (they do not end a trial)
    deferrable: tuple[str, ...] = field(default=(), init=False)  #: none: the videos are cut and moved before anything else

    @property
    def variables(self) -> tuple[str, ...]:
        return self.fields

    def lengths(self, values: Mapping[str, np.ndarray], trials: np.ndarray) -> np.ndarray:
        """``CutVideos``: each trial's length, the first frame holding a NaN in any field (or ``max_frame``)."""
        if self.max_frame is not None:
            return np.full(len(trials), self.max_frame, dtype=np.int64)
        lengths = np.stack([self._first_nan(name, array, trials) for name, array in values.items()])
        return lengths.min(axis=0)

    def _first_nan(self, name: str, array: np.ndarray, trials: np.ndarray) -> np.ndarray:
        found = transforms.first_nan_frame(array)
        if name == "responses" and self.withheld is not None:  # NaN for the whole trial: not an end
            found = np.where(self.withheld[trials], array.shape[-1], found)
        return found

    def __call__(self, raw: Mapping[str, np.ndarray], rng: np.random.Generator, trials: np.ndarray) -> dict[str, np.ndarray]:
        values = {**raw, "responses": _neurons(raw["responses"], self.neurons, axis=1)}
        rescaled = {"videos"} if self.scale != 1 else set()
        values = {name: _standardized(self.rules, name, values[name], to_float32=name not in rescaled) for name in self.fields}
        lengths = self.lengths(values, trials)
        if self.max_frame is not None and self.max_frame > values["videos"].shape[-1]:
            raise DatasetError(f"max_frame={self.max_frame} is more than the {values['videos'].shape[-1]} frames of a trial")
        if self.frames is None:
            if len(set(lengths.tolist())) > 1:
                raise DatasetError(
                    f"whole trials of different lengths ({sorted(set(lengths.tolist()))} frames) cannot share a batch: "
                    "use batch_size=1 (as the official submission code does) or frames=..."
                )
            starts, count = np.zeros(len(trials), dtype=np.int64), int(lengths[0])
        else:
            short = lengths < (self.offset + self.frames if self.offset >= 0 else self.frames + 1)
            if short.any():
                trial = int(trials[np.argmax(short)])
                raise DatasetError(
                    f"trial {trial} has {int(lengths[np.argmax(short)])} frames, too few for a window of "
                    f"{self.frames} frames at offset {self.offset}"
                )
            starts, count = transforms.window_starts(lengths, self.frames, self.offset, rng), self.frames
        window = starts[:, None] + np.arange(count)[None, :]
        cut = {name: np.take_along_axis(array, self._index(window, array.ndim), axis=-1) for name, array in values.items()}
        videos = np.moveaxis(cut["videos"], -1, 1)[:, None]  # (trial, 1, frame, y, x)
        if self.scale != 1:
            videos = transforms.rescale_bilinear(videos, self.scale)
        extra = [cut[name] for name, wanted in (("behavior", self.behavior_channels), ("pupil_center", self.pupil_channels)) if wanted]
        if extra:
            constant = [transforms.constant_channels(values, videos.shape[-2:]) for values in extra]
            videos = np.concatenate([videos.astype(np.float64, copy=False), *constant], axis=1)
        cut["videos"] = videos
        return cut

    @staticmethod
    def _index(window: np.ndarray, ndim: int) -> np.ndarray:
        return window.reshape(window.shape[:1] + (1,) * (ndim - 2) + window.shape[1:])


def _neurons(responses: np.ndarray, neurons: np.ndarray, axis: int) -> np.ndarray:
    """``Subsample``: the kept neurons, in their order (the array itself when that is every neuron in order)."""
    if len(neurons) == responses.shape[axis] and np.array_equal(neurons, np.arange(len(neurons))):
        return responses
    return np.take(responses, neurons, axis=axis)


#: Bytes of float64 arithmetic at a time when a float32 batch is standardised in place (a few trials of release images).
STANDARDIZE_BLOCK = 2**19
#: Bytes of a batch handled at a time so that each piece stays in the cache (a few trials of release images): cast and
#: standardised in the main process, read and narrowed into a parcel in a worker.
CACHE_BLOCK = 2**19


#: Bytes of a batch from which the main process (no ``DataLoader`` workers) reads and standardises it on
#: every core, in contiguous parts of its trials: files are read and numpy computes without the GIL.
PARALLEL_BATCH_BYTES = 2**20
CORES = os.cpu_count() or 1


def batch_parts(count: int, nbytes: int) -> list[slice]:
    """How the ``count`` rows of a batch of ``nbytes`` are shared out (:func:`neuroxr.lazy.in_parts`): one
    contiguous part per core when they hold at least :data:`PARALLEL_BATCH_BYTES` and this is not a
    ``DataLoader`` worker (whose siblings use the other cores), else one part.

    >>> batch_parts(128, 2**20) == even_parts(128, CORES), batch_parts(128, 2**19)
    (True, [slice(0, 128, None)])
    """
    if nbytes < PARALLEL_BATCH_BYTES or get_worker_info() is not None:
        return [slice(0, count)]
    return even_parts(count, CORES)


def _standardized(rules: Mapping[str, StandardizationRule], name: str, values: np.ndarray, *, to_float32: bool = False) -> np.ndarray:
    """``NeuroNormalizer`` on one field (as stored where the rule is absent: not normalised or excluded).

    The batch was just read into an array of its own, so the arithmetic runs in place where the result
    keeps its dtype (the same operations, in the same order, as the official transform). Where the
    official arithmetic is wider (float32 data, float64 statistics) and the field goes to ``ToTensor``
    as it comes out (``to_float32``), it runs a few trials at a time, each result rounded to float32
    in place: the official batch exactly, without a float64 copy of the whole batch.
    """
    rule = rules.get(name)
    if rule is None:
        return values
    parts = [part for part in (rule.offset, rule.divisor, rule.factor) if part is not None]
    wide = np.result_type(values, *parts)
    if not values.flags.writeable or (wide != values.dtype and not (to_float32 and values.dtype == np.float32 and len(values))):
        return rule.apply(values)
    count = len(values)

    def standardize(trials: slice) -> None:  # the parts share STANDARDIZE_BLOCK, in proportion to their trials
        part = values[trials]
        _standardize_in_place(rule, part, wide, max(1, STANDARDIZE_BLOCK * len(part) // count))

    in_parts(standardize, batch_parts(count, values.nbytes))
    return values


def _standardize_in_place(rule: StandardizationRule, values: np.ndarray, wide: np.dtype, block_bytes: int = STANDARDIZE_BLOCK) -> None:
    """``rule`` applied to ``values`` in place: the official arithmetic in ``wide``, a few trials at a time (in one
    scratch array of about ``block_bytes``) where that is wider."""
    if wide == values.dtype:
        _apply_in_place(rule, values)
        return
    rows = max(1, block_bytes // (wide.itemsize * max(1, values[0].size)))
    scratch = np.empty((min(rows, len(values)), *values.shape[1:]), dtype=wide)
    for start in range(0, len(values), rows):
        block = values[start : start + rows]
        widened = scratch[: len(block)]
        widened[...] = block  # as numpy promotes ``block - offset``: the same numbers
        _apply_in_place(rule, widened)
        block[...] = widened


def _apply_in_place(rule: StandardizationRule, values: np.ndarray) -> None:
    """``values = rule.apply(values)`` without a new array: ``(values - offset) / divisor * factor``."""
    if rule.offset is not None:
        np.subtract(values, rule.offset, out=values)
    if rule.divisor is not None:
        np.divide(values, rule.divisor, out=values)
    if rule.factor is not None:
        np.multiply(values, rule.factor, out=values)


@dataclass
class ScanBatches(Dataset):
    """One scan's trials, served as the official loader's items, a batch at a time.

    ``scan`` is the scan's Dataset (its data variables lazily indexed, dask or numpy); ``pipeline`` the
    official transforms. ``dataset[i]`` is one trial's item, ``dataset.__getitems__(trials)`` (what a
    ``DataLoader`` calls) a whole batch, with one read per variable. ``cache()`` reads every trial into
    memory once (shared with the workers). Afterwards ``scan`` keeps the labels and statistics of the
    neurons served, in the batches' order (``dataset.scan.neuron`` names the responses' columns).
    """

    scan: xr.Dataset
    pipeline: StaticPipeline | VideoPipeline
    seed: int | None = None
    _variables: dict[str, xr.Variable] = field(init=False, repr=False)
    _rng: tuple[int | None, np.random.Generator] | None = field(default=None, init=False, repr=False)
    _parcels: bool = field(default=False, init=False, repr=False)  #: in a worker of a ScanLoader: send Parcels

    def __post_init__(self) -> None:
        missing = [name for name in self.pipeline.variables if name not in self.scan.data_vars]
        if missing:
            raise DatasetError(f"{self.key}: the loader needs the variables {missing}, found {sorted(map(str, self.scan.data_vars))}")
        self._variables = {name: lazily_indexed(self.scan[name].variable) for name in self.pipeline.variables}
        per_trial = [name for name, variable in self.scan.data_vars.items() if TRIAL in variable.dims]
        self.scan = self.scan.drop_vars(per_trial).isel({datamodel.NEURON: self.pipeline.neurons})

    @property
    def key(self) -> str:
        return str(self.scan.attrs.get("scan", "scan"))

    @property
    def forks_safely(self) -> bool:
        """False where a forked worker could not read the variables: a Zarr store read with zarrs, whose
        Rust thread pool a forked child inherits without its threads (zarr has no way to make it anew)."""
        return not any(_reads_with_zarrs(array) for variable in self._variables.values() for array in _backend_arrays(variable))

    def __len__(self) -> int:
        return int(self.scan.sizes[TRIAL])

    def __getitem__(self, trial: int) -> Any:
        batch = self.__getitems__([int(trial)])
        return type(batch)(*(value[0] for value in batch))

    def __getitems__(self, trials: Sequence[int]) -> Any:
        trials = np.asarray(trials, dtype=np.int64)
        if self._parcels and get_worker_info() is not None:
            parcel = self.parcel(trials)
            if parcel is not None:
                return parcel
        shared: dict[int, torch.Tensor] | None = {} if get_worker_info() is not None else None
        raw = self.read(trials, shared)
        if isinstance(self.pipeline, VideoPipeline):
            values = self.pipeline(raw, self._generator(), trials)
        else:
            values = self.pipeline(raw, self._generator())
        tensors = []
        for name in self.pipeline.fields:
            in_shared_memory = (shared or {}).get(id(values[name]))
            tensors.append(_tensor(values[name]) if in_shared_memory is None else in_shared_memory)
        return batch_type(self.pipeline.fields)(*tensors)

    def send_parcels(self) -> None:
        """In a ``DataLoader`` worker: send batches as :class:`~neuroxr.torch.parcels.Parcel` (for a loader that unpacks them)."""
        self._parcels = True

    def parcel(self, trials: Sequence[int]) -> Parcel | None:
        """The batch of ``trials`` as a worker sends it, its images as uint8; None where they cannot travel so.

        Only for release files (folder, .zip, URL) of float32 images that the pipeline only
        standardises. The images are read a few trials at a time, narrowed straight into a
        :class:`~neuroxr.torch.parcels.Parcel` from this process's pool; the first block that is not all
        whole numbers 0-255 ends the attempt, and batches of this dataset in this process are then
        finished here (:meth:`__getitems__`). :meth:`unpack` makes the batch.

        >>> scan = neuroxr.write_scan(tmp / "scan", n_trials=60, n_neurons=20)
        >>> dataset = neuroxr.torch.static_loaders(scan, batch_size=4, tier="test")["test"].dataset
        >>> parcel = dataset.parcel([0, 1])
        >>> parcel.nbytes == 2 * (36 * 64 + 4 * 20), torch.equal(dataset.unpack(parcel).images, dataset.__getitems__([0, 1]).images)
        (True, True)
        """
        trials = np.asarray(trials, dtype=np.int64)
        name = "images"
        images = self._variables.get(name)
        reader = images.data.reader if images is not None and isinstance(images.data, WholeReadArray) else None
        if reader is None or reader.dtype != np.float32 or name not in self.pipeline.deferrable:
            self._parcels = False
            return None
        values = self.pipeline(self.read(trials, skip=(name,)), self._generator(), deferred=(name,))
        layout = [(name, np.dtype(np.uint8), (len(trials), *reader.header.shape))]
        layout += [(other, np.dtype(np.float32), values[other].shape) for other in self.pipeline.fields if other != name]
        parcel = PARCELS.get().pack(layout, (name,))
        arrays = parcel.arrays()
        rows = max(1, CACHE_BLOCK // max(1, reader.header.payload_bytes))
        block = np.empty((min(rows, len(trials)), *reader.header.shape), dtype=reader.dtype)
        for start in range(0, len(trials), rows):
            chunk = trials[start : start + rows]
            reader.read_into(chunk, block[: len(chunk)])
            if not narrow(block[: len(chunk)], arrays[name][start : start + len(chunk)]):
                parcel.release()
                self._parcels = False
                return None
        for other, array in values.items():
            np.copyto(arrays[other], array, casting="unsafe")  # ToTensor's float32
        return parcel

    def unpack(self, parcel: Parcel) -> Any:
        """The batch a worker sent as ``parcel``, in memory of its own (block-pool memory, as :meth:`read` gives); the parcel is released."""
        arrays = parcel.arrays()
        fields = {}
        for name in self.pipeline.fields:
            if name in parcel.narrowed:
                fields[name] = _tensor(self.pipeline.finish(name, arrays[name]))
            else:
                copy = BLOCKS.get().empty(arrays[name].shape, arrays[name].dtype)
                np.copyto(copy, arrays[name])
                fields[name] = torch.from_numpy(copy)
        parcel.release()
        return batch_type(self.pipeline.fields)(*(fields[name] for name in self.pipeline.fields))

    def read(self, trials: np.ndarray, shared: dict[int, torch.Tensor] | None = None, skip: Sequence[str] = ()) -> dict[str, np.ndarray]:
        """The raw values of ``trials`` (any order, repeats allowed), in that order: one read per variable (but those in ``skip``).

        A variable of release files (opened by ``neuroxr.open_scan``) is read with one
        :meth:`~neuroxr.lazy.TrialReader.read`; any other with one call of its own lazy indexing (dask:
        one synchronous compute of all of them). With ``shared`` (in a ``DataLoader`` worker), float32
        release files are read straight into shared memory, recorded there by the id of the array: a
        field the transforms leave in place then goes to the main process without another copy.
        """
        numbers, where = np.unique(trials, return_inverse=True)
        values: dict[str, np.ndarray] = {}
        in_order: dict[str, np.ndarray] = {}
        lazy: dict[str, Any] = {}
        for name, variable in self._variables.items():
            if name in skip:
                continue
            data = variable.data if _is_dask(variable) else None
            if isinstance(data, WholeReadArray):
                in_order[name] = _read_release_files(data.reader, trials, shared)
            elif data is not None:
                lazy[name] = data[numbers]
            else:
                values[name] = np.asarray(variable[{TRIAL: numbers}].values)
        if lazy:
            values.update(zip(lazy, dask.compute(*lazy.values(), scheduler="synchronous")))
        if len(numbers) != len(trials) or not np.array_equal(numbers, trials):
            values = {name: array[where.ravel()] for name, array in values.items()}
        return {**values, **in_order}

    def cache(self) -> ScanBatches:
        """Read every trial of the variables served into memory, once (in blocks); later batches come from there.

        The arrays are torch tensors, so ``DataLoader`` workers share them instead of copying them.
        """
        for name, variable in self._variables.items():
            if _in_memory(variable):
                continue
            self._variables[name] = xr.Variable(variable.dims, _load(variable), variable.attrs)
        return self

    def _generator(self) -> np.random.Generator:
        """This process's random numbers (window starts): a worker's follow its torch seed, else ``seed``."""
        worker = get_worker_info()
        seed = None if worker is None else worker.seed
        if self._rng is None or self._rng[0] != seed:
            self._rng = (seed, np.random.default_rng(self.seed if worker is None else worker.seed))
        return self._rng[1]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_rng"] = None
        state["_variables"] = {
            name: (variable.dims, torch.from_numpy(variable.data), variable.attrs)
            if _in_memory(variable)
            else variable
            for name, variable in self._variables.items()
        }
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state["_variables"] = {
            name: xr.Variable(item[0], item[1].numpy(), item[2]) if isinstance(item, tuple) else item
            for name, item in state["_variables"].items()
        }
        self.__dict__.update(state)


def _read_release_files(reader: TrialReader, trials: np.ndarray, shared: dict[int, torch.Tensor] | None) -> np.ndarray:
    """``reader.read(trials)`` (in parts on every core: :func:`batch_parts`); into shared memory (recorded in ``shared``)
    when that is given and the files hold float32."""
    if shared is None or reader.dtype != np.float32:
        out = BLOCKS.get().empty((len(trials), *reader.header.shape), reader.dtype)
        return reader.read_parallel(trials, out, threads=len(batch_parts(len(trials), out.nbytes)))
    tensor = torch.empty((len(trials), *reader.header.shape), dtype=torch.float32).share_memory_()
    array = tensor.numpy()
    reader.read_into(trials, array)
    shared[id(array)] = tensor
    return array


def _original_arrays(data: Any) -> list[Any]:
    """The arrays a dask array was made from with ``from_array`` (xarray's ``chunk`` of a file's variable)."""
    graph = getattr(data, "dask", None)
    layers = getattr(graph, "layers", {})
    found = []
    for name, layer in layers.items():
        if str(name).startswith("original-"):
            found += [getattr(value, "value", value) for value in layer.values()]  # the array, or a task's data node
    return found


def lazily_indexed(variable: xr.Variable) -> xr.Variable:
    """``variable`` as xarray's lazily indexed array of its file, where it is just that file's array in dask chunks.

    NetCDF variables opened by neuroxr are dask arrays of whole blocks of trials: a batch of random
    trials from them would read (and decompress) every block it touches, whole. The lazily indexed
    array under the chunks reads only the HDF5 chunks of the trials taken (``.isel`` with the batch's
    trials). Zarr stores keep their dask blocks: zarr reads scattered inner chunks of a shard one by
    one, which measured slower than decoding whole shards with zarrs. Anything else (dask operations
    after opening, release files, numpy) is kept as is.

    >>> path = neuroxr.to_netcdf(neuroxr.make_scan(n_trials=40, n_neurons=10), tmp / "scan.nc")
    >>> variable = lazily_indexed(neuroxr.open(path).responses.variable)
    >>> variable.chunks is None, variable[{"trial": [3, 7]}].shape
    (True, (2, 10))
    """
    data = variable.data
    if not isinstance(data, dask.array.Array) or isinstance(data, WholeReadArray) or len(data.dask.layers) != 2:
        return variable
    originals = _original_arrays(data)
    if len(originals) != 1 or not isinstance(originals[0], xr_indexing.ImplicitToExplicitIndexingAdapter):
        return variable
    array = originals[0].array
    if type(_backend_arrays(variable)[0]).__module__ == "xarray.backends.zarr":
        return variable  # zarr reads scattered inner chunks one by one: whole shards in dask blocks are faster (benchmarks/bench_torch.py)
    if isinstance(array, xr_indexing.MemoryCachedArray):
        array = array.array  # never keep the whole variable in memory once it was read
    if array.shape != data.shape or array.dtype != data.dtype:
        return variable
    return xr.Variable(variable.dims, array, variable.attrs, encoding=variable.encoding)


def _backend_arrays(variable: xr.Variable) -> list[Any]:
    """The backends' arrays (zarr's, netCDF4's, ...) a variable reads from: under its lazy indexing, or its dask chunks."""
    data = variable._data if variable.chunks is None else None
    arrays = [data] if isinstance(data, xr_indexing.ExplicitlyIndexed) else _original_arrays(variable.data)
    found = []
    for array in arrays:
        while hasattr(array, "array"):
            array = array.array
        found.append(array)
    return found


def _reads_with_zarrs(array: Any) -> bool:
    zarr_array = getattr(array, "_array", None)
    pipeline = getattr(getattr(zarr_array, "_async_array", None), "codec_pipeline", None)
    return type(pipeline).__module__.split(".")[0] == "zarrs"


def _in_memory(variable: xr.Variable) -> bool:
    """A numpy variable (asking ``variable.data`` of a lazily indexed one would read it whole)."""
    return isinstance(variable._data, np.ndarray)


def _is_dask(variable: xr.Variable) -> bool:
    return variable.chunks is not None


def _load(variable: xr.Variable) -> np.ndarray:
    """A variable's values in memory, read once (release files straight into one array, in parallel threads)."""
    return np.asarray(variable.values)
