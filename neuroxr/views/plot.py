"""A one-page picture of a scan: example images, responses, neurons in cortex, tiers, oracle correlation.

A video scan gets its own page: a strip of frames of one video, a neuron's response over time to the
repeats of one clip (and their mean), the trials' lengths and the tiers.

Uses matplotlib's object API (no pyplot state), so it is safe in scripts, servers and tests.
Reads only what it draws: three images, a sample of trials for the response histogram, and the
repeated test trials for the oracle correlation; for a video scan one video and the oracle tier
(its videos, to find the repeats of each clip, and its responses).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from neuroxr import datamodel
from neuroxr.analysis.metrics import CLIP_ID, clip_ids, oracle_correlation
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
    known = datamodel.kind_of([*ds.variables, *ds.dims], ds.attrs).tiers
    order = [t for t in known if t in counts] + sorted(set(counts) - set(known))
    bars = axis.bar(order, [counts[t] for t in order], color="#55a868")
    axis.bar_label(bars, fontsize=8)
    axis.set_ylabel("trials")
    axis.set_title("trials per tier", fontsize=10)
    if len(order) > 4:
        axis.tick_params(axis="x", labelrotation=30, labelsize=7)


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


# ------------------------------------------------------------------------------------------------
# video scans

#: Frames shown in the strip of one video.
STRIP_FRAMES = 6


def _shown_trial(ds: xr.Dataset) -> int:
    """The trial whose video is shown: the first of the oracle tier (its clip is repeated), else the first."""
    oracle = np.flatnonzero(ds.tier.values == "oracle") if "tier" in ds.coords else np.array([], int)
    return int(oracle[0]) if len(oracle) else 0


def _frame_strip(ds: xr.Dataset, axes: list, trial: int) -> None:
    length = int(ds[datamodel.N_FRAMES].values[trial]) if datamodel.N_FRAMES in ds.coords else ds.sizes[datamodel.FRAME]
    frames = np.linspace(0, max(length - 1, 0), len(axes)).round().astype(int)
    video = ds.videos.isel(trial=trial, frame=frames).transpose("frame", ...).values
    for axis, frame, image in zip(axes, frames, video):
        axis.imshow(image, cmap="gray", vmin=0, vmax=255)
        axis.set_title(f"t = {ds.time.values[frame]:.1f} s", fontsize=9)
        axis.set_axis_off()
    axes[0].text(0, -0.35, f"trial {int(ds.trial.values[trial])}: {length} frames", transform=axes[0].transAxes, fontsize=8)


def _clip_response(ds: xr.Dataset, axis) -> None:
    """One neuron's response over time to every repeat of one clip of the oracle tier, and their mean."""
    oracle = ds.tier.values == "oracle" if "tier" in ds.coords else np.zeros(ds.sizes["trial"], bool)
    if not oracle.any() or ds[datamodel.WITHHELD_COORD].values[oracle].any():
        axis.text(0.5, 0.5, "no repeated clips with responses\n(withheld or absent)", ha="center", va="center", transform=axis.transAxes)
        axis.set_axis_off()
        return
    chosen = ds.isel(trial=np.flatnonzero(oracle))
    chosen = chosen.assign_coords({CLIP_ID: clip_ids(chosen)})
    clips, counts = np.unique(chosen[CLIP_ID].values, return_counts=True)
    clip = clips[np.argmax(counts)]
    repeats = chosen.responses.isel(trial=np.flatnonzero(chosen[CLIP_ID].values == clip)).load()
    neuron = int(np.argmax(oracle_correlation(chosen.responses, skip=0).values)) if counts.max() > 1 else 0
    traces = repeats.isel(neuron=neuron).values
    time = ds.time.values
    for trace in traces:
        axis.plot(time, trace, color="#4c72b0", lw=0.7, alpha=0.45)
    # the repeats of a clip have one length: their frames after it are all NaN, so the mean is drawn where they are known
    known = ~np.isnan(traces).any(axis=0)
    mean = np.full(len(time), np.nan)
    mean[known] = traces[:, known].mean(axis=0)
    axis.plot(time, mean, color="k", lw=1.6, label="mean over repeats")
    axis.set_xlabel("time from trial start (s)")
    axis.set_ylabel("response (deconvolved activity)")
    axis.set_title(f"neuron {int(ds.neuron.values[neuron])}: {len(traces)} repeats of one oracle clip", fontsize=10)
    axis.legend(fontsize=8, loc="upper right")


def _trial_lengths(ds: xr.Dataset, axis) -> None:
    lengths = ds[datamodel.N_FRAMES].values / float(ds.attrs.get(datamodel.FRAME_RATE_ATTR, 30.0))
    axis.hist(lengths, bins=30, color="#8172b2")
    axis.axvline(ds.sizes[datamodel.FRAME] / float(ds.attrs.get(datamodel.FRAME_RATE_ATTR, 30.0)), color="k", lw=1, ls="--")
    axis.set_xlabel("trial length (s); dashed: as stored, padded")
    axis.set_ylabel("trials")
    axis.set_title("trial lengths (first NaN frame of each video)", fontsize=10)


def _video_summary(ds: xr.Dataset) -> Figure:
    figure = _figure()
    strip, panels = figure.subfigures(2, 1, height_ratios=[1.0, 2.6])  # the strip's frames evenly spaced
    _frame_strip(ds, list(strip.subplots(1, STRIP_FRAMES)), _shown_trial(ds))
    grid = panels.add_gridspec(2, 3)
    _clip_response(ds, panels.add_subplot(grid[:, :2]))
    _trial_lengths(ds, panels.add_subplot(grid[0, 2]))
    _tiers(ds, panels.add_subplot(grid[1, 2]))
    rate = ds.attrs.get(datamodel.FRAME_RATE_ATTR, 30.0)
    figure.suptitle(f"video scan {ds.attrs.get('scan', '')}: {ds.sizes['trial']} trials, {ds.sizes['neuron']} neurons, {rate:g} Hz")
    return figure


def summary_figure(ds: xr.Dataset) -> Figure:
    """Draw the one-page summary of a scan (image or video); save it with ``.savefig("summary.png")``.

    >>> figure = summary_figure(neuroxr.make_scan(n_trials=60, n_neurons=20))
    >>> figure.savefig(tmp / "summary.png", dpi=50)
    >>> summary_figure(neuroxr.make_scan(kind="dynamic", n_trials=60, n_neurons=8)).savefig(tmp / "video.png", dpi=50)
    """
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"expected the Dataset of one scan, found {type(ds).__name__}; pick a scan of a DataTree first")
    if datamodel.FRAME in ds.dims and "videos" in ds.data_vars:
        return _video_summary(ds)
    figure = _figure()
    grid = figure.add_gridspec(2, 6)
    _images(ds, [figure.add_subplot(grid[0, i]) for i in range(3)])
    _responses(ds, figure.add_subplot(grid[0, 3:]))
    _neurons(ds, figure.add_subplot(grid[1, 0:2]))
    _tiers(ds, figure.add_subplot(grid[1, 2:4]))
    _oracle(ds, figure.add_subplot(grid[1, 4:6]))
    figure.suptitle(f"scan {ds.attrs.get('scan', '')}: {ds.sizes['trial']} trials, {ds.sizes['neuron']} neurons")
    return figure
