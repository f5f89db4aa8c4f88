"""Write-then-rename: every sink writes to a temporary name beside its target and renames at the end.

A failed or interrupted export leaves no file that looks complete, an existing target is only
replaced when asked, and the data being exported is never the thing being deleted.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from neuroxr.errors import TargetExistsError

TEMP_MARKER = ".neuroxr-partial-"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def refuse_to_overwrite_source(sources: object, target: str | os.PathLike[str]) -> None:
    """Raise if ``target`` is, contains or lies inside one of the ``sources`` paths.

    ``sources`` is a path, a list of paths, or None (nothing to check).

    >>> refuse_to_overwrite_source("/data/scan", "/data/scan.nc")
    """
    if sources is None:
        return
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    target_path = Path(target).resolve()
    for source in sources:  # type: ignore[union-attr]
        if not isinstance(source, (str, os.PathLike)) or "://" in str(source):
            continue
        source_path = Path(source).resolve()
        if (
            source_path == target_path
            or target_path in source_path.parents
            or source_path in target_path.parents
        ):
            raise ValueError(
                f"{target}: refusing to write over the data being exported ({source}); "
                "choose another target"
            )


@contextlib.contextmanager
def atomic_target(target: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it to ``target``.

    The temporary path does not exist yet: the caller creates a file or a folder there. On any
    exception (including KeyboardInterrupt) the temporary path is removed and ``target`` is left as
    it was. An existing ``target`` raises :class:`TargetExistsError` unless ``overwrite=True``.

    >>> with atomic_target("scan.nc") as tmp:  # doctest: +SKIP
    ...     write_everything_to(tmp)
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise TargetExistsError(target)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"{target}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"{target}: the folder {parent} is not writable")
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
