"""Step 4 of the read path: the one builder of the data-model Dataset, for both kinds of scan.

:func:`assemble` names a scan's parts as DESIGN.md says, reading what differs between a 2022 image
scan and a 2023 video scan from its :class:`~neuroxr.datamodel.ReleaseKind`; :func:`build_dataset`
hands it a :class:`~neuroxr.layout.ScanLayout` (lazily indexed data variables, no dask), and the
synthetic scans hand it their generated parts. The xarray backend (``engine="sensorium"``) returns
the result as it is; ``neuroxr.open_scan`` adds dask chunks of whole trial blocks.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr
from xarray.core import indexing

from neuroxr import chunking, datamodel
from neuroxr.layout import ScanLayout, stored_std_all_zero
from neuroxr.layout.frames import FrameCountCheck, FrameCounts
from neuroxr.layout.withheld import StoredZerosCheck, holds_only_zeros
from neuroxr.lazy import BlockCheck, FileGridArray, TrialReader, TrialStackArray


def _data_dims(kind: datamodel.ReleaseKind, name: str, shape: tuple[int, ...], n_frames: int | None) -> tuple[str, ...]:
    """Per-trial dims in stored order: the kind's, else generic ones (a trailing time axis is ``frame``)."""
    known = kind.data_dims.get(name)
    if name == "images" and len(shape) == 2:
        known = ("y", "x")
    if known is not None and len(known) == len(shape):
        return known
    dims = [f"{name}_dim_{axis}" for axis in range(1, len(shape) + 1)]
    if kind.time_dim is not None and shape and shape[-1] == n_frames:
        dims[-1] = kind.time_dim
    return tuple(dims)


def _competition(layout: ScanLayout) -> bool:
    """Competition scans hash ``trial_idx`` and/or have a ``final_test`` tier."""
    trial_idx = layout.trials.get("trial_idx")
    hashed = trial_idx is not None and trial_idx.dtype.kind in "US"
    tiers = layout.trials.get("tiers")
    return hashed or (tiers is not None and bool(np.isin("final_test", tiers)))


#: Payload bytes of a test tier's first responses looked at before it is read whole (only zeros there: read it whole).
ZEROS_PROBE = 2**16


def withheld_trials(layout: ScanLayout) -> np.ndarray:
    """Trials whose responses the release withholds (zeros on disk), by the rule of the scan's kind.

    2022: the test and final_test trials of a competition scan. 2023: the trials of each test tier
    whose first trial holds only zeros (and NaN padding): its first :data:`ZEROS_PROBE` bytes are read
    first, and only where they hold only zeros the whole trial; the others are checked as they are read.
    """
    none = np.zeros(layout.n_trials, dtype=bool)
    tiers = layout.trials.get("tiers")
    if tiers is None:
        return none
    tiers = tiers.astype(str)
    candidates = np.isin(tiers, layout.kind.withheld_tiers)
    if layout.kind.withheld_rule == datamodel.WITHHELD_IN_COMPETITION_SCANS:
        return candidates if _competition(layout) else none
    if "responses" not in layout.variables:
        return candidates
    withheld = none.copy()
    for tier in np.unique(tiers[candidates]).tolist():
        rows = tiers == tier
        first = int(np.argmax(rows))
        start = layout.read_trial_start("responses", first, ZEROS_PROBE)  # real responses show in their first values
        if (start is None or holds_only_zeros(start)) and holds_only_zeros(layout.read_trial("responses", first)):
            withheld |= rows
    return withheld


def wholly_withheld(layout: ScanLayout, variable: str) -> bool:
    """A variable the release zeroes for every trial: its stored std is all zero."""
    return stored_std_all_zero(layout, variable)


def _label_coords(kind: datamodel.ReleaseKind, dims: Iterable[str], sizes: Mapping[str, int]) -> dict[str, np.ndarray]:
    coords = {}
    for dim in dims:
        labels = kind.labels.get(dim)
        if labels is not None and len(labels) == sizes[dim]:
            coords[dim] = np.array(labels)
        elif dim in ("channel", "y", "x"):
            coords[dim] = np.arange(sizes[dim], dtype=np.int64)
    return coords


def _meta_coords(
    directory: str, arrays: Mapping[str, np.ndarray], dim: str, renames: Mapping[str, str], taken: set[str]
) -> dict[str, xr.Variable]:
    coords = {}
    for stem, array in arrays.items():
        name = renames.get(stem, stem)
        if name in taken:
            name = datamodel.TRIAL_CLASH_PREFIX + name
        if array.ndim == 2 and stem == "cell_motor_coordinates" and array.shape[1] == len(datamodel.SPACE_AXES):
            dims: tuple[str, ...] = (dim, "space")
        else:
            dims = (dim, *(f"{name}_dim_{axis}" for axis in range(1, array.ndim)))
        coords[name] = xr.Variable(dims, array, datamodel.file_attrs(f"{directory}/{stem}.npy"))
    return coords



@dataclass(frozen=True)
class StatisticsTable:
    """One variable's statistics: ``values`` of shape (subset, statistic, ...), lazy or in memory."""

    subsets: list[str]
    statistics: list[str]
    values: Any  #: a numpy array, or a lazily indexed array (xarray's ``LazilyIndexedArray``)
    #: ``"<subset>/<statistic>"`` -> dtype of the files stored in another dtype than ``values`` (written back so)
    file_dtypes: Mapping[str, str] = field(default_factory=dict)


def statistics_dims(
    name: str, trailing: tuple[int, ...], per_trial_dims: tuple[str, ...], per_trial_shape: tuple[int, ...]
) -> tuple[str, ...]:
    """The dims of stored statistics of shape ``trailing`` of a variable whose trials have ``per_trial_shape``.

    In this order: the trial's own shape; its leading axes (a per-neuron std of (neuron, frame)
    responses); its trailing axes as numpy broadcasting aligns them (how the official normaliser
    applies statistics), a size-1 axis getting a dim of its own; the trial's axes but for a time
    axis of another length (``<name>_statistics_frame``); else dims of their own.

    >>> statistics_dims("responses", (8, 1), ("neuron", "frame"), (8, 300))
    ('neuron', 'responses_statistics_dim_2')
    >>> statistics_dims("responses", (8, 290), ("neuron", "frame"), (8, 300))
    ('neuron', 'responses_statistics_frame')
    """
    own = tuple(f"{name}_statistics_dim_{axis}" for axis in range(1, len(trailing) + 1))
    k = len(trailing)
    if trailing == per_trial_shape[:k]:
        return per_trial_dims[:k]
    if 0 < k <= len(per_trial_shape):
        tail = per_trial_shape[-k:]
        if all(size in (1, wanted) for size, wanted in zip(trailing, tail)):
            return tuple(dim if size == wanted else mine for size, wanted, dim, mine in zip(trailing, tail, per_trial_dims[-k:], own))
    if per_trial_dims and per_trial_dims[-1] == datamodel.FRAME and k == len(per_trial_shape) and trailing[:-1] == per_trial_shape[:-1]:
        return (*per_trial_dims[:-1], f"{name}_statistics_{datamodel.FRAME}")
    return own


def _statistics_variable(name: str, table: StatisticsTable, per_trial_dims: tuple[str, ...], per_trial_shape: tuple[int, ...]) -> xr.Variable:
    """``<name>_statistics`` with dims (subset, statistic, ...): trailing dims follow the stored shape."""
    dims = statistics_dims(name, tuple(table.values.shape[2:]), per_trial_dims, per_trial_shape)
    attrs = datamodel.file_attrs(f"{datamodel.STATISTICS_DIR}/{name}")
    if table.file_dtypes:
        attrs[datamodel.FILE_DTYPES_ATTR] = [f"{file}={dtype}" for file, dtype in table.file_dtypes.items()]
    encoding = {"preferred_chunks": {"subset": 1, "statistic": 1}}  # a dask block per file: computing one reads one
    return xr.Variable(("subset", "statistic", *dims), table.values, attrs, encoding=encoding)


def assemble(
    *,
    data: Mapping[str, Any],
    trial_meta: Mapping[str, np.ndarray],
    neuron_meta: Mapping[str, np.ndarray],
    statistics: Mapping[str, StatisticsTable],
    responses_withheld: np.ndarray,
    attrs: Mapping[str, Any],
    trials_per_chunk: int | None = None,
    kind: datamodel.ReleaseKind = datamodel.STATIC,
    n_frames: FrameCounts | None = None,
) -> xr.Dataset:
    """The data-model Dataset from a scan's parts, named as DESIGN.md says; the one builder of it.

    ``data`` maps each ``data/<name>`` folder to its (trial, ...) array (lazily indexed or dask);
    ``trial_meta`` and ``neuron_meta`` map the ``meta/trials`` and ``meta/neurons`` file stems to their
    arrays (``unit_ids`` among the latter); ``statistics`` maps a data variable to its
    :class:`StatisticsTable`. ``attrs`` are the Dataset attributes (``scan``, ``release_name``,
    ``withheld``), completed with ``format`` (and ``frame_rate`` for a video scan). ``kind`` says
    which release the parts are from; ``n_frames`` are a video scan's trial lengths.
    ``trials_per_chunk`` is the preferred dask chunk. Both ``open_scan`` (through
    :func:`build_dataset`) and the synthetic scans build their Dataset here.
    """
    data_vars: dict[str, xr.Variable] = {}
    sizes: dict[str, int] = {datamodel.TRIAL: len(responses_withheld)}
    per_trial: dict[str, tuple[tuple[str, ...], tuple[int, ...]]] = {}
    padded = next((int(array.shape[-1]) for name, array in data.items() if kind.data_dims.get(name, ())[-1:] == (kind.time_dim,)), None)
    long_names = datamodel.LONG_NAMES_DYNAMIC if kind.time_dim else datamodel.LONG_NAMES
    for name, array in data.items():
        shape = tuple(int(size) for size in array.shape[1:])
        dims = _data_dims(kind, name, shape, padded)
        per_trial[name] = (dims, shape)
        sizes.update(zip(dims, shape))
        variable_attrs = datamodel.file_attrs(f"{datamodel.DATA_DIR}/{name}")
        if name in long_names:
            variable_attrs = {"long_name": long_names[name], **variable_attrs}
        encoding = {"preferred_chunks": {datamodel.TRIAL: trials_per_chunk}} if trials_per_chunk else {}
        data_vars[name] = xr.Variable((datamodel.TRIAL, *dims), array, variable_attrs, encoding=encoding)

    neurons = dict(neuron_meta)
    unit_ids = neurons.pop(datamodel.NEURON_INDEX_FILE)
    sizes[datamodel.NEURON] = len(unit_ids)
    neuron_coords = _meta_coords(datamodel.NEURONS_DIR, neurons, datamodel.NEURON, datamodel.NEURON_RENAMES, set())
    derived = {datamodel.WITHHELD_COORD, datamodel.N_FRAMES, datamodel.TIME}
    taken = set(neuron_coords) | set(data_vars) | set(kind.data_variables) | set(sizes) | {"subset", "statistic", "space"} | derived
    rest = dict(trial_meta)
    first = {stem: rest.pop(stem) for stem in ("tiers", "frame_image_id", "trial_idx") if stem in rest}
    trial_coords = _meta_coords(datamodel.TRIALS_DIR, {**first, **rest}, datamodel.TRIAL, datamodel.TRIAL_RENAMES, taken)
    trial_coords[datamodel.WITHHELD_COORD] = xr.Variable(
        datamodel.TRIAL, np.asarray(responses_withheld, dtype=bool), {"long_name": datamodel.WITHHELD_LONG_NAME}
    )
    if n_frames is not None:
        trial_coords[datamodel.N_FRAMES] = xr.Variable(
            datamodel.TRIAL,
            np.asarray(n_frames.values, dtype=np.int64),
            {"long_name": datamodel.N_FRAMES_LONG_NAME},
        )

    subsets: list[str] = []
    statistic_names: list[str] = []
    for name, table in statistics.items():
        if name in per_trial:
            data_vars[datamodel.statistics_name(name)] = _statistics_variable(name, table, *per_trial[name])
            subsets = max(subsets, table.subsets, key=len)
            statistic_names = max(statistic_names, table.statistics, key=len)

    coords: dict[str, Any] = {
        datamodel.TRIAL: xr.Variable(datamodel.TRIAL, np.arange(sizes[datamodel.TRIAL], dtype=np.int64)),
        datamodel.NEURON: xr.Variable(
            datamodel.NEURON, unit_ids, datamodel.file_attrs(f"{datamodel.NEURONS_DIR}/{datamodel.NEURON_INDEX_FILE}.npy")
        ),
        **trial_coords,
        **neuron_coords,
    }
    all_dims = {dim for variable in [*data_vars.values(), *neuron_coords.values()] for dim in variable.dims}
    if "space" in all_dims:
        sizes["space"] = len(datamodel.SPACE_AXES)
    for variable in data_vars.values():
        sizes.update(zip(variable.dims, variable.shape))
    coords.update(_label_coords(kind, sorted(all_dims & set(sizes)), sizes))
    dataset_attrs = {**attrs, "format": kind.format}
    if kind.time_dim is not None and kind.time_dim in sizes:
        coords.update(_time_coords(sizes[kind.time_dim], kind))
        dataset_attrs[datamodel.FRAME_RATE_ATTR] = kind.frame_rate
    if subsets:
        coords["subset"] = np.array(subsets)
        coords["statistic"] = np.array(statistic_names)
    ds = xr.Dataset(data_vars, coords, dataset_attrs)
    for name, variable in ds.variables.items():  # CF long names and units, where the data model has them
        variable.attrs = {**datamodel.cf_attrs(str(name)), **variable.attrs}
    return ds


def _time_coords(n_frames: int, kind: datamodel.ReleaseKind) -> dict[str, xr.Variable]:
    """``frame`` (0..T-1) and ``time`` on it: seconds from trial start, ``frame / frame_rate``."""
    frame = kind.time_dim
    seconds = np.arange(n_frames, dtype=np.float64) / float(kind.frame_rate)  # type: ignore[arg-type]
    return {
        frame: xr.Variable(frame, np.arange(n_frames, dtype=np.int64)),  # type: ignore[dict-item]
        datamodel.TIME: xr.Variable(frame, seconds, {"units": "s", "long_name": f"time from trial start ({kind.frame_rate:g} Hz)"}),
    }


def _layout_statistics(layout: ScanLayout, variable: str) -> StatisticsTable:
    """The stored statistics of a variable as one lazily indexed array (NaN where a file is absent; the layout
    checked the shapes), read from the files when indexed: only the (subset, statistic) cells asked for.

    The array has the widest dtype of the files; files stored narrower are recorded, to be written back so.
    """
    subsets = layout.statistics[variable]
    subset_names = sorted(subsets, key=lambda s: (s != datamodel.MAIN_SUBSET, s))
    present = {stat for stats in subsets.values() for stat in stats}
    stat_names = [s for s in datamodel.STATISTICS if s in present] + sorted(present - set(datamodel.STATISTICS))
    trailing = next(iter(next(iter(subsets.values())).values())).header.shape
    dtype = np.result_type(*(f.header.dtype for stats in subsets.values() for f in stats.values()), np.float32)
    cells = {}
    file_dtypes = {}
    for i, subset in enumerate(subset_names):
        for j, stat in enumerate(stat_names):
            stored = subsets[subset].get(stat)
            if stored is None:
                continue
            cells[i, j] = (stored.number, stored.header)
            if stored.header.dtype != dtype:
                file_dtypes[f"{subset}/{stat}"] = stored.header.dtype.str
    assert layout.statistics_files is not None  # the layout lists the files of its statistics
    grid = FileGridArray(layout.statistics_files, cells, (len(subset_names), len(stat_names), *trailing), dtype)
    return StatisticsTable(subset_names, stat_names, indexing.LazilyIndexedArray(grid), file_dtypes)


def build_dataset(
    layout: ScanLayout,
    *,
    drop_variables: Iterable[Hashable] | None = None,
    mask_withheld: bool = True,
    trials_per_chunk: int | None = None,
) -> xr.Dataset:
    """The data-model Dataset of a scan, data variables as lazily indexed arrays (no dask).

    >>> from neuroxr.layout import read_layout
    >>> ds = build_dataset(read_layout(neuroxr.write_scan(tmp / "scan", n_trials=40, n_neurons=10)))
    >>> ds.responses.dims, ds.responses.chunks  # lazily indexed, no dask
    (('trial', 'neuron'), None)
    >>> ds.responses.isel(trial=[3, 7]).values.shape  # reads the files of trials 3 and 7
    (2, 10)
    """
    drop = {str(name) for name in (drop_variables or ())}
    kind = layout.kind
    withheld_rows = withheld_trials(layout)
    masked: list[str] = []
    data: dict[str, Any] = {}
    chunk = trials_per_chunk or chunking.trials_per_chunk(
        max(v.header.payload_bytes for v in layout.variables.values()), layout.n_trials
    )
    for name, variable in layout.variables.items():
        rows = None
        if mask_withheld and name == "responses" and withheld_rows.any():
            rows = withheld_rows
        elif mask_withheld and name in ("behavior", "pupil_center") and wholly_withheld(layout, name):
            rows = np.ones(layout.n_trials, dtype=bool)
        checks: list[BlockCheck] = []
        if rows is not None:
            masked.append(name)
            checks.append(StoredZerosCheck(rows, name))
        if name == kind.stimulus and layout.n_frames is not None:
            checks.append(FrameCountCheck(layout.n_frames.values, layout.n_frames.source))
        frames = None
        if layout.n_frames is not None and kind.data_dims.get(name, ())[-1:] == (kind.time_dim,):
            frames = layout.n_frames.values  # withheld cells are the trial's frames, not its padding
        if name not in drop:
            reader = TrialReader(variable.files, variable.header, rows, checks, frames)
            data[name] = indexing.LazilyIndexedArray(TrialStackArray(reader, layout.n_trials))
    statistics = {
        name: _layout_statistics(layout, name)
        for name in layout.variables
        if name in layout.statistics and name not in drop and datamodel.statistics_name(name) not in drop
    }
    attrs = {"scan": layout.scan_key, "release_name": layout.release_name, datamodel.WITHHELD_ATTR: ",".join(masked)}
    return assemble(
        data=data,
        trial_meta=layout.trials,
        neuron_meta=layout.neurons,
        statistics=statistics,
        responses_withheld=withheld_rows,
        attrs=attrs,
        trials_per_chunk=chunk,
        kind=kind,
        n_frames=layout.n_frames,
    )


def tree_of(scans: Mapping[str, xr.Dataset]) -> xr.DataTree:
    """A DataTree with one child per scan under a root that holds only attributes.

    The root's ``format`` names the scans' formats (sorted, comma-separated when image and video scans are mixed).
    """
    formats = sorted({str(ds.attrs.get("format", datamodel.FORMAT)) for ds in scans.values()}) or [datamodel.FORMAT]
    root = xr.Dataset(attrs={"format": ",".join(formats), "scans": ",".join(scans)})
    return xr.DataTree.from_dict({"/": root, **{f"/{key}": ds for key, ds in scans.items()}})


def load_labels(ds: xr.Dataset, lazy: Iterable[Hashable] = ()) -> xr.Dataset:
    """Bring the small variables into memory, in one pass: every non-index coordinate and everything without
    ``trial``, but the variables named in ``lazy``."""
    import dask

    left = set(lazy)
    small = [
        name
        for name, variable in ds.variables.items()
        if name not in ds.indexes and name not in left and (name in ds.coords or datamodel.TRIAL not in variable.dims)
    ]
    loaded = dict(zip(small, dask.compute(*(ds.variables[name] for name in small))))
    coords = {name: variable for name, variable in loaded.items() if name in ds.coords}
    data = {name: variable for name, variable in loaded.items() if name not in ds.coords}
    return ds.assign_coords(coords).assign(data)
