"""The one test-data factory, and the fixtures every layer's tests share.

- :func:`write_tiny_scan` writes a small but complete scan folder file by file with ``np.save``, as
  the release lays it out (independent of neuroxr's own writer); :func:`zip_scan` zips a folder the
  way the release does (one top-level folder, plus ``__MACOSX/`` clutter).
- The ``synthetic`` fixture makes lazy synthetic scans with :func:`neuroxr.make_scan`; ``release``
  is a folder of such scans laid out like the downloaded release.
- ``forbidden_scheduler`` fails a test if anything inside its ``with`` block computes.
- :func:`moved_away` takes files away for a while, to show that a lazy object still reads them.
- :func:`small_filesystem` mounts a real, small (or read-only) file system, for full-disk tests.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import subprocess
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import settings

import neuroxr

# Property tests draw the same examples on every run (CI must not depend on luck); their sizes are
# bounded where they are declared.
settings.register_profile("neuroxr", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("neuroxr")

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
    responses: np.ndarray | None = None,
    image_ids: np.ndarray | None = None,
    tiers: np.ndarray | None = None,
    name: str = RELEASE_NAME,
) -> Path:
    """Write a small but complete scan folder ``root/name`` with ``np.save``; return the scan folder.

    By default: 24 trials (16 train, 2 validation, 6 test repeats of one image) in shuffled file
    order, 13 neurons, float32 data, and train-tier statistics for the subsets ``all`` and
    ``stimulus_Frame``. ``competition`` adds a final_test tier, hashes ``trial_idx`` and zeroes the
    test responses; ``behavior_withheld`` zeroes behaviour and pupil. ``responses`` (trial x neuron,
    any dtype), ``image_ids`` and ``tiers`` replace the generated ones (file order as given);
    statistics are written only when some trial is in the train tier.
    """
    rng = np.random.default_rng(seed)
    if responses is not None:
        n_trials, n_neurons = responses.shape
    scan = root / name
    order = rng.permutation(n_trials)
    if tiers is None:
        tiers = np.array(["train"] * (n_trials - 8) + ["validation"] * 2 + ["test"] * 6)
        if competition:
            tiers[-3:] = "final_test"
        tiers = tiers[order]
    tiers = np.asarray(tiers)
    generated_ids = rng.integers(100, 9000, n_trials)
    generated_ids[tiers == "test"] = 4242
    image_ids = generated_ids if image_ids is None else np.asarray(image_ids)
    images = rng.integers(0, 256, (n_trials, *image_shape)).astype(np.float32)
    generated = rng.gamma(0.5, 1.0, (n_trials, n_neurons)).astype(np.float32)
    responses = generated if responses is None else np.array(responses)
    behavior = rng.normal([5, 0, 2], [2, 0.5, 4], (n_trials, 3)).astype(np.float32)  # dilation, derivative, running
    pupil = rng.normal([120, 80], [10, 5], (n_trials, 2)).astype(np.float32)
    if competition:
        responses[np.isin(tiers, ["test", "final_test"])] = 0
    if behavior_withheld:
        behavior[:] = 0
        pupil[:] = 0
    data = {"images": images, "responses": responses, "behavior": behavior, "pupil_center": pupil}
    for variable, values in data.items():
        folder = scan / "data" / variable
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
    if not train.any():
        return scan
    for variable, values in data.items():
        for subset in ("all", "stimulus_Frame"):
            folder = scan / "meta" / "statistics" / variable / subset
            folder.mkdir(parents=True)
            axis = None if variable == "images" else 0
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


DYNAMIC_NAME = "dynamic30001-2-3-Video-0123456789abcdef0123456789abcdef"
DYNAMIC_TIERS = ("train", "oracle", "live_test_main", "live_test_bonus", "final_test_main", "final_test_bonus", "none")


def write_tiny_dynamic_scan(
    root: Path,
    *,
    n_trials: int = 21,
    n_neurons: int = 7,
    video_shape: tuple[int, int] = (4, 6),
    frames: int = 12,
    test_responses: str = "zeros",
    seed: int = 0,
    name: str = DYNAMIC_NAME,
    statistics_frames: int | None = None,
) -> Path:
    """Write a small 2023 video scan ``root/name`` with ``np.save``, as the release lays it out; return it.

    Per trial: videos (H, W, T) float32, responses (N, T) float32, behavior (2, T) float64, pupil_center
    (2, T) float32, all NaN from the trial's length on (lengths between T/2 and T, a third of them T);
    tiers: every 2023 tier, the oracle and test trials repeats of a few clips (identical videos);
    ``test_responses``: "zeros" (the release: zeros, NaN padding kept), "zeros-unpadded" (zeros to the
    end) or "values" (real responses, as in a copy with them put back). Statistics are time-resolved
    over the train trials (NaN-aware), float64 but for min and max (float32, as computed on the data);
    ``statistics_frames`` gives them another number of frames than the trials.
    """
    rng = np.random.default_rng(seed)
    scan = root / name
    tiers = np.array((["train"] * 6 + ["oracle"] * 3 + ["live_test_main"] * 2 + ["live_test_bonus"] * 2
                      + ["final_test_main"] * 2 + ["final_test_bonus"] * 2 + ["none"] * 1) * n_trials)[:n_trials]  # fmt: skip
    order = rng.permutation(n_trials)
    tiers = tiers[order]
    clips = np.arange(n_trials)  # a clip per trial, but the repeated tiers show two clips each
    for tier in DYNAMIC_TIERS[1:-1]:
        rows = np.flatnonzero(tiers == tier)
        clips[rows] = 1000 + 10 * DYNAMIC_TIERS.index(tier) + np.arange(len(rows)) % 2
    clip_lengths = {clip: int(rng.choice([frames, frames, rng.integers(frames // 2, frames)])) for clip in np.unique(clips).tolist()}
    lengths = np.array([clip_lengths[clip] for clip in clips.tolist()])
    videos = np.empty((n_trials, *video_shape, frames), np.float32)
    for clip in np.unique(clips).tolist():
        clip_rng = np.random.default_rng([seed, clip])
        videos[clips == clip] = clip_rng.integers(0, 256, (*video_shape, frames)).astype(np.float32)
    responses = rng.gamma(0.5, 1.0, (n_trials, n_neurons, frames)).astype(np.float32)
    behavior = rng.normal([[5.0], [2.0]], [[2.0], [4.0]], (n_trials, 2, frames))
    pupil = rng.normal([[120.0], [80.0]], [[10.0], [5.0]], (n_trials, 2, frames)).astype(np.float32)
    tested = np.isin(tiers, DYNAMIC_TIERS[2:6])
    if test_responses != "values":
        responses[tested] = 0
    data = {"videos": videos, "responses": responses, "behavior": behavior, "pupil_center": pupil}
    for variable, values in data.items():
        for trial, length in enumerate(lengths.tolist()):
            if variable == "responses" and test_responses == "zeros-unpadded" and tested[trial]:
                continue
            values[trial, ..., length:] = np.nan
        folder = scan / "data" / variable
        folder.mkdir(parents=True)
        for trial, value in enumerate(values):
            np.save(folder / f"{trial}.npy", value)
    trials = {"tiers": tiers, "trial_idx": np.argsort(order)}
    neurons = {
        "unit_ids": np.sort(rng.choice(np.arange(1, 4 * n_neurons), n_neurons, replace=False)).astype(np.uint16),
        "animal_ids": np.full(n_neurons, 30001, dtype=np.uint16),
        "sessions": np.full(n_neurons, 2, dtype=np.uint8),
        "scan_idx": np.full(n_neurons, 3, dtype=np.uint8),
        "cell_motor_coordinates": rng.integers(-300, 300, (n_neurons, 3)).astype(np.int64),
    }
    for folder, arrays in (("trials", trials), ("neurons", neurons)):
        (scan / "meta" / folder).mkdir(parents=True)
        for stem, array in arrays.items():
            np.save(scan / "meta" / folder / f"{stem}.npy", array)
    train = tiers == "train"
    kept = frames if statistics_frames is None else statistics_frames
    for variable, values in data.items():
        folder = scan / "meta" / "statistics" / variable / "all"
        folder.mkdir(parents=True)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # frames no train trial reaches are NaN
            stats = {
                "mean": np.nanmean(values[train], axis=0, dtype=np.float64),
                "std": np.nanstd(values[train].astype(np.float64), axis=0, ddof=1),
                "min": np.nanmin(values[train], axis=0).astype(np.float32),
                "max": np.nanmax(values[train], axis=0).astype(np.float32),
                "median": np.nanmedian(values[train].astype(np.float64), axis=0),
            }
        for stat, value in stats.items():
            value = value[..., :kept] if kept <= frames else np.concatenate([value, value[..., -1:].repeat(kept - frames, -1)], -1)
            np.save(folder / f"{stat}.npy", value)
    return scan


def zip_scan(scan: Path, target: Path, compression: int = zipfile.ZIP_STORED, numeric: bool = False) -> Path:
    """Zip a scan folder the way the release does: one top-level folder, plus macOS clutter.

    Members go in in name order (``10.npy`` before ``2.npy``), or with ``numeric`` in trial order.
    """
    order = (lambda file: (file.parent, int(file.stem) if file.stem.isdigit() else -1, file.name)) if numeric else None
    with zipfile.ZipFile(target, "w", compression) as archive:
        for file in sorted(scan.rglob("*"), key=order):
            if file.is_file():
                archive.write(file, f"{scan.name}/{file.relative_to(scan).as_posix()}")
        archive.writestr(f"__MACOSX/{scan.name}/._data", b"\x00\x05\x16\x07junk")
    return target


# ------------------------------------------------------------------------------------------------
# Files that are not a scan, for the source layer: the same members in a folder and in zips of every method

METHODS = {
    "stored": zipfile.ZIP_STORED,
    "deflated": zipfile.ZIP_DEFLATED,
    "bzip2": zipfile.ZIP_BZIP2,
    "lzma": zipfile.ZIP_LZMA,
}
TOP = "scan{1}"  # braces in a folder name must survive every label and template
N_FILES = 7


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def contents() -> dict[str, bytes]:
    """Files for source tests, not a scan: .npy files of different sizes (one empty), random bytes, a text file."""
    rng = np.random.default_rng(0)
    files = {f"data/x/{k}.npy": npy(np.arange(10 * k, dtype=np.float32)) for k in range(N_FILES)}
    files["data/x/3.npy"] = rng.bytes(3000)  # incompressible
    files["meta/a.npy"] = npy(np.array(["a", "bc"]))
    files["meta/empty.bin"] = b""
    files["notes.txt"] = b"release notes"
    return files


def write_zip(path: Path, compression: int, files: dict[str, bytes] | None = None, top: str = TOP) -> Path:
    """An archive of ``files`` (default :func:`contents`) under the folder ``top``, with macOS clutter."""
    with zipfile.ZipFile(path, "w", compression) as archive:
        for relative, data in (files or contents()).items():
            archive.writestr(f"{top}/{relative}", data)
        archive.writestr(f"__MACOSX/{top}/._notes.txt", b"junk")
        archive.writestr(f"{top}/.DS_Store", b"junk")
    return path


def write_folder(root: Path, files: dict[str, bytes] | None = None) -> Path:
    """The same files unpacked in ``root/top``, with a Finder file; returns that folder."""
    for relative, data in (files or contents()).items():
        (root / TOP / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / TOP / relative).write_bytes(data)
    (root / TOP / ".DS_Store").write_bytes(b"junk")
    return root / TOP


def eager(scan: Path, variable: str) -> np.ndarray:
    """Every trial file of a variable, read with ``np.load`` and stacked: the reference for every reader."""
    files = sorted((scan / "data" / variable).glob("*.npy"), key=lambda f: int(f.stem))
    return np.stack([np.load(f) for f in files])


def expect_scan_error(path: Path | str, *fragments: str, compute: bool = False) -> neuroxr.ScanError:
    """``neuroxr.open_scan(path)`` (and, with ``compute``, loading it) raises a ScanError whose message has every fragment."""
    with pytest.raises(neuroxr.ScanError) as caught:
        ds = neuroxr.open_scan(path)
        if compute:
            ds.load()
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    return caught.value


def fingerprint(root: Path) -> dict[str, str]:
    """A digest of every file under ``root``."""
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def moved_away(path: Path) -> Iterator[None]:
    """Take ``path`` (a file or folder) away while the block runs; put it back after."""
    aside = path.with_name(f"{path.name}.away")
    path.rename(aside)
    try:
        yield
    finally:
        aside.rename(path)


@contextlib.contextmanager
def small_filesystem(where: Path, size: str, *, read_only: bool = False) -> Iterator[Path]:
    """A real tmpfs of ``size`` (``"256k"``) mounted at the new folder ``where``; skips the test where
    mounting is not allowed (it needs root, as CI has)."""
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def assert_reads_on_access(obj: Any, path: Path) -> None:
    """``obj`` (a lazy array) still reads ``path`` when its values are asked for: nothing was loaded before."""
    with moved_away(path), pytest.raises(neuroxr.ScanError):
        np.asarray(obj)


@pytest.fixture
def scan_folder(tmp_path: Path) -> Path:
    """A tiny scan folder of its own for each test (free to damage)."""
    return write_tiny_scan(tmp_path)


@pytest.fixture
def untouched(scan_folder: Path) -> Iterator[Path]:
    """The scan folder; the test fails if anything under it changed."""
    before = fingerprint(scan_folder)
    yield scan_folder
    assert fingerprint(scan_folder) == before


@pytest.fixture
def competition_folder(tmp_path: Path) -> Path:
    """A tiny competition scan: test responses, behaviour and pupil withheld (zeros on disk)."""
    return write_tiny_scan(tmp_path, competition=True, behavior_withheld=True)


@pytest.fixture
def dynamic_folder(tmp_path: Path) -> Path:
    """A tiny 2023 video scan of its own for each test (free to damage)."""
    return write_tiny_dynamic_scan(tmp_path)


@pytest.fixture(scope="session")
def shared_dynamic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 2023 video scan shared by the whole session: read it, never change it."""
    return write_tiny_dynamic_scan(tmp_path_factory.mktemp("shared-dynamic"))


@pytest.fixture(scope="session")
def mixed_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a 2022 image scan (.zip) and a 2023 video scan (folder and deflated .zip) side by side."""
    root = tmp_path_factory.mktemp("mixed")
    neuroxr.write_scan(root / "static21067-10-18.zip", zip=True, scan="21067-10-18", n_trials=60, n_neurons=12)
    video = neuroxr.make_scan(kind="dynamic", scan="29515-10-12", n_trials=60, n_neurons=12, n_frames=60, competition=True)
    name = video.attrs["release_name"]
    neuroxr.to_folder(video, root / name)
    neuroxr.to_folder(video, root / f"{name}.zip", zip=True, compression="deflated")
    return root


@pytest.fixture(scope="session")
def shared_scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny scan folder shared by the whole session: read it, never change it."""
    return write_tiny_scan(tmp_path_factory.mktemp("shared"))


@pytest.fixture(scope="session")
def synthetic() -> Callable[..., Any]:
    """``synthetic(**make_scan_kwargs)``: a lazy synthetic scan, made once per session for each set of arguments.

    Each call returns a shallow copy: assign variables, coordinates and attrs freely, but never write
    into an array in place.
    """
    made: dict[tuple, Any] = {}

    def make(**kwargs: Any) -> Any:
        key = tuple(sorted(kwargs.items()))
        if key not in made:
            made[key] = neuroxr.make_scan(**kwargs)
        return made[key].copy()

    return make


@pytest.fixture(scope="session")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder like the downloaded release: a pre-training scan unpacked beside its .zip, and a competition .zip."""
    root = tmp_path_factory.mktemp("release")
    name = neuroxr.synthetic.release_name("21067-10-18")
    neuroxr.write_scan(root / name, scan="21067-10-18", n_trials=90, n_neurons=30)
    neuroxr.write_scan(root / f"{name}.zip", zip=True, scan="21067-10-18", n_trials=90, n_neurons=30)
    neuroxr.write_scan(root / "static26872-17-20.zip", zip=True, scan="26872-17-20", competition=True, n_trials=120, n_neurons=25)
    return root


@pytest.fixture
def forbidden_scheduler() -> Callable[[], Any]:
    """``with forbidden_scheduler():`` fails the test if anything inside computes a dask graph."""
    import dask

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("something was computed")

    return lambda: dask.config.set(scheduler=refuse)


@pytest.fixture(scope="session")
def cluster_client():
    """A real dask.distributed LocalCluster with two worker processes, shared by the session."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with distributed.Client(cluster, set_as_default=False) as client:  # other tests keep their scheduler
            yield client
