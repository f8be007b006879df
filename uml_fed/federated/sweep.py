"""R x L sweeps (the paper's Figure 4): ``uml-fed sweep`` is the ``fig4`` experiment for the config's
seed, with its runs and report in the Hydra run directory.

Each federated schedule is a real ``flwr run`` (Ray simulation, one SuperNode per institution); the
centralized UML and unimodal references run on the same data and seed.
"""

from __future__ import annotations

from typing import Any

from ..config import Config, ConfigError


def check_schedules(total: int, local_epochs: list[int]) -> list[tuple[int, int]]:
    """(L, R) pairs with R x L = total; every L must divide the total."""
    bad = [L for L in local_epochs if L < 1 or total % L]
    if bad:
        raise ConfigError(
            f"fed.sweep_local_epochs={list(local_epochs)}: {bad} do not divide train.epochs={total}; "
            "choose local epochs that divide the total so that R x L stays the budget"
        )
    return [(L, total // L) for L in local_epochs]


def run_sweep(cfg: Config, overrides: list[str] | None = None) -> dict[str, Any]:
    """The fig4 experiment at ``cfg.seed``: runs under ``<output_dir>/runs``, report under ``<output_dir>/fig4``."""
    from ..experiments import run_experiment

    check_schedules(cfg.train.epochs, list(cfg.fed.sweep_local_epochs))
    return run_experiment("fig4", [*(overrides or []), f"runner.seeds=[{cfg.seed}]", f"runner.root={cfg.output_dir}"])
