"""A model's predictions over a loader's trials, as a labelled DataArray (what ``neuroxr.metrics`` and ``neuroxr.submission`` take)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import xarray as xr
from torch.utils.data import DataLoader, SubsetRandomSampler

from neuroxr import datamodel
from neuroxr.torch.batches import FRAME, ScanBatches, VideoPipeline


def predict(model: Any, loader: DataLoader, *, device: str | torch.device = "cpu", **model_kwargs: Any) -> xr.DataArray:
    """``model(batch[0], **model_kwargs)`` over every batch of a sequential tier's loader, as (trial, neuron[, frame]).

    As the official ``model_predictions``: the model gets the first field (images or videos) on
    ``device``, gradients off; its output is (batch, neuron) for images, (batch, frame, neuron) for
    videos, aligned with the *last* frames the batch served (frames before that, and after the trial,
    are NaN). The result carries the scan's trial and neuron coordinates (``tier``, ``image_id``,
    ``trial_idx``, ...). Put the model in ``eval()`` mode first if it has dropout or batch norm.

    >>> import neuroxr.torch
    >>> tiers = neuroxr.torch.loaders(neuroxr.make_scan(n_trials=60, n_neurons=20), batch_size=4)
    >>> linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36 * 64, 20))
    >>> predictions = neuroxr.torch.predict(linear, tiers["test"])
    >>> predictions.dims, predictions.sizes["trial"], set(predictions.tier.values.tolist())
    (('trial', 'neuron'), 9, {'test'})
    """
    dataset = loader.dataset
    if not isinstance(dataset, ScanBatches):
        raise TypeError(f"expected a loader made by neuroxr.torch, found one over {type(dataset).__name__}")
    if isinstance(loader.sampler, SubsetRandomSampler):
        raise ValueError("expected a sequential tier's loader (validation, test, ...): a shuffled one changes order every epoch")
    trials = np.asarray(list(loader.sampler), dtype=np.int64)
    video = isinstance(dataset.pipeline, VideoPipeline)
    if video and dataset.pipeline.frames is not None and dataset.pipeline.offset < 0:
        raise ValueError("expected a loader of whole trials (frames=None) or fixed windows (offset >= 0), found random windows")
    outputs = []
    with torch.no_grad():
        for batch in loader:
            output = model(batch[0].to(device), **model_kwargs)
            values = output.detach().cpu().numpy().astype(np.float32)
            outputs.append(_placed(values, batch, dataset) if video else values)
    data = np.concatenate(outputs) if outputs else np.empty((0, dataset.scan.sizes[datamodel.NEURON]), np.float32)
    labels = dataset.scan.isel({datamodel.TRIAL: trials})
    dims = (datamodel.TRIAL, datamodel.NEURON, FRAME) if video else (datamodel.TRIAL, datamodel.NEURON)
    coords = {name: coord for name, coord in labels.coords.items() if set(coord.dims) <= set(dims)}
    return xr.DataArray(data, dims=dims, coords=coords, name="predictions", attrs={"scan": dataset.key})


def _placed(values: np.ndarray, batch: Any, dataset: ScanBatches) -> np.ndarray:
    """Video outputs (batch, frame, neuron) placed on the scan's frames (batch, neuron, frame): the last frames served."""
    served = batch.responses.shape[-1]
    start = max(dataset.pipeline.offset, 0) if dataset.pipeline.frames is not None else 0
    frames = values.shape[1]
    if frames > served:
        raise ValueError(f"the model gave {frames} frames for a batch of {served}")
    placed = np.full((len(values), values.shape[2], dataset.scan.sizes[FRAME]), np.nan, dtype=np.float32)
    placed[:, :, start + served - frames : start + served] = values.transpose(0, 2, 1)
    return placed
