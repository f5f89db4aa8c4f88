"""The one chunk policy: how many trials go into one block (a dask chunk, a read, a written block),
and how the files neuroxr writes are chunked inside a block.

A block holds about :data:`CHUNK_BYTES` of the largest per-trial variable, so every variable of a
scan shares one block boundary along ``trial`` and a block of the largest one stays a comfortable
unit of work for one core. Blocks are a multiple of :data:`TRIAL_ALIGNMENT` trials, so that the
file chunks below tile them exactly. Every reader and writer asks this module, and user
``chunks=`` values are normalised here.

File chunks (:func:`file_chunks`) are chosen for the two reads people make of an exported scan,
measured in ``benchmarks/bench_layout.py``: one trial (a training loop) and one neuron across all
trials (tuning curves), while a whole variable still streams a block at a time. A per-trial
variable is cut into chunks of about :data:`FILE_CHUNK_BYTES`: one trial of images per chunk;
responses in chunks of 64 trials x 1,000 neurons, so that one trial reads 8 chunks and one
neuron reads one chunk per 64 trials. (32 kB chunks, 8 trials of responses, measured half this
whole-variable throughput from NetCDF, HDF5's cost per chunk; 256 kB costs a trial read about
1 ms more.) In Zarr these are the inner chunks of shards that are whole
blocks (few files, one write per block); in NetCDF they are the HDF5 chunks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from neuroxr.errors import NeuroxrError

#: Bytes of the largest per-trial variable in one block.
CHUNK_BYTES = 64 * 2**20
#: A block of more trials than this is a multiple of it (file chunks hold 1 to this many trials).
TRIAL_ALIGNMENT = 64
#: Bytes of one file chunk of a per-trial variable (more when one trial alone is larger) ...
FILE_CHUNK_BYTES = 256 * 2**10
#: ... holding at most this many neurons across.
NEURONS_PER_FILE_CHUNK = 1000


def trials_per_chunk(bytes_per_trial: int, n_trials: int, target: int = CHUNK_BYTES) -> int:
    """Trials per block so that one block of the largest variable holds about ``target`` bytes.

    A block of more than :data:`TRIAL_ALIGNMENT` trials is cut down to a multiple of it.

    >>> trials_per_chunk(8000 * 4, 7000), trials_per_chunk(1 * 144 * 256 * 4, 7000), trials_per_chunk(100, 40)
    (2048, 448, 40)
    """
    trials = int(max(1, min(n_trials, target // max(1, bytes_per_trial))))
    if TRIAL_ALIGNMENT < trials < n_trials:
        trials -= trials % TRIAL_ALIGNMENT
    return trials


def _power_of_two_at_most(value: int) -> int:
    return 1 << (max(1, value).bit_length() - 1)


def file_chunks(dims: tuple[str, ...], shape: tuple[int, ...], itemsize: int, block: int) -> tuple[int, ...]:
    """The file chunk of a ``(trial, ...)`` variable written in blocks of ``block`` trials.

    About :data:`FILE_CHUNK_BYTES` per chunk: along ``neuron`` at most
    :data:`NEURONS_PER_FILE_CHUNK` neurons (split evenly), along ``trial`` a power of two that
    divides ``block`` (one trial when a trial alone is larger), every other axis whole.

    >>> file_chunks(("trial", "neuron"), (7000, 8000), 4, 448)
    (64, 1000)
    >>> file_chunks(("trial", "channel", "y", "x"), (7000, 1, 144, 256), 4, 448)
    (1, 1, 144, 256)
    >>> file_chunks(("trial", "behavior_variable"), (7000, 3), 4, 448)
    (64, 3)
    """
    sizes = dict(zip(dims, shape))
    chunk = dict(sizes)
    other = itemsize
    for dim, size in sizes.items():
        if dim not in ("trial", "neuron"):
            other *= max(1, size)
    if "neuron" in sizes and sizes["neuron"] > 0:
        wanted = min(NEURONS_PER_FILE_CHUNK, max(1, FILE_CHUNK_BYTES // other))
        pieces = -(-sizes["neuron"] // wanted)
        chunk["neuron"] = -(-sizes["neuron"] // pieces)
        other *= chunk["neuron"]
    trials = min(TRIAL_ALIGNMENT, _power_of_two_at_most(FILE_CHUNK_BYTES // max(1, other)))
    chunk["trial"] = math.gcd(trials, max(1, block))
    return tuple(max(1, chunk[dim]) for dim in dims)


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
