"""neuroxr: the Sensorium mouse visual cortex data as lazy, labelled xarray Datasets.

>>> import neuroxr
>>> ds = neuroxr.open_scan("static21067-10-18-GrayImageNet-94c6ff995dac583098847cfecd43e7b6.zip")  # doctest: +SKIP
>>> neuroxr.to_netcdf(ds, "21067-10-18.nc")  # doctest: +SKIP

Public functions are imported on first use, so ``import neuroxr`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from neuroxr.errors import ScanError, TargetExistsError

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS = {
    "open_scan": "neuroxr.dataset",
    "open_datatree": "neuroxr.opening",
    "open": "neuroxr.opening",
    "to_folder": "neuroxr.formats.folder",
    "to_netcdf": "neuroxr.formats.netcdf",
    "open_netcdf": "neuroxr.formats.netcdf",
    "to_zarr": "neuroxr.formats.zarr",
    "open_zarr": "neuroxr.formats.zarr",
    "to_nwb": "neuroxr.formats.nwb",
    "open_nwb": "neuroxr.formats.nwb",
    "standardize": "neuroxr.standardization",
    "train_statistics": "neuroxr.standardization",
    "write_scan": "neuroxr.synthetic",
    "make_scan": "neuroxr.synthetic",
}
_SUBMODULES = ("metrics", "synthetic", "model")

__all__ = ["ScanError", "TargetExistsError", "__version__", *_EXPORTS, *_SUBMODULES]

if TYPE_CHECKING:
    from neuroxr import metrics, model, synthetic
    from neuroxr.dataset import open_scan
    from neuroxr.formats.folder import to_folder
    from neuroxr.formats.netcdf import open_netcdf, to_netcdf
    from neuroxr.formats.nwb import open_nwb, to_nwb
    from neuroxr.formats.zarr import open_zarr, to_zarr
    from neuroxr.opening import open, open_datatree
    from neuroxr.standardization import standardize, train_statistics
    from neuroxr.synthetic import make_scan, write_scan


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"neuroxr.{name}")
    else:
        raise AttributeError(f"module 'neuroxr' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
