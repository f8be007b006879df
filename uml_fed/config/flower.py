"""The one route from Flower's run config into the typed schema, used by the ServerApp and every
ClientApp (each composes its config once per process).

The run config carries ``experiment`` (a file of ``configs/experiment/``), ``overrides`` (any Hydra
overrides, space separated) and the few keys a user types on the ``flwr run`` command line, each the
short name of one schema field (:data:`RUN_CONFIG_KEYS`).  Every key's default in ``pyproject.toml``
is ``""``, and ``""`` means one thing: not given, so the composed config (schema, experiment,
overrides) keeps its value.  Every other setting goes through ``overrides``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .compose import load_config
from .schema import Config
from .validation import ConfigError

RUN_CONFIG_KEYS: dict[str, str] = {
    "local-epochs": "fed.local_epochs",
    "total-epochs": "train.epochs",
    "num-server-rounds": "fed.rounds",
    "strategy": "fed.strategy",
    "weighting": "fed.weighting",
    "min-nodes": "fed.min_nodes",
    "seed": "seed",
    "data-root": "data.root",
    "resume": "fed.resume",
    "local-baseline": "fed.local_baseline",
    "cross-site": "train.cross_site",
}
ROUTE_KEYS = ("experiment", "overrides", "output-dir")  # read by the route itself / the ServerApp


def run_config_overrides(run_config: Mapping[str, Any]) -> list[str]:
    """Flower's run config as Hydra overrides: the experiment, then ``overrides``, then the given keys
    (which win over ``overrides``)."""
    unknown = sorted(set(run_config) - set(RUN_CONFIG_KEYS) - set(ROUTE_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown run-config key(s) {unknown}: the keys are {sorted([*RUN_CONFIG_KEYS, *ROUTE_KEYS])}; "
            f"any other setting goes in overrides, e.g. overrides='fed.proximal_mu=0.01'"
        )
    out: list[str] = []
    if exp := str(run_config.get("experiment", "") or ""):
        out.append(f"experiment={exp}")
    out.extend(str(run_config.get("overrides", "") or "").split())
    for key, path in RUN_CONFIG_KEYS.items():
        value = run_config.get(key, "")
        if value == "":
            continue
        out.append(f"{path}={str(value).lower() if isinstance(value, bool) else value}")
    return out


def from_run_config(run_config: Mapping[str, Any], output_dir: str | None = None) -> Config:
    """The flat Flower run config composed into the typed schema."""
    return load_config(run_config_overrides(run_config), output_dir=output_dir)
