"""A plain-text summary of a scan: sizes, frames and trial lengths, tiers, neurons per area and layer, what is withheld."""

from __future__ import annotations

from collections import Counter

import numpy as np
import xarray as xr

from neuroxr import datamodel


def _counts(values: np.ndarray) -> str:
    counted = Counter(str(value) for value in np.asarray(values).ravel())
    return ", ".join(f"{label} {count}" for label, count in sorted(counted.items(), key=lambda item: (-item[1], item[0])))


def _table(pairs: list[tuple[str, str]]) -> list[str]:
    width = max(len(key) for key, _ in pairs)
    return [f"  {key:<{width}}  {value}" for key, value in pairs]


def describe(ds: xr.Dataset) -> str:
    """What a user should know first about a scan, in a few lines.

    >>> print(describe(neuroxr.make_scan(n_trials=60, n_neurons=20)))
    scan 30001-2-3  (static30001-2-3-GrayImageNet-...)
      trials             60
      neurons            20
      images             1 x 36 x 64 float32
      ...
      withheld           nothing
    >>> print(describe(neuroxr.make_scan(kind="dynamic", n_trials=60, n_neurons=20, n_frames=90)))
    scan 30001-2-3  (dynamic30001-2-3-Video-...)
      trials             60
      neurons            20
      videos             36 x 64 x 90 float32
      ...
      frames             90 per trial as stored (padded), 30 Hz (3.0 s)
      trial lengths      ... frames, median 84; ... trials NaN-padded
      ...
    """
    lines = [f"scan {ds.attrs.get('scan', '?')}  ({ds.attrs.get('release_name', ds.attrs.get('format', ''))})"]
    pairs = [("trials", str(ds.sizes.get("trial", 0))), ("neurons", str(ds.sizes.get("neuron", 0)))]
    kind = datamodel.kind_of([*ds.variables, *ds.dims], ds.attrs)
    for name in kind.data_variables:
        if name in ds:
            pairs.append((name, f"{' x '.join(str(ds.sizes[d]) for d in ds[name].dims[1:])} {ds[name].dtype}"))
    if kind.time_dim is not None and kind.time_dim in ds.dims:
        pairs += _frames(ds, kind)
    if "tier" in ds.coords:
        pairs.append(("tiers", _counts(ds.tier.values)))
    if "image_id" in ds.coords:
        ids, repeats = np.unique(ds.image_id.values, return_counts=True)
        pairs.append(("images shown", f"{len(ids)} distinct, {int((repeats > 1).sum())} of them repeated"))
    if "area" in ds.coords:
        pairs.append(("neurons per area", _counts(ds.area.values)))
    if "layer" in ds.coords:
        pairs.append(("neurons per layer", _counts(ds.layer.values)))
    pairs.append(("withheld", "; ".join(_withheld(ds)) or "nothing"))
    return "\n".join(lines + _table(pairs))


def _frames(ds: xr.Dataset, kind: datamodel.ReleaseKind) -> list[tuple[str, str]]:
    """A video scan's time axis and its trials' lengths."""
    padded = ds.sizes[kind.time_dim]  # type: ignore[index]
    rate = float(ds.attrs.get(datamodel.FRAME_RATE_ATTR, kind.frame_rate or 0))
    pairs = [("frames", f"{padded} per trial as stored (padded), {rate:g} Hz ({padded / rate:.1f} s)" if rate else f"{padded}")]
    if datamodel.N_FRAMES in ds.coords and ds.sizes.get("trial"):
        lengths = np.asarray(ds[datamodel.N_FRAMES].values)
        padded_trials = int((lengths < padded).sum())
        pairs.append(
            ("trial lengths", f"{int(lengths.min())}-{int(lengths.max())} frames, median {float(np.median(lengths)):g}; "
                              f"{padded_trials} trials NaN-padded")  # fmt: skip
        )
    return pairs


def _withheld(ds: xr.Dataset) -> list[str]:
    masked = sorted(datamodel.withheld_variables(ds.attrs))
    found = []
    if datamodel.WITHHELD_COORD in ds.coords and ds[datamodel.WITHHELD_COORD].values.any():
        marked = ds[datamodel.WITHHELD_COORD].values
        tiers = sorted(set(np.asarray(ds.tier.values)[marked].astype(str))) if "tier" in ds.coords else []
        how = "NaN" if "responses" in masked else "the stored zeros"
        found.append(f"responses of {int(marked.sum())} trials ({', '.join(tiers)}), read as {how}")
    others = [name for name in masked if name != "responses"]
    if others:
        found.append(f"all of {', '.join(others)}, read as NaN")
    return found
