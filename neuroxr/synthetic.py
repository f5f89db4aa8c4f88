"""Synthetic Sensorium 2022 scans: a lazy, deterministic stand-in for a real release scan.

:func:`make_scan` returns the same Dataset that :func:`neuroxr.open_scan` gives for a release scan
(same names, dtypes, coordinates, attributes and withheld cells), but every data variable is a lazy
dask array whose blocks are generated on demand from the seed, so even a release-size scan
(7,000 trials x 8,000 neurons, images 1 x 144 x 256) never sits in memory. :func:`write_scan` writes
one out in the release layout (folder or .zip).

What the generated data looks like:

- images: float32 grey levels, integral, 0-255; smooth 1/f textures with a few soft-edged blobs.
  An image is a function of its ``image_id`` alone, so repeats of a test image are identical and
  two synthetic scans share their test images, as the real scans do.
- responses: float32 >= 0, heavy-tailed, with many 1e-8..1e-7 values in place of exact zeros. Each
  neuron is a Gabor filter on a downsampled image (its receptive field follows its cortical
  position), then a smooth rectifier, a behavioural gain and log-normal noise, so repeats correlate.
- behavior (pupil dilation, its derivative, running speed) and pupil_center: smooth random walks
  in true presentation order; running speed has bouts and can be slightly negative.
- tiers: ~77% train, ~8% validation, ~15% test (images repeated up to 10 times), plus a final_test
  tier of the same kind in competition scans. Files are in random order; ``trial_idx`` is the true
  order (md5 hex strings in competition scans) and ``frame_trial_ts`` follows it.
- statistics: mean/std (ddof=1)/min/max/median over the train tier, for subsets "all" and
  "stimulus_Frame". They are computed on first access, in one pass over the train blocks.

Every value depends only on the arguments (never on ``chunk_trials``): the generator seeds one
random stream per trial and per image.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from xarray.backends import BackendArray
from xarray.core import indexing

from neuroxr import model

#: Presets: "small" for tests and examples, "release" for the size of a real scan.
PRESETS: dict[str, dict[str, Any]] = {
    "small": {"n_trials": 240, "n_neurons": 120, "image_shape": (1, 36, 64)},
    "release": {"n_trials": 7000, "n_neurons": 8000, "image_shape": (1, 144, 256)},
}
#: Default size of one dask chunk (bytes of the largest per-trial variable times trials).
CHUNK_BYTES = 64 * 2**20

# Tier sizes: test (and final_test) ~15% each, validation ~8%, train the rest (~77%, as in the
# pre-training scans: e.g. 4,490 train of 5,983 trials, ~1,000 test).
VALIDATION_FRACTION = 0.08
TEST_FRACTION = 0.15
MAX_REPEATS = 10
MIN_REPEATS = 3
STIMULUS_SUBSETS = (model.MAIN_SUBSET, "stimulus_Frame")
#: Trailing dims of each statistics variable (after subset, statistic); images statistics are scalars.
STATISTICS_DIMS = {
    "images": (),
    "responses": ("neuron",),
    "behavior": ("behavior_variable",),
    "pupil_center": ("pupil_axis",),
}
IMAGE_CLASS = "imagenet"

# Independent random streams: each is combined with the seed and a trial or image number.
_IMAGE_STREAM = 0x1A6E
_SHARED_IDS_STREAM = 0x7E57
_LAYOUT_STREAM = 0x1A70
_BEHAVIOR_STREAM = 0xBE4A
_NEURON_STREAM = 0x4E55
_NOISE_STREAM = 0x7015E
# Shared test and final_test image ids are drawn from this range, as in the release (~100-7500).
_SHARED_ID_RANGE = (100, 7500)
# Image content: frequencies up to this many cycles per image height (and width); a power law.
_MAX_CYCLES = 24
_MAX_CYCLES_X = 43
# Images and responses are generated this many trials at a time (bounds working memory).
_IMAGE_BATCH = 64
_RESPONSE_BATCH = 64
# Responses are driven by the image downsampled to about this grid.
_FEATURE_GRID = (18, 32)
# A neuron is silent with probability exp(-rate / _SILENT_RATE); silent trials store a tiny
# positive value in _SILENT_RANGE, as deconvolution does, instead of an exact zero.
_SILENT_RATE = 0.2
_SILENT_RANGE = (np.float32(1e-8), np.float32(1e-7))


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------
def make_scan(
    *,
    preset: str = "small",
    n_trials: int | None = None,
    n_neurons: int | None = None,
    image_shape: tuple[int, int, int] | None = None,
    competition: bool = False,
    behavior_withheld: bool | None = None,
    scan: str = "30001-2-3",
    seed: int = 0,
    chunk_trials: int | None = None,
) -> xr.Dataset:
    """A synthetic scan as the lazy contract Dataset that ``open_scan`` returns for a real one.

    ``preset`` gives the sizes ("small": 240 trials, 120 neurons, images 1 x 36 x 64; "release":
    7,000 trials, 8,000 neurons, images 1 x 144 x 256); ``n_trials``, ``n_neurons`` and
    ``image_shape`` override it. ``competition=True`` adds a final_test tier, hashes ``trial_idx``
    and withholds (NaN) the responses of test and final_test trials; ``behavior_withheld=True``
    (default None: False) withholds all behavior and pupil_center values (their statistics are
    then zeros, as in the release).
    ``chunk_trials`` is the dask chunk along ``trial`` (default: about 64 MB per chunk).

    >>> ds = make_scan(n_trials=60, n_neurons=20, seed=1)
    >>> ds.responses.shape, str(ds.images.dtype)
    ((60, 20), 'float32')
    """
    if preset not in PRESETS:
        raise ValueError(f"make_scan: expected preset in {sorted(PRESETS)}, found {preset!r}")
    sizes = dict(PRESETS[preset])
    for name, value in (("n_trials", n_trials), ("n_neurons", n_neurons), ("image_shape", image_shape)):
        if value is not None:
            sizes[name] = value
    recipe = _ScanRecipe.build(
        n_trials=int(sizes["n_trials"]),
        n_neurons=int(sizes["n_neurons"]),
        image_shape=tuple(int(size) for size in sizes["image_shape"]),
        competition=bool(competition),
        behavior_withheld=bool(behavior_withheld),
        scan=scan,
        seed=int(seed),
        chunk_trials=chunk_trials,
    )
    return _build_dataset(recipe)


def release_scan(**kwargs: Any) -> xr.Dataset:
    """A synthetic scan of release size (7,000 trials x 8,000 neurons, images 1 x 144 x 256), lazy.

    >>> release_scan(seed=3).images.shape
    (7000, 1, 144, 256)
    """
    return make_scan(preset="release", **kwargs)


def write_scan(path: str | Path, *, zip: bool = False, **make_scan_kwargs: Any) -> Path:
    """Write a synthetic scan in the release layout (a folder, or a .zip with ``zip=True``).

    The keyword arguments go to :func:`make_scan`.

    >>> write_scan("/tmp/static30001-2-3-demo", n_trials=40, n_neurons=10)  # doctest: +SKIP
    PosixPath('/tmp/static30001-2-3-demo')
    """
    from neuroxr.formats.folder import to_folder

    return to_folder(make_scan(**make_scan_kwargs), path, zip=zip)


def release_name(scan: str, seed: int = 0) -> str:
    """The scan folder name, ``static{scan}-GrayImageNet-<32 hex>``, deterministic in the seed.

    >>> release_name("30001-2-3")[:29]
    'static30001-2-3-GrayImageNet-'
    """
    digest = hashlib.md5(f"neuroxr.synthetic:{seed}".encode()).hexdigest()
    return f"static{scan}-GrayImageNet-{digest}"


# --------------------------------------------------------------------------------------------
# Pure generators (numpy only; the dask graph calls these per block)
# --------------------------------------------------------------------------------------------
def generate_images(image_ids: np.ndarray, image_shape: tuple[int, int, int]) -> np.ndarray:
    """Images for ``image_ids`` as float32 (n, C, H, W), integral grey levels 0-255.

    An image depends only on its id: other shapes of the same aspect ratio sample the same
    picture (its content is band-limited to ``_MAX_CYCLES`` cycles per image height).

    >>> generate_images(np.array([7, 7]), (1, 8, 8)).std(axis=0).max()
    np.float32(0.0)
    """
    image_ids = np.asarray(image_ids).tolist()
    out = np.empty((len(image_ids), *image_shape), dtype=np.float32)
    for start in range(0, len(image_ids), _IMAGE_BATCH):
        batch = image_ids[start : start + _IMAGE_BATCH]
        _generate_image_batch(batch, image_shape, out[start : start + len(batch)])
    return out


def _generate_image_batch(image_ids: list[int], image_shape: tuple[int, int, int], out: np.ndarray) -> None:
    """Fill ``out`` (n, C, H, W) with the images of ``image_ids`` (one random stream per image)."""
    channels, height, width = image_shape
    source_rows, kept_cols, target_rows, log_radius = _spectrum_window(height, width)
    canonical_shape = (channels, 2 * _MAX_CYCLES + 1, _MAX_CYCLES_X + 1)
    n = len(image_ids)
    streams = [np.random.default_rng([_IMAGE_STREAM, int(image_id)]) for image_id in image_ids]
    exponents = np.empty((n, 1, 1, 1), dtype=np.float32)
    coefficients = np.empty((n, channels, *log_radius.shape), dtype=np.complex64)
    for j, rng in enumerate(streams):
        exponents[j] = rng.uniform(1.2, 1.8)
        coefficients[j].real = rng.standard_normal(canonical_shape, dtype=np.float32)[:, source_rows, kept_cols]
        coefficients[j].imag = rng.standard_normal(canonical_shape, dtype=np.float32)[:, source_rows, kept_cols]
    # A power-law amplitude spectrum without DC (the mean luminance is set below).
    coefficients *= np.exp(-exponents * log_radius)
    spectrum = np.zeros((n, channels, height, width // 2 + 1), dtype=np.complex64)
    spectrum[:, :, target_rows, kept_cols] = coefficients
    texture = np.fft.irfft2(spectrum, s=(height, width))
    del spectrum, coefficients
    texture /= np.maximum(texture.reshape(n, -1).std(axis=1), np.float32(1e-12))[:, None, None, None]
    rows = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None]
    cols = np.linspace(-width / height, width / height, width, dtype=np.float32)[None, :]
    contrast = np.empty((n, 1, 1, 1), dtype=np.float32)
    luminance = np.empty((n, 1, 1, 1), dtype=np.float32)
    for j, rng in enumerate(streams):
        for _ in range(int(rng.integers(0, 4))):
            _add_blob(texture[j], rng, rows, cols)
        contrast[j] = rng.uniform(20.0, 50.0)
        luminance[j] = rng.uniform(90.0, 160.0)
    texture *= contrast
    texture += luminance
    np.rint(texture, out=texture)
    np.minimum(np.maximum(texture, np.float32(0.0), out=texture), np.float32(255.0), out=out)


def generate_responses(
    images: np.ndarray,
    positions: np.ndarray,
    gains: np.ndarray,
    withheld: np.ndarray,
    *,
    seed: int,
    n_neurons: int,
    image_shape: tuple[int, int, int],
) -> np.ndarray:
    """Responses (n, n_neurons) float32 of the trials at file ``positions`` to their ``images``.

    ``gains`` is each trial's behavioural gain; rows where ``withheld`` is True are NaN. Each
    neuron: Gabor filter on the downsampled image, a smooth rectifier, gain, log-normal noise;
    trials where the rate is low are silent and hold a tiny positive value in 1e-8..1e-7.
    """
    out = np.empty((len(positions), n_neurons), dtype=np.float32)
    for start in range(0, len(positions), _RESPONSE_BATCH):
        batch = slice(start, start + _RESPONSE_BATCH)
        out[batch] = _response_batch(images[batch], positions[batch], gains[batch], seed, n_neurons, image_shape)
    out[np.asarray(withheld, dtype=bool)] = np.nan
    return out


def _response_batch(
    images: np.ndarray,
    positions: np.ndarray,
    gains: np.ndarray,
    seed: int,
    n_neurons: int,
    image_shape: tuple[int, int, int],
) -> np.ndarray:
    """Responses of a few trials (see :func:`generate_responses`), without the withheld mask."""
    neurons = _response_model(seed, n_neurons, image_shape)
    # float64 so that a row's result does not depend on how many rows the batch has
    drive = (_image_features(images) @ neurons.filters.T).astype(np.float32)
    drive *= neurons.slope
    drive += neurons.offset
    rates = _squareplus(drive)
    del drive
    rates *= neurons.amplitude
    rates *= np.asarray(gains, dtype=np.float32)[:, None]
    n = len(rates)
    normal = np.empty((n, n_neurons), dtype=np.float32)
    uniform = np.empty((n, n_neurons), dtype=np.float32)
    for j, position in enumerate(np.asarray(positions).tolist()):
        rng = np.random.default_rng([_NOISE_STREAM, seed, int(position)])
        rng.standard_normal(dtype=np.float32, out=normal[j])
        rng.random(dtype=np.float32, out=uniform[j])
    # response = rate * log-normal noise of mean 1
    normal *= neurons.noise_sigma
    normal -= neurons.noise_bias
    responses = np.exp(normal, out=normal)
    responses *= rates
    silent_probability = np.exp(rates * np.float32(-1.0 / _SILENT_RATE), out=rates)
    silent = uniform < silent_probability
    # Given silence, uniform / probability is uniform on [0, 1): reuse it for the tiny value.
    low, high = _SILENT_RANGE
    uniform /= np.maximum(silent_probability, np.float32(1e-30))
    uniform *= high - low
    uniform += low
    np.copyto(responses, uniform, where=silent)
    return responses


@functools.lru_cache(maxsize=8)
def _spectrum_window(height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The image frequencies a (height, width) grid holds.

    Returns index arrays (broadcastable) of those frequencies in the canonical coefficient grid
    (rows, cols) and in the rfft2 grid (rows; cols are the same), and log(cycles per image height)
    there, +inf at DC so that a power law gives it zero amplitude.
    """
    cycles_y = np.arange(-_MAX_CYCLES, _MAX_CYCLES + 1)
    cycles_x = np.arange(_MAX_CYCLES_X + 1)
    keep_y = cycles_y[np.abs(cycles_y) < height / 2]
    keep_x = cycles_x[cycles_x < width / 2]
    radius = np.hypot(keep_y[:, None], keep_x[None, :] * height / width)
    with np.errstate(divide="ignore"):
        log_radius = np.where(radius > 0, np.log(np.maximum(radius, 1e-30)), np.inf).astype(np.float32)
    return (keep_y + _MAX_CYCLES)[:, None], keep_x[None, :], (keep_y % height)[:, None], log_radius


def _add_blob(texture: np.ndarray, rng: np.random.Generator, rows: np.ndarray, cols: np.ndarray) -> None:
    """Add a soft-edged ellipse of random place, size, angle and sign (an 'object') to ``texture``."""
    centre_y, centre_x = rng.uniform(-0.8, 0.8), rng.uniform(-0.8, 0.8) * float(cols.max())
    radius_a, radius_b = rng.uniform(0.15, 0.6, size=2)
    angle = rng.uniform(0.0, np.pi)
    level = rng.choice([-1.0, 1.0]) * rng.uniform(0.8, 2.0)
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    # Only the bounding box of the ellipse (plus its soft edge) changes.
    reach = 1.1 * max(radius_a, radius_b)
    y_box = (rows[:, 0] >= centre_y - reach) & (rows[:, 0] <= centre_y + reach)
    x_box = (cols[0] >= centre_x - reach) & (cols[0] <= centre_x + reach)
    if not (y_box.any() and x_box.any()):
        return
    y_slice = slice(int(np.argmax(y_box)), len(y_box) - int(np.argmax(y_box[::-1])))
    x_slice = slice(int(np.argmax(x_box)), len(x_box) - int(np.argmax(x_box[::-1])))
    dy = rows[y_slice] - np.float32(centre_y)
    dx = cols[:, x_slice] - np.float32(centre_x)
    along = (dx * cos + dy * sin) * np.float32(1.0 / radius_a)
    across = (dy * cos - dx * sin) * np.float32(1.0 / radius_b)
    distance = np.sqrt(along * along + across * across)
    edge = (np.float32(1.05) - distance) * np.float32(10.0)  # linear ramp from 1.05 (0) to 0.95 (1)
    edge = np.minimum(np.maximum(edge, np.float32(0.0), out=edge), np.float32(1.0), out=edge)
    texture[..., y_slice, x_slice] += np.float32(level) * edge * edge * (3 - 2 * edge)  # smoothstep


def _feature_factor(image_shape: tuple[int, int, int]) -> int:
    return max(1, min(image_shape[1] // _FEATURE_GRID[0], image_shape[2] // _FEATURE_GRID[1]))


def _image_features(images: np.ndarray) -> np.ndarray:
    """Block-averaged, centred images (n, C * H' * W') float64: what the neurons see.

    Exact (sums of integers in float64), so each row is the same whatever the block size.
    """
    n, channels, height, width = images.shape
    factor = _feature_factor((channels, height, width))
    grid_h, grid_w = height // factor, width // factor
    cropped = images[:, :, : grid_h * factor, : grid_w * factor]
    pooled = cropped.reshape(n, channels, grid_h, factor, grid_w, factor).sum(axis=5, dtype=np.float64).sum(axis=3)
    return ((pooled / factor**2 - 128.0) / 64.0).reshape(n, -1)


def _squareplus(values: np.ndarray) -> np.ndarray:
    """(x + sqrt(x**2 + 1)) / 2: a smooth rectifier like softplus, cheaper to compute."""
    square = np.square(values)
    square += np.float32(1.0)
    np.sqrt(square, out=square)
    square += values
    square *= np.float32(0.5)
    return square


@dataclass(frozen=True)
class _Neurons:
    """Identity and position of the neurons of a scan (cheap: built with the Dataset)."""

    unit_ids: np.ndarray  # uint16, ascending with gaps, from 1
    motor_coordinates: np.ndarray  # (n, 3) float32 micrometres: x, y, depth
    layer: np.ndarray  # <U


@dataclass(frozen=True)
class _ResponseModel:
    """How each neuron responds (built lazily, by the first block of responses)."""

    filters: np.ndarray  # (n, C * H' * W') float64, unit norm
    slope: np.ndarray  # (n,) float32
    offset: np.ndarray
    amplitude: np.ndarray
    noise_sigma: np.ndarray  # (n,) float32 sd of the log-normal trial-to-trial noise
    noise_bias: np.ndarray  # sigma**2 / 2, so the noise has mean 1


@functools.lru_cache(maxsize=4)
def _neurons(seed: int, n_neurons: int) -> _Neurons:
    rng = np.random.default_rng([_NEURON_STREAM, seed])
    steps = 1 + (rng.random(n_neurons) < 0.12) * rng.integers(1, 4, n_neurons)
    steps[0] = 1
    if n_neurons > 1 and (steps[1:] == 1).all():  # the release always has gaps
        steps[1 + int(rng.integers(0, n_neurons - 1))] = 2
    unit_ids = np.cumsum(steps)
    if unit_ids[-1] > np.iinfo(np.uint16).max:
        raise ValueError(f"make_scan: expected at most ~55,000 neurons (uint16 unit ids), found {n_neurons}")
    cortex_x = rng.uniform(-600.0, 600.0, n_neurons)
    cortex_y = rng.uniform(-500.0, 500.0, n_neurons)
    depth = rng.uniform(100.0, 340.0, n_neurons)
    motor = np.stack([cortex_x + 1200.0, cortex_y - 800.0, depth], axis=1).astype(np.float32)
    layer = np.where(depth < 240.0, "L2/3", "L4")
    return _Neurons(unit_ids=unit_ids.astype(np.uint16), motor_coordinates=motor, layer=layer)


@functools.lru_cache(maxsize=4)
def _response_model(seed: int, n_neurons: int, image_shape: tuple[int, int, int]) -> _ResponseModel:
    """Gabor receptive fields on the feature grid; their centres follow the cortical position."""
    motor = _neurons(seed, n_neurons).motor_coordinates
    rng = np.random.default_rng([_NEURON_STREAM, seed, 1])
    channels, height, width = image_shape
    factor = _feature_factor(image_shape)
    grid_h, grid_w = height // factor, width // factor
    relative_x = (motor[:, 0] - 600.0) / 1200.0
    relative_y = (motor[:, 1] + 1300.0) / 1000.0
    centre_x = np.clip(relative_x * grid_w + rng.normal(0.0, 0.08 * grid_w, n_neurons), 0, grid_w - 1)
    centre_y = np.clip(relative_y * grid_h + rng.normal(0.0, 0.08 * grid_h, n_neurons), 0, grid_h - 1)
    scale = grid_h / _FEATURE_GRID[0]
    sigma = rng.uniform(1.2, 3.0, n_neurons) * scale
    orientation = rng.uniform(0.0, np.pi, n_neurons)
    frequency = rng.uniform(0.08, 0.22, n_neurons) / scale
    phase = rng.uniform(0.0, 2 * np.pi, n_neurons)

    def column(values: np.ndarray) -> np.ndarray:
        return values.astype(np.float32)[:, None, None]

    dy = np.arange(grid_h, dtype=np.float32)[None, :, None] - column(centre_y)
    dx = np.arange(grid_w, dtype=np.float32)[None, None, :] - column(centre_x)
    along = dx * column(np.cos(orientation)) + dy * column(np.sin(orientation))
    gabor = np.cos(2 * np.pi * column(frequency) * along + column(phase))
    gabor *= np.exp(-(dx**2 + dy**2) / (2 * column(sigma) ** 2))
    gabor = gabor.reshape(n_neurons, -1)
    gabor /= np.linalg.norm(gabor, axis=1, keepdims=True) * np.sqrt(channels)
    filters = gabor if channels == 1 else np.tile(gabor, (1, channels))
    sigma_noise = rng.uniform(0.5, 0.9, n_neurons)
    return _ResponseModel(
        filters=np.ascontiguousarray(filters, dtype=np.float64),
        slope=rng.uniform(0.8, 2.0, n_neurons).astype(np.float32),
        offset=rng.normal(-0.8, 0.6, n_neurons).astype(np.float32),
        amplitude=rng.lognormal(-0.5, 0.8, n_neurons).astype(np.float32),
        noise_sigma=sigma_noise.astype(np.float32),
        noise_bias=(sigma_noise**2 / 2).astype(np.float32),
    )


# --------------------------------------------------------------------------------------------
# The scan's trial layout and behaviour (small, eager)
# --------------------------------------------------------------------------------------------
@dataclass
class _ScanRecipe:
    """Everything small about a synthetic scan; the big arrays are generated from it per block."""

    scan: str
    seed: int
    n_trials: int
    n_neurons: int
    image_shape: tuple[int, int, int]
    competition: bool
    behavior_withheld: bool
    chunk_trials: int
    tiers: np.ndarray  # per file position
    image_ids: np.ndarray
    true_order: np.ndarray  # presentation order of the trial in each file
    behavior: np.ndarray  # (n, 3) float32, true values
    pupil_center: np.ndarray  # (n, 2) float32, true values
    gains: np.ndarray  # (n,) float32 behavioural gain of the responses

    @classmethod
    def build(
        cls,
        *,
        n_trials: int,
        n_neurons: int,
        image_shape: tuple[int, ...],
        competition: bool,
        behavior_withheld: bool,
        scan: str,
        seed: int,
        chunk_trials: int | None,
    ) -> _ScanRecipe:
        _parse_scan(scan)
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(f"make_scan: expected image_shape (C, H, W) of positive ints, found {image_shape}")
        if n_neurons < 1:
            raise ValueError(f"make_scan: expected n_neurons >= 1, found {n_neurons}")
        rng = np.random.default_rng([_LAYOUT_STREAM, seed])
        tiers_in_time, ids_in_time = _trial_plan(n_trials, competition, rng)
        n_trials = len(tiers_in_time)
        true_order = rng.permutation(n_trials)  # file k holds the trial presented at true_order[k]
        behavior, pupil, gains = _behavior_series(n_trials, seed)
        if chunk_trials is None:
            per_trial = 4 * max(int(np.prod(image_shape)), n_neurons)
            chunk_trials = max(1, min(n_trials, CHUNK_BYTES // per_trial))
        if chunk_trials < 1:
            raise ValueError(f"make_scan: expected chunk_trials >= 1, found {chunk_trials}")
        return cls(
            scan=scan,
            seed=seed,
            n_trials=n_trials,
            n_neurons=n_neurons,
            image_shape=image_shape,  # type: ignore[arg-type]
            competition=competition,
            behavior_withheld=behavior_withheld,
            chunk_trials=int(chunk_trials),
            tiers=tiers_in_time[true_order],
            image_ids=ids_in_time[true_order],
            true_order=true_order.astype(np.int64),
            behavior=behavior[true_order],
            pupil_center=pupil[true_order],
            gains=gains[true_order],
        )

    @property
    def responses_withheld(self) -> np.ndarray:
        if not self.competition:
            return np.zeros(self.n_trials, dtype=bool)
        return np.isin(self.tiers, model.WITHHELD_TIERS)

    @property
    def withheld(self) -> str:
        names = (["responses"] if self.competition else []) + (
            ["behavior", "pupil_center"] if self.behavior_withheld else []
        )
        return ",".join(names)


def _parse_scan(scan: str) -> tuple[int, int, int]:
    parts = scan.split("-")
    try:
        animal, session, scan_idx = (int(part) for part in parts)
    except ValueError:
        raise ValueError(f"make_scan: expected scan like '30001-2-3' (animal-session-scan), found {scan!r}") from None
    if not (0 <= animal <= 65535 and 0 <= session <= 255 and 0 <= scan_idx <= 255):
        raise ValueError(f"make_scan: expected animal id < 65536 and session, scan < 256, found {scan!r}")
    return animal, session, scan_idx


def _repeated_tier(n_trials: int) -> tuple[int, int]:
    """(images, repeats) of a test-like tier: ~15% of the trials, up to 10 repeats per image."""
    target = max(MIN_REPEATS * 3, round(TEST_FRACTION * n_trials))
    repeats = int(np.clip(round(np.sqrt(target)), MIN_REPEATS, MAX_REPEATS))
    return max(3, target // repeats), repeats


def _trial_plan(n_trials: int, competition: bool, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Tier and image id of each trial in presentation order."""
    n_images, repeats = _repeated_tier(n_trials)
    # Test (and final_test) images are the same in every synthetic scan, like the live-test images.
    shared = np.random.default_rng(_SHARED_IDS_STREAM).permutation(np.arange(*_SHARED_ID_RANGE))
    repeated_tiers = ["test", "final_test"] if competition else ["test"]
    if len(repeated_tiers) * n_images > len(shared):
        raise ValueError(f"make_scan: expected at most ~200,000 trials, found n_trials={n_trials}")
    tiers: list[str] = []
    ids: list[int] = []
    for index, tier in enumerate(repeated_tiers):
        tier_ids = shared[index * n_images : (index + 1) * n_images]
        # About one image in five is shown once less, as in the release (e.g. 998 test trials).
        counts = repeats - (rng.random(n_images) < 0.2).astype(int) * (repeats > MIN_REPEATS)
        for image_id, count in zip(tier_ids.tolist(), counts.tolist(), strict=True):
            tiers += [tier] * count
            ids += [image_id] * count
    n_validation = max(1, round(VALIDATION_FRACTION * n_trials))
    n_train = n_trials - len(tiers) - n_validation
    if n_train < 2:
        raise ValueError(
            f"make_scan: expected enough trials for train, validation and test tiers, found n_trials={n_trials}"
            f" (at least {len(tiers) + n_validation + 2} needed)"
        )
    reserved = set(shared[: len(repeated_tiers) * n_images].tolist())
    pool = np.arange(1, max(10_000, 2 * n_trials) + 1)
    pool = pool[~np.isin(pool, list(reserved))]
    unique_ids = rng.choice(pool, size=n_train + n_validation, replace=False)
    tiers += ["train"] * n_train + ["validation"] * n_validation
    ids += unique_ids.tolist()
    order = rng.permutation(len(tiers))
    return np.asarray(tiers)[order], np.asarray(ids, dtype=np.int64)[order]


def _ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    """A stationary AR(1) series with lag-1 correlation ``phi`` and marginal sd ``sd``."""
    noise = rng.standard_normal(n) * sd * np.sqrt(1.0 - phi**2)
    out = np.empty(n)
    previous = rng.standard_normal() * sd
    for t in range(n):
        previous = phi * previous + noise[t]
        out[t] = previous
    return out


def _behavior_series(n_trials: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Behaviour (n, 3), pupil centre (n, 2) and response gain (n,) in presentation order."""
    rng = np.random.default_rng([_BEHAVIOR_STREAM, seed])
    running = np.zeros(n_trials, dtype=bool)
    state = False
    for t in range(n_trials):  # bouts of running: a two-state Markov chain
        state = rng.random() < (0.97 if state else 0.02)
        running[t] = state
    speed = running * (12.0 + _ar1(rng, n_trials, 0.9, 5.0)) + rng.normal(0.0, 0.4, n_trials)
    pupil = np.maximum(24.0 + _ar1(rng, n_trials, 0.97, 6.0) + 4.0 * running, 3.0)
    derivative = np.gradient(pupil)
    behavior = np.stack([pupil, derivative, speed], axis=1).astype(np.float32)
    centre = np.array([rng.uniform(150.0, 200.0), rng.uniform(120.0, 160.0)])
    saccades = np.cumsum((rng.random((n_trials, 2)) < 0.03) * rng.normal(0.0, 6.0, (n_trials, 2)), axis=0)
    wander = np.stack([_ar1(rng, n_trials, 0.9, 3.0), _ar1(rng, n_trials, 0.9, 2.0)], axis=1)
    pupil_center = (centre + wander + saccades - saccades.mean(axis=0)).astype(np.float32)
    gains = np.exp(0.2 * (pupil - 24.0) / 6.0) * (1.0 + 0.4 * running)
    return behavior, pupil_center, gains.astype(np.float32)


def _timestamps(true_order: np.ndarray, seed: int) -> np.ndarray:
    """``"Timestamp('YYYY-MM-DD HH:MM:SS')"`` of each file's trial, a few seconds apart in true order."""
    rng = np.random.default_rng([_BEHAVIOR_STREAM, seed, 1])
    start = datetime(2019, 7, 3, 10, 0, 0) + timedelta(days=int(rng.integers(0, 400)), seconds=int(rng.integers(0, 7200)))
    seconds = np.cumsum(rng.integers(2, 5, size=len(true_order)))
    stamps = [f"Timestamp('{(start + timedelta(seconds=int(s))):%Y-%m-%d %H:%M:%S}')" for s in seconds.tolist()]
    return np.asarray(stamps)[true_order]


def _condition_hash(image_id: int) -> str:
    """A DataJoint-like condition hash: the first 20 characters of a base64 md5."""
    import base64

    return base64.b64encode(hashlib.md5(f"condition:{image_id}".encode()).digest()).decode()[:20]


def _hashed_trial_idx(scan: str, seed: int, true_order: np.ndarray) -> np.ndarray:
    return np.asarray([hashlib.md5(f"{scan}:{seed}:{t}".encode()).hexdigest() for t in true_order.tolist()])


# --------------------------------------------------------------------------------------------
# Statistics: one pass over the train blocks, on first access
# --------------------------------------------------------------------------------------------
def _statistics_from_histogram(histogram: np.ndarray) -> dict[str, np.float32]:
    """Statistics of integral grey levels 0..255 given their counts (median as np.median does)."""
    levels = np.arange(len(histogram), dtype=np.float64)
    count = int(histogram.sum())
    mean = float((histogram * levels).sum()) / count
    variance = float((histogram * (levels - mean) ** 2).sum()) / max(count - 1, 1)
    present = levels[histogram > 0]
    cumulative = np.cumsum(histogram)
    lower = levels[np.searchsorted(cumulative, (count - 1) // 2, side="right")]
    upper = levels[np.searchsorted(cumulative, count // 2, side="right")]
    values = {"mean": mean, "std": np.sqrt(variance), "min": present[0], "max": present[-1], "median": (lower + upper) / 2}
    return {name: np.float32(value) for name, value in values.items()}


def _column_statistics(values: np.ndarray, columns: int = 1024) -> dict[str, np.ndarray]:
    """mean, std (ddof=1), min, max, median of each column, float32, a few columns at a time."""
    n_columns = values.shape[1]
    out = {name: np.empty(n_columns, dtype=np.float32) for name in model.STATISTICS}
    for start in range(0, n_columns, columns):
        part = values[:, start : start + columns].astype(np.float64)
        section = slice(start, start + part.shape[1])
        out["mean"][section] = part.mean(axis=0)
        out["std"][section] = part.std(axis=0, ddof=1)
        out["min"][section] = part.min(axis=0)
        out["max"][section] = part.max(axis=0)
        out["median"][section] = np.median(part, axis=0)
    return out


def _train_block(
    positions: np.ndarray,
    image_ids: np.ndarray,
    gains: np.ndarray,
    *,
    seed: int,
    n_neurons: int,
    image_shape: tuple[int, int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Grey-level histogram (256,) and responses of the train trials at ``positions``.

    Works a few trials at a time, so the block's images are never all in memory.
    """
    histogram = np.zeros(256, dtype=np.int64)
    responses = np.empty((len(positions), n_neurons), dtype=np.float32)
    for start in range(0, len(positions), _IMAGE_BATCH):
        batch = slice(start, start + _IMAGE_BATCH)
        images = generate_images(image_ids[batch], image_shape)
        histogram += np.bincount(images.astype(np.uint8).ravel(), minlength=256)
        responses[batch] = _response_batch(images, positions[batch], gains[batch], seed, n_neurons, image_shape)
    return histogram, responses


class _LazyStatistics:
    """Computes all four statistics variables of a synthetic scan once, when first needed.

    One pass over the train trials, a block at a time (blocks run in parallel under dask);
    memory holds the train responses (needed for exact medians) and a few blocks.
    """

    def __init__(self, recipe: _ScanRecipe) -> None:
        self._recipe = recipe
        self._lock = threading.Lock()
        self._result: dict[str, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def shape(self, variable: str) -> tuple[int, ...]:
        sizes = {"neuron": self._recipe.n_neurons, **{dim: len(labels) for dim, labels in model.LABELS.items()}}
        return (len(STIMULUS_SUBSETS), len(model.STATISTICS), *(sizes[dim] for dim in STATISTICS_DIMS[variable]))

    def get(self, variable: str) -> np.ndarray:
        with self._lock:
            if self._result is None:
                self._result = self._compute()
        return self._result[variable]

    def _compute(self) -> dict[str, np.ndarray]:
        import dask

        recipe = self._recipe
        train = np.flatnonzero(recipe.tiers == "train")
        chunk_starts = np.arange(recipe.chunk_trials, recipe.n_trials, recipe.chunk_trials)
        blocks = [block for block in np.split(train, np.searchsorted(train, chunk_starts)) if len(block)]
        histogram = np.zeros(256, dtype=np.int64)
        train_responses = np.empty((len(train), recipe.n_neurons), dtype=np.float32)
        task = dask.delayed(_train_block, pure=True)
        options = {"seed": recipe.seed, "n_neurons": recipe.n_neurons, "image_shape": recipe.image_shape}
        row = 0
        parallel = max(1, min(os.cpu_count() or 1, 4))
        for start in range(0, len(blocks), parallel):
            group = blocks[start : start + parallel]
            tasks = [task(block, recipe.image_ids[block], recipe.gains[block], **options) for block in group]
            for block_histogram, responses in dask.compute(*tasks):
                histogram += block_histogram
                train_responses[row : row + len(responses)] = responses
                row += len(responses)
        per_variable: dict[str, dict[str, Any]] = {
            "images": _statistics_from_histogram(histogram),
            "responses": _column_statistics(train_responses),
        }
        del train_responses
        for name, values in (("behavior", recipe.behavior), ("pupil_center", recipe.pupil_center)):
            if recipe.behavior_withheld:
                per_variable[name] = {stat: np.zeros(values.shape[1], np.float32) for stat in model.STATISTICS}
            else:
                per_variable[name] = _column_statistics(values[train])
        result = {}
        for name, stats in per_variable.items():
            one_subset = np.stack([np.asarray(stats[stat], dtype=np.float32) for stat in model.STATISTICS])
            result[name] = np.stack([one_subset] * len(STIMULUS_SUBSETS))
        return result


class _StatisticsArray(BackendArray):
    """One statistics variable as a lazy (not dask) array, computed on first access."""

    def __init__(self, source: _LazyStatistics, variable: str) -> None:
        self.source = source
        self.variable = variable
        self.shape = source.shape(variable)
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, key: Any) -> np.ndarray:
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.BASIC, self._get)

    def _get(self, key: Any) -> np.ndarray:
        return self.source.get(self.variable)[key]


def _lazy_statistics_variable(source: _LazyStatistics, variable: str) -> Any:
    return indexing.MemoryCachedArray(indexing.LazilyIndexedArray(_StatisticsArray(source, variable)))


# --------------------------------------------------------------------------------------------
# The Dataset
# --------------------------------------------------------------------------------------------
def _file_attrs(path: str) -> dict[str, str]:
    return {model.FILE_ATTR: path}


def _build_dataset(recipe: _ScanRecipe) -> xr.Dataset:
    import dask.array as da

    n, chunk = recipe.n_trials, recipe.chunk_trials
    channels, height, width = recipe.image_shape
    animal, session, scan_idx = _parse_scan(recipe.scan)
    population = _neurons(recipe.seed, recipe.n_neurons)
    withheld_rows = recipe.responses_withheld

    def chunked(values: np.ndarray) -> Any:  # dask keys are tokens of the content
        return da.from_array(values, chunks=(chunk,) + values.shape[1:])

    ids = chunked(recipe.image_ids)
    images = da.map_blocks(
        generate_images,
        ids,
        image_shape=recipe.image_shape,
        new_axis=[1, 2, 3],
        chunks=(ids.chunks[0], (channels,), (height,), (width,)),
        dtype=np.float32,
        meta=np.empty((0, 0, 0, 0), dtype=np.float32),
        token="synthetic-images",
    )
    responses = da.blockwise(
        generate_responses, "tn",
        images, "tcyx",
        chunked(np.arange(n, dtype=np.int64)), "t",
        chunked(recipe.gains), "t",
        chunked(withheld_rows), "t",
        new_axes={"n": recipe.n_neurons},
        concatenate=True,
        dtype=np.float32,
        meta=np.empty((0, 0), dtype=np.float32),
        token="synthetic-responses",
        seed=recipe.seed,
        n_neurons=recipe.n_neurons,
        image_shape=recipe.image_shape,
    )
    behavior, pupil_center = recipe.behavior, recipe.pupil_center
    if recipe.behavior_withheld:
        behavior = np.full_like(behavior, np.nan)
        pupil_center = np.full_like(pupil_center, np.nan)

    data = {
        "images": images,
        "responses": responses,
        "behavior": chunked(behavior),
        "pupil_center": chunked(pupil_center),
    }
    data_vars: dict[str, Any] = {}
    for name, array in data.items():
        attrs = {"long_name": model.LONG_NAMES[name], model.FILE_ATTR: f"{model.DATA_DIR}/{name}"}
        data_vars[name] = (("trial", *model.DATA_DIMS[name]), array, attrs)
    statistics = _LazyStatistics(recipe)
    for name, dims in STATISTICS_DIMS.items():
        data_vars[model.statistics_name(name)] = xr.Variable(
            ("subset", "statistic", *dims),
            _lazy_statistics_variable(statistics, name),
            _file_attrs(f"{model.STATISTICS_DIR}/{name}"),
        )

    trials = model.TRIALS_DIR
    neurons = model.NEURONS_DIR
    trial_idx = _hashed_trial_idx(recipe.scan, recipe.seed, recipe.true_order) if recipe.competition else recipe.true_order
    constant = np.ones(n, dtype=np.int64)
    trial_coords = {
        "tier": (recipe.tiers, "tiers"),
        "image_id": (recipe.image_ids, "frame_image_id"),
        "trial_idx": (trial_idx, "trial_idx"),
        "frame_image_class": (np.full(n, IMAGE_CLASS), "frame_image_class"),
        "frame_trial_ts": (_timestamps(recipe.true_order, recipe.seed), "frame_trial_ts"),
        "condition_hash": (np.asarray([_condition_hash(i) for i in recipe.image_ids.tolist()]), "condition_hash"),
        f"{model.TRIAL_CLASH_PREFIX}animal_id": (animal * constant, "animal_id"),
        f"{model.TRIAL_CLASH_PREFIX}session": (session * constant, "session"),
        f"{model.TRIAL_CLASH_PREFIX}scan_idx": (scan_idx * constant, "scan_idx"),
    }
    n_neurons = recipe.n_neurons
    neuron_coords = {
        "area": (np.full(n_neurons, "V1"), "area"),
        "layer": (population.layer, "layer"),
        "animal_id": (np.full(n_neurons, animal, dtype=np.uint16), "animal_ids"),
        "session": (np.full(n_neurons, session, dtype=np.uint8), "sessions"),
        "scan_idx": (np.full(n_neurons, scan_idx, dtype=np.uint8), "scan_idx"),
    }
    coords: dict[str, Any] = {
        "trial": ("trial", np.arange(n, dtype=np.int64)),
        "neuron": ("neuron", population.unit_ids, _file_attrs(f"{neurons}/{model.NEURON_INDEX_FILE}.npy")),
        "channel": ("channel", np.arange(channels, dtype=np.int64)),
        "y": ("y", np.arange(height, dtype=np.int64)),
        "x": ("x", np.arange(width, dtype=np.int64)),
        **{dim: (dim, np.asarray(labels)) for dim, labels in model.LABELS.items()},
        "subset": ("subset", np.asarray(STIMULUS_SUBSETS)),
        "statistic": ("statistic", np.asarray(model.STATISTICS)),
        model.WITHHELD_COORD: ("trial", withheld_rows, {"long_name": model.WITHHELD_LONG_NAME}),
        "cell_motor_coordinates": (
            ("neuron", "space"),
            population.motor_coordinates,
            _file_attrs(f"{neurons}/cell_motor_coordinates.npy"),
        ),
    }
    for name, (values, stem) in trial_coords.items():
        coords[name] = ("trial", values, _file_attrs(f"{trials}/{stem}.npy"))
    for name, (values, stem) in neuron_coords.items():
        coords[name] = ("neuron", values, _file_attrs(f"{neurons}/{stem}.npy"))
    attrs = {
        "scan": recipe.scan,
        "format": model.FORMAT,
        "release_name": release_name(recipe.scan, recipe.seed),
        "withheld": recipe.withheld,
    }
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)
