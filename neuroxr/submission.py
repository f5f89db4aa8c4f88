"""The leaderboard's files: predictions written as the official code writes them, and read back for ``neuroxr.metrics``.

- 2022 (``sensorium.utility.submission.generate_submission_file``): one CSV per tier,
  ``submission_file_live_test.csv`` (tier ``test``) and ``submission_file_final_test.csv``, with the
  columns ``trial_indices`` (``meta/trials/trial_idx``), ``image_ids``, ``prediction`` (the trial's list of
  float32 values) and ``neuron_ids`` (the unit ids), one row per trial in file order. The ground truth
  (``generate_ground_truth_file``) is ``ground_truth_file_<tier>.csv`` with ``responses`` instead.
- 2023 (``sensorium_2023``'s ``generate_submission``): one parquet file (brotli) per tier and track for all
  mice, ``predictions_file_<tier>_<track>_track.parquet.brotli``, columns ``mouse`` (the scan's folder
  name), ``trial_indices`` (the file number), ``prediction`` (neuron x frame, the frames after the first
  ``skip``) and ``neuron_ids`` (uint32).

Before writing, the predictions are checked: a prediction for every trial of the tier, every neuron of
the scan once (written in the scan's order), finite values, and values on the standardised scale the
ground truth is on (``neuroxr.standardize``), not on the stored one.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from neuroxr import datamodel
from neuroxr.analysis.standardization import response_precision, standardize
from neuroxr.errors import DatasetError, require
from neuroxr.formats._write import OutputKind, write_atomically

TRIAL, NEURON, FRAME = datamodel.TRIAL, datamodel.NEURON, "frame"
#: The 2022 tiers the leaderboard scores, and the name each has in the submission file.
STATIC_TIERS = {"test": "live_test", "final_test": "final_test"}
#: The 2023 tiers the leaderboard scores (``<tier>_<track>``).
VIDEO_TIERS = ("live_test", "final_test")
VIDEO_TRACKS = {"main": "main", "bonus": "ood"}
DYNAMIC_FORMAT = "sensorium-2023-dynamic"
#: The official 2023 code scores the frames after the first ``SKIP_FRAMES`` of each trial.
SKIP_FRAMES = 50
COLUMNS = ("trial_indices", "image_ids", "prediction", "neuron_ids")


def _starts_with(path: Path, start: bytes) -> bool:
    with open(path, "rb") as file:
        return file.read(len(start)) == start


#: What ``overwrite=True`` may replace: a file of the same kind (never a folder or another file).
CSV_FILE = OutputKind("a submission CSV file", folder=False, recognise=lambda path: _starts_with(path, b"trial_indices,image_ids,"))
PARQUET_FILE = OutputKind("a parquet file", folder=False, recognise=lambda path: _starts_with(path, b"PAR1"))


def _is_dynamic(ds: xr.Dataset) -> bool:
    return ds.attrs.get("format") == DYNAMIC_FORMAT


def _tiers(ds: xr.Dataset) -> np.ndarray:
    if "tier" not in ds.coords:
        raise DatasetError(f"{ds.attrs.get('scan', 'scan')}: a submission needs the 'tier' coordinate on trial (meta/trials/tiers.npy)")
    return np.asarray(ds["tier"].values).astype(str)


# ------------------------------------------------------------------------------------------------
# Checks


def checked_predictions(
    predictions: xr.DataArray, scan: xr.Dataset, tier: str, *, check_scale: bool = True, skip: int = SKIP_FRAMES
) -> xr.DataArray:
    """``predictions`` for every trial of ``tier`` (file order) and every neuron of ``scan`` (its order), checked.

    Raises ``DatasetError`` naming what is wrong: trials of the tier or neurons missing, neurons
    unknown or twice, values not finite, or (``check_scale``) values on the stored scale rather than
    the standardised one the leaderboard compares them with.
    """
    name = f"{scan.attrs.get('scan', 'scan')} {tier}"
    video = _is_dynamic(scan)
    dims = {TRIAL, NEURON, FRAME} if video else {TRIAL, NEURON}
    if not isinstance(predictions, xr.DataArray) or set(predictions.dims) != dims:
        found = predictions.dims if isinstance(predictions, xr.DataArray) else type(predictions).__name__
        raise DatasetError(f"{name}: expected predictions as a DataArray with dims {sorted(dims)}, found {found}")
    for dim in (TRIAL, NEURON):
        if dim not in predictions.indexes:
            raise DatasetError(f"{name}: expected a {dim!r} coordinate on the predictions (file numbers / unit ids), found none")
        if not predictions.indexes[dim].is_unique:
            raise DatasetError(f"{name}: some {dim}s are predicted twice")
    trials = np.asarray(scan[TRIAL].values)[_tiers(scan) == tier]
    if len(trials) == 0:
        raise DatasetError(f"{name}: the scan has no trials of tier {tier!r}")
    missing = np.setdiff1d(trials, predictions.indexes[TRIAL].values)
    if len(missing):
        raise DatasetError(f"{name}: no predictions for {len(missing)} of the {len(trials)} trials of the tier, e.g. trials {missing[:5].tolist()}")
    neurons = scan.indexes[NEURON]
    unknown = predictions.indexes[NEURON].difference(neurons)
    absent = neurons.difference(predictions.indexes[NEURON])
    if len(unknown) or len(absent):
        raise DatasetError(
            f"{name}: expected a prediction for each of the {len(neurons)} neurons of the scan, "
            f"found {len(absent)} missing (e.g. {absent[:5].tolist()}) and {len(unknown)} unknown (e.g. {unknown[:5].tolist()})"
        )
    selected = predictions.sel({TRIAL: trials, NEURON: neurons}).transpose(TRIAL, NEURON, *([FRAME] if video else []))
    values = np.asarray(selected.values, dtype=np.float64)
    if video:  # the frames the leaderboard scores: from ``skip`` to the end of each trial
        frame = np.arange(values.shape[-1])[None, None, :]
        scored = (frame >= skip) & (frame < _lengths(scan, trials)[:, None, None])
    else:
        scored = np.ones(values.shape, dtype=bool)
    bad = scored & ~np.isfinite(values)
    if bad.any():
        trial, neuron = np.argwhere(bad)[0][:2]
        raise DatasetError(
            f"{name}: expected finite predictions, found {int(bad.sum())} NaN or infinite values, "
            f"e.g. trial {trials[trial]}, neuron {neurons[neuron]}"
        )
    if check_scale:
        _check_scale(np.where(scored, values, np.nan), scan, name)
    return selected.copy(data=values)


def _per_neuron(values: xr.DataArray) -> np.ndarray:
    return np.asarray(values.mean([dim for dim in values.dims if dim != NEURON]).values, dtype=np.float64)


def _check_scale(values: np.ndarray, scan: xr.Dataset, name: str) -> None:
    """Refuse predictions whose per-neuron size matches the stored responses far better than the standardised ones."""
    if datamodel.statistics_name("responses") not in scan.data_vars:
        return
    stats = scan[datamodel.statistics_name("responses")].sel(subset=datamodel.MAIN_SUBSET)
    mean, std = (stats.sel(statistic=statistic) for statistic in ("mean", "std"))
    stored = _per_neuron(np.sqrt(mean**2 + std**2))
    standardized = _per_neuron(np.sqrt(mean**2 + std**2) * response_precision(scan))
    per_neuron = np.moveaxis(values, 1, 0).reshape(values.shape[1], -1)
    known = np.isfinite(per_neuron)
    count = known.sum(axis=1)
    sizes = np.sqrt(np.square(np.where(known, per_neuron, 0.0)).sum(axis=1) / np.maximum(count, 1))
    usable = (count > 0) & (sizes > 0) & (stored > 0) & (standardized > 0) & np.isfinite(stored) & np.isfinite(standardized)
    if not usable.any() or np.median(np.abs(np.log(standardized[usable] / stored[usable]))) < np.log(3):
        return  # the two scales are too close to tell apart
    to_stored = np.median(np.abs(np.log(sizes[usable] / stored[usable])))
    to_standardized = np.median(np.abs(np.log(sizes[usable] / standardized[usable])))
    if to_stored < to_standardized:
        raise DatasetError(
            f"{name}: the predictions look like responses on the stored scale; the leaderboard compares them with "
            "standardised responses (neuroxr.standardize: responses * precision). Multiply them by "
            "neuroxr.analysis.standardization.response_precision(scan), or pass check_scale=False if they are right"
        )


def _lengths(scan: xr.Dataset, trials: np.ndarray) -> np.ndarray:
    """Each trial's length in frames (``n_frames``, else all the frames)."""
    if "n_frames" in scan.coords:
        return np.asarray(scan["n_frames"].sel({TRIAL: trials}).values, dtype=np.int64)
    return np.full(len(trials), scan.sizes[FRAME], dtype=np.int64)


# ------------------------------------------------------------------------------------------------
# Writing


def _write_csv(frame: Any, target: Path, overwrite: bool) -> Path:
    write = lambda temporary: frame.to_csv(temporary, index=False)  # noqa: E731
    return write_atomically(target, write, kind=CSV_FILE, sources=(), overwrite=overwrite, needed_bytes=None)


def _static_frame(values: np.ndarray, scan: xr.Dataset, trials: np.ndarray, column: str) -> Any:
    """The official CSV's DataFrame: float32 values as Python floats, the unit ids as a list in every row."""
    import pandas as pd

    labels = scan.sel({TRIAL: trials})
    neuron_ids = np.asarray(scan[NEURON].values).tolist()
    return pd.DataFrame(
        {
            "trial_indices": np.asarray(labels["trial_idx"].values).tolist(),
            "image_ids": np.asarray(labels["image_id"].values).tolist(),
            column: values.astype(np.float32).tolist(),
            "neuron_ids": [neuron_ids] * len(trials),
        }
    )


def _static_tiers(scan: xr.Dataset, tiers: Sequence[str] | None) -> list[str]:
    present = set(_tiers(scan).tolist())
    if tiers is None:
        tiers = [tier for tier in STATIC_TIERS if tier in present]
    unknown = [tier for tier in tiers if tier not in STATIC_TIERS]
    if unknown:
        raise ValueError(f"expected 2022 leaderboard tiers among {list(STATIC_TIERS)}, found {unknown}")
    return list(tiers)


def write_submission(
    predictions: xr.DataArray | Mapping[str, xr.DataArray],
    scans: xr.Dataset | xr.DataTree | Mapping[str, xr.Dataset],
    folder: str | os.PathLike[str],
    *,
    tiers: Sequence[str] | None = None,
    track: str = "main",
    skip: int = SKIP_FRAMES,
    overwrite: bool = False,
    check_scale: bool = True,
) -> list[Path]:
    """Write the leaderboard's submission files for ``predictions`` into ``folder``, as the official code does.

    2022 (one scan, predictions trial x neuron): ``submission_file_live_test.csv`` for tier ``test``
    and ``submission_file_final_test.csv`` for ``final_test`` (``tiers``: default, those the scan has).
    2023 (``{release name: predictions trial x neuron x frame}`` and the scans, e.g. a DataTree):
    ``predictions_file_<tier>_<track>_track.parquet.brotli`` per tier (``live_test``, ``final_test``) of
    ``track`` (``main`` or ``bonus``), frames ``skip`` to the end of each trial. Predictions are checked
    first (see :func:`checked_predictions`); files appear whole or not at all.

    >>> ds = neuroxr.make_scan(n_trials=60, n_neurons=20, competition=True)
    >>> model_output = neuroxr.standardize(ds).responses.fillna(0.5)  # a model's predictions of every trial
    >>> [path.name for path in write_submission(model_output, ds, tmp)]
    ['submission_file_live_test.csv', 'submission_file_final_test.csv']
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(scans, xr.Dataset) and not _is_dynamic(scans):
        if not isinstance(predictions, xr.DataArray):
            raise TypeError("expected the predictions of a 2022 scan as one DataArray (trial x neuron)")
        written = []
        for tier in _static_tiers(scans, tiers):
            values = checked_predictions(predictions, scans, tier, check_scale=check_scale)
            frame = _static_frame(values.values, scans, values[TRIAL].values, "prediction")
            written.append(_write_csv(frame, folder / f"submission_file_{STATIC_TIERS[tier]}.csv", overwrite))
        return written
    return _write_video_submission(predictions, scans, folder, tiers=tiers, track=track, skip=skip, overwrite=overwrite, check_scale=check_scale)


def _video_scans(scans: xr.Dataset | xr.DataTree | Mapping[str, xr.Dataset]) -> dict[str, xr.Dataset]:
    """Scans by release name (the ``mouse`` of the official file)."""
    if isinstance(scans, xr.Dataset):
        datasets = [scans]
    elif isinstance(scans, xr.DataTree):
        datasets = [child.to_dataset() for child in scans.children.values()]
    else:
        datasets = list(scans.values())
    return {str(ds.attrs.get("release_name") or ds.attrs.get("scan")): ds for ds in datasets}


def _write_video_submission(
    predictions: xr.DataArray | Mapping[str, xr.DataArray],
    scans: xr.Dataset | xr.DataTree | Mapping[str, xr.Dataset],
    folder: Path,
    *,
    tiers: Sequence[str] | None,
    track: str,
    skip: int,
    overwrite: bool,
    check_scale: bool,
) -> list[Path]:
    import pandas as pd

    require("pyarrow", "submission", "writing the 2023 submission (parquet)")
    if track not in VIDEO_TRACKS:
        raise ValueError(f"expected track 'main' or 'bonus', found {track!r}")
    by_mouse = _video_scans(scans)
    if isinstance(predictions, xr.DataArray):
        if len(by_mouse) != 1:
            raise TypeError("expected predictions as {release name: DataArray} for several scans")
        predictions = {next(iter(by_mouse)): predictions}
    unknown = sorted(set(predictions) - set(by_mouse))
    if unknown:
        raise DatasetError(f"predictions for {unknown}, which are not among the scans {sorted(by_mouse)}")
    written = []
    for tier in tiers or VIDEO_TIERS:
        name = f"{tier}_{track}"
        rows: list[dict[str, Any]] = []
        for mouse, ds in by_mouse.items():
            if mouse not in predictions:
                raise DatasetError(f"{mouse}: no predictions for this scan")
            values = checked_predictions(predictions[mouse], ds, name, check_scale=check_scale, skip=skip)
            neuron_ids = np.asarray(ds[NEURON].values).astype(np.uint32)
            lengths = _lengths(ds, values[TRIAL].values)
            for trial, length, trial_values in zip(values[TRIAL].values.tolist(), lengths.tolist(), values.values):
                prediction = trial_values[:, skip:length].astype(np.float32).tolist()
                rows.append({"mouse": mouse, "trial_indices": trial, "prediction": prediction, "neuron_ids": neuron_ids})
        frame = pd.DataFrame(rows, columns=["mouse", "trial_indices", "prediction", "neuron_ids"])
        target = folder / f"predictions_file_{name}_{VIDEO_TRACKS[track]}_track.parquet.brotli"
        write = lambda temporary, frame=frame: frame.to_parquet(temporary, compression="brotli", engine="pyarrow", index=False)  # noqa: E731
        written.append(write_atomically(target, write, kind=PARQUET_FILE, sources=(), overwrite=overwrite, needed_bytes=None))
    return written


def write_ground_truth(scan: xr.Dataset, folder: str | os.PathLike[str], *, tiers: Sequence[str] | None = None, overwrite: bool = False) -> list[Path]:
    """``ground_truth_file_<tier>.csv`` as the official ``generate_ground_truth_file`` writes it: standardised responses.

    For scans whose responses of the tier are known (the pre-training scans; the competition's are withheld).

    >>> ds = neuroxr.make_scan(n_trials=60, n_neurons=20)
    >>> [path.name for path in write_ground_truth(ds, tmp)]
    ['ground_truth_file_test.csv']
    """
    standardized = standardize(scan).responses
    Path(folder).mkdir(parents=True, exist_ok=True)
    written = []
    for tier in _static_tiers(scan, tiers):
        trials = np.asarray(scan[TRIAL].values)[_tiers(scan) == tier]
        values = np.asarray(standardized.sel({TRIAL: trials}).values)
        if np.isnan(values).all(axis=1).any():
            raise DatasetError(f"{scan.attrs.get('scan', 'scan')} {tier}: the responses of this tier are withheld; there is no ground truth to write")
        frame = _static_frame(values, scan, trials, "responses")
        written.append(_write_csv(frame, Path(folder) / f"ground_truth_file_{tier}.csv", overwrite))
    return written


# ------------------------------------------------------------------------------------------------
# Reading


def _parse_list(text: str) -> list[Any]:
    return ast.literal_eval(text)


def read_submission(path: str | os.PathLike[str], *, skip: int = SKIP_FRAMES) -> xr.DataArray | dict[str, xr.DataArray]:
    """A submission or ground-truth file as labelled DataArrays, ready for ``neuroxr.metrics``.

    A 2022 CSV gives one DataArray (trial x neuron), rows in ascending ``trial_idx`` and neurons in ascending
    unit id (as the official ``evaluate`` orders them); ``trial`` is labelled by the file's
    ``trial_indices`` (``meta/trials/trial_idx``), with ``image_id`` on it. A 2023 parquet gives
    ``{mouse: DataArray (trial x neuron x frame)}``, ``trial`` the file numbers, each trial's values on
    its frames ``skip`` to ``n_frames`` (the official file holds the frames after the first ``skip``),
    NaN elsewhere; ``.reindex(frame=scan.frame)`` puts them on a scan's frames for ``neuroxr.metrics``.

    >>> ds = neuroxr.make_scan(n_trials=60, n_neurons=20)
    >>> truth = read_submission(write_ground_truth(ds, tmp)[0])
    >>> truth.dims, truth.sizes["trial"]
    (('trial', 'neuron'), 9)
    >>> sorted(neuroxr.metrics.leaderboard(truth + 0.1, truth))  # the leaderboard's three numbers
    ['correlation_to_average', 'feve', 'single_trial_correlation']
    """
    path = Path(path)
    if path.name.endswith((".parquet", ".parquet.brotli")):
        return _read_video(path, skip)
    import pandas as pd

    frame = pd.read_csv(path)
    column = next((name for name in ("prediction", "responses") if name in frame.columns), None)
    if column is None or not {"trial_indices", "image_ids", "neuron_ids"} <= set(frame.columns):
        raise DatasetError(f"{path}: expected the columns {list(COLUMNS)} (or 'responses' for ground truth), found {list(frame.columns)}")
    values = np.array([_parse_list(cell) for cell in frame[column]], dtype=np.float64)
    neuron_ids = np.asarray(_parse_list(frame["neuron_ids"].iloc[0]))
    trial_idx = frame["trial_indices"].to_numpy()
    trial_order, neuron_order = np.argsort(trial_idx), np.argsort(neuron_ids)
    data = values[trial_order][:, neuron_order]
    coords = {TRIAL: trial_idx[trial_order], "image_id": (TRIAL, frame["image_ids"].to_numpy()[trial_order]), NEURON: neuron_ids[neuron_order]}
    name = "predictions" if column == "prediction" else "responses"
    return xr.DataArray(data, dims=(TRIAL, NEURON), coords=coords, name=name, attrs={"source": str(path)})


def _read_video(path: Path, skip: int) -> dict[str, xr.DataArray]:
    import pandas as pd

    require("pyarrow", "submission", "reading the 2023 submission (parquet)")
    frame = pd.read_parquet(path, engine="pyarrow")
    result = {}
    for mouse, rows in frame.groupby("mouse", sort=False):
        trials = rows["trial_indices"].to_numpy(dtype=np.int64)
        predictions = [np.array([np.asarray(row) for row in cell], dtype=np.float64) for cell in rows["prediction"]]
        lengths = np.array([skip + prediction.shape[1] for prediction in predictions], dtype=np.int64)
        data = np.full((len(trials), predictions[0].shape[0], int(lengths.max())), np.nan)
        for row, prediction in enumerate(predictions):
            data[row, :, skip : lengths[row]] = prediction
        neuron_ids = np.asarray(rows["neuron_ids"].iloc[0])
        order = np.argsort(trials)
        coords = {TRIAL: trials[order], NEURON: neuron_ids, FRAME: np.arange(data.shape[-1]), datamodel.N_FRAMES: (TRIAL, lengths[order])}
        result[str(mouse)] = xr.DataArray(data[order], dims=(TRIAL, NEURON, FRAME), coords=coords, name="predictions", attrs={"source": str(path)})
    return result
