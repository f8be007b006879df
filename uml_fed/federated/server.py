"""The server side of Algorithm 3 on Flower's Message API (everything server_app.py does).

1. handshake: a ``query.describe`` message to every node; each answers with its modality, classes and
   sizes (no data).  Institutions with different class lists are refused before any training.
2. the seeded initial backbone and a Flower strategy (FedAvg/FedProx/...) that aggregates the backbone
   arrays the clients send -- the strategy is Flower's own, wrapped only to record who replied.
3. R rounds of L local epochs: Flower's round (configure_train -> push/pull -> aggregate_train) with
   the server state saved after each round, so an interrupted run can resume.
4. a final ``query.calibrate`` message with the final backbone: each institution selects, calibrates
   (Algorithm 2) and evaluates on its own data, and replies with metrics.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from logging import INFO, WARNING
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
)
from omegaconf import OmegaConf

from ..config import Config, ConfigError, num_rounds
from ..model import Backbone, backbone_state
from ..results import RunDir, summary_table
from ..train import seed_everything

STRATEGIES = {
    "fedavg": FedAvg,
    "fedprox": FedProx,
    "fedavgm": FedAvgM,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
    "fedadagrad": FedAdagrad,
    "fedmedian": FedMedian,
    "fedtrimmedavg": FedTrimmedAvg,
}
WEIGHT_KEYS = {"uniform": "uniform-weight", "num_examples": "num-examples"}


class InstitutionMismatchError(ValueError):
    """Institutions cannot collaborate (different label spaces, duplicate modalities, ...)."""


@dataclass
class RoundTracker:
    """Who was asked, who answered, who failed -- per round -- and the per-client metrics."""

    node_names: dict[int, str]
    run: RunDir | None = None
    rounds: list[dict[str, Any]] = field(default_factory=list)
    sent_to: dict[str, int] = field(default_factory=dict)  # message id -> destination node (see exchange)
    _sent_at: dict[int, float] = field(default_factory=dict)
    _asked: dict[int, list[int]] = field(default_factory=dict)

    def name(self, node_id: int) -> str:
        return self.node_names.get(node_id, f"node-{node_id}")

    def who(self, msg: Message) -> str:
        """The institution a reply concerns.  Errors the SuperLink makes itself (e.g. "Node Unavailable"
        for a dead SuperNode) come from the SuperLink's node id: attribute them to the addressee."""
        node = msg.metadata.src_node_id
        if node == SUPERLINK_NODE_ID:
            node = self.sent_to.get(msg.metadata.reply_to_message_id, node)
        return self.name(node)

    def sent(self, server_round: int, node_ids: list[int]) -> None:
        self._sent_at[server_round] = time.perf_counter()
        self._asked[server_round] = list(node_ids)

    def received(self, server_round: int, replies: list[Message]) -> dict[str, Any]:
        now = time.perf_counter()
        ok, failed, clients = [], {}, {}
        for msg in replies:
            who = self.who(msg)
            if msg.has_error():
                failed[who] = str(msg.error.reason)
            else:
                ok.append(who)
                metrics = msg.content.metric_records
                if metrics:
                    clients[who] = dict(next(iter(metrics.values())))
        answered = {self.who(m) for m in replies}
        missing = [self.name(n) for n in self._asked.get(server_round, []) if self.name(n) not in answered]
        round_s = now - self._sent_at.get(server_round, now)
        train_s = max((c.get("train-time-s", 0.0) for c in clients.values()), default=0.0)
        row = {
            "round": server_round,
            "replied": ok,
            "failed": failed,
            "missing": missing,
            "round_s": round_s,
            "max_client_train_s": train_s,
            "overhead_s": max(0.0, round_s - train_s),
            "clients": clients,
        }
        self.rounds.append(row)
        if self.run is not None:
            self.run.log(row, file="rounds.jsonl")
        for who, reason in failed.items():
            log(WARNING, "round %s: institution %s failed: %s", server_round, who, reason)
        for who in missing:
            log(WARNING, "round %s: institution %s did not reply in time", server_round, who)
        return row


def build_strategy(cfg: Config, num_nodes: int, tracker: RoundTracker):  # type: ignore[no-untyped-def]
    """A Flower strategy from config, wrapped to record replies and enforce ``fed.min_replies``."""
    name = cfg.fed.strategy.lower()
    if name not in STRATEGIES:
        raise ConfigError(f"fed.strategy={cfg.fed.strategy!r} is not one of {sorted(STRATEGIES)}")
    base = STRATEGIES[name]
    min_nodes = cfg.fed.min_nodes or num_nodes
    min_replies = max(1, cfg.fed.min_replies)

    class Tracked(base):  # type: ignore[misc, valid-type]
        def configure_train(self, server_round, arrays, config, grid):  # type: ignore[no-untyped-def]
            messages = list(super().configure_train(server_round, arrays, config, grid))
            tracker.sent(server_round, [m.metadata.dst_node_id for m in messages])
            return messages

        def aggregate_train(self, server_round, replies):  # type: ignore[no-untyped-def]
            # a fixed order (by institution) makes the floating-point sums reproducible for a seed
            replies = sorted(replies, key=tracker.who)
            row = tracker.received(server_round, replies)
            if len(row["replied"]) < min_replies:
                log(WARNING, "round %s: %d replies < fed.min_replies=%d; keeping the previous backbone",
                    server_round, len(row["replied"]), min_replies)
                return None, None
            return super().aggregate_train(server_round, replies)

    Tracked.__name__ = f"Tracked{base.__name__}"
    kwargs: dict[str, Any] = dict(
        fraction_train=cfg.fed.fraction_train,
        fraction_evaluate=0.0,  # validation happens when the next round's backbone arrives (client.py)
        min_train_nodes=min(min_nodes, num_nodes),
        min_evaluate_nodes=0,
        min_available_nodes=min(min_nodes, num_nodes),
        weighted_by_key=WEIGHT_KEYS[cfg.fed.weighting],
    )
    if name == "fedprox":
        kwargs["proximal_mu"] = cfg.fed.proximal_mu
    elif cfg.fed.proximal_mu > 0:
        raise ConfigError(f"fed.proximal_mu={cfg.fed.proximal_mu} is only used by fed.strategy=fedprox")
    return Tracked(**kwargs)


def initial_backbone(cfg: Config, num_classes: int) -> ArrayRecord:
    """The seeded initial shared backbone theta^0 (no projection: those stay with the institutions)."""
    seed_everything(cfg.seed)
    backbone = Backbone(num_classes, cfg.model)
    return ArrayRecord(OrderedDict((k, v.clone()) for k, v in backbone_state(backbone).items()))


def wait_for_nodes(grid: Grid, expected: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= expected or time.monotonic() > deadline:
            return nodes
        time.sleep(1.0)


POLL_INTERVAL_S = 0.1


def exchange(
    grid: Grid,
    messages: list[Message],
    timeout: float,
    poll: float = POLL_INTERVAL_S,
    sent_to: dict[str, int] | None = None,
) -> list[Message]:
    """Push ``messages`` and pull their replies until all are in or ``timeout`` passes.

    Grid.send_and_receive does the same, but the HttpGrid that a ServerApp gets under ``flwr run``
    sleeps a fixed 3 s between pulls, which adds up to 3 s to every round; polling the same public
    push/pull API every ``poll`` seconds removes that wait.  ``sent_to`` collects each pushed message's
    destination node (to attribute errors the SuperLink generates on a node's behalf).
    """
    ids = list(grid.push_messages(messages))
    if sent_to is not None:
        sent_to.update(zip(ids, (m.metadata.dst_node_id for m in messages)))
    pending = set(ids)
    replies: list[Message] = []
    deadline = time.monotonic() + timeout
    while pending:
        got = list(grid.pull_messages(pending))
        replies.extend(got)
        pending.difference_update(m.metadata.reply_to_message_id for m in got)
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(poll)
    return replies


def _query(
    grid: Grid, node_ids: list[int], action: str, content: RecordDict, timeout: float,
    sent_to: dict[str, int] | None = None,
) -> list[Message]:
    messages = [
        Message(content=content, dst_node_id=n, message_type=f"query.{action}") for n in node_ids
    ]
    return exchange(grid, messages, timeout, sent_to=sent_to)


def handshake(
    grid: Grid, node_ids: list[int], expected: list[str], timeout: float, strict: bool = True
) -> tuple[dict[int, str], list[str]]:
    """Ask every node who it is; refuse mismatched class lists, duplicates and unknown institutions.

    ``strict=False`` (nodes joining mid-run) skips a node that cannot answer instead of failing the run.
    """
    replies = _query(grid, node_ids, "describe", RecordDict({"config": ConfigRecord({})}), timeout)
    names: dict[int, str] = {}
    described: dict[str, list[str]] = {}
    for msg in replies:
        if msg.has_error():
            if not strict:
                log(WARNING, "node %s could not describe itself: %s", msg.metadata.src_node_id, msg.error.reason)
                continue
            raise InstitutionMismatchError(
                f"node {msg.metadata.src_node_id} could not describe itself: {msg.error.reason}"
            )
        info = msg.content.config_records["info"]
        modality = str(info["modality"])
        if modality in described:
            raise InstitutionMismatchError(f"two nodes both claim institution {modality!r}")
        names[msg.metadata.src_node_id] = modality
        described[modality] = list(info["classes"])
    if len(described) < len(expected):
        absent = sorted(set(expected) - set(described))
        log(WARNING, "institutions %s did not answer the handshake; continuing with %s", absent, sorted(described))
    if not described:
        if not strict:
            return names, []
        raise InstitutionMismatchError("no institution answered the handshake")
    ref_name, ref_classes = next(iter(described.items()))
    for name, classes in described.items():
        if classes != ref_classes:
            raise InstitutionMismatchError(
                f"institutions {ref_name!r} and {name!r} have different class lists: "
                f"{ref_classes} vs {classes}; all institutions must share one label space"
            )
    return names, ref_classes


def train_config(cfg: Config) -> ConfigRecord:
    t = cfg.train
    return ConfigRecord(
        {
            "local-epochs": cfg.fed.local_epochs,
            "lr": t.lr,
            "lr-step": t.lr_step,
            "lr-gamma": t.lr_gamma,
            "output-dir": cfg.output_dir,
        }
    )


def _strategy_state(strategy: Any) -> dict[str, Any]:
    """What a strategy keeps between rounds (FedAvgM momentum, FedAdam moments, ...), picklable parts."""
    import pickle

    out = {}
    for k, v in vars(strategy).items():
        if callable(v):
            continue
        try:
            pickle.dumps(v)
        except Exception:  # noqa: BLE001 - anything unpicklable is configuration, rebuilt from cfg
            continue
        out[k] = v
    return out


class ServerState:
    """``server_state.pt`` in the run directory, rewritten after every round (atomic rename)."""

    def __init__(self, run: RunDir) -> None:
        self.path = run.path / "server_state.pt"

    def save(self, server_round: int, arrays: ArrayRecord, tracker: RoundTracker, strategy: Any, cfg: Config) -> None:
        tmp = self.path.with_suffix(".tmp")
        torch.save(
            {
                "round": server_round,
                "backbone": {k: torch.from_numpy(v.numpy().copy()) for k, v in arrays.items()},
                "rounds": tracker.rounds,
                "strategy": _strategy_state(strategy),
                "config": OmegaConf.to_yaml(OmegaConf.structured(cfg)),
            },
            tmp,
        )
        tmp.replace(self.path)

    def load(self, cfg: Config) -> dict[str, Any]:
        if not self.path.is_file():
            raise FileNotFoundError(
                f"resume: no {self.path.name} in {self.path.parent}; resume needs the output-dir of the "
                "interrupted run (it is written after every round)"
            )
        state = torch.load(self.path, weights_only=False)
        now = OmegaConf.to_yaml(OmegaConf.structured(cfg))
        if _without_resume_keys(state["config"]) != _without_resume_keys(now):
            raise ConfigError(
                f"resume: the config differs from the interrupted run's ({self.path}); resume with the same "
                "run config (only fed.resume may change)"
            )
        return state


def _without_resume_keys(yaml_text: str) -> str:
    return "\n".join(line for line in yaml_text.splitlines() if not line.strip().startswith(("resume:",)))


def refresh_names(grid: Grid, names: dict[int, str], classes: list[str], timeout: float) -> None:
    """Describe nodes that connected since the handshake (a restarted SuperNode gets a new node id)."""
    new = [n for n in grid.get_node_ids() if n not in names]
    if not new:
        return
    more, more_classes = handshake(grid, new, [], timeout, strict=False)
    if more and more_classes != classes:
        raise InstitutionMismatchError(f"a reconnected node has classes {more_classes}, the run has {classes}")
    for node, who in more.items():
        for old in [k for k, v in names.items() if v == who]:
            del names[old]  # the institution's previous node id is gone
        names[node] = who
        log(INFO, "institution %s (re)connected as node %s", who, node)


def run_federated(grid: Grid, cfg: Config, expected: list[str], node_wait_s: float = 120.0) -> dict[str, Any]:
    """Algorithm 3 + the final calibration round; writes the run directory; returns results.

    The round loop is Flower's (configure_train -> send_and_receive -> aggregate_train on the chosen
    strategy), written out so the server state can be saved after every round and a run killed after
    round r can continue from r + 1 (``fed.resume``).
    """
    start = time.perf_counter()
    run = RunDir(cfg.output_dir)
    state_store = ServerState(run)
    rounds = num_rounds(cfg)
    node_ids = wait_for_nodes(grid, len(expected), node_wait_s)
    if not node_ids:
        raise InstitutionMismatchError(f"no SuperNode connected within {node_wait_s:.0f} s")
    names, classes = handshake(grid, node_ids, expected, cfg.fed.round_timeout)
    log(INFO, "institutions: %s", dict(names))
    tracker = RoundTracker(names, run)
    strategy = build_strategy(cfg, len(expected), tracker)
    arrays = initial_backbone(cfg, len(classes))
    first = 1
    if cfg.fed.resume:
        saved = state_store.load(cfg)
        arrays = ArrayRecord(OrderedDict((k, v) for k, v in saved["backbone"].items()))
        tracker.rounds = list(saved["rounds"])
        vars(strategy).update(saved["strategy"])
        first = int(saved["round"]) + 1
        log(INFO, "resuming after round %d of %d from %s", first - 1, rounds, state_store.path)
    else:
        run.write_config(cfg)
    payload_bytes = sum(a.numpy().nbytes for a in arrays.values())
    log(INFO, "R=%d rounds x L=%d local epochs; backbone payload %.2f MB", rounds, cfg.fed.local_epochs,
        payload_bytes / 1e6)
    strategy.summary()

    tic = time.perf_counter()
    for server_round in range(first, rounds + 1):
        log(INFO, "[ROUND %s/%s]", server_round, rounds)
        refresh_names(grid, names, classes, cfg.fed.round_timeout)
        messages = strategy.configure_train(server_round, arrays, train_config(cfg), grid)
        replies = exchange(grid, list(messages), cfg.fed.round_timeout, sent_to=tracker.sent_to)
        aggregated, _ = strategy.aggregate_train(server_round, replies)
        if aggregated is not None:
            arrays = aggregated
        state_store.save(server_round, arrays, tracker, strategy, cfg)
    train_s = time.perf_counter() - tic

    tic = time.perf_counter()
    refresh_names(grid, names, classes, cfg.fed.round_timeout)
    content = RecordDict({"arrays": arrays, "config": ConfigRecord({**train_config(cfg), "server-round": rounds})})
    replies = _query(grid, sorted(names), "calibrate", content, cfg.fed.round_timeout, sent_to=tracker.sent_to)
    calibrate_s = time.perf_counter() - tic
    results: dict[str, Any] = {
        "mode": "federated",
        "seed": cfg.seed,
        "classes": classes,
        "strategy": cfg.fed.strategy,
        "weighting": cfg.fed.weighting,
        "rounds": rounds,
        "local_epochs": cfg.fed.local_epochs,
        "resumed_after_round": first - 1 if cfg.fed.resume else None,
        "backbone_bytes_per_round": payload_bytes,
        "modalities": {},
        "failures": [
            {"round": r["round"], "failed": r["failed"], "missing": r["missing"]}
            for r in tracker.rounds
            if r["failed"] or r["missing"]
        ],
    }
    for msg in replies:
        who = tracker.who(msg)
        if msg.has_error():
            results["failures"].append({"round": "calibrate", "failed": {who: str(msg.error.reason)}, "missing": []})
            continue
        m = dict(msg.content.metric_records["metrics"])
        trained, reported = ("running_stats", "running_stats") if m["tracked-bn"] else ("test_batch_stats", "calibrated")
        entry = {
            "bn": "tracked" if m["tracked-bn"] else "static",
            "reported": reported,
            "calibrated": {"val_acc": m["cal-val-acc"], "test_acc": m["cal-test-acc"]},
            trained: {"val_acc": m["as-trained-val-acc"], "test_acc": m["as-trained-test-acc"]},
            "selected_round": int(m["selected-round"]),
            "calibration_s": m["calibration-time-s"],
            "calibrate_and_evaluate_s": m["calibrate-and-evaluate-time-s"],
        }
        entry.update(val_acc=entry[reported]["val_acc"], test_acc=entry[reported]["test_acc"])
        results["modalities"][who] = {"fed": entry}
    answered = {tracker.who(m) for m in replies}
    for who in sorted(set(names.values()) | set(expected)):
        if who not in answered:
            results["failures"].append({"round": "calibrate", "failed": {}, "missing": [who]})
    results["train_s"] = train_s
    results["calibrate_round_s"] = calibrate_s
    results["wall_time_s"] = time.perf_counter() - start
    results["round_overhead_s"] = [r["overhead_s"] for r in tracker.rounds]
    results["run_dir"] = str(run.path)
    run.write_results(results)
    print(summary_table(results), flush=True)
    if results["failures"]:
        print(f"failures: {results['failures']}", flush=True)
    print(f"run directory: {run.path}", flush=True)
    return results
