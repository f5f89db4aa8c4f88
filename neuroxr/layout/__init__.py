"""Step 2 of the read path: what a Sensorium scan holds, from its listing, its meta/ arrays and one header per variable.

``read_layout`` finds the scan (:mod:`~neuroxr.layout.discover`), checks the tree (parts present, file
numbers 0..N-1 in every data folder, meta arrays of the right length, no pickled arrays) and every
problem it finds names the file. :func:`~neuroxr.layout.check.check_files` goes further and reads the
header of every trial file, for ``neuroxr validate``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import numpy as np

from neuroxr import datamodel
from neuroxr.errors import ScanError
from neuroxr.npy import HEADER_PROBE, NpyHeader, check_size, load_array, parse_header
from neuroxr.layout.discover import open_scan_source
from neuroxr.sources import NumberedFiles, Source

_SCAN_KEY = re.compile(r"(\d+-\d+-\d+)-(?:GrayImageNet|ColorImageNet|preproc|Video)")


@dataclass
class TrialVariable:
    """One ``data/<name>/`` folder: its numbered files and the header of file 0."""

    name: str
    files: NumberedFiles
    header: NpyHeader


@dataclass
class ScanLayout:
    """Everything known about a scan without reading its trial payloads."""

    source: Source
    n_trials: int
    variables: dict[str, TrialVariable]
    trials: dict[str, np.ndarray]  #: meta/trials/<stem>.npy
    neurons: dict[str, np.ndarray]  #: meta/neurons/<stem>.npy
    statistics: dict[str, dict[str, dict[str, np.ndarray]]]  #: variable -> subset -> statistic -> array
    release_name: str
    problems: list[str] = field(default_factory=list)

    @property
    def scan_key(self) -> str:
        """``animal-session-scan``: from the release name, else from meta/neurons."""
        match = _SCAN_KEY.search(self.release_name)
        if match:
            return match.group(1)
        parts = [self.neurons.get(stem) for stem in ("animal_ids", "sessions", "scan_idx")]
        if all(part is not None and len(part) for part in parts):
            return "-".join(str(part[0]) for part in parts)  # type: ignore[index]
        return self.release_name

    @property
    def n_neurons(self) -> int:
        return len(self.neurons[datamodel.NEURON_INDEX_FILE])


def _load_meta(source: Source, relatives: list[str]) -> dict[str, np.ndarray]:
    """Decode small meta arrays, fetched in one batch (one round of requests for remote sources)."""
    contents = source.read_many(relatives)
    return {relative: load_array(data, source.label(relative)) for relative, data in zip(relatives, contents)}


def _trial_count(source: Source, folder: str, names: list[str]) -> int:
    """Check that a data folder holds exactly ``0.npy`` .. ``N-1.npy``; return N."""
    if set(names) == {f"{number}.npy" for number in range(len(names))}:
        return len(names)
    numbers = []
    for name in names:
        stem = name[:-4]
        if not (name.endswith(".npy") and stem.isdigit() and stem.isascii() and (stem == "0" or stem[0] != "0")):
            raise ScanError(
                source.label(f"{folder}/{name}"),
                "unexpected file in a data folder: expected trial files named <number>.npy",
            )
        numbers.append(int(stem))
    numbers.sort()
    if numbers != list(range(len(numbers))):
        present = set(numbers)
        missing = next(number for number in range(len(numbers) + 1) if number not in present)
        raise ScanError(
            source.label(folder),
            f"trial files must be numbered 0..{len(numbers) - 1} without gaps; {missing}.npy is missing",
        )
    return len(numbers)


def read_header(files: NumberedFiles, number: int = 0) -> NpyHeader:
    """The .npy header of file ``number`` of some numbered files, refused if the file does not hold what it promises.

    A header claiming more bytes than the file holds (an absurd shape) is refused here, at open.
    """
    buffer = bytearray(HEADER_PROBE)
    size = files.read_into([number], [[memoryview(buffer)]])[0]
    label = files.label(number)
    header = parse_header(memoryview(buffer)[: min(size, len(buffer))], label)
    check_size(header, size if size <= len(buffer) else files.size(number), label)
    return header


# ------------------------------------------------------------------------------------------------
# What the tree may not hold: refused here, naming the path, instead of being left out in silence


def refuse_misplaced(source: Source, folders: dict[str, list[str]]) -> None:
    """Refuse a file where a data folder belongs (``data/responses`` a file) and a folder named like a .npy file."""
    for name in folders.get(datamodel.DATA_DIR, []):
        if name.endswith(".npy") or name in datamodel.DATA_VARIABLES:
            raise ScanError(source.label(f"{datamodel.DATA_DIR}/{name}"), "is a file, expected a folder of trial files")
    for folder in folders:
        if folder.endswith(".npy"):
            raise ScanError(source.label(folder), "is a folder, expected a .npy file")


def check_statistic(source: Source, relative: str, array: np.ndarray) -> None:
    """Refuse a statistics array that does not hold numbers (it would turn a whole statistics variable into text)."""
    if array.dtype.kind not in "biufc":
        raise ScanError(source.label(relative), f"holds {array.dtype} values, expected numbers (a statistic)")


def _check_length(source: Source, relative: str, array: np.ndarray, expected: int, what: str) -> None:
    if array.ndim == 0 or len(array) != expected:
        found = "a scalar" if array.ndim == 0 else f"length {len(array)}"
        raise ScanError(source.label(relative), f"expected one entry per {what} ({expected}), found {found}")


def read_layout(path: str | os.PathLike[str], storage_options: dict | None = None) -> ScanLayout:
    """Read the listing, meta/ arrays and first headers of the scan at ``path`` (folder, .zip or URL).

    >>> layout = read_layout(neuroxr.write_scan(tmp / "scan", n_trials=40, n_neurons=10))
    >>> layout.n_trials, layout.scan_key
    (40, '30001-2-3')
    """
    return layout_of(open_scan_source(path, storage_options))


def layout_of(source: Source) -> ScanLayout:
    """The layout of the scan whose root is ``source`` (see :func:`read_layout`)."""
    folders = source.listing()
    refuse_misplaced(source, folders)
    data_folders = {
        folder.split("/", 1)[1]: names
        for folder, names in folders.items()
        if folder.startswith(f"{datamodel.DATA_DIR}/") and folder.count("/") == 1
    }
    for required in (datamodel.TRIALS_DIR, datamodel.NEURONS_DIR):
        if required not in folders:
            raise ScanError(source.label(required), "missing: every scan has this folder of meta arrays")
    if not data_folders:
        raise ScanError(source.label(datamodel.DATA_DIR), "missing or empty: no per-trial data folders")

    counts = {name: _trial_count(source, f"{datamodel.DATA_DIR}/{name}", names) for name, names in data_folders.items()}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{name}: {count}" for name, count in sorted(counts.items()))
        raise ScanError(source.label(datamodel.DATA_DIR), f"data folders hold different numbers of trial files ({listed})")
    n_trials = next(iter(counts.values()))
    if n_trials == 0:
        raise ScanError(source.label(datamodel.DATA_DIR), "the data folders hold no trial files")

    ordered = [name for name in datamodel.DATA_VARIABLES if name in counts] + sorted(set(counts) - set(datamodel.DATA_VARIABLES))
    files = {name: source.numbered(f"{datamodel.DATA_DIR}/{name}", n_trials, ".npy") for name in ordered}
    variables = {name: TrialVariable(name, files[name], read_header(files[name])) for name in ordered}

    meta_files = sorted(
        f"{folder}/{name}"
        for folder, names in folders.items()
        if folder in (datamodel.TRIALS_DIR, datamodel.NEURONS_DIR) or folder.startswith(f"{datamodel.STATISTICS_DIR}/")
        for name in names
        if name.endswith(".npy")
    )
    meta = _load_meta(source, meta_files)

    def meta_arrays(directory: str) -> dict[str, np.ndarray]:
        return {relative.rsplit("/", 1)[1][:-4]: array for relative, array in meta.items() if relative.rsplit("/", 1)[0] == directory}

    trials = meta_arrays(datamodel.TRIALS_DIR)
    neurons = meta_arrays(datamodel.NEURONS_DIR)
    if datamodel.NEURON_INDEX_FILE not in neurons:
        raise ScanError(source.label(f"{datamodel.NEURONS_DIR}/{datamodel.NEURON_INDEX_FILE}.npy"), "missing: the unit ids name the neurons")
    n_neurons = len(neurons[datamodel.NEURON_INDEX_FILE])
    if "responses" in variables and variables["responses"].header.shape[:1] != (n_neurons,):
        raise ScanError(
            source.label(datamodel.trial_file("responses", 0)),
            f"holds responses of shape {variables['responses'].header.shape}, "
            f"but meta/neurons/unit_ids.npy lists {n_neurons} neurons",
        )
    for stem, array in trials.items():
        _check_length(source, f"{datamodel.TRIALS_DIR}/{stem}.npy", array, n_trials, "trial")
    for stem, array in neurons.items():
        _check_length(source, f"{datamodel.NEURONS_DIR}/{stem}.npy", array, n_neurons, "neuron")
    unit_ids = neurons[datamodel.NEURON_INDEX_FILE]
    if len(np.unique(unit_ids)) != len(unit_ids):
        raise ScanError(source.label(f"{datamodel.NEURONS_DIR}/unit_ids.npy"), "unit ids are not unique")

    statistics: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for relative, array in meta.items():
        parts = relative.split("/")  # meta/statistics/<variable>/<subset>/<statistic>.npy
        if relative.startswith(f"{datamodel.STATISTICS_DIR}/") and len(parts) == 5:
            check_statistic(source, relative, array)
            statistics.setdefault(parts[2], {}).setdefault(parts[3], {})[parts[4][:-4]] = array

    return ScanLayout(source, n_trials, variables, trials, neurons, statistics, source.name)
