"""After training, per institution: Algorithm 2, then validation and test accuracy of the calibrated
copy and of the model as trained (shared by the centralized runs, the baselines and every federated
client).

Names of the evaluations, used in every results file and report:

* ``calibrated``: Algorithm 2 (post-hoc BN calibration on the institution's own training data) --
  what the paper reports for UML;
* ``running_stats``: a model trained with ordinary BN (``model.track_running_stats=true``), evaluated
  with the running averages tracked during training (in centralized UML they mix every modality) --
  the paper's "without BN calibration" ablation and its unimodal baseline;
* ``test_batch_stats``: a static-BN model evaluated without calibration, each evaluation batch
  normalised with its own statistics (transductive; not a deployable model, kept for diagnosis).

A model's *reported* evaluation follows its BN mode: ``calibrated`` for static BN,
``running_stats`` for ordinary BN.

Cross-site evaluation (``train.cross_site``): an institution's reported model (its checkpoint payload,
with its own normalisation statistics) evaluated as it is on another institution's test split of the
same modality -- the split taken back to physical units and normalised with the model's statistics.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from .bn_calibration import bn_layers, calibrate_bn
from .config import Config, ModelConfig
from .data import Institution
from .model import FP32, Compute, ModalityModel
from .results import checkpoint_payload, model_from_payload
from .train import evaluate, split_tensors


def tracks_running_stats(model: torch.nn.Module) -> bool:
    return any(bn.track_running_stats for bn in bn_layers(model))


def as_trained(model: torch.nn.Module) -> str:
    """The name of the uncalibrated evaluation of ``model``: depends on its BN mode."""
    return "running_stats" if tracks_running_stats(model) else "test_batch_stats"


def class_balanced(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Indices of a resample of ``labels``' size in which every class present occurs as equally often as
    the size allows (``train.bn_cal_sample=balanced``; drawn with replacement within each class)."""
    present = torch.unique(labels)
    per = -(-len(labels) // len(present))
    picks = []
    for c in present:
        idx = torch.nonzero(labels == c).flatten()
        picks.append(idx[torch.randint(len(idx), (per,), generator=generator)])
    return torch.cat(picks)[torch.randperm(per * len(present), generator=generator)][: len(labels)]


def calibrate_and_evaluate(
    model: ModalityModel,
    inst: Institution,
    cfg: Config,
    device: torch.device,
    generator: torch.Generator,
    model_cfg: ModelConfig | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Calibrate a copy of ``model`` on the institution's train split (or its class-balanced resample,
    ``train.bn_cal_sample``); evaluate val/test both ways.

    Returns ``{"bn", "reported", "calibration_s", "val_acc", "test_acc", "calibrated": {...},
    <as trained>: {...}, "checkpoint": {...}}`` where each evaluation holds ``val_acc, test_acc,
    val_loss, test_loss``, the top-level ``val_acc``/``test_acc`` are the reported evaluation's, and
    ``checkpoint`` is the reported model (calibrated copy, or the model with its running statistics)
    as :func:`uml_fed.results.checkpoint_payload`, for the caller to write when it chooses.
    """
    t = cfg.train
    train_x, train_y = split_tensors(inst, "train")
    if t.bn_cal_sample == "balanced":
        train_x = train_x[class_balanced(train_y, generator)]
    tic = time.perf_counter()
    calibrated = calibrate_bn(model, train_x, t.bn_cal_epochs, t.bn_cal_batch_size, generator, device)
    calibration_s = time.perf_counter() - tic
    uncalibrated = as_trained(model)
    reported = "running_stats" if uncalibrated == "running_stats" else "calibrated"
    out: dict[str, Any] = {
        "bn": "tracked" if reported == "running_stats" else "static",
        "reported": reported,
        "calibration_s": calibration_s,
        "calibrated": {},
        uncalibrated: {},
    }
    for split in ("val", "test"):
        x, y = split_tensors(inst, split)
        for name, m in (("calibrated", calibrated), (uncalibrated, model)):
            r = evaluate(m, x, y, device, t.eval_batch_size)
            out[name][f"{split}_acc"], out[name][f"{split}_loss"] = r["acc"], r["loss"]
    out["val_acc"], out["test_acc"] = out[reported]["val_acc"], out[reported]["test_acc"]
    out["checkpoint"] = checkpoint_payload(
        calibrated if reported == "calibrated" else model,
        modality=inst.name,
        bands=inst.bands,
        classes=inst.classes,
        model_cfg=model_cfg or cfg.model,
        mean=inst.mean,
        std=inst.std,
        calibrated=reported == "calibrated" and t.bn_cal_epochs > 0,
        patch_size=int(inst.split("train").images.shape[-1]),
        pixel_size_m=inst.pixel_size_m,
        extra=extra,
    )
    return out


def deployed_model(payload: dict[str, Any], device: torch.device, compute: Compute = FP32) -> ModalityModel:
    """The reported model of a checkpoint payload on ``device``, computing as ``compute`` says (the run's,
    so that its cross-site diagonal is the institution's own test accuracy)."""
    model = model_from_payload(payload).to(device)
    model.compute = compute
    if compute.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def test_accuracy_at(
    payload: dict[str, Any], model: ModalityModel, inst: Institution, device: torch.device, batch_size: int
) -> float:
    """Test accuracy of a reported model (``model``, the :func:`deployed_model` of ``payload``) on
    ``inst``'s test split, as deployed: no recalibration, the split renormalised from ``inst``'s
    statistics to the model's (left as it is when they are the same)."""
    if list(payload["bands"]) != list(inst.bands) or list(payload["classes"]) != list(inst.classes):
        raise ValueError(
            f"cross-site evaluation: the model of {payload['modality']!r} (bands {payload['bands']}) cannot be "
            f"evaluated at {inst.name!r} (bands {inst.bands}): only within one modality and class list"
        )
    x, y = split_tensors(inst, "test")
    if (payload["mean"] is None) != (inst.mean is None):
        raise ValueError(
            f"cross-site evaluation at {inst.name!r}: one side has normalisation statistics, the other not"
        )
    same = inst.mean is None or (
        np.array_equal(payload["mean"], inst.mean) and np.array_equal(payload["std"], inst.std)
    )
    if not same:
        shape = (1, -1, 1, 1)
        raw = x * torch.as_tensor(inst.std).view(shape) + torch.as_tensor(inst.mean).view(shape)
        x = (raw - torch.as_tensor(payload["mean"]).view(shape)) / torch.as_tensor(payload["std"]).view(shape)
        x = x.float()
    return evaluate(model, x, y, device, batch_size)["acc"]


def cross_site(
    payloads: dict[str, dict[str, Any]],
    institutions: list[Institution],
    modality: dict[str, str],
    device: torch.device,
    batch_size: int,
    compute: Compute = FP32,
) -> dict[str, dict[str, float]]:
    """``{model's institution: {test site: accuracy}}`` over every pair of institutions of one modality."""
    matrix = {}
    for owner, payload in payloads.items():
        model = deployed_model(payload, device, compute)
        sites = [site for site in institutions if modality[site.name] == modality[owner]]
        matrix[owner] = {site.name: test_accuracy_at(payload, model, site, device, batch_size) for site in sites}
    return matrix
