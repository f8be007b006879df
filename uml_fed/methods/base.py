"""The objective every method starts from: UML's (Algorithm 1), and what a step's loss is."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import MethodConfig
from ..model import UMLModel


class NonFiniteLossError(FloatingPointError):
    """Training diverged; the message names where (round, client, modality, epoch, step)."""


@dataclass
class StepLoss:
    total: torch.Tensor  # what the optimizer minimises
    ce: dict[str, torch.Tensor]  # each modality's cross-entropy (reported as its training loss)
    logits: dict[str, torch.Tensor]  # each modality's logits (training accuracy)


class Method(nn.Module):
    """Algorithm 1: the mean over modalities of each modality's mini-batch cross-entropy."""

    name = "uml"

    def __init__(self, cfg: MethodConfig, model: UMLModel) -> None:
        super().__init__()
        self.cfg = cfg

    def loss(self, model: UMLModel, batches: dict[str, tuple[torch.Tensor, torch.Tensor]], progress: float) -> StepLoss:
        logits = {m: model(x, m) for m, (x, _) in batches.items()}
        ce = {m: F.cross_entropy(logits[m], y) for m, (_, y) in batches.items()}
        return StepLoss(torch.stack(list(ce.values())).mean(), ce, logits)
