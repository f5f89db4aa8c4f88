"""NetCDF and Zarr export: lossless round trips (plain xarray too), DataTrees, chunking, safety."""

from __future__ import annotations

import errno
import time
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr

import neuroxr
from neuroxr.errors import TargetExistsError
from neuroxr.formats.netcdf import open_netcdf, to_netcdf
from neuroxr.formats.zarr import open_zarr, to_zarr

#: What a partial export is called beside its target (``.<target name>.neuroxr-partial-<id>``), as a user finds it.
PARTIAL = ".neuroxr-partial-"

FORMATS = {
    "netcdf": (to_netcdf, open_netcdf, ".nc", xr.open_dataset),
    "zarr": (to_zarr, open_zarr, ".zarr", xr.open_zarr),
}


def with_corner_cases(ds: xr.Dataset) -> xr.Dataset:
    """A scan with the dtype corner cases an exporter must keep, beyond what ``make_scan`` gives.

    ``make_scan`` already has uint16/uint8 neuron coords, a bool coord, hex trial_idx and NaN cells in
    competition scans; this adds a ``<U32`` coord holding shorter strings, a non-ASCII label, a NaN
    statistic and a unicode attribute.
    """
    layer = ds.layer.values.astype("<U12")
    layer[0] = "L2/3 – ü"
    stats = ds.responses_statistics.values.copy()
    stats[1, 2, 0] = np.nan
    return ds.assign_coords(
        tier=ds.tier.variable.astype("<U32"),
        layer=ds.layer.variable.copy(data=layer),
    ).assign(responses_statistics=ds.responses_statistics.variable.copy(data=stats)).assign_attrs(units_note="µm")


def small_scan(synthetic, *, n_trials: int = 40, n_neurons: int = 9, competition: bool = False, seed: int = 0) -> xr.Dataset:
    """A small synthetic scan in several dask blocks, with the corner cases."""
    ds = synthetic(n_trials=n_trials, n_neurons=n_neurons, image_shape=(1, 6, 8), competition=competition,
                   behavior_withheld=competition, seed=seed, chunk_trials=16)  # fmt: skip
    return with_corner_cases(ds)


@pytest.fixture(scope="module")
def tiny(synthetic):
    """``tiny(n_trials=40)``: the responses of a synthetic scan in blocks of 16 trials, for tests where the content does not matter."""

    def responses(n_trials: int = 40, n_neurons: int = 5) -> xr.Dataset:
        return synthetic(n_trials=n_trials, n_neurons=n_neurons, image_shape=(1, 2, 2), chunk_trials=16)[["responses"]]

    return responses


def assert_same_dtypes(actual: xr.Dataset, expected: xr.Dataset) -> None:
    assert set(actual.variables) == set(expected.variables)
    wrong = {name: (actual[name].dtype, v.dtype) for name, v in expected.variables.items() if actual[name].dtype != v.dtype}
    assert not wrong, f"dtypes differ (read, written): {wrong}"


def scan_tree(synthetic) -> xr.DataTree:
    """Two scans of different sizes as siblings under an attribute-only root."""
    return xr.DataTree.from_dict(
        {
            "/": xr.Dataset(attrs={"format": "sensorium-2022-static", "scans": "30001-2-3,30002-1-1"}),
            "/30001-2-3": small_scan(synthetic),
            "/30002-1-1": small_scan(synthetic, n_trials=25, n_neurons=5, competition=True, seed=1).assign_attrs(scan="30002-1-1"),
        }
    )


# ----------------------------------------------------------------------------------------------
# round trips

KINDS = {"normal": {}, "competition": {"competition": True}}


@pytest.fixture(scope="module")
def scans(synthetic) -> dict[str, xr.Dataset]:
    return {kind: small_scan(synthetic, **kwargs) for kind, kwargs in KINDS.items()}


@pytest.fixture(scope="module")
def written(scans: dict[str, xr.Dataset], tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """Each scan written once in each format, with every warning raised as an error."""
    import warnings

    folder = tmp_path_factory.mktemp("written")
    paths = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for fmt, (write, _, suffix, _) in FORMATS.items():
            for kind, ds in scans.items():
                paths[fmt, kind] = write(ds, folder / f"{kind}{suffix}")
    return paths


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_is_identical_with_exact_dtypes(scans, written, fmt: str, kind: str) -> None:
    back = FORMATS[fmt][1](written[fmt, kind])
    expected = scans[kind].compute()
    xr.testing.assert_identical(back, expected)
    assert_same_dtypes(back, expected)
    if kind == "competition":
        assert back.trial_idx.dtype == np.dtype("<U32")
        assert back.responses.sel(trial=back.responses_withheld).isnull().all()
        assert back.attrs["withheld"] == "responses,behavior,pupil_center"


@pytest.mark.parametrize("fmt", FORMATS)
def test_plain_xarray_reads_it_back(scans, written, fmt: str) -> None:
    """Plain xarray sees the CF form of the Dataset: a size-1 ``scan`` dimension, ``Conventions``,
    ``cell_motor_coordinates`` as an ancillary variable, NetCDF strings as Python strings; nothing else differs."""
    ds = scans["competition"].compute()
    back = FORMATS[fmt][3](written[fmt, "competition"]).load()
    assert back.attrs["Conventions"] == "CF-1.8" and "coordinates" not in back.attrs
    assert back.scan.values.tolist() == [ds.attrs["scan"]] and back.scan.dims == ("scan",)
    assert "cell_motor_coordinates" in back.data_vars
    assert back.responses.attrs["ancillary_variables"] == "cell_motor_coordinates"
    assert back.cell_motor_coordinates.attrs["units"] == "um"
    plain = back.drop_dims("scan").set_coords("cell_motor_coordinates")
    plain.attrs.pop("Conventions")
    for name in ("responses", "responses_statistics"):
        plain[name].attrs.pop("ancillary_variables")
    for name, variable in ds.variables.items():
        if variable.dtype.kind == "U" and fmt == "netcdf":  # character arrays come back as Python strings
            assert plain[name].dtype == object
            plain[name] = plain[name].astype(variable.dtype)
        else:
            assert plain[name].dtype == variable.dtype, name
    xr.testing.assert_identical(plain, ds)
    assert plain.responses_withheld.dtype == bool
    assert plain.neuron.dtype == np.uint16 and plain.session.dtype == np.uint8
    assert plain.layer.values[0] == "L2/3 – ü"


@pytest.mark.parametrize("fmt", FORMATS)
def test_datatree_of_two_scans_round_trips(synthetic, tmp_path: Path, fmt: str) -> None:
    write, read, suffix, _ = FORMATS[fmt]
    tree = scan_tree(synthetic)
    target = write(tree, tmp_path / f"scans{suffix}")
    back = read(target)
    assert isinstance(back, xr.DataTree)
    xr.testing.assert_identical(back, tree.compute())
    for path in ("/30001-2-3", "/30002-1-1"):
        assert_same_dtypes(back[path].to_dataset(), tree[path].to_dataset())
    assert back["30002-1-1"].sizes["trial"] == 25
    plain = xr.open_datatree(target, engine="netcdf4" if fmt == "netcdf" else "zarr").load()
    assert plain.attrs["Conventions"] == "CF-1.8" and plain.children.keys() == tree.children.keys()
    for name, child in plain.children.items():
        assert child.scan.values.tolist() == [name]  # each group names its scan
        np.testing.assert_array_equal(child.responses.values, tree[name].responses.values)


def test_netcdf4_library_sees_variables_dimensions_attributes_and_chunks(written) -> None:
    import netCDF4

    with netCDF4.Dataset(written["netcdf", "normal"]) as nc:
        assert nc.data_model == "NETCDF4"
        assert {"images", "responses", "behavior", "pupil_center", "responses_statistics", "tier"} <= set(nc.variables)
        assert nc.dimensions["trial"].size == 40 and nc.dimensions["neuron"].size == 9
        assert nc.variables["images"].dimensions == ("trial", "channel", "y", "x")
        assert nc.variables["images"].chunking() == [16, 1, 6, 8]
        assert nc.variables["responses"].chunking() == [16, 9]
        assert nc.variables["neuron"].dtype == np.uint16
        assert nc.variables["tier"].dtype == np.dtype("S1") and nc.variables["tier"].getncattr("_Encoding") == "utf-8"
        assert nc.variables["tier"].dimensions[0] == "trial"  # a character array: (trial, string length)
        assert nc.getncattr("Conventions") == "CF-1.8" and "coordinates" not in nc.ncattrs()
        assert nc.variables["cell_motor_coordinates"].getncattr("units") == "um"
        assert "cell_motor_coordinates" not in nc.variables["responses"].getncattr("coordinates").split()
        assert {"tier", "area", "image_id"} <= set(nc.variables["responses"].getncattr("coordinates").split())
        assert nc.getncattr("scan") == "30001-2-3" and nc.getncattr("withheld") == ""
        assert nc.variables["responses"].getncattr("sensorium_file") == "data/responses"
        assert nc.variables["responses_withheld"].getncattr("dtype") == "bool"
        assert "tier=<U32" in nc.enumtypes["neuroxr_string_dtypes"].enum_dict


def test_open_gives_lazy_data_in_whole_blocks_and_labels_in_memory(written) -> None:
    """One dask task per block of trials: Zarr's shards (the blocks it was written in), NetCDF's the
    chunk policy's (here: all 40 trials), never one task per small file chunk."""
    for fmt, (_, read, _, _) in FORMATS.items():
        back = read(written[fmt, "normal"])
        assert isinstance(back.images.data, da.Array)
        blocks = (16, 16, 8) if fmt == "zarr" else (40,)
        assert back.images.chunks[0] == blocks and back.chunks["trial"] == blocks
        assert back.responses.data.numblocks == (len(blocks), 1)
        assert isinstance(back.tier.data, np.ndarray) and isinstance(back.responses_statistics.data, np.ndarray)


def test_file_chunks_serve_one_trial_and_one_neuron(synthetic, tmp_path: Path) -> None:
    """Small file chunks inside whole-block shards (Zarr) or as HDF5 chunks (NetCDF), as the chunk policy says."""
    import json

    import netCDF4

    ds = synthetic(n_trials=256, n_neurons=2100, image_shape=(1, 36, 64), chunk_trials=128)
    store = to_zarr(ds, tmp_path / "scan.zarr")
    # about 256 kB per file chunk: neurons split evenly (at most 1,000), then a power of two of trials
    expected = {"responses": ([128, 2100], [64, 700]), "images": ([128, 1, 36, 64], [16, 1, 36, 64])}
    for name, (shard, inner) in expected.items():
        meta = json.loads((store / name / "zarr.json").read_text())
        assert meta["chunk_grid"]["configuration"]["chunk_shape"] == shard
        (codec,) = [c for c in meta["codecs"] if c["name"] == "sharding_indexed"]
        assert codec["configuration"]["chunk_shape"] == inner
        assert len(list((store / name / "c").rglob("*"))) - len(list((store / name / "c").rglob("*/"))) <= 2 * 2  # 2 shards
    with netCDF4.Dataset(to_netcdf(ds, tmp_path / "scan.nc")) as file:
        assert file["responses"].chunking() == [64, 700] and file["images"].chunking() == [16, 1, 36, 64]
    for back in (open_zarr(store), open_netcdf(tmp_path / "scan.nc")):
        np.testing.assert_array_equal(back.responses[:, 777].values, ds.responses[:, 777].values)
        np.testing.assert_array_equal(back.images[101].values, ds.images[101].values)


def test_zarr_chunks_match_dask_chunks_and_no_warning_escapes(written) -> None:
    import json
    import warnings

    path = written["zarr", "normal"]  # written with warnings as errors
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        open_zarr(path)
    meta = json.loads((path / "images" / "zarr.json").read_text())
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [16, 1, 6, 8]
    tier = json.loads((path / "tier" / "zarr.json").read_text())
    assert tier["data_type"] == {"name": "fixed_length_utf32", "configuration": {"length_bytes": 128}}
    assert (path / "zarr.json").is_file() and "consolidated_metadata" in (path / "zarr.json").read_text()


def test_irregular_chunks_are_regularised(tiny, tmp_path: Path) -> None:
    ds = tiny().chunk({"trial": (5, 15, 15, 5)})
    for fmt, (write, read, suffix, _) in FORMATS.items():
        back = read(write(ds, tmp_path / f"scan{suffix}"))
        if fmt == "zarr":  # the shards are the regularised blocks it was written in
            assert back.responses.chunks[0] == (15, 15, 10)
        xr.testing.assert_identical(back, ds.compute())


def test_each_block_is_computed_once(tmp_path: Path) -> None:
    """The writer streams the dask graph: no block is loaded to prepare or check the Dataset."""
    calls: list[int] = []

    def block(x: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        calls.append(block_info[None]["chunk-location"][0] if block_info else -1)
        return x.astype(np.float32)

    values = da.arange(40 * 3, chunks=(16 * 3,)).reshape(40, 3).rechunk((16, 3)).map_blocks(block, dtype=np.float32)
    ds = xr.Dataset({"behavior": (("trial", "behavior_variable"), values)}, coords={"trial": np.arange(40)})
    for write, _, suffix, _ in FORMATS.values():
        calls.clear()
        write(ds, tmp_path / f"b{suffix}")
        assert sorted(calls) == [0, 1, 2]


def test_stale_encodings_from_a_read_file_are_dropped(tiny, tmp_path: Path) -> None:
    first = to_netcdf(tiny(), tmp_path / "first.nc")
    subset = open_netcdf(first).isel(trial=slice(0, 10), neuron=slice(0, 4))
    assert subset.responses.encoding["chunksizes"][0] == 16  # larger than the new trial dimension
    for write, read, suffix, _ in FORMATS.values():
        back = read(write(subset, tmp_path / f"second{suffix}"))
        xr.testing.assert_identical(back, subset.compute())


# ----------------------------------------------------------------------------------------------
# compression and attributes


def test_compression_option(tiny, tmp_path: Path) -> None:
    import json

    ds = tiny(64, n_neurons=200)  # enough data for compression to show beside the file's own metadata
    plain = to_netcdf(ds, tmp_path / "none.nc", compression=None)
    zlib = to_netcdf(ds, tmp_path / "zlib.nc", compression="zlib:4")
    assert zlib.stat().st_size < plain.stat().st_size
    xr.testing.assert_identical(open_netcdf(zlib), ds.compute())
    store = to_zarr(ds, tmp_path / "zstd.zarr", compression="zstd:3")
    codecs = json.loads((store / "responses" / "zarr.json").read_text())["codecs"]
    assert {"name": "zstd", "configuration": {"level": 3, "checksum": False}} in codecs
    with pytest.raises(ValueError, match="expected one of none, zlib, zstd"):
        to_netcdf(ds, tmp_path / "bad.nc", compression="lzma")
    assert not (tmp_path / "bad.nc").exists()


def test_attributes_are_normalised_to_storable_values(tiny, tmp_path: Path) -> None:
    ds = tiny().assign_attrs(flag=True, nested={"a": [1, 2]}, nothing=None, pair=(1, 2), names=["a", "b"])
    ds = ds.assign_attrs(numpy_flag=np.bool_(False), numbers=np.array([1.5, 2.5]), mixed=["a", 1])
    back = open_netcdf(to_netcdf(ds, tmp_path / "scan.nc"))
    assert back.attrs["flag"] == 1 and back.attrs["nested"] == '{"a": [1, 2]}'
    assert "nothing" not in back.attrs and list(back.attrs["pair"]) == [1, 2] and list(back.attrs["names"]) == ["a", "b"]
    assert back.attrs["numpy_flag"] == 0 and list(back.attrs["numbers"]) == [1.5, 2.5] and back.attrs["mixed"] == '["a", 1]'
    assert ds.attrs["flag"] is True  # the source is not modified


def test_multiindex_is_refused_with_advice(tiny, tmp_path: Path) -> None:
    ds = tiny().assign_coords(image_id=("trial", np.arange(40))).set_index(trial=["image_id", "tier"])
    with pytest.raises(ValueError, match=r"reset_index\('trial'\)"):
        to_netcdf(ds, tmp_path / "scan.nc")


def test_progress_bar(tiny, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    to_zarr(tiny(), tmp_path / "scan.zarr", progress=True)
    assert "100%" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# safety


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if PARTIAL in p.name)


@pytest.mark.parametrize("fmt", FORMATS)
def test_existing_target_is_refused_unless_overwrite(tiny, tmp_path: Path, fmt: str) -> None:
    write, read, suffix, _ = FORMATS[fmt]
    target = write(tiny(20), tmp_path / f"scan{suffix}")
    with pytest.raises(TargetExistsError, match="overwrite=True"):
        write(tiny(30), target)
    assert read(target).sizes["trial"] == 20
    write(tiny(30), target, overwrite=True)
    assert read(target).sizes["trial"] == 30
    assert _leftovers(tmp_path) == []


def test_refuses_to_write_over_its_own_source(tiny, tmp_path: Path) -> None:
    path = to_netcdf(tiny(), tmp_path / "scan.nc")
    opened = open_netcdf(path)
    with pytest.raises(ValueError, match="refusing to write over the data being exported"):
        to_netcdf(opened, path, overwrite=True)
    xr.testing.assert_identical(open_netcdf(path), tiny().compute())


@pytest.mark.parametrize("fmt", FORMATS)
def test_failure_in_a_dask_task_leaves_nothing(tiny, tmp_path: Path, fmt: str) -> None:
    write, _, suffix, _ = FORMATS[fmt]
    ds = tiny()

    def fail_first_block_while_others_write(x: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        if block_info and block_info[None]["chunk-location"][0] == 0:
            raise RuntimeError("disk read failed in block 0")
        time.sleep(0.2)  # still writing when block 0 fails: the cleanup must wait for them
        return x

    failing = ds.responses.data.map_blocks(fail_first_block_while_others_write, dtype=np.float32)
    broken = ds.assign(responses=ds.responses.copy(data=failing))
    with pytest.raises(RuntimeError, match="block 0"):
        write(broken, tmp_path / f"scan{suffix}")
    assert not (tmp_path / f"scan{suffix}").exists()
    assert _leftovers(tmp_path) == []


def test_full_disk_is_reported_before_writing(tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.disk_usage", lambda path: type("Usage", (), {"free": 1000})())
    with pytest.raises(OSError, match="not enough space") as caught:
        to_netcdf(tiny(), tmp_path / "scan.nc")
    assert caught.value.errno == errno.ENOSPC and "scan.nc" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_write_error_on_a_full_device_is_named(tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(x: np.ndarray) -> np.ndarray:
        raise RuntimeError("NetCDF: HDF error")

    ds = tiny()
    broken = ds.assign(responses=ds.responses.copy(data=ds.responses.data.map_blocks(fail, dtype=np.float32)))
    target = tmp_path / "scan.nc"
    with pytest.raises(RuntimeError, match="HDF error") as caught:
        to_netcdf(broken, target, compression="zlib")  # compressed: no free-space check before writing
    assert not isinstance(caught.value, OSError)
    assert any("scan.nc" in note for note in caught.value.__notes__)
    monkeypatch.setattr("shutil.disk_usage", lambda path: type("Usage", (), {"free": 0})())
    with pytest.raises(OSError, match="no space left") as full:
        to_netcdf(broken, target, compression="zlib")
    assert full.value.errno == errno.ENOSPC and "scan.nc" in str(full.value)
    assert list(tmp_path.iterdir()) == []


def test_missing_target_folder_is_a_clear_error(tiny, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        to_zarr(tiny(), tmp_path / "absent" / "scan.zarr")


# ----------------------------------------------------------------------------------------------
# 2023 video scans, alone and beside an image scan


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_video_scan_round_trips_identical(shared_dynamic: Path, tmp_path: Path, fmt: str) -> None:
    write, read, suffix, plain = FORMATS[fmt]
    for mask in (True, False):
        ds = neuroxr.open_scan(shared_dynamic, mask_withheld=mask, chunks=8)
        path = write(ds, tmp_path / f"scan-{mask}{suffix}")
        back = read(path)
        expected = ds.load()
        xr.testing.assert_identical(back, expected)
        assert_same_dtypes(back, expected)
        blocks = (8, 8, 5) if fmt == "zarr" else (21,)  # Zarr: its shards; NetCDF: the chunk policy's blocks
        assert back.videos.chunks == (blocks, (4,), (6,), (12,))  # whole trials per chunk: every frame of a trial together
        assert back.attrs["frame_rate"] == 30.0 and back.time.attrs["units"] == "s"
        with plain(path) as opened:  # plain xarray reads it as well
            np.testing.assert_array_equal(opened.n_frames.values, ds.n_frames.values)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_tree_of_image_and_video_scans_round_trips(mixed_release: Path, tmp_path: Path, fmt: str) -> None:
    write, read, suffix, _ = FORMATS[fmt]
    tree = neuroxr.open_datatree(mixed_release)
    back = read(write(tree, tmp_path / f"mixed{suffix}"))
    assert isinstance(back, xr.DataTree) and back.attrs == tree.attrs
    for name in tree.children:
        xr.testing.assert_identical(back[name].to_dataset().load(), tree[name].to_dataset().load())
    assert back["29515-10-12"].to_dataset().videos.dims == ("trial", "y", "x", "frame")


# ----------------------------------------------------------------------------------------------
# CF conventions and layouts


@pytest.mark.parametrize("fmt", FORMATS)
def test_files_are_cf_conventional_for_cf_xarray(scans, written, fmt: str) -> None:
    cf_xarray = pytest.importorskip("cf_xarray")
    plain = FORMATS[fmt][3](written[fmt, "normal"])
    assert plain.attrs["Conventions"] == "CF-1.8" and "coordinates" not in plain.attrs
    assert plain.cf.axes == {"X": ["x"], "Y": ["y"]}  # declared, so cf-xarray guesses nothing
    assert "image_id" not in sum(plain.cf.axes.values(), [])
    assert plain.cf["X"].name == "x"
    for name, variable in plain.variables.items():
        assert "long_name" in variable.attrs, name
    assert plain.cell_motor_coordinates.attrs["units"] == "um"
    assert plain.responses.attrs["units"] == "1" and plain.images.attrs["units"] == "1"
    assert plain.responses_statistics.attrs["units"] == "1"
    assert cf_xarray.__version__  # the accessor came from the installed package


def test_the_dataset_itself_carries_long_names_and_units(scans) -> None:
    ds = scans["normal"]
    assert ds.cell_motor_coordinates.attrs["units"] == "um" and "long_name" in ds.tier.attrs
    assert ds.trial_session.attrs["long_name"] == "recording session (per trial)"
    assert ds.responses.attrs["long_name"].startswith("deconvolved")


def test_open_mfdataset_combines_two_scans_along_scan_or_refuses(synthetic, tmp_path: Path) -> None:
    """Two scans whose unit ids overlap: combined along ``scan``, each keeping its own neurons."""
    first = synthetic(n_trials=30, n_neurons=8, seed=0, scan="30001-2-3")
    second = synthetic(n_trials=20, n_neurons=8, seed=1, scan="30002-4-5")
    assert set(first.neuron.values) & set(second.neuron.values)  # unrelated neurons, shared ids
    paths = [to_netcdf(first, tmp_path / "a.nc"), to_netcdf(second, tmp_path / "b.nc")]
    with xr.set_options(use_new_combine_kwarg_defaults=False):
        combined = xr.open_mfdataset(paths, combine="by_coords", coords="different", data_vars="all", join="outer", compat="no_conflicts")
    assert combined.scan.values.tolist() == ["30001-2-3", "30002-4-5"]
    for ds in (first, second):
        one = combined.responses.sel(scan=ds.attrs["scan"]).sel(neuron=ds.neuron, trial=ds.trial)
        np.testing.assert_array_equal(one.values, ds.responses.values)
    with pytest.raises(ValueError, match="cannot align|exact"):
        xr.open_mfdataset(paths, combine="by_coords", join="exact", coords="different", data_vars="all", compat="no_conflicts")


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_blocks_layout_writes_one_chunk_per_block(tiny, tmp_path: Path, fmt: str) -> None:
    write, read, suffix, plain_read = FORMATS[fmt]
    ds = tiny(n_neurons=2100)
    for layout, chunks in (("access", (16, 700)), ("blocks", (16, 2100))):
        plain = plain_read(write(ds, tmp_path / f"{layout}{suffix}", layout=layout))
        stored = plain.responses.encoding.get("chunksizes") or plain.responses.encoding["chunks"]
        assert tuple(stored) == chunks, layout
        shards = plain.responses.encoding.get("shards")
        assert (tuple(shards) if shards else None) == ((16, 2100) if layout == "access" and fmt == "zarr" else None)
    path = tmp_path / f"blocks{suffix}"
    xr.testing.assert_identical(read(path), ds.compute())
    with pytest.raises(ValueError, match="layout: expected one of 'access', 'blocks'"):
        write(ds, tmp_path / f"other{suffix}", layout="rows")
