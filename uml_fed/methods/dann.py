"""DANN: domain-adversarial training (Ganin et al., "Domain-adversarial training of neural networks",
JMLR 2016), as the paper adapts it: separate encoders per modality, a shared classifier, every modality
labelled, and a modality discriminator on the pooled features behind a gradient reversal layer.

Reference implementation: thuml/Transfer-Learning-Library (c4aa59e) ``tllib/alignment/dann.py``
(``DomainAdversarialLoss``) and ``examples/domain_adaptation/image_classification/dann.py``:
loss = CE + trade_off (1.0) x 0.5 [BCE(D(R(f_s)), 1) + BCE(D(R(f_t)), 0)], D = ``DomainDiscriminator``
with hidden width 1024.  The GRL coefficient follows the DANN paper's ramp over training progress
(``method.grl_max`` = 1, ``method.grl_gamma`` = 10).

The loss is symmetric in the modalities, so no modality plays "source".  K > 2 modalities: the
discriminator is a K-way modality classifier (softmax CE on the modality index), the multi-domain
generalisation of the binary domain classifier; for K = 2 it is the two-logit form of DANN's loss.
"""

from __future__ import annotations

import torch

from ..config import MethodConfig
from ..model import UMLModel
from .common import Baseline, domain_discriminator, grad_reverse, grl_coefficient, modality_loss


class DANN(Baseline):
    name = "dann"

    def __init__(self, cfg: MethodConfig, model: UMLModel) -> None:
        super().__init__(cfg, model)
        self.discriminator = domain_discriminator(self.num_features, cfg.disc_hidden, len(self.modalities))

    def alignment(
        self, features: dict[str, torch.Tensor], logits: dict[str, torch.Tensor], progress: float
    ) -> torch.Tensor:
        coeff = grl_coefficient(progress, self.cfg.grl_max, self.cfg.grl_gamma)
        f = torch.cat([features[m] for m in self.modalities])
        # one discriminator call on the concatenated batch: its BatchNorm sees all modalities, as in tllib
        return modality_loss(self.discriminator(grad_reverse(f, coeff)), [len(features[m]) for m in self.modalities])
