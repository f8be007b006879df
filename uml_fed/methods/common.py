"""What the comparison baselines share: the separate-encoder objective, gradient reversal, the modality
discriminator and its loss, and the prediction entropy.

The paper adapts its baselines "by using separate encoders per modality with shared classifiers and
providing the labels for both modalities" (Sec. 4.4): the model is a :class:`~uml_fed.model.UMLModel`
with all 8 blocks private (``model.projection_blocks=8``), so the shared part is the pooling and the
linear classifier.  Training, model selection and evaluation are UML's: one AdamW over the model and
the method's own modules, Table 7's schedule, best validation accuracy per modality, then static-BN
calibration (Algorithm 2) and evaluation per modality -- the method only changes the training loss.

References read for the pieces here: tllib = thuml/Transfer-Learning-Library (c4aa59e),
``tllib/modules/grl.py``, ``tllib/modules/domain_discriminator.py``, ``tllib/modules/entropy.py``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, MethodConfig
from ..model import NUM_BLOCKS, UMLModel
from .base import Method, StepLoss


class Baseline(Method):
    """Separate encoders, a shared classifier: UML's mean per-modality cross-entropy (every modality is
    labelled) + ``method.align_weight`` x the method's :meth:`alignment` term.

    The cross-entropy is averaged over modalities, as in Algorithm 1, so that each modality's CE keeps the
    weight 1 that the source CE has in the original single-source formulations, and a zero weight gives
    back UML's loss on this model.
    """

    def __init__(self, cfg: MethodConfig, model: UMLModel) -> None:
        super().__init__(cfg, model)
        if model.cfg.projection_blocks != NUM_BLOCKS:
            raise ConfigError(
                f"method.name={cfg.name} is a separate-encoder baseline: set model.projection_blocks={NUM_BLOCKS} "
                f"(configs/method/{cfg.name}.yaml does), got {model.cfg.projection_blocks}"
            )
        if len(model.modalities) < 2:
            raise ConfigError(
                f"method.name={cfg.name} aligns modalities: list at least two in data.modalities "
                f"(got {model.modalities}), or use method=uml"
            )
        self.modalities = model.modalities  # fixed order: modality k is class k of a discriminator
        self.num_features = model.backbone.fc.in_features
        self.num_classes = model.backbone.fc.out_features

    def loss(self, model: UMLModel, batches: dict[str, tuple[torch.Tensor, torch.Tensor]], progress: float) -> StepLoss:
        features = {m: model.features(batches[m][0], m) for m in self.modalities}
        return self.objective(model, features, {m: batches[m][1] for m in self.modalities}, progress)

    def objective(
        self, model: UMLModel, features: dict[str, torch.Tensor], labels: dict[str, torch.Tensor], progress: float
    ) -> StepLoss:
        """Mean CE of the shared classifier on every modality's pooled ``features`` + the weighted alignment."""
        logits = {m: model.backbone.head(f) for m, f in features.items()}
        ce = {m: F.cross_entropy(logits[m], labels[m]) for m in self.modalities}
        total = torch.stack(list(ce.values())).mean()
        total = total + self.cfg.align_weight * self.alignment(features, logits, progress)
        return StepLoss(total, ce, logits)

    def alignment(
        self, features: dict[str, torch.Tensor], logits: dict[str, torch.Tensor], progress: float
    ) -> torch.Tensor:
        """The method's term between the modalities' pooled features / logits (keyed in ``self.modalities`` order)."""
        raise NotImplementedError


class _GradientReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, coeff: float) -> torch.Tensor:  # type: ignore[override]
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad.neg() * ctx.coeff, None


def grad_reverse(x: torch.Tensor, coeff: float) -> torch.Tensor:
    """Gradient reversal layer (Ganin et al. 2016; tllib ``GradientReverseFunction``): identity forward,
    gradient x (-coeff) backward.  With it one optimizer step trains the discriminator to minimise its
    loss and everything before the layer to maximise it (the minimax game of the adversarial methods)."""
    return _GradientReverse.apply(x, coeff)


def grl_coefficient(progress: float, high: float, gamma: float) -> float:
    """DANN's schedule lambda_p = high (2 / (1 + exp(-gamma p)) - 1) over training progress p in [0, 1]
    (Ganin et al. 2016, gamma = 10).  tllib's WarmStartGradientReverseLayer is the same curve over an
    iteration count (max_iters = 1000, which would saturate in the first epochs of a 200-epoch run)."""
    return high * (2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0)


def domain_discriminator(in_features: int, hidden: int, modalities: int) -> nn.Sequential:
    """tllib ``DomainDiscriminator(in_features, hidden, batch_norm=True, sigmoid=False)``: two hidden
    Linear-BN-ReLU layers and a linear head, here with one logit per modality (a K-way modality
    classifier; for K = 2 it is tllib's two-logit variant of DANN's binary domain classifier)."""
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(),
        nn.Linear(hidden, modalities),
    )


def modality_loss(scores: torch.Tensor, sizes: list[int], weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of telling each sample's modality (rows: modality 0's batch, then modality 1's, ...),
    (weighted) mean within each modality, then mean over modalities.

    For two modalities of equal batch size and no weights this is DANN's 0.5 [BCE(D(f_s), 1) +
    BCE(D(f_t), 0)] (tllib ``DomainAdversarialLoss``); the per-modality mean keeps every modality's
    weight equal when batch sizes differ.  ``weights`` (CDAN+E) are normalised within each modality,
    as the official CDAN ``loss.py`` normalises them within source and target.
    """
    target = torch.repeat_interleave(
        torch.arange(len(sizes), device=scores.device), torch.tensor(sizes, device=scores.device)
    )
    ce = F.cross_entropy(scores, target, reduction="none")
    w = torch.ones_like(ce) if weights is None else weights
    return torch.stack([(wk * ck).sum() / wk.sum() for wk, ck in zip(w.split(sizes), ce.split(sizes))]).mean()


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Per-row prediction entropy -sum_c p_c log(p_c + 1e-5) (tllib ``entropy``; the official CDAN and
    MCC code use the same 1e-5)."""
    return -(p * torch.log(p + 1e-5)).sum(dim=1)
