"""The one training loop: centralized UML, the unimodal baseline and every federated client use it.

An epoch is ``steps`` optimizer steps; each step draws one mini-batch of size b from EVERY modality
of the model and minimises the mean of the per-modality cross-entropies (Algorithm 1; with one
modality it is plain supervised training, Algorithm 3's local step).  Streams cycle through their data
(reshuffled on every pass), so an epoch can be longer than one pass.  How many steps
(:func:`epoch_steps`, ``train.steps_per_epoch``): ``largest`` = as many as the run's largest
institution has full batches -- Algorithm 1's epoch, and the same number for every model compared
with it (a unimodal baseline, a federated client) so that no arm gets more optimizer steps than
another; ``own`` = the model's own largest stream's full batches (one pass over its own data).
"""

from __future__ import annotations

import copy
import math
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import Institution
from .methods.base import Method, NonFiniteLossError
from .model import BACKBONE_PREFIX, Compute, ModalityModel, UMLModel, build_unimodal

if TYPE_CHECKING:
    from .config import Config, ModelConfig, TrainConfig


def resolve_device(name: str, key: str = "train.device") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{key}={name!r} but CUDA is not available on this machine; use 'auto' or 'cpu'")
    return dev


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16); without it, bf16
    autocast is emulated and about 10x slower than float32 (scripts/bench_train.py on AVX2)."""
    try:
        flags = Path(cpuinfo).read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def compute_for(train: TrainConfig, device: torch.device) -> Compute:
    """``train.precision`` / ``train.channels_last`` resolved for ``device``.

    ``auto`` precision: bf16 autocast on a GPU that supports it and on a CPU with native bf16
    (scripts/bench_train.py on an AMD EPYC with AVX512-BF16: 1.38x fp32), float32 elsewhere.
    ``auto`` channels-last: on (GPU tensor cores; CPU measured 1.09x-1.37x on AVX2, 1.23x on AVX512).
    """
    if device.type == "cuda":
        native_bf16 = torch.cuda.is_bf16_supported()
    else:
        native_bf16 = cpu_has_native_bf16()
    bf16 = train.precision == "bf16" or (train.precision == "auto" and native_bf16)
    nhwc = train.channels_last in ("on", "auto")
    return Compute(torch.bfloat16 if bf16 else None, nhwc)


def compute_record(compute: Compute, device: torch.device) -> dict[str, object]:
    """What a results file says about how a run computed (the resolved ``auto`` choices)."""
    return {
        "device": str(device),
        "precision": "bf16" if compute.dtype == torch.bfloat16 else "fp32",
        "channels_last": compute.channels_last,
        "threads": torch.get_num_threads(),
    }


def derived_seed(seed: int, *parts: object) -> int:
    """A stable seed for one stream (e.g. one modality's batch order) derived from the run seed."""
    return (seed * 1_000_003 + zlib.crc32("/".join(map(str, parts)).encode())) % (2**63)


def seeded_generator(seed: int, *parts: object) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(derived_seed(seed, *parts))
    return g


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global RNG (initialisation) and return a generator for data order."""
    torch.manual_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


class BatchStream:
    """Endless seeded mini-batches over one modality's tensors (full batches; reshuffled each pass).

    The tensors are moved to ``device`` once and stay there: a step only gathers a batch by index.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        generator: torch.Generator,
        device: torch.device | str = "cpu",
    ) -> None:
        if images.shape[0] == 0:
            raise ValueError("cannot draw batches from an empty dataset")
        self.images, self.labels = images.to(device), labels.to(device)
        self.n = int(images.shape[0])
        self.batch_size = min(batch_size, self.n)
        self.generator = generator
        self._order: torch.Tensor | None = None
        self._pos = 0

    @property
    def full_batches(self) -> int:
        return full_batches(self.n, self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._order is None or self._pos + self.batch_size > self.n:
            self._order = torch.randperm(self.n, generator=self.generator).to(self.images.device)
            self._pos = 0
        idx = self._order[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return self.images[idx], self.labels[idx]


def full_batches(n: int, batch_size: int) -> int:
    """Full mini-batches of ``batch_size`` (at most ``n``) in ``n`` samples, at least one."""
    return max(1, n // min(batch_size, n))


def steps_per_epoch(streams: dict[str, BatchStream]) -> int:
    return max(s.full_batches for s in streams.values())


def epoch_steps(rule: str, streams: dict[str, BatchStream], largest: int) -> int:
    """Optimizer steps of one epoch: ``own`` = the streams' own largest count of full batches;
    ``largest`` = the run's largest institution's (``largest``), or the streams' own if larger."""
    own = steps_per_epoch(streams)
    return max(own, largest) if rule == "largest" else own


@dataclass
class Proximal:
    """FedProx: adds mu/2 * ||theta - theta_global||^2 over the backbone parameters.

    ``reference`` is the received global backbone, keyed as :func:`uml_fed.model.backbone_state`.
    """

    mu: float
    reference: dict[str, torch.Tensor]

    def penalty(self, model: UMLModel) -> torch.Tensor:
        total = torch.zeros((), device=next(model.parameters()).device)
        for name, p in model.backbone.named_parameters():
            total = total + (p - self.reference[BACKBONE_PREFIX + name]).pow(2).sum()
        return 0.5 * self.mu * total


def train_one_epoch(
    model: UMLModel,
    streams: dict[str, BatchStream],
    optimizer: torch.optim.Optimizer,
    proximal: Proximal | None = None,
    where: str = "",
    method: Method | None = None,
    progress: tuple[float, float] = (0.0, 1.0),
    steps: int | None = None,
) -> dict[str, float]:
    """One epoch of Algorithm 1 (K modalities) or of local training (K = 1).

    Each of ``steps`` steps (default: :func:`steps_per_epoch`) draws one mini-batch per modality and
    minimises ``method``'s loss (default: the mean of the per-modality cross-entropies).  ``progress``
    is the (start, end) fraction of the whole run this epoch covers (for a method's schedules).  Returns
    averaged metrics: ``loss`` (mean of the per-modality cross-entropies) and ``loss/<modality>``, ``acc/<modality>`` (training accuracy),
    ``samples/<modality>``.  Running sums stay on the device; the host reads them once per epoch.
    """
    method = method if method is not None else Method(None, model)  # type: ignore[arg-type]
    model.train()
    mods = list(streams)
    device = next(model.parameters()).device
    loss_sum = torch.zeros(len(mods), device=device)
    correct = torch.zeros(len(mods), device=device, dtype=torch.long)
    seen = [0] * len(mods)
    steps = steps or steps_per_epoch(streams)
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        batches = {m: next(streams[m]) for m in mods}
        out = method.loss(model, batches, progress[0] + (progress[1] - progress[0]) * step / steps)
        for i, m in enumerate(mods):
            y = batches[m][1]
            loss_sum[i] += out.ce[m].detach() * y.shape[0]
            correct[i] += (out.logits[m].detach().argmax(1) == y).sum()
            seen[i] += int(y.shape[0])
        loss = out.total
        if proximal is not None and proximal.mu > 0:
            loss = loss + proximal.penalty(model)
        loss.backward()
        optimizer.step()
    sums, hits = loss_sum.tolist(), correct.tolist()
    for m, total in zip(mods, sums):
        if not math.isfinite(total):
            raise NonFiniteLossError(f"non-finite training loss for modality {m!r} {where}".strip())
    metrics = {"loss": sum(t / n for t, n in zip(sums, seen)) / len(mods)}
    for m, total, hit, n in zip(mods, sums, hits, seen):
        metrics[f"loss/{m}"] = total / n
        metrics[f"acc/{m}"] = hit / n
        metrics[f"samples/{m}"] = float(n)
    return metrics


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    device: torch.device,
    batch_size: int = 600,
    modality: str | None = None,
) -> dict[str, float]:
    """Accuracy and loss of ``model`` (a ModalityModel, or a UMLModel with ``modality``) on one split.

    Always in eval mode.  A model without running statistics (static BN, not yet calibrated)
    normalises with the statistics of each evaluation batch, so the split is cut into
    ``ceil(n / batch_size)`` batches of (nearly) equal size: no small remainder batch.
    """
    n = int(images.shape[0])
    if n == 0:
        raise ValueError("cannot evaluate on an empty split")
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    chunks = math.ceil(n / batch_size)
    for x, y in zip(images.tensor_split(chunks), labels.tensor_split(chunks)):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x, modality) if modality is not None else model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
    return {"loss": loss_sum.item() / n, "acc": correct.item() / n}


def lr_at(train: TrainConfig, epoch: int) -> float:
    """StepLR's learning rate at a 0-based global epoch (a centralized epoch, or a federated client's
    local epoch (r - 1) * L + l): ``lr * lr_gamma ** floor(epoch / lr_step)``."""
    return train.lr * train.lr_gamma ** math.floor(epoch / train.lr_step)


@dataclass
class Selection:
    """Table 7's model selection: the weights of the best validation accuracy among the states with
    more than ``after`` epochs of training done (``train.select_after``); ``at`` is the epoch or round
    the state belongs to.  Without any qualifying state the final model is used."""

    after: int
    best_acc: float = -1.0
    best_at: int = -1
    state: dict[str, torch.Tensor] | None = None

    def offer(self, epochs_done: int, acc: float, at: int, state: Callable[[], dict[str, torch.Tensor]]) -> bool:
        if epochs_done <= self.after or acc <= self.best_acc:
            return False
        self.best_acc, self.best_at = float(acc), int(at)
        self.state = {k: v.detach().clone() for k, v in state().items()}
        return True


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


def split_tensors(inst: Institution, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    s = inst.split(split)
    return torch.from_numpy(s.images), torch.from_numpy(s.labels)


def baseline_model_cfg(cfg: Config) -> ModelConfig:
    """The model config of every unimodal baseline: BN as ``train.unimodal_bn`` says (``ordinary``:
    running statistics, Table 7; ``calibrated``: static BN + Algorithm 2, like UML)."""
    model_cfg = copy.copy(cfg.model)
    model_cfg.track_running_stats = cfg.train.unimodal_bn == "ordinary"
    return model_cfg


def build_baseline(inst: Institution, cfg: Config, device: torch.device) -> UMLModel:
    """``inst``'s unimodal ResNet-18 (all blocks private) on ``device``, computing as ``cfg.train`` says."""
    model = build_unimodal(inst.in_channels, inst.name, len(inst.classes), baseline_model_cfg(cfg)).to(device)
    model.set_compute(compute_for(cfg.train, device), cfg.train.compile)
    return model


def label_counts(inst: Institution, split: str = "train") -> torch.Tensor:
    return torch.bincount(torch.from_numpy(inst.split(split).labels), minlength=len(inst.classes))


def set_label_priors(model: UMLModel, institutions: list[Institution]) -> None:
    """``model.logit_adjust``: each modality's label prior from its own training split (the counts stay with it)."""
    for inst in institutions:
        prior = model.prior(inst.name)
        if prior is not None:
            prior.set_counts(label_counts(inst))


def tuned_part(model: ModalityModel, part: str) -> torch.nn.Module:
    """What ``train.finetune`` trains: the classifier (``head``), or the last backbone block with it."""
    head = model.classifier()
    if part == "head":
        return head
    if part == "last_block" and len(model.backbone.blocks) > 0:
        return torch.nn.ModuleList([model.backbone.blocks[-1], head])
    raise ValueError(f"train.finetune={part!r}: no such part of this model (head | last_block with a shared block)")


def personalise(
    model: ModalityModel,
    inst: Institution,
    cfg: Config,
    device: torch.device,
    generator: torch.Generator,
    epochs_done: int | None = None,
) -> ModalityModel:
    """An institution's copy of a trained UML model before Algorithm 2: its own label prior
    (``model.logit_adjust``), then ``train.finetune``: the tuned part trained for ``train.finetune_epochs``
    epochs (each its own training split's full batches, reshuffled with ``generator``) at the learning
    rate of the schedule's last epoch (``epochs_done``, default ``train.epochs``), with everything else
    frozen and in eval mode (no statistic of it moves).
    ``model`` itself is untouched (and returned when there is nothing to do)."""
    t = cfg.train
    if model.prior is None and t.finetune == "none":
        return model
    local = copy.deepcopy(model).to(device)
    if local.prior is not None:
        local.prior.set_counts(label_counts(inst))
    if t.finetune == "none":
        return local
    part = tuned_part(local, t.finetune)
    for p in local.parameters():
        p.requires_grad_(False)
    for p in part.parameters():
        p.requires_grad_(True)
    local.eval()
    part.train()
    optimizer = make_optimizer(part, lr_at(t, (epochs_done or t.epochs) - 1), t.weight_decay)
    x, y = split_tensors(inst, "train")
    stream = BatchStream(x, y, t.batch_size, generator, device)
    for epoch in range(t.finetune_epochs):
        for _ in range(stream.full_batches):
            images, labels = next(stream)
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(local(images), labels)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"non-finite loss fine-tuning {inst.name!r} (train.finetune={t.finetune}, epoch {epoch})"
                )
            loss.backward()
            optimizer.step()
    for p in local.parameters():
        p.requires_grad_(True)
    return local.eval()


def largest_institution_batches(institutions: list[Institution], batch_size: int) -> int:
    """Full batches of the largest training split among ``institutions`` (``train.steps_per_epoch=largest``)."""
    return max(full_batches(len(i.split("train")), batch_size) for i in institutions)


def fit(
    model: UMLModel,
    institutions: list[Institution],
    cfg: Config,
    device: torch.device,
    log: Callable[[dict[str, Any]], None] | None,
    phase: str,
    method: Method | None = None,
    largest: int = 0,
    epochs: int | None = None,
    select_every: int = 1,
) -> tuple[dict[str, ModalityModel], dict[str, int], int]:
    """Train ``model`` on all its modalities with Algorithm 1 (or ``method``'s objective) for ``epochs``
    (default ``train.epochs``), logging a row per epoch with ``log``.

    Model selection (Table 7): after every ``select_every``-th epoch (a federated run's rounds: L) each
    modality's validation accuracy is offered; the best among those after ``train.select_after`` epochs
    is kept.  ``largest``: the full batches of the run's largest institution
    (``train.steps_per_epoch=largest``).  Returns each modality's selected model, the epoch it was
    selected at, and the steps per epoch.
    """
    t = cfg.train
    by_name = {inst.name: inst for inst in institutions}
    streams = {}
    for m in model.modalities:
        x, y = split_tensors(by_name[m], "train")
        streams[m] = BatchStream(x, y, t.batch_size, seeded_generator(cfg.seed, phase, m, "batches"), device)
    val = {m: split_tensors(by_name[m], "val") for m in model.modalities}
    method = method if method is not None else Method(cfg.method, model)
    optimizer = make_optimizer(torch.nn.ModuleList([model, method.to(device)]), t.lr, t.weight_decay)
    selection = {m: Selection(t.select_after) for m in model.modalities}
    steps = epoch_steps(t.steps_per_epoch, streams, largest)
    total = epochs or t.epochs
    bar = tqdm(range(total), desc=phase, disable=not t.progress, leave=False, dynamic_ncols=True)
    for epoch in bar:
        lr = lr_at(t, epoch)
        set_lr(optimizer, lr)
        tic = time.perf_counter()
        metrics = train_one_epoch(
            model,
            streams,
            optimizer,
            where=f"({phase}, epoch {epoch})",
            method=method,
            progress=(epoch / total, (epoch + 1) / total),
            steps=steps,
        )
        train_s = time.perf_counter() - tic
        row: dict[str, Any] = {"phase": phase, "epoch": epoch, "lr": lr, "train_s": train_s, **metrics}
        for m in model.modalities:
            row[f"val_acc/{m}"] = evaluate(model, *val[m], device, t.eval_batch_size, modality=m)["acc"]
            if (epoch + 1) % select_every == 0:
                selection[m].offer(epoch + 1, row[f"val_acc/{m}"], epoch, model.modality_model(m).state_dict)
        if log is not None:
            log(row)
        bar.set_postfix(loss=f"{metrics['loss']:.3f}", **{m: f"{row[f'val_acc/{m}']:.2f}" for m in model.modalities})
    selected, chosen = {}, {}
    for m, sel in selection.items():
        mm = copy.deepcopy(model.modality_model(m))
        if sel.state is not None:
            mm.load_state_dict(sel.state)
        selected[m], chosen[m] = mm, sel.best_at if sel.state is not None else total - 1
        if log is not None:
            log({"phase": phase, "selected": m, "epoch": chosen[m], "val_acc": sel.best_acc if sel.state else None})
    return selected, chosen, steps
