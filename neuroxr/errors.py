"""The errors neuroxr raises. Every one derives from :class:`NeuroxrError`.

Each names where the problem is and says what was expected and what was found:

- :class:`ScanError`: a scan, or one file or member of it, is not what the Sensorium layout requires;
- :class:`RemoteError`: a scan behind a URL cannot be read as it was opened (a ``ScanError``; its
  ``reason`` says which of not found, refused, timed out, unauthorised, bad response, changed);
- :class:`DatasetError`: a Dataset handed to neuroxr lacks what the operation needs (no file is at fault);
- :class:`MetadataError`: a metadata file (or mapping) for an export holds what it may not;
- :class:`TargetExistsError`: an export target exists and overwriting was not asked for, or it is
  not a previous output of the same kind (which neuroxr never replaces);
- :class:`TargetBusyError`: another export is writing the same target right now;
- :class:`SourceOverwriteError`: an export would write over the data it reads;
- :class:`MissingExtraError`: an optional dependency is not installed; it names the extra to install.

Each also derives from the builtin exception a caller would have caught before (``ValueError``,
``FileExistsError``, ``ModuleNotFoundError``), so existing ``except`` clauses keep working.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class NeuroxrError(Exception):
    """Base of every error neuroxr raises on purpose."""


class ScanError(NeuroxrError, ValueError):
    """A scan (or a file in it) is not what the Sensorium layout requires.

    ``path`` is the offending file or folder, as the user would find it (for a member of a
    .zip: ``archive.zip::member``).

    >>> str(ScanError("scan/data/responses/3.npy", "truncated"))
    'scan/data/responses/3.npy: truncated'
    """

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class RemoteError(ScanError):
    """A remote file cannot be read, or not as it was when opened; ``reason`` is one of :data:`REMOTE_REASONS`.

    >>> error = RemoteError("https://host/scan.zip", "not found", "not found (HTTP 404)")
    >>> error.reason, str(error)
    ('not found', 'https://host/scan.zip: not found (HTTP 404)')
    """

    def __init__(self, path: object, reason: str, problem: str) -> None:
        super().__init__(path, problem)
        self.reason = reason


#: Why a remote read fails, as :attr:`RemoteError.reason` says it.
REMOTE_REASONS = ("not found", "refused", "timed out", "unauthorised", "bad response", "changed", "failed")


class DatasetError(NeuroxrError, ValueError):
    """A Dataset lacks what an operation needs (a variable, a coordinate, a dimension)."""


class MetadataError(NeuroxrError, ValueError):
    """A metadata file for an export is unreadable or holds an unknown or ill-shaped entry.

    ``path`` is the file (or ``"metadata"`` for a mapping), ``key`` the dotted key at fault (None
    when the whole file is).

    >>> str(MetadataError("session.yaml", "Subject.colour", "unknown field"))
    'session.yaml: Subject.colour: unknown field'
    """

    def __init__(self, path: object, key: str | None, problem: str) -> None:
        self.path = str(path)
        self.key = key
        self.problem = problem
        super().__init__(f"{self.path}: {key}: {problem}" if key else f"{self.path}: {problem}")


class TargetExistsError(NeuroxrError, FileExistsError):
    """An export target exists: ``overwrite=True`` was not given, or it cannot be replaced.

    ``replaceable`` says whether ``overwrite=True`` would replace it (False for something that is
    not a previous output of the same kind, such as a folder where a file is to be written).

    >>> str(TargetExistsError("scan.nc"))
    'scan.nc: already exists; pass overwrite=True to replace it'
    """

    def __init__(self, path: object, problem: str = "already exists", *, replaceable: bool = True) -> None:
        self.path = str(path)
        self.problem = problem
        self.replaceable = replaceable
        advice = "; pass overwrite=True to replace it" if replaceable else ""
        super().__init__(f"{self.path}: {problem}{advice}")


class TargetBusyError(NeuroxrError, BlockingIOError):
    """Another export is writing the same target now (it holds the target's lock file)."""

    def __init__(self, path: object, lock: object) -> None:
        self.path = str(path)
        self.lock = str(lock)
        super().__init__(f"{self.path}: another export to this target is running (it holds {self.lock}); wait for it to end")


class SourceOverwriteError(NeuroxrError, ValueError):
    """An export target is, holds, or lies inside the data being exported."""

    def __init__(self, target: object, source: object) -> None:
        super().__init__(f"{target}: refusing to write over the data being exported ({source}); choose another target")
        self.path = str(target)
        self.source = str(source)


class MissingExtraError(NeuroxrError, ModuleNotFoundError):
    """An optional dependency is missing; ``extra`` is the neuroxr extra that installs it."""

    def __init__(self, module: str, extra: str, purpose: str) -> None:
        super().__init__(f"{purpose} needs {module}: pip install 'neuroxr[{extra}]'", name=module)
        self.extra = extra


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import an optional dependency, or raise :class:`MissingExtraError` naming the extra.

    >>> require("json", "all", "reading JSON").__name__
    'json'
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name is not None and error.name != module and not module.startswith(f"{error.name}."):
            raise  # the package is there but one of its own dependencies is not: show that
        raise MissingExtraError(module.split(".")[0], extra, purpose) from error
