"""Run directory: resolved config, per-epoch/per-round JSON lines, results, checkpoints, summary table."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from .bn_calibration import reset_bn_for_calibration
from .config import Config, ModelConfig
from .model import ModalityModel, UMLModel

CHECKPOINT_FORMAT = "uml-fed/modality-model/1"


class ArtifactError(OSError):
    """A file of a run could not be written; the message names the file and why, in one line."""


def write_failure(e: BaseException, path: Path) -> str:
    """Why writing ``path`` failed, in one line (torch.save's own error says only 'file write failed')."""
    reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).strip().splitlines()[0]
    try:
        free = shutil.disk_usage(next(p for p in (path.parent, *path.parents) if p.exists())).free
        return f"{reason} ({free / 1e6:.1f} MB free there)"
    except OSError:
        return reason


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` then rename ``tmp`` to ``path``: a failed write leaves the old file (or none), never a
    truncated one, and raises :class:`ArtifactError` naming ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        tmp.replace(path)
    except (OSError, RuntimeError) as e:
        tmp.unlink(missing_ok=True)
        raise ArtifactError(f"could not write {path}: {write_failure(e, path)}") from None
    return path


class RunDir:
    """One run's artefacts under ``path`` (created).

    Large files can be :meth:`defer`-red until :meth:`write_deferred`, after the results: a full disk
    then costs a checkpoint, never the run's numbers.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).resolve()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ArtifactError(
                f"could not create the run directory {self.path}: {write_failure(e, self.path)}"
            ) from None
        self.deferred: list[tuple[Path, Callable[[Path], object]]] = []

    def write_config(self, cfg: Config) -> Path:
        p = self.path / "config.yaml"
        p.write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
        return p

    def log(self, row: dict[str, Any], file: str = "metrics.jsonl") -> None:
        row = {"time": round(time.time(), 3), **row}
        with open(self.path / file, "a") as f:
            f.write(json.dumps(_jsonable(row)) + "\n")

    def write_results(self, results: dict[str, Any], file: str = "results.json") -> Path:
        text = json.dumps(_jsonable(results), indent=2)
        return write_atomic(self.path / file, lambda tmp: tmp.write_text(text))

    def defer(self, path: Path, write: Callable[[Path], object]) -> None:
        """Write ``path`` (atomically, with ``write(tmp)``) at :meth:`write_deferred`."""
        self.deferred.append((path, write))

    def write_deferred(self) -> list[dict[str, str]]:
        """Every deferred file; returns the ones that could not be written (file, reason), trying all."""
        failed = []
        for path, write in self.deferred:
            try:
                write_atomic(path, write)
            except ArtifactError as e:
                failed.append({"file": str(path), "reason": str(e)})
        self.deferred.clear()
        return failed

    def checkpoint_path(self, name: str) -> Path:
        return self.path / "checkpoints" / f"{name}.pt"

    def defer_checkpoint(self, name: str, payload: dict[str, Any]) -> None:
        """``checkpoints/<name>.pt`` (a :func:`checkpoint_payload`), written at :meth:`write_deferred`."""
        self.defer(self.checkpoint_path(name), lambda tmp: torch.save(payload, tmp))


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


def checkpoint_payload(
    model: ModalityModel,
    *,
    modality: str,
    bands: list[str],
    classes: list[str],
    model_cfg: ModelConfig,
    mean: np.ndarray | None,
    std: np.ndarray | None,
    calibrated: bool,
    patch_size: int | None = None,
    pixel_size_m: float | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A self-contained unimodal model: projection + backbone + (calibrated) BN statistics + metadata
    (``patch_size``: the side of its training patches in pixels; ``pixel_size_m``: their ground
    sampling, None when not geographic: what ``uml-fed map`` tiles a scene with and checks it against)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "modality": modality,
        "bands": list(bands),
        "classes": list(classes),
        "model_cfg": dataclasses.asdict(model_cfg),
        "mean": None if mean is None else np.asarray(mean).tolist(),
        "std": None if std is None else np.asarray(std).tolist(),
        "calibrated": calibrated,
        "patch_size": patch_size,
        "pixel_size_m": pixel_size_m,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra or {},
    }


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write a :func:`checkpoint_payload` atomically (:class:`ArtifactError` naming the file on failure)."""
    return write_atomic(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> tuple[ModalityModel, dict[str, Any]]:
    """Load a saved modality model for unimodal inference (eval mode, calibrated statistics)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    payload = read_checkpoint(path, map_location)
    return model_from_payload(payload), payload


def read_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """The :func:`checkpoint_payload` saved at ``path`` (refused unless it is one)."""
    payload = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a uml-fed modality checkpoint (format {CHECKPOINT_FORMAT})")
    return payload


def model_from_payload(payload: dict[str, Any]) -> ModalityModel:
    """The eval-mode model of a :func:`checkpoint_payload` (from a file or from the wire)."""
    mcfg = ModelConfig(**payload["model_cfg"])
    full = UMLModel({payload["modality"]: len(payload["bands"])}, len(payload["classes"]), mcfg)
    model = full.modality_model(payload["modality"])
    if payload["calibrated"]:
        reset_bn_for_calibration(model)
    model.load_state_dict(payload["state_dict"])
    return model.eval()


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
    "own": "Own baseline",
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


def cross_site_table(results: dict[str, Any]) -> str:
    """``train.cross_site``: per arm, each institution's reported model (rows) at each test site of its
    modality (columns), test accuracy in percent; the diagonal is the institution's own."""
    blocks = []
    for arm, matrix in results.get("cross_site", {}).items():
        if not matrix:
            blocks.append(f"cross-site test accuracy, {ARMS.get(arm, arm)}: no model was shared (see the failures)")
            continue
        sites = sorted({s for row in matrix.values() for s in row})
        label = f"{ARMS.get(arm, arm)} model of"
        w0 = max(len(label), *(len(o) for o in matrix))
        head = f"{label:<{w0}} | " + " | ".join(f"{s:>8}" for s in sites)
        lines = [f"cross-site test accuracy, {ARMS.get(arm, arm)} (row: whose model; column: whose test split)", head]
        lines.append("-" * len(head))
        for owner, row in matrix.items():
            cells = (f"{100 * row[s]:>7.2f}%" if s in row else f"{'-':>8}" for s in sites)
            lines.append(f"{owner:<{w0}} | " + " | ".join(cells))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) if blocks else "(no cross-site evaluation)"


def gain_table(results: dict[str, Any]) -> str:
    """What each institution gained by joining: federated UML (its reported evaluation) against its own
    baseline trained alone with the same budget, in test accuracy and percentage points."""
    rows = [(m, v["fed"], v["own"]) for m, v in results.get("modalities", {}).items() if "fed" in v and "own" in v]
    if not rows:
        return "(no own baseline)"
    w0 = max(11, max(len(m) for m, _, _ in rows))
    head = f"{'institution':<{w0}} | {'Federated UML':>13} | {'own baseline':>12} | {'gain':>9}"
    lines = [head, "-" * len(head)]
    gains = []
    for m, fed, own in rows:
        a, b = fed[fed["reported"]]["test_acc"], own[own["reported"]]["test_acc"]
        gains.append(a - b)
        lines.append(f"{m:<{w0}} | {100 * a:>12.2f}% | {100 * b:>11.2f}% | {100 * (a - b):>+6.2f} pp")
    lines += ["-" * len(head), f"{'mean':<{w0}} | {'':>13} | {'':>12} | {100 * sum(gains) / len(gains):>+6.2f} pp"]
    lines.append("(one seed: a gain is a measurement, not an effect; uml-fed experiment table3 gives intervals)")
    return "\n".join(lines)
