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

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from neuroxr import datamodel
from neuroxr.dataset import StatisticsTable, assemble
from neuroxr.formats.release import to_folder
from neuroxr.synthetic.images import generate_images
from neuroxr.synthetic.recipe import ScanRecipe, condition_hash, hashed_trial_idx, parse_scan, timestamps
from neuroxr.synthetic.responses import generate_responses, neuron_population
from neuroxr.synthetic.statistics import STIMULUS_SUBSETS, LazyStatistics, lazy_statistics_variable

#: Presets: "small" for tests and examples, "release" for the size of a real scan.
PRESETS: dict[str, dict[str, Any]] = {
    "small": {"n_trials": 240, "n_neurons": 120, "image_shape": (1, 36, 64)},
    "release": {"n_trials": 7000, "n_neurons": 8000, "image_shape": (1, 144, 256)},
}

IMAGE_CLASS = "imagenet"

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

    The keyword arguments go to :func:`make_scan`.

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
    )  # fmt: skip
    behavior, pupil_center = recipe.behavior, recipe.pupil_center
    if recipe.behavior_withheld:
        behavior = np.full_like(behavior, np.nan)
        pupil_center = np.full_like(pupil_center, np.nan)
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
    n_neurons = recipe.n_neurons
    neuron_meta = {
        datamodel.NEURON_INDEX_FILE: population.unit_ids,
        "area": np.full(n_neurons, "V1"),
        "layer": population.layer,
        "animal_ids": np.full(n_neurons, animal, dtype=np.uint16),
        "sessions": np.full(n_neurons, session, dtype=np.uint8),
        "scan_idx": np.full(n_neurons, scan_idx, dtype=np.uint8),
        "cell_motor_coordinates": population.motor_coordinates,
    }
    attrs = {"scan": recipe.scan, "release_name": release_name(recipe.scan, recipe.seed), datamodel.WITHHELD_ATTR: recipe.withheld}
    return assemble(
        data=data,
        trial_meta=trial_meta,
        neuron_meta=neuron_meta,
        statistics=statistics,
        responses_withheld=withheld_rows,
        attrs=attrs,
    )
