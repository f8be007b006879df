"""Runs behind every experiment: one arm (a method + config overrides) at one seed = one run directory.

Run directories are content-addressed: ``<runner.root>/runs/<method>-<key>/`` where the key hashes the
method, the fully resolved config (minus where it runs: output directory, device, progress bars; minus
every field left at its schema default, so that a new option that keeps the old behaviour by default
does not invalidate stored runs), the resolved compute (precision, memory layout: ``auto`` differs by
machine) and :data:`NUMERICS`.  The torch thread count is part of the config and of the key: the
runner pins it (``runner.threads``), because the same seed gives other numbers at another count.  So a finished run is never redone: an interrupted experiment
continues where it stopped, and two experiments that need the same run (Table 3 and Figure 2b both
need UML at the default size) share it.  Every run also records the fingerprint of the package
source it ran with, and a report lists the fingerprints of its runs.

A run is finished when its ``results.json`` exists; a directory without one is an interrupted run
and is started again from scratch.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from ..config import Config, ConfigError, load_config, num_rounds
from ..data import institution_names
from ..train import compute_for, compute_record, resolve_device

PACKAGE = Path(__file__).resolve().parents[1]
# Bump when a change can move any number of any run (training, data generation, evaluation, or a
# schema default): stored runs of the previous version are then never reused.
NUMERICS = 3
# where a run executes, not what it computes: left out of the run key
VOLATILE = {
    "output_dir": None,
    "name": None,
    "runner": None,
    "train": ("device", "progress"),
    "fed": ("client_cpus", "client_gpus", "round_timeout", "resume"),
}


@dataclass(frozen=True)
class Arm:
    """One line of a table or one point of a figure: a method on a config, at every seed."""

    series: str  # the row / curve it belongs to, e.g. "uml", "unimodal", "uml_ordinary_bn", "fed"
    method: str  # uml | unimodal | paired | federated
    overrides: tuple[str, ...] = ()
    x: float | None = None  # position on the figure's x axis (training size, L, P), None = none
    group: str = ""  # a setting the arm belongs to (e.g. a partition), compared with the unimodal arm of its group

    @property
    def key(self) -> str:
        key = f"{self.series} [{self.group}]" if self.group else self.series
        return key if self.x is None else f"{key}@{self.x:g}"


def code_fingerprint() -> str:
    """Hash of the package's source files (recorded with every run and report)."""
    h = hashlib.sha1()
    for p in sorted(PACKAGE.rglob("*.py")):
        h.update(p.relative_to(PACKAGE).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def _non_default(value: Any, default: Any) -> Any:
    """``value`` without the (nested) entries equal to ``default``."""
    if isinstance(value, dict) and isinstance(default, dict):
        out = {k: _non_default(v, default.get(k)) for k, v in value.items() if k not in default or v != default[k]}
        return {k: v for k, v in out.items() if v != {}}
    return value


def run_key(method: str, cfg: Config) -> str:
    content = _non_default(
        OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True),
        OmegaConf.to_container(OmegaConf.structured(Config()), resolve=True),
    )
    for section, fields in VOLATILE.items():
        if fields is None:
            content.pop(section, None)
        else:
            for f in fields:
                content.get(section, {}).pop(f, None)
    device = resolve_device(cfg.train.device)
    compute = compute_record(compute_for(cfg.train, device), device)
    compute.pop("device"), compute.pop("threads")
    blob = json.dumps({"method": method, "config": content, "compute": compute, "numerics": NUMERICS}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def machine() -> dict[str, Any]:
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "cuda": cuda,
    }


def _centralized(method: str) -> Callable[[Config, list[str]], dict[str, Any]]:
    def run(cfg: Config, overrides: list[str]) -> dict[str, Any]:
        from ..centralized import run_centralized, run_paired, run_unimodal

        if method == "uml":
            return run_centralized(cfg, unimodal=False)
        if method == "unimodal":
            return run_unimodal(cfg)
        return run_paired(cfg)

    return run


def _federated(cfg: Config, overrides: list[str]) -> dict[str, Any]:
    """One ``flwr run`` (Ray simulation, one SuperNode per institution) of Algorithm 3."""
    from ..federated.federation import RunFailed
    from .launch import flwr_run

    num_rounds(cfg)  # a schedule that does not divide the budget fails here, before Flower starts
    result = flwr_run(
        {"overrides": " ".join(overrides), "output-dir": cfg.output_dir},
        federation_config={
            "num-supernodes": len(institution_names(cfg)),
            "client-resources-num-cpus": cfg.fed.client_cpus,
            "client-resources-num-gpus": cfg.fed.client_gpus,
        },
        stream_to=sys.stdout if cfg.train.progress else None,
    )
    out = Path(cfg.output_dir) / "results.json"
    results = json.loads(out.read_text()) if out.is_file() else {}
    if results.get("status") == "failed":
        raise RunFailed(results["institution"], results["reason"])
    if result.returncode != 0 or not results:
        raise RuntimeError(
            f"federated run in {cfg.output_dir} failed (flwr exit {result.returncode}):\n{result.output[-4000:]}"
        )
    results["flwr_run_s"] = result.seconds
    return results


METHODS: dict[str, Callable[[Config, list[str]], dict[str, Any]]] = {
    "uml": _centralized("uml"),
    "unimodal": _centralized("unimodal"),
    "paired": _centralized("paired"),
    "federated": _federated,
}


@dataclass
class Run:
    arm: Arm
    seed: int
    path: Path
    results: dict[str, Any]
    reused: bool


def run_arm(arm: Arm, seed: int, base: list[str], root: Path, log: Callable[[str], None] = print) -> Run:
    """The run of ``arm`` at ``seed``: from its directory when finished, else trained now."""
    if arm.method not in METHODS:
        raise ConfigError(f"unknown method {arm.method!r}; known: {sorted(METHODS)}")
    overrides = [*base, *arm.overrides, f"seed={seed}"]
    cfg = load_config(overrides)
    key = run_key(arm.method, cfg)
    path = root / "runs" / f"{arm.method}-{key}"
    done = path / "results.json"
    if done.is_file():
        return Run(arm, seed, path, json.loads(done.read_text()), reused=True)
    if path.exists():
        log(f"[experiment] {path.name}: unfinished run, starting it again")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    cfg.output_dir = str(path)
    (path / "run.json").write_text(
        json.dumps(
            {
                "method": arm.method,
                "overrides": overrides,
                "seed": seed,
                "code": code_fingerprint(),
                "machine": machine(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            },
            indent=2,
        )
    )
    log(f"[experiment] {arm.key} seed {seed}: {arm.method} -> {path}")
    tic = time.perf_counter()
    results = METHODS[arm.method](cfg, overrides)
    results["run_s"] = time.perf_counter() - tic
    results["code"] = code_fingerprint()
    done.write_text(json.dumps(results, indent=2))
    return Run(arm, seed, path, results, reused=False)
