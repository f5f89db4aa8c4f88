"""Shared fixtures: tiny scans written file by file with ``np.save``, as the release lays them out."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest

RELEASE_NAME = "static30001-2-3-GrayImageNet-0123456789abcdef0123456789abcdef"


def write_tiny_scan(
    root: Path,
    *,
    n_trials: int = 24,
    n_neurons: int = 13,
    image_shape: tuple[int, ...] = (1, 4, 6),
    competition: bool = False,
    behavior_withheld: bool = False,
    seed: int = 0,
) -> Path:
    """Write a small but complete scan folder with ``np.save``; return the scan folder."""
    rng = np.random.default_rng(seed)
    scan = root / RELEASE_NAME
    tiers = np.array(["train"] * (n_trials - 8) + ["validation"] * 2 + ["test"] * 6)
    if competition:
        tiers[-3:] = "final_test"
    order = rng.permutation(n_trials)
    tiers = tiers[order]
    image_ids = rng.integers(100, 9000, n_trials)
    image_ids[tiers == "test"] = 4242
    images = rng.integers(0, 256, (n_trials, *image_shape)).astype(np.float32)
    responses = rng.gamma(0.5, 1.0, (n_trials, n_neurons)).astype(np.float32)
    behavior = rng.normal(0, 1, (n_trials, 3)).astype(np.float32)
    pupil = rng.normal(0, 1, (n_trials, 2)).astype(np.float32)
    if competition:
        responses[np.isin(tiers, ["test", "final_test"])] = 0
    if behavior_withheld:
        behavior[:] = 0
        pupil[:] = 0
    for name, values in {"images": images, "responses": responses, "behavior": behavior, "pupil_center": pupil}.items():
        folder = scan / "data" / name
        folder.mkdir(parents=True)
        for trial, value in enumerate(values):
            np.save(folder / f"{trial}.npy", value)
    trial_idx = np.arange(n_trials)[np.argsort(order)]
    if competition:
        trial_idx = np.array([hashlib.md5(str(t).encode()).hexdigest() for t in trial_idx])
    trials = {
        "tiers": tiers,
        "frame_image_id": image_ids,
        "trial_idx": trial_idx,
        "frame_image_class": np.array(["imagenet"] * n_trials),
        "frame_trial_ts": np.array([f"Timestamp('2019-07-03 11:{t // 60:02d}:{t % 60:02d}')" for t in range(n_trials)], dtype="<U32"),
        "scan_idx": np.full(n_trials, 3),
    }
    neurons = {
        "unit_ids": np.sort(rng.choice(np.arange(1, 4 * n_neurons), n_neurons, replace=False)).astype(np.uint16),
        "animal_ids": np.full(n_neurons, 30001, dtype=np.uint16),
        "sessions": np.full(n_neurons, 2, dtype=np.uint8),
        "scan_idx": np.full(n_neurons, 3, dtype=np.uint8),
        "area": np.array(["V1"] * n_neurons),
        "layer": np.array(["L2/3", "L4"] * n_neurons)[:n_neurons],
        "cell_motor_coordinates": rng.uniform(-300, 300, (n_neurons, 3)).astype(np.float32),
    }
    for folder, arrays in (("trials", trials), ("neurons", neurons)):
        (scan / "meta" / folder).mkdir(parents=True)
        for stem, array in arrays.items():
            np.save(scan / "meta" / folder / f"{stem}.npy", array)
    train = tiers == "train"
    for name, values in {"images": images, "responses": responses, "behavior": behavior, "pupil_center": pupil}.items():
        for subset in ("all", "stimulus_Frame"):
            folder = scan / "meta" / "statistics" / name / subset
            folder.mkdir(parents=True)
            axis = None if name == "images" else 0
            stats = {
                "mean": values[train].mean(axis=axis),
                "std": values[train].std(axis=axis, ddof=1),
                "min": values[train].min(axis=axis),
                "max": values[train].max(axis=axis),
                "median": np.median(values[train], axis=axis),
            }
            for stat, value in stats.items():
                np.save(folder / f"{stat}.npy", np.asarray(value, dtype=np.float32))
    return scan


def zip_scan(scan: Path, target: Path, compression: int = zipfile.ZIP_STORED) -> Path:
    """Zip a scan folder the way the release does: one top-level folder, plus macOS clutter."""
    with zipfile.ZipFile(target, "w", compression) as archive:
        for file in sorted(scan.rglob("*")):
            if file.is_file():
                archive.write(file, f"{scan.name}/{file.relative_to(scan).as_posix()}")
        archive.writestr(f"__MACOSX/{scan.name}/._data", b"\x00\x05\x16\x07junk")
    return target


@pytest.fixture
def scan_folder(tmp_path: Path) -> Path:
    return write_tiny_scan(tmp_path)


@pytest.fixture
def competition_folder(tmp_path: Path) -> Path:
    return write_tiny_scan(tmp_path, competition=True, behavior_withheld=True)


@pytest.fixture(scope="session")
def cluster_client():
    """A real dask.distributed LocalCluster with two worker processes, shared by the session."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with distributed.Client(cluster, set_as_default=False) as client:  # other tests keep their scheduler
            yield client
