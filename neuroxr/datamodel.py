"""The data model: the names every part of neuroxr agrees on, and where each lives in the release.

A scan is one ``xarray.Dataset``. This module holds its dimension, variable and coordinate names,
the release files they come from, and the attribute that records the way back to the release.
It imports nothing heavy and knows nothing about any file format.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

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
#: Statistics files stored in another dtype than their variable: ``["<subset>/<statistic>=<dtype>", ...]``.
FILE_DTYPES_ATTR = "sensorium_file_dtypes"

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


# ----------------------------------------------------------------------------------------------
# Release kinds: what differs between the 2022 static-image and the 2023 video scans, as data.
#
# Every step (layout, lazy arrays, the builder, the sinks, analysis) reads the differences from the
# kind of the scan at hand; there is no second reader. DESIGN.md ("Dynamic scans") is the contract.

#: The time dimension of the 2023 scans and its coordinate in seconds from trial start.
FRAME = "frame"
TIME = "time"
#: The trial-length coordinate of a video scan and the Dataset attribute holding its frame rate.
N_FRAMES = "n_frames"
FRAME_RATE_ATTR = "frame_rate"
N_FRAMES_LONG_NAME = "frames of the trial before its padding: the index of its video's first NaN frame"

#: How a kind tells the trials whose responses the release withholds (see ``dataset.withheld_trials``).
WITHHELD_IN_COMPETITION_SCANS = "competition scans"  # hashed trial_idx or a final_test tier (2022)
WITHHELD_WHERE_STORED_ZEROS = "stored zeros"  # a withheld tier whose first trial holds only zeros (and NaN padding)


@dataclass(frozen=True)
class ReleaseKind:
    """One kind of Sensorium scan: its variables and their per-trial dims, tiers, withheld rule and time axis.

    >>> DYNAMIC.data_dims["videos"], DYNAMIC.time_dim, STATIC.time_dim
    (('y', 'x', 'frame'), 'frame', None)
    """

    name: str  #: "static" or "dynamic"
    format: str  #: ``attrs["format"]`` of its Datasets
    stimulus: str  #: its stimulus variable; ``data/<stimulus>`` is the folder that marks the kind
    data_dims: Mapping[str, tuple[str, ...]]  #: per-trial dims in stored axis order, variables in release order
    labels: Mapping[str, tuple[str, ...]]  #: label coordinates of the small fixed dims
    tiers: tuple[str, ...]  #: tier values as stored, in the order they are shown
    withheld_tiers: tuple[str, ...]  #: tiers whose responses the release may withhold
    withheld_rule: str  #: which trials of those tiers are withheld (one of the WITHHELD_* rules above)
    name_prefix: str  #: release folder names start with it: ``static21067-...``, ``dynamic29156-...``
    name_tag: str  #: and carry it after the scan key: ``-GrayImageNet-``, ``-Video-``
    frame_rate: float | None = None  #: Hz of the time axis (last in every per-trial array); None: no time axis
    #: Per-trial variables whose row 0 is NaN from the trial's end on, like the video, in order of preference:
    #: ``n_frames`` is read from the first one present (a few kB per trial) and checked when a video is read.
    frame_count_sources: tuple[str, ...] = ()
    #: Whether the stimulus statistics are one number over every value (2022) or one per element (2023).
    stimulus_statistics_per_element: bool = False

    @property
    def data_variables(self) -> tuple[str, ...]:
        return tuple(self.data_dims)

    @property
    def time_dim(self) -> str | None:
        return FRAME if self.frame_rate is not None else None


STATIC = ReleaseKind(
    name="static",
    format=FORMAT,
    stimulus="images",
    data_dims=DATA_DIMS,
    labels=LABELS,
    tiers=("train", "validation", "test", "final_test"),
    withheld_tiers=WITHHELD_TIERS,
    withheld_rule=WITHHELD_IN_COMPETITION_SCANS,
    name_prefix="static",
    name_tag="GrayImageNet",
)

DYNAMIC = ReleaseKind(
    name="dynamic",
    format="sensorium-2023-dynamic",
    stimulus="videos",
    data_dims={
        "videos": ("y", "x", FRAME),
        "responses": (NEURON, FRAME),
        "behavior": ("behavior_variable", FRAME),
        "pupil_center": ("pupil_axis", FRAME),
    },
    labels={"behavior_variable": ("pupil_dilation", "running_speed"), "pupil_axis": PUPIL_AXES, "space": SPACE_AXES},
    tiers=("train", "oracle", "live_test_main", "live_test_bonus", "final_test_main", "final_test_bonus", "none"),
    withheld_tiers=("live_test_main", "live_test_bonus", "final_test_main", "final_test_bonus"),
    withheld_rule=WITHHELD_WHERE_STORED_ZEROS,
    name_prefix="dynamic",
    name_tag="Video",
    frame_rate=30.0,
    frame_count_sources=("behavior", "pupil_center", "videos"),
    stimulus_statistics_per_element=True,
)

#: Every kind, by name.
KINDS: dict[str, ReleaseKind] = {kind.name: kind for kind in (STATIC, DYNAMIC)}

#: Long names of the variables only video scans have.
LONG_NAMES_DYNAMIC = {
    "videos": "grey level of the video frame shown (NaN after the trial's end)",
    "responses": "deconvolved calcium activity at each video frame",
    "behavior": "pupil dilation and running speed at each video frame",
    "pupil_center": "pupil centre position (horizontal, vertical) at each video frame",
}


def kind_of(names: Iterable[str], attrs: Mapping[str, object] | None = None) -> ReleaseKind:
    """The kind of a Dataset from its ``format`` attribute, else from its variable and dimension ``names``.

    >>> kind_of(["responses"], {"format": "sensorium-2023-dynamic"}).name, kind_of(["images", "trial"]).name
    ('dynamic', 'static')
    """
    found = str((attrs or {}).get("format", ""))
    for kind in KINDS.values():
        if found == kind.format:
            return kind
    names = set(names)
    return DYNAMIC if DYNAMIC.stimulus in names or FRAME in names else STATIC


def kind_from_name(release_name: str) -> ReleaseKind | None:
    """The kind a release folder name suggests (a hint only: the contents decide), or None.

    >>> kind_from_name("dynamic29156-11-10-Video-8744edeac3b4d1ce16b680916b5267ce").name
    'dynamic'
    """
    for kind in KINDS.values():
        if release_name.startswith(kind.name_prefix) or f"-{kind.name_tag}-" in release_name:
            return kind
    return None


# CF metadata: what each variable and coordinate is, and in which units (attached by dataset.assemble)

#: CF attributes per variable or coordinate name. ``units`` only where the quantity has them
#: ("1": dimensionless as stored; "um": micrometres); identifiers, labels and the release's
#: undocumented behaviour units have none. CF has no standard names for these quantities.
CF_ATTRS: dict[str, dict[str, str]] = {
    "images": {"units": "1"},
    "videos": {"units": "1", "comment": "grey level of each frame; NaN after the trial ends"},
    "frame": {"long_name": "frame of the trial (padded to one length per scan)"},
    "responses": {"units": "1", "comment": "deconvolved activity in arbitrary units, as the release stores it"},
    "behavior": {"comment": "units as recorded by the release (not documented): pupil size, its derivative, running speed"},
    "pupil_center": {"comment": "position in the eye-camera image, in its pixels (as the release stores it)"},
    "trial": {"long_name": "trial: the number of its files data/*/<trial>.npy"},
    "tier": {"long_name": "data split the trial belongs to (train, validation, test, ...)"},
    "image_id": {"long_name": "id of the image shown in the trial"},
    "trial_idx": {"long_name": "trial index in the recording session"},
    "frame_image_class": {"long_name": "class of the image shown in the trial"},
    "frame_trial_ts": {"long_name": "time stamp of the trial, as recorded (text)"},
    "condition_hash": {"long_name": "hash of the stimulus condition of the trial"},
    "neuron": {"long_name": "unit id of the neuron"},
    "area": {"long_name": "visual area of the neuron"},
    "layer": {"long_name": "cortical layer of the neuron"},
    "animal_id": {"long_name": "id of the animal"},
    "session": {"long_name": "recording session"},
    "scan_idx": {"long_name": "scan number within the session"},
    "cell_motor_coordinates": {"long_name": "position of the neuron in the cortex (microscope motor coordinates)", "units": "um"},
    "behavior_variable": {"long_name": "behaviour variable"},
    "pupil_axis": {"long_name": "axis of the pupil position (horizontal x, vertical y)"},
    "space": {"long_name": "axis of the cortical position"},
    "channel": {"long_name": "image channel", "units": "1"},
    "y": {"long_name": "image row (pixels from the top)", "units": "1", "axis": "Y"},
    "x": {"long_name": "image column (pixels from the left)", "units": "1", "axis": "X"},
    "subset": {"long_name": "subset of the trials the statistics were computed over"},
    "statistic": {"long_name": "statistic over the trials of a subset"},
}


def cf_attrs(name: str) -> dict[str, str]:
    """The CF attributes of a variable or coordinate (``long_name``, ``units``, ...), by its name.

    A statistics variable takes the units of its data variable; a trial coordinate named like a
    neuron one (``trial_session``) is described as that one, per trial.

    >>> cf_attrs("cell_motor_coordinates")["units"], cf_attrs("responses_statistics")["units"]
    ('um', '1')
    >>> cf_attrs("trial_session")["long_name"]
    'recording session (per trial)'
    """
    attrs = dict(CF_ATTRS.get(name, {}))
    unprefixed = name.removeprefix(TRIAL_CLASH_PREFIX)
    if not attrs and unprefixed != name and unprefixed in CF_ATTRS:
        attrs = {**CF_ATTRS[unprefixed], "long_name": f"{CF_ATTRS[unprefixed]['long_name']} (per trial)"}
    for variable in (*STATIC.data_variables, *DYNAMIC.data_variables):
        if name == statistics_name(variable):
            attrs.setdefault("long_name", f"statistics of {variable} over the trials of each subset")
            if "units" in CF_ATTRS.get(variable, {}):
                attrs["units"] = CF_ATTRS[variable]["units"]
    if name in LONG_NAMES:
        attrs.setdefault("long_name", LONG_NAMES[name])
    return attrs
