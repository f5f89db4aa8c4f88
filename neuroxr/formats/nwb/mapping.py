"""Where a scan lives in an NWB file written by neuroxr: the HDF5 paths, and the mapping document.

What NWB has no place for (dtypes, attributes, label coordinates, the Dataset's trial order, values
left out of the tables because they are constant) is kept in a JSON document: one entry per Dataset
variable says where its values are (``store``) and what it is (dims, shape, dtype, attributes). The
document lives in ``/general/neuroxr_layout``, a ``LabMetaData`` of the small extension
``ndx-neuroxr`` (``spec/``, cached in every file, so pynwb and the validators read it like any
extension). The writer records it in a :class:`MappingDocument`, the reader follows it back to the
identical Dataset (:func:`load_mapping`). Reader and writer both take their names from here.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from neuroxr.errors import ScanError

#: The JSON document that maps the file back onto the Dataset: /general/<MAPPING_NAME>/document.
MAPPING_NAME = "neuroxr_layout"
MAPPING_PATH = f"general/{MAPPING_NAME}/document"
#: Where version 1 files (neuroxr 0.2) kept it.
MAPPING_PATH_V1 = f"scratch/{MAPPING_NAME}"
MAPPING_FORMAT = "neuroxr-nwb"
MAPPING_VERSION = 2
NWB_SUFFIX = ".nwb"
#: The extension holding the mapping document (shipped beside this module, cached in every file).
EXTENSION_NAMESPACE = Path(__file__).with_name("spec") / "ndx-neuroxr.namespace.yaml"

#: Names and HDF5 paths of the objects the writer creates (the reader follows the mapping document).
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
MISC_PATH = "processing/misc"
VIDEO = "StimulusVideo"
VIDEO_PATH = f"stimulus/presentation/{VIDEO}"


@functools.cache
def layout_class() -> type:
    """The pynwb class of the mapping document's container (the extension is loaded on first use)."""
    import pynwb

    pynwb.load_namespaces(str(EXTENSION_NAMESPACE))
    return pynwb.get_class("NeuroxrLayout", "ndx-neuroxr")


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


class MappingDocument:
    """The mapping document of one file being written: :meth:`record` each variable where it goes,
    then store :meth:`text` in the file.

    ``dataset_rows`` is how Dataset trials map onto NWB rows (``timeline.dataset_rows``); ``tree``
    the node name and root attributes of a DataTree export.

    >>> document = MappingDocument(xr.Dataset(coords={"trial": [0, 1]}), dataset_rows="sorted_file_numbers")
    >>> store = dataset_store("intervals/trials/file_number", trial_rows=True)
    >>> document.record("trial", xr.Variable("trial", [0, 1]), store)
    >>> document.has("trial"), json.loads(document.text())["variables"]["trial"]["store"]["path"]
    (True, 'intervals/trials/file_number')
    """

    def __init__(
        self, ds: xr.Dataset, *, dataset_rows: str | list[int], tree: Mapping[str, Any] | None = None
    ) -> None:
        self.content: dict[str, Any] = {
            "format": MAPPING_FORMAT,
            "version": MAPPING_VERSION,
            "attrs": json_attrs(ds.attrs),
            "data_vars": [str(name) for name in ds.data_vars],
            "coords": [str(name) for name in ds.coords],
            "variables": {},
        }
        if tree is not None:
            self.content["tree"] = tree
        self.content["dataset_rows"] = dataset_rows

    def record(self, name: Any, variable: xr.Variable, store: dict[str, Any]) -> None:
        """Record the Dataset variable ``name`` as stored in ``store`` (a recorded name is replaced in place)."""
        self.content["variables"][str(name)] = {
            "dims": [str(dim) for dim in variable.dims],
            "shape": [int(size) for size in variable.shape],
            "dtype": variable.dtype.str,
            "attrs": json_attrs(variable.attrs),
            "store": store,
        }

    def has(self, name: Any) -> bool:
        """Whether the variable ``name`` is recorded."""
        return str(name) in self.content["variables"]

    def text(self) -> str:
        """The document as compact JSON, as it is stored in the file."""
        return json.dumps(self.content, separators=(",", ":"))


def dataset_store(path: str, *, trial_rows: bool = False) -> dict[str, Any]:
    """A ``store`` entry: the variable is the HDF5 dataset ``path`` (rows in NWB row order if ``trial_rows``).

    >>> dataset_store("intervals/trials/tier", trial_rows=True)
    {'kind': 'dataset', 'path': 'intervals/trials/tier', 'trial_rows': True}
    """
    return {"kind": "dataset", "path": path, "trial_rows": True} if trial_rows else {"kind": "dataset", "path": path}


def constant_store(value: Any) -> dict[str, Any]:
    """A ``store`` entry: every element of the variable is ``value`` (left out of the file's tables).

    >>> constant_store(np.uint16(30001))
    {'kind': 'constant', 'value': 30001}
    """
    return {"kind": "constant", "value": json_value(value)}


def load_mapping(file: Any, path: Path) -> dict[str, Any]:
    """The mapping document of an open h5py file, checked (format and version)."""
    node = file.get(MAPPING_PATH)
    if node is None:
        node = file.get(MAPPING_PATH_V1)
    if node is None:
        raise ScanError(
            path, f"not written by neuroxr.to_nwb (no /{MAPPING_PATH}); open it with pynwb.NWBHDF5IO"
        )
    raw = node[()]
    document = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    if document.get("format") != MAPPING_FORMAT or int(document.get("version", 0)) > MAPPING_VERSION:
        found = f"layout {document.get('format')!r} version {document.get('version')}"
        expected = f"{MAPPING_FORMAT!r} version <= {MAPPING_VERSION}"
        raise ScanError(path, f"{found}: expected {expected}; upgrade neuroxr")
    return document
