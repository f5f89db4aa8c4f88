"""Step 4 of the read path: the one builder of the data-model Dataset.

:func:`assemble` names a scan's parts as DESIGN.md says; :func:`build_dataset` hands it a
:class:`~neuroxr.layout.ScanLayout` (lazily indexed data variables, no dask), and the synthetic scans
hand it their generated parts. The xarray backend (``engine="sensorium"``) returns the result as it
is; ``neuroxr.open_scan`` adds dask chunks of whole trial blocks.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from xarray.core import indexing

from neuroxr import chunking, datamodel
from neuroxr.errors import ScanError
from neuroxr.layout import ScanLayout
from neuroxr.lazy import TrialReader, TrialStackArray


def _data_dims(name: str, shape: tuple[int, ...]) -> tuple[str, ...]:
    known = datamodel.DATA_DIMS.get(name)
    if name == "images" and len(shape) == 2:
        known = ("y", "x")
    if known is not None and len(known) == len(shape):
        return known
    return tuple(f"{name}_dim_{axis}" for axis in range(1, len(shape) + 1))


def _competition(layout: ScanLayout) -> bool:
    """Competition scans hash ``trial_idx`` and/or have a ``final_test`` tier."""
    trial_idx = layout.trials.get("trial_idx")
    hashed = trial_idx is not None and trial_idx.dtype.kind in "US"
    tiers = layout.trials.get("tiers")
    return hashed or (tiers is not None and bool(np.isin("final_test", tiers)))


def withheld_trials(layout: ScanLayout) -> np.ndarray:
    """Trials whose responses the release withholds (zeros on disk)."""
    tiers = layout.trials.get("tiers")
    if tiers is None or not _competition(layout):
        return np.zeros(layout.n_trials, dtype=bool)
    return np.isin(tiers.astype(str), datamodel.WITHHELD_TIERS)


def wholly_withheld(layout: ScanLayout, variable: str) -> bool:
    """A variable the release zeroes for every trial: its stored std is all zero."""
    std = layout.statistics.get(variable, {}).get(datamodel.MAIN_SUBSET, {}).get("std")
    return std is not None and std.size > 0 and bool(np.all(std == 0))


def _label_coords(dims: Iterable[str], sizes: Mapping[str, int]) -> dict[str, np.ndarray]:
    coords = {}
    for dim in dims:
        labels = datamodel.LABELS.get(dim)
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


def _statistics_variable(name: str, table: StatisticsTable, per_trial_dims: tuple[str, ...], per_trial_shape: tuple[int, ...]) -> xr.Variable:
    """``<name>_statistics`` with dims (subset, statistic, ...): trailing dims follow the stored shape."""
    trailing = tuple(table.values.shape[2:])
    if trailing == per_trial_shape:
        dims = per_trial_dims
    elif trailing == per_trial_shape[:1] and per_trial_dims:
        dims = per_trial_dims[:1]
    else:
        dims = tuple(f"{name}_statistics_dim_{axis}" for axis in range(1, len(trailing) + 1))
    attrs = datamodel.file_attrs(f"{datamodel.STATISTICS_DIR}/{name}")
    return xr.Variable(("subset", "statistic", *dims), table.values, attrs)


def assemble(
    *,
    data: Mapping[str, Any],
    trial_meta: Mapping[str, np.ndarray],
    neuron_meta: Mapping[str, np.ndarray],
    statistics: Mapping[str, StatisticsTable],
    responses_withheld: np.ndarray,
    attrs: Mapping[str, Any],
    trials_per_chunk: int | None = None,
) -> xr.Dataset:
    """The data-model Dataset from a scan's parts, named as DESIGN.md says; the one builder of it.

    ``data`` maps each ``data/<name>`` folder to its (trial, ...) array (lazily indexed or dask);
    ``trial_meta`` and ``neuron_meta`` map the ``meta/trials`` and ``meta/neurons`` file stems to their
    arrays (``unit_ids`` among the latter); ``statistics`` maps a data variable to its
    :class:`StatisticsTable`. ``attrs`` are the Dataset attributes (``scan``, ``release_name``,
    ``withheld``), completed with ``format``. ``trials_per_chunk`` is the preferred dask chunk.
    Both ``open_scan`` (through :func:`build_dataset`) and the synthetic scans build their Dataset here.
    """
    data_vars: dict[str, xr.Variable] = {}
    sizes: dict[str, int] = {datamodel.TRIAL: len(responses_withheld)}
    per_trial: dict[str, tuple[tuple[str, ...], tuple[int, ...]]] = {}
    for name, array in data.items():
        shape = tuple(int(size) for size in array.shape[1:])
        dims = _data_dims(name, shape)
        per_trial[name] = (dims, shape)
        sizes.update(zip(dims, shape))
        variable_attrs = datamodel.file_attrs(f"{datamodel.DATA_DIR}/{name}")
        if name in datamodel.LONG_NAMES:
            variable_attrs = {"long_name": datamodel.LONG_NAMES[name], **variable_attrs}
        encoding = {"preferred_chunks": {datamodel.TRIAL: trials_per_chunk}} if trials_per_chunk else {}
        data_vars[name] = xr.Variable((datamodel.TRIAL, *dims), array, variable_attrs, encoding=encoding)

    neurons = dict(neuron_meta)
    unit_ids = neurons.pop(datamodel.NEURON_INDEX_FILE)
    sizes[datamodel.NEURON] = len(unit_ids)
    neuron_coords = _meta_coords(datamodel.NEURONS_DIR, neurons, datamodel.NEURON, datamodel.NEURON_RENAMES, set())
    taken = set(neuron_coords) | set(data_vars) | set(datamodel.DATA_VARIABLES) | set(sizes) | {"subset", "statistic", "space"}
    rest = dict(trial_meta)
    first = {stem: rest.pop(stem) for stem in ("tiers", "frame_image_id", "trial_idx") if stem in rest}
    trial_coords = _meta_coords(datamodel.TRIALS_DIR, {**first, **rest}, datamodel.TRIAL, datamodel.TRIAL_RENAMES, taken)
    trial_coords[datamodel.WITHHELD_COORD] = xr.Variable(
        datamodel.TRIAL, np.asarray(responses_withheld, dtype=bool), {"long_name": datamodel.WITHHELD_LONG_NAME}
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
    coords.update(_label_coords(sorted(all_dims & set(sizes)), sizes))
    if subsets:
        coords["subset"] = np.array(subsets)
        coords["statistic"] = np.array(statistic_names)
    return xr.Dataset(data_vars, coords, {**attrs, "format": datamodel.FORMAT})


def _layout_statistics(layout: ScanLayout, variable: str) -> StatisticsTable:
    """The stored statistics of a variable as one array (NaN where a file is absent); shapes must agree."""
    subsets = layout.statistics[variable]
    subset_names = sorted(subsets, key=lambda s: (s != datamodel.MAIN_SUBSET, s))
    present = {stat for stats in subsets.values() for stat in stats}
    stat_names = [s for s in datamodel.STATISTICS if s in present] + sorted(present - set(datamodel.STATISTICS))
    trailing = next(iter(next(iter(subsets.values())).values())).shape
    dtype = np.result_type(*(a.dtype for stats in subsets.values() for a in stats.values()), np.float32)
    values = np.full((len(subset_names), len(stat_names), *trailing), np.nan, dtype=dtype)
    for i, subset in enumerate(subset_names):
        for j, stat in enumerate(stat_names):
            array = subsets[subset].get(stat)
            if array is None:
                continue
            if array.shape != trailing:
                relative = datamodel.statistics_file(variable, subset, stat)
                raise ScanError(layout.source.label(relative), f"shape {array.shape} differs from {trailing} of the other statistics")
            values[i, j] = array
    return StatisticsTable(subset_names, stat_names, values)


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
        if rows is not None:
            masked.append(name)
        if name not in drop:
            reader = TrialReader(variable.files, variable.header, rows)
            data[name] = indexing.LazilyIndexedArray(TrialStackArray(reader, layout.n_trials))
    statistics = {
        name: _layout_statistics(layout, name) for name in layout.variables if name in layout.statistics and name not in drop
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
    )


def tree_of(scans: Mapping[str, xr.Dataset]) -> xr.DataTree:
    """A DataTree with one child per scan under a root that holds only attributes."""
    root = xr.Dataset(attrs={"format": datamodel.FORMAT, "scans": ",".join(scans)})
    return xr.DataTree.from_dict({"/": root, **{f"/{key}": ds for key, ds in scans.items()}})


def load_labels(ds: xr.Dataset) -> xr.Dataset:
    """Bring the small variables into memory, in one pass: every non-index coordinate and everything without ``trial``."""
    import dask

    small = [
        name
        for name, variable in ds.variables.items()
        if name not in ds.indexes and (name in ds.coords or datamodel.TRIAL not in variable.dims)
    ]
    loaded = dict(zip(small, dask.compute(*(ds.variables[name] for name in small))))
    coords = {name: variable for name, variable in loaded.items() if name in ds.coords}
    data = {name: variable for name, variable in loaded.items() if name not in ds.coords}
    return ds.assign_coords(coords).assign(data)
