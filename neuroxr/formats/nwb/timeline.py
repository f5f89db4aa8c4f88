"""The time axis of a scan in NWB: the presentation order of its trials, their intervals, and the
timing arguments every per-trial series of one file shares.

NWB times must ascend, while a scan's files are usually not in presentation order: NWB row k holds
Dataset trial ``TimeAxis.rows[k]``, and the trials table's ids are 0..N-1 in that order. Real times
come from ``frame_trial_ts`` (1 s resolution); trials recorded in the same second are spread evenly
over it (:func:`spread_ties`), so that starts strictly increase and every start lies in its recorded
second. Without them the axis is synthetic (trial k starts at ``k * trial_period`` s) and says so.
A video scan (:func:`frame_time_axis`) puts every frame of every trial on one axis at the frame rate,
trials one after the other with a gap between them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import xarray as xr

from neuroxr.formats.nwb.streams import ArrayRows, FrameRows

_TIMESTAMP = re.compile(r"^\s*Timestamp\(\s*'([^']*)'")
#: The session start written when a scan has no trial times (a visible placeholder).
PLACEHOLDER_START = datetime(1970, 1, 1, tzinfo=timezone.utc)
#: A trial interval ends at least this long (s) before the next trial starts: intervals never touch.
INTERVAL_MARGIN = 0.001


def parse_trial_timestamps(values: np.ndarray) -> np.ndarray | None:
    """``frame_trial_ts`` strings (``"Timestamp('2019-07-03 11:02:17')"``) as naive datetime64, or None.

    Time-zone-aware values are converted to UTC; None when any value does not parse.

    >>> parse_trial_timestamps(np.array(["Timestamp('2019-07-03 11:02:17')"]))
    array(['2019-07-03T11:02:17.000000000'], dtype='datetime64[ns]')
    """
    import pandas as pd

    if values.dtype.kind == "M":
        return values.astype("datetime64[ns]")
    if values.dtype.kind not in "UO" or values.size == 0:
        return None
    text = [match.group(1) if (match := _TIMESTAMP.match(str(value))) else str(value) for value in values]
    parsed = pd.to_datetime(pd.Series(text), format="ISO8601", errors="coerce", utc=True)
    if parsed.isna().any():
        return None
    return parsed.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")


@dataclass(frozen=True)
class TimeAxis:
    """Where each trial sits in time: NWB row k holds Dataset trial ``rows[k]``, from
    ``start_times[k]`` to ``stop_times[k]`` s.

    A video scan's axis (:func:`frame_time_axis`) also has ``frame_rate``, the trials' frames
    (``n_frames``, NWB row order) and the first sample of each trial in the series (``offsets``).
    """

    rows: np.ndarray
    start_times: np.ndarray
    stop_times: np.ndarray
    session_start: datetime
    origin: str  #: where the times come from: "frame_trial_ts", "synthetic" (made up) or "frames" (video)
    rate: float | None  # set when the sample times are regular: series then use starting_time + rate
    description: str
    frame_rate: float | None = None
    n_frames: np.ndarray | None = None
    offsets: np.ndarray | None = None

    @property
    def identity(self) -> bool:
        """Whether NWB rows are in the Dataset's trial order."""
        return bool(np.array_equal(self.rows, np.arange(len(self.rows))))

    def in_rows(self, values: np.ndarray) -> np.ndarray:
        """Per-trial ``values`` (Dataset order along the first axis) in NWB row order."""
        return np.asarray(values)[self.rows]

    def samples(self, values: np.ndarray, name: str) -> np.ndarray:
        """Per-trial ``values`` (Dataset order) as a series on this axis: rows in NWB order, or (video
        scans, time last) every trial's frames ``[0:n_frames]`` end to end, time first.

        Values after a trial's end must be NaN (the release's padding, left out); else ValueError.
        """
        if self.n_frames is None:
            return self.in_rows(values)
        return FrameRows(ArrayRows(values), self.rows, self.n_frames, name).get(np.arange(self.n_samples))

    @property
    def n_samples(self) -> int:
        """Samples of a series on this axis: one per trial, or (video scans) one per frame."""
        return int(self.n_frames.sum()) if self.n_frames is not None else len(self.rows)

    def sample_times(self) -> np.ndarray:
        """The time of every sample of a series on this axis (seconds from the session start)."""
        if self.n_frames is None or self.frame_rate is None:
            return self.start_times
        out = np.empty(self.n_samples, dtype=np.float64)
        for start, offset, count in zip(self.start_times, self.offsets, self.n_frames):
            out[offset : offset + count] = start + np.arange(count) / self.frame_rate
        return out


def _is_regular(times: np.ndarray) -> bool:
    """The rule of nwbinspector's check_regular_timestamps: one distinct step (to 1 ns), not zero."""
    if len(times) <= 2:
        return False
    steps = np.unique(np.round(np.diff(times), 9))
    return len(steps) == 1 and steps[0] > 0


def _rate(times: np.ndarray) -> float | None:
    return float(1.0 / (times[1] - times[0])) if _is_regular(times) else None


def spread_ties(seconds: np.ndarray) -> np.ndarray:
    """Whole-second trial times (ascending) made strictly increasing: the j-th of m trials recorded
    in one second starts at that second + j/m, so it still lies in its recorded second.

    >>> spread_ties(np.array([0.0, 0.0, 1.0, 3.0, 3.0, 3.0, 3.0])).tolist()
    [0.0, 0.5, 1.0, 3.0, 3.25, 3.5, 3.75]
    """
    seconds = np.asarray(seconds, dtype=np.float64)
    if len(seconds) == 0:
        return seconds
    first = np.r_[True, seconds[1:] != seconds[:-1]]
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    sizes = np.diff(np.r_[starts, len(seconds)])
    rank = np.arange(len(seconds)) - starts[group]
    return seconds + rank / sizes[group]


def trial_stops(starts: np.ndarray, duration: float) -> np.ndarray:
    """Trial ends: ``duration`` after each start, cut to end :data:`INTERVAL_MARGIN` (at most half
    the gap) before the next start, so that intervals never touch or overlap.

    >>> trial_stops(np.array([0.0, 0.25, 1.0]), 0.5).tolist()
    [0.249, 0.75, 1.5]
    """
    starts = np.asarray(starts, dtype=np.float64)
    stops = starts + float(duration)
    if len(starts) > 1:
        gaps = np.diff(starts)
        stops[:-1] = np.minimum(stops[:-1], starts[1:] - np.minimum(INTERVAL_MARGIN, gaps / 2))
    return stops


def _order_key(ds: xr.Dataset) -> tuple[np.ndarray, bool]:
    n = ds.sizes.get("trial", 0)
    trial_idx = ds.coords.get("trial_idx")
    integer_idx = trial_idx is not None and trial_idx.dims == ("trial",) and trial_idx.dtype.kind in "iu"
    key = np.asarray(trial_idx.values, dtype=np.int64) if integer_idx else np.zeros(n, dtype=np.int64)
    return key, integer_idx


def _utc(start: datetime | None) -> datetime | None:
    return start.replace(tzinfo=timezone.utc) if start is not None and start.tzinfo is None else start


def trial_time_axis(
    ds: xr.Dataset,
    *,
    session_start: datetime | None = None,
    trial_period: float = 1.0,
    stimulus_duration: float = 0.5,
) -> TimeAxis:
    """The presentation order and trial intervals of a scan: real times from ``frame_trial_ts``, else synthetic.

    Rows are sorted by time, ties broken by an integer ``trial_idx`` (the true order) and then the
    file number; trials recorded in the same second are spread evenly over it. Without parseable
    times, trials follow an integer ``trial_idx`` (else file order) and trial k starts at
    ``k * trial_period`` seconds. A trial lasts ``stimulus_duration`` s, cut to end before the next.

    >>> axis = trial_time_axis(xr.Dataset(coords={"trial": [0, 1]}))
    >>> axis.origin, axis.start_times.tolist(), axis.stop_times.tolist()
    ('synthetic', [0.0, 1.0], [0.5, 1.5])
    """
    n = ds.sizes.get("trial", 0)
    position = np.arange(n)
    order_key, integer_idx = _order_key(ds)
    stamps_coord = ds.coords.get("frame_trial_ts")
    stamps = None
    if stamps_coord is not None and stamps_coord.dims == ("trial",) and n:
        stamps = parse_trial_timestamps(np.asarray(stamps_coord.values))
        if stamps is not None and n > 1 and stamps.min() == stamps.max():
            stamps = None  # one time for every trial says nothing: NWB forbids constant trial times
    session_start = _utc(session_start)
    if stamps is not None:
        if session_start is None:
            start = datetime.fromisoformat(str(stamps.min().astype("datetime64[s]"))).replace(tzinfo=timezone.utc)
        else:
            start = session_start
        naive_start = np.datetime64(start.replace(tzinfo=None), "ns")
        seconds = (stamps - naive_start) / np.timedelta64(1, "s")
        if seconds.min() < 0:
            raise ValueError(
                f"session_start_time {start.isoformat()} is after the first trial "
                f"({stamps.min()}); expected a start at or before every frame_trial_ts"
            )
        rows = np.lexsort((position, order_key, seconds))
        times = spread_ties(seconds[rows].astype(np.float64))
        zone = "UTC" if session_start is None else str(session_start.tzinfo)
        tie_rule = "by trial_idx, then file number" if integer_idx else "by file number (trial_idx is hashed)"
        description = (
            "Trial times come from meta/trials/frame_trial_ts, which has 1 s resolution; the release records "
            f"no time zone, so the wall-clock times are read as {zone}. Rows are in presentation order (trials "
            f"table ids 0..N-1; file_number is the trial's file). Trials recorded in the same second are ordered "
            f"{tie_rule} and spread evenly over that second (the j-th of m starts j/m s after it), so each "
            "start lies in its recorded second."
        )
        return TimeAxis(rows, times, trial_stops(times, stimulus_duration), start, "frame_trial_ts",
                        _rate(times), description)  # fmt: skip
    rows = np.argsort(order_key, kind="stable") if integer_idx else position
    times = np.arange(n, dtype=np.float64) * float(trial_period)
    description = (
        f"The scan has no trial times: trial k of the presentation order "
        f"({'by trial_idx' if integer_idx else 'file order'}) starts at k x {trial_period:g} s. "
        "This is a synthetic axis; the true timing is unknown."
    )
    start = session_start if session_start is not None else PLACEHOLDER_START
    rate = 1.0 / float(trial_period) if n > 1 else None
    return TimeAxis(rows, times, trial_stops(times, stimulus_duration), start, "synthetic", rate, description)


def frame_time_axis(
    ds: xr.Dataset, *, session_start: datetime | None = None, trial_gap: float = 1.0
) -> TimeAxis:
    """The time axis of a video scan: every trial's frames ``[0:n_frames]`` at ``attrs["frame_rate"]``,
    trials in presentation order (an integer ``trial_idx``, else file order) one after the other,
    ``trial_gap`` seconds between the end of one trial and the start of the next.

    >>> ds = xr.Dataset(coords={"trial": [0, 1], "trial_idx": ("trial", [1, 0]), "n_frames": ("trial", [3, 2])},
    ...                 attrs={"frame_rate": 2.0})
    >>> axis = frame_time_axis(ds)
    >>> axis.rows.tolist(), axis.start_times.tolist(), axis.sample_times().tolist()
    ([1, 0], [0.0, 2.0], [0.0, 0.5, 2.0, 2.5, 3.0])
    """
    n = ds.sizes.get("trial", 0)
    rate = float(ds.attrs.get("frame_rate", 30.0))
    order_key, integer_idx = _order_key(ds)
    rows = np.argsort(order_key, kind="stable") if integer_idx else np.arange(n)
    n_frames = np.asarray(ds["n_frames"].values, dtype=np.int64)[rows]
    durations = n_frames / rate
    starts = np.r_[0.0, np.cumsum(durations + float(trial_gap))[:-1]] if n else np.zeros(0)
    offsets = np.r_[0, np.cumsum(n_frames)[:-1]].astype(np.int64) if n else np.zeros(0, dtype=np.int64)
    description = (
        f"Video scan: every frame of a trial is one sample at {rate:g} Hz (attrs frame_rate; the release "
        "records no times), frames after a trial's end (n_frames; NaN padding in the release) are left out. "
        f"Trials follow each other in presentation order ({'by trial_idx' if integer_idx else 'file order'}; "
        f"trials table ids 0..N-1, file_number is the trial's file) with a gap of {trial_gap:g} s between "
        "the end of one and the start of the next: a synthetic axis, the true time between trials is unknown."
    )
    start = _utc(session_start) if session_start is not None else PLACEHOLDER_START
    stops = starts + durations
    return TimeAxis(rows, starts, stops, start, "frames", None, description, rate, n_frames, offsets)


def dataset_rows(ds: xr.Dataset, axis: TimeAxis) -> str | list[int]:
    """How Dataset trials map onto NWB rows, as the mapping document records it.

    ``"sorted_file_numbers"`` when the Dataset lists its trials by ascending label (the reader then
    sorts the trials table's ``file_number`` column), else the NWB row of each Dataset trial.

    >>> ds = xr.Dataset(coords={"trial": [7, 3, 5], "trial_idx": ("trial", [2, 0, 1])})
    >>> dataset_rows(ds, trial_time_axis(ds))
    [2, 0, 1]
    >>> dataset_rows(ds.sortby("trial"), trial_time_axis(ds.sortby("trial")))
    'sorted_file_numbers'
    """
    trial = np.asarray(ds["trial"].values)
    if np.all(np.diff(trial) > 0):
        return "sorted_file_numbers"
    inverse = np.empty_like(axis.rows)
    inverse[axis.rows] = np.arange(len(axis.rows))
    return inverse.tolist()


@dataclass
class Timing:
    """The timing arguments of the per-trial series of one file, from its time axis.

    Regular times give every series ``starting_time`` and ``rate``. Otherwise the first series
    registered holds the timestamps and every later one links to it, so the file stores them once:
    ask :meth:`kwargs` for a series' arguments, and :meth:`register` the series once it is built.

    >>> times = [f"Timestamp('2019-07-03 11:02:{second}')" for second in (17, 18, 20)]
    >>> ds = xr.Dataset(coords={"trial": [0, 1, 2], "frame_trial_ts": ("trial", times)})
    >>> timing = Timing(trial_time_axis(ds))
    >>> timing.kwargs()
    {'timestamps': array([0., 1., 3.])}
    >>> timing.register("the first series")
    >>> timing.kwargs()
    {'timestamps': 'the first series'}
    >>> Timing(trial_time_axis(xr.Dataset(coords={"trial": [0, 1, 2]}))).kwargs()
    {'starting_time': 0.0, 'rate': 1.0}
    """

    axis: TimeAxis
    first_series: Any = None

    def kwargs(self) -> dict[str, Any]:
        """The timing keyword arguments of the next TimeSeries."""
        if self.axis.rate is not None:
            return {"starting_time": float(self.axis.start_times[0]), "rate": self.axis.rate}
        if self.first_series is None:
            return {"timestamps": self.axis.sample_times()}
        return {"timestamps": self.first_series}

    def register(self, series: Any) -> None:
        """Record that ``series`` was built with :meth:`kwargs`: the first one's timestamps are linked to."""
        if self.first_series is None and self.axis.rate is None:
            self.first_series = series
