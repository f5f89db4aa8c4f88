"""Draw the figures of the documentation from synthetic scans: ``python docs/make_figures.py``.

Writes ``docs/images/video-summary.png`` (what ``neuroxr plot`` draws for a 2023 video scan) and
``docs/images/clip-responses.png`` (neurons' mean response over time to the repeats of oracle clips,
the example of ``docs/dynamic.md``). The scans are deterministic, so the figures are too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import neuroxr
from neuroxr import metrics

IMAGES = Path(__file__).resolve().parent / "images"


def video_scan():
    """The synthetic video scan both figures show (the size of the docs' examples, a little larger)."""
    return neuroxr.make_scan(kind="dynamic", n_trials=200, n_neurons=60, n_frames=150, seed=2023)


def video_summary(ds) -> Path:
    target = IMAGES / "video-summary.png"
    neuroxr.summary_figure(ds).savefig(target, dpi=80)
    return target


def clip_responses(ds) -> Path:
    from matplotlib.figure import Figure

    oracle = metrics.select_tier(ds, "oracle")
    oracle = oracle.assign_coords(clip_id=metrics.clip_ids(oracle))
    responses = oracle.responses.load()
    best = np.argsort(metrics.oracle_correlation(responses, skip=0).values)[::-1][:3]
    clips = np.unique(oracle.clip_id.values)[:3]
    figure = Figure(figsize=(12, 6.5), layout="constrained")
    axes = figure.subplots(len(best), len(clips), sharex=True, squeeze=False)
    for row, neuron in enumerate(best):
        for column, clip in enumerate(clips):
            axis = axes[row, column]
            repeats = responses.isel(neuron=neuron).sel(trial=oracle.clip_id == clip)
            for trace in repeats.values:
                axis.plot(ds.time.values, trace, color="#4c72b0", lw=0.7, alpha=0.4)
            axis.plot(ds.time.values, repeats.mean("trial").values, color="k", lw=1.6)
            if row == 0:
                axis.set_title(f"clip {clip[:6]} ({len(repeats)} repeats)", fontsize=10)
            if column == 0:
                axis.set_ylabel(f"neuron {int(responses.neuron.values[neuron])}")
            if row == len(best) - 1:
                axis.set_xlabel("time from trial start (s)")
    figure.suptitle("responses to the repeats of three oracle clips (thin) and their mean (black), three neurons")
    target = IMAGES / "clip-responses.png"
    figure.savefig(target, dpi=80)
    return target


def main() -> None:
    IMAGES.mkdir(exist_ok=True)
    ds = video_scan().load()
    for path in (video_summary(ds), clip_responses(ds)):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
