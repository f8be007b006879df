"""What a node does with one message: know which institution it serves, compose its config, reuse
the institution's client of this run where the process still holds it, answer or report the error.

``client_app.py`` calls :func:`serve`; :class:`~uml_fed.federated.client.InstitutionClient` does the
institution's work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from logging import ERROR
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, RecordDict
from flwr.common.logger import log

from ..config import Config, from_run_config
from ..data import Institution, institution_names, load_institutions
from . import records
from .client import InstitutionClient
from .runtime import configure_torch


class IdentityError(ValueError):
    """A node cannot tell which institution it is (node/run config)."""


@dataclass(frozen=True)
class Identity:
    institution: str
    output_dir: Path | None  # the node's own folder for private state (deployment); None = the server's run dir
    data_path: str | None = None


@lru_cache(maxsize=4)
def _institution(cfg_json: str, name: str, data_path: str | None) -> Institution:
    cfg = Config()
    d = json.loads(cfg_json)
    cfg.seed = d.pop("__seed")
    cfg.data = type(cfg.data)(**d)
    if data_path:
        cfg.data.root = data_path
    return load_institutions(cfg, only=name)[0]


def own_institution(cfg: Config, ident: Identity) -> Institution:
    """The node's own data (loaded once per process)."""
    d = {**dataclasses.asdict(cfg.data), "__seed": cfg.seed}
    return _institution(json.dumps(d, sort_keys=True), ident.institution, ident.data_path)


def resolve_identity(cfg: Config, node_config: Mapping[str, Any]) -> Identity:
    """Which institution this node is: node config ``institution`` (deployment) or the partition id
    (simulation: institutions in config order)."""
    names = institution_names(cfg)
    given = node_config.get("institution")
    if given is not None:
        if str(given) not in names:
            raise IdentityError(f"node config institution={given!r} is not an institution of this run: {names}")
        name = str(given)
    elif "partition-id" in node_config:
        pid, num = int(node_config["partition-id"]), int(node_config.get("num-partitions", len(names)))
        if num != len(names):
            raise IdentityError(
                f"the simulation has {num} SuperNodes but the run has {len(names)} institutions {names}; "
                f'start it with --federation-config "num-supernodes={len(names)}"'
            )
        name = names[pid]
    else:
        raise IdentityError(
            "node config has neither 'institution' (deployment) nor 'partition-id' (simulation); start the "
            'SuperNode with --node-config \'institution="s1" data-path="/data/s1" output-dir="/out/s1"\''
        )
    out = node_config.get("output-dir")
    return Identity(name, Path(str(out)).expanduser() if out else None, node_config.get("data-path") or None)


@lru_cache(maxsize=8)
def _config(items: tuple) -> Config:
    return from_run_config(dict(items))


def config_from_run_config(run_config: Mapping[str, Any]) -> Config:
    """The typed config of this run (cached per process: Ray actors serve many rounds)."""
    return _config(tuple(sorted(run_config.items())))


_LIVE: OrderedDict[tuple, InstitutionClient] = OrderedDict()  # (config, institution, run) -> client


def live_client(cfg: Config, ident: Identity, config: Mapping[str, Any]) -> InstitutionClient:
    """The institution's client of this run as this process left it after its last round, or a new one.

    In simulation a Ray actor serves many rounds: keeping the model and optimizer in memory saves
    rebuilding them and reading the private state back every round (it is still written every
    round: the disk stays the truth).  A deployed node runs each message in a fresh process.
    """
    key = (id(cfg), ident, str(config.get("run-key", "")), str(config.get("output-dir", "")))
    client = _LIVE.pop(key, None) or InstitutionClient(cfg, own_institution(cfg, ident), ident.output_dir)
    _LIVE[key] = client
    while len(_LIVE) > 8:
        _LIVE.popitem(last=False)
    return client


def serve(
    action: str, content: RecordDict, run_config: Mapping[str, Any], node_config: Mapping[str, Any]
) -> RecordDict:
    """A node's answer to one message (``describe`` | ``train`` | ``calibrate`` | ``share`` | ``cross_site``).

    A failure is told to the server as ``fed.error_detail`` says: ``full`` (the message), or ``type``
    (the error's type and a short code; the full message stays in this institution's own log) --
    ``auto`` = ``type`` on a deployed node (node config ``institution``), ``full`` in simulation.
    A describe that fails after the node knows its institution still answers, with the error, so the
    server can name the institution.
    """
    cfg = config_from_run_config(run_config)
    ident = resolve_identity(cfg, node_config)
    try:
        configure_torch(cfg)
        if action == "describe":
            return records.describe_reply(InstitutionClient(cfg, own_institution(cfg, ident)).describe())
        client = live_client(cfg, ident, content[records.CONFIG])
        handler = {
            "train": client.train,
            "calibrate": client.calibrate,
            "share": client.share,
            "cross_site": client.cross_site,
        }[action]
        return handler(content)
    except Exception as e:  # noqa: BLE001 - reported to the server, in full or reduced
        detail = cfg.fed.error_detail
        if detail == "auto":
            detail = "full" if "partition-id" in node_config else "type"
        code = hashlib.sha1(f"{type(e).__name__}: {e}".encode()).hexdigest()[:8]
        text = (
            f"{type(e).__name__}: {e}" if detail == "full" else f"{type(e).__name__} (code {code}; see the node's log)"
        )
        log(ERROR, "institution %s, %s: %s: %s (code %s)", ident.institution, action, type(e).__name__, e, code)
        if action == "describe":
            return records.describe_reply(ConfigRecord({"institution": ident.institution, "error": text}))
        if detail == "full":
            raise
        raise RuntimeError(text) from None
