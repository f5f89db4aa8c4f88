"""The Dataset builder: a scan's layout named per the data model, and ``open_scan``.

``build_dataset`` turns a :class:`~neuroxr.layout.ScanLayout` into the ``xarray.Dataset`` of
DESIGN.md with lazily indexed data variables; the xarray backend (``engine="sensorium"``) returns it
as it is, and ``open_scan`` adds dask chunks of whole trial blocks.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterable, Mapping

import numpy as np
import xarray as xr
from xarray.core import indexing

from neuroxr import model
from neuroxr.errors import ScanError
from neuroxr.layout import ScanLayout
from neuroxr.lazy import TrialReader, TrialStackArray
from neuroxr.lazy import trials_per_chunk as default_trials_per_chunk


def _file_attrs(relative: str) -> dict[str, str]:
    return {model.FILE_ATTR: relative}


def _data_dims(name: str, shape: tuple[int, ...]) -> tuple[str, ...]:
    known = model.DATA_DIMS.get(name)
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
    return np.isin(tiers.astype(str), model.WITHHELD_TIERS)


def wholly_withheld(layout: ScanLayout, variable: str) -> bool:
    """A variable the release zeroes for every trial: its stored std is all zero."""
    std = layout.statistics.get(variable, {}).get(model.MAIN_SUBSET, {}).get("std")
    return std is not None and std.size > 0 and bool(np.all(std == 0))


def _label_coords(dims: Iterable[str], sizes: Mapping[str, int]) -> dict[str, np.ndarray]:
    coords = {}
    for dim in dims:
        labels = model.LABELS.get(dim)
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
            name = model.TRIAL_CLASH_PREFIX + name
        if array.ndim == 2 and stem == "cell_motor_coordinates" and array.shape[1] == len(model.SPACE_AXES):
            dims: tuple[str, ...] = (dim, "space")
        else:
            dims = (dim, *(f"{name}_dim_{axis}" for axis in range(1, array.ndim)))
        coords[name] = xr.Variable(dims, array, _file_attrs(f"{directory}/{stem}.npy"))
    return coords


def _statistics(layout: ScanLayout, variable: str, per_trial_dims: tuple[str, ...], shape: tuple[int, ...]) -> xr.Variable:
    """``<variable>_statistics`` with dims (subset, statistic, ...); NaN where a file is absent."""
    subsets = layout.statistics[variable]
    subset_names = sorted(subsets, key=lambda s: (s != model.MAIN_SUBSET, s))
    present = {stat for stats in subsets.values() for stat in stats}
    stat_names = [s for s in model.STATISTICS if s in present] + sorted(present - set(model.STATISTICS))
    first = next(iter(next(iter(subsets.values())).values()))
    trailing = first.shape
    if trailing == shape:
        dims = per_trial_dims
    elif trailing == shape[:1] and per_trial_dims:
        dims = per_trial_dims[:1]
    else:
        dims = tuple(f"{variable}_statistics_dim_{axis}" for axis in range(1, len(trailing) + 1))
    dtype = np.result_type(*(a.dtype for stats in subsets.values() for a in stats.values()), np.float32)
    values = np.full((len(subset_names), len(stat_names), *trailing), np.nan, dtype=dtype)
    for i, subset in enumerate(subset_names):
        for j, stat in enumerate(stat_names):
            array = subsets[subset].get(stat)
            if array is None:
                continue
            if array.shape != trailing:
                relative = model.statistics_file(variable, subset, stat)
                raise ScanError(layout.source.label(relative), f"shape {array.shape} differs from {trailing} of the other statistics")
            values[i, j] = array
    variable_obj = xr.Variable(("subset", "statistic", *dims), values, _file_attrs(f"{model.STATISTICS_DIR}/{variable}"))
    variable_obj.encoding["subsets"] = subset_names
    variable_obj.encoding["statistics"] = stat_names
    return variable_obj


def build_dataset(
    layout: ScanLayout,
    *,
    drop_variables: Iterable[Hashable] | None = None,
    mask_withheld: bool = True,
    trials_per_chunk: int | None = None,
) -> xr.Dataset:
    """The data-model Dataset of a scan, data variables as lazily indexed arrays (no dask).

    >>> from neuroxr.layout import read_layout
    >>> ds = build_dataset(read_layout("scan_folder"))  # doctest: +SKIP
    """
    drop = {str(name) for name in (drop_variables or ())}
    withheld_rows = withheld_trials(layout)
    masked: list[str] = []
    data_vars: dict[str, xr.Variable] = {}
    sizes: dict[str, int] = {"trial": layout.n_trials}
    chunk = trials_per_chunk or default_trials_per_chunk(
        max(v.header.payload_bytes for v in layout.variables.values()), layout.n_trials
    )

    for name, variable in layout.variables.items():
        dims = _data_dims(name, variable.header.shape)
        sizes.update(zip(dims, variable.header.shape))
        rows = None
        if mask_withheld and name == "responses" and withheld_rows.any():
            rows = withheld_rows
        elif mask_withheld and name in ("behavior", "pupil_center") and wholly_withheld(layout, name):
            rows = np.ones(layout.n_trials, dtype=bool)
        if rows is not None:
            masked.append(name)
        if name in drop:
            continue
        reader = TrialReader(variable.series, variable.header, rows)
        lazy = indexing.LazilyIndexedArray(TrialStackArray(reader, layout.n_trials))
        attrs = {model.FILE_ATTR: f"{model.DATA_DIR}/{name}"}
        if name in model.LONG_NAMES:
            attrs["long_name"] = model.LONG_NAMES[name]
        data_vars[name] = xr.Variable(("trial", *dims), lazy, attrs, encoding={"preferred_chunks": {"trial": chunk}})

    neurons = dict(layout.neurons)
    unit_ids = neurons.pop(model.NEURON_INDEX_FILE)
    sizes["neuron"] = len(unit_ids)
    neuron_coords = _meta_coords(model.NEURONS_DIR, neurons, "neuron", model.NEURON_RENAMES, set())
    taken = set(neuron_coords) | set(data_vars) | set(model.DATA_VARIABLES) | set(sizes) | {"subset", "statistic", "space"}
    trial_meta = dict(layout.trials)
    ordered = {stem: trial_meta.pop(stem) for stem in ("tiers", "frame_image_id", "trial_idx") if stem in trial_meta}
    trial_coords = _meta_coords(model.TRIALS_DIR, {**ordered, **trial_meta}, "trial", model.TRIAL_RENAMES, taken)
    trial_coords[model.WITHHELD_COORD] = xr.Variable(
        "trial", withheld_rows, {"long_name": model.WITHHELD_LONG_NAME}
    )

    for name in list(layout.variables):
        if name in layout.statistics and name not in drop:
            dims = _data_dims(name, layout.variables[name].header.shape)
            data_vars[model.statistics_name(name)] = _statistics(layout, name, dims, layout.variables[name].header.shape)

    coords: dict[str, xr.Variable | np.ndarray] = {
        "trial": xr.Variable("trial", np.arange(layout.n_trials, dtype=np.int64)),
        "neuron": xr.Variable("neuron", unit_ids, _file_attrs(f"{model.NEURONS_DIR}/{model.NEURON_INDEX_FILE}.npy")),
        **trial_coords,
        **neuron_coords,
    }
    all_dims = {dim for variable in [*data_vars.values(), *neuron_coords.values()] for dim in variable.dims}
    sizes.update({"space": len(model.SPACE_AXES)} if "space" in all_dims else {})
    for variable in data_vars.values():
        sizes.update(zip(variable.dims, variable.shape))
    coords.update(_label_coords(sorted(all_dims & set(sizes)), sizes))
    stats = [v for v in data_vars.values() if "subset" in v.dims]
    if stats:
        coords["subset"] = np.array(max((v.encoding["subsets"] for v in stats), key=len))
        coords["statistic"] = np.array(max((v.encoding["statistics"] for v in stats), key=len))
        for variable in stats:
            del variable.encoding["subsets"], variable.encoding["statistics"]

    attrs = {
        "scan": layout.scan_key,
        "format": model.FORMAT,
        "release_name": layout.release_name,
        "withheld": ",".join(masked),
    }
    return xr.Dataset(data_vars, coords, attrs)


def _normalise_chunks(chunks: object) -> tuple[object, int | None]:
    """xarray ``chunks=`` for a user's value, and the trial block it asks for (if a whole number)."""
    if chunks is None:
        return {}, None
    if isinstance(chunks, int) and not isinstance(chunks, bool):
        return {"trial": chunks}, chunks
    if isinstance(chunks, Mapping) and isinstance(chunks.get("trial"), int):
        return chunks, int(chunks["trial"])
    return chunks, None


def open_scan(
    path: str | os.PathLike[str],
    *,
    chunks: int | str | Mapping[str, int] | None = None,
    mask_withheld: bool = True,
    drop_variables: Iterable[str] | None = None,
    storage_options: dict | None = None,
) -> xr.Dataset:
    """Open a Sensorium scan (folder, .zip, a folder holding one scan, or an fsspec URL) as one lazy, labelled Dataset.

    Only the listing, ``meta/`` and one header per variable are read. Data variables are dask arrays
    with one task per block of trials (about 64 MB per chunk; ``chunks=500`` asks for 500 trials per
    chunk, any xarray ``chunks=`` also works); label coordinates are in memory. A URL
    (``https://.../scan.zip``, ``s3://bucket/scan/``) is read in place with range requests;
    ``storage_options`` go to fsspec.

    >>> import neuroxr
    >>> ds = neuroxr.open_scan("static21067-10-18-GrayImageNet-94c6ff995dac583098847cfecd43e7b6.zip")  # doctest: +SKIP
    >>> ds.responses.sel(trial=ds.tier == "test").groupby("image_id").mean()  # doctest: +SKIP
    """
    from neuroxr.backend import SensoriumBackendEntrypoint

    chunks, block = _normalise_chunks(chunks)
    ds = xr.open_dataset(
        path,
        engine=SensoriumBackendEntrypoint,
        chunks=chunks,
        mask_withheld=mask_withheld,
        drop_variables=drop_variables,
        trials_per_chunk=block,
        storage_options=storage_options,
    )
    return load_labels(ds)


def load_labels(ds: xr.Dataset) -> xr.Dataset:
    """Bring the small variables into memory, in one pass: every non-index coordinate and everything without ``trial``."""
    import dask

    small = [
        name
        for name, variable in ds.variables.items()
        if name not in ds.indexes and (name in ds.coords or "trial" not in variable.dims)
    ]
    loaded = dict(zip(small, dask.compute(*(ds.variables[name] for name in small))))
    coords = {name: variable for name, variable in loaded.items() if name in ds.coords}
    data = {name: variable for name, variable in loaded.items() if name not in ds.coords}
    return ds.assign_coords(coords).assign(data)
