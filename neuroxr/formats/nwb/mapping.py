"""Where a scan lives in an NWB file written by neuroxr: the HDF5 paths, and the mapping document.

What NWB has no place for (dtypes, attributes, label coordinates, the Dataset's trial order) is kept
in a JSON document, ``/scratch/neuroxr_layout``; the writer records it, the reader follows it back to
the identical Dataset. Reader and writer both take their names from here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from neuroxr.errors import ScanError

#: The JSON document that maps the file back onto the Dataset: /scratch/<LAYOUT_NAME>.
LAYOUT_NAME = "neuroxr_layout"
LAYOUT_FORMAT = "neuroxr-nwb"
LAYOUT_VERSION = 1
NWB_SUFFIX = ".nwb"

#: Names and HDF5 paths of the objects the writer creates (the reader follows the layout document).
PLANE_SEGMENTATION = "PlaneSegmentation"
ROIS_PATH = f"processing/ophys/ImageSegmentation/{PLANE_SEGMENTATION}"
RESPONSES = "Deconvolved"
RESPONSES_PATH = f"processing/ophys/Fluorescence/{RESPONSES}"
TRIALS_PATH = "intervals/trials"
IMAGES = "StimulusImages"
IMAGES_PATH = f"stimulus/templates/{IMAGES}"
PRESENTATION = "StimulusPresentation"
PRESENTATION_PATH = f"stimulus/presentation/{PRESENTATION}"
BEHAVIOR_PATH = "processing/behavior"


def json_value(value: Any) -> Any:
    """A numpy scalar or array (or a list of them) as plain Python values for JSON."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [json_value(item) for item in value]
    return value


def json_attrs(attrs: Mapping[Any, Any]) -> dict[str, Any]:
    """Attributes with string keys and JSON-ready values."""
    return {str(key): json_value(value) for key, value in attrs.items()}


def load_mapping(file: Any, path: Path) -> dict[str, Any]:
    """The mapping document of an open h5py file, checked (format and version)."""
    node = file.get(f"scratch/{LAYOUT_NAME}")
    if node is None:
        raise ScanError(
            path, "not written by neuroxr.to_nwb (no /scratch/neuroxr_layout); open it with pynwb.NWBHDF5IO"
        )
    raw = node[()]
    layout = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    if layout.get("format") != LAYOUT_FORMAT or int(layout.get("version", 0)) > LAYOUT_VERSION:
        found = f"layout {layout.get('format')!r} version {layout.get('version')}"
        expected = f"{LAYOUT_FORMAT!r} version <= {LAYOUT_VERSION}"
        raise ScanError(path, f"{found}: expected {expected}; upgrade neuroxr")
    return layout
