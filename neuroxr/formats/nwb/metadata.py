"""What an NWB file of a scan says about itself: session, subject and microscope fields, the
metadata file that sets them, and the names, units and descriptions of its series and columns.

The release records little metadata, so the defaults say what it does know (the scan, the animal,
the species, the visual area), mark the rest unknown, and label the microscope defaults as the
guesses they are. A metadata file (:func:`load_metadata`, YAML or JSON in the shape of neuroconv's:
``NWBFile``, ``Subject``, ``Ophys``) and the ``session=``, ``subject=``, ``imaging=`` arguments win
over the defaults, in that order.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from neuroxr import datamodel
from neuroxr.errors import MetadataError
from neuroxr.formats.nwb.timeline import TimeAxis

#: Allen CCF acronyms of the visual areas as the release names them.
CCF_AREAS = {"V1": "VISp", "LM": "VISl", "AL": "VISal", "RL": "VISrl", "PM": "VISpm", "AM": "VISam",
             "LI": "VISli", "POR": "VISpor", "P": "VISpl", "A": "VISa"}  # fmt: skip
#: Microscope defaults. The release records none of these: every one is a guess, and the file says so.
DEFAULT_IMAGING: dict[str, Any] = {
    "device_description": "two-photon microscope",
    "indicator": "GCaMP6s",
    "excitation_lambda": 920.0,
    "emission_lambda": 510.0,
}
#: The microscope fields ``imaging=`` (and the metadata file's ``Ophys``) may set.
IMAGING_KEYS = ("device_description", "device_manufacturer", "indicator", "excitation_lambda", "emission_lambda",
                "location", "imaging_rate", "plane_description", "channel_description")  # fmt: skip
#: The NWBFile fields a user may set (``session=``, the metadata file's ``NWBFile``).
SESSION_KEYS_FROM_USER = (
    "session_description", "identifier", "session_start_time", "session_id", "experimenter", "lab",
    "institution", "experiment_description", "keywords", "related_publications", "notes",
    "pharmacology", "protocol", "surgery", "virus", "stimulus_notes", "data_collection", "source_script",
)  # fmt: skip
#: The ``pynwb.file.Subject`` fields a user may set (``subject=``, the metadata file's ``Subject``).
SUBJECT_KEYS = ("subject_id", "species", "sex", "age", "age__reference", "date_of_birth", "description",
                "genotype", "strain", "weight")  # fmt: skip
#: The sections of a metadata file, and the keys of its ``Ophys`` entries (neuroconv's shape).
METADATA_SECTIONS = ("NWBFile", "Subject", "Ophys")
OPHYS_KEYS = {
    "Device": {"name": None, "description": "device_description", "manufacturer": "device_manufacturer"},
    "ImagingPlane": {"name": None, "description": "plane_description", "indicator": "indicator",
                     "excitation_lambda": "excitation_lambda", "location": "location", "imaging_rate": "imaging_rate",
                     "optical_channel": None},  # fmt: skip
    "optical_channel": {"name": None, "description": "channel_description", "emission_lambda": "emission_lambda"},
}

_WINDOW = (
    "The release does not document the response window or the deconvolution method (its README: "
    "deconvolved activity in response to the image shown); the values are as stored, in arbitrary units."
)
#: Descriptions of the table columns and series, by Dataset name.
DESCRIPTIONS = {
    "file_number": "the trial's file number X of data/*/X.npy (the trial label of the neuroxr Dataset)",
    "tier": "data split of the trial as stored in meta/trials/tiers (Sensorium 2022: train, validation, test = "
    "the live-test images, final_test = competition scans only; 2023: train, oracle, live_test_main, "
    "live_test_bonus, final_test_main, final_test_bonus, none)",
    "image_id": "frame_image_id: id of the image shown; repeats of an image share it (StimulusImages entry image_<id>)",
    "trial_idx": "trial index within the recording session, the true presentation order (meta/trials/trial_idx); "
    "a 32-character hash in the competition scans",
    "frame_image_class": "class of the image shown (meta/trials/frame_image_class)",
    "frame_trial_ts": "time of the trial as the release records it: the text of a pandas Timestamp, 1 s "
    "resolution, no time zone (start_time is derived from it)",
    "condition_hash": "hash of the stimulus condition (meta/trials/condition_hash)",
    datamodel.WITHHELD_COORD: "True where the release withholds the responses of the trial (test tiers of the "
    "competition scans: zeros on disk, written here as NaN)",
    "n_frames": "frames of the trial before its padding (the index of the first NaN frame of its video); the trial "
    "lasts n_frames / frame_rate s",
    "area": "visual area as the release names it (e.g. V1); ImagingPlane.location holds its Allen CCF acronym",
    "layer": "cortical layer as the release names it (e.g. L2/3)",
    "animal_id": "animal id (meta/neurons/animal_ids)",
    "session": "session number (meta/neurons/sessions)",
    "scan_idx": "scan number within the session (meta/neurons/scan_idx)",
    "cell_motor_coordinates": "x, y, z position of the neuron in micrometres (microscope motor coordinates, "
    "meta/neurons/cell_motor_coordinates)",
    "pupil_dilation": "pupil dilation (size) measured on the eye camera, data/behavior column 0; the release "
    "documents neither its unit nor how it is summarised per trial",
    "pupil_dilation_derivative": "temporal derivative of the pupil dilation, data/behavior column 1; unit and "
    "per-trial summary not documented by the release",
    "running_speed": "running speed on the treadmill (can be negative), the last data/behavior column; unit "
    "and per-trial summary not documented by the release",
}
#: NWB units of the series, by Dataset name ("a.u.": the release documents no unit).
UNITS = {"responses": "a.u.", "pupil_dilation": "a.u.", "pupil_dilation_derivative": "a.u.",
         "running_speed": "a.u.", "pupil_center": "pixels"}  # fmt: skip
#: Trial coordinates that repeat what Subject and session say (left out of the trials table when constant).
SUBJECT_FACTS = {"meta/trials/animal_id.npy", "meta/trials/session.npy", "meta/trials/scan_idx.npy",
                 "meta/neurons/animal_ids.npy", "meta/neurons/sessions.npy", "meta/neurons/scan_idx.npy"}  # fmt: skip
#: The trials column of ``responses_withheld`` (nwbinspector's ``is_*`` convention for flags).
WITHHELD_COLUMN = "is_response_withheld"
FILE_NUMBER_COLUMN = "file_number"
MOTOR_COORDINATES = "cell_motor_coordinates"
#: Column names the NWB trials table and PlaneSegmentation keep for themselves.
TRIALS_RESERVED = {"id", "start_time", "stop_time", "tags", "tags_index", "timeseries", "timeseries_index",
                   FILE_NUMBER_COLUMN}  # fmt: skip
ROIS_RESERVED = {"id", "image_mask", "pixel_mask", "pixel_mask_index", "voxel_mask", "voxel_mask_index",
                 "reference_images"}  # fmt: skip


def describe(name: str, variable: xr.Variable) -> str:
    """The description of the column or series holding ``variable``: a known one, else its long name,
    and the release file it comes from.

    >>> describe("layer", xr.Variable("neuron", ["L4"], {"sensorium_file": "meta/neurons/layer.npy"}))
    'cortical layer as the release names it (e.g. L2/3); release file meta/neurons/layer.npy'
    """
    text = DESCRIPTIONS.get(name) or str(variable.attrs.get("long_name") or f"{name}, as given in the Dataset")
    source = variable.attrs.get(datamodel.FILE_ATTR)
    if source and Path(str(source)).with_suffix("").as_posix() not in text:
        text = f"{text}; release file {source}"
    return text


def repeats_subject(variable: xr.Variable) -> bool:
    """Whether ``variable`` is a constant copy of a Subject or session fact (animal, session, scan).

    >>> repeats_subject(xr.Variable("trial", [7, 7], {"sensorium_file": "meta/trials/animal_id.npy"}))
    True
    """
    if variable.attrs.get(datamodel.FILE_ATTR) not in SUBJECT_FACTS or variable.ndim != 1 or variable.size == 0:
        return False
    values = np.asarray(variable.values)
    return bool((values == values[0]).all())


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


# ----------------------------------------------------------------------------------------------
# metadata from the user


@dataclass
class Metadata:
    """The user's metadata, by NWB object: NWBFile fields, Subject fields, microscope fields."""

    session: dict[str, Any] = field(default_factory=dict)
    subject: dict[str, Any] = field(default_factory=dict)
    imaging: dict[str, Any] = field(default_factory=dict)


def load_metadata(source: str | os.PathLike[str] | Mapping[str, Any]) -> Metadata:
    """A metadata file (YAML or JSON; or its content as a mapping) read and checked.

    Its shape is neuroconv's: ``NWBFile`` (NWBFile fields), ``Subject`` (Subject fields) and
    ``Ophys`` (``Device`` and ``ImagingPlane``, each a mapping or a list of one, the plane with an
    ``optical_channel``). An unknown section or key is a :class:`~neuroxr.errors.MetadataError`
    naming the file and the key.

    >>> path = tmp / "metadata.yaml"
    >>> _ = path.write_text("Subject:\\n  sex: F\\n  age: P90D\\nOphys:\\n  ImagingPlane:\\n    - indicator: GCaMP6f\\n")
    >>> metadata = load_metadata(path)
    >>> metadata.subject, metadata.imaging
    ({'sex': 'F', 'age': 'P90D'}, {'indicator': 'GCaMP6f'})
    """
    if isinstance(source, Mapping):
        where, content = "metadata", dict(source)
    else:
        where = str(source)
        content = _read_metadata_file(Path(source))
    if not isinstance(content, Mapping):
        raise MetadataError(where, None, f"expected a mapping of {', '.join(METADATA_SECTIONS)}, found {type(content).__name__}")
    unknown = [key for key in content if key not in METADATA_SECTIONS]
    if unknown:
        raise MetadataError(where, unknown[0], f"unknown section; expected some of {', '.join(METADATA_SECTIONS)}")
    session = _section(content, "NWBFile", SESSION_KEYS_FROM_USER, where)
    subject = _section(content, "Subject", SUBJECT_KEYS, where)
    imaging: dict[str, Any] = {}
    ophys = content.get("Ophys") or {}
    if not isinstance(ophys, Mapping):
        raise MetadataError(where, "Ophys", f"expected a mapping of Device and ImagingPlane, found {type(ophys).__name__}")
    for key, value in ophys.items():
        if key not in ("Device", "ImagingPlane"):
            raise MetadataError(where, f"Ophys.{key}", "unknown key; expected Device or ImagingPlane")
        entry = _one_entry(value, f"Ophys.{key}", where)
        imaging.update(_ophys_entry(entry, key, f"Ophys.{key}", where))
        if key == "ImagingPlane" and entry.get("optical_channel") is not None:
            channel = _one_entry(entry["optical_channel"], "Ophys.ImagingPlane.optical_channel", where)
            imaging.update(_ophys_entry(channel, "optical_channel", "Ophys.ImagingPlane.optical_channel", where))
    return Metadata(session, subject, imaging)


def _read_metadata_file(path: Path) -> Any:
    if not path.is_file():
        raise MetadataError(path, None, "no such metadata file")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        from ruamel.yaml import YAML  # hdmf's YAML library, so always installed with pynwb

        return YAML(typ="safe", pure=True).load(text)
    except Exception as error:  # the parsers' own errors say where
        raise MetadataError(path, None, f"not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {error}") from error


def _section(content: Mapping[str, Any], name: str, keys: tuple[str, ...], where: str) -> dict[str, Any]:
    section = content.get(name) or {}
    if not isinstance(section, Mapping):
        raise MetadataError(where, name, f"expected a mapping of fields, found {type(section).__name__}")
    for key in section:
        if key not in keys:
            raise MetadataError(where, f"{name}.{key}", f"unknown field; expected some of {', '.join(keys)}")
    return {str(key): value for key, value in section.items() if value is not None}


def _one_entry(value: Any, key: str, where: str) -> Mapping[str, Any]:
    if isinstance(value, list):
        if len(value) != 1:
            raise MetadataError(where, key, f"expected one entry (one microscope, one plane per scan), found {len(value)}")
        value = value[0]
    if not isinstance(value, Mapping):
        raise MetadataError(where, key, f"expected a mapping of fields, found {type(value).__name__}")
    return value


def _ophys_entry(entry: Mapping[str, Any], kind: str, key: str, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in entry.items():
        if name not in OPHYS_KEYS[kind]:
            raise MetadataError(where, f"{key}.{name}", f"unknown field; expected some of {', '.join(OPHYS_KEYS[kind])}")
        target = OPHYS_KEYS[kind][name]
        if target is not None and value is not None:
            out[target] = value
    return out


def merge_metadata(
    file: Metadata | None,
    session: Mapping[str, Any] | None,
    subject: Mapping[str, Any] | Any,
    imaging: Mapping[str, Any] | None,
) -> tuple[dict[str, Any], Mapping[str, Any] | Any, dict[str, Any]]:
    """The session, subject and imaging fields: the metadata file's, then the arguments' on top.

    A ``pynwb.file.Subject`` given as ``subject`` is used as it is.

    >>> merge_metadata(Metadata(subject={"sex": "F", "age": "P90D"}), None, {"age": "P12W"}, None)[1]
    {'sex': 'F', 'age': 'P12W'}
    """
    file = file or Metadata()
    merged_session = {**file.session, **dict(session or {})}
    merged_subject = subject if subject is not None and not isinstance(subject, Mapping) else {**file.subject, **dict(subject or {})}
    merged_imaging = {**file.imaging, **dict(imaging or {})}
    check_fields(merged_session, SESSION_KEYS_FROM_USER, "session")
    if isinstance(merged_subject, Mapping):
        check_fields(merged_subject, SUBJECT_KEYS, "subject")
    check_fields(merged_imaging, IMAGING_KEYS, "imaging")
    return merged_session, merged_subject, merged_imaging


def check_fields(fields: Mapping[str, Any], allowed: tuple[str, ...], what: str) -> None:
    """Raise ValueError when ``fields`` holds a key that is not ``allowed``."""
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise ValueError(f"to_nwb: unknown {what} fields {unknown}; expected some of {list(allowed)}")


# ----------------------------------------------------------------------------------------------
# the fields written


@dataclass(frozen=True)
class Content:
    """What a file holds, as its session description must say: the scan kind and the data written."""

    dynamic: bool
    behavior: bool  # behaviour and pupil position written (not wholly withheld)
    responses_withheld: bool  # some trials' responses withheld


def session_fields(
    ds: xr.Dataset, axis: TimeAxis, session: Mapping[str, Any] | None, content: Content
) -> dict[str, Any]:
    """The NWBFile keyword arguments of a scan: defaults from the Dataset, then the user's ``session``.

    The session start is the time axis' own; the user's notes come first, then what the axis and the
    values mean.

    >>> from neuroxr.formats.nwb.timeline import trial_time_axis
    >>> ds = neuroxr.make_scan(n_trials=60, n_neurons=20)
    >>> fields = session_fields(ds, trial_time_axis(ds), {"lab": "Somewhere"}, Content(False, True, False))
    >>> fields["session_id"], fields["lab"], fields["session_description"].endswith("running behaviour")
    ('30001-2-3', 'Somewhere', True)
    """
    session = dict(session or {})
    scan = str(ds.attrs.get("scan", "unknown-scan"))
    release = "Sensorium 2023" if content.dynamic else "Sensorium 2022"
    notes = [
        f"Written by neuroxr from the {release} scan {scan} ({ds.attrs.get('release_name', 'release name unknown')}).",
        axis.description,
    ]
    if content.dynamic:
        notes.append("Responses, behaviour and pupil position are sampled at every video frame, as the release "
                     "holds them; the padding after each trial's end is left out.")  # fmt: skip
    else:
        notes.append("Responses, behaviour and pupil position are one value per trial (the release holds no "
                     f"continuous traces). {_WINDOW}")  # fmt: skip
    if content.responses_withheld:
        notes.append("Responses withheld by the release are NaN (trials column is_response_withheld).")
    if session.get("notes"):
        notes.insert(0, str(session["notes"]))
    n_neurons, n_trials = ds.sizes.get("neuron", 0), ds.sizes["trial"]
    if content.dynamic:
        stimulus = f"{n_trials} natural video clips"
        what = f"deconvolved activity of {n_neurons} neurons of mouse visual cortex at {axis.frame_rate or 30:g} Hz"
    else:
        stimulus = f"{n_trials} presentations of grey natural images"
        what = f"deconvolved responses of {n_neurons} neurons of mouse visual cortex"
    behaviour = (
        "with pupil and running behaviour"
        if content.behavior
        else "without behaviour or pupil data (the release withholds them for this scan)"
    )
    kind = "video" if content.dynamic else "static-image"
    defaults: dict[str, Any] = {
        "session_description": f"{release} {kind} scan {scan}: {what} to {stimulus}, {behaviour}",
        "identifier": str(uuid.uuid4()),
        "session_id": re.sub(r"[/\\]", "-", scan),
        "experiment_description": (
            f"Two-photon imaging of mouse visual cortex while the head-fixed mouse viewed "
            f"{'natural videos' if content.dynamic else 'natural images'} on a monitor ({release} competition data)."
        ),
        "keywords": ["mouse", "visual cortex", "two-photon calcium imaging",
                     "natural videos" if content.dynamic else "natural images", "Sensorium"],  # fmt: skip
        "related_publications": [
            "https://doi.org/10.48550/arXiv.2305.19654" if content.dynamic else "https://doi.org/10.48550/arXiv.2206.08666"
        ],
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
        "description": "Mouse of the Sensorium release. The release records neither age nor sex: age 'P0D/' and "
        "sex 'U' mean unknown (give Subject.age and Subject.sex in a metadata file to record them).",
    }


def imaging_fields(ds: xr.Dataset, imaging: Mapping[str, Any] | None, *, rate: float | None) -> dict[str, Any]:
    """The microscope fields: :data:`DEFAULT_IMAGING`, then the user's ``imaging``; the ``location`` is
    the user's, else the CCF acronym of the scan's one area, else ``"VIS"``; ``imaging_rate`` the
    user's, else ``rate`` (the rate of the file's series). ``guessed`` lists the defaults kept.

    >>> fields = imaging_fields(neuroxr.make_scan(n_trials=60, n_neurons=20), {"indicator": "GCaMP6f"}, rate=None)
    >>> fields["location"], fields["guessed"]
    ('VISp', ['device_description', 'excitation_lambda', 'emission_lambda'])
    """
    given = dict(imaging or {})
    fields = {**DEFAULT_IMAGING, **given}
    fields["guessed"] = [key for key in DEFAULT_IMAGING if key not in given]
    areas = np.unique(np.asarray(ds["area"].values)) if "area" in ds.coords else np.array([])
    one_area = CCF_AREAS.get(str(areas[0]), "VIS") if len(areas) == 1 else "VIS"
    fields["location"] = fields.get("location") or one_area
    if fields.get("imaging_rate") is None and rate is not None:
        fields["imaging_rate"] = float(rate)
        fields["rate_origin"] = "the sampling rate of the released series (the microscope's own frame rate is not recorded)"
    elif fields.get("imaging_rate") is None:
        fields["rate_origin"] = "not recorded by the release (give Ophys.ImagingPlane.imaging_rate to record it)"
    return fields
