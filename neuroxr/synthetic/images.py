"""Synthetic images: smooth 1/f textures with a few soft-edged blobs, float32 grey levels 0-255, one per image id.

An image is a function of its id alone, so repeats are identical and two scans share their test images.
"""

from __future__ import annotations

import functools

import numpy as np

# Independent random streams: each is combined with the seed and a trial or image number.
_IMAGE_STREAM = 0x1A6E

# Image content: frequencies up to this many cycles per image height (and width); a power law.
_MAX_CYCLES = 24

_MAX_CYCLES_X = 43

# Images and responses are generated this many trials at a time (bounds working memory).
IMAGE_BATCH = 64

def generate_images(image_ids: np.ndarray, image_shape: tuple[int, int, int]) -> np.ndarray:
    """Images for ``image_ids`` as float32 (n, C, H, W), integral grey levels 0-255.

    An image depends only on its id: other shapes of the same aspect ratio sample the same
    picture (its content is band-limited to ``_MAX_CYCLES`` cycles per image height).

    >>> generate_images(np.array([7, 7]), (1, 8, 8)).std(axis=0).max()
    np.float32(0.0)
    """
    image_ids = np.asarray(image_ids).tolist()
    out = np.empty((len(image_ids), *image_shape), dtype=np.float32)
    for start in range(0, len(image_ids), IMAGE_BATCH):
        batch = image_ids[start : start + IMAGE_BATCH]
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
