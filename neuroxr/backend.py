"""The xarray backend: ``xr.open_dataset(path, engine="sensorium")`` opens a scan folder, .zip or URL.

Small glue over :func:`neuroxr.layout.read_layout` and :func:`neuroxr.dataset.build_dataset`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, ClassVar

import xarray as xr
from xarray.backends import BackendEntrypoint

from neuroxr.dataset import build_dataset, tree_of
from neuroxr.layout import read_layout
from neuroxr.layout.discover import looks_like_scan, scan_paths, scan_urls
from neuroxr.sources import is_url


class SensoriumBackendEntrypoint(BackendEntrypoint):
    """Open one Sensorium scan (folder, .zip or URL) as the neuroxr data model.

    >>> import xarray as xr
    >>> ds = xr.open_dataset(neuroxr.write_scan(tmp / "scan.zip", zip=True, n_trials=60, n_neurons=20), engine="sensorium", chunks={})
    >>> ds.responses.sizes["trial"]
    60
    """

    description = "Sensorium mouse visual cortex scans (folder or .zip of per-trial .npy files)"
    open_dataset_parameters: ClassVar[tuple[str, ...]] = (
        "filename_or_obj",
        "drop_variables",
        "mask_withheld",
        "trials_per_chunk",
        "storage_options",
        "n_frames_from",
    )

    def open_dataset(  # type: ignore[override]
        self,
        filename_or_obj: Any,
        *,
        drop_variables: str | Iterable[str] | None = None,
        mask_withheld: bool = True,
        trials_per_chunk: int | None = None,
        storage_options: dict[str, Any] | None = None,
        n_frames_from: str | None = None,
    ) -> xr.Dataset:
        """Open a scan; ``trials_per_chunk`` sets the preferred dask chunk along ``trial`` (default ~64 MB).

        ``storage_options`` go to fsspec when ``filename_or_obj`` is a URL. ``n_frames_from`` names
        the variable a video scan's trial lengths are read from (see ``neuroxr.open_scan``).
        """
        if isinstance(drop_variables, str):
            drop_variables = [drop_variables]
        layout = read_layout(os.fspath(filename_or_obj), storage_options, n_frames_from=n_frames_from)
        return build_dataset(
            layout, drop_variables=drop_variables, mask_withheld=mask_withheld, trials_per_chunk=trials_per_chunk
        )

    supports_groups = True

    def open_groups_as_dict(  # type: ignore[override]
        self,
        filename_or_obj: Any,
        *,
        drop_variables: str | Iterable[str] | None = None,
        mask_withheld: bool = True,
        storage_options: dict[str, Any] | None = None,
    ) -> dict[str, xr.Dataset]:
        """A folder of scans (a path or a URL) as ``{"/": attrs only, "/<scan key>": scan, ...}``."""
        where = os.fspath(filename_or_obj)
        scans = {}
        for path in scan_urls(where, storage_options) if is_url(where) else scan_paths(where):
            ds = self.open_dataset(path, drop_variables=drop_variables, mask_withheld=mask_withheld, storage_options=storage_options)
            scans[ds.attrs["scan"]] = ds
        tree = tree_of(scans)
        return {node.path: node.to_dataset() for node in tree.subtree}

    def open_datatree(  # type: ignore[override]
        self,
        filename_or_obj: Any,
        *,
        drop_variables: str | Iterable[str] | None = None,
        mask_withheld: bool = True,
        storage_options: dict[str, Any] | None = None,
    ) -> xr.DataTree:
        """A folder of scans (or one scan; a path or a URL) as a DataTree with one child per scan."""
        groups = self.open_groups_as_dict(
            filename_or_obj, drop_variables=drop_variables, mask_withheld=mask_withheld, storage_options=storage_options
        )
        return xr.DataTree.from_dict(groups)

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        try:
            return looks_like_scan(os.fspath(filename_or_obj))
        except (TypeError, OSError, ValueError):
            return False
