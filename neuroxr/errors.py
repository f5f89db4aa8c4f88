"""The errors neuroxr raises: each names the file and says what was expected and what was found."""

from __future__ import annotations


class ScanError(ValueError):
    """A scan (or a file in it) is not what the Sensorium layout requires.

    ``path`` is the offending file or folder, as the user would find it (for a member of a
    .zip: ``archive.zip::member``).
    """

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class TargetExistsError(FileExistsError):
    """An export target already exists and ``overwrite=True`` was not given."""

    def __init__(self, path: object) -> None:
        super().__init__(f"{path}: already exists; pass overwrite=True to replace it")
        self.path = str(path)
