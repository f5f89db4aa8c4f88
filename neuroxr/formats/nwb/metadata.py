"""What an NWB file of a scan says about itself: session, subject and microscope fields, and the
names and descriptions of its table columns.

The release records little metadata, so the defaults say what it does know (the scan, the animal,
the species, the visual area) and mark the rest unknown; the user's ``session=``, ``subject=`` and
``imaging=`` fields win over them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from neuroxr import datamodel
from neuroxr.formats.nwb.timeline import TimeAxis

#: Allen CCF acronyms of the visual areas as the release names them.
CCF_AREAS = {"V1": "VISp", "LM": "VISl", "AL": "VISal", "RL": "VISrl", "PM": "VISpm", "AM": "VISam",
             "LI": "VISli", "POR": "VISpor", "P": "VISpl", "A": "VISa"}  # fmt: skip
DEFAULT_IMAGING = {
    "device_description": "two-photon microscope",
    "indicator": "GCaMP6s",
    "excitation_lambda": 920.0,
    "emission_lambda": 510.0,
    "plane_description": "the imaged volume of visual cortex; neurons are located by their motor "
    "coordinates in micrometres (one voxel per neuron, see the PlaneSegmentation columns)",
}
#: The NWBFile fields a user may set through ``session=``.
SESSION_KEYS_FROM_USER = (
    "session_description", "identifier", "session_start_time", "session_id", "experimenter", "lab",
    "institution", "experiment_description", "keywords", "related_publications", "notes",
    "pharmacology", "protocol", "surgery", "virus", "stimulus_notes", "data_collection", "source_script",
)  # fmt: skip
#: Descriptions of the table columns and behaviour series, by Dataset name.
DESCRIPTIONS = {
    "tier": "data split of the trial (train, validation, test, final_test), from meta/trials/tiers",
    "image_id": "frame_image_id: id of the image shown (the StimulusImages entry image_<id>)",
    "trial_idx": "presentation index within the session (a 32-character hash in competition scans)",
    "frame_image_class": "class of the image shown",
    "frame_trial_ts": "trial time as stored by the release (pandas Timestamp text, 1 s resolution)",
    "condition_hash": "stimulus condition hash",
    datamodel.WITHHELD_COORD: "True where the release withholds the responses (written as NaN)",
    "area": "brain area as the release names it (e.g. V1)",
    "layer": "cortical layer",
    "animal_id": "animal id",
    "session": "session number",
    "scan_idx": "scan number within the session",
    "cell_motor_coordinates": "x, y, z position of the neuron in micrometres (motor coordinates)",
    "pupil_dilation": "pupil dilation, one value per trial",
    "pupil_dilation_derivative": "temporal derivative of the pupil dilation, one value per trial",
    "running_speed": "running speed on the treadmill, one value per trial",
}
#: The trials column of ``responses_withheld`` (nwbinspector's ``is_*`` convention for flags).
WITHHELD_COLUMN = "is_response_withheld"
MOTOR_COORDINATES = "cell_motor_coordinates"
#: Column names the NWB trials table and PlaneSegmentation keep for themselves.
TRIALS_RESERVED = {"id", "start_time", "stop_time", "tags", "tags_index", "timeseries", "timeseries_index"}
ROIS_RESERVED = {"id", "image_mask", "pixel_mask", "pixel_mask_index", "voxel_mask", "voxel_mask_index",
                 "reference_images"}  # fmt: skip


def describe(name: str, variable: xr.Variable) -> str:
    """The description of the column holding ``variable``: a known one, its long name, or its dims.

    >>> describe("tier", xr.Variable("trial", ["train"], {"sensorium_file": "meta/trials/tiers.npy"}))
    'data split of the trial (...), from meta/trials/tiers; release file meta/trials/tiers.npy'
    """
    dims = ", ".join(map(str, variable.dims))
    text = DESCRIPTIONS.get(name) or str(variable.attrs.get("long_name") or f"{name} (dims {dims})")
    source = variable.attrs.get(datamodel.FILE_ATTR)
    return f"{text}; release file {source}" if source and source not in text else text


def column_name(name: str, taken: set[str], reserved: set[str]) -> str:
    """A free column name for ``name``, added to ``taken``.

    Reserved names get the prefix ``sensorium_``, names ending in ``_time`` the suffix ``_raw``
    (NWB reads ``*_time`` columns as seconds from the session start), repeats a trailing ``_``.

    >>> taken = set()
    >>> [column_name(name, taken, TRIALS_RESERVED) for name in ("id", "frame_time", "tier")]
    ['sensorium_id', 'frame_time_raw', 'tier']
    """
    if name in reserved:
        name = f"sensorium_{name}"
    if name.endswith("_time"):  # NWB reads *_time columns as seconds from the session start
        name = f"{name}_raw"
    while name in taken:
        name = f"{name}_"
    taken.add(name)
    return name


def check_session_fields(session: Mapping[str, Any]) -> None:
    """Raise ValueError when ``session`` holds a field that is not in :data:`SESSION_KEYS_FROM_USER`."""
    unknown = sorted(set(session) - set(SESSION_KEYS_FROM_USER))
    if unknown:
        expected = list(SESSION_KEYS_FROM_USER)
        raise ValueError(f"to_nwb: unknown session fields {unknown}; expected some of {expected}")


def session_fields(ds: xr.Dataset, axis: TimeAxis, session: Mapping[str, Any] | None) -> dict[str, Any]:
    """The NWBFile keyword arguments of a scan: defaults from the Dataset, then the user's ``session``.

    The session start is the time axis' own; the user's notes come first, then what the axis and the
    per-trial values mean.

    >>> from neuroxr.formats.nwb.timeline import trial_time_axis
    >>> ds = neuroxr.make_scan(n_trials=60, n_neurons=20)
    >>> fields = session_fields(ds, trial_time_axis(ds), {"lab": "Somewhere"})
    >>> fields["session_id"], fields["lab"]
    ('30001-2-3', 'Somewhere')
    """
    session = dict(session or {})
    scan = str(ds.attrs.get("scan", "unknown-scan"))
    notes = [
        f"Written by neuroxr from the Sensorium 2022 scan {scan} "
        f"({ds.attrs.get('release_name', 'release name unknown')}).",
        axis.description,
        "Responses, behaviour and pupil position are one value per trial (no continuous traces "
        "exist in the release). Values withheld by the release are NaN (see is_response_withheld).",
    ]
    if session.get("notes"):
        notes.insert(0, str(session["notes"]))
    n_neurons = ds.sizes.get("neuron", 0)
    defaults: dict[str, Any] = {
        "session_description": (
            f"Sensorium 2022 static-image scan {scan}: deconvolved responses of {n_neurons} neurons "
            f"of mouse visual cortex to {ds.sizes['trial']} presentations of grey natural images, "
            "with pupil and running behaviour"
        ),
        "identifier": str(uuid.uuid4()),
        "session_id": re.sub(r"[/\\]", "-", scan),
        "experiment_description": (
            "Two-photon imaging of mouse visual cortex while the head-fixed mouse viewed natural images "
            "on a monitor (Sensorium 2022 competition data)."
        ),
        "keywords": ["mouse", "visual cortex", "two-photon calcium imaging", "natural images", "Sensorium"],
        "related_publications": ["https://doi.org/10.48550/arXiv.2206.08666"],
    }
    fields = {**defaults, **{key: value for key, value in session.items() if value is not None}}
    fields["session_start_time"] = axis.session_start
    fields["notes"] = " ".join(notes)
    return fields


def default_subject(ds: xr.Dataset) -> dict[str, Any]:
    """The ``pynwb.file.Subject`` fields the release knows: the animal (from ``animal_id`` or the scan
    key) and the species; age and sex are marked unknown.

    >>> default_subject(neuroxr.make_scan(n_trials=60, n_neurons=20))["subject_id"]
    '30001'
    """
    animal = None
    if "animal_id" in ds.coords and ds["animal_id"].size:
        values = np.unique(np.asarray(ds["animal_id"].values))
        animal = str(values[0]) if len(values) == 1 else None
    if animal is None:
        animal = str(ds.attrs.get("scan", "unknown")).split("-")[0]
    return {
        "subject_id": re.sub(r"[/\\]", "-", animal),
        "species": "Mus musculus",
        "sex": "U",
        "age": "P0D/",
        "description": "Mouse of the Sensorium 2022 release. The release records neither age nor sex: "
        "age 'P0D/' and sex 'U' mean unknown; pass subject={'age': ..., 'sex': ...} to record them.",
    }


def imaging_fields(ds: xr.Dataset, imaging: Mapping[str, Any] | None) -> dict[str, Any]:
    """The microscope fields: :data:`DEFAULT_IMAGING`, then the user's ``imaging``; the ``location`` is
    the user's, else the CCF acronym of the scan's one area, else ``"VIS"``.

    >>> imaging_fields(neuroxr.make_scan(n_trials=60, n_neurons=20), {"indicator": "GCaMP6f"})["location"]
    'VISp'
    """
    fields = {**DEFAULT_IMAGING, **dict(imaging or {})}
    areas = np.unique(np.asarray(ds["area"].values)) if "area" in ds.coords else np.array([])
    one_area = CCF_AREAS.get(str(areas[0]), "VIS") if len(areas) == 1 else "VIS"
    fields["location"] = fields.get("location") or one_area
    return fields
