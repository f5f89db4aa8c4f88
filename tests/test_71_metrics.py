"""neuroxr.analysis.metrics (neuroxr.metrics) against an independent numpy transcription of the official Sensorium 2022 metrics."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from conftest import write_tiny_scan
from hypothesis import given, settings
from hypothesis import strategies as st

from neuroxr import datamodel as model
from neuroxr import metrics, open_scan
from neuroxr.analysis.standardization import standardize
from neuroxr.synthetic import make_scan

# --------------------------------------------------------------------------------------------------
# The official definitions, transcribed (neuralpredictors.measures.np_functions, sensorium.utility.metrics)


def official_corr(y1, y2, axis=0, eps=1e-8):
    y1 = (y1 - y1.mean(axis=axis, keepdims=True)) / (y1.std(axis=axis, keepdims=True, ddof=0) + eps)
    y2 = (y2 - y2.mean(axis=axis, keepdims=True)) / (y2.std(axis=axis, keepdims=True, ddof=0) + eps)
    return (y1 * y2).mean(axis=axis)


def official_split(values, image_ids):
    return [values[image_ids == image_id] for image_id in np.unique(image_ids)]


def official_oracle(repeated_outputs):
    oracles = []
    for outputs in repeated_outputs:
        num_repeats = outputs.shape[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            oracle = (outputs.sum(axis=0, keepdims=True) - outputs) / (num_repeats - 1)
        oracle[np.isnan(oracle)] = 0
        oracles.append(oracle)
    return official_corr(np.vstack(repeated_outputs), np.vstack(oracles), axis=0)


def official_fev(targets, predictions):
    img_var, pred_var = [], []
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        for target, prediction in zip(targets, predictions):
            pred_var.append((target - prediction) ** 2)
            img_var.append(np.var(target, axis=0, ddof=1))
        pred_var = np.vstack(pred_var)
        img_var = np.vstack(img_var)
        total_var = np.var(np.vstack(targets), axis=0, ddof=1)
        noise_var = np.mean(img_var, axis=0)
        fev = (total_var - noise_var) / total_var
        pred_var = np.mean(pred_var, axis=0)
        fev_e = 1 - (pred_var - noise_var) / (total_var - noise_var)
    return fev, fev_e


def official_metrics(predictions, responses, image_ids, fev_threshold=0.15):
    """Per-neuron values and leaderboard means, as ``sensorium.utility.metrics.Metrics`` computes them."""
    single = official_corr(predictions, responses)
    mean_responses = np.vstack([r.mean(axis=0, keepdims=True) for r in official_split(responses, image_ids)])
    mean_predictions = np.vstack([p.mean(axis=0, keepdims=True) for p in official_split(predictions, image_ids)])
    average = official_corr(mean_responses, mean_predictions)
    fev, feve = official_fev(official_split(responses, image_ids), official_split(predictions, image_ids))
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        kept = feve[fev >= fev_threshold]
        leaderboard = {"single_trial_correlation": single.mean(), "correlation_to_average": average.mean(), "feve": kept.mean()}
    oracle = official_oracle(official_split(responses, image_ids))
    return {"single": single, "average": average, "fev": fev, "feve": feve, "oracle": oracle}, leaderboard


# --------------------------------------------------------------------------------------------------
# Data


@pytest.fixture(scope="module")
def responses_array(tmp_path_factory: pytest.TempPathFactory):
    """``responses_array(values, image_ids, chunk=None, tiers=None)``: the ``responses`` of a scan holding these values.

    The scan is written file by file with ``np.save`` (all trials in the test tier unless ``tiers`` say
    otherwise) and opened with ``open_scan``: dask blocks of ``chunk`` trials, or loaded into numpy
    when ``chunk`` is None. Trial and neuron coordinates, ``image_id`` and ``tier`` come with it.
    """

    def scan_responses(values: np.ndarray, image_ids: np.ndarray, *, chunk: int | None = None, tiers=None) -> xr.DataArray:
        n_trials = len(values)
        tiers = np.array(["test"] * n_trials) if tiers is None else np.asarray(tiers)
        folder = write_tiny_scan(tmp_path_factory.mktemp("metrics"), responses=values, image_ids=image_ids, tiers=tiers)
        responses = open_scan(folder, chunks=chunk or n_trials).responses
        return responses.load() if chunk is None else responses

    return scan_responses


def repeated_trials(repeats, n_neurons: int, seed: int = 0, noise: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Responses to images shown ``repeats[i]`` times in random order, and a prediction.

    Returns (responses, predictions, image_ids).
    """
    rng = np.random.default_rng(seed)
    ids = rng.choice(np.arange(1000, 9000), len(repeats), replace=False)
    image_ids = rng.permutation(np.repeat(ids, repeats))
    signal = dict(zip(ids, rng.gamma(1.0, 1.0, (len(ids), n_neurons))))
    truth = np.stack([signal[i] for i in image_ids])
    responses = truth + noise * rng.standard_normal(truth.shape) * rng.uniform(0.2, 3, n_neurons)
    predictions = truth + 0.7 * rng.standard_normal(truth.shape)
    return responses.astype(np.float32), predictions.astype(np.float32), image_ids


def _ours(predictions, responses: xr.DataArray, fev_threshold=0.15) -> dict[str, np.ndarray]:
    scores = metrics.feve(predictions, responses, fev_threshold=fev_threshold)
    results = xr.Dataset(
        {
            "single": metrics.single_trial_correlation(predictions, responses),
            "average": metrics.correlation_to_average(predictions, responses),
            "fev": scores.fev,
            "feve": scores.feve,
            "oracle": metrics.oracle_correlation(responses),
        }
    ).compute()  # one pass
    return {name: results[name].values for name in results.data_vars}


# --------------------------------------------------------------------------------------------------
# Equality with the official numbers


@pytest.mark.parametrize("chunk", [None, 16])
def test_equals_the_official_metrics(responses_array, chunk):
    repeats = [10, 9, 10, 8, 10, 1, 10, 2, 10, 10]
    responses, predictions, image_ids = repeated_trials(repeats, n_neurons=17, seed=1)
    gt = responses_array(responses, image_ids, chunk=chunk)
    ours = _ours(predictions, gt)
    with np.errstate(all="ignore"):
        expected, leaderboard = official_metrics(predictions.astype(np.float64), responses.astype(np.float64), image_ids)
    for name in ("single", "average", "oracle"):
        np.testing.assert_allclose(ours[name], expected[name], rtol=0, atol=1e-6)
    # an image shown once makes the noise variance (hence FEV, FEVE) NaN, as in the official code
    assert np.isnan(ours["fev"]).all() and np.isnan(expected["fev"]).all()
    assert np.isnan(metrics.summary(predictions, gt)["feve"])


@pytest.mark.parametrize("chunk", [None, 7])
def test_feve_and_summary_equal_the_official_leaderboard(responses_array, chunk):
    responses, predictions, image_ids = repeated_trials([10] * 12, n_neurons=40, seed=2, noise=1.5)
    gt = responses_array(responses, image_ids, chunk=chunk)
    ours = _ours(predictions, gt)
    expected, leaderboard = official_metrics(predictions.astype(np.float64), responses.astype(np.float64), image_ids)
    below = expected["fev"] < 0.15
    assert below.any() and (~below).any()  # the threshold matters here
    np.testing.assert_allclose(ours["fev"], expected["fev"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours["feve"][~below], expected["feve"][~below], rtol=0, atol=1e-6)
    assert np.isnan(ours["feve"][below]).all()
    summary = metrics.summary(predictions, gt)
    assert set(summary) == set(leaderboard)
    for name, value in leaderboard.items():
        assert summary[name] == pytest.approx(value, abs=1e-6)
    assert summary["feve"] == pytest.approx(float(np.nanmean(ours["feve"])), abs=1e-12)


@settings(max_examples=12, deadline=None)
@given(
    repeats=st.lists(st.integers(1, 6), min_size=1, max_size=8),
    n_neurons=st.integers(1, 5),
    chunk=st.one_of(st.none(), st.integers(3, 12)),
    seed=st.integers(0, 2**16),
    threshold=st.sampled_from([0.15, 0.0, -1.0]),
)
def test_equals_the_official_metrics_on_any_grouping_and_chunking(responses_array, repeats, n_neurons, chunk, seed, threshold):
    rng = np.random.default_rng(seed)
    n_trials = sum(repeats)
    image_ids = rng.permutation(np.repeat(np.arange(len(repeats)) * 3 + 11, repeats))
    # multiples of 1/8: constant neurons stay exactly constant whatever the summation order
    responses = rng.integers(-40, 40, (n_trials, n_neurons)) / 8
    responses[:, 0] = 2.5 if n_neurons > 1 else responses[:, 0]
    predictions = rng.integers(-40, 40, (n_trials, n_neurons)) / 8
    gt = responses_array(responses, image_ids, chunk=chunk)
    ours = _ours(predictions, gt, fev_threshold=threshold)
    with np.errstate(all="ignore"):
        expected, _ = official_metrics(predictions, responses, image_ids, fev_threshold=threshold)
    for name in ("single", "average", "oracle", "fev"):
        np.testing.assert_allclose(ours[name], expected[name], rtol=0, atol=1e-6, err_msg=name)
    kept = expected["fev"] >= threshold
    finite = kept & np.isfinite(expected["feve"])
    np.testing.assert_allclose(ours["feve"][finite], expected["feve"][finite], rtol=0, atol=1e-6)
    assert np.isnan(ours["feve"][~kept]).all()


# --------------------------------------------------------------------------------------------------
# Properties


@settings(max_examples=8, deadline=None)
@given(
    repeats=st.lists(st.integers(2, 5), min_size=3, max_size=6),
    seed=st.integers(0, 2**16),
    scale=st.floats(0.1, 100),
    shift=st.floats(-100, 100),
)
def test_perfect_predictions_score_one_and_scores_ignore_affine_maps_and_trial_order(responses_array, repeats, seed, scale, shift):
    chunk = None  # numpy; the dask paths are checked against the official numbers above
    responses, predictions, image_ids = repeated_trials(repeats, n_neurons=4, seed=seed)
    responses, predictions = responses.astype(np.float64), predictions.astype(np.float64)
    gt = responses_array(responses, image_ids, chunk=chunk)
    # corr(x, x) = var / (std + 1e-8)**2: one, but for the epsilon (visible when the std is small)
    ids, where = np.unique(image_ids, return_inverse=True)
    averaged = np.stack([responses[where == k].mean(axis=0) for k in range(len(ids))])
    for correlation, values in ((metrics.single_trial_correlation, responses), (metrics.correlation_to_average, averaged)):
        std = values.std(axis=0)
        assert correlation(responses, gt).values == pytest.approx((std / (std + 1e-8)) ** 2, abs=1e-9)
    # with no error at all, FEVE = 1 - (0 - noise) / (total - noise) = 1 / FEV
    perfect = metrics.feve(responses, gt, fev_threshold=-np.inf)
    assert perfect.feve.values == pytest.approx(1 / perfect.fev.values, rel=1e-9)
    # correlations ignore a positive affine map of the predictions (up to the 1e-8 added to the std)
    single = metrics.single_trial_correlation(predictions, gt).values
    average = metrics.correlation_to_average(predictions, gt).values
    assert metrics.single_trial_correlation(predictions * scale + shift, gt).values == pytest.approx(single, abs=1e-5)
    assert metrics.correlation_to_average(predictions * scale + shift, gt).values == pytest.approx(average, abs=1e-5)
    assert metrics.single_trial_correlation(-predictions, gt).values == pytest.approx(-single, abs=1e-9)
    # the oracle ignores a positive affine map of the responses
    oracle = metrics.oracle_correlation(gt).values
    assert metrics.oracle_correlation(gt * scale + shift).values == pytest.approx(oracle, abs=1e-5)
    # every metric ignores the order of the trials
    order = np.random.default_rng(seed + 1).permutation(len(image_ids))
    shuffled = responses_array(responses[order], image_ids[order], chunk=chunk)
    fev = metrics.feve(predictions, gt).fev.values
    assert metrics.single_trial_correlation(predictions[order], shuffled).values == pytest.approx(single, abs=1e-9)
    assert metrics.correlation_to_average(predictions[order], shuffled).values == pytest.approx(average, abs=1e-9)
    assert metrics.oracle_correlation(shuffled).values == pytest.approx(oracle, abs=1e-9)
    assert metrics.feve(predictions[order], shuffled).fev.values == pytest.approx(fev, abs=1e-9, nan_ok=True)


def test_oracle_is_one_for_noiseless_repeats_and_zero_for_images_shown_once(responses_array):
    responses, _, image_ids = repeated_trials([5, 5, 5, 5], n_neurons=3, noise=0.0)
    assert metrics.oracle_correlation(responses_array(responses, image_ids)).values == pytest.approx(np.ones(3), abs=1e-6)
    single, _, ids = repeated_trials([1] * 6, n_neurons=3)
    assert metrics.oracle_correlation(responses_array(single, ids, chunk=2)).values == pytest.approx(np.zeros(3), abs=1e-12)


# --------------------------------------------------------------------------------------------------
# xarray and dask behaviour


def test_lazy_in_lazy_out_and_neuron_coordinates_kept(responses_array, forbidden_scheduler):
    responses, predictions, image_ids = repeated_trials([4, 3, 5, 2], n_neurons=6)
    gt = responses_array(responses, image_ids, chunk=3)
    lazy_predictions = gt.copy(data=da.from_array(predictions, chunks=(5, 6)))
    with forbidden_scheduler():
        results = [
            metrics.single_trial_correlation(lazy_predictions, gt),
            metrics.correlation_to_average(lazy_predictions, gt),
            metrics.oracle_correlation(gt),
            metrics.feve(lazy_predictions, gt).feve,
            metrics.feve(lazy_predictions, gt).fev,
        ]
    for result in results:
        assert isinstance(result.data, da.Array)
        assert result.dims == ("neuron",)
        np.testing.assert_array_equal(result.neuron.values, gt.neuron.values)
        np.testing.assert_array_equal(result.area.values, gt.area.values)
        assert isinstance(result["area"].data, np.ndarray)  # labels stay in memory
        assert "image_id" not in result.coords and "tier" not in result.coords
        assert result.name and result.attrs["long_name"]
    numpy_result = metrics.oracle_correlation(gt.compute())
    assert isinstance(numpy_result.data, np.ndarray)
    np.testing.assert_allclose(results[2].values, numpy_result.values, atol=1e-12)


def test_extra_dimensions_are_kept(responses_array):
    responses, predictions, image_ids = repeated_trials([3, 3, 3], n_neurons=4)
    gt = responses_array(responses, image_ids, chunk=4)
    single = metrics.oracle_correlation(gt.isel(neuron=1))
    assert single.dims == () and float(single.values) == pytest.approx(metrics.oracle_correlation(gt).values[1])


def test_predictions_are_aligned_by_trial_and_neuron_labels(responses_array):
    responses, predictions, image_ids = repeated_trials([4, 4, 4], n_neurons=5)
    gt = responses_array(responses, image_ids, chunk=5)
    expected = metrics.correlation_to_average(predictions, gt).values
    labelled = gt.copy(data=predictions)
    # a model's output for the whole scan, neurons and trials in another order, plus trials not scored
    extra = labelled.isel(trial=[0, 1]).assign_coords(trial=[100, 101])
    shuffled_trials = np.random.default_rng(0).permutation(14)
    scrambled = xr.concat([labelled, extra], "trial").isel(trial=shuffled_trials, neuron=[4, 2, 0, 1, 3])
    scrambled = scrambled.transpose("neuron", "trial").drop_vars(["image_id", "tier", "area"])
    np.testing.assert_allclose(metrics.correlation_to_average(scrambled, gt).values, expected, atol=1e-12)
    with pytest.raises(ValueError, match="missing"):
        metrics.single_trial_correlation(labelled.isel(trial=slice(1, None)), gt)
    with pytest.raises(ValueError, match="shape"):
        metrics.single_trial_correlation(predictions[1:], gt)
    with pytest.raises(ValueError, match="dims"):
        metrics.single_trial_correlation(labelled.rename(neuron="unit"), gt)


def test_tier_selection_and_withheld_responses(responses_array):
    responses, predictions, image_ids = repeated_trials([3, 3, 3, 3], n_neurons=4)
    tiers = np.array(["train"] * 6 + ["test"] * 6)
    gt = responses_array(responses, image_ids, chunk=5, tiers=tiers)
    test = metrics.select_tier(gt, "test")
    assert (test.tier.values == "test").all() and test.sizes["trial"] == 6
    assert metrics.select_tier(gt, ["train", "test"]).sizes["trial"] == 12
    np.testing.assert_allclose(
        metrics.oracle_correlation(gt, tier="test").values, metrics.oracle_correlation(test).values, atol=1e-12
    )
    labelled = gt.copy(data=predictions)
    assert metrics.summary(labelled, gt, tier="test") == pytest.approx(metrics.summary(labelled, test), nan_ok=True)
    ds = xr.Dataset({"responses": gt})
    np.testing.assert_allclose(metrics.oracle_correlation(ds, tier="test").values, metrics.oracle_correlation(test).values)
    with pytest.raises(ValueError, match="final_test"):
        metrics.select_tier(gt, "final_test")
    withheld = gt.assign_coords({model.WITHHELD_COORD: ("trial", tiers == "test")})
    with pytest.raises(ValueError, match="withhold"):
        metrics.oracle_correlation(withheld)
    assert np.isfinite(metrics.oracle_correlation(withheld, tier="train").values).all()


def test_no_runtime_warnings_on_degenerate_data(responses_array):
    constant = np.ones((6, 3))
    gt = responses_array(constant, np.array([1, 1, 2, 2, 3, 4]), chunk=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert metrics.single_trial_correlation(constant, gt).values == pytest.approx(np.zeros(3))
        scores = metrics.feve(constant, gt).compute()
        assert np.isnan(scores.fev.values).all()
        assert np.isnan(metrics.summary(constant, gt)["feve"])


def test_synthetic_scan_test_tier_equals_the_official_metrics():
    ds = make_scan(n_trials=200, n_neurons=15, image_shape=(1, 9, 16), seed=5)
    gt = metrics.select_tier(standardize(ds), "test").responses
    responses = gt.values.astype(np.float64)
    predictions = responses + np.random.default_rng(0).normal(0, 1, responses.shape)
    ours = _ours(predictions, gt)
    with np.errstate(all="ignore"):
        expected, leaderboard = official_metrics(predictions, responses, gt.image_id.values)
    for name in ("single", "average", "oracle", "fev"):
        np.testing.assert_allclose(ours[name], expected[name], rtol=0, atol=1e-6, err_msg=name)
    assert np.nanmean(ours["oracle"]) > 0  # repeats of a test image correlate
    assert metrics.summary(predictions, gt) == pytest.approx(leaderboard, abs=1e-6, nan_ok=True)


# --------------------------------------------------------------------------------------------------
# 2023: the official video metric (sensorium_2023 sensorium/utility/scores.py), transcribed


def official_2023_correlations(targets, outputs, skip=50):
    """``model_predictions`` + ``get_correlations``: per trial (N, T) arrays, frames [skip:] of each, in float32."""
    target = np.concatenate([np.asarray(t, np.float32)[:, skip:] for t in targets], axis=1).T
    output = np.concatenate([np.asarray(o, np.float32)[:, skip:] for o in outputs], axis=1).T
    with np.errstate(all="ignore"):
        correlations = official_corr(target, output, axis=0)
    correlations[np.isnan(correlations)] = 0
    return correlations


def video_trials(n_trials=9, n_neurons=6, frames=70, seed=0):
    """Responses (trial, neuron, frame) of several lengths, NaN-padded, a constant and a NaN-holding neuron, as a Dataset."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(55, frames + 1, n_trials)
    lengths[0] = frames
    responses = rng.gamma(0.7, 1.0, (n_trials, n_neurons, frames))
    predictions = 0.6 * responses + rng.normal(0, 0.5, responses.shape)
    responses[:, 1] = 0.25  # a constant neuron: the official corr is 0 (eps), not NaN
    responses[2, 2, 60] = np.nan  # a NaN inside a trial: that neuron's correlation is NaN, set to 0
    padding = np.arange(frames) >= lengths[:, None]
    responses[np.broadcast_to(padding[:, None], responses.shape)] = np.nan
    predictions[np.broadcast_to(padding[:, None], predictions.shape)] = np.nan  # a model's output is only ever cut to length
    ds = xr.Dataset(
        {"responses": (("trial", "neuron", "frame"), responses.astype(np.float32))},
        coords={"trial": np.arange(n_trials), "neuron": np.arange(1, n_neurons + 1), "n_frames": ("trial", lengths),
                "frame": np.arange(frames)},  # fmt: skip
    )
    return ds, predictions, lengths


@pytest.mark.parametrize("chunk", [None, 2, 4])
def test_the_2023_metric_equals_the_official_formula(chunk) -> None:
    ds, predictions, lengths = video_trials()
    responses = ds.responses if chunk is None else ds.responses.chunk({"trial": chunk})
    ours = metrics.single_trial_correlation(predictions, responses)
    targets = [ds.responses.values[i][:, : lengths[i]] for i in range(len(lengths))]
    outputs = [predictions[i][:, : lengths[i]] for i in range(len(lengths))]
    expected = official_2023_correlations(targets, outputs)
    np.testing.assert_allclose(ours.values, expected, rtol=0, atol=1e-6)
    assert ours.dims == ("neuron",) and ours.values[1] == 0 and ours.values[2] == 0
    assert (np.abs(ours.values[[0, 3, 4, 5]]) > 0.1).all()
    for skip in (0, 20):
        ours = metrics.single_trial_correlation(predictions, responses, skip=skip).values
        np.testing.assert_allclose(ours, official_2023_correlations(targets, outputs, skip=skip), rtol=0, atol=1e-6)
    board = metrics.leaderboard(predictions, responses)
    assert board == {"single_trial_correlation": pytest.approx(float(expected.mean()), abs=1e-6)}


def test_the_2023_metric_on_a_scan_opened_with_open_scan(shared_dynamic) -> None:
    ds = standardize(open_scan(shared_dynamic, chunks=4))
    train = ds.sel(trial=ds.tier == "train")
    rng = np.random.default_rng(3)
    predictions = train.responses.fillna(0) + rng.normal(0, 0.3, train.responses.shape)
    ours = metrics.single_trial_correlation(predictions, train, skip=3)
    lengths = train.n_frames.values
    responses = train.responses.values
    expected = official_2023_correlations([responses[i][:, : n] for i, n in enumerate(lengths)],
                                          [predictions.values[i][:, : n] for i, n in enumerate(lengths)], skip=3)  # fmt: skip
    np.testing.assert_allclose(ours.values, expected, atol=1e-6)
    with pytest.raises(ValueError, match="withholds"):
        metrics.single_trial_correlation(ds.responses, ds)


def test_clip_ids_group_identical_videos(shared_dynamic) -> None:
    ds = open_scan(shared_dynamic, chunks=5)
    ids = metrics.clip_ids(ds)
    assert ids.dims == ("trial",) and ids.name == "clip_id" and ids.dtype == np.dtype("<U16")
    videos = ds.videos.values
    for a in range(ds.sizes["trial"]):
        for b in range(a + 1, ds.sizes["trial"]):
            same = np.array_equal(videos[a], videos[b], equal_nan=True)
            assert (ids.values[a] == ids.values[b]) == same
    oracle = metrics.clip_ids(ds, tier="oracle")
    assert (oracle.values[ds.tier.values != "oracle"] == "").all()
    np.testing.assert_array_equal(oracle.values[ds.tier.values == "oracle"], ids.values[ds.tier.values == "oracle"])
    np.testing.assert_array_equal(metrics.clip_ids(ds.load()).values, ids.values)  # numpy and dask alike
    with pytest.raises(ValueError, match="expected a video scan"):
        metrics.clip_ids(ds.drop_vars("videos"))


def official_repeat_metrics(responses, predictions, lengths, clips, skip):
    """neuroxr's 2023 extension, written out plainly: per clip, frames [skip:n] of every repeat."""
    groups = [np.flatnonzero(clips == clip) for clip in np.unique(clips)]
    cut = lambda values, trial: values[trial][:, skip : lengths[trial]]  # noqa: E731
    mean_r = [np.mean([cut(responses, t) for t in trials], axis=0) for trials in groups]
    mean_p = [np.mean([cut(predictions, t) for t in trials], axis=0) for trials in groups]
    average = official_2023_correlations(mean_r, mean_p, skip=0)
    samples_r = np.concatenate([cut(responses, t) for t in range(len(lengths))], axis=1)
    samples_p = np.concatenate([cut(predictions, t) for t in range(len(lengths))], axis=1)
    total = samples_r.var(axis=1, ddof=1)
    noise = np.concatenate([np.var([cut(responses, t) for t in trials], axis=0, ddof=1) for trials in groups], axis=1).mean(axis=1)
    mse = ((samples_r - samples_p) ** 2).mean(axis=1)
    fev = (total - noise) / total
    feve = 1 - (mse - noise) / (total - noise)
    return average, fev, feve


@pytest.mark.parametrize("chunk", [None, 3])
def test_correlation_to_average_and_feve_over_repeated_clips(chunk) -> None:
    rng = np.random.default_rng(5)
    clips = np.array([7, 7, 7, 9, 9, 4, 4, 4, 4])  # three clips, of 3, 2 and 4 repeats
    lengths = np.array([66, 66, 66, 70, 70, 58, 58, 58, 58])
    signal = {clip: rng.gamma(1.0, 1.0, (5, 70)) for clip in np.unique(clips)}
    responses = np.stack([signal[clip] + rng.normal(0, 0.4, (5, 70)) for clip in clips])
    predictions = np.stack([signal[clip] * 0.8 + rng.normal(0, 0.3, (5, 70)) for clip in clips])
    padding = np.arange(70) >= lengths[:, None]
    responses[np.broadcast_to(padding[:, None], responses.shape)] = np.nan
    ds = xr.Dataset({"responses": (("trial", "neuron", "frame"), responses)},
                    coords={"n_frames": ("trial", lengths), "clip_id": ("trial", clips.astype(str))})  # fmt: skip
    gt = ds.responses if chunk is None else ds.responses.chunk({"trial": chunk})
    average, fev, feve = official_repeat_metrics(responses, predictions, lengths, clips.astype(str), skip=10)
    np.testing.assert_allclose(metrics.correlation_to_average(predictions, gt, skip=10).values, average, atol=1e-6)
    scores = metrics.feve(predictions, gt, skip=10, fev_threshold=-np.inf)
    np.testing.assert_allclose(scores.fev.values, fev, atol=1e-9)
    np.testing.assert_allclose(scores.feve.values, feve, atol=1e-9)
    oracle = metrics.oracle_correlation(gt, skip=10)
    assert oracle.dims == ("neuron",) and (oracle.values > 0.5).all()
    board = metrics.leaderboard(predictions, gt, skip=10, fev_threshold=-np.inf)
    assert board["feve"] == pytest.approx(feve.mean(), abs=1e-9) and board["correlation_to_average"] == pytest.approx(average.mean(), abs=1e-6)
    with pytest.raises(ValueError, match="clip_ids"):
        metrics.feve(predictions, gt.drop_vars("clip_id"))
    with pytest.raises(ValueError, match="clips shown more than once"):
        metrics.correlation_to_average(predictions[[0, 3]], gt.isel(trial=[0, 3]))
