"""Synthetic neurons and their responses: a Gabor receptive field that follows cortical position, a smooth
rectifier, a behavioural gain and log-normal noise; silent trials hold a tiny positive value, as deconvolution gives.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

_NEURON_STREAM = 0x4E55

_NOISE_STREAM = 0x7015E

_RESPONSE_BATCH = 64

# Responses are driven by the image downsampled to about this grid.
_FEATURE_GRID = (18, 32)

# A neuron is silent with probability exp(-rate / _SILENT_RATE); silent trials store a tiny
# positive value in _SILENT_RANGE, as deconvolution does, instead of an exact zero.
_SILENT_RATE = 0.2

_SILENT_RANGE = (np.float32(1e-8), np.float32(1e-7))

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
        out[batch] = response_batch(images[batch], positions[batch], gains[batch], seed, n_neurons, image_shape)
    out[np.asarray(withheld, dtype=bool)] = np.nan
    return out

def response_batch(
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
class NeuronPopulation:
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
def neuron_population(seed: int, n_neurons: int) -> NeuronPopulation:
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
    return NeuronPopulation(unit_ids=unit_ids.astype(np.uint16), motor_coordinates=motor, layer=layer)

@functools.lru_cache(maxsize=4)
def _response_model(seed: int, n_neurons: int, image_shape: tuple[int, int, int]) -> _ResponseModel:
    """Gabor receptive fields on the feature grid; their centres follow the cortical position."""
    motor = neuron_population(seed, n_neurons).motor_coordinates
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
