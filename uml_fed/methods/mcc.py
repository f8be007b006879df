"""MCC: minimum class confusion (Jin et al., "Minimum class confusion for versatile domain adaptation",
ECCV 2020), as the paper adapts it: separate encoders per modality, a shared classifier, every modality
labelled, and the MCC regulariser on each modality's predictions.

Reference implementations: thuml/Versatile-Domain-Adaptation (db5012a) ``pytorch/train_image_office.py``
(total = CE + MCC); thuml/Transfer-Learning-Library (c4aa59e) ``tllib/self_training/mcc.py``
(``MinimumClassConfusionLoss``).  Temperature 2.5 and trade-off 1.0 are both codes' defaults.

MCC has no cross-modal term: in the original it regularises the unlabelled target's predictions.
With every modality labelled, it is applied to every modality's predictions and averaged, so each
modality's objective is the original's CE + mu MCC.  Symmetric; any number of modalities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import Baseline, entropy


def mcc_loss(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """(sum of the off-diagonal of the column-normalised, entropy-weighted class correlation) / C.

    tllib and the official code divide by ``torch.sum(Cm, dim=1)`` broadcast over rows, i.e. entry
    (j, k) by the sum of column k; Cm is symmetric, so this is the paper's column normalisation.
    """
    batch, classes = logits.shape
    p = F.softmax(logits / temperature, dim=1)
    w = 1.0 + torch.exp(-entropy(p).detach())
    w = batch * w / w.sum()
    confusion = (p * w.unsqueeze(1)).T @ p
    confusion = confusion / confusion.sum(dim=0, keepdim=True)
    return (confusion.sum() - confusion.trace()) / classes


class MCC(Baseline):
    name = "mcc"

    def alignment(
        self, features: dict[str, torch.Tensor], logits: dict[str, torch.Tensor], progress: float
    ) -> torch.Tensor:
        return torch.stack([mcc_loss(logits[m], self.cfg.mcc_temperature) for m in self.modalities]).mean()
