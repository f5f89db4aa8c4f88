"""Several scans as one DataTree, and neuroxr.open on every format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import neuroxr
from neuroxr.cli import main
from neuroxr.synthetic import release_name, write_scan


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder like the downloaded release: a pre-training scan unpacked beside its .zip, and a competition .zip."""
    root = tmp_path_factory.mktemp("release")
    name = release_name("21067-10-18")
    write_scan(root / name, scan="21067-10-18", n_trials=90, n_neurons=30)
    write_scan(root / f"{name}.zip", zip=True, scan="21067-10-18", n_trials=90, n_neurons=30)
    write_scan(root / "static26872-17-20.zip", zip=True, scan="26872-17-20", competition=True, n_trials=120, n_neurons=25)
    return root


def test_open_datatree_of_a_release_folder(release: Path) -> None:
    tree = neuroxr.open_datatree(release)
    assert sorted(tree.children) == ["21067-10-18", "26872-17-20"]
    assert tree.attrs["scans"] == "21067-10-18,26872-17-20"
    pre, competition = tree["21067-10-18"].to_dataset(), tree["26872-17-20"].to_dataset()
    assert (pre.sizes["trial"], pre.sizes["neuron"]) == (90, 30)
    assert (competition.sizes["trial"], competition.sizes["neuron"]) == (120, 25)
    assert competition.attrs["withheld"] == "responses"
    # the unpacked folder wins over its own .zip
    assert Path(pre.encoding["source"]).is_dir()
    xr.testing.assert_identical(pre.load(), neuroxr.open_scan(next(release.glob("*21067*.zip"))).load())


def test_xarray_open_datatree_with_the_engine(release: Path) -> None:
    ours = neuroxr.open_datatree(release)
    theirs = xr.open_datatree(release, engine="sensorium")
    assert sorted(theirs.children) == sorted(ours.children)
    for name in ours.children:
        xr.testing.assert_identical(theirs[name].to_dataset().load(), ours[name].to_dataset().load())


def test_open_datatree_from_a_list_refuses_duplicates(release: Path) -> None:
    folder = next(p for p in release.iterdir() if p.is_dir())
    with pytest.raises(neuroxr.ScanError, match="given twice"):
        neuroxr.open_datatree([folder, release / f"{folder.name}.zip"])


def test_open_dispatches_on_what_it_is_given(release: Path, tmp_path: Path) -> None:
    assert isinstance(neuroxr.open(release), xr.DataTree)
    scan_zip = release / "static26872-17-20.zip"
    ds = neuroxr.open(scan_zip)
    assert isinstance(ds, xr.Dataset) and ds.attrs["scan"] == "26872-17-20"
    nc = neuroxr.to_netcdf(ds, tmp_path / "scan.nc")
    zarr = neuroxr.to_zarr(ds, tmp_path / "scan.zarr")
    for path in (nc, zarr):
        xr.testing.assert_identical(neuroxr.open(path).load(), ds.load())
    tree_nc = neuroxr.to_netcdf(neuroxr.open(release), tmp_path / "release.nc")
    reopened = neuroxr.open(tree_nc)
    assert isinstance(reopened, xr.DataTree) and sorted(reopened.children) == ["21067-10-18", "26872-17-20"]
    with pytest.raises(neuroxr.ScanError, match="no such file"):
        neuroxr.open(tmp_path / "nothing")


def test_convert_a_folder_of_scans_to_one_netcdf(release: Path, tmp_path: Path) -> None:
    assert main(["convert", "-q", str(release), str(tmp_path / "all.nc")]) == 0
    tree = xr.open_datatree(tmp_path / "all.nc")
    assert sorted(tree.children) == ["21067-10-18", "26872-17-20"]
    original = neuroxr.open_scan(release / "static26872-17-20.zip").responses.values
    np.testing.assert_array_equal(tree["26872-17-20"].responses.values, original)


def test_convert_a_folder_of_scans_to_nwb_files(release: Path, tmp_path: Path) -> None:
    assert main(["convert", "-q", str(release), str(tmp_path / "nwb"), "--to", "nwb"]) == 0
    assert sorted(p.name for p in (tmp_path / "nwb").iterdir()) == ["21067-10-18.nwb", "26872-17-20.nwb"]
    tree = neuroxr.open(tmp_path / "nwb")
    assert isinstance(tree, xr.DataTree) and sorted(tree.children) == ["21067-10-18", "26872-17-20"]
    source = neuroxr.open_scan(release / "static26872-17-20.zip")
    xr.testing.assert_identical(tree["26872-17-20"].to_dataset().load(), source.load())
