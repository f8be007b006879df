"""``server_state.pt`` in the run directory: the server's side of a resumable run.

Rewritten after every round (atomic rename): the round, the global backbone, the round log, the
aggregator's state (strategy momentum/moments, shared projections) and the resolved config.  A run
resubmitted with the same run config and ``output-dir`` and ``resume=true`` continues after the
last saved round; each institution finds its own private state (same run key) on its own disk.
"""

from __future__ import annotations

from typing import Any

import torch
from flwr.app import ArrayRecord
from omegaconf import OmegaConf

from ..config import Config, ConfigError
from ..results import RunDir, write_atomic
from . import records


def _config_text(cfg: Config) -> str:
    return "\n".join(
        line
        for line in OmegaConf.to_yaml(OmegaConf.structured(cfg)).splitlines()
        if not line.strip().startswith("resume:")
    )


class ServerState:
    def __init__(self, run: RunDir) -> None:
        self.path = run.path / "server_state.pt"

    def save(
        self, server_round: int, backbone: ArrayRecord, rounds: list[dict], aggregator: dict[str, Any], cfg: Config
    ) -> None:
        state = {
            "round": server_round,
            "backbone": records.to_state(backbone),
            "rounds": rounds,
            "aggregator": aggregator,
            "config": _config_text(cfg),
        }
        write_atomic(self.path, lambda tmp: torch.save(state, tmp))

    def load(self, cfg: Config) -> dict[str, Any]:
        if not self.path.is_file():
            raise FileNotFoundError(
                f"resume: no {self.path.name} in {self.path.parent}; resume needs the output-dir of the "
                "interrupted run (it is written after every round)"
            )
        state = torch.load(self.path, weights_only=False)
        if state["config"] != _config_text(cfg):
            raise ConfigError(
                f"resume: the config differs from the interrupted run's ({self.path}); resume with the same "
                "run config (only resume=true may change)"
            )
        return state
