"""dask.distributed: the same reads and analysis on a LocalCluster with process workers as with the threaded scheduler."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import xarray as xr
from conftest import eager, zip_scan

import neuroxr
from neuroxr.formats.release import to_folder
from neuroxr.metrics import oracle_correlation, select_tier
from neuroxr.synthetic import make_scan


def train_statistics(ds: xr.Dataset) -> xr.Dataset:
    train = select_tier(ds.responses, "train")
    return xr.Dataset({"mean": train.mean("trial"), "std": train.std("trial", ddof=1)})


def analysis(ds: xr.Dataset) -> xr.Dataset:
    result = train_statistics(ds)
    result["oracle_correlation"] = oracle_correlation(ds, tier="test")
    return result


def test_statistics_and_oracle_on_a_local_cluster(tmp_path: Path, cluster_client) -> None:
    archive = to_folder(make_scan(n_trials=300, n_neurons=60, seed=4), tmp_path / "scan.zip", zip=True)
    ds = neuroxr.open_scan(archive, chunks=64)
    threaded = analysis(ds).compute(scheduler="threads")
    on_cluster = cluster_client.compute(analysis(ds)).result()
    workers = cluster_client.run(lambda: __import__("os").getpid())
    assert len(set(workers.values())) == 2  # two separate worker processes
    xr.testing.assert_allclose(threaded, on_cluster, rtol=1e-12)
    # and both equal plain numpy on the eagerly loaded responses
    responses = ds.responses.values
    train = ds.tier.values == "train"
    np.testing.assert_allclose(on_cluster["mean"].values, responses[train].mean(0), rtol=1e-5)
    np.testing.assert_allclose(on_cluster["std"].values, responses[train].std(0, ddof=1), rtol=1e-4)
    assert np.nanmean(on_cluster.oracle_correlation.values) > 0.1


def test_local_cluster_with_process_workers(scan_folder: Path, tmp_path: Path, cluster_client) -> None:
    archive = zip_scan(scan_folder, tmp_path / "s.zip", zipfile.ZIP_DEFLATED)
    for path in (scan_folder, archive):
        ds = neuroxr.open_scan(path, chunks=5)
        threaded = ds.responses.mean("trial").compute(scheduler="threads")
        on_cluster = cluster_client.compute(ds.responses.mean("trial")).result()
        xr.testing.assert_allclose(threaded, on_cluster)
        np.testing.assert_array_equal(cluster_client.compute(ds.images).result().values, eager(scan_folder, "images"))


def test_a_video_scan_on_a_local_cluster(shared_dynamic: Path, tmp_path: Path, cluster_client) -> None:
    archive = zip_scan(shared_dynamic, tmp_path / "video.zip", zipfile.ZIP_DEFLATED)
    for path in (shared_dynamic, archive):
        ds = neuroxr.open_scan(path, chunks=4)
        mean_over_time = ds.videos.mean(["y", "x"])  # every video block is read, and its trial lengths checked
        on_cluster = cluster_client.compute(mean_over_time).result()
        xr.testing.assert_allclose(on_cluster, mean_over_time.compute(scheduler="threads"))
        np.testing.assert_allclose(on_cluster.values, eager(shared_dynamic, "videos").mean(axis=(1, 2)), rtol=1e-6)
        responses = cluster_client.compute(ds.responses).result()
        np.testing.assert_array_equal(np.isnan(responses.values), np.isnan(ds.responses.values))
