"""MDD: maximum density divergence (Li, Chen, Ding, Zhu, Lu, Shen, "Maximum density divergence for domain
adaptation", IEEE TPAMI 43(11):3918-3930, 2020; the paper's reference for its Table 4 "MDD" row), in the
paper's adaptation: separate encoders per modality, the shared classifier, every modality labelled.

Li et al. define, for distributions P (source) and Q (target), Eq. (3):

    MDD(P, Q) = E ||X_s - X_t||^2 + E ||X_s - X_s'||^2 + E ||X_t - X_t'||^2

and train on its batch estimate on learned features f = F(x), Eq. (5):

    L_mdd = (1/n_b) sum_i ||f_s,i - f_t,i||^2                      (inter-domain: index-aligned pairs)
          + (1/m_s) sum_{y_s,i = y_s,j} ||f_s,i - f_s,j||^2        (intra-class density, source)
          + (1/m_t) sum_{y_t,i = y_t,j} ||f_t,i - f_t,j||^2        (intra-class density, target)

with m_s, m_t the numbers of same-label pairs in each domain's half of the batch (target labels are
pseudo-labels there).  Their method, ATM (adversarial tight match), minimises L_adv + alpha L_mdd, where
L_adv is source cross-entropy plus lambda times CDAN's conditional adversarial loss with entropy
conditioning (Eq. (6)); alpha = 0.01 was best in their sensitivity study.

Here:

* f = the pooled features the shared classifier sees (the paper's "feature learner F" output); squared
  Euclidean distances as Eqs. (3)-(5) write them (the authors' code, lijin118/ATM c7c7d76 ``loss.py``,
  instead takes a softmax over the features and the plain norm; we follow the paper's formulation);
* every modality is labelled, so the intra-class terms use true labels for both (no pseudo-labels); the
  unordered pairs i < j of equal label, averaged (a batch half without such a pair contributes 0);
* K modalities: Eq. (5) for every unordered pair of modalities, averaged over the pairs (K = 2: Eq. (5));
* total = mean per-modality CE + ``method.align_weight`` (lambda = 1, the code's trade-off) x the CDAN+E
  adversarial term of :mod:`.cdan` (GRL ramp of DANN/CDAN) + ``method.density_weight`` (alpha = 0.01) x
  L_mdd.
"""

from __future__ import annotations

import itertools

import torch

from ..config import MethodConfig
from ..model import UMLModel
from .base import StepLoss
from .cdan import CDAN


def inter_domain(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """(1/n_b) sum_i ||f_s,i - f_t,i||^2 over the index-aligned pairs (n_b = the smaller batch)."""
    n = min(len(f_s), len(f_t))
    return (f_s[:n] - f_t[:n]).pow(2).sum(dim=1).mean()


def intra_class(f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(1/m) sum over the m unordered pairs i < j with y_i = y_j of ||f_i - f_j||^2 (0 when m = 0)."""
    same = (y[:, None] == y[None, :]).triu(diagonal=1)
    m = same.sum()
    if m == 0:
        return f.sum() * 0.0
    return (torch.cdist(f, f).pow(2) * same).sum() / m


def density_divergence(f_s: torch.Tensor, y_s: torch.Tensor, f_t: torch.Tensor, y_t: torch.Tensor) -> torch.Tensor:
    """Li et al. 2020 Eq. (5) between two labelled batches."""
    return inter_domain(f_s, f_t) + intra_class(f_s, y_s) + intra_class(f_t, y_t)


class MDD(CDAN):
    name = "mdd"

    def __init__(self, cfg: MethodConfig, model: UMLModel) -> None:
        super().__init__(cfg, model)
        self.entropy_conditioning = True  # ATM's adversary is CDAN with entropy conditioning (CDAN+E)

    def loss(self, model: UMLModel, batches: dict[str, tuple[torch.Tensor, torch.Tensor]], progress: float) -> StepLoss:
        features = {m: model.features(batches[m][0], m) for m in self.modalities}
        out = self.objective(model, features, {m: batches[m][1] for m in self.modalities}, progress)
        pairs = list(itertools.combinations(self.modalities, 2))
        density = torch.stack(
            [density_divergence(features[s], batches[s][1], features[t], batches[t][1]) for s, t in pairs]
        ).mean()
        return StepLoss(out.total + self.cfg.density_weight * density, out.ce, out.logits)
