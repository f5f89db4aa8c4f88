"""How every sink publishes its output: beside its target, exclusively, atomically, durably; blocks streamed.

- :func:`write_atomically` is the one way a sink publishes its output. It refuses to write over the
  data being exported, takes the target's lock (so that two exports to one target never run at
  once), cleans what killed exports left there, checks free space, runs the writer on a temporary
  name beside the target, flushes it to the disk and puts it in place in one rename. An existing
  target is replaced only when asked, and only if it is a previous output of the same
  :class:`OutputKind`; a new target is created only if nothing appeared at its path meanwhile.
- :func:`output_name` and :func:`output_path` check every name an output gets from the data.
- :class:`BlockStream` computes the blocks of dask arrays (chunked alike along trials) in order, a
  few ahead in background threads, for the sinks that write block by block (release layout, NWB).
- :class:`Progress` is an export's one progress display; :func:`dask_progress` shows dask's tasks.

The files an export keeps beside its target, all hidden and named after it (``.NAME.neuroxr-...``,
which discovery ignores): ``-partial-XXXXXXXX`` while writing, ``-lock`` while the export runs, and
(only where the system cannot swap two folders in one rename) ``-previous-XXXXXXXX`` for the
moment between moving a previous folder aside and renaming the new one into place. A killed export
leaves them behind; the next export to the same target removes the partial ones and puts a
previous output back where the new one never arrived.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import re
import shutil
import sys
import threading
import uuid
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neuroxr.errors import DatasetError, SourceOverwriteError, TargetBusyError, TargetExistsError
from neuroxr.sources.base import EXPORT_MARKER

#: A device with less free space than this after a failed write is taken to be full.
FULL_DEVICE_BYTES = 16 * 2**20
PARTIAL = f"{EXPORT_MARKER}partial-"
PREVIOUS = f"{EXPORT_MARKER}previous-"
LOCK = f"{EXPORT_MARKER}lock"


# ----------------------------------------------------------------------------------------------
# names an output gets from the data

_OUTPUT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=@,-]{0,199}")


def output_name(name: object, what: str) -> str:
    """``name`` as it is, if it can name one file or folder inside an export's target.

    Names come from the data model (variable, coordinate and scan names, statistics labels); one
    that could reach outside the target (``..``, ``/``, an absolute path), hide itself (a leading
    ``.``) or read as an option (a leading ``-``) raises :class:`~neuroxr.errors.DatasetError`.

    >>> output_name("stimulus_Frame", "statistics subset")
    'stimulus_Frame'
    >>> output_name("../../etc", "statistics subset")
    Traceback (most recent call last):
    ...
    neuroxr.errors.DatasetError: statistics subset '../../etc': cannot name a file inside the target: expected letters, digits and _ . + = @ , - (not first: . or -), at most 200
    """
    text = str(name)
    if not isinstance(name, (str, np.str_)) or not _OUTPUT_NAME.fullmatch(text):
        raise DatasetError(
            f"{what} {text!r}: cannot name a file inside the target: expected letters, digits and "
            "_ . + = @ , - (not first: . or -), at most 200"
        )
    return text


def output_path(relative: str, what: str) -> str:
    """A relative ``a/b/c`` path whose every part passes :func:`output_name` (and never ``..``).

    >>> output_path("meta/trials/tiers.npy", "file")
    'meta/trials/tiers.npy'
    """
    parts = relative.split("/")
    for part in parts:
        output_name(part, what)
        if part in (".", ".."):  # pragma: no cover - the pattern already refuses them
            raise DatasetError(f"{what} {relative!r}: cannot name a file inside the target")
    return relative


# ----------------------------------------------------------------------------------------------
# kinds of output


@dataclass(frozen=True)
class OutputKind:
    """What a sink writes: its name for messages (with its article: "a netCDF file"), a file or a
    folder, and how to recognise one."""

    name: str
    folder: bool
    recognise: Callable[[Path], bool]

    def is_previous(self, path: Path) -> bool:
        """``path`` holds an output of this kind (what an overwrite may replace)."""
        try:
            if self.folder != path.is_dir():
                return False
            return self.recognise(path)
        except OSError:
            return False


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
NETCDF3_SIGNATURES = (b"CDF\x01", b"CDF\x02", b"CDF\x05")


def _starts_with(path: Path, signatures: Iterable[bytes]) -> bool:
    if not path.is_file():
        return False
    with open(path, "rb") as file:
        head = file.read(8)
    return any(head.startswith(signature) for signature in signatures)


def is_hdf5_file(path: Path) -> bool:
    """A file that starts as HDF5 does (netCDF-4, NWB)."""
    return _starts_with(path, [HDF5_SIGNATURE])


def is_netcdf_file(path: Path) -> bool:
    """A netCDF-4 (HDF5) or classic netCDF file."""
    return _starts_with(path, [HDF5_SIGNATURE, *NETCDF3_SIGNATURES])


def is_zip_file(path: Path) -> bool:
    """A zip archive."""
    return path.is_file() and zipfile.is_zipfile(path)


def visible_entries(folder: Path) -> list[Path]:
    """The entries of a folder, without hidden ones (``.DS_Store``, export leftovers, ...)."""
    return [entry for entry in folder.iterdir() if not entry.name.startswith(".")]


# ----------------------------------------------------------------------------------------------
# renames: exclusive, swapping, with what the system offers

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_UNSUPPORTED = {errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP}


@functools.cache
def _libc_function(name: str) -> Any:
    """A function of the C library on Linux (``renameat2``), or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), name, None)
    except OSError:  # pragma: no cover - no C library to load
        return None


def _renameat2(source: Path, destination: Path, flags: int) -> bool:
    """Linux ``renameat2(source, destination, flags)``: True when done, False when unavailable here."""
    function = _libc_function("renameat2")
    if function is None:
        return False
    result = function(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(destination), ctypes.c_uint(flags))
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(source), None, str(destination))


def rename_exclusive(source: Path, destination: Path) -> None:
    """Rename ``source`` to ``destination``, which must not exist; ``FileExistsError`` if it does.

    One ``renameat2(RENAME_NOREPLACE)`` where the system has it; else a hard link for a file, or a
    plain rename for a folder (which fails on anything but an empty folder that appeared meanwhile).
    """
    if _renameat2(source, destination, _RENAME_NOREPLACE):
        return
    if source.is_dir():
        if os.path.lexists(destination):
            raise FileExistsError(errno.EEXIST, "exists", str(destination))
        os.rename(source, destination)
        return
    try:
        os.link(source, destination, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError:  # no hard links on this file system
        if os.path.lexists(destination):
            raise FileExistsError(errno.EEXIST, "exists", str(destination)) from None
        os.rename(source, destination)
        return
    os.unlink(source)


def exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one atomic rename (``renameat2(RENAME_EXCHANGE)``); False where unavailable."""
    return _renameat2(first, second, _RENAME_EXCHANGE)


# ----------------------------------------------------------------------------------------------
# durability


def _fsync_path(path: str | os.PathLike[str], *, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.EBADF):  # some file systems cannot sync folders
            raise
    finally:
        os.close(fd)


#: Threads flushing the files of a written folder: concurrent fsyncs share the file system's
#: journal commits (2,000 small files: 0.17 s with 16 threads, 3.6 s one by one, here).
SYNC_THREADS = 16


def sync_to_disk(path: Path) -> None:
    """Flush a written file, or a written folder with every file and folder in it, to the disk.

    Called before the rename that publishes an output, so that a crash after the rename never
    leaves a complete-looking target whose data is still in memory. Only the export's own files
    are flushed (never the whole file system), many at a time.
    """
    if not path.is_dir():
        _fsync_path(path)
        return
    files: list[str] = []
    folders: list[str] = []
    for root, _, names in os.walk(path):
        folders.append(root)
        files.extend(os.path.join(root, name) for name in names)
    with ThreadPoolExecutor(max_workers=SYNC_THREADS, thread_name_prefix="neuroxr-fsync") as pool:
        list(pool.map(_fsync_path, files))
    for folder in reversed(folders):
        _fsync_path(folder, directory=True)


# ----------------------------------------------------------------------------------------------
# the target


def _remove(path: Path) -> None:
    """Remove a file, a symlink (never what it points to) or a folder tree; nothing if absent."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _parent(target: str | os.PathLike[str]) -> Path:
    parent = Path(target).parent
    return parent if str(parent) else Path(".")


def partial_path(target: Path) -> Path:
    """A fresh temporary name beside ``target``: ``.NAME.neuroxr-partial-XXXXXXXX``."""
    return _parent(target) / f".{target.name}{PARTIAL}{uuid.uuid4().hex[:8]}"


def leftovers(target: Path) -> list[Path]:
    """What unfinished exports to ``target`` left beside it (partial outputs, previous outputs set aside)."""
    parent = _parent(target)
    prefixes = (f".{target.name}{PARTIAL}", f".{target.name}{PREVIOUS}")
    try:
        return sorted(entry for entry in parent.iterdir() if entry.name.startswith(prefixes))
    except OSError:
        return []


def clean_leftovers(target: Path) -> None:
    """Remove what killed exports to ``target`` left; a previous output set aside goes back if ``target`` is missing.

    Called with the target's lock held, so no live export owns any of them.
    """
    for leftover in leftovers(target):
        if PREVIOUS in leftover.name and not os.path.lexists(target):
            with contextlib.suppress(FileExistsError):
                rename_exclusive(leftover, target)
                continue
        _remove(leftover)


@contextlib.contextmanager
def export_lock(target: Path) -> Iterator[None]:
    """Hold ``.NAME.neuroxr-lock`` beside ``target`` for the block: one export per target at a time.

    The lock is an ``flock`` on that file, which the system releases when the process ends however
    it ends, so a killed export never blocks the next one. The next export cleans what a killed
    one left (:func:`clean_leftovers`). Where the file system has no locks, exports run unlocked and
    leftovers are left alone (they may belong to a running export).
    """
    import fcntl

    lock_path = _parent(target) / f".{target.name}{LOCK}"
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise TargetBusyError(target, lock_path) from None
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.ENOLCK, *_UNSUPPORTED):
                yield
                return
            raise
        try:  # a finishing export may have removed the file between our open and flock: start again
            same = os.path.samestat(os.fstat(fd), os.stat(lock_path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())  # a full device fails here, before any data is written
        except OSError as error:
            explained = explain_write_error(error, target)
            if explained is error:
                raise
            raise explained from error
        clean_leftovers(target)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
        os.close(fd)


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
        return  # write_atomically says so, naming the folder
    free = shutil.disk_usage(parent).free
    if free < needed:
        raise OSError(
            errno.ENOSPC,
            f"{target}: not enough space: the export needs about {readable_size(needed)}, "
            f"the device holding {parent} has {readable_size(free)} free",
        )


def readable_size(size: int) -> str:
    """``size`` bytes in the unit that keeps three digits.

    >>> readable_size(339_968), readable_size(1_175_185), readable_size(5_000_000_000), readable_size(12)
    ('340 kB', '1.18 MB', '5.00 GB', '12 bytes')
    """
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            value = size / scale
            return f"{value:.{max(0, 2 - int(np.log10(value)))}f} {unit}"
    return f"{size} bytes"


def explain_write_error(error: BaseException, target: str | os.PathLike[str]) -> BaseException:
    """A clearer error for a failed write: a full device is named as such; anything else gets a note.

    A full device is recognised from the error (``ENOSPC``, also inside the text HDF5 gives its
    errors, or in the errors it was raised from) or from the device's free space.
    """
    chain: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    if any((isinstance(e, OSError) and e.errno == errno.ENOSPC) or os.strerror(errno.ENOSPC) in str(e) for e in chain):
        return OSError(errno.ENOSPC, f"{target}: no space left on the device while writing")
    with contextlib.suppress(OSError):
        if shutil.disk_usage(_parent(target)).free < FULL_DEVICE_BYTES:
            return OSError(errno.ENOSPC, f"{target}: no space left on the device while writing ({error})")
    if isinstance(error, Exception):
        error.add_note(f"while writing {target} (nothing was left at that path)")
    return error


def _check_target(target: Path, kind: OutputKind, overwrite: bool) -> bool:
    """Whether ``target`` exists (it may be replaced); raise if it exists and may not be."""
    parent = _parent(target)
    if not parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, f"{target}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise PermissionError(errno.EACCES, f"{target}: the folder {parent} is not writable")
    if not os.path.lexists(target):
        return False
    if not overwrite:
        raise TargetExistsError(target)
    if not kind.is_previous(target):
        found = "a folder" if target.is_dir() else "a file" if target.exists() else "a broken link"
        raise TargetExistsError(
            target,
            f"is {found}, not {kind.name}: an export replaces only {kind.name} (move or remove it yourself if it is to go)",
            replaceable=False,
        )
    return True


def _publish(temporary: Path, target: Path, kind: OutputKind, replace: bool) -> None:
    """Put the finished ``temporary`` in place of ``target`` in one rename (see the module docstring)."""
    if not replace:
        try:
            rename_exclusive(temporary, target)
        except FileExistsError:
            raise TargetExistsError(
                target, "appeared while the export was running and was left as it is", replaceable=False
            ) from None
        return
    if exchange(temporary, target):
        if kind.is_previous(temporary):  # what was swapped out is still a previous output: it goes
            _remove(temporary)
            return
        exchange(temporary, target)  # something else took its place meanwhile: put it back
        raise TargetExistsError(target, f"changed while the export was running and is no longer {kind.name}", replaceable=False)
    if not kind.folder:
        os.replace(temporary, target)
        return
    aside = _parent(target) / f".{target.name}{PREVIOUS}{uuid.uuid4().hex[:8]}"
    os.rename(target, aside)  # recoverable: the next export to target puts it back if we stop here
    os.rename(temporary, target)
    _remove(aside)


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
    kind: OutputKind,
    sources: Sequence[object],
    overwrite: bool,
    needed_bytes: int | None,
) -> Path:
    """Run ``write(temporary_path)`` beside ``target`` and publish it there; clear errors otherwise.

    ``sources`` are the files the data is read from (the target may not be, hold or lie in any of
    them); ``needed_bytes`` (when known) is checked against the free space first. The writer
    creates a file or folder (as ``kind`` says) at the temporary path; on any failure, or
    interruption, it is removed and ``target`` is as it was.
    """
    target = Path(target)
    refuse_to_overwrite_source(sources, target)
    _check_target(target, kind, overwrite)  # before taking the lock: a plain refusal leaves no trace
    with export_lock(target):
        replace = _check_target(target, kind, overwrite)
        if needed_bytes is not None:
            check_free_space(target, needed_bytes)
        temporary = partial_path(target)
        try:
            try:
                with own_thread_pool():
                    write(temporary)
                if not os.path.lexists(temporary):
                    raise RuntimeError(f"{target}: the writer produced nothing")
                sync_to_disk(temporary)
            except (OSError, RuntimeError) as error:
                explained = explain_write_error(error, target)
                if explained is error:
                    raise
                raise explained from error
            _publish(temporary, target, kind, replace)
            with contextlib.suppress(OSError):
                _fsync_path(_parent(target), directory=True)  # the rename itself, on the disk
        except BaseException:
            _remove(temporary)
            raise
    return target


# ----------------------------------------------------------------------------------------------
# progress


class Progress:
    """An export's one progress display: a bar over every step of every stage, on stderr.

    Stages announce their steps with :meth:`add` (the total grows) and report them with
    :meth:`advance`, from any thread. A disabled display shows nothing.

    >>> with Progress(False, "writing") as progress:
    ...     progress.add(3); progress.advance(3)
    """

    def __init__(self, enabled: bool, description: str, unit: str = "block") -> None:
        self.enabled = enabled
        self._lock = threading.Lock()
        self._bar: Any = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=0, desc=description, unit=unit, file=sys.stderr)

    def add(self, steps: int) -> None:
        """Announce ``steps`` more steps."""
        if self._bar is not None:
            with self._lock:
                self._bar.total += steps
                self._bar.refresh()

    def advance(self, steps: int = 1) -> None:
        """Report ``steps`` steps done."""
        if self._bar is not None:
            with self._lock:
                self._bar.update(steps)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def dask_progress(enabled: bool, description: str) -> Iterator[None]:
    """Show a bar of the dask tasks run inside the block (local schedulers; distributed: use the dashboard)."""
    if not enabled:
        yield
        return
    from tqdm.dask import TqdmCallback

    with TqdmCallback(desc=description, file=sys.stderr):
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
            pending = deque(pool.submit(self.compute, index) for index in range(min(self.ahead, len(self))))
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
