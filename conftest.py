"""Doctest namespace: the docstring examples run on synthetic scans in a temporary folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace: dict, tmp_path: Path) -> None:
    import neuroxr

    doctest_namespace.update({"neuroxr": neuroxr, "np": np, "tmp": tmp_path})

#: Alias modules (they replace themselves with the module they name): nothing of their own to doctest.
collect_ignore = ["neuroxr/metrics.py", "neuroxr/model.py", "neuroxr/plot.py"]
