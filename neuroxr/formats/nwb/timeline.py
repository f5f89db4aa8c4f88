"""The time axis of a scan in NWB: the presentation order of its trials, their start times, and the
timing arguments every per-trial series of one file shares.

NWB times must ascend, while a scan's files are usually not in presentation order: NWB row k holds
Dataset trial ``TimeAxis.rows[k]``. Real times come from ``frame_trial_ts``; without them the axis is
synthetic (trial k starts at ``k * trial_period`` s) and says so in its description.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import xarray as xr

_TIMESTAMP = re.compile(r"^\s*Timestamp\(\s*'([^']*)'")
#: The session start written when a scan has no trial times (a visible placeholder).
PLACEHOLDER_START = datetime(1970, 1, 1, tzinfo=timezone.utc)


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
    """Where each trial sits in time: NWB row k holds Dataset trial ``rows[k]`` at ``start_times[k]`` s."""

    rows: np.ndarray
    start_times: np.ndarray
    session_start: datetime
    origin: str  #: where the times come from: "frame_trial_ts", or "synthetic" (a regular axis made up)
    rate: float | None  # set when the times are regular: series then use starting_time + rate
    description: str

    @property
    def identity(self) -> bool:
        """Whether NWB rows are in the Dataset's trial order."""
        return bool(np.array_equal(self.rows, np.arange(len(self.rows))))

    def in_rows(self, values: np.ndarray) -> np.ndarray:
        """Per-trial ``values`` (Dataset order along the first axis) in NWB row order."""
        return np.asarray(values)[self.rows]


def _is_regular(times: np.ndarray) -> bool:
    """The rule of nwbinspector's check_regular_timestamps: one distinct step (to 1 ns), not zero."""
    if len(times) <= 2:
        return False
    steps = np.unique(np.round(np.diff(times), 9))
    return len(steps) == 1 and steps[0] > 0


def _rate(times: np.ndarray) -> float | None:
    return float(1.0 / (times[1] - times[0])) if _is_regular(times) else None


def trial_time_axis(
    ds: xr.Dataset, *, session_start: datetime | None = None, trial_period: float = 1.0
) -> TimeAxis:
    """The presentation order and trial times of a scan: real ones from ``frame_trial_ts``, else synthetic.

    Rows are sorted by time, ties broken by an integer ``trial_idx`` (the true order) and then the
    file number. Without parseable times, trials follow an integer ``trial_idx`` (else file order)
    and trial k starts at ``k * trial_period`` seconds.

    >>> axis = trial_time_axis(xr.Dataset(coords={"trial": [0, 1]}))
    >>> axis.origin, axis.start_times.tolist()
    ('synthetic', [0.0, 1.0])
    """
    n = ds.sizes.get("trial", 0)
    position = np.arange(n)
    trial_idx = ds.coords.get("trial_idx")
    integer_idx = trial_idx is not None and trial_idx.dims == ("trial",) and trial_idx.dtype.kind in "iu"
    order_key = np.asarray(trial_idx.values, dtype=np.int64) if integer_idx else np.zeros(n, dtype=np.int64)
    stamps_coord = ds.coords.get("frame_trial_ts")
    stamps = None
    if stamps_coord is not None and stamps_coord.dims == ("trial",) and n:
        stamps = parse_trial_timestamps(np.asarray(stamps_coord.values))
        if stamps is not None and n > 1 and stamps.min() == stamps.max():
            stamps = None  # one time for every trial says nothing: NWB forbids constant trial times
    if session_start is not None and session_start.tzinfo is None:
        session_start = session_start.replace(tzinfo=timezone.utc)
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
        times = seconds[rows].astype(np.float64)
        zone = "UTC" if session_start is None or session_start.tzinfo is None else str(session_start.tzinfo)
        description = (
            "Trial times come from meta/trials/frame_trial_ts (1 s resolution; the release records no "
            f"time zone, so the wall-clock times are written as {zone}). Rows are in presentation order; "
            "the trials table id is the trial's file number."
        )
        return TimeAxis(rows, times, start, "frame_trial_ts", _rate(times), description)
    rows = np.argsort(order_key, kind="stable") if integer_idx else position
    times = np.arange(n, dtype=np.float64) * float(trial_period)
    description = (
        f"The scan has no trial times: trial k of the presentation order "
        f"({'by trial_idx' if integer_idx else 'file order'}) starts at k x {trial_period:g} s. "
        "This is a synthetic axis; the true timing is unknown."
    )
    start = session_start if session_start is not None else PLACEHOLDER_START
    rate = 1.0 / float(trial_period) if n > 1 else None
    return TimeAxis(rows, times, start, "synthetic", rate, description)


def dataset_rows(ds: xr.Dataset, axis: TimeAxis) -> str | list[int]:
    """How Dataset trials map onto NWB rows, as the mapping document records it.

    ``"sorted_ids"`` when the Dataset lists its trials by ascending label (the reader then sorts the
    trials table ids), else the NWB row of each Dataset trial.

    >>> ds = xr.Dataset(coords={"trial": [7, 3, 5], "trial_idx": ("trial", [2, 0, 1])})
    >>> dataset_rows(ds, trial_time_axis(ds))
    [2, 0, 1]
    >>> dataset_rows(ds.sortby("trial"), trial_time_axis(ds.sortby("trial")))
    'sorted_ids'
    """
    trial = np.asarray(ds["trial"].values)
    if np.all(np.diff(trial) > 0):
        return "sorted_ids"
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
            return {"timestamps": self.axis.start_times}
        return {"timestamps": self.first_series}

    def register(self, series: Any) -> None:
        """Record that ``series`` was built with :meth:`kwargs`: the first one's timestamps are linked to."""
        if self.first_series is None and self.axis.rate is None:
            self.first_series = series
