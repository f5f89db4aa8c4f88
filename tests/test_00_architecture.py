"""The architecture: imports run one way down the layers, with no circle hidden in a function, and importing is cheap."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from conftest import write_tiny_scan, zip_scan

import neuroxr

ROOT = Path(neuroxr.__file__).resolve().parent.parent
PACKAGE = ROOT / "neuroxr"
#: cli.py imports the package inside its command functions only so that ``neuroxr --help`` (and argument
#: errors) do not pay for xarray and dask; the import arrows themselves still run down (lint-imports checks
#: them, function-local imports included). ``test_the_cli_module_alone_imports_nothing_heavy`` keeps it honest.
LOCAL_IMPORTS_ALLOWED = {"neuroxr/cli.py"}
HEAVY = ("xarray", "dask", "pynwb", "h5py")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_the_layer_contracts_hold() -> None:
    linter = shutil.which("lint-imports")
    if linter is None:
        pytest.skip("import-linter is not installed (pip install 'neuroxr[test]')")
    done = subprocess.run([linter], cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout, done.stdout


def test_the_layer_check_sees_a_back_arrow_hidden_in_a_function(tmp_path: Path) -> None:
    linter = shutil.which("lint-imports")
    if linter is None:
        pytest.skip("import-linter is not installed (pip install 'neuroxr[test]')")
    shutil.copytree(PACKAGE, tmp_path / "neuroxr", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with (tmp_path / "neuroxr" / "npy.py").open("a") as module:
        module.write("\n\ndef _back_up():\n    from neuroxr import opening\n")
    done = subprocess.run([linter], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)}, capture_output=True, text=True)
    assert done.returncode != 0 and "neuroxr.npy -> neuroxr.opening" in done.stdout, done.stdout


def test_the_contracts_cover_every_layer_and_ignore_nothing() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contracts = config["contracts"]
    assert contracts and all("ignore_imports" not in contract for contract in contracts)
    layers = next(contract for contract in contracts if contract["type"] == "layers")
    named = {name.strip() for layer in layers["layers"] for name in layer.split("|")}
    top_level = {path.stem for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    top_level |= {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    aliases = {"metrics", "model", "plot"}  # deprecated alias modules that replace themselves on import
    assert top_level - aliases <= named, f"modules outside every layer: {sorted(top_level - aliases - named)}"


def _is_neuroxr(module: str | None, level: int) -> bool:
    return bool(level) or (module or "").split(".")[0] == "neuroxr"


def _local_neuroxr_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """neuroxr imports inside function bodies (an ``if TYPE_CHECKING:`` block never runs, so it does not count)."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            return
        if in_function and isinstance(node, ast.ImportFrom) and _is_neuroxr(node.module, node.level):
            found.append((node.lineno, "." * node.level + (node.module or "")))
        elif in_function and isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names if _is_neuroxr(alias.name, 0))
        inside = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inside)

    visit(tree, False)
    return found


def test_no_module_imports_neuroxr_inside_a_function() -> None:
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        found = _local_neuroxr_imports(ast.parse(path.read_text(), relative))
        if found and relative not in LOCAL_IMPORTS_ALLOWED:
            offenders[relative] = found
    assert not offenders, f"function-local neuroxr imports hide import arrows from lint-imports: {offenders}"


def test_the_ast_check_sees_a_local_import() -> None:
    source = (
        "import neuroxr\n"
        "from typing import TYPE_CHECKING\n"
        "def f():\n"
        "    from neuroxr import opening\n"
        "    import neuroxr.dataset, json\n"
        "    from . import npy\n"
        "    if TYPE_CHECKING:\n"
        "        from neuroxr import lazy\n"
        "class C:\n"
        "    def m(self):\n"
        "        import neuroxr.layout\n"
    )
    assert _local_neuroxr_imports(ast.parse(source)) == [
        (4, "neuroxr"), (5, "neuroxr.dataset"), (6, "."), (11, "neuroxr.layout")
    ]


def _modules_after(statement: str) -> list[str]:
    code = f"import json, sys; {statement}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


@pytest.mark.parametrize("statement", ["import neuroxr", "import neuroxr.cli"])
def test_importing_the_package_or_the_cli_loads_nothing_heavy(statement: str) -> None:
    modules = _modules_after(statement)
    assert "neuroxr" in modules
    loaded = sorted({name.split(".")[0] for name in modules} & set(HEAVY))
    assert not loaded, f"{statement} imports {loaded}"


def test_the_heavy_imports_happen_on_first_use() -> None:
    modules = _modules_after("import neuroxr; neuroxr.open_scan")
    assert "neuroxr.opening" in modules and "xarray" in modules


#: Packages that opening a scan folder and reading it must not import (each costs a fresh process a fraction of a second).
NOT_FOR_READING = ("pynwb", "hdmf", "zarr", "netCDF4", "h5py", "torch", "fsspec")


def test_opening_and_reading_a_scan_imports_no_format_library(tmp_path: Path) -> None:
    """A deflated zip (the folder's path and the zip reader's) opened and read in a fresh process."""
    path = zip_scan(write_tiny_scan(tmp_path, n_trials=8, n_neurons=5), tmp_path / "scan.zip", zipfile.ZIP_DEFLATED)
    modules = _modules_after(f"import neuroxr; ds = neuroxr.open_scan({str(path)!r}); ds.images.values, ds.responses.mean().values")
    loaded = sorted({name.split(".")[0] for name in modules} & set(NOT_FOR_READING))
    assert not loaded, f"open_scan and a read import {loaded}"
