"""Standardisation: a scan on the scale the official Sensorium loader feeds to models.

``standardize`` applies what neuralpredictors' ``NeuroNormalizer`` does trial by trial, to the whole
Dataset at once and lazily, for both releases (the 2023 loader builds it with ``in_name="videos"``: the
statistics of ``videos`` take the place of those of ``images``):

- ``images`` / ``videos``: ``(x - mean) / std`` with the stimulus statistics (scalars in 2022,
  per pixel and frame in 2023);
- ``responses``: ``x * precision``, ``precision = 1 / std``, where a std at or below 1% of the mean of
  every std entry (over neurons, and frames where the statistics are time-resolved) is replaced by that
  threshold (the "standardised responses" the metrics use);
- ``behavior``: ``x / std`` (no mean subtraction, as the official loader does);
- ``pupil_center``: ``(x - mean) / std``.

Statistics broadcast by dimension name. Stored statistics with a size-1 axis the data lack ((N, 1), as
numpy broadcasting wants them) are squeezed; statistics of a video scan with another number of frames
than its trials (``<name>_statistics_frame``) are used frame by frame, cropped to the trials' frames,
NaN for frames they lack.

The statistics are the stored ones (``*_statistics``, subset ``all``, computed on the train tier by the
release), or, with ``statistics="train"``, computed lazily from the train tier of the Dataset itself
(std with ``ddof=1``, kept in float32 like the stored ones). Where a std is zero or missing (a scan whose
behaviour is withheld stores an all-zero std), the division is not done: those values read NaN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import xarray as xr

from neuroxr import datamodel
from neuroxr.errors import DatasetError

#: The official threshold: a response std below this fraction of the mean std is raised to it.
RESPONSE_STD_FLOOR = 0.01
#: Dataset attribute naming the standardised variables, and the one naming the statistics used.
STANDARDIZED_ATTR = "standardized"
STATISTICS_ATTR = "standardization_statistics"
#: Variable attribute describing the transform applied to it.
TRANSFORM_ATTR = "standardization"

StatisticsSource = Literal["stored", "train"]

_TRANSFORMS = {
    "images": "(x - mean) / std",
    "videos": "(x - mean) / std",
    "responses": "x * precision, precision = 1 / max(std, 0.01 * mean over neurons of std)",
    "behavior": "x / std",
    "pupil_center": "(x - mean) / std",
}


def response_precision_from_std(std: np.ndarray) -> np.ndarray:
    """The official response precision of a std array (per neuron, or per neuron and frame).

    ``threshold = 0.01 * nanmean(std)`` over every entry; ``precision = 1 / std`` where
    ``std > threshold``, else ``1 / threshold`` (NaN entries too); NaN where the threshold is not positive.

    >>> response_precision_from_std(np.array([2.0, 0.0, 4.0], dtype=np.float32))
    array([ 0.5 , 50.  ,  0.25], dtype=float32)
    """
    std = np.asarray(std)
    with np.errstate(divide="ignore", invalid="ignore"):
        known = ~np.isnan(std)
        mean_std = np.where(known, std, 0).sum(keepdims=True) / known.sum(keepdims=True)
        threshold = RESPONSE_STD_FLOOR * mean_std.astype(std.dtype)
        above = std > threshold
        precision = np.where(above, 1 / np.where(above, std, 1), 1 / threshold)
        precision = np.where(threshold > 0, precision, np.nan)
    return precision.astype(std.dtype, copy=False)


def _reciprocal_or_nan(std: xr.DataArray) -> xr.DataArray:
    """``1 / std`` where ``std > 0``, NaN elsewhere (no division by zero, lazy if ``std`` is)."""
    return 1 / std.where(std > 0)


def _statistic(statistics: xr.Dataset, data: xr.DataArray, variable: str, statistic: str, release: str) -> xr.DataArray:
    """One statistic (subset ``all``) of ``variable`` from a Dataset of ``*_statistics``; checks what it finds."""
    name = datamodel.statistics_name(variable)
    relative = datamodel.statistics_file(variable, datamodel.MAIN_SUBSET, statistic)
    hint = "; pass statistics='train' to compute the statistics from the train tier"

    def problem(text: str) -> DatasetError:
        return DatasetError(f"{release}: the {statistic} of {variable} (release file {relative}): {text}")

    if name not in statistics.data_vars:
        raise problem(f"expected the variable {name!r} holding the stored statistics, found none{hint}")
    stored = statistics[name]
    for dim, label in (("subset", datamodel.MAIN_SUBSET), ("statistic", statistic)):
        if label not in stored.indexes.get(dim, ()):
            raise problem(f"expected {dim}={label!r} in {name!r}, found {list(stored.indexes.get(dim, []))}{hint}")
    values = _aligned_to(stored.sel(subset=datamodel.MAIN_SUBSET, statistic=statistic, drop=True), data, variable)
    if not set(values.dims) <= set(data.dims):
        raise problem(f"expected statistics over dims of {variable!r} {data.dims}, found {values.dims}")
    if values.chunks is None and bool(values.isnull().all()):
        raise problem(f"expected stored {statistic} values, found only NaN (file absent){hint}")
    return values


def _aligned_to(values: xr.DataArray, data: xr.DataArray, variable: str) -> xr.DataArray:
    """Statistics on the data's dims: size-1 axes of their own squeezed, another time axis put on ``frame``."""
    for dim in [dim for dim in values.dims if dim not in data.dims]:
        if values.sizes[dim] == 1:
            values = values.squeeze(dim, drop=True)
        elif dim == f"{datamodel.statistics_name(variable)}_{datamodel.FRAME}" and datamodel.FRAME in data.dims:
            frames = np.arange(values.sizes[dim], dtype=np.int64)
            values = values.rename({dim: datamodel.FRAME}).assign_coords({datamodel.FRAME: frames})
            values = values.reindex({datamodel.FRAME: data[datamodel.FRAME].values})
    return values


def _train_mask(ds: xr.Dataset) -> np.ndarray:
    if "tier" not in ds.coords:
        raise DatasetError("statistics of the train tier need the 'tier' coordinate on trial (meta/trials/tiers.npy), found none")
    train = np.asarray(ds["tier"].values) == "train"
    if not train.any():
        found = sorted(set(ds["tier"].values.tolist()))
        raise DatasetError(f"statistics of the train tier need train trials, found only tiers {found}")
    return train


def _block_moments(block: np.ndarray, train: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Count, sum and sum of squared deviations (from the block's own mean) of the block's train values.

    NaN (the padding of video trials, withheld cells) is left out. Reduced over ``axes`` (trial is
    axis 0) with the dims kept, stacked along a new axis 1.
    """
    values = block[train].astype(np.float64)
    known = ~np.isnan(values)
    count = known.sum(axis=axes, keepdims=True).astype(np.float64)
    total = np.where(known, values, 0).sum(axis=axes, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        deviations = np.where(known, values - total / count, 0)
    squares = np.square(deviations, out=deviations).sum(axis=axes, keepdims=True)
    return np.stack([count, total, squares], axis=1)


def _combine_moments(moments: Any, axes: tuple[int, ...]) -> tuple[Any, Any]:
    """Mean and std (``ddof=1``) from per-block moments (numpy or dask; Chan et al.'s update, all blocks at once)."""
    count, total, squares = moments[:, 0], moments[:, 1], moments[:, 2]
    n = count.sum(axis=axes, keepdims=True)
    mean = total.sum(axis=axes, keepdims=True) / n
    block_mean = total / np.where(count > 0, count, 1)
    spread = count * (block_mean - mean) ** 2
    sum_of_squares = squares.sum(axis=axes, keepdims=True) + spread.sum(axis=axes, keepdims=True)
    variance = sum_of_squares / np.where(n > 1, n - 1, np.nan)
    return mean.squeeze(axis=axes), np.sqrt(variance).squeeze(axis=axes)


def _train_statistics_of(data: xr.DataArray, train: np.ndarray, variable: str, kind: datamodel.ReleaseKind) -> xr.DataArray:
    """Mean and std (``ddof=1``) of the train trials, over trials (and every pixel for 2022 images), in one pass.

    NaN is left out (a frame no train trial reaches reads NaN). Accumulated in float64 from per-block
    moments, kept as float32 like the release's statistics.
    """
    data = data.transpose("trial", ...)
    whole = variable == kind.stimulus and not kind.stimulus_statistics_per_element
    reduced = tuple(range(data.ndim)) if whole else (0,)
    kept = [dim for axis, dim in enumerate(data.dims) if axis not in reduced]
    if data.chunks is None:
        moments = _block_moments(np.asarray(data.values), train, reduced)
    else:
        import dask.array as da

        blocks = data.data
        index = tuple(range(1, data.ndim + 1))  # 0 names the new axis of the three moments
        mask = da.from_array(train, chunks=(blocks.chunks[0],))
        moments = da.blockwise(
            _block_moments,
            (index[0], 0, *index[1:]),
            blocks,
            index,
            mask,
            index[:1],
            new_axes={0: 3},
            adjust_chunks={index[axis]: 1 for axis in reduced},
            axes=reduced,
            dtype=np.float64,
            meta=np.array((), dtype=np.float64),
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        mean, std = _combine_moments(moments, reduced)
    coords = {name: coord.variable for name, coord in data.coords.items() if set(coord.dims) <= set(kept)}
    statistics = [xr.DataArray(value, dims=kept, coords=coords) for value in (mean, std)]
    values = xr.concat(statistics, "statistic").assign_coords(statistic=["mean", "std"])
    values = values.expand_dims(subset=[datamodel.MAIN_SUBSET]).astype(np.float32)
    values.attrs = {"long_name": f"{variable} statistics over the train tier (std with ddof=1)"}
    return values


def train_statistics(ds: xr.Dataset, variables: Sequence[str] | None = None) -> xr.Dataset:
    """Mean and std (``ddof=1``) of the train-tier trials, laid out like the stored ``*_statistics``.

    Lazy when ``ds`` is, one pass over the data; accumulated in float64 and kept in float32 like the
    release's; NaN (video padding) left out. 2022 images get one mean and std over every pixel of every
    train trial; the other variables (2023 videos too) one per element.

    >>> ds = neuroxr.make_scan(n_trials=60, n_neurons=20)
    >>> stats = train_statistics(ds, ["responses"])
    >>> std = stats.responses_statistics.sel(subset="all", statistic="std").compute()
    >>> std.dims, str(std.dtype)
    (('neuron',), 'float32')
    """
    train = _train_mask(ds)
    kind = datamodel.kind_of([*ds.variables, *ds.dims], ds.attrs)
    names = [name for name in kind.data_variables if name in ds.data_vars] if variables is None else list(variables)
    return xr.Dataset({datamodel.statistics_name(name): _train_statistics_of(ds[name], train, name, kind) for name in names})


def _statistics_source(ds: xr.Dataset, statistics: str, variables: Sequence[str]) -> xr.Dataset:
    """The ``*_statistics`` to use: those of ``ds``, or the train tier's, computed lazily."""
    if statistics not in ("stored", "train"):
        raise ValueError(f"statistics must be 'stored' or 'train', found {statistics!r}")
    return ds if statistics == "stored" else train_statistics(ds, variables)


def _precision(std: xr.DataArray, statistics: str) -> xr.DataArray:
    every = list(std.dims)  # the threshold is over every entry, frames included
    precision = xr.apply_ufunc(
        response_precision_from_std,
        std,
        input_core_dims=[every],
        output_core_dims=[every],
        dask="parallelized",
        output_dtypes=[std.dtype],
        dask_gufunc_kwargs={"allow_rechunk": True},
    )
    precision.attrs = {"long_name": "response precision (1 / thresholded train std)", STATISTICS_ATTR: statistics}
    return precision.rename("response_precision")


def response_precision(ds: xr.Dataset, *, statistics: StatisticsSource = "stored") -> xr.DataArray:
    """Per-neuron precision the official loader multiplies responses by (see ``standardize``).

    >>> ds = neuroxr.make_scan(n_trials=60, n_neurons=20)
    >>> standardized = neuroxr.standardize(ds)
    >>> precision = response_precision(ds)
    >>> raw = standardized.responses / precision  # back to the stored scale
    >>> bool(np.allclose(raw, ds.responses, rtol=1e-5))
    True
    """
    source = _statistics_source(ds, statistics, ["responses"])
    release = ds.attrs.get("release_name", "scan")
    return _precision(_statistic(source, ds["responses"], "responses", "std", release), statistics)


@dataclass(frozen=True)
class StandardizationRule:
    """How one variable goes onto the official scale, as the official ``NeuroNormalizer`` computes it.

    ``(x - offset) / divisor`` for images and pupil centre (mean and std), ``x * factor`` for responses
    (the precision) and behaviour (``1 / std``). Each part is a DataArray over some of the variable's
    per-trial dims, or None; a std that is zero or NaN makes the divisor or factor NaN, so those values
    read NaN instead of infinite. ``standardize`` and ``neuroxr.torch``'s loaders both apply these rules.

    >>> ds = neuroxr.make_scan(n_trials=60, n_neurons=20)
    >>> rule = standardization_rules(ds)["images"]
    >>> rule.offset.dims, rule.factor is None
    ((), True)
    >>> bool(np.allclose(rule.apply(ds.images), neuroxr.standardize(ds).images))
    True
    """

    variable: str
    offset: xr.DataArray | None = None
    divisor: xr.DataArray | None = None
    factor: xr.DataArray | None = None

    def apply(self, data: Any) -> Any:
        """The standardised values of ``data`` (a DataArray, aligned by dims; or an array shaped like the parts)."""
        if self.offset is not None:
            data = data - self.offset
        if self.divisor is not None:
            data = data / self.divisor
        if self.factor is not None:
            data = data * self.factor
        return data

    def arrays(self, dims: Sequence[str], selection: Mapping[str, Any] | None = None) -> StandardizationRule:
        """The rule as numpy arrays that broadcast against data with ``dims`` (a size-1 axis for each dim a part lacks).

        ``selection`` (dim -> positions) picks elements first, e.g. the neurons a loader keeps.
        """

        def array(part: xr.DataArray | None) -> np.ndarray | None:
            if part is None:
                return None
            if selection:
                part = part.isel({dim: index for dim, index in selection.items() if dim in part.dims})
            unknown = set(part.dims) - set(dims)
            if unknown:
                raise DatasetError(f"the {self.variable} statistics have dims {part.dims}, not all among {tuple(dims)}")
            values = np.asarray(part.transpose(*[dim for dim in dims if dim in part.dims]).values)
            return values.reshape([part.sizes[dim] if dim in part.dims else 1 for dim in dims])

        return StandardizationRule(self.variable, array(self.offset), array(self.divisor), array(self.factor))


def _rule(ds: xr.Dataset, source: xr.Dataset, variable: str, statistics: str) -> StandardizationRule:
    data = ds[variable]
    release = ds.attrs.get("release_name", "scan")
    std = _statistic(source, data, variable, "std", release)
    if variable == "responses":
        return StandardizationRule(variable, factor=_precision(std, statistics))
    if variable == "behavior":
        return StandardizationRule(variable, factor=_reciprocal_or_nan(std))
    mean = _statistic(source, data, variable, "mean", release)
    return StandardizationRule(variable, offset=mean, divisor=std.where(std > 0))


def standardization_rules(
    ds: xr.Dataset, *, statistics: StatisticsSource = "stored", variables: Sequence[str] | None = None
) -> dict[str, StandardizationRule]:
    """The :class:`StandardizationRule` of each data variable of ``ds`` (or of ``variables``), lazy where ``ds`` is.

    >>> rules = standardization_rules(neuroxr.make_scan(n_trials=60, n_neurons=20))
    >>> sorted(rules), rules["responses"].factor.dims
    (['behavior', 'images', 'pupil_center', 'responses'], ('neuron',))
    """
    if variables is None:
        kind = datamodel.kind_of([*ds.variables, *ds.dims], ds.attrs)
        variables = [name for name in kind.data_variables if name in ds.data_vars]
    source = _statistics_source(ds, statistics, variables)
    return {variable: _rule(ds, source, variable, statistics) for variable in variables}


def _standardized(data: xr.DataArray, rule: StandardizationRule, statistics: str) -> xr.DataArray:
    scaled = rule.apply(data)
    scaled = scaled.astype(np.result_type(data.dtype, np.float32), copy=False).transpose(*data.dims)
    scaled.attrs = {**data.attrs, TRANSFORM_ATTR: f"{_TRANSFORMS[rule.variable]} (statistics: {statistics})"}
    scaled.encoding = {}
    return scaled


def standardize(ds: xr.Dataset, *, statistics: StatisticsSource = "stored") -> xr.Dataset:
    """The scan on the official loader's scale: images (videos) and pupil z-scored, behaviour / std, responses * precision.

    ``statistics="stored"`` uses the release's ``*_statistics`` (subset ``all``); ``"train"`` computes them
    lazily from the train-tier trials of ``ds`` (as ``train_statistics``). Nothing is computed here: dask
    data stay dask. Coordinates and the statistics variables are kept; ``attrs["standardized"]`` lists
    the variables transformed and ``attrs["standardization_statistics"]`` the source of the statistics.
    NaN (withheld) stay NaN; a variable whose std is zero or NaN (e.g. withheld behaviour) reads NaN.

    >>> ds = neuroxr.open_scan(neuroxr.write_scan(tmp / "scan", n_trials=60, n_neurons=20))
    >>> standardized = neuroxr.standardize(ds)  # lazy: nothing computed yet
    >>> train = standardized.sel(trial=ds.tier == "train")
    >>> round(float(train.pupil_center.mean()), 4), round(float(train.images.std()), 2)
    (0.0, 1.0)
    """
    if ds.attrs.get(STANDARDIZED_ATTR):
        done = ds.attrs[STANDARDIZED_ATTR]
        raise ValueError(f"expected a Dataset on the stored scale, found one already standardised ({done})")
    rules = standardization_rules(ds, statistics=statistics)
    result = ds.copy()
    for variable, rule in rules.items():
        result[variable] = _standardized(ds[variable], rule, statistics)
    variables = list(rules)
    result.attrs = {**ds.attrs, STANDARDIZED_ATTR: ",".join(variables), STATISTICS_ATTR: statistics}
    return result
