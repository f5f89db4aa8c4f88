"""The statistics of a synthetic scan, as the release computes them: over the train tier, on first access, in one pass.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np
from xarray.backends import BackendArray
from xarray.core import indexing

from neuroxr import datamodel
from neuroxr.synthetic.images import IMAGE_BATCH, generate_images
from neuroxr.synthetic.recipe import ScanRecipe
from neuroxr.synthetic.responses import response_batch

STIMULUS_SUBSETS = (datamodel.MAIN_SUBSET, "stimulus_Frame")

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
    out = {name: np.empty(n_columns, dtype=np.float32) for name in datamodel.STATISTICS}
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
    for start in range(0, len(positions), IMAGE_BATCH):
        batch = slice(start, start + IMAGE_BATCH)
        images = generate_images(image_ids[batch], image_shape)
        histogram += np.bincount(images.astype(np.uint8).ravel(), minlength=256)
        responses[batch] = response_batch(images, positions[batch], gains[batch], seed, n_neurons, image_shape)
    return histogram, responses

class ComputedOnce:
    """Statistics of every variable of a synthetic scan, computed once (by ``_compute``) when first asked for.

    Picklable: the lock is made anew, the result travels only once computed.
    """

    dtype = np.dtype(np.float32)

    def __init__(self, recipe: Any) -> None:
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

    def get(self, variable: str) -> np.ndarray:
        with self._lock:
            if self._result is None:
                self._result = self._compute()
        return self._result[variable]

    def _compute(self) -> dict[str, np.ndarray]:
        raise NotImplementedError


class LazyStatistics(ComputedOnce):
    """Computes all four statistics variables of a synthetic scan once, when first needed.

    One pass over the train trials, a block at a time (blocks run in parallel under dask);
    memory holds the train responses (needed for exact medians) and a few blocks.
    """

    _recipe: ScanRecipe

    def shape(self, variable: str) -> tuple[int, ...]:
        """(subset, statistic, ...): images statistics are scalars, the others one per element of a trial."""
        sizes = {"neuron": self._recipe.n_neurons, **{dim: len(labels) for dim, labels in datamodel.LABELS.items()}}
        trailing = () if variable == "images" else datamodel.DATA_DIMS[variable]
        return (len(STIMULUS_SUBSETS), len(datamodel.STATISTICS), *(sizes[dim] for dim in trailing))

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
                per_variable[name] = {stat: np.zeros(values.shape[1], np.float32) for stat in datamodel.STATISTICS}
            else:
                per_variable[name] = _column_statistics(values[train])
        result = {}
        for name, stats in per_variable.items():
            one_subset = np.stack([np.asarray(stats[stat], dtype=np.float32) for stat in datamodel.STATISTICS])
            result[name] = np.stack([one_subset] * len(STIMULUS_SUBSETS))
        return result

class _StatisticsArray(BackendArray):
    """One statistics variable as a lazy (not dask) array, computed on first access (by ``source.get``)."""

    def __init__(self, source: LazyStatistics, variable: str) -> None:
        self.source = source
        self.variable = variable
        self.shape = source.shape(variable)
        self.dtype = source.dtype

    def __getitem__(self, key: Any) -> np.ndarray:
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.BASIC, self._get)

    def _get(self, key: Any) -> np.ndarray:
        return self.source.get(self.variable)[key]

def lazy_statistics_variable(source: Any, variable: str) -> Any:
    """``variable``'s statistics from ``source`` (``shape(variable)``, ``get(variable)``, ``dtype``), lazily, cached."""
    return indexing.MemoryCachedArray(indexing.LazilyIndexedArray(_StatisticsArray(source, variable)))
