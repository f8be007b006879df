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

from ..config import ConfigError, MethodConfig
from ..model import UMLModel
from .base import Method, NonFiniteLossError, StepLoss
from .cdan import CDAN
from .dann import DANN
from .isca import ISCAEndToEnd
from .margin_disparity import MarginDisparity
from .mcc import MCC
from .mdd import MDD

__all__ = ["METHODS", "STAGED", "Method", "NonFiniteLossError", "StepLoss", "build_method"]


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
