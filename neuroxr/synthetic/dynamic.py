"""Synthetic Sensorium 2023 video scans: the recipe (tiers, clips, trial lengths, behaviour) and the lazy parts.

What the generated data looks like (every per-trial array has its time axis last, at 30 Hz, and is
NaN from the trial's end to the padded length):

- videos: float32 grey levels, integral, 0-255, (H, W, T) per trial (:mod:`~neuroxr.synthetic.videos`):
  natural-looking clips in the train, oracle and ``*_main`` tiers, drifting gratings and dots in the
  ``*_bonus`` tiers. Trials have their clip's length: most ~94% of the padded length (300 of 320
  frames, 10 s), some shorter, a few the full padded length.
- responses: float32 >= 0, (neurons, T): each neuron's Gabor receptive field (it follows the
  cortical position) on each frame, a smooth rectifier, a gain from pupil and running at that frame,
  log-normal noise, then a calcium-like filter (a rise of a frame or two and an exponential decay of
  0.15-0.5 s), so responses follow the video with a lag and repeats of a clip correlate.
- behavior (pupil dilation, running speed; float64) and pupil_center (float32): smooth per-frame
  series, a slow component carried across trials in presentation order; running comes in bouts.
- tiers: train ~70%, oracle ~9% and the four test tiers ~4-5% each (a few clips repeated up to 10
  times each), ``none`` ~2%. Test-tier clips are the same in every synthetic scan. ``competition=True``
  withholds (NaN) the responses of the four test tiers, as the release does (zeros on disk).
- statistics: time-resolved mean/std (ddof=1)/min/max/median over the train trials, NaN-aware (frames
  no train trial reaches are NaN), accumulated in float64 and kept in float32 like the 2022 release's,
  for the subset "all"; computed on first access in one pass.
  The median is exact when the train responses fit in :data:`MEDIAN_BYTES`, else the median of an evenly
  spaced sample of train trials that does.

There is no clip id in the release, so none is written; the recipe knows it (``clip_ids``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import xarray as xr

from neuroxr import chunking, datamodel
from neuroxr.dataset import StatisticsTable, assemble
from neuroxr.layout.frames import FrameCounts
from neuroxr.synthetic.recipe import Withholding, along_trials, neuron_files, parse_scan
from neuroxr.synthetic.responses import _image_features, _response_model, _squareplus, neuron_population
from neuroxr.synthetic.statistics import ComputedOnce, lazy_statistics_variable
from neuroxr.synthetic.videos import CLIP_BATCH, generate_videos

KIND = datamodel.DYNAMIC
FRAME_RATE = KIND.frame_rate or 30.0

# Tiers in presentation order: fraction of the trials, repeats drawn per clip (up to MAX_REPEATS).
REPEATED_TIERS = {
    "oracle": 0.09,
    "live_test_main": 0.05,
    "live_test_bonus": 0.04,
    "final_test_main": 0.05,
    "final_test_bonus": 0.04,
}
NONE_FRACTION = 0.02
MAX_REPEATS = 10
MIN_REPEATS = 2
#: Trials of one repeated tier, at least (two clips, each shown at least twice).
MIN_REPEATED_TRIALS = 4
#: The train responses the exact median may hold in memory; beyond it, a sample of train trials.
MEDIAN_BYTES = 256 * 2**20

_PLAN_STREAM = 0xD1A0
_SHARED_CLIPS_STREAM = 0xC11B
_LENGTH_STREAM = 0x1E46
_BEHAVIOR_STREAM = 0xBE4B
_NOISE_STREAM = 0x7015F
_DYNAMICS_STREAM = 0xCA1C
#: Clip ids of the repeated tiers come from this range (the same in every synthetic scan), train clips from above it.
_SHARED_CLIP_RANGE = (1, 100_000)
#: Shared clip ids set aside for each repeated tier.
_TIER_CLIPS = 10_000
#: Train trials folded into the statistics together (fixed, so that they never depend on ``chunk_trials``).
STATISTICS_BATCH = 32


@dataclass
class VideoRecipe(Withholding):
    """Everything small about a synthetic video scan; the videos and responses are generated from it per block."""

    kind: ClassVar[datamodel.ReleaseKind] = KIND

    scan: str
    seed: int
    n_trials: int
    n_neurons: int
    frame_shape: tuple[int, int]
    n_frames: int  #: the padded length
    competition: bool
    behavior_withheld: bool
    chunk_trials: int
    tiers: np.ndarray  #: per file position
    clip_ids: np.ndarray
    ood: np.ndarray  #: bool: an out-of-distribution clip (bonus tiers)
    lengths: np.ndarray  #: frames of each trial before its padding
    true_order: np.ndarray
    behavior: np.ndarray  #: (n, 2, T) float64, NaN-padded
    pupil_center: np.ndarray  #: (n, 2, T) float32, NaN-padded
    gains: np.ndarray  #: (n, T) float32 response gain per frame

    @classmethod
    def build(
        cls,
        *,
        n_trials: int,
        n_neurons: int,
        frame_shape: tuple[int, ...],
        n_frames: int,
        competition: bool,
        behavior_withheld: bool,
        scan: str,
        seed: int,
        chunk_trials: int | None,
    ) -> VideoRecipe:
        parse_scan(scan)
        if len(frame_shape) != 2 or min(frame_shape) < 1:
            raise ValueError(f"make_scan: expected video_shape (H, W) of positive ints, found {frame_shape}")
        if n_neurons < 1:
            raise ValueError(f"make_scan: expected n_neurons >= 1, found {n_neurons}")
        if n_frames < 2:
            raise ValueError(f"make_scan: expected n_frames >= 2 (the padded trial length), found {n_frames}")
        rng = np.random.default_rng([_PLAN_STREAM, seed])
        tiers_in_time, clips_in_time = _plan(n_trials, rng)
        n_trials = len(tiers_in_time)
        true_order = rng.permutation(n_trials)
        ood = np.char.endswith(tiers_in_time.astype(str), "_bonus")
        lengths = np.array([clip_length(clip, n_frames) for clip in clips_in_time.tolist()], dtype=np.int64)
        behavior, pupil, gains = behavior_series(lengths, n_frames, seed)
        if chunk_trials is None:
            per_trial = 4 * n_frames * max(int(np.prod(frame_shape)), n_neurons)
            chunk_trials = chunking.trials_per_chunk(per_trial, n_trials)
        if chunk_trials < 1:
            raise ValueError(f"make_scan: expected chunk_trials >= 1, found {chunk_trials}")
        return cls(
            scan=scan,
            seed=seed,
            n_trials=n_trials,
            n_neurons=n_neurons,
            frame_shape=tuple(int(size) for size in frame_shape),  # type: ignore[arg-type]
            n_frames=int(n_frames),
            competition=competition,
            behavior_withheld=behavior_withheld,
            chunk_trials=int(chunk_trials),
            tiers=tiers_in_time[true_order],
            clip_ids=clips_in_time[true_order],
            ood=ood[true_order],
            lengths=lengths[true_order],
            true_order=true_order.astype(np.int64),
            behavior=behavior[true_order],
            pupil_center=pupil[true_order],
            gains=gains[true_order],
        )


def _plan(n_trials: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Tier and clip id of each trial in presentation order."""
    shared = np.random.default_rng(_SHARED_CLIPS_STREAM).permutation(np.arange(*_SHARED_CLIP_RANGE))
    tiers: list[str] = []
    clips: list[int] = []
    for index, (tier, fraction) in enumerate(REPEATED_TIERS.items()):
        target = max(MIN_REPEATED_TRIALS, round(fraction * n_trials))
        repeats = int(np.clip(round(np.sqrt(target)), MIN_REPEATS, MAX_REPEATS))
        n_clips = max(2, target // repeats)
        # each tier draws its clips from its own part of the shared ids: scans share their first clips of a tier
        for clip in shared[index * _TIER_CLIPS : index * _TIER_CLIPS + n_clips].tolist():
            count = repeats - int(rng.random() < 0.2 and repeats > MIN_REPEATS)  # a clip now and then shown once less
            tiers += [tier] * count
            clips += [clip] * count
    n_none = max(1, round(NONE_FRACTION * n_trials))
    n_train = n_trials - len(tiers) - n_none
    if n_train < 2:
        raise ValueError(
            f"make_scan: expected enough trials for the train, oracle and test tiers of a video scan, found "
            f"n_trials={n_trials} (at least {len(tiers) + n_none + 2} needed)"
        )
    unique = _SHARED_CLIP_RANGE[1] + rng.choice(max(10_000, 4 * n_trials), size=n_train + n_none, replace=False)
    tiers += ["train"] * n_train + ["none"] * n_none
    clips += unique.tolist()
    order = rng.permutation(len(tiers))
    return np.asarray(tiers)[order], np.asarray(clips, dtype=np.int64)[order]


def clip_length(clip_id: int, n_frames: int) -> int:
    """Frames of a clip: mostly 15/16 of the padded length (300 of 320), some shorter, a few all of it."""
    rng = np.random.default_rng([_LENGTH_STREAM, int(clip_id)])
    draw = rng.random()
    typical = max(1, round(n_frames * 15 / 16))
    if draw < 0.7:
        return typical
    if draw < 0.9:
        return int(rng.integers(max(1, round(0.6 * n_frames)), n_frames))
    return n_frames


def behavior_series(lengths: np.ndarray, n_frames: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Behaviour (n, 2, T) float64, pupil centre (n, 2, T) float32 and response gain (n, T), in presentation order.

    A slow component is carried from trial to trial (pupil baseline, running state), a fast one
    varies within the trial; everything past a trial's length is NaN (the gain there is 1).
    """
    n = len(lengths)
    rng = np.random.default_rng([_BEHAVIOR_STREAM, seed])
    baseline = np.empty(n)
    level = rng.normal(0.0, 5.0)
    for trial in range(n):  # pupil baseline: a slow random walk across trials
        level = 0.9 * level + rng.normal(0.0, 5.0 * np.sqrt(1 - 0.81))
        baseline[trial] = level
    running = np.zeros((n, n_frames), dtype=bool)
    state = rng.random(n) < 0.3
    pupil_fast = np.zeros((n, n_frames))
    speed_fast = np.zeros((n, n_frames))
    fast, wobble = np.zeros(n), np.zeros(n)
    for t in range(n_frames):  # bouts of running (a two-state Markov chain per frame) and fast fluctuations
        state = np.where(state, rng.random(n) < 0.995, rng.random(n) < 0.003)
        running[:, t] = state
        fast = 0.98 * fast + rng.normal(0.0, 0.6, n)
        wobble = 0.9 * wobble + rng.normal(0.0, 0.8, n)
        pupil_fast[:, t], speed_fast[:, t] = fast, wobble
    pupil = np.maximum(24.0 + baseline[:, None] + pupil_fast + 5.0 * running, 3.0)
    speed = running * (12.0 + 2.0 * speed_fast) + rng.normal(0.0, 0.3, (n, n_frames))
    behavior = np.stack([pupil, speed], axis=1)
    centre = np.array([rng.uniform(150.0, 200.0), rng.uniform(120.0, 160.0)])
    saccades = np.cumsum((rng.random((n, n_frames, 2)) < 0.01) * rng.normal(0.0, 4.0, (n, n_frames, 2)), axis=1)
    drift = np.cumsum(rng.normal(0.0, 0.05, (n, n_frames, 2)), axis=1)
    pupil_center = np.moveaxis(centre + saccades + drift, -1, 1).astype(np.float32)
    gains = (np.exp(0.2 * (pupil - 24.0) / 6.0) * (1.0 + 0.4 * running)).astype(np.float32)
    after = np.arange(n_frames)[None, :] >= lengths[:, None]
    behavior[np.broadcast_to(after[:, None], behavior.shape)] = np.nan
    pupil_center[np.broadcast_to(after[:, None], pupil_center.shape)] = np.nan
    gains[after] = 1.0
    return behavior, pupil_center, gains


def release_name(scan: str, seed: int = 0) -> str:
    """The folder name of a synthetic video scan, ``dynamic{scan}-Video-<32 hex>``, deterministic in the seed.

    >>> release_name("30001-2-3")[:23]
    'dynamic30001-2-3-Video-'
    """
    digest = hashlib.md5(f"neuroxr.synthetic.video:{seed}".encode()).hexdigest()
    return f"{KIND.name_prefix}{scan}-{KIND.name_tag}-{digest}"


# --------------------------------------------------------------------------------------------------
# responses


@dataclass(frozen=True)
class _Dynamics:
    """Per neuron: response latency (frames) and the calcium-like decay per frame."""

    latency: np.ndarray  # int
    decay: np.ndarray  # float32 in (0, 1)
    noise_sigma: np.ndarray
    noise_bias: np.ndarray


def _dynamics(seed: int, n_neurons: int) -> _Dynamics:
    rng = np.random.default_rng([_DYNAMICS_STREAM, seed])
    tau = rng.uniform(0.15, 0.5, n_neurons) * FRAME_RATE
    sigma = rng.uniform(0.3, 0.6, n_neurons)
    return _Dynamics(
        latency=rng.integers(1, 4, n_neurons),
        decay=np.exp(-1.0 / tau).astype(np.float32),
        noise_sigma=sigma.astype(np.float32),
        noise_bias=(sigma**2 / 2).astype(np.float32),
    )


def generate_responses(
    videos: np.ndarray,
    positions: np.ndarray,
    gains: np.ndarray,
    lengths: np.ndarray,
    withheld: np.ndarray,
    *,
    seed: int,
    n_neurons: int,
) -> np.ndarray:
    """Responses (n, n_neurons, T) float32 of the trials at file ``positions`` to their ``videos`` (n, H, W, T).

    ``gains`` (n, T) scale each frame; frames from ``lengths`` on and rows where ``withheld`` is True are NaN.
    """
    n, height, width, n_frames = videos.shape
    out = np.full((n, n_neurons, n_frames), np.nan, dtype=np.float32)
    model = _response_model(seed, n_neurons, (1, height, width))
    dynamics = _dynamics(seed, n_neurons)
    for row in range(n):
        length = int(lengths[row])
        if withheld[row] or length == 0:
            continue
        frames = np.moveaxis(videos[row, :, :, :length], -1, 0)[:, None]  # (length, 1, H, W)
        drive = (_image_features(frames) @ model.filters.T).astype(np.float32)
        drive *= model.slope
        drive += model.offset
        rates = _squareplus(drive) * model.amplitude * gains[row, :length, None]
        noise = np.random.default_rng([_NOISE_STREAM, seed, int(positions[row])]).standard_normal((length, n_neurons), dtype=np.float32)
        noise *= dynamics.noise_sigma
        noise -= dynamics.noise_bias
        events = rates * np.exp(noise)
        out[row, :, :length] = _calcium(events, dynamics).T
    return out


def _calcium(events: np.ndarray, dynamics: _Dynamics) -> np.ndarray:
    """Each neuron's events (frames, neurons) delayed by its latency, then a fast rise and an exponential decay.

    The trial starts in the steady state of the activity before it (that of the previous trial).
    """
    length, n_neurons = events.shape
    level = events[: max(1, min(length, 15))].mean(axis=0)
    delayed = np.empty_like(events)
    for latency in np.unique(dynamics.latency).tolist():
        chosen = dynamics.latency == latency
        delayed[:latency, chosen] = level[chosen]
        delayed[latency:, chosen] = events[: length - latency, chosen]
    trace = np.empty_like(events)
    rise = level.copy()
    keep = dynamics.decay
    for t in range(length):
        rise = np.float32(0.5) * rise + np.float32(0.5) * delayed[t]
        level = keep * level + (1 - keep) * rise
        trace[t] = level
    trace += np.float32(1e-7)  # deconvolved activity is tiny rather than exactly zero when silent
    return trace


# --------------------------------------------------------------------------------------------------
# statistics


class _Accumulator:
    """NaN-aware per-element count, mean and squared deviations, min and max; blocks merged with Chan's update."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.count = np.zeros(shape)
        self.mean = np.zeros(shape)
        self.squares = np.zeros(shape)
        self.low = np.full(shape, np.inf)
        self.high = np.full(shape, -np.inf)

    def add(self, block: np.ndarray) -> None:
        """Fold the trials of ``block`` (trial, ...) in."""
        values = np.asarray(block, dtype=np.float64)
        present = ~np.isnan(values)
        part = _Accumulator(values.shape[1:])
        part.count = present.sum(axis=0).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            part.mean = np.where(part.count > 0, np.where(present, values, 0).sum(axis=0) / part.count, 0.0)
        part.squares = np.where(present, (values - part.mean) ** 2, 0).sum(axis=0)
        part.low = np.where(present, values, np.inf).min(axis=0)
        part.high = np.where(present, values, -np.inf).max(axis=0)
        self.merge(part)

    def merge(self, other: _Accumulator) -> None:
        """Fold another accumulator's moments in (Chan et al.)."""
        count = self.count + other.count
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = other.mean - self.mean
            self.mean = np.where(count > 0, self.mean + delta * other.count / count, 0.0)
            self.squares = self.squares + other.squares + np.where(count > 0, delta**2 * self.count * other.count / count, 0.0)
        self.count = count
        self.low = np.fmin(self.low, other.low)
        self.high = np.fmax(self.high, other.high)

    def result(self, median: np.ndarray) -> dict[str, np.ndarray]:
        """mean, std (ddof=1), min, max and the given median; NaN where no (or one, for std) value was seen."""
        known = self.count > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            std = np.sqrt(self.squares / np.where(self.count > 1, self.count - 1, np.nan))
        return {
            "mean": np.where(known, self.mean, np.nan),
            "std": std,
            "min": np.where(known, self.low, np.nan),
            "max": np.where(known, self.high, np.nan),
            "median": median,
        }


def _nanmedian(values: np.ndarray) -> np.ndarray:
    """Median over axis 0 ignoring NaN, as ``np.nanmedian``; NaN where every value is NaN (no warning).

    >>> _nanmedian(np.array([[1.0, np.nan], [3.0, np.nan], [np.nan, np.nan], [10.0, np.nan]]))
    array([ 3., nan])
    """
    ordered = np.sort(np.asarray(values, dtype=np.float64), axis=0)  # NaN sort last
    count = (~np.isnan(ordered)).sum(axis=0)
    low = np.take_along_axis(ordered, np.maximum((count - 1) // 2, 0)[None], axis=0)[0]
    high = np.take_along_axis(ordered, (count // 2)[None], axis=0)[0]  # the same as low when count is odd
    return np.where(count > 0, (low + high) / 2, np.nan)


def _train_block(recipe: VideoRecipe, rows: np.ndarray, sample: np.ndarray) -> dict[str, Any]:
    """Videos and responses of the train trials ``rows``, generated a few at a time, folded into accumulators."""
    video_sum = _Accumulator((*recipe.frame_shape, recipe.n_frames))
    response_sum = _Accumulator((recipe.n_neurons, recipe.n_frames))
    kept_videos, kept_responses = [], []
    for start in range(0, len(rows), CLIP_BATCH):
        batch = rows[start : start + CLIP_BATCH]
        videos = generate_videos(recipe.clip_ids[batch], recipe.lengths[batch], recipe.ood[batch], recipe.frame_shape, recipe.n_frames)
        responses = generate_responses(
            videos, batch, recipe.gains[batch], recipe.lengths[batch], np.zeros(len(batch), bool),
            seed=recipe.seed, n_neurons=recipe.n_neurons,
        )  # fmt: skip
        video_sum.add(videos)
        response_sum.add(responses)
        chosen = np.isin(batch, sample)
        kept_videos.append(videos[chosen])
        kept_responses.append(responses[chosen])
    return {"videos": (video_sum, np.concatenate(kept_videos)), "responses": (response_sum, np.concatenate(kept_responses))}


class LazyVideoStatistics(ComputedOnce):
    """The four statistics variables of a synthetic video scan, computed once when first needed, in one pass."""

    dtype = np.dtype(np.float32)
    _recipe: VideoRecipe

    def shape(self, variable: str) -> tuple[int, ...]:
        recipe = self._recipe
        trailing = {
            "videos": (*recipe.frame_shape, recipe.n_frames),
            "responses": (recipe.n_neurons, recipe.n_frames),
            "behavior": (2, recipe.n_frames),
            "pupil_center": (2, recipe.n_frames),
        }[variable]
        return (1, len(datamodel.STATISTICS), *trailing)

    def _compute(self) -> dict[str, np.ndarray]:
        import dask

        recipe = self._recipe
        train = np.flatnonzero(recipe.tiers == "train")
        per_trial = 8 * recipe.n_frames * (recipe.n_neurons + int(np.prod(recipe.frame_shape)))
        kept = max(2, min(len(train), MEDIAN_BYTES // per_trial))
        sample = train[np.linspace(0, len(train) - 1, kept).round().astype(int)] if kept < len(train) else train
        blocks = [train[start : start + STATISTICS_BATCH] for start in range(0, len(train), STATISTICS_BATCH)]
        task = dask.delayed(_train_block, pure=True)
        parallel = max(1, min(os.cpu_count() or 1, 4))
        totals: dict[str, tuple[_Accumulator, list[np.ndarray]]] = {}
        for start in range(0, len(blocks), parallel):
            for done in dask.compute(*(task(recipe, block, sample) for block in blocks[start : start + parallel])):
                for name, (accumulator, values) in done.items():
                    if name not in totals:
                        totals[name] = (accumulator, [values])
                        continue
                    totals[name][0].merge(accumulator)
                    totals[name][1].append(values)
        per_variable = {name: total.result(_nanmedian(np.concatenate(values))) for name, (total, values) in totals.items()}
        for name, values in (("behavior", recipe.behavior), ("pupil_center", recipe.pupil_center)):
            if recipe.behavior_withheld:
                per_variable[name] = {stat: np.zeros(values.shape[1:]) for stat in datamodel.STATISTICS}
                continue
            accumulator = _Accumulator(values.shape[1:])
            accumulator.add(values[train])
            per_variable[name] = accumulator.result(_nanmedian(values[train].astype(np.float64)))
        return {
            name: np.stack([stats[stat] for stat in datamodel.STATISTICS])[None].astype(self.dtype)
            for name, stats in per_variable.items()
        }



# --------------------------------------------------------------------------------------------------
# the Dataset


def build_dataset(recipe: VideoRecipe) -> xr.Dataset:
    """The scan's parts, generated lazily per block of trials, handed to the one builder of the data model."""
    import dask.array as da

    n, chunk = recipe.n_trials, recipe.chunk_trials
    height, width = recipe.frame_shape
    population = neuron_population(recipe.seed, recipe.n_neurons)
    withheld_rows = recipe.responses_withheld

    def chunked(values: np.ndarray) -> Any:
        return along_trials(values, chunk)

    lengths = chunked(recipe.lengths)
    videos = da.map_blocks(
        generate_videos,
        chunked(recipe.clip_ids),
        lengths,
        chunked(recipe.ood),
        frame_shape=recipe.frame_shape,
        n_frames=recipe.n_frames,
        new_axis=[1, 2, 3],
        chunks=(lengths.chunks[0], (height,), (width,), (recipe.n_frames,)),
        dtype=np.float32,
        meta=np.empty((0, 0, 0, 0), dtype=np.float32),
        token="synthetic-videos",
    )
    responses = da.blockwise(
        generate_responses, "tnf",
        videos, "tyxf",
        chunked(np.arange(n, dtype=np.int64)), "t",
        chunked(recipe.gains), "tf",
        lengths, "t",
        chunked(withheld_rows), "t",
        new_axes={"n": recipe.n_neurons},
        concatenate=True,
        dtype=np.float32,
        meta=np.empty((0, 0, 0), dtype=np.float32),
        token="synthetic-video-responses",
        seed=recipe.seed,
        n_neurons=recipe.n_neurons,
    )  # fmt: skip
    behavior, pupil_center = recipe.observed_behavior()
    data = {"videos": videos, "responses": responses, "behavior": chunked(behavior), "pupil_center": chunked(pupil_center)}

    statistics_source = LazyVideoStatistics(recipe)
    statistics = {
        name: StatisticsTable([datamodel.MAIN_SUBSET], list(datamodel.STATISTICS), lazy_statistics_variable(statistics_source, name))
        for name in KIND.data_variables
    }
    coordinates = np.rint(population.motor_coordinates).astype(np.int64)  # the 2023 release stores whole micrometres
    neuron_meta = neuron_files(recipe.scan, population.unit_ids, population.layer, coordinates)
    attrs = {"scan": recipe.scan, "release_name": release_name(recipe.scan, recipe.seed), datamodel.WITHHELD_ATTR: recipe.withheld}
    return assemble(
        data=data,
        trial_meta={"tiers": recipe.tiers, "trial_idx": recipe.true_order},
        neuron_meta=neuron_meta,
        statistics=statistics,
        responses_withheld=withheld_rows,
        attrs=attrs,
        kind=KIND,
        n_frames=FrameCounts(recipe.lengths, "synthetic: the length of each trial's clip"),
    )
