"""ISCA: identifiable shared component analysis (Timilsina, Shrestha, Fu, "Identifiable shared component
analysis of unpaired multimodal mixtures", NeurIPS 2024), as its authors run it, and an end-to-end
variant of ours.

ISCA finds per-modality linear maps Q^(q) (d_C x d, no bias) of fixed embeddings x^(q) such that the
mapped modalities are equal in distribution, Q^(1) x^(1) =(d) Q^(2) x^(2), subject to
Q^(q) E[x x^T] Q^(q)^T = I; a classifier is trained on the shared components.  Reference code read:
XiaoFuLab/Shared-Component-Analysis (ab0c83f) ``Domain Adaptation/train.py``, ``modules/Networks.py``,
``run_office31.sh``, ``utils/tllib/mcc/mcc.py``; ``Single cell sequence analysis/train.py`` for separate
maps per modality.

``method=isca`` (:func:`fit_maps`, run by :func:`uml_fed.centralized.isca_arm`), the authors' recipe with
the least change this setting forces:

* **encoders trained first, then frozen**: each modality's encoder is its unimodal baseline (same
  seed, schedule, selection and BN as the ``unimodal`` arm; the authors use a frozen pretrained
  ResNet-50, which this setting has not got); the fixed embedding is its pooled 8 x width feature in
  eval mode (the authors recompute theirs every step from unaugmented images: the same thing);
* **a separate Q^(q) per modality** (heterogeneous encoders; the authors' single-cell code has one
  per modality, their DA code shares one between homogeneous domains), ``nn.Linear`` without bias and
  default initialisation, d_C = ``model.shared_components`` = width (1/8 of the embedding, the ratio of
  their Office-31 run: 2048 -> 256);
* **centred components**: x - batch mean before Q in training (their ``--normalize``); a deployed
  model centres with its institution's training mean (the authors centre a test set by its own mean,
  which needs the test set at once);
* **alternating non-saturating adversarial steps** per iteration: one discriminator step (BCE, the
  first modality labelled ~1, the second ~0) then one step of the maps and the classifier against
  flipped labels; labels with noise U[0, 0.2 nf] decaying by epoch, nf = 1 - epoch / epochs; their
  discriminator (MLP d_C-1024-512-512-256-128-64-1, LeakyReLU 0.2, sigmoid);
* **their losses and weights**: lambda_dist = 1 on each modality's adversarial term, the whitening
  penalty (1/d_C) ||(1/B) C^T C - I||_F (not squared) at weight 1 per modality, cross-entropy at
  lambda_cls = 0.1, MCC (tllib, temperature 0.55) at weight 0.1 (their scripts run "SCA+MCC");
* **their optimisation**: Adam, default betas, no weight decay; lr 2e-4 (maps), 2e-5 (discriminator),
  4e-4 (1 + 0.001 t)^-0.75 (classifier: their ``class_lr`` applied twice); batch 64 per modality;
  1250 iterations = 10 epochs of 125;
* **a classifier on the shared components with both modalities' labels**: one linear layer
  (``--class_layers 1``), CE on each modality summed (each modality's CE has the weight their source CE
  has); MCC on each modality's predictions, averaged (theirs: on the unlabelled target's);
* **model selection on validation**: every 10 iterations (their evaluation interval) each modality
  keeps the maps and classifier of its best validation accuracy (they keep the best *test* accuracy);
* **two modalities**: their formulation and discriminator are for two views; more are refused.

The deployed model of modality q is its frozen encoder, ``Projection.center`` = the training mean of
its embedding, Q^(q) as the projection's 1x1 ``map`` and the classifier as the backbone's ``fc``: a
:class:`~uml_fed.model.ModalityModel` like every other, evaluated with the encoder's own BN statistics.

``method=isca_e2e`` (:class:`ISCAEndToEnd`, ours, not the authors'): the encoders are trained from
scratch end to end with the maps inside UML's loop, one gradient-reversal step instead of the
alternation, CE weight 1; the encoders themselves can then satisfy the whitening and the matching, so
the identifiability argument no longer applies.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, MethodConfig
from ..model import ModalityModel, UMLModel
from .base import NonFiniteLossError
from .common import Baseline, grad_reverse, modality_loss
from .mcc import mcc_loss

HIDDEN = (1024, 512, 512, 256, 128, 64)  # ISCA ``Networks.Discriminator``


def isca_discriminator(in_features: int, outputs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip((in_features, *HIDDEN), HIDDEN):
        layers += [nn.Linear(a, b), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers, nn.Linear(HIDDEN[-1], outputs))


def whitening_penalty(c: torch.Tensor) -> torch.Tensor:
    """(1/d) ||(1/B) c_0^T c_0 - I||_F with c_0 the batch-centred components (B x d)."""
    c = c - c.mean(dim=0, keepdim=True)
    d = c.shape[1]
    cov = c.T @ c / c.shape[0]
    return torch.linalg.matrix_norm(cov - torch.eye(d, device=c.device)) / d


# --- the authors' ISCA: linear maps of frozen embeddings ------------------------------------------


@torch.no_grad()
def embed(model: ModalityModel, images: torch.Tensor, device: torch.device, batch_size: int) -> torch.Tensor:
    """Pooled features (N x 8 width) of a frozen encoder in eval mode."""
    model.eval()
    chunks = [model.backbone.features(model.projection(x.to(device))) for x in images.split(batch_size)]
    return torch.cat(chunks).float()


@dataclass
class Embedded:
    """One modality's fixed embeddings per split, with labels."""

    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]


@dataclass
class Maps:
    """What :func:`fit_maps` selected for one modality: Q^(q), the classifier, the centre, when."""

    q: torch.Tensor  # d_C x d
    fc: dict[str, torch.Tensor]  # the classifier's weight and bias
    center: torch.Tensor  # d: the training mean of the embedding
    iteration: int
    val_acc: float


def _noisy(n: int, value: float, noise: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    """Labels ~1 (value 1) or ~0 (value 0) with uniform noise of width ``noise`` towards the other side."""
    u = torch.rand(n, 1, generator=g).to(device) * noise
    return (1.0 - u) if value == 1.0 else u


def fit_maps(
    data: dict[str, Embedded], num_classes: int, components: int, cfg: MethodConfig, g: torch.Generator
) -> dict[str, Maps]:
    """The authors' alternating training of Q^(1), Q^(2), a discriminator and a linear classifier on
    fixed embeddings (module docstring); returns each modality's validation-selected maps."""
    mods = list(data)
    if len(mods) != 2:
        raise ConfigError(
            f"method.name=isca is the authors' two-view formulation: list exactly two modalities in "
            f"data.modalities (got {mods}); method=isca_e2e takes more"
        )
    device = data[mods[0]].train[0].device
    dim = data[mods[0]].train[0].shape[1]
    with torch.random.fork_rng(devices=[]):  # initialisation from ``g``, the global generator untouched
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=g)))
        maps = nn.ModuleDict({m: nn.Linear(dim, components, bias=False) for m in mods}).to(device)
        classifier = nn.Linear(components, num_classes).to(device)
        disc = nn.Sequential(isca_discriminator(components, 1), nn.Sigmoid()).to(device)
    opt_q = torch.optim.Adam(maps.parameters(), lr=cfg.isca_map_lr)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.isca_disc_lr)
    opt_c = torch.optim.Adam(classifier.parameters(), lr=cfg.isca_cls_lr)
    centers = {m: data[m].train[0].mean(dim=0) for m in mods}
    best = {m: Maps(maps[m].weight.detach().clone(), {}, centers[m], -1, -1.0) for m in mods}
    per_epoch = cfg.isca_iterations // cfg.isca_epochs
    b = cfg.isca_batch_size

    def batch(m: str) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = data[m].train
        idx = torch.randint(len(x), (min(b, len(x)),), generator=g).to(device)
        return x[idx] - x[idx].mean(dim=0), y[idx]

    for it in range(cfg.isca_iterations):
        nf = 1.0 - (it // per_epoch) / cfg.isca_epochs
        lr_c = cfg.isca_cls_lr * (1.0 + 0.001 * it) ** -0.75
        for group in opt_c.param_groups:
            group["lr"] = lr_c
        (x1, y1), (x2, y2) = batch(mods[0]), batch(mods[1])
        ones = _noisy(len(x1), 1.0, cfg.isca_label_noise * nf, g, device)
        zeros = _noisy(len(x2), 0.0, cfg.isca_label_noise * nf, g, device)
        # discriminator step: first modality -> ~1, second -> ~0
        opt_d.zero_grad(set_to_none=True)
        c1, c2 = maps[mods[0]](x1), maps[mods[1]](x2)
        F.binary_cross_entropy(disc(c1.detach()), ones).add(F.binary_cross_entropy(disc(c2.detach()), zeros)).backward()
        opt_d.step()
        # maps + classifier step: non-saturating, labels flipped
        opt_q.zero_grad(set_to_none=True)
        opt_c.zero_grad(set_to_none=True)
        adversarial = F.binary_cross_entropy(disc(c1), zeros) + F.binary_cross_entropy(disc(c2), ones)
        logits1, logits2 = classifier(c1), classifier(c2)
        ce = F.cross_entropy(logits1, y1) + F.cross_entropy(logits2, y2)
        white = whitening_penalty(c1) + whitening_penalty(c2)
        mcc = (mcc_loss(logits1, cfg.isca_mcc_temperature) + mcc_loss(logits2, cfg.isca_mcc_temperature)) / 2
        loss = adversarial + cfg.isca_cls_weight * ce + cfg.isca_whiten_weight * white + cfg.isca_mcc_weight * mcc
        loss.backward()
        opt_q.step()
        opt_c.step()
        if (it + 1) % cfg.isca_eval_every == 0 or it + 1 == cfg.isca_iterations:
            if not math.isfinite(float(loss.detach())):
                raise NonFiniteLossError(f"non-finite ISCA loss at iteration {it + 1} (maps of {mods})")
            with torch.no_grad():
                for m in mods:
                    x, y = data[m].val
                    acc = float((classifier(maps[m](x - centers[m])).argmax(1) == y).float().mean())
                    if acc > best[m].val_acc:
                        state = {k: v.detach().clone() for k, v in classifier.state_dict().items()}
                        best[m] = Maps(maps[m].weight.detach().clone(), state, centers[m], it + 1, acc)
    return best


def isca_model(encoder: ModalityModel, maps: Maps, model: UMLModel, modality: str) -> ModalityModel:
    """The deployed ISCA model of ``modality``: the frozen encoder's stem and blocks (with its BN
    statistics), ``center`` and Q^(q) as the projection's map, the selected classifier as ``fc``."""
    mm = model.modality_model(modality)
    own = copy.deepcopy(encoder.projection.state_dict())
    mm.projection.load_state_dict(own, strict=False)
    with torch.no_grad():
        mm.projection.center.copy_(maps.center.view(-1, 1, 1))
        mm.projection.map.weight.copy_(maps.q[:, :, None, None])
        mm.backbone.fc.load_state_dict(maps.fc)
    return mm


# --- ours: end to end inside UML's loop -----------------------------------------------------------


class ISCAEndToEnd(Baseline):
    """Ours (see the module docstring): encoders, maps and classifier trained together, the
    discriminator through a gradient reversal layer, CE weight 1."""

    name = "isca_e2e"

    def __init__(self, cfg: MethodConfig, model: UMLModel) -> None:
        super().__init__(cfg, model)
        if model.cfg.shared_components < 1:
            raise ConfigError(
                "method.name=isca_e2e needs the per-modality linear maps: set model.shared_components > 0 "
                "(configs/method/isca_e2e.yaml sets it to model.width)"
            )
        self.discriminator = isca_discriminator(self.num_features, len(self.modalities))

    def alignment(
        self, features: dict[str, torch.Tensor], logits: dict[str, torch.Tensor], progress: float
    ) -> torch.Tensor:
        c = grad_reverse(torch.cat([features[m] for m in self.modalities]), 1.0)
        distribution = modality_loss(self.discriminator(c), [len(features[m]) for m in self.modalities])
        whitening = torch.stack([whitening_penalty(features[m]) for m in self.modalities]).mean()
        return distribution + self.cfg.isca_whiten_weight * whitening
