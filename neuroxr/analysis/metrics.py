"""The Sensorium 2022 metrics, per neuron, on labelled (and lazy) responses.

Each metric follows the official definitions (``sensorium.utility.metrics`` and
``neuralpredictors.measures.np_functions``) number for number, computed in float64:

- ``corr(a, b)`` over trials: z-score each with its mean and ``std(ddof=0) + 1e-8``, mean of the product;
- ``single_trial_correlation``: ``corr`` of predictions and responses over all trials;
- ``correlation_to_average``: ``corr`` over images of the responses and predictions averaged over the
  repeats of each ``image_id``;
- ``feve``: fraction of explainable variance explained, with ``total_var = var(ddof=1)`` over trials,
  ``noise_var`` the mean over images of the ``var(ddof=1)`` over repeats, ``FEV = (total - noise) / total``
  and ``FEVE = 1 - (MSE - noise) / (total - noise)``; neurons with ``FEV < fev_threshold`` are NaN;
- ``oracle_correlation``: ``corr`` of each trial with the mean of the other repeats of its image
  (leave-one-out, NaN oracles set to 0, as neuralpredictors' ``oracle_corr_jackknife``).

Inputs are ``xarray.DataArray`` with a ``trial`` dimension and an ``image_id`` coordinate on it (the
Dataset's ``responses``); results keep every other dimension and its coordinates (one value per
neuron). Dask stays dask: trials are grouped by ``image_id`` from the numpy coordinate when the graph is
built, so nothing is computed before the result is. Ground truth is the standardised responses
(``neuroxr.standardize``), as on the leaderboard; ``leaderboard`` gives the leaderboard's means over neurons.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import xarray as xr

from neuroxr import datamodel

#: Offset added to the standard deviations in ``corr`` (neuralpredictors' default).
CORRELATION_EPSILON = 1e-8
#: Neurons whose fraction of explainable variance is below this are left out of FEVE (official default).
FEV_THRESHOLD = 0.15
TRIAL = datamodel.TRIAL
IMAGE_ID = datamodel.TRIAL_RENAMES["frame_image_id"]

XarrayObject = TypeVar("XarrayObject", xr.Dataset, xr.DataArray)


# --------------------------------------------------------------------------------------------------
# Selecting trials


def select_tier(obj: XarrayObject, tier: str | Sequence[str]) -> XarrayObject:
    """The trials of one tier (or several) of a Dataset or DataArray with a ``tier`` coordinate.

    >>> ds = neuroxr.make_scan(n_trials=60, n_neurons=20, competition=True)
    >>> select_tier(ds, "test").sizes["trial"]
    9
    >>> select_tier(ds.responses, ["test", "final_test"]).sizes["trial"]
    18
    """
    if "tier" not in obj.coords:
        raise ValueError("expected a 'tier' coordinate on trial (meta/trials/tiers.npy) to select a tier, found none")
    wanted = [tier] if isinstance(tier, str) else list(tier)
    tiers = np.asarray(obj["tier"].values)
    chosen = np.isin(tiers, wanted)
    if not chosen.any():
        raise ValueError(f"expected trials of tier {wanted}, found only tiers {sorted(set(tiers.tolist()))}")
    return obj.isel({TRIAL: chosen})


def _as_responses(responses: xr.DataArray | xr.Dataset, tier: str | Sequence[str] | None) -> xr.DataArray:
    if isinstance(responses, xr.Dataset):
        responses = responses["responses"]
    if not isinstance(responses, xr.DataArray) or TRIAL not in responses.dims:
        found = type(responses).__name__
        raise TypeError(f"expected responses as an xarray.DataArray with a {TRIAL!r} dimension, found {found}")
    if tier is not None:
        responses = select_tier(responses, tier)
    if responses.sizes[TRIAL] == 0:
        raise ValueError("expected at least one trial of responses, found none")
    if datamodel.WITHHELD_COORD in responses.coords:
        withheld = np.asarray(responses[datamodel.WITHHELD_COORD].values, dtype=bool)
        if withheld.any():
            tiers = sorted(set(responses["tier"].values[withheld].tolist())) if "tier" in responses.coords else []
            raise ValueError(
                f"expected known responses, found {int(withheld.sum())} trials whose responses the release withholds "
                f"(coordinate {datamodel.WITHHELD_COORD!r}, tiers {tiers}); select other trials, "
                "e.g. select_tier(ds, 'validation')"
            )
    return responses.transpose(TRIAL, ...).astype(np.float64)


def _aligned(predictions: object, responses: xr.DataArray) -> xr.DataArray:
    """Predictions on the responses' trials and neurons, with the responses' coordinates."""
    if isinstance(predictions, xr.Dataset):
        raise TypeError("expected predictions as an xarray.DataArray or array, found a Dataset")
    if isinstance(predictions, xr.DataArray):
        missing = set(responses.dims) - set(predictions.dims)
        if missing or set(predictions.dims) - set(responses.dims):
            raise ValueError(f"expected predictions with dims {responses.dims}, found {predictions.dims}")
        predictions = predictions.transpose(*responses.dims)
        labels = {
            dim: index
            for dim, index in responses.indexes.items()
            if dim in predictions.indexes and not predictions.indexes[dim].equals(index)
        }
        try:
            predictions = predictions.sel(labels)
        except KeyError as error:
            problem = f"expected predictions for every trial and neuron of the responses, some are missing: {error}"
            raise ValueError(problem) from None
        data = predictions.data
    else:
        data = predictions if hasattr(predictions, "chunks") and hasattr(predictions, "dask") else np.asarray(predictions)
    if tuple(data.shape) != tuple(responses.shape):
        raise ValueError(f"expected predictions of shape {responses.shape} {responses.dims}, found {tuple(data.shape)}")
    return responses.copy(data=data).astype(np.float64)


# --------------------------------------------------------------------------------------------------
# Grouping trials by image, at graph time


@dataclass(frozen=True)
class ImageGroups:
    """Trials grouped by image: ``order`` puts the repeats of each image together, images ascending."""

    image_ids: np.ndarray
    repeats: np.ndarray
    order: np.ndarray

    @classmethod
    def of(cls, image_id: np.ndarray) -> ImageGroups:
        ids, inverse, repeats = np.unique(np.asarray(image_id), return_inverse=True, return_counts=True)
        return cls(ids, repeats, np.argsort(inverse.ravel(), kind="stable"))

    def _column(self, counts: np.ndarray, ndim: int) -> np.ndarray:
        return counts.reshape((-1,) + (1,) * (ndim - 1))

    def sums(self, values: np.ndarray) -> np.ndarray:
        """Sum over the repeats of each image (``values``: all trials along axis 0, in trial order)."""
        starts = np.concatenate([[0], np.cumsum(self.repeats)[:-1]])
        return np.add.reduceat(values[self.order], starts, axis=0)

    def means(self, values: np.ndarray) -> np.ndarray:
        """Mean over the repeats of each image."""
        return self.sums(values) / self._column(self.repeats, values.ndim)

    def variances(self, values: np.ndarray) -> np.ndarray:
        """Variance (``ddof=1``) over the repeats of each image; NaN for an image shown once."""
        deviations = values - self.per_trial(self.means(values))
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.sums(deviations**2) / self._column(self.repeats - 1, values.ndim)

    def per_trial(self, per_image: np.ndarray) -> np.ndarray:
        """A value per image spread back to the trials of that image, in trial order."""
        spread = np.empty((len(self.order), *per_image.shape[1:]), dtype=per_image.dtype)
        spread[self.order] = np.repeat(per_image, self.repeats, axis=0)
        return spread

    def leave_one_out_means(self, values: np.ndarray) -> np.ndarray:
        """Per trial, the mean of the other repeats of its image; 0 where that is NaN (single repeats, NaN data)."""
        others = self.per_trial(self.sums(values)) - values
        with np.errstate(divide="ignore", invalid="ignore"):
            oracle = others / self._column(self.per_trial(self.repeats) - 1, values.ndim)
        oracle[np.isnan(oracle)] = 0
        return oracle


def _groupwise(method: str, values: xr.DataArray, groups: ImageGroups, *, per_trial: bool) -> np.ndarray:
    """``getattr(groups, method)`` on blocks holding every trial (and some of the other elements)."""
    function = getattr(groups, method)
    if values.chunks is None:
        return function(np.asarray(values.data))
    import dask.array as da

    # Every trial in one block, the other dims split to keep blocks near dask's chunk size; the
    # grouping is numpy, known now, so nothing is computed before the result is.
    whole_trials = values.data.rechunk({0: -1, **{axis: "auto" for axis in range(1, values.ndim)}})
    first = whole_trials.chunks[0] if per_trial else (len(groups.repeats),)
    chunks = (first, *whole_trials.chunks[1:])
    return da.map_blocks(function, whole_trials, chunks=chunks, dtype=np.float64, meta=np.array((), dtype=np.float64))


def _image_level(method: str, values: xr.DataArray, groups: ImageGroups) -> xr.DataArray:
    """One value per image (dim ``image_id``, ascending) and per remaining element of ``values``."""
    data = _groupwise(method, values, groups, per_trial=False)
    coords = {name: coord for name, coord in values.coords.items() if TRIAL not in coord.dims}
    return xr.DataArray(data, dims=(IMAGE_ID, *values.dims[1:]), coords={**coords, IMAGE_ID: groups.image_ids})


def _groups(responses: xr.DataArray) -> ImageGroups:
    if IMAGE_ID not in responses.coords or responses[IMAGE_ID].dims != (TRIAL,):
        raise ValueError(f"expected an {IMAGE_ID!r} coordinate on trial (meta/trials/frame_image_id.npy), found none")
    return ImageGroups.of(responses[IMAGE_ID].values)


# --------------------------------------------------------------------------------------------------
# The official formulas, on numpy or dask arrays along their last axis (NaN propagates, as in numpy)


def correlation_of_arrays(a: Any, b: Any) -> Any:
    """neuralpredictors' ``corr`` along the last axis of numpy or dask arrays.

    Mean of the product of the z-scores, each z-scored with its mean and ``std(ddof=0) + 1e-8``.
    """
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    a_std = np.sqrt((a * a).mean(axis=-1))
    b_std = np.sqrt((b * b).mean(axis=-1))
    return (a * b).mean(axis=-1) / ((a_std + CORRELATION_EPSILON) * (b_std + CORRELATION_EPSILON))


def _nan_where_zero(values: Any) -> Any:
    """``values`` with zeros replaced by NaN, so that dividing by it never divides by zero."""
    return values + np.where(values == 0, np.nan, 0)


def fev_of_arrays(responses: Any, predictions: Any, noise_variance: Any) -> tuple[Any, Any]:
    """FEV and (unmasked) FEVE along the last axis, given the noise variance (mean over images of var ddof=1)."""
    n = responses.shape[-1]
    deviations = responses - responses.mean(axis=-1, keepdims=True)
    squares = (deviations * deviations).sum(axis=-1)
    total_variance = squares / (n - 1) if n > 1 else squares + np.nan
    error = responses - predictions
    mean_squared_error = (error * error).mean(axis=-1)
    fev = (total_variance - noise_variance) / _nan_where_zero(total_variance)
    feve = 1 - (mean_squared_error - noise_variance) / _nan_where_zero(total_variance - noise_variance)
    return fev, feve


def correlation(a: xr.DataArray, b: xr.DataArray, dim: str = TRIAL) -> xr.DataArray:
    """neuralpredictors' ``corr`` over ``dim``: mean of the z-scores, std with ``ddof=0`` plus 1e-8.

    >>> responses = neuroxr.make_scan(n_trials=60, n_neurons=20).responses
    >>> correlation(2 * responses + 1, responses).sizes  # one value per neuron
    Frozen({'neuron': 20})
    """
    return xr.apply_ufunc(correlation_of_arrays, a, b, input_core_dims=[[dim], [dim]], dask="allowed")


def _ratio(numerator: xr.DataArray, denominator: xr.DataArray) -> xr.DataArray:
    """``numerator / denominator``, NaN where the denominator is zero (no division by zero)."""
    return numerator / denominator.where(denominator != 0)


def _named(result: xr.DataArray, name: str, long_name: str) -> xr.DataArray:
    result = result.rename(name)
    result.attrs = {"long_name": long_name}
    return result


# --------------------------------------------------------------------------------------------------
# The metrics


def single_trial_correlation(
    predictions: xr.DataArray | np.ndarray, responses: xr.DataArray | xr.Dataset, *, tier: str | Sequence[str] | None = None
) -> xr.DataArray:
    """Per-neuron correlation of predictions and responses over single trials (leaderboard "Correlation").

    ``predictions`` is a DataArray on (a superset of) the responses' trials and neurons, or an array
    shaped like ``responses``; ``tier`` selects trials first.

    >>> ds = neuroxr.make_scan(n_trials=60, n_neurons=20)
    >>> gt = neuroxr.standardize(ds).responses
    >>> model_output = gt + np.random.default_rng(0).normal(0, 0.1, gt.shape)  # a model's prediction of every trial
    >>> round(float(single_trial_correlation(model_output, gt, tier="test").mean()), 2)
    0.84
    """
    responses = _as_responses(responses, tier)
    predictions = _aligned(predictions, responses)
    return _named(correlation(predictions, responses), "single_trial_correlation", "single-trial correlation")


def correlation_to_average(
    predictions: xr.DataArray | np.ndarray, responses: xr.DataArray | xr.Dataset, *, tier: str | Sequence[str] | None = None
) -> xr.DataArray:
    """Per-neuron correlation over images of responses and predictions averaged over each image's repeats.

    >>> ds = neuroxr.make_scan(n_trials=60, n_neurons=20)
    >>> gt = neuroxr.standardize(ds).responses
    >>> model_output = gt + np.random.default_rng(0).normal(0, 0.1, gt.shape)  # a model's prediction of every trial
    >>> correlation_to_average(model_output, gt, tier="test").sizes
    Frozen({'neuron': 20})
    """
    responses = _as_responses(responses, tier)
    predictions = _aligned(predictions, responses)
    groups = _groups(responses)
    mean_responses = _image_level("means", responses, groups)
    mean_predictions = _image_level("means", predictions, groups)
    result = correlation(mean_responses, mean_predictions, IMAGE_ID)
    return _named(result, "correlation_to_average", "correlation to the average over repeats")


def _feve_parts(predictions: xr.DataArray, responses: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    """Unmasked FEVE and FEV, per neuron."""
    noise_variance = _image_level("variances", responses, _groups(responses)).mean(IMAGE_ID, skipna=False)
    fev, feve_all = xr.apply_ufunc(
        fev_of_arrays,
        responses,
        predictions,
        noise_variance,
        input_core_dims=[[TRIAL], [TRIAL], []],
        output_core_dims=[[], []],
        dask="allowed",
    )
    return feve_all, fev


def feve(
    predictions: xr.DataArray | np.ndarray,
    responses: xr.DataArray | xr.Dataset,
    *,
    fev_threshold: float = FEV_THRESHOLD,
    tier: str | Sequence[str] | None = None,
) -> xr.Dataset:
    """Fraction of explainable variance explained per neuron, with the fraction of explainable variance.

    Returns a Dataset with ``feve`` (NaN for neurons whose FEV is below ``fev_threshold`` or NaN) and
    ``fev``; ``result.feve.mean()`` is the leaderboard's FEVE.

    >>> ds = neuroxr.make_scan(n_trials=60, n_neurons=20)
    >>> gt = neuroxr.standardize(ds).responses
    >>> model_output = gt + np.random.default_rng(0).normal(0, 0.1, gt.shape)  # a model's prediction of every trial
    >>> scores = feve(model_output, gt, tier="test")
    >>> sorted(scores.data_vars), scores.attrs, scores.feve.sizes
    (['fev', 'feve'], {'fev_threshold': 0.15}, Frozen({'neuron': 20}))
    """
    responses = _as_responses(responses, tier)
    predictions = _aligned(predictions, responses)
    feve_all, fev = _feve_parts(predictions, responses)
    return xr.Dataset(
        {
            "feve": _named(feve_all.where(fev >= fev_threshold), "feve", "fraction of explainable variance explained"),
            "fev": _named(fev, "fev", "fraction of explainable variance"),
        },
        attrs={"fev_threshold": float(fev_threshold)},
    )


def oracle_correlation(responses: xr.DataArray | xr.Dataset, *, tier: str | Sequence[str] | None = None) -> xr.DataArray:
    """Per-neuron leave-one-out oracle: correlation of each trial with the mean of its image's other repeats.

    >>> ds = neuroxr.make_scan(n_trials=60, n_neurons=20)
    >>> oracle = oracle_correlation(ds, tier="test")
    >>> oracle.dims, round(float(oracle.mean()), 2)
    (('neuron',), 0.29)
    """
    responses = _as_responses(responses, tier)
    groups = _groups(responses)
    oracle = _groupwise("leave_one_out_means", responses, groups, per_trial=True)
    if not isinstance(oracle, np.ndarray):  # correlate block by block with the same chunks (coordinates stay numpy)
        responses = responses.copy(data=responses.data.rechunk(oracle.chunks))
    oracle = responses.copy(data=oracle)
    return _named(correlation(responses, oracle), "oracle_correlation", "leave-one-out oracle correlation")


def leaderboard(
    predictions: xr.DataArray | np.ndarray,
    responses: xr.DataArray | xr.Dataset,
    *,
    fev_threshold: float = FEV_THRESHOLD,
    tier: str | Sequence[str] | None = None,
) -> dict[str, float]:
    """The leaderboard numbers: each metric's mean over neurons (FEVE over neurons with FEV >= threshold).

    Computes all three in one pass over the data.

    >>> ds = neuroxr.make_scan(n_trials=60, n_neurons=20)
    >>> gt = neuroxr.standardize(ds).responses
    >>> model_output = gt + np.random.default_rng(0).normal(0, 0.1, gt.shape)  # a model's prediction of every trial
    >>> board = leaderboard(model_output, gt, tier="test")
    >>> sorted(board), round(board["single_trial_correlation"], 2)
    (['correlation_to_average', 'feve', 'single_trial_correlation'], 0.84)
    """
    responses = _as_responses(responses, tier)
    predictions = _aligned(predictions, responses)
    feve_all, fev = _feve_parts(predictions, responses)
    kept = fev >= fev_threshold
    n_kept = kept.sum()
    means = xr.Dataset(
        {
            "single_trial_correlation": correlation(predictions, responses).mean(skipna=False),
            "correlation_to_average": correlation_to_average(predictions, responses).mean(skipna=False),
            "feve": _ratio(feve_all.where(kept, 0).sum(skipna=False), n_kept),
        }
    ).compute()
    return {name: float(value) for name, value in means.data_vars.items()}


#: The name ``leaderboard`` had in neuroxr 0.1 (kept for one release).
summary = leaderboard
