"""The one chunk policy: how many trials go into one block (a dask chunk, a read, a written block).

A block holds about :data:`CHUNK_BYTES` of the largest per-trial variable, so every variable of a
scan shares one block boundary along ``trial`` and a block of the largest one stays a comfortable
unit of work for one core. Every reader and writer asks this module, and user ``chunks=`` values are
normalised here.
"""

from __future__ import annotations

from collections.abc import Mapping

from neuroxr.errors import NeuroxrError

#: Bytes of the largest per-trial variable in one block.
CHUNK_BYTES = 64 * 2**20


def trials_per_chunk(bytes_per_trial: int, n_trials: int, target: int = CHUNK_BYTES) -> int:
    """Trials per block so that one block of the largest variable holds about ``target`` bytes.

    >>> trials_per_chunk(8000 * 4, 7000)
    2097
    """
    return int(max(1, min(n_trials, target // max(1, bytes_per_trial))))


def trial_chunk_request(chunks: object) -> tuple[object, int | None]:
    """A user's ``chunks=`` as xarray takes it, and the trials per chunk it asks for (if a whole number).

    ``None`` means the default blocks; an int is trials per chunk; a mapping may give ``"trial"``.

    >>> trial_chunk_request(500)
    ({'trial': 500}, 500)
    >>> trial_chunk_request(None)
    ({}, None)
    """
    if chunks is None:
        return {}, None
    if isinstance(chunks, bool):
        raise ChunksError(f"expected chunks as trials per chunk (int), a mapping or 'auto', found {chunks!r}")
    if isinstance(chunks, int):
        if chunks < 1:
            raise ChunksError(f"expected a positive number of trials per chunk, found {chunks}")
        return {"trial": chunks}, chunks
    if isinstance(chunks, Mapping):
        trial = chunks.get("trial")
        if isinstance(trial, int) and not isinstance(trial, bool):
            if trial < 1:
                raise ChunksError(f"expected a positive number of trials per chunk, found {trial}")
            return chunks, int(trial)
    return chunks, None


class ChunksError(NeuroxrError, ValueError):
    """A ``chunks=`` value that names no usable block size."""
