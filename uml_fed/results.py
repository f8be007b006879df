"""Run directory: resolved config, per-epoch/per-round JSON lines, results, checkpoints, summary table."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from .bn_calibration import reset_bn_for_calibration
from .config import Config, ModelConfig
from .model import ModalityModel, UMLModel

CHECKPOINT_FORMAT = "uml-fed/modality-model/1"


class RunDir:
    """One run's artefacts under ``path`` (created)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).resolve()
        self.path.mkdir(parents=True, exist_ok=True)

    def write_config(self, cfg: Config) -> Path:
        p = self.path / "config.yaml"
        p.write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
        return p

    def log(self, row: dict[str, Any], file: str = "metrics.jsonl") -> None:
        row = {"time": round(time.time(), 3), **row}
        with open(self.path / file, "a") as f:
            f.write(json.dumps(_jsonable(row)) + "\n")

    def write_results(self, results: dict[str, Any], file: str = "results.json") -> Path:
        p = self.path / file
        p.write_text(json.dumps(_jsonable(results), indent=2))
        return p

    def checkpoint_path(self, name: str) -> Path:
        return self.path / "checkpoints" / f"{name}.pt"


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, torch.Tensor):
        return x.tolist()
    return x


def save_checkpoint(
    path: str | Path,
    model: ModalityModel,
    *,
    modality: str,
    bands: list[str],
    classes: list[str],
    model_cfg: ModelConfig,
    mean: np.ndarray | None,
    std: np.ndarray | None,
    calibrated: bool,
    extra: dict[str, Any] | None = None,
) -> Path:
    """A self-contained unimodal model: projection + backbone + (calibrated) BN statistics + metadata."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "modality": modality,
        "bands": list(bands),
        "classes": list(classes),
        "model_cfg": dataclasses.asdict(model_cfg),
        "mean": None if mean is None else np.asarray(mean).tolist(),
        "std": None if std is None else np.asarray(std).tolist(),
        "calibrated": calibrated,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra or {},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> tuple[ModalityModel, dict[str, Any]]:
    """Load a saved modality model for unimodal inference (eval mode, calibrated statistics)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    payload = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a uml-fed modality checkpoint (format {CHECKPOINT_FORMAT})")
    mcfg = ModelConfig(**payload["model_cfg"])
    full = UMLModel({payload["modality"]: len(payload["bands"])}, len(payload["classes"]), mcfg)
    model = full.modality_model(payload["modality"])
    if payload["calibrated"]:
        reset_bn_for_calibration(model)
    model.load_state_dict(payload["state_dict"])
    return model.eval(), payload


ARMS = {
    "uml": "UML",
    "isca": "ISCA",
    "isca_e2e": "ISCA end to end",
    "dann": "DANN",
    "cdan": "CDAN",
    "mcc": "MCC",
    "mdd": "MDD",
    "margin_disparity": "Margin disparity",
    "fed": "Federated UML",
    "unimodal": "Unimodal",
    "paired": "Paired fusion",
}
EVALUATION_NAMES = {
    "calibrated": "BN cal.",
    "running_stats": "ordinary BN",
    "test_batch_stats": "test-batch stats",
}


def summary_table(results: dict[str, Any]) -> str:
    """Per-institution test accuracy (percent): every arm's reported evaluation first, then the others."""
    mods = results.get("modalities", {})
    columns: list[tuple[str, str]] = []
    for arm in ARMS:
        entries = [v[arm] for v in mods.values() if arm in v]
        if not entries:
            continue
        reported = entries[0]["reported"]
        others = [e for e in EVALUATION_NAMES if e != reported and e in entries[0]]
        columns += [(arm, e) for e in (reported, *others)]
    if not columns:
        return "(no results)"
    heads = [f"{ARMS[a]} ({EVALUATION_NAMES[e]})" for a, e in columns]
    w0 = max(8, max(len(m) for m in mods))
    head = f"{'institution':<{w0}} | " + " | ".join(heads)
    lines = [head, "-" * len(head)]

    def cells(values: list[float | None]) -> str:
        return " | ".join(f"{'-' if v is None else f'{100 * v:.2f}%':>{len(h)}}" for v, h in zip(values, heads))

    for m, v in mods.items():
        lines.append(f"{m:<{w0}} | " + cells([v.get(a, {}).get(e, {}).get("test_acc") for a, e in columns]))
    means = []
    for a, e in columns:
        accs = [v[a][e]["test_acc"] for v in mods.values() if a in v and e in v[a]]
        means.append(sum(accs) / len(accs) if accs else None)
    lines += ["-" * len(head), f"{'mean':<{w0}} | " + cells(means)]
    return "\n".join(lines)
