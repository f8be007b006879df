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
"""

from __future__ import annotations

import time
from typing import Any

import torch

from .bn_calibration import bn_layers, calibrate_bn
from .config import Config, ModelConfig
from .data import Institution
from .model import ModalityModel
from .results import checkpoint_payload
from .train import evaluate, split_tensors


def tracks_running_stats(model: torch.nn.Module) -> bool:
    return any(bn.track_running_stats for bn in bn_layers(model))


def as_trained(model: torch.nn.Module) -> str:
    """The name of the uncalibrated evaluation of ``model``: depends on its BN mode."""
    return "running_stats" if tracks_running_stats(model) else "test_batch_stats"


def calibrate_and_evaluate(
    model: ModalityModel,
    inst: Institution,
    cfg: Config,
    device: torch.device,
    generator: torch.Generator,
    model_cfg: ModelConfig | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Calibrate a copy of ``model`` on the institution's train split; evaluate val/test both ways.

    Returns ``{"bn", "reported", "calibration_s", "val_acc", "test_acc", "calibrated": {...},
    <as trained>: {...}, "checkpoint": {...}}`` where each evaluation holds ``val_acc, test_acc,
    val_loss, test_loss``, the top-level ``val_acc``/``test_acc`` are the reported evaluation's, and
    ``checkpoint`` is the reported model (calibrated copy, or the model with its running statistics)
    as :func:`uml_fed.results.checkpoint_payload`, for the caller to write when it chooses.
    """
    t = cfg.train
    train_x, _ = split_tensors(inst, "train")
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
