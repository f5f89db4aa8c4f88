"""Synthetic video clips: float32 grey levels 0-255, (H, W, T) time last, NaN after the clip's end; one per clip id.

Natural-looking clips are a 1/f texture seen through a window that pans along a smooth random path
(sub-pixel, by phase shifts of its spectrum), with a few soft-edged objects drifting across it and a
slow change of luminance and contrast: the statistics of natural movies (1/f in space, smooth in time,
global and local motion) at a tiny cost. Out-of-distribution clips (the bonus tiers of the 2023
competition showed pink noise, dots and drifting gratings) are drifting sinusoidal gratings or
Gaussian dots on grey. A clip depends only on its id, its kind, its length and the frame shape, so
the repeats of a clip are identical, as the release's are.
"""

from __future__ import annotations

import numpy as np

from neuroxr.synthetic.images import _MAX_CYCLES

_VIDEO_STREAM = 0x71DE0

# Clips are generated this many at a time (bounds working memory).
CLIP_BATCH = 8


def generate_videos(clip_ids: np.ndarray, lengths: np.ndarray, ood: np.ndarray, frame_shape: tuple[int, int], n_frames: int) -> np.ndarray:
    """The videos of trials showing ``clip_ids`` as float32 (n, H, W, n_frames), NaN from each ``lengths`` on.

    ``ood`` marks out-of-distribution clips (gratings and dots). Repeats of a clip are generated once.

    >>> videos = generate_videos(np.array([7, 7, 8]), np.array([5, 5, 3]), np.zeros(3, bool), (6, 8), 6)
    >>> videos.shape, bool(np.array_equal(videos[0], videos[1], equal_nan=True)), int(np.isnan(videos[2, 0, 0]).sum())
    ((3, 6, 8, 6), True, 3)
    """
    out = np.empty((len(clip_ids), *frame_shape, n_frames), dtype=np.float32)
    keys = list(zip(np.asarray(clip_ids).tolist(), np.asarray(lengths).tolist(), np.asarray(ood, dtype=bool).tolist()))
    for key in dict.fromkeys(keys):
        clip = _clip(*key, frame_shape, n_frames)
        for row in [row for row, other in enumerate(keys) if other == key]:
            out[row] = clip
    return out


def _clip(clip_id: int, length: int, ood: bool, frame_shape: tuple[int, int], n_frames: int) -> np.ndarray:
    """One clip, (H, W, n_frames) float32, integral grey levels 0-255 for ``length`` frames, then NaN."""
    rng = np.random.default_rng([_VIDEO_STREAM, int(clip_id)])
    frames = (_dots if rng.random() < 0.5 else _grating)(rng, frame_shape, length) if ood else _natural(rng, frame_shape, length)
    np.rint(frames, out=frames)
    np.clip(frames, 0.0, 255.0, out=frames)
    clip = np.full((*frame_shape, n_frames), np.nan, dtype=np.float32)
    clip[..., :length] = np.moveaxis(frames, 0, -1)
    return clip


def _smooth_path(rng: np.random.Generator, length: int, speed: float, smoothness: float = 0.95) -> np.ndarray:
    """A smooth random 2-D path (length, 2) in pixels: velocity an AR(1) process, so the motion is fluid."""
    velocity = np.empty((length, 2))
    current = rng.normal(0.0, speed, 2)
    kicks = rng.normal(0.0, speed * np.sqrt(1 - smoothness**2), (length, 2))
    for t in range(length):
        current = smoothness * current + kicks[t]
        velocity[t] = current
    return np.cumsum(velocity, axis=0)


def _natural(rng: np.random.Generator, frame_shape: tuple[int, int], length: int) -> np.ndarray:
    """A panning 1/f texture with drifting objects and slow luminance and contrast changes, (length, H, W)."""
    height, width = frame_shape
    tall, wide = 2 * height, 2 * width  # the texture: a periodic plane twice the window each way
    ky = np.fft.fftfreq(tall)[:, None] * tall
    kx = np.fft.rfftfreq(wide)[None, :] * wide
    radius = np.hypot(ky, kx * tall / wide)
    exponent = rng.uniform(1.2, 1.8)
    with np.errstate(divide="ignore"):
        amplitude = np.where((radius > 0) & (radius <= 2 * _MAX_CYCLES), radius ** -exponent, 0.0)
    spectrum = ((rng.standard_normal(radius.shape) + 1j * rng.standard_normal(radius.shape)) * amplitude).astype(np.complex64)
    path = _smooth_path(rng, length, speed=rng.uniform(0.1, 0.8))
    # a shift by (dy, dx) multiplies the spectrum by a phase ramp, separable in y and x
    shift_y = np.exp(-2j * np.pi * ky[None] * path[:, 0, None, None] / tall).astype(np.complex64)
    shift_x = np.exp(-2j * np.pi * kx[None] * path[:, 1, None, None] / wide).astype(np.complex64)
    frames = np.fft.irfft2(spectrum[None] * shift_y * shift_x, s=(tall, wide))[:, :height, :width]
    frames /= max(float(frames.std()), 1e-12)
    for _ in range(int(rng.integers(0, 3))):  # objects drifting across the scene along their own paths
        frames += _moving_blob(rng, frame_shape, length)
    time = np.arange(length) / 30.0
    contrast = rng.uniform(20.0, 45.0) * (1 + 0.2 * np.sin(2 * np.pi * time / rng.uniform(4.0, 12.0) + rng.uniform(0, 2 * np.pi)))
    luminance = rng.uniform(90.0, 160.0) + rng.uniform(-15.0, 15.0) * time / max(time[-1], 1e-9)
    return (frames * contrast[:, None, None] + luminance[:, None, None]).astype(np.float32)


def _moving_blob(rng: np.random.Generator, frame_shape: tuple[int, int], length: int) -> np.ndarray:
    """A soft-edged ellipse of random size, angle and sign drifting along a smooth path, (length, H, W)."""
    height, width = frame_shape
    aspect = width / height
    path = _smooth_path(rng, length, speed=rng.uniform(0.005, 0.03)) + rng.uniform([-0.8, -0.8 * aspect], [0.8, 0.8 * aspect])
    radius_a, radius_b = rng.uniform(0.15, 0.6, size=2)
    angle = rng.uniform(0.0, np.pi)
    level = rng.choice([-1.0, 1.0]) * rng.uniform(0.8, 2.0)
    dy = np.linspace(-1.0, 1.0, height)[None, :, None] - path[:, 0, None, None]
    dx = np.linspace(-aspect, aspect, width)[None, None, :] - path[:, 1, None, None]
    along = (dx * np.cos(angle) + dy * np.sin(angle)) / radius_a
    across = (dy * np.cos(angle) - dx * np.sin(angle)) / radius_b
    edge = np.clip((1.05 - np.sqrt(along**2 + across**2)) * 10.0, 0.0, 1.0)  # a ramp from 1.05 (0) to 0.95 (1)
    return (level * edge * edge * (3 - 2 * edge)).astype(np.float32)  # smoothstep


def _grating(rng: np.random.Generator, frame_shape: tuple[int, int], length: int) -> np.ndarray:
    """A full-field sinusoidal grating drifting at a random direction, spatial and temporal frequency."""
    height, width = frame_shape
    direction = rng.uniform(0.0, 2 * np.pi)
    cycles = rng.uniform(1.5, 5.0) / height  # cycles per pixel
    speed = rng.uniform(1.0, 4.0) / 30.0  # cycles per frame
    y, x = np.mgrid[0:height, 0:width]
    along = x * np.cos(direction) + y * np.sin(direction)
    phase = 2 * np.pi * (cycles * along[None] - speed * np.arange(length)[:, None, None])
    return (128.0 + rng.uniform(40.0, 110.0) * np.sin(phase)).astype(np.float32)


def _dots(rng: np.random.Generator, frame_shape: tuple[int, int], length: int) -> np.ndarray:
    """Gaussian dots, bright or dark, drifting on grey and fading in and out."""
    height, width = frame_shape
    count = int(rng.integers(4, 12))
    centres = rng.uniform([0, 0], [height, width], (count, 2))
    velocity = rng.normal(0.0, 0.3, (count, 2))
    sizes = rng.uniform(1.0, 3.0, count) * height / 36
    signs = rng.choice([-1.0, 1.0], count) * rng.uniform(50.0, 110.0, count)
    periods = rng.uniform(30.0, 120.0, count)
    y, x = np.mgrid[0:height, 0:width]
    frames = np.full((length, height, width), 128.0)
    for dot in range(count):
        where = centres[dot] + velocity[dot] * np.arange(length)[:, None]
        cy, cx = where[:, 0] % height, where[:, 1] % width
        fade = 0.5 + 0.5 * np.cos(2 * np.pi * np.arange(length) / periods[dot])
        distance = (y[None] - cy[:, None, None]) ** 2 + (x[None] - cx[:, None, None]) ** 2
        frames += signs[dot] * fade[:, None, None] * np.exp(-distance / (2 * sizes[dot] ** 2))
    return frames.astype(np.float32)
