"""Write docs/api.md from the public API's signatures and docstrings: ``python docs/make_api.py``.

The test suite checks that the committed page is what this script writes, so the reference never
drifts from the code.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

#: (section title, module, names) in the order the page lists them.
SECTIONS = [
    ("Opening", "neuroxr", ["open_scan", "open", "open_datatree"]),
    ("Writing", "neuroxr", ["to_netcdf", "to_zarr", "to_nwb", "to_folder"]),
    ("Reading what neuroxr wrote", "neuroxr", ["open_netcdf", "open_zarr", "open_nwb"]),
    ("Analysis", "neuroxr", ["standardize", "train_statistics"]),
    (
        "Metrics (`neuroxr.metrics`)",
        "neuroxr.metrics",
        ["single_trial_correlation", "correlation_to_average", "feve", "oracle_correlation", "leaderboard", "select_tier"],
    ),
    ("PyTorch loaders (`neuroxr.torch`, extra `neuroxr[torch]`)", "neuroxr.torch", ["static_loaders", "video_loaders", "loaders", "predict"]),
    (
        "Submission files (`neuroxr.submission`)",
        "neuroxr.submission",
        ["write_submission", "write_ground_truth", "read_submission", "checked_predictions"],
    ),
    ("Looking at a scan", "neuroxr", ["describe", "summary_figure"]),
    ("Synthetic scans (`neuroxr.synthetic`)", "neuroxr.synthetic", ["make_scan", "write_scan"]),
    ("The xarray backend (`neuroxr.backend`)", "neuroxr.backend", ["SensoriumBackendEntrypoint"]),
    (
        "Errors",
        "neuroxr",
        ["NeuroxrError", "ScanError", "DatasetError", "TargetExistsError", "TargetBusyError", "SourceOverwriteError", "MissingExtraError"],
    ),
]

PAGE = Path(__file__).with_name("api.md")


def render() -> str:
    lines = [
        "# API reference",
        "",
        "Generated from the docstrings by `python docs/make_api.py`; the public API is re-exported from `neuroxr`.",
        "",
    ]
    for title, module_name, names in SECTIONS:
        module = importlib.import_module(module_name)
        lines += [f"## {title}", ""]
        for name in names:
            obj = getattr(module, name)
            qualified = f"{module_name}.{name}"
            try:
                signature = str(inspect.signature(obj))
            except (TypeError, ValueError):
                signature = ""
            if inspect.isclass(obj):
                signature = ""
            lines += [f"### `{qualified}`", "", "```python", f"{name}{signature}", "```", ""]
            doc = inspect.getdoc(obj) or "(no docstring)"
            lines += [doc, ""]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    PAGE.write_text(render())
    print(f"wrote {PAGE}")
