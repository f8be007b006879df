"""ResNet-18 split into per-modality projections f_k and one shared backbone g (paper Sec. 3.1).

ResNet-18 = stem + 8 BasicBlocks (4 stages x 2) + global pooling + linear classifier.  The first
``projection_blocks`` blocks (with the stem) form the private projection of each modality; the rest
form the shared backbone.  What is shared is decided by module membership: :func:`backbone_state`
returns the backbone's parameters, and nothing of a projection can reach it.  Two optional private
modules per modality sit after the backbone: a classifier of its own (``model.private_head``: the
backbone then ends at its pooled features) and its label prior (``model.logit_adjust``), added to the
logits in training and inference.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig

NUM_BLOCKS = 8
BACKBONE_PREFIX = "backbone."  # every shared key carries it; nothing private does


def make_bn(channels: int, track_running_stats: bool) -> nn.BatchNorm2d:
    # Static BN (paper, Diao et al. 2020): no running statistics during training; the statistics a
    # deployed model uses are computed afterwards, per modality, by calibrate_bn.
    return nn.BatchNorm2d(channels, track_running_stats=track_running_stats)


class BasicBlock(nn.Module):
    """The paper's Listing 1 BasicBlock."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, track_running_stats: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = make_bn(planes, track_running_stats)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = make_bn(planes, track_running_stats)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes * self.expansion:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes * self.expansion, kernel_size=1, stride=stride, bias=False),
                make_bn(planes * self.expansion, track_running_stats),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return F.relu(out)


def block_specs(width: int) -> list[tuple[int, int, int]]:
    """(in_planes, planes, stride) of the 8 ResNet-18 blocks at the given base width."""
    specs, in_planes = [], width
    for stage, mult in enumerate((1, 2, 4, 8)):
        for i in range(2):
            stride = 2 if (stage > 0 and i == 0) else 1
            specs.append((in_planes, width * mult, stride))
            in_planes = width * mult
    return specs


class Projection(nn.Module):
    """Private f_k: stem (input channels = the modality's band count) + the first P blocks
    (+ ISCA's linear map when ``shared_components`` > 0)."""

    def __init__(self, in_channels: int, cfg: ModelConfig) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels={in_channels}: a modality needs at least one band")
        self.in_channels = in_channels
        w, track = cfg.width, cfg.track_running_stats
        if cfg.stem == "small":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, w, kernel_size=3, stride=1, padding=1, bias=False),
                make_bn(w, track),
                nn.ReLU(inplace=True),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, w, kernel_size=7, stride=2, padding=3, bias=False),
                make_bn(w, track),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            )
        specs = block_specs(w)[: cfg.projection_blocks]
        self.blocks = nn.Sequential(*(BasicBlock(i, p, s, track) for i, p, s in specs))
        # ISCA's Q^(q) (model.shared_components, only with all 8 blocks private): a bias-free 1x1
        # convolution before the backbone's average pooling equals the linear map of the pooled
        # embedding, and keeps Q inside the modality model that is selected, calibrated and saved.
        # ``center`` (zero unless set) is subtracted first: Q (pool(x) - center) = pool(Q (x - center)).
        k = cfg.shared_components
        self.map = nn.Conv2d(w * 8, k, kernel_size=1, bias=False) if k else nn.Identity()
        if k:
            self.register_buffer("center", torch.zeros(w * 8, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"projection expects N x {self.in_channels} x H x W input, got shape {tuple(x.shape)}")
        z = self.blocks(self.stem(x))
        return self.map(z - self.center) if isinstance(self.map, nn.Conv2d) else z


def feature_size(cfg: ModelConfig) -> int:
    return cfg.shared_components or cfg.width * 8


class Backbone(nn.Module):
    """Shared g: the remaining 8 - P blocks, global average pooling and the linear classifier (none with
    ``model.private_head``: each modality's own :class:`nn.Linear` classifies the pooled features)."""

    def __init__(self, num_classes: int, cfg: ModelConfig) -> None:
        super().__init__()
        specs = block_specs(cfg.width)[cfg.projection_blocks :]
        self.blocks = nn.Sequential(*(BasicBlock(i, p, s, cfg.track_running_stats) for i, p, s in specs))
        self.fc = None if cfg.private_head else nn.Linear(feature_size(cfg), num_classes)

    def features(self, z: torch.Tensor) -> torch.Tensor:
        """The pooled representation (N x 8 * width, or N x shared_components) the classifier sees."""
        return torch.flatten(F.adaptive_avg_pool2d(self.blocks(z), 1), 1)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        if self.fc is None:
            raise ValueError("this backbone has no classifier (model.private_head): classify with the modality's head")
        return self.fc(features)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Logits, or (``model.private_head``) the pooled features for the modality's own head."""
        features = self.features(z)
        return features if self.fc is None else self.fc(features)


class LabelPrior(nn.Module):
    """``tau * log`` of an institution's training label frequencies (Laplace-smoothed), added to its
    logits; zeros until :meth:`set_counts`.  A buffer: private, never a parameter."""

    def __init__(self, num_classes: int, tau: float) -> None:
        super().__init__()
        self.tau = tau
        self.register_buffer("log_prior", torch.zeros(num_classes))

    @torch.no_grad()
    def set_counts(self, counts: torch.Tensor) -> None:
        counts = torch.as_tensor(counts, dtype=torch.float64).reshape(-1)
        if counts.numel() != self.log_prior.numel() or bool((counts < 0).any()):
            raise ValueError(f"label counts {counts.tolist()}: need {self.log_prior.numel()} non-negative counts")
        freq = (counts + 1.0) / (counts.sum() + counts.numel())
        self.log_prior.copy_((self.tau * freq.log()).to(self.log_prior))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return logits + self.log_prior


@dataclass(frozen=True)
class Compute:
    """How a model computes (not what it is: never saved with a checkpoint).

    ``dtype``: autocast dtype (e.g. torch.bfloat16) or None for float32; outputs come back as float32
    so losses and accuracies are computed in full precision.  ``channels_last``: NHWC inputs (what
    tensor cores want).
    """

    dtype: torch.dtype | None = None
    channels_last: bool = False

    def __call__(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.dtype is None:
            return fn(x)
        with torch.autocast(x.device.type, dtype=self.dtype):
            out = fn(x)
        return out.float()


FP32 = Compute()


def classify(backbone: Backbone, head: nn.Linear | None, prior: LabelPrior | None, z: torch.Tensor) -> torch.Tensor:
    """Logits of projected ``z``: the backbone, then the modality's own head and prior when it has them."""
    logits = backbone(z) if head is None else head(backbone(z))
    return logits if prior is None else prior(logits)


class ModalityModel(nn.Module):
    """h_k = g o f_k (and its private head / label prior): what one institution trains, calibrates,
    saves and deploys."""

    def __init__(
        self,
        projection: Projection,
        backbone: Backbone,
        compute: Compute = FP32,
        head: nn.Linear | None = None,
        prior: LabelPrior | None = None,
    ) -> None:
        super().__init__()
        self.projection = projection
        self.backbone = backbone
        self.compute = compute
        self.head = head
        self.prior = prior

    def classifier(self) -> nn.Linear:
        """The linear classifier this model uses: its private head, else the backbone's."""
        return self.head if self.head is not None else self.backbone.fc  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.compute(lambda z: classify(self.backbone, self.head, self.prior, self.projection(z)), x)


class UMLModel(nn.Module):
    """K private projections around one shared backbone.

    ``in_channels`` maps each modality name to its band count.  The unimodal baseline is this model
    with one modality and ``projection_blocks = 8`` (the whole ResNet-18 private).
    """

    def __init__(self, in_channels: dict[str, int], num_classes: int, cfg: ModelConfig) -> None:
        super().__init__()
        if not in_channels:
            raise ValueError("UMLModel needs at least one modality")
        if num_classes < 2:
            raise ValueError(f"num_classes={num_classes}: classification needs at least 2 classes")
        self.cfg = cfg
        self.projections = nn.ModuleDict({m: Projection(c, cfg) for m, c in in_channels.items()})
        self.backbone = Backbone(num_classes, cfg)
        self.heads = (
            nn.ModuleDict({m: nn.Linear(feature_size(cfg), num_classes) for m in in_channels})
            if cfg.private_head
            else None
        )
        self.priors = (
            nn.ModuleDict({m: LabelPrior(num_classes, cfg.logit_adjust) for m in in_channels})
            if cfg.logit_adjust > 0
            else None
        )
        self.compute = FP32

    @property
    def modalities(self) -> list[str]:
        return list(self.projections.keys())

    def projection(self, modality: str) -> Projection:
        if modality not in self.projections:
            raise KeyError(f"unknown modality {modality!r}; this model has {self.modalities}")
        return self.projections[modality]

    def head(self, modality: str) -> nn.Linear | None:
        return None if self.heads is None else self.heads[modality]

    def prior(self, modality: str) -> LabelPrior | None:
        return None if self.priors is None else self.priors[modality]

    def forward(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        proj, head, prior = self.projection(modality), self.head(modality), self.prior(modality)
        return self.compute(lambda z: classify(self.backbone, head, prior, proj(z)), x)

    def features(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        """Pooled features of modality ``modality`` (input of the shared classifier)."""
        return self.compute(lambda z: self.backbone.features(self.projection(modality)(z)), x)

    def modality_model(self, modality: str) -> ModalityModel:
        """A view of h_k sharing this model's modules (deep-copy it before changing BN state)."""
        return ModalityModel(
            self.projection(modality), self.backbone, self.compute, self.head(modality), self.prior(modality)
        )

    def set_compute(self, compute: Compute, compile_mode: str = "off") -> UMLModel:
        """Precision and memory layout of every forward pass; ``compile_mode`` (not ``off``) compiles
        the projections and the backbone in place (parameter names unchanged)."""
        self.compute = compute
        if compute.channels_last:
            self.to(memory_format=torch.channels_last)
        if compile_mode != "off":
            for module in (*self.projections.values(), self.backbone):
                module.compile(mode=None if compile_mode == "default" else compile_mode)
        return self


def backbone_state(model: UMLModel | ModalityModel | Backbone) -> OrderedDict[str, torch.Tensor]:
    """Exactly the shared state: the backbone's parameters (no BN statistics, no projection).

    The key set depends only on the model config and the class count, never on a modality's band
    count; these are the arrays a federated client sends.
    """
    backbone = model if isinstance(model, Backbone) else model.backbone
    return OrderedDict((f"{BACKBONE_PREFIX}{k}", p.detach()) for k, p in backbone.named_parameters())


def load_backbone_state(model: UMLModel | ModalityModel | Backbone, state: dict[str, torch.Tensor]) -> None:
    backbone = model if isinstance(model, Backbone) else model.backbone
    own = {f"{BACKBONE_PREFIX}{k}": p for k, p in backbone.named_parameters()}
    if set(own) != set(state):
        missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        raise ValueError(f"backbone state mismatch: missing keys {missing[:5]}, unexpected keys {extra[:5]}")
    with torch.no_grad():
        for k, p in own.items():
            src = torch.as_tensor(state[k])
            if src.shape != p.shape:
                raise ValueError(f"backbone key {k!r}: shape {tuple(src.shape)} != model's {tuple(p.shape)}")
            p.copy_(src)


def private_state(model: UMLModel, modality: str) -> OrderedDict[str, torch.Tensor]:
    """Everything of h_k that never leaves the institution: its projection (parameters and BN
    buffers), its head and label prior when it has them and, with ordinary BN, the backbone's running
    statistics -- the modality model's state minus :func:`backbone_state`."""
    shared = backbone_state(model)
    state = model.modality_model(modality).state_dict()
    return OrderedDict((k, v.detach()) for k, v in state.items() if k not in shared)


def load_private_state(model: UMLModel, modality: str, state: dict[str, torch.Tensor]) -> None:
    """Restore :func:`private_state` (the backbone's parameters are left as they are)."""
    missing, unexpected = model.modality_model(modality).load_state_dict(state, strict=False)
    missing = sorted(set(missing) - set(backbone_state(model)))
    if missing or unexpected:
        raise ValueError(f"private state of {modality!r}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")


def projection_state(model: UMLModel | ModalityModel, modality: str | None = None) -> OrderedDict[str, torch.Tensor]:
    """A modality's private state (parameters and any BN buffers) -- never sent anywhere."""
    proj = model.projection if isinstance(model, ModalityModel) else model.projection(modality)
    return OrderedDict((k, v.detach()) for k, v in proj.state_dict().items())


def build_unimodal(in_channels: int, modality: str, num_classes: int, cfg: ModelConfig) -> UMLModel:
    """One ResNet-18 for one modality, all 8 blocks private: the paper's unimodal baseline (never
    with a baseline method's linear map)."""
    uni_cfg = copy.copy(cfg)
    uni_cfg.projection_blocks = NUM_BLOCKS
    uni_cfg.shared_components = 0
    uni_cfg.private_head, uni_cfg.logit_adjust = False, 0.0  # nothing is shared: its classifier is its own
    return UMLModel({modality: in_channels}, num_classes, uni_cfg)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
