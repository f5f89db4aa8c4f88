"""neuroxr.views: the plain-text description and the one-page figure, from what the Dataset says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import neuroxr
from neuroxr.views.describe import describe


def lines_of(text: str) -> dict[str, str]:
    """``{key: value}`` of the indented table under the first line (columns apart by two spaces or more)."""
    pairs = (line.strip().split("  ", 1) for line in text.splitlines()[1:])
    return {key: value.strip() for key, value in pairs}


def test_describe_counts_what_the_dataset_holds(synthetic, forbidden_scheduler) -> None:
    ds = synthetic(n_trials=60, n_neurons=20, image_shape=(1, 6, 8))
    with forbidden_scheduler():
        text = describe(ds)  # labels only: nothing computed
    assert text.splitlines()[0] == f"scan 30001-2-3  ({ds.attrs['release_name']})"
    table = lines_of(text)
    tiers, counts = np.unique(ds.tier.values, return_counts=True)
    ids, repeats = np.unique(ds.image_id.values, return_counts=True)
    assert table == {
        "trials": "60",
        "neurons": "20",
        "images": "1 x 6 x 8 float32",
        "responses": "20 float32",
        "behavior": "3 float32",
        "pupil_center": "2 float32",
        "tiers": ", ".join(f"{t} {c}" for t, c in sorted(zip(tiers, counts), key=lambda pair: (-pair[1], pair[0]))),
        "images shown": f"{len(ids)} distinct, {int((repeats > 1).sum())} of them repeated",
        "neurons per area": "V1 20",
        "neurons per layer": ", ".join(f"{layer} {int((ds.layer == layer).sum())}" for layer in ("L2/3", "L4")),
        "withheld": "nothing",
    }


def test_describe_says_what_is_withheld_and_how_it_reads(synthetic) -> None:
    ds = synthetic(n_trials=60, n_neurons=20, image_shape=(1, 6, 8), competition=True, behavior_withheld=True)
    n = int(ds.responses_withheld.sum())
    assert lines_of(describe(ds))["withheld"] == (
        f"responses of {n} trials (final_test, test), read as NaN; all of behavior, pupil_center, read as NaN"
    )
    raw = ds.assign_attrs(withheld="")  # as opened with mask_withheld=False
    assert lines_of(describe(raw))["withheld"] == f"responses of {n} trials (final_test, test), read as the stored zeros"


def test_describe_takes_any_part_of_the_data_model() -> None:
    bare = xr.Dataset({"responses": (("trial", "neuron"), np.zeros((3, 2), np.float32))})
    assert describe(bare).splitlines() == [
        "scan ?  ()",
        "  trials     3",
        "  neurons    2",
        "  responses  2 float32",
        "  withheld   nothing",
    ]


def test_summary_figure_draws_every_panel(synthetic, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    ds = synthetic(n_trials=60, n_neurons=20, image_shape=(1, 6, 8))
    figure = neuroxr.summary_figure(ds)
    titles = [axis.get_title() for axis in figure.axes]
    assert len(figure.axes) == 7
    assert titles[:3] == [f"image {image_id}" for image_id in ds.image_id.values[:3]]
    assert titles[3:] == ["responses, 60 trials", "neurons in cortex, by layer", "trials per tier", "oracle correlation per neuron"]
    assert figure.get_suptitle() == "scan 30001-2-3: 60 trials, 20 neurons"
    figure.savefig(tmp_path / "summary.png", dpi=40)
    assert (tmp_path / "summary.png").read_bytes()[:4] == b"\x89PNG"


def test_summary_figure_of_a_competition_scan_and_of_a_tree(synthetic) -> None:
    pytest.importorskip("matplotlib")
    ds = synthetic(n_trials=60, n_neurons=20, image_shape=(1, 6, 8), competition=True, behavior_withheld=True)
    withheld_everywhere = ds.assign(responses=ds.responses.where(False))
    figure = neuroxr.summary_figure(withheld_everywhere)
    texts = [text.get_text() for axis in figure.axes for text in axis.texts]
    assert "responses withheld" in texts and "no repeated images with responses\n(withheld or absent)" in texts
    with pytest.raises(TypeError, match="expected the Dataset of one scan, found DataTree"):
        neuroxr.summary_figure(xr.DataTree.from_dict({"/a": ds}))


def test_describe_a_video_scan(synthetic, forbidden_scheduler) -> None:
    ds = synthetic(kind="dynamic", n_trials=60, n_neurons=12, video_shape=(6, 8), n_frames=40, competition=True)
    with forbidden_scheduler():
        text = describe(ds)
    table = lines_of(text)
    lengths = ds.n_frames.values
    assert table["videos"] == "6 x 8 x 40 float32" and table["responses"] == "12 x 40 float32"
    assert table["behavior"] == "2 x 40 float64" and table["pupil_center"] == "2 x 40 float32"
    assert table["frames"] == "40 per trial as stored (padded), 30 Hz (1.3 s)"
    assert table["trial lengths"] == (
        f"{lengths.min()}-{lengths.max()} frames, median {float(np.median(lengths)):g}; {int((lengths < 40).sum())} trials NaN-padded"
    )
    assert table["tiers"].startswith("train ") and "oracle" in table["tiers"] and "none" in table["tiers"]
    n = int(ds.responses_withheld.sum())
    assert table["withheld"] == f"responses of {n} trials (final_test_bonus, final_test_main, live_test_bonus, live_test_main), read as NaN"
    assert "images shown" not in table


def test_summary_figure_of_a_video_scan(synthetic, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    ds = synthetic(kind="dynamic", n_trials=60, n_neurons=12, video_shape=(6, 8), n_frames=40)
    figure = neuroxr.summary_figure(ds)
    titles = [axis.get_title() for axis in figure.axes]
    assert len(figure.axes) == 9
    oracle = int(np.flatnonzero(ds.tier.values == "oracle")[0])
    frames = np.linspace(0, ds.n_frames.values[oracle] - 1, 6).round().astype(int)
    assert titles[:6] == [f"t = {ds.time.values[f]:.1f} s" for f in frames]
    shown = figure.axes[0].images[0].get_array()
    np.testing.assert_array_equal(shown, ds.videos.values[oracle, :, :, 0])  # the strip shows the first oracle trial
    assert titles[6].startswith("neuron ") and titles[6].endswith("repeats of one oracle clip")
    assert titles[7:] == ["trial lengths (first NaN frame of each video)", "trials per tier"]
    assert figure.get_suptitle() == "video scan 30001-2-3: 60 trials, 12 neurons, 30 Hz"
    withheld = neuroxr.summary_figure(ds.assign(responses_withheld=ds.responses_withheld | True))
    assert "no repeated clips with responses\n(withheld or absent)" in [t.get_text() for axis in withheld.axes for t in axis.texts]
    figure.savefig(tmp_path / "video.png", dpi=40)
    assert (tmp_path / "video.png").read_bytes()[:4] == b"\x89PNG"
