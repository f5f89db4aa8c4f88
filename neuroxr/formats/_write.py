"""How every sink writes: to a temporary name beside its target, renamed at the end, blocks streamed.

- :func:`write_atomically` is the one way a sink publishes its output: it refuses to write over the
  data being exported, checks free space, runs the writer on a temporary path beside the target
  (dask's threaded scheduler on a pool it waits for), renames on success, removes the temporary path
  on any failure and explains the error.
- :class:`BlockStream` computes the blocks of dask arrays (chunked alike along trials) in order, a
  few ahead in background threads, for the sinks that write block by block (release layout, NWB).
- :func:`progress_bar` and :func:`dask_progress` are the progress displays.

A failed or interrupted export leaves no file that looks complete, an existing target is only
replaced when asked, and the data being exported is never the thing being deleted.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from neuroxr.errors import SourceOverwriteError, TargetExistsError

TEMP_MARKER = ".neuroxr-partial-"
#: A device with less free space than this after a failed write is taken to be full.
FULL_DEVICE_BYTES = 16 * 2**20


# ----------------------------------------------------------------------------------------------
# the target


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _parent(target: str | os.PathLike[str]) -> Path:
    parent = Path(target).parent
    return parent if str(parent) else Path(".")


def refuse_to_overwrite_source(sources: str | os.PathLike[str] | Sequence[object] | None, target: str | os.PathLike[str]) -> None:
    """Raise :class:`~neuroxr.errors.SourceOverwriteError` if ``target`` is, contains or lies inside a source path.

    ``sources`` is a path, a list of paths, or None (nothing to check); URLs are skipped.

    >>> refuse_to_overwrite_source("/data/scan", "/data/scan.nc")
    """
    if sources is None:
        return
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    target_path = Path(target).resolve()
    for source in sources:
        if not isinstance(source, (str, os.PathLike)) or "://" in str(source):
            continue
        source_path = Path(source).resolve()
        if source_path == target_path or target_path in source_path.parents or source_path in target_path.parents:
            raise SourceOverwriteError(target, source)


def check_free_space(target: str | os.PathLike[str], needed: int) -> None:
    """Raise ``OSError(ENOSPC)`` before writing when the target's device has less than ``needed`` bytes free."""
    parent = _parent(target)
    if not parent.is_dir():
        return  # atomic_target says so, naming the folder
    free = shutil.disk_usage(parent).free
    if free < needed:
        raise OSError(
            errno.ENOSPC,
            f"{target}: not enough space: the export needs about {needed / 1e9:.2f} GB, "
            f"the device holding {parent} has {free / 1e9:.2f} GB free",
        )


def explain_write_error(error: BaseException, target: str | os.PathLike[str]) -> BaseException:
    """A clearer error for a failed write: a full device is named as such; anything else gets a note."""
    with contextlib.suppress(OSError):
        if shutil.disk_usage(_parent(target)).free < FULL_DEVICE_BYTES:
            return OSError(errno.ENOSPC, f"{target}: no space left on the device while writing ({error})")
    if isinstance(error, Exception):
        error.add_note(f"while writing {target} (nothing was left at that path)")
    return error


@contextlib.contextmanager
def atomic_target(target: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it to ``target``.

    The temporary path does not exist yet: the caller creates a file or a folder there. On any
    exception (including KeyboardInterrupt) the temporary path is removed and ``target`` is left as
    it was. An existing ``target`` raises :class:`TargetExistsError` unless ``overwrite=True``.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise TargetExistsError(target)
    parent = _parent(target)
    if not parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, f"{target}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise PermissionError(errno.EACCES, f"{target}: the folder {parent} is not writable")
    temporary = parent / f".{target.name}{TEMP_MARKER}{uuid.uuid4().hex[:8]}"
    try:
        yield temporary
        if not temporary.exists():
            raise RuntimeError(f"{target}: the writer produced nothing")
        if target.exists():
            aside = parent / f".{target.name}{TEMP_MARKER}old-{uuid.uuid4().hex[:8]}"
            os.replace(target, aside)
            os.replace(temporary, target)
            _remove(aside)
        else:
            os.replace(temporary, target)
    except OSError as error:
        _remove(temporary)
        if error.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"{target}: no space left on the device while writing") from error
        raise
    except BaseException:
        _remove(temporary)
        raise


@contextlib.contextmanager
def own_thread_pool() -> Iterator[None]:
    """Run dask's threaded scheduler on a pool of our own and wait for its threads at the end.

    When a task fails, dask raises at once while other tasks may still be writing chunks; waiting
    for them before the temporary target is removed is what makes the removal final. Other
    schedulers (synchronous, processes, distributed) and a pool the user configured are left alone.
    """
    import dask
    import dask.threaded
    from dask.base import get_scheduler

    if get_scheduler() not in (None, dask.threaded.get) or dask.config.get("pool", None) is not None:
        yield
        return
    executor_class = getattr(dask.threaded, "ContextAwareThreadPoolExecutor", ThreadPoolExecutor)
    workers = dask.config.get("num_workers", None) or dask.threaded.CPU_COUNT
    pool = executor_class(workers)
    try:
        with dask.config.set(pool=pool):
            yield
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def write_atomically(
    target: str | os.PathLike[str],
    write: Callable[[Path], None],
    *,
    sources: Sequence[object],
    overwrite: bool,
    needed_bytes: int | None,
) -> Path:
    """Run ``write(temporary_path)`` beside ``target`` and rename on success; clear errors otherwise.

    ``sources`` are the files the data is read from (the target may not be, hold or lie in any of
    them); ``needed_bytes`` (when known) is checked against the free space first.
    """
    refuse_to_overwrite_source(sources, target)
    if needed_bytes is not None:
        check_free_space(target, needed_bytes)
    with atomic_target(target, overwrite=overwrite) as temporary:
        try:
            with own_thread_pool():
                write(temporary)
        except (OSError, RuntimeError) as error:
            explained = explain_write_error(error, target)
            if explained is error:
                raise
            raise explained from error
    return Path(target)


# ----------------------------------------------------------------------------------------------
# progress


class _NoBar:
    """A progress bar that shows nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def progress_bar(enabled: bool, *, total: int, desc: str, unit: str = "block") -> Any:
    """A tqdm bar over ``total`` steps (a context manager with ``update``), or one that shows nothing."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit)


@contextlib.contextmanager
def dask_progress(enabled: bool, description: str) -> Iterator[None]:
    """Show a bar of the dask tasks run inside the block (local schedulers; distributed: use the dashboard)."""
    if not enabled:
        yield
        return
    from tqdm.dask import TqdmCallback

    with TqdmCallback(desc=description):
        yield


# ----------------------------------------------------------------------------------------------
# streaming blocks


def _whole_rows(array: Any) -> Any:
    """The dask ``array`` with one chunk along every axis but the first."""
    return array.rechunk({axis: -1 for axis in range(1, array.ndim)}) if array.ndim > 1 else array


class BlockStream:
    """The blocks of dask arrays chunked alike along axis 0, computed in order, ``ahead`` of the reader.

    ``arrays`` is one dask array (each block is then one numpy array) or a sequence of them (each
    block a list, the arrays of one block computed together, so they share their inputs). Up to
    ``ahead`` blocks are computed in background threads while the caller works on the current one;
    ``prepare`` (optional) runs on each block in those threads too.

    >>> import dask.array as da
    >>> [int(block.sum()) for _, block in BlockStream(da.arange(10, chunks=4))]
    [6, 22, 17]
    """

    def __init__(self, arrays: Any, *, ahead: int = 1, prepare: Callable[[Any], Any] | None = None) -> None:
        self.single = not isinstance(arrays, (list, tuple))
        arrays = [arrays] if self.single else list(arrays)
        first = _whole_rows(arrays[0])
        self.arrays = [first] + [_whole_rows(array).rechunk({0: first.chunks[0]}) for array in arrays[1:]]
        self.bounds = np.cumsum((0, *first.chunks[0]))
        self.ahead = max(1, ahead)
        self.prepare = prepare

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(size) for size in self.arrays[0].shape)

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def compute(self, index: int) -> Any:
        """Block ``index`` (computed now, in the calling thread)."""
        import dask

        blocks = [np.asarray(block) for block in dask.compute(*(array.blocks[index] for array in self.arrays))]
        result: Any = blocks[0] if self.single else blocks
        return result if self.prepare is None else self.prepare(result)

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        """Yield ``(first row, block)`` in order; at most ``ahead + 1`` blocks are held at a time."""
        with ThreadPoolExecutor(max_workers=self.ahead, thread_name_prefix="neuroxr-blocks") as pool:
            pending = collections.deque(pool.submit(self.compute, index) for index in range(min(self.ahead, len(self))))
            following = len(pending)
            try:
                for index in range(len(self)):
                    block = pending.popleft().result()
                    if following < len(self):
                        pending.append(pool.submit(self.compute, following))
                        following += 1
                    yield int(self.bounds[index]), block
                    del block
            finally:
                for future in pending:
                    future.cancel()
