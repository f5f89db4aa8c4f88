"""Trial lengths of video scans: ``n_frames``, each trial's first NaN frame, read without reading the videos.

Every per-trial array of a 2023 scan has its time axis last and is NaN-padded to one length per
scan; a trial's length is the index of its video's first NaN frame (the padded length when there is
none). Reading every video at open would read the whole scan, so the length is read from the first
variable of :attr:`~neuroxr.datamodel.ReleaseKind.frame_count_sources` present: row 0 of each trial's
behaviour (pupil dilation, as the first-placed team of the competition read it), a few kilobytes per
trial; the first T values of a C-ordered file are that row, so only they are read. The videos
themselves are the last resort (pixel (0, 0) of each frame, the community's ``video[0, 0, :]``).

The rule is an assumption about the release (behaviour is padded at the same frames as the video),
so it is checked: :class:`FrameCountCheck` compares the first NaN frame of every video block read
with ``n_frames`` and raises a :class:`~neuroxr.errors.ScanError` naming the file where they differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neuroxr.errors import ScanError
from neuroxr.npy import NpyHeader, load_array
from neuroxr.sources import NumberedFiles

#: The option of ``open_scan(n_frames_from=...)`` that reads the lengths from the videos themselves.
FROM_VIDEOS = "videos"


@dataclass(frozen=True)
class FrameCounts:
    """``n_frames`` per trial and where it was read (recorded in the coordinate's attributes)."""

    values: np.ndarray  #: int64, one per trial
    source: str  #: e.g. "row 0 of data/behavior/<trial>.npy"


def first_nan_frames(block: np.ndarray) -> np.ndarray:
    """Per trial of ``block`` (trial, ..., frame): the first frame holding a NaN anywhere, else the frame count.

    >>> block = np.ones((2, 3, 5), np.float32); block[0, 1, 3:] = np.nan
    >>> first_nan_frames(block)
    array([3, 5])
    """
    n_trials, n_frames = block.shape[0], block.shape[-1]
    if block.dtype.kind not in "fc" or block.size == 0:
        return np.full(n_trials, n_frames, dtype=np.int64)
    # max propagates NaN: one pass over the block, no boolean copy of it
    per_frame = np.max(block.reshape(n_trials, -1, n_frames), axis=1) if block.ndim > 2 else block
    missing = np.isnan(per_frame)
    return np.where(missing.any(axis=1), missing.argmax(axis=1), n_frames).astype(np.int64)


def _disagreeing(block: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """The rows of ``block`` (trial, ..., frame) whose first NaN frame may not be ``expected``: a superset, checked exactly after.

    A trial agrees when the minimum of its first ``expected`` frames is finite (NaN propagates,
    so none of them holds a NaN) and frame ``expected`` holds a NaN: a reduction over the frames
    kept, cheaper than finding every frame's first NaN. An infinite value makes the row doubtful.
    """
    n_trials, n_frames = block.shape[0], block.shape[-1]
    if block.dtype.kind != "f" or block.size == 0:
        return np.ones(n_trials, dtype=bool)
    frames = block.reshape(n_trials, -1, n_frames)
    doubtful = np.zeros(n_trials, dtype=bool)
    for row, length in enumerate(expected.tolist()):
        kept = frames[row, :, :length]
        if (length and not np.isfinite(kept.min())) or (length < n_frames and not np.isnan(frames[row, :, length]).any()):
            doubtful[row] = True
    return doubtful


def row_zero_first_nan(files: NumberedFiles, header: NpyHeader, n_trials: int) -> np.ndarray:
    """The first NaN along the last axis of row 0 (``array[0, ..., 0, :]``) of every numbered file.

    A C-ordered file holds that row right after its header, so only ``header + T`` values are read
    per file, all in one call (one batch of requests for a remote source). A file whose header
    differs from file 0's is decoded whole and must hold the same shape.
    """
    n_frames = header.shape[-1]
    if header.dtype.kind not in "fc":
        return np.full(n_trials, n_frames, dtype=np.int64)
    contiguous = not header.fortran_order or len(header.shape) == 1
    wanted = header.length + (n_frames * header.dtype.itemsize if contiguous else header.payload_bytes)
    buffers = [bytearray(wanted) for _ in range(n_trials)]
    numbers = list(range(n_trials))
    got = files.read_into(numbers, [[memoryview(buffer)] for buffer in buffers])
    found = np.empty(n_trials, dtype=np.int64)
    for number, buffer, count in zip(numbers, buffers, got):
        if count == wanted and buffer.startswith(header.raw):
            if contiguous:
                row = np.frombuffer(buffer, header.dtype, n_frames, header.length)
            else:
                array = np.frombuffer(buffer, header.dtype, offset=header.length).reshape(header.shape, order="F")
                row = array[(0,) * (array.ndim - 1)]
        else:
            row = _decoded_row(files, header, number)
        missing = np.isnan(row)
        found[number] = int(missing.argmax()) if missing.any() else n_frames
    return found


def _decoded_row(files: NumberedFiles, header: NpyHeader, number: int) -> np.ndarray:
    label = files.label(number)
    array = load_array(files.read(number), label)
    if array.shape != header.shape:
        raise ScanError(
            label,
            f"holds {array.dtype} {array.shape}, expected {header.dtype} {header.shape} like {files.label(0)}: "
            "every trial of a video scan is padded to one length",
        )
    return array[(0,) * (array.ndim - 1)]


def frame_counts(name: str, files: NumberedFiles, header: NpyHeader, n_trials: int, folder: str) -> FrameCounts:
    """``n_frames`` from variable ``name`` (its numbered ``files`` in release ``folder``, file 0's ``header``): row 0 of each file."""
    row = "pixel (0, 0)" if name == FROM_VIDEOS else "row 0"
    return FrameCounts(row_zero_first_nan(files, header, n_trials), f"{row} of {folder}/<trial>.npy")


class FrameCountCheck:
    """Checks each block of videos read against ``n_frames``: their first NaN frames must agree.

    Called by the lazy reader with the trial numbers and the stored values of a block. A trial
    whose video was found right is not checked again in this process (a scan is not changed while
    it is open); a copy sent to a worker starts afresh.
    """

    def __init__(self, n_frames: np.ndarray, source: str) -> None:
        self.n_frames = n_frames
        self.source = source
        self._verified = np.zeros(len(n_frames), dtype=bool)

    def __reduce__(self) -> tuple[object, ...]:
        return (FrameCountCheck, (self.n_frames, self.source))

    def __call__(self, trials: np.ndarray, block: np.ndarray, files: NumberedFiles) -> None:
        fresh = ~self._verified[trials]
        if not fresh.any():
            return
        trials, block = trials[fresh], block[fresh] if not fresh.all() else block
        expected = self.n_frames[trials]
        doubtful = _disagreeing(block, expected)
        found = np.array(expected)
        found[doubtful] = first_nan_frames(block[doubtful])
        wrong = np.flatnonzero(found != expected)
        if len(wrong):
            row = int(wrong[0])
            raise ScanError(
                files.label(int(trials[row])),
                f"the video's first NaN frame is {found[row]}, but n_frames is {expected[row]} as read from {self.source} "
                f"({len(wrong)} of the {len(trials)} trials read disagree); that variable is not padded like the "
                f"videos in this scan: open it with n_frames_from='{FROM_VIDEOS}' to take the lengths from the videos",
            )
        self._verified[trials] = True
