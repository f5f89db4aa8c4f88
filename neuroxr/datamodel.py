"""The data model: the names every part of neuroxr agrees on, and where each lives in the release.

A scan is one ``xarray.Dataset``. This module holds its dimension, variable and coordinate names,
the release files they come from, and the attribute that records the way back to the release.
It imports nothing heavy and knows nothing about any file format.
"""

from __future__ import annotations

from collections.abc import Mapping

#: Dimension names used everywhere.
TRIAL = "trial"
NEURON = "neuron"

#: The per-trial data variables, in the order the release lists them, and their per-trial dims.
DATA_DIMS: dict[str, tuple[str, ...]] = {
    "images": ("channel", "y", "x"),
    "responses": ("neuron",),
    "behavior": ("behavior_variable",),
    "pupil_center": ("pupil_axis",),
}
DATA_VARIABLES: tuple[str, ...] = tuple(DATA_DIMS)

#: Label coordinates of the small fixed dimensions.
BEHAVIOR_VARIABLES = ("pupil_dilation", "pupil_dilation_derivative", "running_speed")
PUPIL_AXES = ("x", "y")
SPACE_AXES = ("x", "y", "z")
LABELS: dict[str, tuple[str, ...]] = {
    "behavior_variable": BEHAVIOR_VARIABLES,
    "pupil_axis": PUPIL_AXES,
    "space": SPACE_AXES,
}

#: Statistics in the order they appear along the ``statistic`` dimension.
STATISTICS = ("mean", "std", "min", "max", "median")
#: The statistics subset every loader reads; it comes first along ``subset``.
MAIN_SUBSET = "all"

#: Release folders.
DATA_DIR = "data"
TRIALS_DIR = "meta/trials"
NEURONS_DIR = "meta/neurons"
STATISTICS_DIR = "meta/statistics"

#: Meta files whose coordinate name differs from the file name (file stem -> coordinate).
TRIAL_RENAMES = {"tiers": "tier", "frame_image_id": "image_id"}
NEURON_RENAMES = {"animal_ids": "animal_id", "sessions": "session"}
#: The neuron index coordinate comes from this file.
NEURON_INDEX_FILE = "unit_ids"
#: A meta/trials file whose name clashes with a neuron coordinate gets this prefix.
TRIAL_CLASH_PREFIX = "trial_"
#: Coordinates that mirror a release file carry that file's path (relative to the scan) here.
FILE_ATTR = "sensorium_file"

#: Withheld data (see DESIGN.md): tiers whose responses the competition scans withhold.
WITHHELD_TIERS = ("test", "final_test")
WITHHELD_COORD = "responses_withheld"
WITHHELD_LONG_NAME = "responses withheld by the release (zeros on disk)"

#: Dataset attributes.
FORMAT = "sensorium-2022-static"
#: The attribute naming the variables whose withheld cells read NaN (comma-separated).
WITHHELD_ATTR = "withheld"

LONG_NAMES = {
    "images": "grey level of the image shown in the trial",
    "responses": "deconvolved calcium activity in response to the image",
    "behavior": "pupil dilation, its derivative and running speed",
    "pupil_center": "pupil centre position (horizontal, vertical)",
}


def statistics_name(variable: str) -> str:
    """Name of the statistics variable of a data variable: ``responses`` -> ``responses_statistics``."""
    return f"{variable}_statistics"


def statistics_file(variable: str, subset: str, statistic: str) -> str:
    """Release path of one statistics array, e.g. ``meta/statistics/responses/all/std.npy``."""
    return f"{STATISTICS_DIR}/{variable}/{subset}/{statistic}.npy"


def trial_file(variable: str, trial: int) -> str:
    """Release path of one trial's array, e.g. ``data/responses/17.npy``."""
    return f"{DATA_DIR}/{variable}/{trial}.npy"


def file_attrs(relative: str) -> dict[str, str]:
    """The attributes that record a variable's release file: ``{"sensorium_file": relative}``."""
    return {FILE_ATTR: relative}


def withheld_variables(attrs: Mapping[str, object]) -> set[str]:
    """The variables ``attrs["withheld"]`` names (a comma-separated string, or a list of names).

    >>> sorted(withheld_variables({"withheld": "responses, behavior"}))
    ['behavior', 'responses']
    """
    value = attrs.get(WITHHELD_ATTR) or ""
    parts = value.split(",") if isinstance(value, str) else [str(part) for part in value]  # type: ignore[union-attr]
    return {part.strip() for part in parts if part.strip()}
