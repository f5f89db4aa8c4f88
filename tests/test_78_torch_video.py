"""neuroxr.torch's 2023 video loaders against the official ``mouse_video_loader``, batch for batch.

The reference transcribes the official code path item by item: ``MovieFileTreeDataset.__getitem__``
(one ``np.load`` per file), then the transforms in the order of ``sensorium_2023``'s loader (May 2024 on):
``NeuroNormalizer(in_name="videos")`` on the NaN-padded trial, ``Subsample(idx, target_index=0)``,
``CutVideos`` (neuralpredictors HEAD: a field without NaN keeps its length), ``ChangeChannelsOrder``,
``Subsequence``, ``ExpandChannels``, ``AddBehaviorAsChannels``, ``AddPupilCenterAsChannels``, ``ToTensor``,
with neuralpredictors' ``SubsetSequentialSampler`` and torch's default collate.
"""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from conftest import write_tiny_dynamic_scan, zip_scan

import neuroxr

torch = pytest.importorskip("torch")
neuroxr_torch = pytest.importorskip("neuroxr.torch")

from torch.utils.data import DataLoader  # noqa: E402


class OfficialMovieFileTree(torch.utils.data.Dataset):
    def __init__(self, path: Path, *data_keys: str) -> None:
        self.path, self.data_keys, self.transforms = Path(path), data_keys, []
        self.Point = namedtuple("DataPoint", data_keys)

    def statistic(self, key: str, stat: str) -> np.ndarray:
        return np.load(self.path / "meta" / "statistics" / key / "all" / f"{stat}.npy")

    def __len__(self) -> int:
        return len(list((self.path / "data" / "responses").glob("*")))

    def __getitem__(self, item: int) -> Any:
        x = self.Point(*(np.load(self.path / "data" / key / f"{item}.npy") for key in self.data_keys))
        for transform in self.transforms:
            x = transform(x)
        return x


def neuro_normalizer(dat: OfficialMovieFileTree):
    mean, std = dat.statistic("videos", "mean")[()], dat.statistic("videos", "std")[()]
    s = np.array(dat.statistic("responses", "std"))
    threshold = 0.01 * np.nanmean(s)
    idx = s > threshold
    precision = np.ones_like(s) / threshold
    precision[idx] = 1 / s[idx]
    transforms = {"videos": lambda x: (x - mean) / std, "responses": lambda x: x * precision}
    if "pupil_center" in dat.data_keys:
        eye_mean, eye_std = np.array(dat.statistic("pupil_center", "mean")), np.array(dat.statistic("pupil_center", "std"))
        transforms["pupil_center"] = lambda x: (x - eye_mean) / eye_std
    if "behavior" in dat.data_keys:
        behavior_precision = 1 / np.array(dat.statistic("behavior", "std"))
        transforms["behavior"] = lambda x: x * behavior_precision
    return lambda x: x.__class__(**{k: transforms[k](v) for k, v in zip(x._fields, x)})


def subsample(idx):
    return lambda x: x._replace(responses=np.take(x.responses, idx, 0))


def cut_videos(x):
    lengths = []
    for k in x._fields:
        nans = np.argwhere(np.isnan(getattr(x, k)))[:, -1]
        lengths.append(nans.min() if nans.size else getattr(x, k).shape[-1])
    idx = np.arange(0, min(lengths))
    return x.__class__(**{k: np.take(getattr(x, k), idx, -1) for k in x._fields})


def change_channels_order(order, key):
    return lambda x: x._replace(**{key: np.transpose(getattr(x, key), order)}) if key in x._fields else x


def subsequence(frames, offset):
    def transform(x):
        t = getattr(x, x._fields[0]).shape[0]
        i = np.random.randint(0, t - frames) if offset < 0 else offset
        return x.__class__(**{k: getattr(x, k)[i : i + frames, ...] for k in x._fields})

    return transform


def expand_channels(x):
    img = x.videos
    return x._replace(videos=img if img.ndim == 4 else np.expand_dims(img, axis=img.ndim - 3))


def add_as_channels(key):
    def transform(x):
        img = x.videos
        shape_changer = np.ones((1, *img.shape[-(len(img.shape) - 1) :]))
        axis_to_add = (len(img.shape) - 2, len(img.shape) - 1)
        expanded = shape_changer * np.expand_dims(getattr(x, key), axis=axis_to_add)
        return x._replace(videos=np.concatenate((img, expanded), axis=len(img.shape) - 4))

    return transform


def to_tensor(x):
    return x.__class__(*[torch.from_numpy(elem.astype(np.float32)) for elem in x])


def official_video_loaders(path: Path, batch_size: int, *, frames=8, offset=-1, include_behavior=True, include_pupil_centers=True,
                           include_pupil_centers_as_channels=False, to_cut=True) -> dict[str, DataLoader]:  # fmt: skip
    data_keys = ["videos", "responses"] + ["behavior"] * include_behavior + ["pupil_center"] * include_pupil_centers
    dat = OfficialMovieFileTree(path, *data_keys)
    idx = np.where(np.ones(len(np.load(path / "meta/neurons/cell_motor_coordinates.npy")), dtype=bool))[0]
    more = [subsample(idx), cut_videos, change_channels_order((2, 0, 1), "videos"), change_channels_order((1, 0), "responses")]
    more += [change_channels_order((1, 0), "behavior"), change_channels_order((1, 0), "pupil_center")]
    if to_cut:
        more.append(subsequence(frames, offset))
    more += [change_channels_order((1, 0), "responses"), expand_channels]
    more += [change_channels_order((1, 0), "behavior"), change_channels_order((1, 0), "pupil_center")]
    if include_behavior:
        more.append(add_as_channels("behavior"))
    if include_pupil_centers and include_pupil_centers_as_channels:
        more.append(add_as_channels("pupil_center"))
    more.append(to_tensor)
    dat.transforms = [neuro_normalizer(dat), *more]
    tiers = np.load(path / "meta/trials/tiers.npy")
    loaders = {}
    for tier in sorted(set(tiers.tolist()) - {"none"}):
        subset = np.where(tiers == tier)[0].tolist()
        loaders[tier] = DataLoader(dat, sampler=subset if tier != "train" else None, batch_size=batch_size)
    return loaders


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A video scan whose test responses are known (so they can be compared), 30 trials of up to 16 frames."""
    return write_tiny_dynamic_scan(tmp_path_factory.mktemp("video"), n_trials=30, frames=16, test_responses="values")


def batches(loader: DataLoader) -> list[tuple[np.ndarray, ...]]:
    return [tuple(field.numpy() for field in batch) for batch in loader]


def assert_same(ours: DataLoader, official: DataLoader) -> None:
    got, expected = batches(ours), batches(official)
    assert len(got) == len(expected) > 0
    for mine, theirs in zip(got, expected):
        for a, b in zip(mine, theirs, strict=True):
            assert a.dtype == np.float32 and a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


OPTIONS = {
    "fixed windows": {"frames": 6, "offset": 1},
    "pupil as channels": {"frames": 5, "offset": 2, "include_pupil_centers_as_channels": True},
    "no behaviour or pupil": {"frames": 4, "offset": 0, "include_behavior": False, "include_pupil_centers": False},
}


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_every_sequential_batch_equals_the_official_loaders(scan: Path, options: dict[str, Any]) -> None:
    ours = neuroxr_torch.video_loaders(scan, batch_size=2, **options)
    official = official_video_loaders(scan, batch_size=2, **options)
    assert set(ours) == set(official)
    for tier in ours:
        if tier != "train":
            assert_same(ours[tier], official[tier])


def test_whole_trials_one_by_one_are_the_official_to_cut_false(scan: Path) -> None:
    ours = neuroxr_torch.video_loaders(scan, batch_size=1, frames=None)
    official = official_video_loaders(scan, batch_size=1, to_cut=False)
    for tier in ("oracle", "live_test_main", "final_test_bonus"):
        assert_same(ours[tier], official[tier])
    lengths = [batch.videos.shape[2] for batch in ours["oracle"]]
    ds = neuroxr.open_scan(scan)
    assert lengths == ds.n_frames.values[ds.tier.values == "oracle"].tolist()


def test_the_tiers_are_the_scans_and_keyed_by_folder_name(scan: Path, tmp_path: Path) -> None:
    one = neuroxr_torch.video_loaders(scan, batch_size=2)
    assert list(one) == ["train", "oracle", "live_test_main", "live_test_bonus", "final_test_main", "final_test_bonus"]
    several = neuroxr_torch.video_loaders([zip_scan(scan, tmp_path / f"{scan.name}.zip")], batch_size=2)
    assert list(several["oracle"]) == [scan.name]


def test_random_windows_lie_in_the_trial_and_follow_the_seed(scan: Path) -> None:
    def windows(seed: int) -> list[np.ndarray]:
        loader = neuroxr_torch.video_loaders(scan, batch_size=3, frames=5, seed=seed, tier="train")["train"]
        return [batch.responses.numpy() for batch in loader]

    first, again, other = windows(0), windows(0), windows(1)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))
    assert all(np.isfinite(batch).all() and batch.shape[-1] == 5 for batch in first)  # never past a trial's end


def test_withheld_responses_read_nan_without_shortening_the_trial(tmp_path: Path) -> None:
    scan = write_tiny_dynamic_scan(tmp_path, n_trials=30, frames=16)
    ours = neuroxr_torch.video_loaders(scan, batch_size=1, frames=None, tier="live_test_main")["live_test_main"]
    official = official_video_loaders(scan, batch_size=1, to_cut=False)["live_test_main"]
    for mine, theirs in zip(batches(ours), batches(official), strict=True):
        assert mine[0].shape == theirs[0].shape  # the same length: withheld responses do not end the trial
        assert np.isnan(mine[1]).all() and (theirs[1] == 0).all()  # NaN here, the stored zeros there
        np.testing.assert_allclose(mine[0], theirs[0], rtol=1e-6, atol=1e-6)


def test_predictions_of_whole_trials_are_placed_on_their_frames(scan: Path) -> None:
    loader = neuroxr_torch.video_loaders(scan, batch_size=1, frames=None, tier="oracle")["oracle"]

    def model(videos: torch.Tensor) -> torch.Tensor:  # (batch, frame, neuron), dropping the first 3 frames
        return videos[:, 0, 3:].mean(dim=(2, 3))[..., None].repeat(1, 1, 7)

    predictions = neuroxr_torch.predict(model, loader)
    ds = neuroxr.open_scan(scan)
    assert predictions.dims == ("trial", "neuron", "frame") and predictions.sizes["frame"] == ds.sizes["frame"]
    lengths = ds.n_frames.sel(trial=predictions.trial).values
    for row, length in enumerate(lengths):
        known = np.isfinite(predictions.values[row, 0])
        assert known.tolist() == [3 <= frame < length for frame in range(ds.sizes["frame"])]


def test_static_and_video_scans_go_to_their_own_loaders(scan: Path, tmp_path: Path) -> None:
    with pytest.raises(neuroxr.DatasetError, match="video_loaders"):
        neuroxr_torch.static_loaders(scan, batch_size=2)
    with pytest.raises(neuroxr.DatasetError, match="static_loaders"):
        neuroxr_torch.video_loaders(neuroxr.make_scan(n_trials=40, n_neurons=10), batch_size=2)
    assert set(neuroxr_torch.loaders(scan, batch_size=2, frames=4)) >= {"train", "oracle"}


# ------------------------------------------------------------------------------------------------
# The 2023 submission file


def test_the_parquet_file_is_the_official_generate_submission(scan: Path, tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pandas as pd

    from neuroxr.submission import read_submission, write_submission

    skip = 3

    def model(videos: torch.Tensor) -> torch.Tensor:  # (batch, frame, neuron) for every frame, on a standardised scale
        return torch.nn.functional.softplus(videos[:, 0].mean(dim=(2, 3)))[..., None] * torch.arange(1.0, 8.0)

    ds = neuroxr.open_scan(scan)
    predictions = {}
    for tier in ("live_test_main", "final_test_main"):
        loader = neuroxr_torch.video_loaders(scan, batch_size=1, frames=None, tier=tier)[tier]
        predictions[tier] = neuroxr_torch.predict(model, loader)
    combined = {scan.name: xr.concat(list(predictions.values()), "trial")}
    written = write_submission(combined, ds, tmp_path, skip=skip, check_scale=False)
    assert [path.name for path in written] == [
        "predictions_file_live_test_main_main_track.parquet.brotli",
        "predictions_file_final_test_main_main_track.parquet.brotli",
    ]
    official = official_video_loaders(scan, batch_size=1, to_cut=False)
    tiers = np.load(scan / "meta/trials/tiers.npy")
    neuron_ids = np.asarray(np.load(scan / "meta/neurons/unit_ids.npy").tolist()).astype(np.uint32)
    for path, tier in zip(written, ("live_test_main", "final_test_main")):
        trial_indices, test_predictions = [], []
        dataset = official[tier].dataset
        for idx in range(len(tiers)):  # generate_submission, as the official code runs it
            if tiers[idx] == tier:
                batch = dataset[idx]
                length = batch[0].shape[1] - skip
                trial_indices.append(idx)
                out = model(batch[0][None]).detach().cpu()[:, -length:, :]
                test_predictions.append(out.permute(0, 2, 1).squeeze().numpy().astype(np.float32).tolist())
        n = len(trial_indices)
        expected = pd.DataFrame({"mouse": [scan.name] * n, "trial_indices": trial_indices, "prediction": test_predictions, "neuron_ids": [neuron_ids] * n})
        reference = tmp_path / f"official-{tier}.parquet.brotli"
        expected.to_parquet(reference, compression="brotli", engine="pyarrow", index=False)
        ours, theirs = pa.parquet.read_table(path), pa.parquet.read_table(reference)
        assert ours.schema.remove_metadata() == theirs.schema.remove_metadata()
        assert str(ours.schema.field("prediction").type) == "list<element: list<element: double>>"
        for column in ("mouse", "trial_indices", "neuron_ids"):
            assert ours.column(column).to_pylist() == theirs.column(column).to_pylist()
        for mine, official_cell in zip(ours.column("prediction").to_pylist(), theirs.column("prediction").to_pylist(), strict=True):
            np.testing.assert_allclose(np.array(mine), np.array(official_cell), rtol=1e-6)
        assert pa.parquet.ParquetFile(path).metadata.row_group(0).column(0).compression == "BROTLI"
        back = read_submission(path, skip=skip)[scan.name]
        assert back.dims == ("trial", "neuron", "frame") and back.trial.values.tolist() == trial_indices
        truth = neuroxr.standardize(ds).responses.sel(trial=trial_indices)
        scored = combined[scan.name].sel(trial=trial_indices)
        np.testing.assert_allclose(
            neuroxr.metrics.single_trial_correlation(back.reindex(frame=ds.frame), truth, skip=skip).values,
            neuroxr.metrics.single_trial_correlation(scored.astype(np.float32), truth, skip=skip).values,
            rtol=1e-9,
        )
