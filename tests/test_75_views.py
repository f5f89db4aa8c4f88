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
