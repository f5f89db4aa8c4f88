"""neuroxr: the Sensorium mouse visual cortex data as lazy, labelled xarray Datasets.

>>> import neuroxr
>>> ds = neuroxr.open_scan(neuroxr.write_scan(tmp / "scan.zip", zip=True, n_trials=60, n_neurons=20))
>>> path = neuroxr.to_netcdf(ds, tmp / "30001-2-3.nc")
>>> neuroxr.open(path).responses.sizes
Frozen({'trial': 60, 'neuron': 20})

Public functions are imported on first use, so ``import neuroxr`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from neuroxr.errors import (
    DatasetError,
    MetadataError,
    MissingExtraError,
    NeuroxrError,
    RemoteError,
    ScanError,
    SourceOverwriteError,
    TargetBusyError,
    TargetExistsError,
)

__version__ = "0.2.0"

#: public name -> (module that defines it, name there)
_EXPORTS = {
    "open_scan": ("neuroxr.opening", "open_scan"),
    "open_datatree": ("neuroxr.opening", "open_datatree"),
    "open": ("neuroxr.opening", "open_any"),
    "to_folder": ("neuroxr.formats.release", "to_folder"),
    "to_netcdf": ("neuroxr.formats.netcdf", "to_netcdf"),
    "open_netcdf": ("neuroxr.formats.netcdf", "open_netcdf"),
    "to_zarr": ("neuroxr.formats.zarr", "to_zarr"),
    "open_zarr": ("neuroxr.formats.zarr", "open_zarr"),
    "to_nwb": ("neuroxr.formats.nwb", "to_nwb"),
    "open_nwb": ("neuroxr.formats.nwb", "open_nwb"),
    "standardize": ("neuroxr.analysis.standardization", "standardize"),
    "train_statistics": ("neuroxr.analysis.standardization", "train_statistics"),
    "write_scan": ("neuroxr.synthetic", "write_scan"),
    "make_scan": ("neuroxr.synthetic", "make_scan"),
    "describe": ("neuroxr.views.describe", "describe"),
    "summary_figure": ("neuroxr.views.plot", "summary_figure"),
}
#: public submodule -> the module it is
_SUBMODULES = {
    "metrics": "neuroxr.analysis.metrics",
    "synthetic": "neuroxr.synthetic",
    "datamodel": "neuroxr.datamodel",
    "model": "neuroxr.model",  # deprecated alias of datamodel
}
_ERRORS = [
    "DatasetError",
    "MetadataError",
    "MissingExtraError",
    "NeuroxrError",
    "RemoteError",
    "ScanError",
    "SourceOverwriteError",
    "TargetBusyError",
    "TargetExistsError",
]

__all__ = [*_ERRORS, "__version__", *_EXPORTS, *(name for name in _SUBMODULES if name != "model")]

if TYPE_CHECKING:
    from neuroxr import datamodel, synthetic
    from neuroxr.analysis import metrics
    from neuroxr.analysis.standardization import standardize, train_statistics
    from neuroxr.formats.netcdf import open_netcdf, to_netcdf
    from neuroxr.formats.nwb import open_nwb, to_nwb
    from neuroxr.formats.release import to_folder
    from neuroxr.formats.zarr import open_zarr, to_zarr
    from neuroxr.opening import open_any as open
    from neuroxr.opening import open_datatree, open_scan
    from neuroxr.synthetic import make_scan, write_scan
    from neuroxr.views.describe import describe
    from neuroxr.views.plot import summary_figure


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module, attribute = _EXPORTS[name]
        value = getattr(importlib.import_module(module), attribute)
    elif name in _SUBMODULES:
        value = importlib.import_module(_SUBMODULES[name])
    else:
        raise AttributeError(f"module 'neuroxr' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
