"""Writing the distinct images of a scan into an NWB ``Images`` group, fast.

pynwb writes the group's structure; the images themselves go in with h5py's low-level API, one
dataset per distinct (image id, pixels) pair, with the attributes pynwb would give them, as uint8
where that is exact.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from neuroxr.formats._write import BlockStream, Progress

def _storable_block(block: np.ndarray, channel_axis: int | None) -> np.ndarray:
    """A block of trial images as NWB holds them: (n, y, x) grey or (n, y, x, channels) colour."""
    if channel_axis is None:
        return block
    if block.shape[1] == 1:
        return block[:, 0]
    return np.moveaxis(block, 1, -1)


def exact_as_uint8(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``block`` cast to uint8, and per image whether that cast is exact (converting back gives the same bits).

    >>> exact_as_uint8(np.array([[0.0, 255.0], [1.5, 2.0], [-0.0, 3.0]], dtype=np.float32))[1].tolist()
    [True, False, False]
    """
    if block.dtype == np.uint8:
        return block, np.ones(len(block), dtype=bool)
    if block.dtype.kind not in "iuf":
        return block, np.zeros(len(block), dtype=bool)
    with np.errstate(invalid="ignore", over="ignore"):
        small = block.astype(np.uint8)
    back = small.astype(block.dtype)
    if block.dtype.kind == "f":
        bits = np.dtype(f"u{block.dtype.itemsize}")
        same = back.view(bits) == np.ascontiguousarray(block).view(bits)
    else:
        same = back == block
    return small, same.reshape(len(block), -1).all(axis=1)


def _image_type(shape: tuple[int, ...]) -> str:
    return "GrayscaleImage" if len(shape) == 2 else "RGBImage" if shape[-1] == 3 else "RGBAImage"


class _TextAttributes:
    """Writes variable-length UTF-8 string attributes, as pynwb does, through h5py's low-level API (fast)."""

    def __init__(self) -> None:
        import h5py

        self.h5a = h5py.h5a
        self.dtype = h5py.string_dtype("utf-8")
        self.stored, self.memory = h5py.h5t.py_create(self.dtype, logical=True), h5py.h5t.py_create(self.dtype)
        self.scalar = h5py.h5s.create(h5py.h5s.SCALAR)

    def value(self, text: str) -> np.ndarray:
        return np.array(text, dtype=self.dtype)

    def set(self, object_id: Any, attributes: Mapping[str, str | np.ndarray]) -> None:
        for key, value in attributes.items():
            attribute = self.h5a.create(object_id, key.encode(), self.stored, self.scalar)
            attribute.write(value if isinstance(value, np.ndarray) else self.value(value), mtype=self.memory)
            attribute.close()


class ImageGroup:
    """Adds Image datasets to an NWB ``Images`` group with h5py's low-level API.

    Each dataset carries the attributes pynwb gives an Image (namespace, neurodata_type, object_id,
    description); pynwb itself spends milliseconds building each of thousands of Image objects.
    """

    def __init__(self, group: Any, compression: Mapping[str, Any]) -> None:
        import h5py

        self.h5py = h5py
        self.group = group
        self.compression = dict(compression)
        self.text = _TextAttributes()
        self.namespace = self.text.value("core")
        if self.compression.get("compression") not in (None, "gzip", "lzf"):
            found = self.compression["compression"]
            raise ValueError(f"to_nwb: expected compression 'gzip', 'lzf' or None, found {found!r}")
        self._layouts: dict[tuple[str, tuple[int, ...]], tuple[Any, Any, Any, np.ndarray]] = {}

    def _layout(self, image: np.ndarray) -> tuple[Any, Any, Any, np.ndarray]:
        """HDF5 type, dataspace, creation properties and neurodata_type of an image's dtype and shape (cached)."""
        key = (image.dtype.str, image.shape)
        if key not in self._layouts:
            h5py = self.h5py
            plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            if self.compression and image.size:
                plist.set_chunk(image.shape)
                if self.compression["compression"] == "gzip":
                    plist.set_deflate(int(self.compression.get("compression_opts", 4)))
                else:
                    plist.set_filter(h5py.h5z.FILTER_LZF, h5py.h5z.FLAG_OPTIONAL)
            kind = self.text.value(_image_type(image.shape))
            self._layouts[key] = (h5py.h5t.py_create(image.dtype), h5py.h5s.create_simple(image.shape), plist, kind)
        return self._layouts[key]

    def add(self, name: str, image: np.ndarray, description: str) -> None:
        h5py, text = self.h5py, self.text
        type_id, space, plist, kind = self._layout(image)
        dataset = h5py.h5d.create(self.group.id, name.encode(), type_id, space, dcpl=plist)
        if image.size:
            dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, np.ascontiguousarray(image))
        for key, value in (
            (b"description", text.value(description)),
            (b"namespace", self.namespace),
            (b"neurodata_type", kind),
            (b"object_id", text.value(str(uuid.uuid4()))),
        ):
            attribute = text.h5a.create(dataset, key, text.stored, text.scalar)
            attribute.write(value, mtype=text.memory)
            attribute.close()
        dataset.close()

    def read(self, name: str) -> np.ndarray:
        return np.asarray(self.group[name][()])

    def set_order(self, image_names: list[str]) -> None:
        """Rewrite ``order_of_images`` to list ``image_names`` (keeping its attributes)."""
        h5py = self.h5py
        old = self.group["order_of_images"]
        attributes = {key: str(value) for key, value in old.attrs.items()}
        del self.group["order_of_images"]
        references = [h5py.h5r.create(self.group.id, name.encode(), h5py.h5r.OBJECT) for name in image_names]
        order = self.group.create_dataset("order_of_images", data=np.array(references, dtype=h5py.ref_dtype))
        self.text.set(order.id, attributes)


@dataclass
class DistinctImages:
    """The distinct images of a scan as written: per Dataset trial the index of its image."""

    image_of_trial: np.ndarray
    image_ids: list[Any] = field(default_factory=list)
    first_trial: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)


def write_distinct_images(
    images: xr.DataArray,
    image_ids: np.ndarray,
    target: ImageGroup,
    *,
    channel_axis: int | None,
    trial_labels: np.ndarray,
    progress: Progress | None = None,
) -> DistinctImages:
    """One pass over the image blocks, writing each distinct (image id, pixels) pair once into ``target``.

    A trial whose id was seen before is compared byte for byte with the images already stored under
    that id; an id that shows different pixels in different trials gets one image per variant
    (``image_<id>``, ``image_<id>_v1``, ...). Images whose grey levels are all integers 0-255 are
    stored as uint8 (exact: converting back gives the same bits), others in their own dtype.
    """
    def prepare(block: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        block = _storable_block(block, channel_axis)
        return (block, *exact_as_uint8(block))

    stream = BlockStream(images.data, prepare=prepare)  # the casts run in the background thread
    distinct = DistinctImages(image_of_trial=np.empty(images.shape[0], dtype=np.int64))
    variants: dict[Any, list[int]] = {}
    if progress is not None:
        progress.add(len(stream))
    for first, (block, small, exact) in stream:
        for offset in range(len(block)):
            trial = first + offset
            image = small[offset] if exact[offset] else block[offset]
            image_id = image_ids[trial].item()
            known = variants.setdefault(image_id, [])
            match = next((k for k in known if _same_bytes(target.read(distinct.names[k]), image)), None)
            if match is None:
                match = len(distinct.names)
                base = "image_" + re.sub(r"[/:]", "_", str(image_id))
                name = base if not known else f"{base}_v{len(known)}"
                target.add(name, image, f"frame_image_id {image_id} (first shown in trial {trial_labels[trial]})")
                known.append(match)
                distinct.image_ids.append(image_id)
                distinct.first_trial.append(trial)
                distinct.names.append(name)
            distinct.image_of_trial[trial] = match
        if progress is not None:
            progress.advance()
    return distinct


def _same_bytes(stored: np.ndarray, image: np.ndarray) -> bool:
    if stored.dtype != image.dtype or stored.shape != image.shape:
        return False
    return stored.tobytes() == np.ascontiguousarray(image).tobytes()
