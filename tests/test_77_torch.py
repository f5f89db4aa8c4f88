"""neuroxr.torch: the official loaders' batches, from every format, read a batch at a time.

The reference is an independent transcription of the official 2022 code path, item by item as it runs:
``neuralpredictors.data.datasets.FileTreeDataset.__getitem__`` (one ``np.load`` per file), the transforms
of ``neuralpredictors.data.transforms`` v0.3.0 (``NeuroNormalizer``, ``AddBehaviorAsChannels``,
``AddPupilCenterAsChannels``, ``SelectInputChannel``, ``ScaleInputs`` through skimage's own ``rescale``,
``Subsample``, ``ToTensor``), ``neuralpredictors.data.samplers.SubsetSequentialSampler``, the neuron and
tier selection of ``sensorium.datasets.mouse_loaders.static_loader``, and torch's default collate.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
import zipfile
from collections import namedtuple
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import moved_away, write_tiny_scan, zip_scan
from test_25_remote import serve

import neuroxr

torch = pytest.importorskip("torch")
rescale = pytest.importorskip("skimage.transform").rescale
neuroxr_torch = pytest.importorskip("neuroxr.torch")

from torch.utils.data import DataLoader, SubsetRandomSampler  # noqa: E402

from neuroxr.lazy import TrialReader  # noqa: E402
from neuroxr.torch.parcels import HEADER, REUSES_BUFFERS, ParcelPool  # noqa: E402

IMAGE_SHAPE = (1, 12, 20)


# ------------------------------------------------------------------------------------------------
# The official code path, transcribed


class OfficialFileTree(torch.utils.data.Dataset):
    """``FileTreeDataset(path, *data_keys)`` with its transforms: np.load per file and item, transforms per item."""

    def __init__(self, path: Path, *data_keys: str) -> None:
        self.path, self.data_keys, self.transforms = Path(path), data_keys, []
        self.Point = namedtuple("DataPoint", data_keys)

    def statistic(self, key: str, stat: str) -> np.ndarray:
        return np.load(self.path / "meta" / "statistics" / key / "all" / f"{stat}.npy")

    def meta(self, group: str, name: str) -> np.ndarray:
        return np.load(self.path / "meta" / group / f"{name}.npy")

    def __len__(self) -> int:
        return len(list((self.path / "data" / "responses").glob("*")))

    def __getitem__(self, item: int) -> Any:
        x = self.Point(*(np.load(self.path / "data" / key / f"{item}.npy") for key in self.data_keys))
        for transform in self.transforms:
            x = transform(x)
        return x


def neuro_normalizer(dat: OfficialFileTree, exclude=None, inputs_mean=None, inputs_std=None):
    exclude = exclude or []
    mean = dat.statistic("images", "mean")[()] if inputs_mean is None else inputs_mean
    std = dat.statistic("images", "std")[()] if inputs_mean is None else inputs_std
    s = np.array(dat.statistic("responses", "std"))
    threshold = 0.01 * s.mean()
    idx = s > threshold
    precision = np.ones_like(s) / threshold
    precision[idx] = 1 / s[idx]
    transforms = {"images": lambda x: (x - mean) / std, "responses": lambda x: x * precision}
    if "pupil_center" in dat.data_keys:
        eye_mean, eye_std = np.array(dat.statistic("pupil_center", "mean")), np.array(dat.statistic("pupil_center", "std"))
        transforms["pupil_center"] = lambda x: (x - eye_mean) / eye_std
    if "behavior" in dat.data_keys:
        behavior_precision = 1 / np.array(dat.statistic("behavior", "std"))
        transforms["behavior"] = lambda x: x * behavior_precision
    return lambda x: x.__class__(**{k: (transforms[k](v) if k not in exclude else v) for k, v in zip(x._fields, x)})


def add_as_channels(key: str):
    """``AddBehaviorAsChannels`` (key="behavior") and ``AddPupilCenterAsChannels`` (key="pupil_center")."""

    def transform(x):
        img, values = x.images, getattr(x, key)
        expanded = np.ones((1, *img.shape[-(len(img.shape) - 1) :])) * np.expand_dims(values, axis=((len(img.shape) - 2), (len(img.shape) - 1)))
        return x._replace(images=np.concatenate((img, expanded), axis=len(img.shape) - 3))

    return transform


def select_input_channel(channel: int):
    channel = [channel]
    return lambda x: x._replace(images=x.images[:, channel] if x.images.ndim == 4 else x.images[channel, ...])


def scale_inputs(scale: float):
    options = {"mode": "reflect", "anti_aliasing": False, "clip": True, "preserve_range": True, "channel_axis": 0}
    return lambda x: x._replace(images=rescale(x.images, scale=scale, **options))


def subsample(idx):
    return lambda x: x._replace(responses=np.take(x.responses, idx, -1))


def to_tensor(x):
    return x.__class__(*[torch.from_numpy(elem.astype(np.float32)) for elem in x])


class SubsetSequentialSampler(torch.utils.data.Sampler):
    def __init__(self, indices):
        self.indices = indices

    def __iter__(self):
        return (self.indices[i] for i in range(len(self.indices)))

    def __len__(self):
        return len(self.indices)


def official_static_loaders(
    path: Path, batch_size: int, *, areas=None, layers=None, neuron_ids=None, neuron_n=None, exclude_neuron_n=0,
    neuron_base_seed=None, normalize=True, include_behavior=False, add_behavior_as_channels=True, exclude=None,
    select_input_channel_=None, inputs_mean=None, inputs_std=None, scale=None, include_eye_position=None,
    add_eye_pos_as_channels=None,
) -> dict[str, DataLoader]:
    """``static_loader`` as the 2022 package runs it (file_tree=True, cuda=False)."""
    data_keys = ["images", "responses"] + ["behavior"] * bool(include_behavior) + ["pupil_center"] * bool(include_eye_position)
    dat = OfficialFileTree(path, *data_keys)
    area, unit_ids = dat.meta("neurons", "area"), dat.meta("neurons", "unit_ids")
    conds = np.ones(len(area), dtype=bool)
    if areas is not None:
        conds &= np.isin(area, areas)
    if layers is not None:
        conds &= np.isin(dat.meta("neurons", "layer"), layers)
    idx = np.where(conds)[0]
    if neuron_n is not None:
        random_state = np.random.get_state()
        if neuron_base_seed is not None:
            np.random.seed(neuron_base_seed * neuron_n)
        neuron_ids = np.random.choice(unit_ids, size=exclude_neuron_n + neuron_n, replace=False)[exclude_neuron_n:]
        np.random.set_state(random_state)
    if neuron_ids is not None:
        idx = [np.where(unit_ids == unit_id)[0][0] for unit_id in neuron_ids]
    more_transforms = [subsample(idx), to_tensor]
    if scale is not None:
        more_transforms.insert(0, scale_inputs(scale))
    if select_input_channel_ is not None:
        more_transforms.insert(0, select_input_channel(select_input_channel_))
    if add_eye_pos_as_channels:
        more_transforms.insert(0, add_as_channels("pupil_center"))
    if include_behavior and add_behavior_as_channels:
        more_transforms.insert(0, add_as_channels("behavior"))
    if normalize:
        more_transforms.insert(0, neuro_normalizer(dat, exclude=exclude, inputs_mean=inputs_mean, inputs_std=inputs_std))
    dat.transforms.extend(more_transforms)
    tier_array = dat.meta("trials", "tiers")
    loaders = {}
    for tier in ["train", "validation", "test", "final_test"]:
        subset_idx = np.where(tier_array == tier)[0]
        sampler = SubsetRandomSampler(subset_idx) if tier == "train" else SubsetSequentialSampler(subset_idx)
        loaders[tier] = DataLoader(dat, sampler=sampler, batch_size=batch_size)
    return loaders


# ------------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 trials (32 train, 2 validation, 6 test), 13 neurons in two layers, images 12 x 20, written with np.save."""
    return write_tiny_scan(tmp_path_factory.mktemp("torch"), n_trials=40, image_shape=IMAGE_SHAPE)


def batches(loader: DataLoader) -> list[tuple[np.ndarray, ...]]:
    return [tuple(field.numpy() for field in batch) for batch in loader]


def assert_same_batches(ours: DataLoader, official: DataLoader) -> None:
    got, expected = batches(ours), batches(official)
    assert len(got) == len(expected) > 0
    for mine, theirs in zip(got, expected):
        assert len(mine) == len(theirs)
        for a, b in zip(mine, theirs):
            assert a.dtype == np.float32 and a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


OPTIONS = {
    "default": {},
    "behaviour channels": {"include_behavior": True},
    "behaviour kept apart": {"include_behavior": True, "add_behavior_as_channels": False},
    "pupil channels, scale 0.5": {"include_behavior": True, "include_eye_position": True, "add_eye_pos_as_channels": True, "scale": 0.5},
    "scale 0.25": {"scale": 0.25},
    "scale up 1.7": {"scale": 1.7, "include_eye_position": True},
    "channel 0 of image and behaviour": {"include_behavior": True, "select_input_channel": 0, "scale": 0.5},
    "a behaviour channel": {"include_behavior": True, "select_input_channel": 2},
    "layer L4": {"layers": ["L4"]},
    "area V1, 5 random neurons": {"areas": ["V1"], "neuron_n": 5, "neuron_base_seed": 3, "exclude_neuron_n": 2},
    "neuron ids": {"neuron_ids": "reversed"},
    "images excluded": {"exclude": ["images"], "include_behavior": True, "add_behavior_as_channels": False},
    "not normalised": {"normalize": False, "include_eye_position": True},
    "inputs mean and std": {"inputs_mean": 100.0, "inputs_std": 50.0},
}


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_every_sequential_batch_equals_the_official_loaders(scan: Path, options: dict[str, Any]) -> None:
    options = dict(options)
    if options.get("neuron_ids") == "reversed":
        options["neuron_ids"] = np.load(scan / "meta/neurons/unit_ids.npy")[::-3].tolist()
    ours = neuroxr_torch.static_loaders(scan, batch_size=4, **options)
    official_options = {("select_input_channel_" if k == "select_input_channel" else k): v for k, v in options.items()}
    official = official_static_loaders(scan, batch_size=4, **official_options)
    assert list(ours) == list(official)
    for tier in ("validation", "test"):
        assert_same_batches(ours[tier], official[tier])
    assert batches(ours["final_test"]) == []  # a pre-training scan: an empty final_test, as the official one


def test_train_is_the_official_order_after_manual_seed(scan: Path) -> None:
    ours = neuroxr_torch.static_loaders(scan, batch_size=5, seed=11, include_behavior=True)["train"]
    official = official_static_loaders(scan, batch_size=5, include_behavior=True)["train"]
    torch.manual_seed(11)
    assert_same_batches(ours, official)  # the first epoch: the same permutation, the same batches
    again = neuroxr_torch.static_loaders(scan, batch_size=5, seed=11, include_behavior=True)["train"]
    first, second = batches(again), batches(again)
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(first, second))  # reshuffled every epoch
    assert sorted(np.concatenate([b[1] for b in first])[:, 0].tolist()) == sorted(np.concatenate([b[1] for b in second])[:, 0].tolist())


def test_the_same_seed_gives_the_same_epochs_and_another_seed_others(scan: Path) -> None:
    def epochs(seed: int) -> list[np.ndarray]:
        loader = neuroxr_torch.static_loaders(scan, batch_size=8, seed=seed, tier="train")["train"]
        return [np.concatenate([b[1] for b in batches(loader)]) for _ in range(2)]

    same, other = epochs(1), epochs(2)
    for a, b in zip(same, epochs(1)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(same[0], other[0])


# ------------------------------------------------------------------------------------------------
# From every format


@pytest.fixture(scope="module")
def formats(scan: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The scan in every form: zipped, over HTTP (range requests), NetCDF, Zarr, NWB, opened with dask, in memory."""
    pytest.importorskip("aiohttp")
    root = tmp_path_factory.mktemp("formats")
    ds = neuroxr.open_scan(scan)
    server, _ = serve(root)
    yield {
        "zip": zip_scan(scan, root / f"{scan.name}.zip"),
        "http url of the zip": f"http://127.0.0.1:{server.server_address[1]}/{scan.name}.zip",
        "netcdf": neuroxr.to_netcdf(ds, root / "scan.nc"),
        "zarr": neuroxr.to_zarr(ds, root / "scan.zarr"),
        "nwb": neuroxr.to_nwb(ds, root / "scan.nwb"),
        "dask Dataset": ds,
        "in-memory Dataset": ds.load(),
    }
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("kind", ["zip", "http url of the zip", "netcdf", "zarr", "nwb", "dask Dataset", "in-memory Dataset"])
def test_every_format_gives_the_official_batches(scan: Path, formats: dict[str, Any], kind: str) -> None:
    options = {"include_behavior": True, "include_eye_position": True, "scale": 0.5}
    ours = neuroxr_torch.static_loaders(formats[kind], batch_size=4, **options)
    official = official_static_loaders(scan, batch_size=4, **options)
    for tier in ("validation", "test"):
        assert_same_batches(ours[tier], official[tier])


def test_several_scans_are_keyed_by_scan_like_the_official_loaders(tmp_path: Path, scan: Path) -> None:
    release = tmp_path / "release"
    release.mkdir()
    zip_scan(scan, release / f"{scan.name}.zip")
    other = write_tiny_scan(tmp_path, n_trials=30, name="static30002-4-5-GrayImageNet-ffffffffffffffffffffffffffffffff")
    zip_scan(other, release / f"{other.name}.zip")
    by_folder = neuroxr_torch.static_loaders(release, batch_size=4)
    by_tree = neuroxr_torch.static_loaders(neuroxr.open(release), batch_size=4)
    by_list = neuroxr_torch.static_loaders([scan, other], batch_size=4)
    for loaders in (by_folder, by_tree, by_list):
        assert list(loaders) == ["train", "validation", "test", "final_test"]
        assert sorted(loaders["test"]) == ["30001-2-3", "30002-4-5"]
    assert_same_batches(by_folder["test"]["30001-2-3"], official_static_loaders(scan, batch_size=4)["test"])
    assert_same_batches(by_list["validation"]["30002-4-5"], official_static_loaders(other, batch_size=4)["validation"])


# ------------------------------------------------------------------------------------------------
# Reading: one block per batch, workers, caching


def test_a_batch_is_one_read_per_variable(scan: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, ...]] = []
    read_into = TrialReader.read_into

    def counted(self: TrialReader, trials: np.ndarray, out: np.ndarray) -> None:
        calls.append(tuple(np.asarray(trials).tolist()))
        read_into(self, trials, out)

    monkeypatch.setattr(TrialReader, "read_into", counted)
    loader = neuroxr_torch.static_loaders(scan, batch_size=8, seed=0, include_behavior=True, include_eye_position=True)["train"]
    n_batches = len(batches(loader))
    batch_reads = [trials for trials in calls if len(trials) == 8]  # the rest: statistics, one file each, read once
    assert n_batches == 4 and len(batch_reads) == 4 * n_batches  # images, responses, behavior, pupil_center: once each
    assert all(len(trials) == 1 for trials in calls if len(trials) != 8)


def assert_workers_match(source: Any, *, timeout: float = 60, **options: Any) -> None:
    """The same batches with two workers as without (any fields: the official namedtuples break here)."""
    fields = {"include_behavior": True, "include_eye_position": True, "tier": "test"}
    alone = neuroxr_torch.static_loaders(source, batch_size=2, **fields)["test"]
    workers = neuroxr_torch.static_loaders(source, batch_size=2, num_workers=2, timeout=timeout, **fields, **options)["test"]
    got = list(workers)
    assert [type(batch).__name__ for batch in got] == ["Batch"] * 3
    for mine, theirs in zip(got, batches(alone), strict=True):
        for a, b in zip(mine, theirs, strict=True):
            np.testing.assert_array_equal(a.numpy(), b)


@pytest.mark.parametrize("kind", ["zip", "netcdf", "dask Dataset", "in-memory Dataset"])
def test_workers_give_the_same_batches_with_any_fields(formats: dict[str, Any], kind: str) -> None:
    assert_workers_match(formats[kind])




def test_forked_workers_read_a_url(formats: dict[str, Any]) -> None:
    assert_workers_match(formats["http url of the zip"], timeout=3)


def test_forked_workers_read_zarr(formats: dict[str, Any]) -> None:
    assert_workers_match(formats["zarr"], timeout=30)


@pytest.mark.parametrize("kind", ["folder", "zip", "http url of the zip"])
def test_workers_send_images_as_uint8_and_give_the_official_batches(scan: Path, formats: dict[str, Any], kind: str) -> None:
    """Release images are whole numbers 0-255 kept as float32: a worker sends them as uint8, the main process finishes them."""
    source = scan if kind == "folder" else formats[kind]
    loader = neuroxr_torch.static_loaders(source, batch_size=2, tier="test", num_workers=2, timeout=30)["test"]
    assert_same_batches(loader, official_static_loaders(scan, batch_size=2)["test"])
    for mine, alone in zip(batches(loader), batches(neuroxr_torch.static_loaders(source, batch_size=2, tier="test")["test"]), strict=True):
        for a, b in zip(mine, alone, strict=True):
            np.testing.assert_array_equal(a, b)
    sent = list(DataLoader.__iter__(loader))  # what the workers hand over, before the loader unpacks it
    pixels, neurons = int(np.prod(IMAGE_SHAPE)), 13
    assert [parcel.nbytes for parcel in sent] == [2 * (pixels + 4 * neurons)] * 3  # a byte a pixel, float32 responses
    assert {name: np.dtype(dtype) for name, dtype, _, _ in sent[0].fields} == {"images": np.uint8, "responses": np.float32}


@pytest.mark.skipif(not REUSES_BUFFERS, reason="buffers are reused only where the memory model orders the hand-over (x86-64)")
def test_a_parcel_is_filled_again_only_once_its_batch_is_out_and_held_batches_never_change(scan: Path) -> None:
    dataset = neuroxr_torch.static_loaders(scan, batch_size=4, tier="train")["train"].dataset
    expected = {trials: dataset.__getitems__(list(trials)) for trials in [(0, 5, 9, 3), (7, 1, 2, 8), (4, 6, 10, 11)]}
    (a, first), (b, second), (c, third) = ((trials, dataset.parcel(trials)) for trials in expected)
    assert first.buffer.data_ptr() != second.buffer.data_ptr()  # the first is still on its way: a new buffer
    held = dataset.unpack(first)
    again = dataset.parcel(c)
    assert again.buffer.data_ptr() == first.buffer.data_ptr()  # released: its memory is used again
    for batch, trials in ((held, a), (dataset.unpack(second), b), (dataset.unpack(again), c)):
        for mine, theirs in zip(batch, expected[trials], strict=True):
            assert mine.dtype == torch.float32
            torch.testing.assert_close(mine, theirs, rtol=0, atol=0)


def test_a_pool_that_keeps_no_buffers_gives_fresh_memory_every_time() -> None:
    """What workers do where buffers are not reused (weaker memory models): a released buffer is never filled again."""
    pool = ParcelPool(keep=0, wait=0)
    first = pool.take(1000)
    first[0] = 1  # released
    second = pool.take(1000)
    assert second.data_ptr() != first.data_ptr() and len(second) >= HEADER + 1000


def test_images_that_are_not_whole_numbers_are_finished_in_the_worker(tmp_path: Path) -> None:
    scan = write_tiny_scan(tmp_path, n_trials=30, image_shape=IMAGE_SHAPE)
    path = scan / "data" / "images" / "4.npy"
    np.save(path, np.load(path) + np.float32(0.25))
    alone = neuroxr_torch.static_loaders(scan, batch_size=3, tier="train", seed=0)["train"]
    assert alone.dataset.parcel(list(range(6))) is None
    assert alone.dataset.parcel(list(range(5, 11))) is not None
    workers = neuroxr_torch.static_loaders(scan, batch_size=3, tier="train", seed=0, num_workers=2, timeout=30)["train"]
    for mine, theirs in zip(batches(workers), batches(alone), strict=True):
        for a, b in zip(mine, theirs, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["zip", "http url of the zip", "netcdf"])
def test_datasets_and_batches_pickle(formats: dict[str, Any], kind: str) -> None:
    """What a spawned worker gets: the dataset pickled (paths, offsets, URLs; no open handle), and batches back."""
    loader = neuroxr_torch.static_loaders(formats[kind], batch_size=3, include_behavior=True, include_eye_position=True)["test"]
    dataset = pickle.loads(pickle.dumps(loader.dataset))
    batch = next(iter(loader))
    again = pickle.loads(pickle.dumps(batch))
    assert again._fields == ("images", "responses", "behavior", "pupil_center")
    for a, b in zip(again, dataset.__getitems__(list(loader.sampler)[:3])):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert len(pickle.dumps(loader.dataset)) < 200_000


def test_nothing_is_kept_in_memory_unless_caching_is_asked_for(tmp_path: Path) -> None:
    scan = write_tiny_scan(tmp_path, n_trials=30, image_shape=IMAGE_SHAPE)
    lazy = neuroxr_torch.static_loaders(scan, batch_size=4, tier="test")["test"]
    cached = neuroxr_torch.static_loaders(scan, batch_size=4, tier="test", cache=True, num_workers=2)["test"]
    expected = batches(lazy)
    with moved_away(scan / "data"):
        with pytest.raises(neuroxr.ScanError):
            batches(lazy)
        for mine, theirs in zip(batches(cached), expected, strict=True):
            for a, b in zip(mine, theirs):
                np.testing.assert_array_equal(a, b)


def test_single_items_are_the_official_items(scan: Path) -> None:
    ours = neuroxr_torch.static_loaders(scan, batch_size=4, include_behavior=True)["test"].dataset
    official = official_static_loaders(scan, batch_size=4, include_behavior=True)["test"].dataset
    assert len(ours) == len(official) == 40
    for a, b in zip(ours[7], official[7]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Labels, predictions, errors


def test_the_dataset_labels_the_neurons_in_batch_order(scan: Path) -> None:
    loaders = neuroxr_torch.static_loaders(scan, batch_size=4, neuron_n=4, neuron_base_seed=1)
    labels = loaders["test"].dataset.scan
    unit_ids = np.load(scan / "meta/neurons/unit_ids.npy")
    np.random.seed(1 * 4)
    np.testing.assert_array_equal(labels.neuron.values, np.random.choice(unit_ids, size=4, replace=False))
    assert "responses" not in labels and "responses_statistics" in labels


def test_predict_labels_the_tier_in_loader_order(scan: Path) -> None:
    loaders = neuroxr_torch.static_loaders(scan, batch_size=4)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12 * 20, 13))
    predictions = neuroxr_torch.predict(model, loaders["test"])
    tiers = np.load(scan / "meta/trials/tiers.npy")
    np.testing.assert_array_equal(predictions.trial.values, np.flatnonzero(tiers == "test"))
    images = torch.cat([batch.images for batch in loaders["test"]])
    np.testing.assert_allclose(predictions.values, model(images).detach().numpy(), rtol=1e-6)
    np.testing.assert_array_equal(predictions.neuron.values, np.load(scan / "meta/neurons/unit_ids.npy"))
    assert set(predictions.tier.values.tolist()) == {"test"} and "image_id" in predictions.coords
    with pytest.raises(ValueError, match="sequential"):
        neuroxr_torch.predict(model, loaders["train"])


def test_withheld_responses_read_nan_and_the_stored_zeros_on_request(tmp_path: Path) -> None:
    scan = write_tiny_scan(tmp_path, competition=True)
    masked = batches(neuroxr_torch.static_loaders(scan, batch_size=8, tier="test")["test"])[0][1]
    assert np.isnan(masked).all()
    zeros = neuroxr_torch.static_loaders(neuroxr.open_scan(scan, mask_withheld=False), batch_size=8, tier="test")
    assert (batches(zeros["test"])[0][1] == 0).all()


def test_options_the_official_loader_would_crash_on_are_refused(scan: Path) -> None:
    with pytest.raises(ValueError, match="include_eye_position"):
        neuroxr_torch.static_loaders(scan, batch_size=4, add_eye_pos_as_channels=True)
    with pytest.raises(ValueError, match="inputs_mean"):
        neuroxr_torch.static_loaders(scan, batch_size=4, inputs_std=3.0)
    with pytest.raises(neuroxr.DatasetError, match="neuron_ids"):
        neuroxr_torch.static_loaders(scan, batch_size=4, neuron_ids=[99999])
    with pytest.raises(TypeError, match="expected a path"):
        neuroxr_torch.static_loaders(3, batch_size=4)


def test_without_torch_the_error_names_the_extra() -> None:
    code = "import sys; sys.modules['torch'] = None\ntry:\n    import neuroxr.torch\nexcept ImportError as e:\n    print(type(e).__name__, e)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("MissingExtraError") and "pip install 'neuroxr[torch]'" in done.stdout, done.stdout + done.stderr


def bytes_read() -> int:
    """Bytes this process has read through system calls so far (from the page cache or the disk)."""
    return int(next(line for line in Path("/proc/self/io").read_text().splitlines() if line.startswith("rchar:")).split()[1])


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux's per-process I/O counters")
def test_a_batch_from_netcdf_reads_only_the_file_chunks_of_its_trials(tmp_path: Path) -> None:
    """Not the dask chunk (here: every trial) that holds them: one batch reads its trials' HDF5 chunks."""
    ds = neuroxr.open_scan(write_tiny_scan(tmp_path, n_trials=200, image_shape=(1, 72, 256)))
    path = neuroxr.to_netcdf(ds, tmp_path / "scan.nc")
    opened = neuroxr.open(path)
    assert opened.images.data.numblocks[0] == 1  # one dask chunk holds every trial
    dataset = neuroxr_torch.static_loaders(opened, batch_size=4, normalize=False)["train"].dataset
    trials = [3, 50, 120, 170]
    before = bytes_read()
    batch = dataset.__getitems__(trials)
    read = bytes_read() - before
    np.testing.assert_array_equal(batch.images.numpy(), ds.images.values[trials])
    assert read < ds.images.nbytes / 10, f"{read} bytes read for {len(trials)} of {ds.sizes['trial']} trials"


def test_a_shuffled_batch_is_read_and_standardised_without_copies_of_itself(tmp_path: Path) -> None:
    """The memory a batch takes is the batch: no sorted copy to reorder, no float64 copy to standardise.

    In a worker such a batch is read into shared memory and sent as it is (or, for release images, its
    images narrowed into a reused parcel), so this is what bounds the memory of ``num_workers`` workers
    to about one batch each (with ``prefetch_factor=1``).
    """
    import tracemalloc

    scan = write_tiny_scan(tmp_path, n_trials=300, image_shape=(1, 72, 128))
    for name in ("images", "responses"):  # float64 statistics, as NeuroNormalizer's arithmetic then is
        for stat in ("mean", "std"):
            path = scan / "meta" / "statistics" / name / "all" / f"{stat}.npy"
            np.save(path, np.load(path).astype(np.float64))
    dataset = neuroxr_torch.static_loaders(scan, batch_size=128, seed=0)["train"].dataset
    trials = np.random.default_rng(0).permutation(np.flatnonzero(np.load(scan / "meta/trials/tiers.npy") == "train"))[:128].tolist()
    dataset.__getitems__(trials)  # the block pool's buffers, made once
    tracemalloc.start()
    try:
        batch = dataset.__getitems__(trials)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    batch_bytes = sum(field.numel() * field.element_size() for field in batch)
    assert peak < 0.5 * batch_bytes, f"{peak} bytes allocated for a batch of {batch_bytes}"
    images = np.stack([np.load(scan / "data/images" / f"{trial}.npy") for trial in trials])
    mean, std = (np.load(scan / "meta/statistics/images/all" / f"{stat}.npy") for stat in ("mean", "std"))
    np.testing.assert_array_equal(batch.images.numpy(), ((images - mean) / std).astype(np.float32))
    # a batch this size was read and standardised in parts, on the process's part threads
    assert any(thread.name.startswith("neuroxr-parts") for thread in threading.enumerate()) or (os.cpu_count() or 1) < 2


@pytest.mark.parametrize("part", ["first", "last"])
def test_a_bad_file_in_a_batch_read_in_parts_is_named_whichever_part_reads_it(tmp_path: Path, part: str) -> None:
    """A batch of 4.7 MB is read on the part threads in parts; a file that does not match its header fails
    the batch with the ScanError of that file, from this thread's part or another's, and the next batch reads."""
    scan = write_tiny_scan(tmp_path, n_trials=300, image_shape=(1, 72, 128))
    dataset = neuroxr_torch.static_loaders(scan, batch_size=128, seed=0)["train"].dataset
    trials = np.flatnonzero(np.load(scan / "meta/trials/tiers.npy") == "train")[:128].tolist()
    bad = trials[0] if part == "first" else trials[-1]
    path = scan / "data" / "images" / f"{bad}.npy"
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # truncated
    with pytest.raises(neuroxr.ScanError, match=rf"images[/\\]{bad}\.npy"):
        dataset.__getitems__(trials)
    path.write_bytes(whole)
    batch = dataset.__getitems__(trials)
    assert batch.images.shape == (128, 1, 72, 128)


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_batches_read_in_parts_from_a_zip_over_http_equal_the_folders(
    tmp_path: Path, compression: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of 4.7 MB are read on the part threads in parts, here from one remote zip by two threads at once."""
    pytest.importorskip("aiohttp")
    readers: set[str] = set()
    read_into = TrialReader.read_into

    def recorded(self: TrialReader, trials: np.ndarray, out: np.ndarray) -> None:
        readers.add(threading.current_thread().name.split("_")[0])
        read_into(self, trials, out)

    monkeypatch.setattr(TrialReader, "read_into", recorded)
    scan = write_tiny_scan(tmp_path / "scan", n_trials=300, image_shape=(1, 72, 128))
    (tmp_path / "www").mkdir()
    archive = zip_scan(scan, tmp_path / "www" / "scan.zip", compression)
    server, _ = serve(archive.parent)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/scan.zip"
        remote = neuroxr_torch.static_loaders(url, batch_size=128, seed=0, include_behavior=True)["train"]
        local = neuroxr_torch.static_loaders(scan, batch_size=128, seed=0, include_behavior=True)["train"]
        for ours, theirs in zip(batches(remote), batches(local), strict=True):
            for a, b in zip(ours, theirs, strict=True):
                np.testing.assert_array_equal(a, b)
    finally:
        server.shutdown()
        server.server_close()
    assert readers == ({"MainThread", "neuroxr-parts"} if (os.cpu_count() or 1) > 1 else {"MainThread"})
