"""NWB writing: one scan (a Dataset of the data model) into one NWB 2 file (HDF5), streamed.

:func:`write_nwb_file` is the whole recipe, one step per NWB object in the order they depend on each
other: the NWBFile and its subject, the neurons (PlaneSegmentation), the trials table, the stimulus
(images, or the video of a video scan), the responses, behaviour and pupil position, the release's
statistics, then the mapping document. Each ``add_*`` step adds its objects to the NWBFile, records
where each Dataset variable went in the :class:`~neuroxr.formats.nwb.mapping.MappingDocument`, and
returns what a later step needs. The mapping is explained in ``docs/nwb.md``.

Small things (tables, labels, behaviour, statistics) are built in memory; the big ones stream
block by block from the dask arrays, the next block computed in a background thread while the
current one is written:

- per-trial arrays (responses; the videos of a video scan; any other per-trial variable) go
  through an hdmf ``GenericDataChunkIterator`` (``streams``). Rows are written in presentation
  order (NWB times must ascend) while a scan's files usually are not. Trial files (a scan opened
  with ``neuroxr.open_scan``) are read in any order at the same cost, so their blocks are simply
  read in presentation order; an array in memory gives its rows in any order. Only another dask
  array (a graph of other operations, computed a block at a time) is first spilled in its own order
  to a raw scratch file (in the background, while pynwb builds the file) and read back row by row,
  so that it is computed once and never held whole in memory.
  A video scan's trials are laid end to end on one time axis, their padding left out
  (:class:`~neuroxr.formats.nwb.streams.FrameRows`).
- images (``images``): pynwb writes the structure with a placeholder; then one pass over the image
  blocks adds each distinct image (per image id, compared byte for byte) with h5py's low-level API
  and the attributes pynwb would give it, as uint8 where that is exact. pynwb itself spends
  milliseconds on each of thousands of Image objects.

Scratch files (spills) sit beside the target and are removed at the end, whatever happens.
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
from neuroxr.formats._write import Progress
from neuroxr.formats.nwb import mapping
from neuroxr.formats.nwb.images import ImageGroup, write_distinct_images
from neuroxr.formats.nwb.mapping import MappingDocument, constant_store, dataset_store, json_value
from neuroxr.formats.nwb.metadata import (
    DESCRIPTIONS,
    FILE_NUMBER_COLUMN,
    MOTOR_COORDINATES,
    ROIS_RESERVED,
    TRIALS_RESERVED,
    UNITS,
    WITHHELD_COLUMN,
    Content,
    Metadata,
    column_name,
    default_subject,
    describe,
    imaging_fields,
    merge_metadata,
    repeats_subject,
    session_fields,
)
from neuroxr.formats.nwb.streams import FrameRows, TrialRows, chunked, iterator_class, spills, start_trial_rows
from neuroxr.formats.nwb.timeline import TimeAxis, Timing, dataset_rows, frame_time_axis, trial_time_axis

#: The image pynwb writes in place of the images, which are added (and it removed) after pynwb.
PLACEHOLDER_IMAGE = "neuroxr_placeholder"
#: Coordinates no larger than this go into the mapping document as JSON values.
JSON_VALUES_LIMIT = 4096
#: Target size of an HDF5 chunk of a streamed series (1 MB).
SERIES_CHUNK_BYTES = 2**20
#: The default compression, chosen by measurement (docs/nwb.md): gzip level 1, shuffle on numbers.
DEFAULT_COMPRESSION = "gzip"


@dataclass
class ExportOptions:
    """Everything ``to_nwb`` accepts besides the data and the target."""

    subject: Mapping[str, Any] | Any = None
    session: Mapping[str, Any] | None = None
    imaging: Mapping[str, Any] | None = None
    metadata: Metadata | None = None  # from a metadata file; the three above win over it
    stimulus_duration: float = 0.5
    trial_period: float = 1.0
    trial_gap: float = 1.0
    compression: str | None = DEFAULT_COMPRESSION
    compression_level: int | None = 1
    progress: bool = False
    tree: dict[str, Any] | None = None  # node name and root attributes, for a DataTree export
    display: Progress | None = None  # the export's one progress display (to_nwb makes it; else each file)


def compression_options(options: ExportOptions, *, shuffle: bool) -> dict[str, Any]:
    """h5py dataset keyword arguments of the chosen compression.

    >>> compression_options(ExportOptions(compression="gzip", compression_level=4), shuffle=True)
    {'compression': 'gzip', 'compression_opts': 4, 'shuffle': True}
    >>> compression_options(ExportOptions(compression=None), shuffle=True)
    {}
    """
    if options.compression is None:
        return {}
    if options.compression not in ("gzip", "lzf"):
        raise ValueError(f"to_nwb: expected compression 'gzip', 'lzf' or None, found {options.compression!r}")
    out: dict[str, Any] = {"compression": options.compression}
    if options.compression == "gzip" and options.compression_level is not None:
        out["compression_opts"] = int(options.compression_level)
    if shuffle:
        out["shuffle"] = True
    return out


def response_chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    """HDF5 chunk of a 2-D series such as the responses: 512 samples x 512 neurons (1 MB of
    float32), cut to the shape.

    Square-ish chunks serve both reads that matter: a block of trials for all neurons (training) and
    one neuron across all trials (tuning).

    >>> response_chunks((7000, 300))
    (512, 300)
    """
    return tuple(max(1, min(512, size)) for size in shape)


def series_chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """HDF5 chunk of a streamed series: :func:`response_chunks` for 2-D ones, else whole samples
    (a video frame, ...), as many as make about :data:`SERIES_CHUNK_BYTES`.

    >>> series_chunks((204000, 36, 64), 4)
    (113, 36, 64)
    """
    if len(shape) == 2:
        return response_chunks(shape)
    sample_bytes = int(np.prod(shape[1:], dtype=np.int64)) * itemsize
    return (max(1, min(int(shape[0]), SERIES_CHUNK_BYTES // max(1, sample_bytes))), *(int(size) for size in shape[1:]))


def is_video_scan(ds: xr.Dataset) -> bool:
    """Whether ``ds`` is a video scan: its variables carry the frame axis last.

    >>> is_video_scan(neuroxr.make_scan(kind="dynamic", n_trials=24, n_neurons=4, n_frames=10, video_shape=(4, 6)))
    True
    """
    kind = datamodel.kind_of([*ds.variables, *ds.dims], ds.attrs)
    return kind.time_dim is not None and kind.time_dim in ds.dims


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
    session, subject, imaging = merge_metadata(options.metadata, options.session, options.subject, options.imaging)
    video = is_video_scan(ds)
    start = session.get("session_start_time")
    if video:
        axis = frame_time_axis(ds, session_start=start, trial_gap=options.trial_gap)
    else:
        axis = trial_time_axis(ds, session_start=start, trial_period=options.trial_period,
                               stimulus_duration=options.stimulus_duration)  # fmt: skip
    compression_options(options, shuffle=False)  # a bad choice fails before anything is written
    path = Path(path)
    written = path if path.suffix == mapping.NWB_SUFFIX else path.with_name(path.name + mapping.NWB_SUFFIX)
    own_display = options.display is None
    if own_display:
        options = replace(options, display=Progress(options.progress, f"writing {path.name}"))
    sources: dict[str, TrialRows] = {}
    try:
        for name in streamed_variables(ds, video):  # spills start now and overlap building the file
            scratch = written.with_name(f"{written.name}.{name}.raw")
            sources[name] = start_trial_rows(ds[name], None if axis.identity else axis.rows, scratch, options.display)
        timing = Timing(axis)
        document = MappingDocument(ds, dataset_rows=dataset_rows(ds, axis), tree=options.tree)
        small = {name: np.asarray(ds[name].values) for name in ("behavior", "pupil_center") if name in ds}
        withheld = {name for name, values in small.items() if _wholly_withheld(ds, name, values)}
        content = Content(
            dynamic=video,
            behavior=bool(small) and not withheld >= set(small),
            responses_withheld=datamodel.WITHHELD_COORD in ds.coords and bool(np.any(ds[datamodel.WITHHELD_COORD].values)),
        )
        nwbfile = make_nwbfile(ds, axis, session, subject, content)
        segmentation = add_neurons(nwbfile, ds, imaging, axis, document)
        add_trials(nwbfile, ds, axis, options, document)
        images = None
        if video:
            add_video(nwbfile, ds, sources.get("videos"), axis, timing, options, document)
        else:
            images = add_images(nwbfile, ds, axis, timing, document)
        add_responses(nwbfile, ds, segmentation, sources.get("responses"), timing, options, document)
        add_behavior(nwbfile, ds, small.get("behavior"), axis, timing, document)
        add_pupil_center(nwbfile, ds, small.get("pupil_center"), axis, timing, document)
        add_statistics(nwbfile, ds, options, document)
        add_other_series(nwbfile, ds, sources, timing, options, document)
        add_remaining_variables(nwbfile, ds, document)
        add_mapping_document(nwbfile, document)
        with NWBHDF5IO(str(written), "w") as io:
            io.write(nwbfile)
        if images is not None:
            fill_images(written, ds, images, axis, options, document)
        if written != path:
            os.replace(written, path)
    finally:
        for rows in sources.values():
            rows.close()
        for name in streamed_variables(ds, video):
            written.with_name(f"{written.name}.{name}.raw").unlink(missing_ok=True)
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
    if is_video_scan(ds) and "n_frames" not in ds.coords:
        raise ValueError("to_nwb: expected the coordinate n_frames (frames per trial) on a video scan")


def streamed_variables(ds: xr.Dataset, video: bool) -> list[str]:
    """The per-trial data variables streamed through :func:`start_trial_rows`: the responses, the
    videos of a video scan, and every per-trial variable without a place of its own (those of a
    video scan only when they carry its frame axis last). Images, behaviour and pupil position are
    not: images have their own pass, the other two are small."""
    out = []
    for name, variable in ds.data_vars.items():
        if not variable.dims or variable.dims[0] != "trial" or name in ("images", "behavior", "pupil_center"):
            continue
        if video and variable.dims[-1] != datamodel.FRAME:
            continue
        if name == "responses" and variable.dims[1:2] != ("neuron",):
            continue
        out.append(str(name))
    return out


# ----------------------------------------------------------------------------------------------
# the NWBFile and its subject


def make_nwbfile(
    ds: xr.Dataset, axis: TimeAxis, session: Mapping[str, Any], subject: Mapping[str, Any] | Any, content: Content
) -> Any:
    """The NWBFile of a scan, with its session fields and subject (defaults, then the user's)."""
    from pynwb import NWBFile
    from pynwb.file import Subject

    nwbfile = NWBFile(**session_fields(ds, axis, session, content))
    if isinstance(subject, Mapping):
        nwbfile.subject = Subject(**{**default_subject(ds), **dict(subject)})
    else:
        nwbfile.subject = subject
    return nwbfile


# ----------------------------------------------------------------------------------------------
# neurons and trials


def add_neurons(
    nwbfile: Any, ds: xr.Dataset, imaging: Mapping[str, Any], axis: TimeAxis, document: MappingDocument
) -> Any:
    """The microscope, the imaging plane and the PlaneSegmentation of the neurons (one row per unit id,
    one column per neuron coordinate; constant copies of Subject facts left out) in the ``ophys``
    processing module.

    Returns the PlaneSegmentation (the responses point at it), or None when the scan has no neurons.
    """
    from hdmf.common import VectorData, VectorIndex
    from pynwb.ophys import ImageSegmentation, PlaneSegmentation

    if "neuron" not in ds.dims:
        return None
    n = ds.sizes["neuron"]
    voxels, origin = _voxels(ds)
    plane = _add_imaging_plane(nwbfile, imaging_fields(ds, imaging, rate=axis.frame_rate), origin)
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
        if repeats_subject(coord.variable):
            document.record(name, coord.variable, constant_store(coord.values[0]))
            continue
        column = column_name(str(name), taken, ROIS_RESERVED)
        table.add_column(name=column, description=describe(str(name), coord.variable), data=np.asarray(coord.values))
        document.record(name, coord.variable, dataset_store(f"{mapping.ROIS_PATH}/{column}"))
    module = nwbfile.create_processing_module(name="ophys", description="the neurons and their responses")
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
    """The microscope and its ImagingPlane (1 um grid from ``origin``); the descriptions name the
    fields that are neuroxr's guesses."""
    from pynwb.ophys import OpticalChannel

    guessed = set(imaging["guessed"])
    device = str(imaging["device_description"])
    if "device_manufacturer" in imaging:
        device = f"{device} (manufacturer: {imaging['device_manufacturer']})"
    if "device_description" in guessed:
        device += "; a neuroxr default: the release does not describe the microscope"
    device = nwbfile.create_device(name="Microscope", description=device)
    channel_description = str(imaging.get("channel_description") or f"{imaging['indicator']} fluorescence")
    if guessed & {"indicator", "emission_lambda"}:
        channel_description += "; indicator and emission wavelength are neuroxr defaults (guesses)"
    channel = OpticalChannel(name="OpticalChannel", description=channel_description,
                             emission_lambda=float(imaging["emission_lambda"]))  # fmt: skip
    description = str(
        imaging.get("plane_description")
        or "The imaged volume of visual cortex; neurons are located by their motor coordinates in micrometres "
        "(one voxel per neuron, see the PlaneSegmentation columns)."
    )
    if guessed:
        values = ", ".join(f"{key} {imaging[key]}" for key in imaging["guessed"])
        description += (f" Not recorded by the release, so neuroxr defaults (guesses, to be replaced by the "
                        f"Ophys section of a metadata file): {values}.")  # fmt: skip
    description += f" imaging_rate: {imaging.get('rate_origin', 'as given')}."
    rate = imaging.get("imaging_rate")
    return nwbfile.create_imaging_plane(
        name="ImagingPlane",
        optical_channel=channel,
        description=description,
        device=device,
        excitation_lambda=float(imaging["excitation_lambda"]),
        indicator=str(imaging["indicator"]),
        location=imaging["location"],
        imaging_rate=None if rate is None else float(rate),
        grid_spacing=[1.0, 1.0, 1.0],
        grid_spacing_unit="micrometers",
        origin_coords=[float(value) for value in origin],
        origin_coords_unit="micrometers",
    )


def add_trials(
    nwbfile: Any, ds: xr.Dataset, axis: TimeAxis, options: ExportOptions, document: MappingDocument
) -> None:
    """The trials table: one row per trial in presentation order (ids 0..N-1), the file number and
    every trial coordinate as columns (constant copies of Subject facts left out)."""
    from hdmf.common import VectorData
    from pynwb.epoch import TimeIntervals

    if axis.n_frames is not None:
        stop = f"start_time + n_frames / {axis.frame_rate:g} Hz (the trial's last frame ends there)"
    else:
        stop = (f"start_time + {options.stimulus_duration:g} s (a nominal presentation: the release records no "
                "duration), ended 1 ms before the next trial's start where they would touch")  # fmt: skip
    file_numbers = axis.in_rows(np.asarray(ds["trial"].values)).astype(np.int64)
    columns = [
        VectorData(name="start_time", description="trial start in seconds from the session start", data=axis.start_times),
        VectorData(name="stop_time", description=stop, data=axis.stop_times),
        VectorData(name=FILE_NUMBER_COLUMN, description=DESCRIPTIONS[FILE_NUMBER_COLUMN], data=file_numbers),
    ]
    document.record("trial", ds["trial"].variable,
                    dataset_store(f"{mapping.TRIALS_PATH}/{FILE_NUMBER_COLUMN}", trial_rows=True))  # fmt: skip
    taken: set[str] = set()
    for name, coord in ds.coords.items():
        if name == "trial" or not coord.dims or coord.dims[0] != "trial" or "neuron" in coord.dims:
            continue
        if repeats_subject(coord.variable):
            document.record(name, coord.variable, constant_store(coord.values[0]))
            continue
        wanted = WITHHELD_COLUMN if name == datamodel.WITHHELD_COORD else str(name)
        column = column_name(wanted, taken, TRIALS_RESERVED)
        values = axis.in_rows(np.asarray(coord.values))
        columns.append(VectorData(name=column, description=describe(str(name), coord.variable), data=values))
        document.record(name, coord.variable, dataset_store(f"{mapping.TRIALS_PATH}/{column}", trial_rows=True))
    what = "video clip" if axis.n_frames is not None else "image presentation"
    nwbfile.trials = TimeIntervals(
        name="trials",
        description=f"One row per trial ({what}), in presentation order; ids 0..N-1, file_number is the trial's "
        "file number X of data/*/X.npy. " + axis.description,
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
    images NWB can hold as such (they then go with the other variables).
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

    images = chunked(ds["images"])
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
        file[mapping.MAPPING_PATH][()] = document.text()


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, (int, float, np.integer, np.floating)) else (1, str(value))


# ----------------------------------------------------------------------------------------------
# streamed per-trial arrays


def scratch_bytes(ds: xr.Dataset) -> int:
    """The bytes of the scratch files :func:`write_nwb_file` writes beside its target (see :func:`spills`)."""
    video = is_video_scan(ds)
    axis = frame_time_axis(ds) if video else trial_time_axis(ds)  # the order, whatever the times
    order = None if axis.identity else axis.rows
    return sum(int(ds[name].nbytes) for name in streamed_variables(ds, video) if spills(ds[name], order))


def stream_data(rows: TrialRows, variable: xr.DataArray, axis: TimeAxis, options: ExportOptions) -> Any:
    """The data of a series streamed from ``rows``: one sample per trial, or (video scans) one per
    frame, the trials' frames end to end; an H5DataIO over the hdmf iterator, compressed as chosen."""
    from hdmf.backends.hdf5 import H5DataIO

    source: Any = rows.source
    order = rows.order
    if axis.n_frames is not None:
        source, order = FrameRows(source, order, axis.n_frames, str(variable.name)), None
    shape = tuple(int(size) for size in source.shape)
    chunk = series_chunks(shape, variable.dtype.itemsize)
    sample_bytes = max(1, int(np.prod(shape[1:], dtype=np.int64)) * variable.dtype.itemsize)
    buffer_rows = min(chunk[0] * max(1, chunking.CHUNK_BYTES // (sample_bytes * chunk[0])), max(1, shape[0]))
    display = options.display
    if display is not None:
        display.add(-(-shape[0] // max(1, buffer_rows)))
    iterator = iterator_class()(
        source,
        order,
        variable.dtype,
        chunk_shape=chunk,
        buffer_shape=(buffer_rows, *shape[1:]),
        on_buffer=display.advance if display is not None else None,
    )
    return H5DataIO(iterator, **compression_options(options, shuffle=variable.dtype.kind in "iuf"))


def _series_store(axis: TimeAxis, *, path: str | None = None, paths: list[str] | None = None) -> dict[str, Any]:
    """The ``store`` of a series (its ``path``) or of several side by side (``paths``, one per column):
    one sample per trial (rows in NWB row order), or per frame (a video scan)."""
    where: dict[str, Any] = {"paths": paths} if paths is not None else {"path": path}
    if axis.n_frames is not None:
        return {"kind": "frames", **where, "n_frames": f"{mapping.TRIALS_PATH}/n_frames", "trial_rows": True}
    if paths is not None:
        return {"kind": "columns", **where, "trial_rows": True}
    return dataset_store(str(path), trial_rows=True)


def _per_sample(axis: TimeAxis) -> str:
    return "one sample per video frame, trials end to end" if axis.n_frames is not None else "one value per trial"


def add_video(
    nwbfile: Any,
    ds: xr.Dataset,
    rows: TrialRows | None,
    axis: TimeAxis,
    timing: Timing,
    options: ExportOptions,
    document: MappingDocument,
) -> None:
    """The ImageSeries ``StimulusVideo`` in ``stimulus/presentation``: every frame shown, (frames, y, x),
    on the file's one time axis, streamed from ``rows`` (nothing when None)."""
    from pynwb.image import ImageSeries

    if rows is None:
        return
    videos = ds["videos"]
    series = ImageSeries(
        name=mapping.VIDEO,
        data=stream_data(rows, videos, axis, options),
        unit="grey level (0-255)",
        description="The video frames shown, one per sample, rows y and columns x (frames, y, x), grey levels "
        "0-255 as stored by the release (data/videos, time last there); the NaN padding after each trial's end "
        "is left out.",
        comments=axis.description,
        **timing.kwargs(),
    )
    nwbfile.add_stimulus(series)
    timing.register(series)
    document.record("videos", videos.variable, _series_store(axis, path=f"{mapping.VIDEO_PATH}/data"))


def add_responses(
    nwbfile: Any,
    ds: xr.Dataset,
    segmentation: Any,
    rows: TrialRows | None,
    timing: Timing,
    options: ExportOptions,
    document: MappingDocument,
) -> None:
    """The RoiResponseSeries ``Deconvolved`` in ``ophys/Fluorescence``, over every row of
    ``segmentation``, its data streamed from ``rows`` (nothing when either is None)."""
    from pynwb.ophys import Fluorescence, RoiResponseSeries

    if rows is None or segmentation is None:
        return
    axis = timing.axis
    responses = ds["responses"]
    region = segmentation.create_roi_table_region(
        region=list(range(ds.sizes["neuron"])), description="all neurons, in unit id order"
    )
    if axis.n_frames is not None:
        what = (f"Deconvolved calcium activity of each neuron at each video frame ({axis.frame_rate:g} Hz, the "
                "release's one time base for video, responses and behaviour), in arbitrary units as stored "
                "(data/responses); the release does not document the deconvolution.")  # fmt: skip
    else:
        what = ("Deconvolved calcium activity of each neuron in response to the image of each trial, one value "
                "per trial (data/responses: the release's 'deconvolved activity, one scalar per neuron'). The "
                "release does not document the response window or the deconvolution; the values are as "
                "stored, in arbitrary units; each sample is at its trial's start.")  # fmt: skip
    series = RoiResponseSeries(
        name=mapping.RESPONSES,
        data=stream_data(rows, responses, axis, options),
        rois=region,
        unit=UNITS["responses"],
        description=f"{what} Samples in presentation order; neurons as the PlaneSegmentation rows. Withheld "
        "responses are NaN.",
        comments=axis.description,
        **timing.kwargs(),
    )
    fluorescence = Fluorescence(name="Fluorescence")
    nwbfile.processing["ophys"].add(fluorescence)  # first, so that the rois region shares an ancestor with its table
    fluorescence.add_roi_response_series(series)
    timing.register(series)
    document.record("responses", responses.variable, _series_store(axis, path=f"{mapping.RESPONSES_PATH}/data"))


# ----------------------------------------------------------------------------------------------
# behaviour


def add_behavior(
    nwbfile: Any, ds: xr.Dataset, values: np.ndarray | None, axis: TimeAxis, timing: Timing, document: MappingDocument
) -> None:
    """One TimeSeries per behaviour variable: the pupil ones in ``behavior/PupilTracking``, the others
    (running speed) in ``behavior/BehavioralTimeSeries``. Wholly withheld behaviour is left out
    (recorded as absent)."""
    from pynwb.base import TimeSeries
    from pynwb.behavior import BehavioralTimeSeries, PupilTracking

    behavior = ds.get("behavior")
    if behavior is None or values is None or behavior.dims[:2] != ("trial", "behavior_variable"):
        return
    if _wholly_withheld(ds, "behavior", values):
        document.record("behavior", behavior.variable, {"kind": "absent"})
        return
    samples = axis.samples(values, "behavior")
    pupil, other, paths = [], [], []
    for index, label in enumerate(np.asarray(ds["behavior_variable"].values).tolist()):
        series_name = re.sub(r"[/:]", "_", str(label))
        description = DESCRIPTIONS.get(str(label), f"{label}, as stored in data/behavior")
        series = TimeSeries(
            name=series_name,
            data=samples[:, index],
            unit=UNITS.get(str(label), "a.u."),
            description=f"{description}; {_per_sample(axis)}",
            comments=axis.description,
            **timing.kwargs(),
        )
        timing.register(series)
        container = "PupilTracking" if str(label).startswith("pupil") else "BehavioralTimeSeries"
        (pupil if container == "PupilTracking" else other).append(series)
        paths.append(f"{mapping.BEHAVIOR_PATH}/{container}/{series_name}/data")
    if pupil:
        _behavior_module(nwbfile, axis).add(PupilTracking(name="PupilTracking", time_series=pupil))
    if other:
        _behavior_module(nwbfile, axis).add(BehavioralTimeSeries(name="BehavioralTimeSeries", time_series=other))
    document.record("behavior", behavior.variable, _series_store(axis, paths=paths))


def add_pupil_center(
    nwbfile: Any, ds: xr.Dataset, values: np.ndarray | None, axis: TimeAxis, timing: Timing, document: MappingDocument
) -> None:
    """The SpatialSeries ``pupil_center`` in ``behavior/EyeTracking``; left out (recorded as absent)
    when wholly withheld."""
    from pynwb.behavior import EyeTracking, SpatialSeries

    center = ds.get("pupil_center")
    if center is None or values is None or center.dims[:2] != ("trial", "pupil_axis") or center.shape[1] not in (1, 2, 3):
        return
    if _wholly_withheld(ds, "pupil_center", values):
        document.record("pupil_center", center.variable, {"kind": "absent"})
        return
    series = SpatialSeries(
        name="pupil_center",
        data=axis.samples(values, "pupil_center"),
        reference_frame="pupil centre in the eye-camera image: columns are the horizontal (x) and "
        "vertical (y) position as stored by the release, in the camera's pixels",
        unit=UNITS["pupil_center"],
        description=f"pupil centre position (data/pupil_center); {_per_sample(axis)}",
        comments=axis.description,
        **timing.kwargs(),
    )
    timing.register(series)
    _behavior_module(nwbfile, axis).add(EyeTracking(name="EyeTracking", spatial_series=[series]))
    path = f"{mapping.BEHAVIOR_PATH}/EyeTracking/pupil_center/data"
    document.record("pupil_center", center.variable, _series_store(axis, path=path))


def _behavior_module(nwbfile: Any, axis: TimeAxis) -> Any:
    """The ``behavior`` processing module, created on first use."""
    if "behavior" not in nwbfile.processing:
        nwbfile.create_processing_module(name="behavior", description=f"pupil and running behaviour, {_per_sample(axis)}")
    return nwbfile.processing["behavior"]


def _wholly_withheld(ds: xr.Dataset, name: str, values: np.ndarray) -> bool:
    """Whether the release withholds all of variable ``name`` (its values are then all NaN)."""
    withheld = datamodel.withheld_variables(ds.attrs)
    return name in withheld and values.size > 0 and values.dtype.kind == "f" and bool(np.isnan(values).all())


# ----------------------------------------------------------------------------------------------
# statistics, other variables, and the mapping document


def _misc_module(nwbfile: Any) -> Any:
    """The ``misc`` processing module, created on first use."""
    if "misc" not in nwbfile.processing:
        nwbfile.create_processing_module(
            name="misc",
            description="The statistics the release ships in meta/statistics (one table per variable), and any "
            "per-trial variable without a core NWB type of its own",
        )
    return nwbfile.processing["misc"]


def add_statistics(nwbfile: Any, ds: xr.Dataset, options: ExportOptions, document: MappingDocument) -> None:
    """One DynamicTable per statistics variable (dims ``subset``, ``statistic``, ...) in ``misc``: a
    row per (subset, statistic), columns ``subset``, ``statistic`` and ``values`` (the statistic of
    every element: a neuron, a behaviour variable, a pixel, a frame)."""
    from hdmf.backends.hdf5 import H5DataIO
    from hdmf.common import DynamicTable, VectorData

    for name, variable in ds.data_vars.items():
        if variable.dims[:2] != ("subset", "statistic") or document.has(name):
            continue
        base = str(name).removesuffix("_statistics")
        subsets = np.repeat(np.asarray(ds["subset"].values).astype(str), variable.shape[1]).astype(object)
        statistics = np.tile(np.asarray(ds["statistic"].values).astype(str), variable.shape[0]).astype(object)
        values = np.asarray(variable.values).reshape(variable.shape[0] * variable.shape[1], *variable.shape[2:])
        element = ", ".join(map(str, variable.dims[2:])) or "all values (one number)"
        data: Any = values if values.nbytes < SERIES_CHUNK_BYTES else H5DataIO(values, **compression_options(options, shuffle=True))
        table = DynamicTable(
            name=str(name),
            description=f"Statistics of {base} as the release ships them (meta/statistics/{base}/<subset>/<statistic>"
            ".npy): one row per subset of trials and statistic. The release computed them over the train tier "
            "(its loaders normalise with subset 'all'); the files do not say so themselves.",
            columns=[
                VectorData(name="subset", description="subset of the trials (meta/statistics/<variable>/<subset>)", data=subsets),
                VectorData(name="statistic", description="mean, std, min, max or median", data=statistics),
                VectorData(name="values", description=f"the statistic of each element ({element}) of {base}", data=data),
            ],
        )
        _misc_module(nwbfile).add(table)
        document.record(name, variable.variable, dataset_store(f"{mapping.MISC_PATH}/{name}/values"))


def add_other_series(
    nwbfile: Any, ds: xr.Dataset, sources: Mapping[str, TrialRows], timing: Timing, options: ExportOptions,
    document: MappingDocument,
) -> None:
    """Every other streamed per-trial data variable as a TimeSeries in ``misc`` on the file's time axis,
    streamed (``units`` from its attributes, else ``n.a.``)."""
    from pynwb.base import TimeSeries

    for name, rows in sources.items():
        if name in ("responses", "videos"):
            continue  # written by add_responses and add_video
        variable = ds[name]
        series = TimeSeries(
            name=name,
            data=stream_data(rows, variable, timing.axis, options),
            unit=str(variable.attrs.get("units") or "n.a."),
            description=f"{describe(name, variable.variable)}; the Dataset variable {name} with dims "
            f"({', '.join(map(str, variable.dims))}), {_per_sample(timing.axis)}",
            comments=timing.axis.description,
            **timing.kwargs(),
        )
        _misc_module(nwbfile).add(series)
        timing.register(series)
        document.record(name, variable.variable, _series_store(timing.axis, path=f"{mapping.MISC_PATH}/{name}/data"))


def add_remaining_variables(nwbfile: Any, ds: xr.Dataset, document: MappingDocument) -> None:
    """Every variable not yet recorded: small coordinates as JSON values in the mapping document, the
    rest (no NWB type fits them; none in a release scan) as ``/scratch`` arrays."""
    for name, variable in ds.variables.items():
        if document.has(name):
            continue
        if name in ds.coords and variable.size <= JSON_VALUES_LIMIT and variable.dtype.kind in "biufUM":
            values = np.asarray(variable.values)
            if values.dtype.kind == "M":
                values = values.astype(str)
            document.record(name, variable, {"kind": "values", "values": json_value(values)})
            continue
        data = np.asarray(variable.values)
        if data.dtype.kind == "U":
            data = data.astype(object)
        description = f"neuroxr: the xarray variable {name!r} with dims ({', '.join(map(str, variable.dims))})"
        nwbfile.add_scratch(data, name=str(name), description=description)
        document.record(name, variable, dataset_store(f"scratch/{name}"))


def add_mapping_document(nwbfile: Any, document: MappingDocument) -> None:
    """The mapping document as it stands, a ``NeuroxrLayout`` in ``/general`` (``fill_images``
    rewrites it with the image names)."""
    layout = mapping.layout_class()(
        name=mapping.MAPPING_NAME,
        description="How this file maps back onto the xarray Dataset neuroxr wrote it from (JSON, read by "
        "neuroxr.open_nwb); the data themselves are in the core NWB objects",
        document=document.text(),
    )
    nwbfile.add_lab_meta_data(layout)
