"""CDAN: conditional domain-adversarial network (Long et al., "Conditional adversarial domain adaptation",
NeurIPS 2018), as the paper adapts it: separate encoders per modality, a shared classifier, every
modality labelled, and a modality discriminator on the multilinear map of pooled features and the
classifier's predictions, behind a gradient reversal layer.

Reference implementations: thuml/CDAN (c904cd3) ``pytorch/loss.py`` (``CDAN``), ``pytorch/network.py``
(``RandomLayer``); thuml/Transfer-Learning-Library (c4aa59e) ``tllib/alignment/cdan.py``
(``ConditionalDomainAdversarialLoss``, ``MultiLinearMap``, ``RandomizedMultiLinearMap``).

* Conditioning h = T(f, g) with g = softmax(logits) **detached** (both implementations).  T is the
  multilinear map g (outer) f (class-major, tllib/official layout) when features x classes <= 4096, else the
  randomized map (R_f f) * (R_g g) / sqrt(d), d = ``method.cdan_randomized_dim`` = 1024, with fixed
  Gaussian R_f, R_g (the paper's rule and sizes; kept as buffers).
* ``method.cdan_entropy`` = False (default) is plain CDAN, the variant the paper's Table 4 row names
  ("CDAN").  True is CDAN+E: per-sample weights 1 + exp(-H(g)), detached as in tllib, normalised within
  each modality as the official ``loss.py`` normalises within source and target.
* Trade-off 1.0 (tllib and official default), discriminator hidden 1024, GRL ramp as DANN's.

Symmetric in the modalities; K > 2: a K-way modality discriminator, as for DANN (:mod:`.dann`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..config import MethodConfig
from ..model import UMLModel
from .common import Baseline, domain_discriminator, entropy, grad_reverse, grl_coefficient, modality_loss

RANDOMIZE_ABOVE = 4096  # Long et al. 2018: the randomized map when features x classes exceeds this


def multilinear_map(f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """g (outer) f per row, flattened class-major: entry c * F + k = g_c f_k."""
    return torch.bmm(g.unsqueeze(2), f.unsqueeze(1)).flatten(1)


def randomized_map(f: torch.Tensor, g: torch.Tensor, r_f: torch.Tensor, r_g: torch.Tensor) -> torch.Tensor:
    """(f R_f) * (g R_g) / sqrt(d): an unbiased low-dimensional estimate of the multilinear map's inner products."""
    return (f @ r_f) * (g @ r_g) / math.sqrt(r_f.shape[1])


class CDAN(Baseline):
    name = "cdan"

    def __init__(self, cfg: MethodConfig, model: UMLModel) -> None:
        super().__init__(cfg, model)
        self.entropy_conditioning = cfg.cdan_entropy
        self.randomized = self.num_features * self.num_classes > RANDOMIZE_ABOVE
        if self.randomized:
            self.register_buffer("r_f", torch.randn(self.num_features, cfg.cdan_randomized_dim))
            self.register_buffer("r_g", torch.randn(self.num_classes, cfg.cdan_randomized_dim))
        in_features = cfg.cdan_randomized_dim if self.randomized else self.num_features * self.num_classes
        self.discriminator = domain_discriminator(in_features, cfg.disc_hidden, len(self.modalities))

    def alignment(
        self, features: dict[str, torch.Tensor], logits: dict[str, torch.Tensor], progress: float
    ) -> torch.Tensor:
        f = torch.cat([features[m] for m in self.modalities])
        g = F.softmax(torch.cat([logits[m] for m in self.modalities]), dim=1).detach()
        h = randomized_map(f, g, self.r_f, self.r_g) if self.randomized else multilinear_map(f, g)
        coeff = grl_coefficient(progress, self.cfg.grl_max, self.cfg.grl_gamma)
        weights = 1.0 + torch.exp(-entropy(g)) if self.entropy_conditioning else None
        return modality_loss(
            self.discriminator(grad_reverse(h, coeff)), [len(features[m]) for m in self.modalities], weights
        )
