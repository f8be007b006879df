"""Process-level set-up shared by the Flower apps: torch threads, config, output directory."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..config import Config, ConfigError, from_run_config
from ..data import institution_names


def configure_torch(cfg: Config) -> None:
    """Match torch's threads to what the node was given (Ray sets OMP_NUM_THREADS per actor)."""
    n = cfg.train.num_threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if n > 0 and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def default_output_dir(cfg: Config) -> Path:
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    return (Path.cwd() / "outputs" / "federated" / cfg.name / stamp).resolve()


def server_config(run_config: Mapping[str, Any]) -> tuple[Config, list[str]]:
    """Typed config for the ServerApp with an absolute output directory, and the institutions."""
    cfg = from_run_config(run_config)
    if cfg.method.name != "uml":
        raise ConfigError(
            f"method.name={cfg.method.name}: the comparison baselines run centralized only "
            f"(uml-fed centralized method={cfg.method.name}); federated runs train UML (method=uml)"
        )
    out = str(run_config.get("output-dir", "") or "")
    cfg.output_dir = str(Path(out).expanduser().resolve() if out else default_output_dir(cfg))
    return cfg, institution_names(cfg)
