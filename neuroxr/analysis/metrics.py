"""The Sensorium metrics (2022 images, 2023 videos), per neuron, on labelled (and lazy) responses.

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

Responses of a 2023 video scan (a ``frame`` dimension and the ``n_frames`` coordinate) are scored as the
2023 metric scores them (``sensorium.utility.scores.get_correlations``): per neuron, ``corr`` over every
trial's frames ``[skip:n_frames]`` concatenated (``skip=50``), NaN correlations set to 0. The release has
no clip id, so the metrics over repeats (``correlation_to_average``, ``feve``, ``oracle_correlation``)
group trials by a ``clip_id`` coordinate the user assigns, e.g. ``clip_ids(ds)``: identical video
content (see :func:`clip_ids`); they concatenate frames the same way (neuroxr's extension: the official
2023 code has no such metrics).
"""

from __future__ import annotations

import hashlib
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
FRAME = datamodel.FRAME
#: The coordinate that groups the repeats of a video clip (assigned by the user, e.g. from :func:`clip_ids`).
CLIP_ID = "clip_id"
#: Frames the 2023 metric leaves out at the start of every trial (the official ``skip``).
SKIP_FRAMES = 50

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


def _image_level(method: str, values: xr.DataArray, groups: ImageGroups, key: str = IMAGE_ID) -> xr.DataArray:
    """One value per image (dim ``key``, ascending) and per remaining element of ``values``."""
    data = _groupwise(method, values, groups, per_trial=False)
    coords = {name: coord for name, coord in values.coords.items() if TRIAL not in coord.dims}
    return xr.DataArray(data, dims=(key, *values.dims[1:]), coords={**coords, key: groups.image_ids})


def _groups(responses: xr.DataArray, key: str = IMAGE_ID) -> ImageGroups:
    if key not in responses.coords or responses[key].dims != (TRIAL,):
        if key == CLIP_ID:
            raise ValueError(
                f"expected a {CLIP_ID!r} coordinate on trial to group the repeats of each clip, found none; video scans "
                "have no clip id: assign one, e.g. ds = ds.assign_coords(clip_id=neuroxr.metrics.clip_ids(ds))"
            )
        raise ValueError(f"expected an {IMAGE_ID!r} coordinate on trial (meta/trials/frame_image_id.npy), found none")
    return ImageGroups.of(responses[key].values)


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
    predictions: xr.DataArray | np.ndarray,
    responses: xr.DataArray | xr.Dataset,
    *,
    tier: str | Sequence[str] | None = None,
    skip: int = SKIP_FRAMES,
) -> xr.DataArray:
    """Per-neuron correlation of predictions and responses over single trials (leaderboard "Correlation").

    ``predictions`` is a DataArray on (a superset of) the responses' trials and neurons, or an array
    shaped like ``responses``; ``tier`` selects trials first. Video responses (a ``frame`` dim) are
    scored as in 2023: every trial's frames ``[skip:n_frames]`` concatenated, NaN correlations 0.

    >>> ds = neuroxr.make_scan(n_trials=60, n_neurons=20)
    >>> gt = neuroxr.standardize(ds).responses
    >>> model_output = gt + np.random.default_rng(0).normal(0, 0.1, gt.shape)  # a model's prediction of every trial
    >>> round(float(single_trial_correlation(model_output, gt, tier="test").mean()), 2)
    0.84
    """
    responses = _as_responses(responses, tier)
    predictions = _aligned(predictions, responses)
    if FRAME in responses.dims:
        return _named(_frame_correlation(responses, predictions, _valid_frames(responses, skip)), "single_trial_correlation",
                      f"single-trial correlation over frames [{skip}:n_frames] of every trial")  # fmt: skip
    return _named(correlation(predictions, responses), "single_trial_correlation", "single-trial correlation")


def correlation_to_average(
    predictions: xr.DataArray | np.ndarray,
    responses: xr.DataArray | xr.Dataset,
    *,
    tier: str | Sequence[str] | None = None,
    skip: int = SKIP_FRAMES,
) -> xr.DataArray:
    """Per-neuron correlation over images of responses and predictions averaged over each image's repeats.

    Video responses: averaged over the repeats of each ``clip_id``, frame by frame, then correlated over
    each clip's frames ``[skip:n_frames]`` concatenated.

    >>> ds = neuroxr.make_scan(n_trials=60, n_neurons=20)
    >>> gt = neuroxr.standardize(ds).responses
    >>> model_output = gt + np.random.default_rng(0).normal(0, 0.1, gt.shape)  # a model's prediction of every trial
    >>> correlation_to_average(model_output, gt, tier="test").sizes
    Frozen({'neuron': 20})
    """
    responses = _as_responses(responses, tier)
    predictions = _aligned(predictions, responses)
    if FRAME in responses.dims:
        groups = _repeated_clips(responses)
        means = [_image_level("means", values, groups, CLIP_ID) for values in (responses, predictions)]
        result = _frame_correlation(*means, _valid_frames(means[0], skip, _clip_lengths(responses, groups)))
        return _named(result, "correlation_to_average", f"correlation to the average over repeats, frames [{skip}:n_frames]")
    groups = _groups(responses)
    mean_responses = _image_level("means", responses, groups)
    mean_predictions = _image_level("means", predictions, groups)
    result = correlation(mean_responses, mean_predictions, IMAGE_ID)
    return _named(result, "correlation_to_average", "correlation to the average over repeats")


def _feve_parts(predictions: xr.DataArray, responses: xr.DataArray, skip: int = SKIP_FRAMES) -> tuple[xr.DataArray, xr.DataArray]:
    """Unmasked FEVE and FEV, per neuron."""
    if FRAME in responses.dims:
        return _frame_feve_parts(predictions, responses, skip)
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
    skip: int = SKIP_FRAMES,
) -> xr.Dataset:
    """Fraction of explainable variance explained per neuron, with the fraction of explainable variance.

    Returns a Dataset with ``feve`` (NaN for neurons whose FEV is below ``fev_threshold`` or NaN) and
    ``fev``; ``result.feve.mean()`` is the leaderboard's FEVE. Video responses: the samples are every
    trial's frames ``[skip:n_frames]``, the noise variance the mean over clips and frames of the variance
    over a clip's repeats.

    >>> ds = neuroxr.make_scan(n_trials=60, n_neurons=20)
    >>> gt = neuroxr.standardize(ds).responses
    >>> model_output = gt + np.random.default_rng(0).normal(0, 0.1, gt.shape)  # a model's prediction of every trial
    >>> scores = feve(model_output, gt, tier="test")
    >>> sorted(scores.data_vars), scores.attrs, scores.feve.sizes
    (['fev', 'feve'], {'fev_threshold': 0.15}, Frozen({'neuron': 20}))
    """
    responses = _as_responses(responses, tier)
    predictions = _aligned(predictions, responses)
    feve_all, fev = _feve_parts(predictions, responses, skip)
    return xr.Dataset(
        {
            "feve": _named(feve_all.where(fev >= fev_threshold), "feve", "fraction of explainable variance explained"),
            "fev": _named(fev, "fev", "fraction of explainable variance"),
        },
        attrs={"fev_threshold": float(fev_threshold)},
    )


def oracle_correlation(
    responses: xr.DataArray | xr.Dataset, *, tier: str | Sequence[str] | None = None, skip: int = SKIP_FRAMES
) -> xr.DataArray:
    """Per-neuron leave-one-out oracle: correlation of each trial with the mean of its image's other repeats.

    Video responses: of each trial with the mean of its clip's other repeats, over frames ``[skip:n_frames]``.

    >>> ds = neuroxr.make_scan(n_trials=60, n_neurons=20)
    >>> oracle = oracle_correlation(ds, tier="test")
    >>> oracle.dims, round(float(oracle.mean()), 2)
    (('neuron',), 0.29)
    """
    responses = _as_responses(responses, tier)
    if FRAME in responses.dims:
        groups = _repeated_clips(responses)
        oracle = responses.copy(data=_groupwise("leave_one_out_means", responses, groups, per_trial=True))
        result = _frame_correlation(responses, oracle, _valid_frames(responses, skip))
        return _named(result, "oracle_correlation", f"leave-one-out oracle correlation, frames [{skip}:n_frames]")
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
    skip: int = SKIP_FRAMES,
) -> dict[str, float]:
    """The leaderboard numbers: each metric's mean over neurons (FEVE over neurons with FEV >= threshold).

    Computes all three in one pass over the data. For video responses the 2023 leaderboard's number is
    ``single_trial_correlation`` (pooled over neurons, as ``get_correlations`` does); the other two are
    added when the responses carry a ``clip_id`` coordinate.

    >>> ds = neuroxr.make_scan(n_trials=60, n_neurons=20)
    >>> gt = neuroxr.standardize(ds).responses
    >>> model_output = gt + np.random.default_rng(0).normal(0, 0.1, gt.shape)  # a model's prediction of every trial
    >>> board = leaderboard(model_output, gt, tier="test")
    >>> sorted(board), round(board["single_trial_correlation"], 2)
    (['correlation_to_average', 'feve', 'single_trial_correlation'], 0.84)
    """
    responses = _as_responses(responses, tier)
    predictions = _aligned(predictions, responses)
    single = single_trial_correlation(predictions, responses, skip=skip)
    if FRAME in responses.dims and CLIP_ID not in responses.coords:
        return {"single_trial_correlation": float(single.mean(skipna=False))}
    feve_all, fev = _feve_parts(predictions, responses, skip)
    kept = fev >= fev_threshold
    n_kept = kept.sum()
    means = xr.Dataset(
        {
            "single_trial_correlation": single.mean(skipna=False),
            "correlation_to_average": correlation_to_average(predictions, responses, skip=skip).mean(skipna=False),
            "feve": _ratio(feve_all.where(kept, 0).sum(skipna=False), n_kept),
        }
    ).compute()
    return {name: float(value) for name, value in means.data_vars.items()}


#: The name ``leaderboard`` had in neuroxr 0.1 (kept for one release).
summary = leaderboard


# --------------------------------------------------------------------------------------------------
# 2023: responses over time. Samples are the frames [skip:n_frames] of every trial (or clip), concatenated.

#: The per-element moments of a block of samples: count, two means, two sums of squared deviations, co-moment.
_MOMENTS = 6


def _valid_frames(values: xr.DataArray, skip: int, lengths: np.ndarray | None = None) -> np.ndarray:
    """(first dim, frame) bool: the frames ``[skip, n_frames)`` of each trial (or clip, with ``lengths``)."""
    if lengths is None:
        if datamodel.N_FRAMES not in values.coords or values[datamodel.N_FRAMES].dims != (TRIAL,):
            raise ValueError(f"expected the {datamodel.N_FRAMES!r} coordinate on trial of a video scan (each trial's length), found none")
        lengths = values[datamodel.N_FRAMES].values
    if skip < 0:
        raise ValueError(f"expected skip >= 0 frames, found {skip}")
    frames = np.arange(values.sizes[FRAME])
    valid = (frames[None, :] >= skip) & (frames[None, :] < np.asarray(lengths)[:, None])
    if not valid.any():
        raise ValueError(f"expected frames after the first {skip} of some trial, found none (trials of at most {int(np.max(lengths))} frames)")
    return valid


def _block_frame_moments(a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The moments over the valid (first axis, last axis) samples of a block, per other element: (1, 6, ...).

    NaN inside the valid frames propagates (the official ``corr`` gives NaN, then 0).
    """
    mask = valid.reshape(valid.shape[0], *(1,) * (a.ndim - 2), valid.shape[1])
    axes = (0, a.ndim - 1)
    count = np.broadcast_to(mask, a.shape).sum(axis=axes).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_a = np.where(mask, a, 0).sum(axis=axes) / count
        mean_b = np.where(mask, b, 0).sum(axis=axes) / count
        deviation_a = np.where(mask, a - np.expand_dims(mean_a, axes), 0)
        deviation_b = np.where(mask, b - np.expand_dims(mean_b, axes), 0)
    squares_a = (deviation_a * deviation_a).sum(axis=axes)
    squares_b = (deviation_b * deviation_b).sum(axis=axes)
    co_moment = (deviation_a * deviation_b).sum(axis=axes)
    return np.stack([count, mean_a, mean_b, squares_a, squares_b, co_moment])[None]


def _frame_moments(a: xr.DataArray, b: xr.DataArray, valid: np.ndarray) -> tuple[Any, ...]:
    """Per element of the middle dims: count, means, squared deviations and co-moment over the valid samples.

    One pass over the data: each block's moments about its own means, merged with Chan et al.'s update.
    """
    a, b = a.transpose(a.dims[0], ..., FRAME), b.transpose(a.dims[0], ..., FRAME)
    if a.chunks is None and b.chunks is None:
        moments = _block_frame_moments(np.asarray(a.data), np.asarray(b.data), valid)
    else:
        import dask.array as da

        first = da.asarray(a.data).rechunk({a.ndim - 1: -1})
        second = da.asarray(b.data).rechunk(first.chunks)
        mask = da.from_array(valid, chunks=(first.chunks[0], -1))
        middle = "".join(chr(ord("n") + axis) for axis in range(a.ndim - 2))
        moments = da.blockwise(
            _block_frame_moments, f"tm{middle}",
            first, f"t{middle}f",
            second, f"t{middle}f",
            mask, "tf",
            new_axes={"m": _MOMENTS},
            adjust_chunks={"t": 1},
            concatenate=True,
            dtype=np.float64,
            meta=np.array((), dtype=np.float64),
        )  # fmt: skip
    count = moments[:, 0]
    n = count.sum(axis=0)
    seen = count > 0
    block_means = [np.where(seen, moments[:, k], 0) for k in (1, 2)]
    means = [(count * block_mean).sum(axis=0) / n for block_mean in block_means]
    offsets = [block_mean - mean for block_mean, mean in zip(block_means, means)]
    squares_a = moments[:, 3].sum(axis=0) + (count * offsets[0] ** 2).sum(axis=0)
    squares_b = moments[:, 4].sum(axis=0) + (count * offsets[1] ** 2).sum(axis=0)
    co_moment = moments[:, 5].sum(axis=0) + (count * offsets[0] * offsets[1]).sum(axis=0)
    return n, means[0], means[1], squares_a, squares_b, co_moment


def _per_element(values: Any, like: xr.DataArray) -> xr.DataArray:
    """A per-element result as a DataArray on the middle dims of ``like`` (its first and frame dims reduced)."""
    dims = [dim for dim in like.dims if dim not in (like.dims[0], FRAME)]
    coords = {name: coord for name, coord in like.coords.items() if set(coord.dims) <= set(dims)}
    return xr.DataArray(values, dims=dims, coords=coords)


def _frame_correlation(a: xr.DataArray, b: xr.DataArray, valid: np.ndarray) -> xr.DataArray:
    """neuralpredictors' ``corr`` over the valid (first dim, frame) samples concatenated; NaN set to 0 (2023)."""
    n, _, _, squares_a, squares_b, co_moment = _frame_moments(a, b, valid)
    with np.errstate(divide="ignore", invalid="ignore"):
        std_a = np.sqrt(np.maximum(squares_a / n, 0))
        std_b = np.sqrt(np.maximum(squares_b / n, 0))
        result = (co_moment / n) / ((std_a + CORRELATION_EPSILON) * (std_b + CORRELATION_EPSILON))
    return _per_element(result, a).fillna(0)


def _repeated_clips(responses: xr.DataArray) -> ImageGroups:
    groups = _groups(responses, CLIP_ID)
    if not (groups.repeats > 1).any():
        raise ValueError(
            f"expected clips shown more than once among these {responses.sizes[TRIAL]} trials (by {CLIP_ID!r}), found "
            "none: select trials with repeats (the oracle and test tiers), or check how the clip ids were assigned"
        )
    return groups


def _clip_lengths(responses: xr.DataArray, groups: ImageGroups) -> np.ndarray:
    """Frames of each clip: the shortest of its repeats (they agree when clips are identical videos)."""
    lengths = np.asarray(responses[datamodel.N_FRAMES].values)[groups.order]
    return np.minimum.reduceat(lengths, np.concatenate([[0], np.cumsum(groups.repeats)[:-1]]))


def _frame_feve_parts(predictions: xr.DataArray, responses: xr.DataArray, skip: int) -> tuple[xr.DataArray, xr.DataArray]:
    """Unmasked FEVE and FEV of video responses: samples are frames, noise the variance over a clip's repeats."""
    groups = _repeated_clips(responses)
    n, mean_r, mean_p, squares_r, squares_p, co_moment = _frame_moments(responses, predictions, _valid_frames(responses, skip))
    variances = _image_level("variances", responses, groups, CLIP_ID)
    clip_valid = xr.DataArray(_valid_frames(variances, skip, _clip_lengths(responses, groups)), dims=(CLIP_ID, FRAME))
    noise_variance = variances.where(clip_valid, 0).sum((CLIP_ID, FRAME), skipna=False) / int(clip_valid.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        total_variance = _per_element(squares_r / (n - 1), responses)
        error = (squares_r + squares_p - 2 * co_moment) / n + (mean_r - mean_p) ** 2
    mean_squared_error = _per_element(error, responses)
    fev = (total_variance - noise_variance) / _nan_where_zero(total_variance)
    feve_all = 1 - (mean_squared_error - noise_variance) / _nan_where_zero(total_variance - noise_variance)
    return feve_all, fev


def clip_ids(ds: xr.Dataset, *, tier: str | Sequence[str] | None = None) -> xr.DataArray:
    """Which trials of a video scan showed the same clip: a hash of each trial's video content, computed on request.

    The release has no clip id (its repeats are told by content). The rule: two trials show the same
    clip when their videos hold the same frames ``[0:n_frames]``, grey levels rounded to whole numbers
    (they are stored as whole numbers, so rounding only absorbs float noise); the id is the first 16
    hex digits of a BLAKE2b hash of those frames. Reads the videos of the trials of ``tier`` (default:
    every trial), a block at a time; other trials get ``""``. Assign it to group repeats:
    ``ds.assign_coords(clip_id=clip_ids(ds, tier="oracle"))``.

    >>> ds = neuroxr.make_scan(kind="dynamic", n_trials=40, n_neurons=4, video_shape=(6, 8), n_frames=30)
    >>> ids = clip_ids(ds, tier="oracle")
    >>> (ids != "").sum().item(), len(set(ids.values[ids.values != ""]))  # trials, clips
    (4, 2)
    """
    if "videos" not in ds.data_vars or datamodel.N_FRAMES not in ds.coords:
        raise ValueError("expected a video scan (the variable 'videos' and the coordinate 'n_frames'), found neither")
    chosen = np.ones(ds.sizes[TRIAL], dtype=bool)
    if tier is not None:
        chosen = np.isin(np.asarray(ds["tier"].values), [tier] if isinstance(tier, str) else list(tier))
    rows = np.flatnonzero(chosen)
    videos = ds["videos"].isel({TRIAL: rows}).transpose(TRIAL, ..., FRAME)
    lengths = np.asarray(ds[datamodel.N_FRAMES].values)[rows]
    if videos.chunks is None:
        hashes = _video_hashes(np.asarray(videos.data), lengths)
    else:
        import dask.array as da

        data = videos.data.rechunk({axis: -1 for axis in range(1, videos.ndim)})
        inner = "".join(chr(ord("a") + axis) for axis in range(1, videos.ndim))
        blocks = da.blockwise(
            _video_hashes, "t", data, f"t{inner}", da.from_array(lengths, chunks=(data.chunks[0],)), "t",
            concatenate=True, dtype="<U16", meta=np.array((), dtype="<U16"),
        )  # fmt: skip
        hashes = blocks.compute()
    values = np.full(ds.sizes[TRIAL], "", dtype="<U16")
    values[rows] = hashes
    attrs = {"long_name": "clip shown: a hash of the video frames [0:n_frames] as whole grey levels (repeats share it)"}
    return xr.DataArray(values, dims=TRIAL, coords={TRIAL: ds[TRIAL]}, name=CLIP_ID, attrs=attrs)


def _video_hashes(videos: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The clip hash of each video (trial, ..., frame) up to its length."""
    out = []
    for video, length in zip(videos, np.asarray(lengths).tolist()):
        frames = np.clip(np.rint(np.nan_to_num(video[..., :length], nan=-1.0)), -1, 255).astype(np.int16)
        digest = hashlib.blake2b(frames.tobytes(), digest_size=8)
        digest.update(f"{length}:{frames.shape}".encode())
        out.append(digest.hexdigest())
    return np.asarray(out, dtype="<U16")
