"""The official loaders' transforms, applied to a whole batch at once (numpy, trial first).

Each function does for a batch what one neuralpredictors transform does for one trial, number for
number (``neuralpredictors.data.transforms``, v0.3.0 for 2022 and 43faede for 2023):

- :func:`rescale_bilinear` is ``ScaleInputs``: skimage's ``rescale`` with ``order=1``, ``mode="reflect"``,
  no anti-aliasing (ndimage's ``zoom`` with ``grid_mode=True`` and mirrored edges), computed in float64;
- :func:`constant_channels` is the channels ``AddBehaviorAsChannels`` and ``AddPupilCenterAsChannels``
  append: each value broadcast over the image (and, for videos, per frame);
- :func:`first_nan_frame` finds the length ``CutVideos`` (``max_frame=None``) keeps: the first frame
  holding a NaN anywhere in a trial;
- :func:`window_starts` draws ``Subsequence``'s start frames.

Standardisation (``NeuroNormalizer``) is :class:`neuroxr.analysis.standardization.StandardizationRule`,
shared with ``neuroxr.standardize``; ``Subsample`` is a ``take`` along the neuron axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def rescaled_size(size: int, scale: float) -> int:
    """The length skimage's ``rescale`` gives an axis: ``round(scale * size)`` (half to even), at least 1.

    >>> rescaled_size(144, 0.25), rescaled_size(258, 0.25), rescaled_size(3, 0.1)
    (36, 64, 1)
    """
    return max(int(np.round(scale * size)), 1)


def _linear_taps(size: int, out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source rows and weights of ndimage's order-1 ``zoom`` with ``grid_mode=True`` and ``mode="mirror"``."""
    coordinate = (np.arange(out, dtype=np.float64) + 0.5) * (size / out) - 0.5
    if size > 1:  # mirror about the edge pixels' centres: period 2 * (size - 1)
        period = 2 * (size - 1)
        coordinate = np.abs(coordinate) % period
        coordinate = np.where(coordinate > size - 1, period - coordinate, coordinate)
    else:
        coordinate = np.zeros_like(coordinate)
    low = np.floor(coordinate).astype(np.int64)
    weight = coordinate - low
    high = np.minimum(low + 1, size - 1)
    return low, high, weight


def rescale_bilinear(images: np.ndarray, scale: float) -> np.ndarray:
    """The last two axes rescaled by ``scale`` as the official ``ScaleInputs`` does, in float64.

    ``images`` has any leading axes (trial, channel, frame); the result keeps them. ``scale=1`` is
    an exact identity, as in skimage.

    >>> image = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    >>> rescale_bilinear(image, 0.5)  # each pixel the mean of a 2 x 2 block
    array([[[ 2.5,  4.5],
            [10.5, 12.5]]])
    """
    height, width = images.shape[-2:]
    out_height, out_width = rescaled_size(height, scale), rescaled_size(width, scale)
    values = images.astype(np.float64, copy=False)
    if (out_height, out_width) == (height, width):
        return values.copy() if values is images else values
    low, high, weight = _linear_taps(height, out_height)
    weight = weight[:, None]
    rows = values[..., low, :] * (1 - weight) + values[..., high, :] * weight
    low, high, weight = _linear_taps(width, out_width)
    return rows[..., low] * (1 - weight) + rows[..., high] * weight


def constant_channels(values: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Per-trial values as image channels: ``values`` (trial, k[, frame]) -> (trial, k[, frame], *shape).

    What ``AddBehaviorAsChannels`` appends: each behaviour (or pupil) value, in float64, repeated over
    every pixel of the (already rescaled) image.

    >>> constant_channels(np.array([[1.0, 2.0]]), (2, 3)).shape
    (1, 2, 2, 3)
    """
    values = values.astype(np.float64, copy=False)
    return np.broadcast_to(values.reshape(values.shape + (1,) * len(shape)), values.shape + tuple(shape))


def first_nan_frame(values: np.ndarray, frame_axis: int = -1) -> np.ndarray:
    """Per trial (axis 0), the first frame where any element is NaN; the number of frames where none is.

    >>> x = np.ones((2, 3, 5)); x[0, 1, 3:] = np.nan
    >>> first_nan_frame(x)
    array([3, 5])
    """
    frames = values.shape[frame_axis]
    nan = np.isnan(np.moveaxis(values, frame_axis, -1)).reshape(values.shape[0], -1, frames).any(axis=1)
    return np.where(nan.any(axis=1), nan.argmax(axis=1), frames)


def window_starts(lengths: np.ndarray, frames: int, offset: int, rng: np.random.Generator) -> np.ndarray:
    """The first frame of each trial's window of ``frames`` frames: ``offset``, or uniform in ``[0, length - frames)``.

    A random start is drawn as ``Subsequence`` draws it (``randint(0, length - frames)``: the window ending
    on the last frame is never drawn); ``offset >= 0`` is taken as it is.

    >>> window_starts(np.array([10, 10]), 4, 2, np.random.default_rng(0))
    array([2, 2])
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if offset >= 0:
        return np.full(len(lengths), offset, dtype=np.int64)
    return rng.integers(0, lengths - frames)
