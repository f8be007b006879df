"""Post-hoc batch-norm calibration (paper Algorithm 2).

For one modality: an independent copy of h_k = g o f_k, all weights frozen, every BN layer's running
statistics reset and switched to a cumulative moving average (``momentum=None``: each batch counts
equally), then ``epochs`` passes of forward-only, train-mode batches of size ``batch_size`` over the
modality's own training data.  Only the BN running mean/var change; the returned copy is in eval mode
and uses them at inference.  The data never leaves the institution and the statistics are never shared.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .model import ModalityModel


def bn_layers(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def reset_bn_for_calibration(module: nn.Module) -> None:
    """Zero the running statistics of every BN layer and make it accumulate a cumulative average."""
    for bn in bn_layers(module):
        device = bn.weight.device if bn.weight is not None else None
        bn.track_running_stats = True
        bn.momentum = None
        bn.running_mean = torch.zeros(bn.num_features, device=device)
        bn.running_var = torch.zeros(bn.num_features, device=device)
        bn.num_batches_tracked = torch.tensor(0, dtype=torch.long, device=device)


@torch.no_grad()
def calibrate_bn(
    model: ModalityModel,
    images: torch.Tensor,
    epochs: int,
    batch_size: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> ModalityModel:
    """Return a calibrated copy of ``model``; ``model`` itself is untouched.

    ``images`` is the institution's (normalised) training data, N x C x H x W, on any device.
    Batches are reshuffled every epoch with ``generator``.  With ``epochs=0`` the copy keeps
    no statistics at all (it is then the uncalibrated, batch-statistics model).
    """
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"calibration data must be a non-empty N x C x H x W tensor, got shape {tuple(images.shape)}")
    if batch_size < 2:
        raise ValueError(f"batch_size={batch_size}: BN statistics need at least 2 samples per batch")
    calibrated = copy.deepcopy(model).to(device)
    for p in calibrated.parameters():
        p.requires_grad_(False)
    if epochs == 0:
        return calibrated.eval()
    reset_bn_for_calibration(calibrated)
    calibrated.train()
    n = images.shape[0]
    if n <= batch_size:
        # one batch holds the whole set: with frozen weights every epoch sees exactly the same batch
        # statistics, and their cumulative average over E_cal epochs equals one epoch's -- skip the rest
        epochs = 1
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            if idx.numel() < 2:  # a batch of one has no variance; its stats would poison the average
                continue
            calibrated(images[idx].to(device, non_blocking=True))
    return calibrated.eval()
