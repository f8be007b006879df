"""Training objectives on the one loop: UML (the paper's Algorithm 1) and the comparison baselines.

A method turns one step's batches (one mini-batch per modality) into the loss to minimise.  It is an
``nn.Module`` so that what it owns (a domain discriminator, an adversarial head, per-modality linear
maps) trains with the model, by the same optimizer and schedule.  ``progress`` (0 -> 1 over the
run) drives schedules such as a gradient-reversal coefficient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, MethodConfig
from ..model import UMLModel


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


METHODS: dict[str, type[Method]] = {"uml": Method}


def build_method(cfg: MethodConfig, model: UMLModel) -> Method:
    if cfg.name not in METHODS:
        raise ConfigError(f"method.name={cfg.name!r} is not a known method; choose one of {sorted(METHODS)}")
    return METHODS[cfg.name](cfg, model)
