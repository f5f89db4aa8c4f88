"""NWB writing: one scan (a Dataset of the data model) into one NWB 2 file (HDF5), streamed.

The mapping is in ``docs/nwb.md``. Small things (tables, labels, behaviour, statistics) are built in
memory; the big ones stream block by block from the dask arrays, the next block computed in a
background thread while the current one is written:

- responses go through an hdmf ``GenericDataChunkIterator`` (``streams``). Rows are written in presentation order
  (NWB times must ascend) while a scan's files usually are not; when the orders differ the responses
  are first spilled in file order to a raw scratch file (in the background, while pynwb builds the
  file) and read back row by row, so the source is read once and never held whole in memory.
- images (``images``): pynwb writes the structure with a placeholder; then one pass over the image blocks adds
  each distinct image (per image id, compared byte for byte) with h5py's low-level API and the
  attributes pynwb would give it, as uint8 where that is exact. pynwb itself spends milliseconds on
  each of thousands of Image objects.

Everything xarray and NWB cannot say to each other (dtypes, attributes, label coordinates, the
Dataset's trial order) goes into a JSON document in ``/scratch/neuroxr_layout``; ``read`` follows
it back to the identical Dataset. Scratch files sit beside the target and are removed at the end.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from neuroxr import datamodel
from neuroxr.formats.nwb import mapping
from neuroxr.formats.nwb.mapping import MappingDocument, dataset_store, json_value
from neuroxr.formats.nwb.images import ImageGroup, write_distinct_images
from neuroxr.formats._write import BlockStream, progress_bar
from neuroxr.formats.nwb.streams import BackgroundRows, ForwardRows, SpilledRows, iterator_class
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
from neuroxr.formats.nwb.timeline import Timing, dataset_rows, trial_time_axis


#: The image pynwb writes in place of the images, which are added (and it removed) after pynwb.
PLACEHOLDER_IMAGE = "neuroxr_placeholder"


#: Coordinates no larger than this go into the mapping document as JSON values.
JSON_VALUES_LIMIT = 4096


# ----------------------------------------------------------------------------------------------
# the file


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


def compression_options(options: ExportOptions, *, shuffle: bool) -> dict[str, Any]:
    """h5py dataset keyword arguments of the chosen compression."""
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
    """
    return tuple(max(1, min(512, size)) for size in shape)


class NWBScanWriter:
    """Builds the NWBFile of one scan and writes it (see the module docstring)."""

    def __init__(self, ds: xr.Dataset, path: Path, options: ExportOptions) -> None:
        self.ds = ds
        self.path = Path(path)
        self.options = options
        self.scratch_paths: list[Path] = []
        self.cleanups: list[Callable[[], None]] = []
        self.after_write: list[Callable[[], None]] = []

    # -- entry point -------------------------------------------------------------------------
    def write(self) -> None:
        from pynwb import NWBHDF5IO

        self._check()
        session = dict(self.options.session or {})
        self.axis = trial_time_axis(
            self.ds, session_start=session.get("session_start_time"), trial_period=self.options.trial_period
        )
        self.timing = Timing(self.axis)
        self.document = MappingDocument(self.ds, dataset_rows=dataset_rows(self.ds, self.axis), tree=self.options.tree)
        try:
            check_session_fields(session)
            self._start_spill()
            nwbfile = self._nwbfile(session)
            self._neurons(nwbfile)
            self._trials(nwbfile)
            self._images(nwbfile)
            self._responses(nwbfile)
            self._behavior(nwbfile)
            self._rest(nwbfile)
            nwbfile.add_scratch(
                self.document.text(),
                name=mapping.MAPPING_NAME,
                description="neuroxr: how this file maps back onto the xarray Dataset it was written from "
                "(JSON; read by neuroxr.open_nwb)",
            )
            with NWBHDF5IO(str(self.path), "w") as io:
                io.write(nwbfile)
            for step in self.after_write:
                step()
        finally:
            for cleanup in reversed(self.cleanups):
                cleanup()
            for scratch in self.scratch_paths:
                scratch.unlink(missing_ok=True)

    def _check(self) -> None:
        ds = self.ds
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

    def _scratch_path(self, suffix: str) -> Path:
        path = self.path.with_name(f"{self.path.name}.{suffix}")
        self.scratch_paths.append(path)
        return path

    # -- NWBFile and subject -------------------------------------------------------------------
    def _nwbfile(self, session: dict[str, Any]) -> Any:
        from pynwb import NWBFile
        from pynwb.file import Subject

        nwbfile = NWBFile(**session_fields(self.ds, self.axis, session))
        subject = self.options.subject
        if subject is None or isinstance(subject, Mapping):
            subject_kwargs = {**default_subject(self.ds), **dict(subject or {})}
            nwbfile.subject = Subject(**subject_kwargs)
        else:
            nwbfile.subject = subject
        return nwbfile

    # -- neurons --------------------------------------------------------------------------------
    def _neurons(self, nwbfile: Any) -> None:
        from hdmf.common import VectorData, VectorIndex
        from pynwb.ophys import ImageSegmentation, OpticalChannel, PlaneSegmentation

        ds = self.ds
        self.plane_segmentation = None
        if "neuron" not in ds.dims:
            return
        imaging = imaging_fields(ds, self.options.imaging)
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
        device = nwbfile.create_device(name="Microscope", description=str(imaging["device_description"]))
        channel = OpticalChannel(name="OpticalChannel", description=f"{imaging['indicator']} fluorescence",
                                 emission_lambda=float(imaging["emission_lambda"]))  # fmt: skip
        plane = nwbfile.create_imaging_plane(
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
        self.document.record("neuron", ds["neuron"].variable, dataset_store(f"{mapping.ROIS_PATH}/id"))
        taken: set[str] = set()
        for name, coord in ds.coords.items():
            if name == "neuron" or not coord.dims or coord.dims[0] != "neuron" or "trial" in coord.dims:
                continue
            column = column_name(str(name), taken, ROIS_RESERVED)
            description = describe(str(name), coord.variable)
            table.add_column(name=column, description=description, data=np.asarray(coord.values))
            self.document.record(name, coord.variable, dataset_store(f"{mapping.ROIS_PATH}/{column}"))
        module = nwbfile.create_processing_module(name="ophys", description="neurons and their per-trial responses")
        module.add(ImageSegmentation(name="ImageSegmentation", plane_segmentations=[table]))
        self.ophys = module
        self.plane_segmentation = table

    # -- trials ---------------------------------------------------------------------------------
    def _trials(self, nwbfile: Any) -> None:
        from hdmf.common import VectorData
        from pynwb.epoch import TimeIntervals

        ds = self.ds
        start = self.axis.start_times
        columns = [
            VectorData(name="start_time", description="trial start in seconds from the session start", data=start),
            VectorData(name="stop_time", description=f"start_time + {self.options.stimulus_duration:g} s "
                       "(nominal image presentation)", data=start + float(self.options.stimulus_duration)),  # fmt: skip
        ]
        self.document.record("trial", ds["trial"].variable, dataset_store(f"{mapping.TRIALS_PATH}/id", trial_rows=True))
        taken: set[str] = set()
        for name, coord in ds.coords.items():
            if name == "trial" or not coord.dims or coord.dims[0] != "trial" or "neuron" in coord.dims:
                continue
            wanted = WITHHELD_COLUMN if name == datamodel.WITHHELD_COORD else str(name)
            column = column_name(wanted, taken, TRIALS_RESERVED)
            values = self.axis.in_rows(np.asarray(coord.values))
            columns.append(VectorData(name=column, description=describe(str(name), coord.variable), data=values))
            self.document.record(name, coord.variable, dataset_store(f"{mapping.TRIALS_PATH}/{column}", trial_rows=True))
        nwbfile.trials = TimeIntervals(
            name="trials",
            description="One row per trial (image presentation), in presentation order; id is the trial's "
            "file number X of data/*/X.npy. " + self.axis.description,
            id=self.axis.in_rows(np.asarray(ds["trial"].values)).astype(np.int64),
            columns=columns,
        )

    # -- images ---------------------------------------------------------------------------------
    def _images(self, nwbfile: Any) -> None:
        """The Images container and the IndexSeries; the images themselves are written after pynwb.

        pynwb writes the structure with a one-pixel placeholder image and zeros for the presentation
        index; :meth:`_write_images` then streams the distinct images into the file, fills the index,
        lists the images in ``order_of_images`` and removes the placeholder.
        """
        from pynwb.base import ImageReferences, Images
        from pynwb.image import GrayscaleImage, IndexSeries

        ds = self.ds
        images = ds.get("images")
        if images is None or images.dims[0] != "trial" or images.ndim not in (3, 4):
            return
        if images.ndim == 4 and images.shape[1] not in (1, 3, 4):
            return  # stored as a generic variable by _rest
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
            comments=self.axis.description,
            **self.timing.kwargs(),
        )
        nwbfile.add_stimulus(series)
        self.timing.register(series)
        self.images_store: dict[str, Any] = {
            "kind": "images",
            "presentation": f"{mapping.PRESENTATION_PATH}/data",
            "order": f"{mapping.IMAGES_PATH}/order_of_images",
            "names": [],  # as order_of_images lists them (dereferencing thousands of references is slow)
            "trial_rows": True,
            "channel_axis": "none" if images.ndim == 3 else "first",
        }
        self.document.record("images", images.variable, self.images_store)
        self.after_write.append(self._write_images)

    def _write_images(self) -> None:
        import h5py

        ds = self.ds
        images = ds["images"]
        channel_axis = 1 if images.ndim == 4 else None
        if "image_id" in ds.coords and ds["image_id"].dims == ("trial",):
            image_ids = np.asarray(ds["image_id"].values)
        else:
            image_ids = np.asarray(ds["trial"].values)
        if images.chunks is None:
            images = images.chunk({"trial": max(1, images.sizes["trial"])})
        with h5py.File(self.path, "r+") as file:
            group = ImageGroup(file[mapping.IMAGES_PATH], compression_options(self.options, shuffle=False))
            distinct = write_distinct_images(
                images, image_ids, group, channel_axis=channel_axis, trial_labels=np.asarray(ds["trial"].values),
                progress=self.options.progress,
            )  # fmt: skip
            by_id = sorted(
                range(len(distinct.names)), key=lambda k: (_sort_key(distinct.image_ids[k]), distinct.first_trial[k])
            )
            ordered_names = [distinct.names[k] for k in by_id]
            group.set_order(ordered_names)
            del group.group[PLACEHOLDER_IMAGE]
            position = np.empty(len(by_id), dtype=np.int64)
            position[by_id] = np.arange(len(by_id))
            presented = self.axis.in_rows(position[distinct.image_of_trial]).astype(np.uint32)
            file[f"{mapping.PRESENTATION_PATH}/data"][...] = presented
            self.images_store["names"] = ordered_names
            file[f"scratch/{mapping.MAPPING_NAME}"][()] = self.document.text()

    # -- responses ------------------------------------------------------------------------------
    def _responses(self, nwbfile: Any) -> None:
        from hdmf.backends.hdf5 import H5DataIO
        from pynwb.ophys import Fluorescence, RoiResponseSeries

        ds = self.ds
        responses = ds.get("responses")
        if responses is None or responses.dims != ("trial", "neuron") or self.plane_segmentation is None:
            return
        source, order = self._row_source()
        chunk = response_chunks(responses.shape)
        row_bytes = max(1, responses.shape[1] * responses.dtype.itemsize)
        buffer_rows = chunk[0] * max(1, (64 * 2**20) // (row_bytes * chunk[0]))
        iterator = iterator_class()(
            source,
            order,
            responses.dtype,
            chunk_shape=chunk,
            buffer_shape=(min(buffer_rows, responses.shape[0]), responses.shape[1]),
            display_progress=self.options.progress,
            progress_bar_options={"desc": "nwb: responses", "unit": "buffer"},
        )
        region = self.plane_segmentation.create_roi_table_region(
            region=list(range(ds.sizes["neuron"])), description="all neurons, in unit id order"
        )
        series = RoiResponseSeries(
            name=mapping.RESPONSES,
            data=H5DataIO(iterator, **compression_options(self.options, shuffle=True)),
            rois=region,
            unit="n.a.",
            description="Deconvolved calcium activity of each neuron in response to the image of each trial, "
            "one value per trial (trials in presentation order; neurons as the PlaneSegmentation rows). "
            "Withheld responses are NaN.",
            comments=self.axis.description,
            **self.timing.kwargs(),
        )
        fluorescence = Fluorescence(name="Fluorescence")
        self.ophys.add(fluorescence)  # first, so that the rois region shares an ancestor with its table
        fluorescence.add_roi_response_series(series)
        self.timing.register(series)
        self.document.record("responses", responses.variable, dataset_store(f"{mapping.RESPONSES_PATH}/data", trial_rows=True))

    def _responses_data(self) -> Any:
        responses = self.ds["responses"]
        if responses.chunks is None:
            responses = responses.chunk({"trial": max(1, responses.sizes["trial"])})
        return responses.data

    def _start_spill(self) -> None:
        """When rows must be reordered, start spilling the responses now: it overlaps building the file."""
        responses = self.ds.get("responses")
        self.spill: BackgroundRows | None = None
        if self.axis.identity or responses is None or responses.dims != ("trial", "neuron"):
            return
        stream = BlockStream(self._responses_data())
        path = self._scratch_path("responses.raw")

        def spill() -> SpilledRows:
            bar = progress_bar(self.options.progress, total=len(stream), desc="nwb: responses (reordering)")
            try:
                return SpilledRows(stream, path, on_block=lambda: bar.update(1))
            finally:
                bar.close()

        self.spill = BackgroundRows(spill, tuple(int(size) for size in responses.shape))
        self.cleanups.append(self.spill.close)

    def _row_source(self) -> tuple[Any, np.ndarray | None]:
        """The responses in NWB row order: read forward when the orders agree, else from the spill."""
        if self.spill is None:
            return ForwardRows(BlockStream(self._responses_data())), None
        return self.spill, self.axis.rows

    # -- behaviour ------------------------------------------------------------------------------
    def _wholly_withheld(self, name: str, values: np.ndarray) -> bool:
        withheld = datamodel.withheld_variables(self.ds.attrs)
        return name in withheld and values.size > 0 and values.dtype.kind == "f" and bool(np.isnan(values).all())

    def _behavior(self, nwbfile: Any) -> None:
        from pynwb.behavior import BehavioralTimeSeries, EyeTracking, PupilTracking, SpatialSeries
        from pynwb.base import TimeSeries

        ds = self.ds
        module = None

        def behavior_module() -> Any:
            nonlocal module
            if module is None:
                module = nwbfile.create_processing_module(
                    name="behavior", description="pupil and running behaviour, one value per trial"
                )
            return module

        behavior = ds.get("behavior")
        if behavior is not None and behavior.dims == ("trial", "behavior_variable"):
            values = np.asarray(behavior.values)
            if self._wholly_withheld("behavior", values):
                self.document.record("behavior", behavior.variable, {"kind": "absent"})
            else:
                pupil, other, paths = [], [], []
                for index, label in enumerate(np.asarray(ds["behavior_variable"].values).tolist()):
                    series_name = re.sub(r"[/:]", "_", str(label))
                    series = TimeSeries(
                        name=series_name,
                        data=self.axis.in_rows(values[:, index]),
                        unit="n.a.",
                        description=DESCRIPTIONS.get(str(label), f"{label}, one value per trial"),
                        comments=self.axis.description,
                        **self.timing.kwargs(),
                    )
                    self.timing.register(series)
                    container = "PupilTracking" if str(label).startswith("pupil") else "BehavioralTimeSeries"
                    (pupil if container == "PupilTracking" else other).append(series)
                    paths.append(f"{mapping.BEHAVIOR_PATH}/{container}/{series_name}/data")
                if pupil:
                    behavior_module().add(PupilTracking(name="PupilTracking", time_series=pupil))
                if other:
                    behavior_module().add(BehavioralTimeSeries(name="BehavioralTimeSeries", time_series=other))
                self.document.record("behavior", behavior.variable, {"kind": "columns", "paths": paths, "trial_rows": True})
        center = ds.get("pupil_center")
        if center is not None and center.dims == ("trial", "pupil_axis") and center.shape[1] in (1, 2, 3):
            values = np.asarray(center.values)
            if self._wholly_withheld("pupil_center", values):
                self.document.record("pupil_center", center.variable, {"kind": "absent"})
            else:
                series = SpatialSeries(
                    name="pupil_center",
                    data=self.axis.in_rows(values),
                    reference_frame="pupil centre in the eye-camera image: columns are the horizontal (x) and "
                    "vertical (y) position as stored by the release",
                    unit="n.a.",
                    description=str(center.attrs.get("long_name", "pupil centre position")) + ", one value per trial",
                    comments=self.axis.description,
                    **self.timing.kwargs(),
                )
                self.timing.register(series)
                behavior_module().add(EyeTracking(name="EyeTracking", spatial_series=[series]))
                path = f"{mapping.BEHAVIOR_PATH}/EyeTracking/pupil_center/data"
                self.document.record("pupil_center", center.variable, dataset_store(path, trial_rows=True))

    # -- everything else ------------------------------------------------------------------------
    def _rest(self, nwbfile: Any) -> None:
        """Statistics, label coordinates and any other variable: JSON values or scratch arrays."""
        from hdmf.backends.hdf5 import H5DataIO

        for name, variable in self.ds.variables.items():
            if self.document.has(name):
                continue
            if name in self.ds.coords and variable.size <= JSON_VALUES_LIMIT and variable.dtype.kind in "biufUM":
                values = np.asarray(variable.values)
                if values.dtype.kind == "M":
                    values = values.astype(str)
                self.document.record(name, variable, {"kind": "values", "values": json_value(values)})
                continue
            scratch_name = f"neuroxr_{name}" if name in (mapping.MAPPING_NAME,) else str(name)
            description = f"neuroxr: the xarray variable {name!r} with dims ({', '.join(map(str, variable.dims))})"
            if variable.chunks is not None and variable.dims and variable.dims[0] == "trial":
                source = ForwardRows(BlockStream(variable.data))
                shape = variable.shape
                chunk = tuple(max(1, min(size, 512 if axis == 0 else size)) for axis, size in enumerate(shape))
                iterator = iterator_class()(source, None, variable.dtype, chunk_shape=chunk,
                                             buffer_shape=(chunk[0], *shape[1:]))  # fmt: skip
                data: Any = H5DataIO(iterator, **compression_options(self.options, shuffle=True))
            else:
                data = np.asarray(variable.values)
                if data.dtype.kind == "U":
                    data = data.astype(object)
            nwbfile.add_scratch(data, name=scratch_name, description=description)
            self.document.record(name, variable, dataset_store(f"scratch/{scratch_name}"))


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, (int, float, np.integer, np.floating)) else (1, str(value))


def write_scan(ds: xr.Dataset, path: str | os.PathLike[str], options: ExportOptions) -> None:
    """Write one scan to ``path`` (``neuroxr.formats.nwb.to_nwb`` gives it a temporary name first).

    The file is written as ``<path>.nwb`` (pynwb expects the suffix) and renamed to ``path``.
    """
    path = Path(path)
    written = path.with_name(path.name + mapping.NWB_SUFFIX) if path.suffix != mapping.NWB_SUFFIX else path
    try:
        NWBScanWriter(ds, written, options).write()
        if written != path:
            os.replace(written, path)
    finally:
        if written != path:
            written.unlink(missing_ok=True)
