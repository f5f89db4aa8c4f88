"""Withheld responses as stored: zeros (NaN padding aside), and the check that they still are when read.

The 2023 release ships zeros where the test responses are withheld. Which tiers hold them is read
from the scan (the first trial of each withheld tier, see ``dataset.withheld_trials``); the other
trials of those tiers are then masked without being looked at when the scan is opened, and
:class:`StoredZerosCheck` makes sure, block by block as they are read, that they hold zeros too.
A scan that holds real responses there (a copy with the test responses put back) is then a clear
error pointing to ``mask_withheld=False``, never data silently replaced by NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neuroxr.errors import ScanError
from neuroxr.sources import NumberedFiles


def holds_only_zeros(values: np.ndarray) -> bool:
    """True when every value is 0 or NaN (padding), as the release stores withheld data.

    >>> holds_only_zeros(np.array([0.0, 0.0, np.nan])), holds_only_zeros(np.array([0.0, 1e-8]))
    (True, False)
    """
    values = np.asarray(values)
    if values.dtype.kind not in "fciub":
        return False
    return not bool(np.any(values > 0) or np.any(values < 0))


@dataclass(frozen=True)
class StoredZerosCheck:
    """Checks that the trials masked as withheld (``rows``, one bool per trial) hold only zeros and NaN."""

    rows: np.ndarray
    variable: str

    def __call__(self, trials: np.ndarray, block: np.ndarray, files: NumberedFiles) -> None:
        masked = np.flatnonzero(self.rows[trials])
        for row in masked.tolist():
            if not holds_only_zeros(block[row]):
                raise ScanError(
                    files.label(int(trials[row])),
                    f"holds non-zero {self.variable} in a trial whose {self.variable} this scan withholds "
                    "(the release stores zeros there); this copy holds real values: open it with "
                    "mask_withheld=False to read them",
                )
