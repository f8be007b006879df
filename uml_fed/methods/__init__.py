"""Training objectives on the one loop: UML (the paper's Algorithm 1) and the comparison baselines
(DANN, CDAN, MCC, MDD = maximum density divergence: :mod:`.dann` ... :mod:`.mdd`; margin disparity
discrepancy: :mod:`.margin_disparity`; ISCA: :mod:`.isca`; shared pieces: :mod:`.common`).

A method turns one step's batches (one mini-batch per modality) into the loss to minimise.  It is an
``nn.Module`` so that what it owns (a modality discriminator, adversarial classifiers) trains with the
model, by the same optimizer and schedule; what evaluation needs (ISCA's linear maps) is part of the
model.  ``progress`` (0 -> 1 over the run) drives schedules such as a gradient-reversal coefficient.
Methods run centralized only (``uml-fed centralized method=<name>``).
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


# The baselines subclass Method (via .common), so they are imported once it exists.
from .cdan import CDAN  # noqa: E402
from .dann import DANN  # noqa: E402
from .isca import ISCAEndToEnd  # noqa: E402
from .margin_disparity import MarginDisparity  # noqa: E402
from .mcc import MCC  # noqa: E402
from .mdd import MDD  # noqa: E402

METHODS: dict[str, type[Method]] = {m.name: m for m in (Method, DANN, CDAN, MCC, MDD, MarginDisparity, ISCAEndToEnd)}


# run by their own procedure (uml_fed.centralized), not as a loss on the loop
STAGED = {"isca": "the authors' ISCA: frozen unimodal encoders, then linear maps (uml_fed.methods.isca)"}


def build_method(cfg: MethodConfig, model: UMLModel) -> Method:
    if cfg.name in STAGED:
        raise ConfigError(f"method.name={cfg.name} is {STAGED[cfg.name]}; run it with uml-fed centralized")
    if cfg.name not in METHODS:
        raise ConfigError(
            f"method.name={cfg.name!r} is not a known method; choose one of {sorted([*METHODS, *STAGED])}"
        )
    return METHODS[cfg.name](cfg, model)
