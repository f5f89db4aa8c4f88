"""Synthetic Sensorium scans (2022 images, 2023 videos): a lazy, deterministic stand-in for a real release scan.

:func:`make_scan` returns the same Dataset that :func:`neuroxr.open_scan` gives for a release scan
(same names, dtypes, coordinates, attributes and withheld cells), but every data variable is a lazy
dask array whose blocks are generated on demand from the seed, so even a release-size scan
(7,000 trials x 8,000 neurons, images 1 x 144 x 256) never sits in memory. :func:`write_scan` writes
one out in the release layout (folder or .zip). ``kind="dynamic"`` makes a 2023 video scan
(:mod:`neuroxr.synthetic.dynamic` says what it holds).

What a generated 2022 scan looks like:

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

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from neuroxr import datamodel
from neuroxr.dataset import StatisticsTable, assemble
from neuroxr.formats.release import to_folder
from neuroxr.synthetic import dynamic
from neuroxr.synthetic.images import generate_images
from neuroxr.synthetic.recipe import ScanRecipe, along_trials, condition_hash, hashed_trial_idx, neuron_files, parse_scan, timestamps
from neuroxr.synthetic.responses import generate_responses, neuron_population
from neuroxr.synthetic.statistics import STIMULUS_SUBSETS, LazyStatistics, lazy_statistics_variable

#: Presets: "small" for tests and examples, "release" for the size of a real scan.
PRESETS: dict[str, dict[str, Any]] = {
    "small": {"n_trials": 240, "n_neurons": 120, "image_shape": (1, 36, 64)},
    "release": {"n_trials": 7000, "n_neurons": 8000, "image_shape": (1, 144, 256)},
}
#: The same for video scans (``kind="dynamic"``): trials, neurons, frame shape (H, W), padded frames.
DYNAMIC_PRESETS: dict[str, dict[str, Any]] = {
    "small": {"n_trials": 60, "n_neurons": 40, "video_shape": (36, 64), "n_frames": 90},
    "release": {"n_trials": 680, "n_neurons": 8000, "video_shape": (36, 64), "n_frames": 320},
}

IMAGE_CLASS = "imagenet"

def make_scan(
    *,
    kind: str = "static",
    preset: str = "small",
    n_trials: int | None = None,
    n_neurons: int | None = None,
    image_shape: tuple[int, int, int] | None = None,
    video_shape: tuple[int, int] | None = None,
    n_frames: int | None = None,
    competition: bool = False,
    behavior_withheld: bool | None = None,
    scan: str = "30001-2-3",
    seed: int = 0,
    chunk_trials: int | None = None,
) -> xr.Dataset:
    """A synthetic scan as the lazy contract Dataset that ``open_scan`` returns for a real one.

    ``kind`` is "static" (a 2022 image scan) or "dynamic" (a 2023 video scan). ``preset`` gives the
    sizes (static "small": 240 trials, 120 neurons, images 1 x 36 x 64; "release": 7,000 trials,
    8,000 neurons, images 1 x 144 x 256; dynamic "small": 60 trials, 40 neurons, videos 36 x 64 x 90
    frames; "release": 680 trials, 8,000 neurons, videos 36 x 64 x 320); ``n_trials``, ``n_neurons``,
    ``image_shape`` (static) and ``video_shape``, ``n_frames`` (dynamic: frame H x W, padded length)
    override it. ``competition=True`` withholds (NaN) the responses of the test tiers (a static scan
    also gets a final_test tier and a hashed ``trial_idx``); ``behavior_withheld=True`` (default
    None: False) withholds all behavior and pupil_center values (their statistics are then zeros, as
    in the release). ``chunk_trials`` is the dask chunk along ``trial`` (default: about 64 MB per chunk).

    >>> ds = make_scan(n_trials=60, n_neurons=20, seed=1)
    >>> ds.responses.shape, str(ds.images.dtype)
    ((60, 20), 'float32')
    >>> videos = make_scan(kind="dynamic", n_trials=40, n_neurons=10, n_frames=60, competition=True)
    >>> videos.responses.dims, videos.sizes["frame"], sorted(set(videos.tier.values.tolist()))[:2]
    (('trial', 'neuron', 'frame'), 60, ['final_test_bonus', 'final_test_main'])
    """
    if kind not in datamodel.KINDS:
        raise ValueError(f"make_scan: expected kind in {sorted(datamodel.KINDS)}, found {kind!r}")
    presets = DYNAMIC_PRESETS if kind == datamodel.DYNAMIC.name else PRESETS
    if preset not in presets:
        raise ValueError(f"make_scan: expected preset in {sorted(presets)}, found {preset!r}")
    sizes = dict(presets[preset])
    given = {"n_trials": n_trials, "n_neurons": n_neurons, "image_shape": image_shape, "video_shape": video_shape, "n_frames": n_frames}
    for name, value in given.items():
        if value is not None and name not in sizes:
            raise ValueError(f"make_scan: {name} is not an option of a {kind} scan (expected one of {', '.join(sorted(sizes))})")
        if value is not None:
            sizes[name] = value
    if kind == datamodel.DYNAMIC.name:
        video_recipe = dynamic.VideoRecipe.build(
            n_trials=int(sizes["n_trials"]),
            n_neurons=int(sizes["n_neurons"]),
            frame_shape=tuple(int(size) for size in sizes["video_shape"]),
            n_frames=int(sizes["n_frames"]),
            competition=bool(competition),
            behavior_withheld=bool(behavior_withheld),
            scan=scan,
            seed=int(seed),
            chunk_trials=chunk_trials,
        )
        return dynamic.build_dataset(video_recipe)
    recipe = ScanRecipe.build(
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

    The keyword arguments go to :func:`make_scan` (``kind="dynamic"`` for a 2023 video scan).

    >>> write_scan(tmp / "static30001-2-3-demo", n_trials=40, n_neurons=10)
    PosixPath('.../static30001-2-3-demo')
    >>> write_scan(tmp / "static30001-2-3-demo.zip", zip=True, n_trials=40, n_neurons=10).stat().st_size > 0
    True
    """
    return to_folder(make_scan(**make_scan_kwargs), path, zip=zip)

def release_name(scan: str, seed: int = 0) -> str:
    """The scan folder name, ``static{scan}-GrayImageNet-<32 hex>``, deterministic in the seed.

    >>> release_name("30001-2-3")[:29]
    'static30001-2-3-GrayImageNet-'
    """
    digest = hashlib.md5(f"neuroxr.synthetic:{seed}".encode()).hexdigest()
    return f"static{scan}-GrayImageNet-{digest}"

def _build_dataset(recipe: ScanRecipe) -> xr.Dataset:
    """The scan's parts, generated lazily, handed to the one builder of the data model."""
    import dask.array as da

    n, chunk = recipe.n_trials, recipe.chunk_trials
    channels, height, width = recipe.image_shape
    animal, session, scan_idx = parse_scan(recipe.scan)
    population = neuron_population(recipe.seed, recipe.n_neurons)
    withheld_rows = recipe.responses_withheld

    def chunked(values: np.ndarray) -> Any:
        return along_trials(values, chunk)

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
    )  # fmt: skip
    behavior, pupil_center = recipe.observed_behavior()
    data = {"images": images, "responses": responses, "behavior": chunked(behavior), "pupil_center": chunked(pupil_center)}

    lazy_statistics = LazyStatistics(recipe)
    statistics = {
        name: StatisticsTable(list(STIMULUS_SUBSETS), list(datamodel.STATISTICS), lazy_statistics_variable(lazy_statistics, name))
        for name in datamodel.DATA_VARIABLES
    }
    trial_idx = hashed_trial_idx(recipe.scan, recipe.seed, recipe.true_order) if recipe.competition else recipe.true_order
    constant = np.ones(n, dtype=np.int64)
    trial_meta = {
        "tiers": recipe.tiers,
        "frame_image_id": recipe.image_ids,
        "trial_idx": trial_idx,
        "frame_image_class": np.full(n, IMAGE_CLASS),
        "frame_trial_ts": timestamps(recipe.true_order, recipe.seed),
        "condition_hash": np.asarray([condition_hash(i) for i in recipe.image_ids.tolist()]),
        "animal_id": animal * constant,
        "session": session * constant,
        "scan_idx": scan_idx * constant,
    }
    neuron_meta = neuron_files(recipe.scan, population.unit_ids, population.layer, population.motor_coordinates)
    attrs = {"scan": recipe.scan, "release_name": release_name(recipe.scan, recipe.seed), datamodel.WITHHELD_ATTR: recipe.withheld}
    return assemble(
        data=data,
        trial_meta=trial_meta,
        neuron_meta=neuron_meta,
        statistics=statistics,
        responses_withheld=withheld_rows,
        attrs=attrs,
    )
