"""A one-page picture of a scan: example images, responses, neurons in cortex, tiers, oracle correlation.

Uses matplotlib's object API (no pyplot state), so it is safe in scripts, servers and tests.
Reads only what it draws: three images, a sample of trials for the response histogram, and the
repeated test trials for the oracle correlation.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from neuroxr import datamodel
from neuroxr.analysis.metrics import oracle_correlation
from neuroxr.errors import require

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Trials sampled for the response histogram.
HISTOGRAM_TRIALS = 500


def _figure() -> Figure:
    figure = require("matplotlib.figure", "plot", "plotting")
    return figure.Figure(figsize=(13, 7.5), layout="constrained")


def _images(ds: xr.Dataset, axes: list) -> None:
    shown = ds.images.isel(trial=slice(0, len(axes))).values
    for axis, image, trial in zip(axes, shown, ds.trial.values[: len(axes)]):
        axis.imshow(image.reshape(image.shape[-2:]) if image.ndim == 3 else image, cmap="gray", vmin=0, vmax=255)
        label = f"image {ds.image_id.values[trial]}" if "image_id" in ds.coords else f"trial {trial}"
        axis.set_title(label, fontsize=9)
        axis.set_axis_off()


def _responses(ds: xr.Dataset, axis) -> None:
    sample = ds.responses.isel(trial=slice(0, HISTOGRAM_TRIALS)).values.ravel()
    sample = sample[np.isfinite(sample)]
    if not sample.size:
        axis.text(0.5, 0.5, "responses withheld", ha="center", va="center", transform=axis.transAxes)
        return
    positive = sample[sample > 0]
    axis.hist(np.log10(positive), bins=80, color="#4c72b0")
    axis.set_xlabel("log10 response (deconvolved activity)")
    axis.set_ylabel("count")
    axis.set_title(f"responses, {min(HISTOGRAM_TRIALS, ds.sizes['trial'])} trials", fontsize=10)


def _neurons(ds: xr.Dataset, axis) -> None:
    if "cell_motor_coordinates" not in ds.coords:
        axis.text(0.5, 0.5, "no neuron coordinates", ha="center", va="center", transform=axis.transAxes)
        return
    xyz = ds.cell_motor_coordinates.values
    layers = ds.layer.values.astype(str) if "layer" in ds.coords else np.array(["?"] * len(xyz))
    for layer in sorted(set(layers)):
        chosen = layers == layer
        axis.scatter(xyz[chosen, 0], xyz[chosen, 2], s=3, alpha=0.6, label=f"{layer} ({chosen.sum()})")
    axis.invert_yaxis()
    axis.set_xlabel("x (µm)")
    axis.set_ylabel("depth z (µm)")
    axis.set_title("neurons in cortex, by layer", fontsize=10)
    axis.legend(fontsize=8, markerscale=3, loc="best")


def _tiers(ds: xr.Dataset, axis) -> None:
    counts = Counter(ds.tier.values.astype(str))
    order = [t for t in ("train", "validation", "test", "final_test") if t in counts] + sorted(
        set(counts) - {"train", "validation", "test", "final_test"}
    )
    bars = axis.bar(order, [counts[t] for t in order], color="#55a868")
    axis.bar_label(bars, fontsize=8)
    axis.set_ylabel("trials")
    axis.set_title("trials per tier", fontsize=10)


def _oracle(ds: xr.Dataset, axis) -> None:
    repeated = [t for t in ("test", "validation") if t in set(ds.tier.values.astype(str))]
    for tier in repeated:
        trials = ds.tier.values == tier
        responses = ds.responses.isel(trial=np.flatnonzero(trials))
        ids, counts = np.unique(responses.image_id.values, return_counts=True)
        if (counts > 1).sum() < 2 or ds[datamodel.WITHHELD_COORD].values[trials].any():
            continue
        oracle = oracle_correlation(responses).values
        axis.hist(oracle[np.isfinite(oracle)], bins=40, color="#c44e52")
        axis.axvline(np.nanmean(oracle), color="k", lw=1)
        axis.set_xlabel(f"oracle correlation ({tier} tier, mean {np.nanmean(oracle):.2f})")
        axis.set_ylabel("neurons")
        axis.set_title("oracle correlation per neuron", fontsize=10)
        return
    axis.text(0.5, 0.5, "no repeated images with responses\n(withheld or absent)", ha="center", va="center", transform=axis.transAxes)
    axis.set_axis_off()


def summary_figure(ds: xr.Dataset) -> Figure:
    """Draw the one-page summary of a scan; save it with ``.savefig("summary.png")``.

    >>> figure = summary_figure(neuroxr.make_scan(n_trials=60, n_neurons=20))
    >>> figure.savefig(tmp / "summary.png", dpi=50)
    """
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"expected the Dataset of one scan, found {type(ds).__name__}; pick a scan of a DataTree first")
    figure = _figure()
    grid = figure.add_gridspec(2, 6)
    _images(ds, [figure.add_subplot(grid[0, i]) for i in range(3)])
    _responses(ds, figure.add_subplot(grid[0, 3:]))
    _neurons(ds, figure.add_subplot(grid[1, 0:2]))
    _tiers(ds, figure.add_subplot(grid[1, 2:4]))
    _oracle(ds, figure.add_subplot(grid[1, 4:6]))
    figure.suptitle(f"scan {ds.attrs.get('scan', '')}: {ds.sizes['trial']} trials, {ds.sizes['neuron']} neurons")
    return figure
