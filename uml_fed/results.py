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


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


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


def summary_table(results: dict[str, Any]) -> str:
    """Per-modality test accuracy table (percent)."""
    cols = [("uml_calibrated", "UML (BN cal.)"), ("uml_uncalibrated", "UML (no cal.)"), ("unimodal", "Unimodal"),
            ("fed_calibrated", "Fed (BN cal.)"), ("fed_uncalibrated", "Fed (no cal.)")]
    mods = results.get("modalities", {})
    present = [(k, h) for k, h in cols if any(k in v for v in mods.values())]
    if not mods or not present:
        return "(no results)"
    w0 = max(8, max(len(m) for m in mods))
    head = f"{'modality':<{w0}} | " + " | ".join(f"{h:>14}" for _, h in present)
    lines = [head, "-" * len(head)]
    for m, v in mods.items():
        cells = []
        for k, _ in present:
            acc = v.get(k, {}).get("test_acc")
            cells.append(f"{100 * acc:>13.2f}%" if acc is not None else f"{'-':>14}")
        lines.append(f"{m:<{w0}} | " + " | ".join(cells))
    means = []
    for k, _ in present:
        accs = [v[k]["test_acc"] for v in mods.values() if k in v]
        means.append(f"{100 * sum(accs) / len(accs):>13.2f}%" if accs else f"{'-':>14}")
    lines.append("-" * len(head))
    lines.append(f"{'mean':<{w0}} | " + " | ".join(means))
    return "\n".join(lines)
