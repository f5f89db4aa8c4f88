"""PyTorch loaders equal to the official Sensorium ones, from any scan neuroxr opens (extra ``neuroxr[torch]``).

- :func:`static_loaders` (2022, ``sensorium.datasets.static_loaders``) and :func:`video_loaders`
  (2023, ``mouse_video_loader``) give ``{tier: DataLoader}`` for one scan and ``{tier: {scan: DataLoader}}``
  for several, with the official batches (namedtuples of float32 tensors), scale and options; each is a
  :class:`ScanLoader`, a ``DataLoader`` whose workers send images as uint8 (:mod:`neuroxr.torch.parcels`);
  :func:`loaders` picks the right one for the scan.
- :func:`predict` runs a model over a loader and labels what it says (trial x neuron [x frame]), ready
  for ``neuroxr.metrics`` and ``neuroxr.submission``.

>>> import neuroxr.torch
>>> tiers = neuroxr.torch.loaders(neuroxr.write_scan(tmp / "scan.zip", zip=True, n_trials=60, n_neurons=20), batch_size=8)
>>> images, responses = next(iter(tiers["train"]))
>>> tuple(images.shape), responses.dtype
((8, 1, 36, 64), torch.float32)
"""

from __future__ import annotations

from neuroxr.errors import require

require("torch", "torch", "neuroxr.torch (PyTorch loaders)")

from neuroxr.torch.batches import ScanBatches, batch_type  # noqa: E402
from neuroxr.torch.loaders import ScanLoader, loaders, open_scans, select_neurons, static_loaders, tier_trials, video_loaders  # noqa: E402
from neuroxr.torch.predict import predict  # noqa: E402

__all__ = [
    "ScanBatches",
    "ScanLoader",
    "batch_type",
    "loaders",
    "open_scans",
    "predict",
    "select_neurons",
    "static_loaders",
    "tier_trials",
    "video_loaders",
]
