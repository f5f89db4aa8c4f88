"""neuroxr.submission: the leaderboard's files, byte for byte as the official code writes them, checked first and read back.

The reference for the layout is a transcription of ``sensorium.utility.submission.generate_submission_file``
and ``generate_ground_truth_file`` (pandas ``DataFrame.to_csv(index=False)`` of float32 values turned
into Python lists); the reference for the scores is the official ``evaluate`` on those files
(``ast.literal_eval`` of the cells, rows and neurons sorted with ``np.argsort``, the metrics of
``test_71_metrics``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import fingerprint, write_tiny_scan
from test_71_metrics import official_metrics

import neuroxr
from neuroxr.analysis.standardization import response_precision
from neuroxr.submission import read_submission, write_ground_truth, write_submission


def official_submission_csv(scan: Path, predictions: np.ndarray, tier: str) -> str:
    """``generate_submission_file``: rows are the trials of the tier in file order; the model's float32 output."""
    tiers = np.load(scan / "meta/trials/tiers.npy")
    trial_idx, image_ids = np.load(scan / "meta/trials/trial_idx.npy"), np.load(scan / "meta/trials/frame_image_id.npy")
    neuron_ids = np.load(scan / "meta/neurons/unit_ids.npy").tolist()
    trial_indices, ids = [], []
    for i in range(len(tiers)):
        if tiers[i] != tier:
            continue
        trial_indices.append(trial_idx[i])
        ids.append(image_ids[i])
    test_predictions = predictions.astype(np.float32)
    df = pd.DataFrame(
        {"trial_indices": trial_indices, "image_ids": ids, "prediction": test_predictions.tolist(), "neuron_ids": [neuron_ids] * len(test_predictions)}
    )
    return df.to_csv(index=False)


def official_evaluate(submission: Path, ground_truth: Path) -> dict[str, float]:
    """The official ``evaluate``: parse the cells, order rows by trial_idx and neurons by id, then the metrics."""
    sub, gt = pd.read_csv(submission), pd.read_csv(ground_truth)

    def parsed(frame: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        values = np.array([ast.literal_eval(cell) for cell in frame[column]])
        neuron_ids = np.array(ast.literal_eval(frame["neuron_ids"][0]))
        trial_idx = frame["trial_indices"].to_numpy()
        rows, neurons = np.argsort(trial_idx), np.argsort(neuron_ids)
        return values[rows][:, neurons], trial_idx[rows], frame["image_ids"].to_numpy()[rows]

    predictions, sub_trials, _ = parsed(sub, "prediction")
    responses, gt_trials, image_ids = parsed(gt, "responses")
    assert np.equal(sub_trials, gt_trials).all()
    return official_metrics(predictions, responses, image_ids)[1]


@pytest.fixture(scope="module")
def competition(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, xr.Dataset]:
    """A competition scan whose responses are large (std ~15), so the two scales differ clearly."""
    responses = np.random.default_rng(5).gamma(0.5, 20.0, (30, 13)).astype(np.float32)
    scan = write_tiny_scan(tmp_path_factory.mktemp("competition"), responses=responses, competition=True)
    return scan, neuroxr.open_scan(scan)


@pytest.fixture(scope="module")
def pretraining(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, xr.Dataset]:
    """A pre-training scan whose test tier shows two images five times each."""
    rng = np.random.default_rng(6)
    tiers = rng.permutation(np.array(["train"] * 28 + ["validation"] * 2 + ["test"] * 10))
    image_ids = rng.permutation(np.arange(100, 140))
    image_ids[tiers == "test"] = [4242, 4243] * 5
    scan = write_tiny_scan(tmp_path_factory.mktemp("pretraining"), n_trials=40, tiers=tiers, image_ids=image_ids)
    return scan, neuroxr.open_scan(scan)


def model_output(ds: xr.Dataset, seed: int = 0) -> xr.DataArray:
    """Predictions of every trial on the standardised scale, as a model would give them."""
    rng = np.random.default_rng(seed)
    truth = neuroxr.standardize(ds).responses.fillna(1.0)
    return (truth + rng.normal(0, 0.5, truth.shape)).astype(np.float32).rename("predictions")


def test_the_files_are_the_official_files_byte_for_byte(competition, tmp_path: Path) -> None:
    scan, ds = competition
    predictions = model_output(ds)
    written = write_submission(predictions, ds, tmp_path)
    assert [path.name for path in written] == ["submission_file_live_test.csv", "submission_file_final_test.csv"]
    tiers = np.load(scan / "meta/trials/tiers.npy")
    for path, tier in zip(written, ["test", "final_test"]):
        expected = official_submission_csv(scan, predictions.values[tiers == tier], tier)
        assert path.read_text() == expected
    header, first = written[0].read_text().splitlines()[:2]
    assert header == "trial_indices,image_ids,prediction,neuron_ids"
    row = next(iter(pd.read_csv(written[0]).itertuples()))
    assert len(row.trial_indices) == 32 and first.count('"') == 4  # hashed trial_idx; the list cells quoted


def test_neurons_in_any_order_and_other_tiers_are_written_as_the_scan_orders_them(competition, tmp_path: Path) -> None:
    _, ds = competition
    predictions = model_output(ds)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    write_submission(predictions, ds, tmp_path / "a")
    shuffled = predictions.isel(neuron=np.random.default_rng(1).permutation(ds.sizes["neuron"]), trial=slice(None, None, -1))
    write_submission(shuffled, ds, tmp_path / "b")
    assert fingerprint(tmp_path / "a") == fingerprint(tmp_path / "b")


def test_round_trip_scores_equal_the_official_evaluate_and_neuroxr_metrics(pretraining, tmp_path: Path) -> None:
    scan, ds = pretraining
    predictions = model_output(ds, seed=3)
    submission = write_submission(predictions, ds, tmp_path, tiers=["test"])[0]
    truth = write_ground_truth(ds, tmp_path)[0]
    assert truth.name == "ground_truth_file_test.csv"
    sub, gt = read_submission(submission), read_submission(truth)
    assert sub.dims == gt.dims == ("trial", "neuron") and sub.name == "predictions" and gt.name == "responses"
    ours = neuroxr.metrics.leaderboard(sub, gt)
    official = official_evaluate(submission, truth)
    direct = neuroxr.metrics.leaderboard(predictions.astype(np.float32), neuroxr.standardize(ds).responses.astype(np.float32), tier="test")
    for name in official:
        assert ours[name] == pytest.approx(official[name], rel=1e-9, abs=1e-12)
        assert ours[name] == pytest.approx(direct[name], rel=1e-6, abs=1e-9)
    tiers = np.load(scan / "meta/trials/tiers.npy")
    np.testing.assert_array_equal(np.sort(gt.trial.values), np.sort(np.load(scan / "meta/trials/trial_idx.npy")[tiers == "test"]))
    np.testing.assert_array_equal(gt.neuron.values, np.sort(np.load(scan / "meta/neurons/unit_ids.npy")))


def test_read_back_values_are_the_float32_predictions(competition, tmp_path: Path) -> None:
    _, ds = competition
    predictions = model_output(ds)
    path = write_submission(predictions, ds, tmp_path, tiers=["final_test"])[0]
    back = read_submission(path)
    final = predictions.sel(trial=ds.tier == "final_test")
    by_idx = final.assign_coords(trial=ds.trial_idx.sel(trial=final.trial).values).sortby("trial")
    np.testing.assert_array_equal(back.values, by_idx.values)
    np.testing.assert_array_equal(back.image_id.values, ds.image_id.sel(trial=final.trial).values[np.argsort(ds.trial_idx.sel(trial=final.trial).values)])


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p, ds: p.drop_sel(trial=p.trial[ds.tier == "test"][:1]), "no predictions for 1 of the"),
        (lambda p, ds: p.isel(neuron=slice(1, None)), "1 missing"),
        (lambda p, ds: xr.concat([p, p.isel(neuron=[0]).assign_coords(neuron=[99999])], "neuron"), "1 unknown"),
        (lambda p, ds: p.where(p.trial != p.trial[np.argmax(ds.tier.values == "test")]), "NaN or infinite"),
        (lambda p, ds: p / response_precision(ds), "stored scale"),
        (lambda p, ds: p.rename(neuron="unit"), "dims"),
        (lambda p, ds: p.drop_vars("trial"), "'trial' coordinate"),
    ],
    ids=["a trial missing", "a neuron missing", "an unknown neuron", "a NaN", "the stored scale", "other dims", "unlabelled trials"],
)
def test_predictions_are_checked_before_anything_is_written(competition, tmp_path: Path, damage, message: str) -> None:
    _, ds = competition
    with pytest.raises(neuroxr.DatasetError, match=message):
        write_submission(damage(model_output(ds), ds), ds, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_scale_check_can_be_turned_off_and_files_are_not_overwritten(competition, tmp_path: Path) -> None:
    _, ds = competition
    raw = model_output(ds) / response_precision(ds)
    write_submission(raw, ds, tmp_path, check_scale=False)
    with pytest.raises(neuroxr.TargetExistsError):
        write_submission(model_output(ds), ds, tmp_path)
    assert len(write_submission(model_output(ds), ds, tmp_path, overwrite=True)) == 2


def test_withheld_tiers_have_no_ground_truth(competition, tmp_path: Path) -> None:
    _, ds = competition
    with pytest.raises(neuroxr.DatasetError, match="withheld"):
        write_ground_truth(ds, tmp_path)
    with pytest.raises(ValueError, match="2022 leaderboard tiers"):
        write_submission(model_output(ds), ds, tmp_path, tiers=["validation"])
