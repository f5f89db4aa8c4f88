"""Mutated scans (folder, stored and deflated zip): every load equals an independent ``zipfile`` + ``np.load`` read, or is refused.

Each example damages one small scan (flips, overwrites, cuts or inserts bytes: anywhere in an
archive, in one file of a folder) and opens, loads and validates it. neuroxr may refuse it, but
only with a :class:`neuroxr.NeuroxrError` that names the scan; whatever it returns must equal what
``zipfile`` and ``np.load`` read from the same bytes, so a damaged scan never gives wrong values.
Seeded and bounded: the same examples every run, a few seconds in all.
"""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import write_tiny_scan, zip_scan
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import neuroxr
from neuroxr.layout import read_layout
from neuroxr.layout.check import check_files

VARIABLES = ("images", "responses", "behavior", "pupil_center")
N_TRIALS = 6
EXAMPLES = int(__import__("os").environ.get("NEUROXR_FUZZ_EXAMPLES", 50))

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),  # numpy warns when it repairs a Python 2 header
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # and Python, about escapes in a damaged header text
]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pristine")
    scan = write_tiny_scan(root, n_trials=N_TRIALS, n_neurons=5, image_shape=(1, 3, 4), tiers=np.array(["train"] * N_TRIALS))
    return {
        "folder": scan,
        "stored": zip_scan(scan, root / "stored.zip", zipfile.ZIP_STORED),
        "deflated": zip_scan(scan, root / "deflated.zip", zipfile.ZIP_DEFLATED),
    }


@st.composite
def mutations(draw: st.DrawFn, size: int) -> tuple[str, int, bytes]:
    """One damage to ``size`` bytes: (kind, position, bytes)."""
    kind = draw(st.sampled_from(["flip", "flip", "overwrite", "overwrite", "cut", "insert", "truncate"]))
    position = draw(st.integers(0, max(0, size - 1)))
    payload = draw(st.binary(min_size=1, max_size=8))
    return kind, position, payload


def mutate(data: bytes, kind: str, position: int, payload: bytes) -> bytes:
    if not data:
        return payload
    position = min(position, len(data) - 1)
    if kind == "flip":
        return data[:position] + bytes([data[position] ^ (payload[0] or 1)]) + data[position + 1 :]
    if kind == "overwrite":
        return data[:position] + payload + data[position + len(payload) :]
    if kind == "cut":
        return data[:position] + data[position + len(payload) :]
    if kind == "insert":
        return data[:position] + payload + data[position:]
    return data[:position]


def reference(path: Path, top: str | None) -> dict[str, np.ndarray | None]:
    """What ``zipfile`` (for archives) and ``np.load`` read of each variable; None where either refuses."""
    found: dict[str, np.ndarray | None] = {}
    archive = None
    if top is not None:
        try:
            archive = zipfile.ZipFile(path)
        except Exception:  # noqa: BLE001 - the reference refuses: neuroxr must too
            return dict.fromkeys(VARIABLES)
    for variable in VARIABLES:
        try:
            if archive is not None:
                arrays = [np.load(io.BytesIO(archive.read(f"{top}/data/{variable}/{k}.npy"))) for k in range(N_TRIALS)]
            else:
                arrays = [np.load(path / "data" / variable / f"{k}.npy") for k in range(N_TRIALS)]
            found[variable] = np.stack(arrays)
        except Exception:  # noqa: BLE001
            found[variable] = None
    if archive is not None:
        archive.close()
    return found


def check_load(path: Path, top: str | None) -> None:
    """Open, load and validate ``path``: equal to the reference, or refused with a neuroxr error naming it."""
    expected = reference(path, top)
    try:
        ds = neuroxr.open_scan(path, mask_withheld=False)
        loaded = {variable: ds[variable].values for variable in VARIABLES if variable in ds}
    except neuroxr.NeuroxrError as error:
        assert str(path) in str(error), f"the error does not name the scan: {error}"
        loaded = None
    if loaded is not None:
        assert set(loaded) == set(VARIABLES)
        for variable, values in loaded.items():
            assert expected[variable] is not None, f"{variable}: neuroxr read values that zipfile/np.load refuse"
            np.testing.assert_array_equal(values, expected[variable].astype(values.dtype), err_msg=variable)
            assert values.shape == expected[variable].shape
    try:
        for problem in check_files(read_layout(path)):
            assert str(path) in problem, problem
    except neuroxr.NeuroxrError as error:
        assert str(path) in str(error), str(error)


settings_ = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip


@pytest.mark.parametrize("kind", ["stored", "deflated"])
def test_a_mutated_zip_reads_as_zipfile_reads_it_or_is_refused(pristine: dict[str, Path], tmp_path: Path, kind: str) -> None:
    data = pristine[kind].read_bytes()
    top = pristine["folder"].name

    @settings_
    @given(st.lists(mutations(len(data)), min_size=1, max_size=3))
    def run(damages: list[tuple[str, int, bytes]]) -> None:
        damaged = data
        for damage in damages:
            damaged = mutate(damaged, *damage)
        path = tmp_path / f"{kind}.zip"
        path.write_bytes(damaged)
        check_load(path, top)

    run()


def test_a_mutated_scan_folder_reads_as_np_load_reads_it_or_is_refused(pristine: dict[str, Path], tmp_path: Path) -> None:
    folder = pristine["folder"]
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.npy"))
    trial_files = [f for f in files if f.startswith("data/")]

    @settings_
    @given(st.sampled_from(trial_files + files[:: max(1, len(files) // 12)]), st.data())
    def run(relative: str, data: st.DataObject) -> None:
        target = tmp_path / "scan"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(folder, target)
        original = (folder / relative).read_bytes()
        damage = data.draw(mutations(len(original)))
        (target / relative).write_bytes(mutate(original, *damage))
        check_load(target, None)

    run()
