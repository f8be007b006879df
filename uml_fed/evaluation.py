"""After training, per institution: Algorithm 2 then test evaluation, calibrated and not (shared by
the centralized run, the unimodal baseline and every federated client)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from .bn_calibration import calibrate_bn
from .config import Config, ModelConfig
from .data import Institution
from .model import ModalityModel
from .results import save_checkpoint
from .train import evaluate


def split_tensors(inst: Institution, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    s = inst.split(split)
    return torch.from_numpy(s.images), torch.from_numpy(s.labels)


def calibrate_and_evaluate(
    model: ModalityModel,
    inst: Institution,
    cfg: Config,
    device: torch.device,
    generator: torch.Generator,
    checkpoint: str | Path | None = None,
    model_cfg: ModelConfig | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Calibrate a copy of ``model`` on the institution's train split, evaluate val/test both ways.

    Returns ``{calibration_s, cal_val_acc, cal_test_acc, uncal_val_acc, uncal_test_acc, ...}``; the
    uncalibrated numbers are the model as trained (static BN: statistics of each evaluation batch;
    tracked BN: the running averages mixed over modalities during training).
    """
    t = cfg.train
    train_x, _ = split_tensors(inst, "train")
    tic = time.perf_counter()
    calibrated = calibrate_bn(model, train_x, t.bn_cal_epochs, t.bn_cal_batch_size, generator, device)
    out: dict[str, float] = {"calibration_s": time.perf_counter() - tic}
    for split in ("val", "test"):
        x, y = split_tensors(inst, split)
        cal = evaluate(calibrated, x, y, device, t.eval_batch_size)
        unc = evaluate(model, x, y, device, t.eval_batch_size)
        out[f"cal_{split}_acc"], out[f"cal_{split}_loss"] = cal["acc"], cal["loss"]
        out[f"uncal_{split}_acc"], out[f"uncal_{split}_loss"] = unc["acc"], unc["loss"]
    if checkpoint is not None:
        save_checkpoint(
            checkpoint,
            calibrated,
            modality=inst.name,
            bands=inst.bands,
            classes=inst.classes,
            model_cfg=model_cfg or cfg.model,
            mean=inst.mean,
            std=inst.std,
            calibrated=t.bn_cal_epochs > 0,
            extra=extra,
        )
    return out
