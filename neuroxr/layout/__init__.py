"""Step 2 of the read path: what a Sensorium scan holds, from its listing, its meta/ arrays and one header per variable.

``read_layout`` finds the scan (:mod:`~neuroxr.layout.discover`), recognises its kind from what it
holds (``data/images``: a 2022 scan; ``data/videos``: a 2023 video scan; the release name is only a
hint), and checks the tree: parts present, file numbers 0..N-1 in every data folder, meta arrays of
the right length, no pickled arrays, and in a video scan one padded length for every variable. Every
problem it finds names the file, and it looks for all of them before giving up: ``strict=False``
returns them in :attr:`ScanLayout.problems` (``neuroxr validate``), the default raises one
:class:`~neuroxr.errors.ScanError` listing them. A video scan's trial lengths (``n_frames``) are
read here too (:mod:`~neuroxr.layout.frames`). :func:`~neuroxr.layout.check.check_files` goes
further and reads the header of every trial file.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from neuroxr import datamodel
from neuroxr.errors import ScanError
from neuroxr.layout.discover import open_scan_source
from neuroxr.layout.frames import FROM_VIDEOS, FrameCounts, frame_counts
from neuroxr.npy import HEADER_PROBE, NpyHeader, check_size, declared_length, load_array, parse_header
from neuroxr.sources import NumberedFiles, Source

_SCAN_KEY = re.compile(r"(\d+-\d+-\d+)-(?:GrayImageNet|ColorImageNet|preproc|Video)")
#: At most this many problems of one kind are listed (the rest are counted).
LISTED = 5
#: Bytes read first for a header: np.save's headers take 128 (a longer one is read again, up to numpy's limit).
FIRST_PROBE = 256


@dataclass
class TrialVariable:
    """One ``data/<name>/`` folder: its numbered files and the header of file 0."""

    name: str
    files: NumberedFiles
    header: NpyHeader


@dataclass(frozen=True)
class StatisticFile:
    """One ``meta/statistics/<variable>/<subset>/<statistic>.npy``: its number in the layout's statistics files, its header."""

    number: int
    header: NpyHeader


@dataclass
class ScanLayout:
    """Everything known about a scan without reading its trial payloads (a video scan's row 0 of behaviour aside)."""

    source: Source
    n_trials: int
    variables: dict[str, TrialVariable]
    trials: dict[str, np.ndarray]  #: meta/trials/<stem>.npy
    neurons: dict[str, np.ndarray]  #: meta/neurons/<stem>.npy
    statistics: dict[str, dict[str, dict[str, StatisticFile]]]  #: variable -> subset -> statistic -> file (header only)
    release_name: str
    problems: list[str] = field(default_factory=list)  #: what is wrong, one message per problem, the file named first
    kind: datamodel.ReleaseKind = datamodel.STATIC
    n_frames: FrameCounts | None = None  #: video scans: each trial's length
    statistics_files: NumberedFiles | None = None  #: the statistics files, numbered as :attr:`statistics` says
    _read_statistics: dict[tuple[str, str, str], np.ndarray] = field(default_factory=dict, repr=False)

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

    def read_statistic(self, variable: str, subset: str, statistic: str) -> np.ndarray | None:
        """One stored statistics array, decoded whole on first use (never unpickled); None if there is no such file."""
        stored = self.statistics.get(variable, {}).get(subset, {}).get(statistic)
        if stored is None or self.statistics_files is None:
            return None
        key = (variable, subset, statistic)
        if key not in self._read_statistics:
            files = self.statistics_files
            data = files.read(stored.number, limit=stored.header.file_bytes)
            self._read_statistics[key] = load_array(data, files.label(stored.number))
        return self._read_statistics[key]

    def read_trial(self, variable: str, number: int) -> np.ndarray:
        """One trial's array of ``variable``, decoded whole (never unpickled)."""
        files = self.variables[variable].files
        return load_array(files.read(number), files.label(number))

    def read_trial_start(self, variable: str, number: int, payload_bytes: int) -> np.ndarray | None:
        """The leading values of one trial's array (at most ``payload_bytes`` of them, flat, in stored order), read
        without the rest of the file (a zip member inflated only that far, unverified); None where the file's
        header is not its variable's (read it whole to see what it holds)."""
        files, header = self.variables[variable].files, self.variables[variable].header
        buffer = bytearray(header.length + min(payload_bytes, header.payload_bytes))
        size = files.read_into([number], [[memoryview(buffer)]])[0]
        if not buffer.startswith(header.raw):
            return None
        placed = min(size, len(buffer)) - header.length
        return np.frombuffer(buffer, header.dtype, max(0, placed) // header.dtype.itemsize, header.length)


class _Problems:
    """The problems found so far, each a :class:`ScanError` naming its file."""

    def __init__(self) -> None:
        self.found: list[ScanError] = []

    def add(self, where: str, problem: str) -> None:
        self.found.append(ScanError(where, problem))

    @contextmanager
    def collected(self) -> Iterator[None]:
        """Record a :class:`ScanError` raised inside the block instead of letting it through."""
        try:
            yield
        except ScanError as error:
            self.found.append(error)

    def raise_if_any(self, where: str) -> None:
        if len(self.found) == 1:
            raise self.found[0]
        if self.found:
            listed = "\n".join(f"  {error}" for error in self.found)
            raise ScanError(where, f"{len(self.found)} problems:\n{listed}")

def _load_meta(source: Source, relatives: list[str], problems: _Problems) -> dict[str, np.ndarray]:
    """Decode small meta arrays, fetched in one batch (one round of requests for remote sources); bad ones are problems."""
    try:
        contents: list[bytes | None] = list(source.read_many(relatives))
    except ScanError:  # some file cannot be fetched: read them one by one, to name every such file
        contents = [_read_or_none(source, relative, problems) for relative in relatives]
    meta = {}
    for relative, data in zip(relatives, contents):
        if data is not None:
            with problems.collected():
                meta[relative] = load_array(data, source.label(relative))
    return meta


def _read_or_none(source: Source, relative: str, problems: _Problems) -> bytes | None:
    with problems.collected():
        return source.read(relative)
    return None


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:LISTED])
    return shown if len(items) <= LISTED else f"{shown} and {len(items) - LISTED} more"


def _trial_count(source: Source, folder: str, names: list[str], problems: _Problems) -> int | None:
    """The N of a data folder holding exactly ``0.npy`` .. ``N-1.npy``; None (and problems) when it does not."""
    if set(names) == {f"{number}.npy" for number in range(len(names))}:
        return len(names)
    numbers = []
    for name in sorted(names):
        stem = name[:-4]
        if not (name.endswith(".npy") and stem.isdigit() and stem.isascii() and (stem == "0" or stem[0] != "0")):
            problems.add(
                source.label(f"{folder}/{name}"), "unexpected file in a data folder: expected trial files named <number>.npy"
            )
            continue
        numbers.append(int(stem))
    numbers.sort()
    if numbers != list(range(len(numbers))):
        present = set(numbers)
        missing = [f"{number}.npy" for number in range(max(numbers, default=-1) + 1) if number not in present]
        verb = "is" if len(missing) == 1 else "are"
        problems.add(
            source.label(folder),
            f"trial files must be numbered 0..{len(numbers) - 1} without gaps; {_listed(missing)} {verb} missing",
        )
        return None
    return len(numbers) if len(numbers) == len(names) else None


def read_header(files: NumberedFiles, number: int = 0) -> NpyHeader:
    """The .npy header of file ``number`` of some numbered files, refused if the file does not hold what it promises.

    A header claiming more bytes than the file holds (an absurd shape) is refused here, at open.
    """
    buffer = bytearray(FIRST_PROBE)
    size = files.read_into([number], [[memoryview(buffer)]])[0]
    return _header_in(files, number, buffer, size)


def _header_in(files: NumberedFiles, number: int, buffer: bytearray, size: int) -> NpyHeader:
    """The header of file ``number`` (of ``size`` bytes) whose start ``buffer`` holds, read again if it is longer."""
    if size > len(buffer) and (declared_length(buffer) or 0) > len(buffer):  # a long header: read up to numpy's limit
        buffer = bytearray(HEADER_PROBE)
        size = files.read_into([number], [[memoryview(buffer)]])[0]
    label = files.label(number)
    header = parse_header(memoryview(buffer)[: min(size, len(buffer))], label)
    check_size(header, size if size <= len(buffer) else files.size(number), label)
    return header


def _read_headers(files: NumberedFiles, count: int, problems: _Problems) -> dict[int, NpyHeader]:
    """The headers of files 0..count-1, their starts read in one batch; a file that cannot be read is a problem."""
    buffers = [bytearray(FIRST_PROBE) for _ in range(count)]
    try:
        sizes = files.read_into(list(range(count)), [[memoryview(buffer)] for buffer in buffers])
    except ScanError:  # some file cannot be read: one by one, to name every such file
        sizes = None
    headers = {}
    for number in range(count):
        with problems.collected():
            headers[number] = read_header(files, number) if sizes is None else _header_in(files, number, buffers[number], sizes[number])
    return headers


# ------------------------------------------------------------------------------------------------
# What the tree may not hold: refused here, naming the path, instead of being left out in silence


def refuse_misplaced(source: Source, folders: dict[str, list[str]], problems: _Problems) -> None:
    """Refuse a file where a data folder belongs (``data/responses`` a file) and a folder named like a .npy file."""
    variables = {name for kind in datamodel.KINDS.values() for name in kind.data_variables}
    for name in folders.get(datamodel.DATA_DIR, []):
        if name.endswith(".npy") or name in variables:
            problems.add(source.label(f"{datamodel.DATA_DIR}/{name}"), "is a file, expected a folder of trial files")
    for folder in folders:
        if folder.endswith(".npy"):
            problems.add(source.label(folder), "is a folder, expected a .npy file")


def check_statistic(source: Source, relative: str, header: NpyHeader) -> None:
    """Refuse a statistics file that does not hold numbers (it would turn a whole statistics variable into text)."""
    if header.dtype.kind not in "biufc":
        raise ScanError(source.label(relative), f"holds {header.dtype} values, expected numbers (a statistic)")


def _check_length(source: Source, relative: str, array: np.ndarray, expected: int, what: str, problems: _Problems) -> None:
    if array.ndim == 0 or len(array) != expected:
        found = "a scalar" if array.ndim == 0 else f"length {len(array)}"
        problems.add(source.label(relative), f"expected one entry per {what} ({expected}), found {found}")


def read_layout(
    path: str | os.PathLike[str],
    storage_options: dict | None = None,
    *,
    strict: bool = True,
    n_frames_from: str | None = None,
) -> ScanLayout:
    """Read the listing, meta/ arrays and first headers of the scan at ``path`` (folder, .zip or URL).

    With ``strict`` (the default) any problem raises a :class:`~neuroxr.errors.ScanError` (one listing
    them all when there are several); ``strict=False`` returns what could be read, the problems in
    ``layout.problems``. ``n_frames_from`` names the variable a video scan's trial lengths are read
    from (default: the first of behavior, pupil_center, videos present).

    >>> layout = read_layout(neuroxr.write_scan(tmp / "scan", n_trials=40, n_neurons=10))
    >>> layout.n_trials, layout.scan_key, layout.kind.name
    (40, '30001-2-3', 'static')
    """
    return layout_of(open_scan_source(path, storage_options), strict=strict, n_frames_from=n_frames_from)


def _kind(data_folders: dict[str, list[str]], headers: dict[str, NpyHeader], release_name: str, where: str, problems: _Problems) -> datamodel.ReleaseKind:
    """The kind of scan from what it holds: its stimulus folder, else the responses' dims, else (a hint) its name."""
    hint = datamodel.kind_from_name(release_name)
    marked = [kind for kind in datamodel.KINDS.values() if kind.stimulus in data_folders]
    if len(marked) == 1:
        return marked[0]
    if len(marked) > 1:
        held = " and ".join(f"{datamodel.DATA_DIR}/{kind.stimulus}" for kind in marked)
        problems.add(where, f"holds both {held}: a scan holds the images of a 2022 scan or the videos of a 2023 scan")
        return hint if hint in marked else marked[0]
    responses = headers.get("responses")
    if responses is not None:
        fitting = [kind for kind in datamodel.KINDS.values() if len(kind.data_dims["responses"]) == len(responses.shape)]
        if len(fitting) == 1:
            return fitting[0]
    return hint or datamodel.STATIC


def _check_time_axis(kind: datamodel.ReleaseKind, variables: dict[str, TrialVariable], problems: _Problems) -> dict[str, TrialVariable]:
    """The variables of a video scan with the time axis the kind expects, all padded to one length; others are problems."""
    fitting = {}
    for name, variable in variables.items():
        dims = kind.data_dims.get(name)
        if dims is not None and len(dims) != len(variable.header.shape):
            problems.add(
                variable.files.label(0),
                f"holds {variable.header.dtype} {variable.header.shape}, expected {len(dims)} axes ({', '.join(dims)}) "
                "per trial: a video scan stores every per-trial array with its time axis last",
            )
        elif variable.header.shape:
            fitting[name] = variable
    lengths = Counter(variable.header.shape[-1] for variable in fitting.values())
    if len(lengths) <= 1:
        return fitting
    reference = fitting["responses"] if "responses" in fitting else next(iter(fitting.values()))
    padded = reference.header.shape[-1]
    for name, variable in list(fitting.items()):
        length = variable.header.shape[-1]
        if length != padded:
            shorter = "shorter than" if length < padded else "longer than"
            problems.add(
                variable.files.label(0),
                f"holds {length} frames ({variable.header.dtype} {variable.header.shape}), {shorter} the {padded} of "
                f"{reference.files.label(0)}: every per-trial array of a video scan is padded to one length",
            )
            del fitting[name]
    return fitting


def layout_of(source: Source, *, strict: bool = True, n_frames_from: str | None = None) -> ScanLayout:
    """The layout of the scan whose root is ``source`` (see :func:`read_layout`)."""
    problems = _Problems()
    root = source.label("").removesuffix("::").rstrip("/")
    folders = source.listing()
    refuse_misplaced(source, folders, problems)
    data_folders = {
        folder.split("/", 1)[1]: names
        for folder, names in folders.items()
        if folder.startswith(f"{datamodel.DATA_DIR}/") and folder.count("/") == 1
    }
    for required in (datamodel.TRIALS_DIR, datamodel.NEURONS_DIR):
        if required not in folders:
            problems.add(source.label(required), "missing: every scan has this folder of meta arrays")
    if not data_folders:
        problems.add(source.label(datamodel.DATA_DIR), "missing or empty: no per-trial data folders")

    counted = {name: _trial_count(source, f"{datamodel.DATA_DIR}/{name}", names, problems) for name, names in data_folders.items()}
    counts = {name: count for name, count in counted.items() if count is not None}
    n_trials = 0
    if counts:
        n_trials = Counter(counts.values()).most_common(1)[0][0]
        if len(set(counts.values())) > 1:
            listed = ", ".join(f"{name}: {count}" for name, count in sorted(counts.items()))
            problems.add(source.label(datamodel.DATA_DIR), f"data folders hold different numbers of trial files ({listed})")
            counts = {name: count for name, count in counts.items() if count == n_trials}
        if n_trials == 0:
            problems.add(source.label(datamodel.DATA_DIR), "the data folders hold no trial files")
            counts = {}

    headers: dict[str, NpyHeader] = {}
    files: dict[str, NumberedFiles] = {}
    for name in counts:
        files[name] = source.numbered(f"{datamodel.DATA_DIR}/{name}", n_trials, ".npy")
        with problems.collected():
            headers[name] = read_header(files[name])
    kind = _kind(data_folders, headers, source.name, root, problems)
    known = [name for name in kind.data_variables if name in headers]
    ordered = known + sorted(set(headers) - set(known))
    variables = {name: TrialVariable(name, files[name], headers[name]) for name in ordered}
    if kind.time_dim is not None:
        variables = _check_time_axis(kind, variables, problems)

    meta_files = sorted(
        f"{folder}/{name}" for folder, names in folders.items() if folder in (datamodel.TRIALS_DIR, datamodel.NEURONS_DIR)
        for name in names if name.endswith(".npy")
    )  # fmt: skip
    meta = _load_meta(source, meta_files, problems)
    statistics_files, statistics = _statistics_headers(source, folders, problems)

    def meta_arrays(directory: str) -> dict[str, np.ndarray]:
        return {relative.rsplit("/", 1)[1][:-4]: array for relative, array in meta.items() if relative.rsplit("/", 1)[0] == directory}

    trials = meta_arrays(datamodel.TRIALS_DIR)
    neurons = meta_arrays(datamodel.NEURONS_DIR)
    unit_ids = neurons.get(datamodel.NEURON_INDEX_FILE)
    unit_ids_file = f"{datamodel.NEURONS_DIR}/{datamodel.NEURON_INDEX_FILE}.npy"
    if unit_ids is None:
        if datamodel.NEURONS_DIR in folders and unit_ids_file not in meta_files:
            problems.add(source.label(unit_ids_file), "missing: the unit ids name the neurons")
    else:
        n_neurons = len(unit_ids) if unit_ids.ndim else 0
        if "responses" in variables and variables["responses"].header.shape[:1] != (n_neurons,):
            problems.add(
                source.label(datamodel.trial_file("responses", 0)),
                f"holds responses of shape {variables['responses'].header.shape}, "
                f"but meta/neurons/unit_ids.npy lists {n_neurons} neurons",
            )
        for stem, array in neurons.items():
            _check_length(source, f"{datamodel.NEURONS_DIR}/{stem}.npy", array, n_neurons, "neuron", problems)
        if unit_ids.ndim == 1 and len(np.unique(unit_ids)) != len(unit_ids):
            problems.add(source.label(unit_ids_file), "unit ids are not unique")
    if counts:
        for stem, array in trials.items():
            _check_length(source, f"{datamodel.TRIALS_DIR}/{stem}.npy", array, n_trials, "trial", problems)

    for variable, subsets in statistics.items():
        shapes = {(subset, statistic): file.header.shape for subset, stats in subsets.items() for statistic, file in stats.items()}
        common = Counter(shapes.values()).most_common(1)[0][0]
        for (subset, statistic), shape in sorted(shapes.items()):
            if shape != common:
                problems.add(
                    source.label(datamodel.statistics_file(variable, subset, statistic)),
                    f"shape {shape} differs from {common} of the other statistics of {variable}",
                )

    layout = ScanLayout(source, n_trials, variables, trials, neurons, statistics, source.name, kind=kind, statistics_files=statistics_files)
    if kind.time_dim is not None and variables and not problems.found:
        with problems.collected():
            layout.n_frames = _frame_counts(layout, n_frames_from)

    if strict:
        problems.raise_if_any(root)
    layout.problems = [str(error) for error in problems.found]
    return layout


def _statistics_headers(
    source: Source, folders: dict[str, list[str]], problems: _Problems
) -> tuple[NumberedFiles | None, dict[str, dict[str, dict[str, StatisticFile]]]]:
    """The files ``meta/statistics/<variable>/<subset>/<statistic>.npy`` and their headers (payloads left unread)."""
    relatives = sorted(
        f"{folder}/{name}" for folder, names in folders.items()
        if folder.startswith(f"{datamodel.STATISTICS_DIR}/") and folder.count("/") == 3
        for name in names if name.endswith(".npy")
    )  # fmt: skip
    statistics: dict[str, dict[str, dict[str, StatisticFile]]] = {}
    if not relatives:
        return None, statistics
    try:
        files = source.listed(relatives)
    except ScanError as error:
        problems.found.append(error)
        return None, statistics
    for number, header in _read_headers(files, len(relatives), problems).items():
        relative = relatives[number]
        parts = relative.split("/")
        with problems.collected():
            check_statistic(source, relative, header)
            statistics.setdefault(parts[2], {}).setdefault(parts[3], {})[parts[4][:-4]] = StatisticFile(number, header)
    return files, statistics


def _frame_counts(layout: ScanLayout, n_frames_from: str | None) -> FrameCounts:
    """``n_frames`` of a video scan, from the variable asked for or the first source present (withheld ones skipped)."""
    source, kind, variables, n_trials = layout.source, layout.kind, layout.variables, layout.n_trials
    if n_frames_from is not None:
        if n_frames_from not in variables:
            offered = ", ".join(name for name in kind.frame_count_sources if name in variables)
            raise ScanError(
                source.label(f"{datamodel.DATA_DIR}/{n_frames_from}"),
                f"cannot read the trial lengths from it: no such variable (expected one of {offered})",
            )
        names = [n_frames_from]
    else:
        present = [name for name in kind.frame_count_sources if name in variables]
        # the first not withheld (only its std and those of the withheld before it are read), else the first present
        names = [next((name for name in present if not stored_std_all_zero(layout, name)), None) or (present or [kind.stimulus])[0]]
    if names[0] not in variables:
        raise ScanError(source.label(f"{datamodel.DATA_DIR}/{kind.stimulus}"), "missing: the trial lengths of a video scan are read from it")
    chosen = variables[names[0]]
    return frame_counts(chosen.name, chosen.files, chosen.header, n_trials, f"{datamodel.DATA_DIR}/{chosen.name}")


def stored_std_all_zero(layout: ScanLayout, variable: str) -> bool:
    """Whether the stored std of ``variable`` (subset ``all``) is all zero: how the release marks data it zeroed.

    Reads that one file (once), no other statistics.
    """
    std = layout.read_statistic(variable, datamodel.MAIN_SUBSET, "std")
    return std is not None and std.size > 0 and bool(np.all(std == 0))


__all__ = ["FROM_VIDEOS", "FrameCounts", "ScanLayout", "StatisticFile", "TrialVariable", "layout_of", "read_header", "read_layout", "stored_std_all_zero"]
