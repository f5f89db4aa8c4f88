"""NWB writing: one scan (a Dataset of the data model) into one NWB 2 file (HDF5), streamed.

:func:`write_nwb_file` is the whole recipe, one step per NWB object in the order they depend on each
other: the NWBFile and its subject, the neurons (PlaneSegmentation), the trials table, the images,
the responses, behaviour and pupil position, then everything else in ``/scratch``. Each ``add_*``
step adds its objects to the NWBFile, records where each Dataset variable went in the
:class:`~neuroxr.formats.nwb.mapping.MappingDocument`, and returns what a later step needs. The
mapping is explained in ``docs/nwb.md``.

Small things (tables, labels, behaviour, statistics) are built in memory; the big ones stream
block by block from the dask arrays, the next block computed in a background thread while the
current one is written:

- responses go through an hdmf ``GenericDataChunkIterator`` (``streams``). Rows are written in
  presentation order (NWB times must ascend) while a scan's files usually are not; when the orders
  differ the responses are first spilled in file order to a raw scratch file (in the background,
  while pynwb builds the file) and read back row by row, so the source is read once and never held
  whole in memory.
- images (``images``): pynwb writes the structure with a placeholder; then one pass over the image
  blocks adds each distinct image (per image id, compared byte for byte) with h5py's low-level API
  and the attributes pynwb would give it, as uint8 where that is exact. pynwb itself spends
  milliseconds on each of thousands of Image objects.

Scratch files sit beside the target and are removed at the end, whatever happens.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from neuroxr import chunking, datamodel
from neuroxr.formats._write import BlockStream, Progress
from neuroxr.formats.nwb import mapping
from neuroxr.formats.nwb.images import ImageGroup, write_distinct_images
from neuroxr.formats.nwb.mapping import MappingDocument, dataset_store, json_value
from neuroxr.formats.nwb.metadata import (
    DESCRIPTIONS,
    MOTOR_COORDINATES,
    ROIS_RESERVED,
    TRIALS_RESERVED,
    WITHHELD_COLUMN,
    check_session_fields,
    column_name,
    default_subject,
    describe,
    imaging_fields,
    session_fields,
)
from neuroxr.formats.nwb.streams import BackgroundRows, ForwardRows, SpilledRows, iterator_class
from neuroxr.formats.nwb.timeline import TimeAxis, Timing, dataset_rows, trial_time_axis

#: The image pynwb writes in place of the images, which are added (and it removed) after pynwb.
PLACEHOLDER_IMAGE = "neuroxr_placeholder"
#: Coordinates no larger than this go into the mapping document as JSON values.
JSON_VALUES_LIMIT = 4096


@dataclass
class ExportOptions:
    """Everything ``to_nwb`` accepts besides the data and the target."""

    subject: Mapping[str, Any] | Any = None
    session: Mapping[str, Any] | None = None
    imaging: Mapping[str, Any] | None = None
    stimulus_duration: float = 0.5
    trial_period: float = 1.0
    compression: str | None = None
    compression_level: int | None = 1
    progress: bool = False
    tree: dict[str, Any] | None = None  # node name and root attributes, for a DataTree export
    display: Progress | None = None  # the export's one progress display (to_nwb makes it; else each file)


def compression_options(options: ExportOptions, *, shuffle: bool) -> dict[str, Any]:
    """h5py dataset keyword arguments of the chosen compression.

    >>> compression_options(ExportOptions(compression="gzip", compression_level=4), shuffle=True)
    {'compression': 'gzip', 'compression_opts': 4, 'shuffle': True}
    """
    if options.compression is None:
        return {}
    out: dict[str, Any] = {"compression": options.compression}
    if options.compression == "gzip" and options.compression_level is not None:
        out["compression_opts"] = int(options.compression_level)
    if shuffle:
        out["shuffle"] = True
    return out


def response_chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    """HDF5 chunk of the responses: 512 trials x 512 neurons (1 MB of float32), cut to the shape.

    Square-ish chunks serve both reads that matter: a block of trials for all neurons (training) and
    one neuron across all trials (tuning).

    >>> response_chunks((7000, 300))
    (512, 300)
    """
    return tuple(max(1, min(512, size)) for size in shape)


# ----------------------------------------------------------------------------------------------
# the recipe


def write_nwb_file(ds: xr.Dataset, path: str | os.PathLike[str], options: ExportOptions) -> None:
    """Write one scan to the NWB file ``path`` (``neuroxr.formats.nwb.to_nwb`` gives it a temporary name first).

    The file is written as ``<path>.nwb`` (pynwb expects the suffix) and renamed to ``path``; on any
    failure neither that file nor a scratch file is left behind.

    >>> write_nwb_file(neuroxr.make_scan(n_trials=60, n_neurons=20), tmp / "scan.nwb", ExportOptions())
    >>> neuroxr.open_nwb(tmp / "scan.nwb").sizes["neuron"]
    20
    """
    from pynwb import NWBHDF5IO

    check_scan(ds)
    session = dict(options.session or {})
    axis = trial_time_axis(ds, session_start=session.get("session_start_time"), trial_period=options.trial_period)
    check_session_fields(session)
    path = Path(path)
    written = path if path.suffix == mapping.NWB_SUFFIX else path.with_name(path.name + mapping.NWB_SUFFIX)
    scratch = written.with_name(f"{written.name}.responses.raw")
    own_display = options.display is None
    if own_display:
        options = replace(options, display=Progress(options.progress, f"writing {path.name}"))
    rows = None
    try:
        rows = start_response_rows(ds, axis, scratch, options)  # a spill now overlaps building the file
        timing = Timing(axis)
        document = MappingDocument(ds, dataset_rows=dataset_rows(ds, axis), tree=options.tree)
        nwbfile = make_nwbfile(ds, axis, options)
        segmentation = add_neurons(nwbfile, ds, options, document)
        add_trials(nwbfile, ds, axis, options, document)
        images = add_images(nwbfile, ds, axis, timing, document)
        add_responses(nwbfile, ds, segmentation, rows, timing, options, document)
        add_behavior(nwbfile, ds, axis, timing, document)
        add_pupil_center(nwbfile, ds, axis, timing, document)
        add_remaining_variables(nwbfile, ds, options, document)
        add_mapping_document(nwbfile, document)
        with NWBHDF5IO(str(written), "w") as io:
            io.write(nwbfile)
        if images is not None:
            fill_images(written, ds, images, axis, options, document)
        if written != path:
            os.replace(written, path)
    finally:
        if rows is not None:
            rows.close()
        scratch.unlink(missing_ok=True)
        if written != path:
            written.unlink(missing_ok=True)
        if own_display and options.display is not None:
            options.display.close()


def check_scan(ds: xr.Dataset) -> None:
    """Raise ValueError unless ``ds`` has trials, and its trial and neuron labels are unique integers
    (they become NWB table ids)."""
    for dim in ("trial", "neuron"):
        if dim not in ds.dims:
            continue
        values = np.asarray(ds[dim].values)
        if values.dtype.kind not in "iu":
            raise ValueError(f"to_nwb: expected integer {dim} labels (NWB table ids), found dtype {values.dtype}")
        if len(np.unique(values)) != len(values):
            raise ValueError(f"to_nwb: expected unique {dim} labels (NWB table ids), found repeats")
    if "trial" not in ds.dims:
        raise ValueError("to_nwb: expected a Dataset with a 'trial' dimension (one scan of the data model)")


# ----------------------------------------------------------------------------------------------
# the NWBFile and its subject


def make_nwbfile(ds: xr.Dataset, axis: TimeAxis, options: ExportOptions) -> Any:
    """The NWBFile of a scan, with its session fields and subject (defaults, then the user's)."""
    from pynwb import NWBFile
    from pynwb.file import Subject

    nwbfile = NWBFile(**session_fields(ds, axis, options.session))
    subject = options.subject
    if subject is None or isinstance(subject, Mapping):
        nwbfile.subject = Subject(**{**default_subject(ds), **dict(subject or {})})
    else:
        nwbfile.subject = subject
    return nwbfile


# ----------------------------------------------------------------------------------------------
# neurons and trials


def add_neurons(nwbfile: Any, ds: xr.Dataset, options: ExportOptions, document: MappingDocument) -> Any:
    """The microscope, the imaging plane and the PlaneSegmentation of the neurons (one row per unit id,
    one column per neuron coordinate) in the ``ophys`` processing module.

    Returns the PlaneSegmentation (the responses point at it), or None when the scan has no neurons.
    """
    from hdmf.common import VectorData, VectorIndex
    from pynwb.ophys import ImageSegmentation, PlaneSegmentation

    if "neuron" not in ds.dims:
        return None
    n = ds.sizes["neuron"]
    voxels, origin = _voxels(ds)
    plane = _add_imaging_plane(nwbfile, imaging_fields(ds, options.imaging), origin)
    voxel_data = VectorData(name="voxel_mask", description="one voxel per neuron: its motor position "
                            "in micrometres, rounded, from the ImagingPlane origin", data=voxels)  # fmt: skip
    voxel_index = VectorIndex(name="voxel_mask_index", data=np.arange(1, n + 1, dtype=np.int64), target=voxel_data)
    neuron_ids = np.asarray(ds["neuron"].values).astype(np.int64)
    table = PlaneSegmentation(
        name=mapping.PLANE_SEGMENTATION,
        description="The neurons of the scan, one row per neuron; id is the unit id (meta/neurons/unit_ids)",
        imaging_plane=plane,
        id=neuron_ids,
        columns=[voxel_data, voxel_index],
    )
    document.record("neuron", ds["neuron"].variable, dataset_store(f"{mapping.ROIS_PATH}/id"))
    taken: set[str] = set()
    for name, coord in ds.coords.items():
        if name == "neuron" or not coord.dims or coord.dims[0] != "neuron" or "trial" in coord.dims:
            continue
        column = column_name(str(name), taken, ROIS_RESERVED)
        table.add_column(name=column, description=describe(str(name), coord.variable), data=np.asarray(coord.values))
        document.record(name, coord.variable, dataset_store(f"{mapping.ROIS_PATH}/{column}"))
    module = nwbfile.create_processing_module(name="ophys", description="neurons and their per-trial responses")
    module.add(ImageSegmentation(name="ImageSegmentation", plane_segmentations=[table]))
    return table


def _voxels(ds: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The voxel mask rows (one voxel per neuron, its motor position rounded to 1 um from the origin)
    and that origin (the minimum position)."""
    n = ds.sizes["neuron"]
    motor = ds.coords.get(MOTOR_COORDINATES)
    if motor is not None and motor.dims == ("neuron", "space") and motor.shape[1] == 3:
        positions = np.nan_to_num(np.asarray(motor.values, dtype=np.float64))
    else:
        positions = np.zeros((n, 3))
    origin = positions.min(axis=0) if n else np.zeros(3)
    voxels = np.zeros(n, dtype=[("x", "<u4"), ("y", "<u4"), ("z", "<u4"), ("weight", "<f4")])
    for axis_index, axis_name in enumerate("xyz"):
        voxels[axis_name] = np.rint(positions[:, axis_index] - origin[axis_index]).astype(np.uint32)
    voxels["weight"] = 1.0
    return voxels, origin


def _add_imaging_plane(nwbfile: Any, imaging: Mapping[str, Any], origin: np.ndarray) -> Any:
    """The microscope and its ImagingPlane (1 um grid from ``origin``)."""
    from pynwb.ophys import OpticalChannel

    device = nwbfile.create_device(name="Microscope", description=str(imaging["device_description"]))
    channel = OpticalChannel(name="OpticalChannel", description=f"{imaging['indicator']} fluorescence",
                             emission_lambda=float(imaging["emission_lambda"]))  # fmt: skip
    return nwbfile.create_imaging_plane(
        name="ImagingPlane",
        optical_channel=channel,
        description=str(imaging["plane_description"]),
        device=device,
        excitation_lambda=float(imaging["excitation_lambda"]),
        indicator=str(imaging["indicator"]),
        location=imaging["location"],
        grid_spacing=[1.0, 1.0, 1.0],
        grid_spacing_unit="micrometers",
        origin_coords=[float(value) for value in origin],
        origin_coords_unit="micrometers",
    )


def add_trials(
    nwbfile: Any, ds: xr.Dataset, axis: TimeAxis, options: ExportOptions, document: MappingDocument
) -> None:
    """The trials table: one row per trial in presentation order, id the file number, a column per
    trial coordinate; each trial lasts ``options.stimulus_duration`` s."""
    from hdmf.common import VectorData
    from pynwb.epoch import TimeIntervals

    start = axis.start_times
    columns = [
        VectorData(name="start_time", description="trial start in seconds from the session start", data=start),
        VectorData(name="stop_time", description=f"start_time + {options.stimulus_duration:g} s "
                   "(nominal image presentation)", data=start + float(options.stimulus_duration)),  # fmt: skip
    ]
    document.record("trial", ds["trial"].variable, dataset_store(f"{mapping.TRIALS_PATH}/id", trial_rows=True))
    taken: set[str] = set()
    for name, coord in ds.coords.items():
        if name == "trial" or not coord.dims or coord.dims[0] != "trial" or "neuron" in coord.dims:
            continue
        wanted = WITHHELD_COLUMN if name == datamodel.WITHHELD_COORD else str(name)
        column = column_name(wanted, taken, TRIALS_RESERVED)
        values = axis.in_rows(np.asarray(coord.values))
        columns.append(VectorData(name=column, description=describe(str(name), coord.variable), data=values))
        document.record(name, coord.variable, dataset_store(f"{mapping.TRIALS_PATH}/{column}", trial_rows=True))
    nwbfile.trials = TimeIntervals(
        name="trials",
        description="One row per trial (image presentation), in presentation order; id is the trial's "
        "file number X of data/*/X.npy. " + axis.description,
        id=axis.in_rows(np.asarray(ds["trial"].values)).astype(np.int64),
        columns=columns,
    )


# ----------------------------------------------------------------------------------------------
# images


def add_images(
    nwbfile: Any, ds: xr.Dataset, axis: TimeAxis, timing: Timing, document: MappingDocument
) -> dict[str, Any] | None:
    """The Images container and the IndexSeries of the trials; the images themselves come after pynwb.

    pynwb writes the structure with a one-pixel placeholder image and zeros for the presentation
    index; :func:`fill_images` then streams the distinct images into the written file. Returns the
    images' mapping entry, which :func:`fill_images` completes, or None when the Dataset has no
    images NWB can hold as such (they then go to ``/scratch`` with the other variables).
    """
    from pynwb.base import ImageReferences, Images
    from pynwb.image import GrayscaleImage, IndexSeries

    images = ds.get("images")
    if images is None or images.dims[0] != "trial" or images.ndim not in (3, 4):
        return None
    if images.ndim == 4 and images.shape[1] not in (1, 3, 4):
        return None
    placeholder = GrayscaleImage(name=PLACEHOLDER_IMAGE, data=np.zeros((1, 1), dtype=np.uint8),
                                 description="placeholder, replaced by the images")  # fmt: skip
    container = Images(
        name=mapping.IMAGES,
        images=[placeholder],
        description=(
            "The distinct images shown, one per frame_image_id (image_<id>; image_<id>_v<k> if trials with "
            "one id showed different pixels), rows y and columns x. Grey levels that are all integers in "
            "0-255 are stored as uint8 (the release holds float32; neuroxr.open_nwb restores it)."
        ),
        order_of_images=ImageReferences(name="order_of_images", data=[placeholder]),
    )
    nwbfile.add_stimulus_template(container)
    series = IndexSeries(
        name=mapping.PRESENTATION,
        data=np.zeros(ds.sizes["trial"], dtype=np.uint32),
        indexed_images=container,
        unit="N/A",
        description="Which image each trial showed: index into StimulusImages.order_of_images, one "
        "sample per trial in presentation order",
        comments=axis.description,
        **timing.kwargs(),
    )
    nwbfile.add_stimulus(series)
    timing.register(series)
    store: dict[str, Any] = {
        "kind": "images",
        "presentation": f"{mapping.PRESENTATION_PATH}/data",
        "order": f"{mapping.IMAGES_PATH}/order_of_images",
        "names": [],  # as order_of_images lists them (dereferencing thousands of references is slow)
        "trial_rows": True,
        "channel_axis": "none" if images.ndim == 3 else "first",
    }
    document.record("images", images.variable, store)
    return store


def fill_images(
    path: Path,
    ds: xr.Dataset,
    store: Mapping[str, Any],
    axis: TimeAxis,
    options: ExportOptions,
    document: MappingDocument,
) -> None:
    """The pass over the file pynwb wrote: the distinct images in place of the placeholder.

    Streams the distinct images into ``StimulusImages``, lists them by image id in
    ``order_of_images``, fills the ``StimulusPresentation`` index, and records their names (the
    images' ``store`` as :func:`add_images` returned it) in the stored mapping document.
    """
    import h5py

    images = _chunked(ds["images"])
    channel_axis = 1 if images.ndim == 4 else None
    if "image_id" in ds.coords and ds["image_id"].dims == ("trial",):
        image_ids = np.asarray(ds["image_id"].values)
    else:
        image_ids = np.asarray(ds["trial"].values)
    with h5py.File(path, "r+") as file:
        group = ImageGroup(file[mapping.IMAGES_PATH], compression_options(options, shuffle=False))
        distinct = write_distinct_images(
            images, image_ids, group, channel_axis=channel_axis, trial_labels=np.asarray(ds["trial"].values),
            progress=options.display,
        )  # fmt: skip
        by_id = sorted(
            range(len(distinct.names)), key=lambda k: (_sort_key(distinct.image_ids[k]), distinct.first_trial[k])
        )
        ordered_names = [distinct.names[k] for k in by_id]
        group.set_order(ordered_names)
        del group.group[PLACEHOLDER_IMAGE]
        position = np.empty(len(by_id), dtype=np.int64)
        position[by_id] = np.arange(len(by_id))
        presented = axis.in_rows(position[distinct.image_of_trial]).astype(np.uint32)
        file[f"{mapping.PRESENTATION_PATH}/data"][...] = presented
        document.record("images", ds["images"].variable, {**store, "names": ordered_names})
        file[f"scratch/{mapping.MAPPING_NAME}"][()] = document.text()


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, (int, float, np.integer, np.floating)) else (1, str(value))


def _chunked(array: xr.DataArray) -> xr.DataArray:
    """``array`` as a dask array: one chunk when it is held in memory."""
    return array.chunk({"trial": max(1, array.sizes["trial"])}) if array.chunks is None else array


# ----------------------------------------------------------------------------------------------
# responses


@dataclass(frozen=True)
class ResponseRows:
    """The responses in NWB row order: NWB row k is ``source.get(order[k])``, or row k itself when
    ``order`` is None (the Dataset is in presentation order and its blocks are read forward).

    When the orders differ, ``source`` is the spill: the responses copied in Dataset order to a raw
    scratch file by a background thread. :meth:`close` ends the background threads either way (and
    removes the spill's file).
    """

    source: ForwardRows | BackgroundRows
    order: np.ndarray | None

    def close(self) -> None:
        """End the background threads of ``source`` and remove its scratch file, if any."""
        self.source.close()


def start_response_rows(
    ds: xr.Dataset, axis: TimeAxis, scratch: Path, options: ExportOptions
) -> ResponseRows | None:
    """The responses' rows for :func:`add_responses`; when they must be reordered, the spill to the
    raw file ``scratch`` starts now, in the background. None when the Dataset has no (trial, neuron)
    responses. The caller closes the result, however the export ends.
    """
    responses = ds.get("responses")
    if responses is None or responses.dims != ("trial", "neuron"):
        return None
    stream = BlockStream(_chunked(responses).data)
    if axis.identity:
        return ResponseRows(ForwardRows(stream), None)

    display = options.display
    if display is not None:
        display.add(len(stream))

    def spill() -> SpilledRows:
        return SpilledRows(stream, scratch, on_block=display.advance if display is not None else None)

    return ResponseRows(BackgroundRows(spill, tuple(int(size) for size in responses.shape)), axis.rows)


def add_responses(
    nwbfile: Any,
    ds: xr.Dataset,
    segmentation: Any,
    rows: ResponseRows | None,
    timing: Timing,
    options: ExportOptions,
    document: MappingDocument,
) -> None:
    """The RoiResponseSeries ``Deconvolved`` in ``ophys/Fluorescence``, over every row of
    ``segmentation``, its data streamed from ``rows`` (nothing when either is None)."""
    from hdmf.backends.hdf5 import H5DataIO
    from pynwb.ophys import Fluorescence, RoiResponseSeries

    if rows is None or segmentation is None:
        return
    responses = ds["responses"]
    chunk = response_chunks(responses.shape)
    row_bytes = max(1, responses.shape[1] * responses.dtype.itemsize)
    buffer_rows = min(chunk[0] * max(1, chunking.CHUNK_BYTES // (row_bytes * chunk[0])), responses.shape[0])
    display = options.display
    if display is not None:
        display.add(-(-responses.shape[0] // max(1, buffer_rows)))
    iterator = iterator_class()(
        rows.source,
        rows.order,
        responses.dtype,
        chunk_shape=chunk,
        buffer_shape=(buffer_rows, responses.shape[1]),
        on_buffer=display.advance if display is not None else None,
    )
    region = segmentation.create_roi_table_region(
        region=list(range(ds.sizes["neuron"])), description="all neurons, in unit id order"
    )
    series = RoiResponseSeries(
        name=mapping.RESPONSES,
        data=H5DataIO(iterator, **compression_options(options, shuffle=True)),
        rois=region,
        unit="n.a.",
        description="Deconvolved calcium activity of each neuron in response to the image of each trial, "
        "one value per trial (trials in presentation order; neurons as the PlaneSegmentation rows). "
        "Withheld responses are NaN.",
        comments=timing.axis.description,
        **timing.kwargs(),
    )
    fluorescence = Fluorescence(name="Fluorescence")
    nwbfile.processing["ophys"].add(fluorescence)  # first, so that the rois region shares an ancestor with its table
    fluorescence.add_roi_response_series(series)
    timing.register(series)
    document.record("responses", responses.variable, dataset_store(f"{mapping.RESPONSES_PATH}/data", trial_rows=True))


# ----------------------------------------------------------------------------------------------
# behaviour


def add_behavior(nwbfile: Any, ds: xr.Dataset, axis: TimeAxis, timing: Timing, document: MappingDocument) -> None:
    """One TimeSeries per behaviour variable: the pupil ones in ``behavior/PupilTracking``, the others
    (running speed) in ``behavior/BehavioralTimeSeries``. Wholly withheld behaviour is left out
    (recorded as absent)."""
    from pynwb.base import TimeSeries
    from pynwb.behavior import BehavioralTimeSeries, PupilTracking

    behavior = ds.get("behavior")
    if behavior is None or behavior.dims != ("trial", "behavior_variable"):
        return
    values = np.asarray(behavior.values)
    if _wholly_withheld(ds, "behavior", values):
        document.record("behavior", behavior.variable, {"kind": "absent"})
        return
    pupil, other, paths = [], [], []
    for index, label in enumerate(np.asarray(ds["behavior_variable"].values).tolist()):
        series_name = re.sub(r"[/:]", "_", str(label))
        series = TimeSeries(
            name=series_name,
            data=axis.in_rows(values[:, index]),
            unit="n.a.",
            description=DESCRIPTIONS.get(str(label), f"{label}, one value per trial"),
            comments=axis.description,
            **timing.kwargs(),
        )
        timing.register(series)
        container = "PupilTracking" if str(label).startswith("pupil") else "BehavioralTimeSeries"
        (pupil if container == "PupilTracking" else other).append(series)
        paths.append(f"{mapping.BEHAVIOR_PATH}/{container}/{series_name}/data")
    if pupil:
        _behavior_module(nwbfile).add(PupilTracking(name="PupilTracking", time_series=pupil))
    if other:
        _behavior_module(nwbfile).add(BehavioralTimeSeries(name="BehavioralTimeSeries", time_series=other))
    document.record("behavior", behavior.variable, {"kind": "columns", "paths": paths, "trial_rows": True})


def add_pupil_center(
    nwbfile: Any, ds: xr.Dataset, axis: TimeAxis, timing: Timing, document: MappingDocument
) -> None:
    """The SpatialSeries ``pupil_center`` in ``behavior/EyeTracking``; left out (recorded as absent)
    when wholly withheld."""
    from pynwb.behavior import EyeTracking, SpatialSeries

    center = ds.get("pupil_center")
    if center is None or center.dims != ("trial", "pupil_axis") or center.shape[1] not in (1, 2, 3):
        return
    values = np.asarray(center.values)
    if _wholly_withheld(ds, "pupil_center", values):
        document.record("pupil_center", center.variable, {"kind": "absent"})
        return
    series = SpatialSeries(
        name="pupil_center",
        data=axis.in_rows(values),
        reference_frame="pupil centre in the eye-camera image: columns are the horizontal (x) and "
        "vertical (y) position as stored by the release",
        unit="n.a.",
        description=str(center.attrs.get("long_name", "pupil centre position")) + ", one value per trial",
        comments=axis.description,
        **timing.kwargs(),
    )
    timing.register(series)
    _behavior_module(nwbfile).add(EyeTracking(name="EyeTracking", spatial_series=[series]))
    path = f"{mapping.BEHAVIOR_PATH}/EyeTracking/pupil_center/data"
    document.record("pupil_center", center.variable, dataset_store(path, trial_rows=True))


def _behavior_module(nwbfile: Any) -> Any:
    """The ``behavior`` processing module, created on first use."""
    if "behavior" not in nwbfile.processing:
        nwbfile.create_processing_module(name="behavior", description="pupil and running behaviour, one value per trial")
    return nwbfile.processing["behavior"]


def _wholly_withheld(ds: xr.Dataset, name: str, values: np.ndarray) -> bool:
    """Whether the release withholds all of variable ``name`` (its values are then all NaN)."""
    withheld = datamodel.withheld_variables(ds.attrs)
    return name in withheld and values.size > 0 and values.dtype.kind == "f" and bool(np.isnan(values).all())


# ----------------------------------------------------------------------------------------------
# everything else, and the mapping document


def add_remaining_variables(
    nwbfile: Any, ds: xr.Dataset, options: ExportOptions, document: MappingDocument
) -> None:
    """Every variable not yet recorded (statistics, label coordinates, any other): small coordinates as
    JSON values in the mapping document, the rest as ``/scratch`` arrays."""
    from hdmf.backends.hdf5 import H5DataIO

    for name, variable in ds.variables.items():
        if document.has(name):
            continue
        if name in ds.coords and variable.size <= JSON_VALUES_LIMIT and variable.dtype.kind in "biufUM":
            values = np.asarray(variable.values)
            if values.dtype.kind == "M":
                values = values.astype(str)
            document.record(name, variable, {"kind": "values", "values": json_value(values)})
            continue
        scratch_name = f"neuroxr_{name}" if name in (mapping.MAPPING_NAME,) else str(name)
        description = f"neuroxr: the xarray variable {name!r} with dims ({', '.join(map(str, variable.dims))})"
        if variable.chunks is not None and variable.dims and variable.dims[0] == "trial":
            source = ForwardRows(BlockStream(variable.data))
            shape = variable.shape
            chunk = tuple(max(1, min(size, 512 if axis == 0 else size)) for axis, size in enumerate(shape))
            iterator = iterator_class()(source, None, variable.dtype, chunk_shape=chunk,
                                         buffer_shape=(chunk[0], *shape[1:]))  # fmt: skip
            data: Any = H5DataIO(iterator, **compression_options(options, shuffle=True))
        else:
            data = np.asarray(variable.values)
            if data.dtype.kind == "U":
                data = data.astype(object)
        nwbfile.add_scratch(data, name=scratch_name, description=description)
        document.record(name, variable, dataset_store(f"scratch/{scratch_name}"))


def add_mapping_document(nwbfile: Any, document: MappingDocument) -> None:
    """The mapping document as it stands, in ``/scratch`` (``fill_images`` rewrites it with the image names)."""
    nwbfile.add_scratch(
        document.text(),
        name=mapping.MAPPING_NAME,
        description="neuroxr: how this file maps back onto the xarray Dataset it was written from "
        "(JSON; read by neuroxr.open_nwb)",
    )
