"""Every Python example in the user guide runs (blocks starting with '# not run in tests' are skipped)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
SKIP = "# not run in tests"


def pages() -> list[Path]:
    reference = DOCS / "api.md"  # signatures, not examples
    return sorted(page for page in DOCS.glob("*.md") if page != reference and BLOCK.search(page.read_text()))


@pytest.mark.parametrize("page", pages(), ids=lambda page: page.name)
def test_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__main__"}
    ran = 0
    for number, block in enumerate(BLOCK.findall(page.read_text()), start=1):
        if block.lstrip().startswith(SKIP):
            continue
        code = compile(block, f"{page.name}, example {number}", "exec")
        exec(code, namespace)  # noqa: S102 - the project's own documentation
        ran += 1
    assert ran > 0


def test_every_page_is_linked_from_the_index() -> None:
    index = (DOCS / "index.md").read_text()
    for page in DOCS.glob("*.md"):
        if page.name != "index.md":
            assert f"({page.name})" in index, f"{page.name} is not linked from docs/index.md"
    for link in re.findall(r"\]\(([\w-]+\.md)\)", index):
        assert (DOCS / link).exists(), f"docs/index.md links to a missing page {link}"


def test_readme_quick_start_matches_ci() -> None:
    root = DOCS.parent
    commands = re.search(r"## Quick start\n\n```bash\n(.*?)```", (root / "README.md").read_text(), re.DOTALL)
    assert commands, "README.md has no Quick start block"
    install_and_demo, install_and_test = commands.group(1).strip().splitlines()
    assert "neuroxr demo" in install_and_demo
    assert install_and_test in (root / ".ci" / "run").read_text().splitlines()
    assert os.access(root / ".ci" / "run", os.X_OK)


def test_api_reference_is_current() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_api", DOCS / "make_api.py")
    make_api = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_api)
    assert (DOCS / "api.md").read_text() == make_api.render(), "docs/api.md is stale: run python docs/make_api.py"
