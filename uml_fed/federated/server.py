"""The server side of Algorithm 3, in the shape of Flower's quickstart round loop::

    federation = handshake(grid, cfg, expected)          # who is who; one label space
    for r in rounds:
        replies = train_round(...)                       # push, pull; wait for a lost institution
        backbone = aggregator.aggregate(r, replies)      # Flower's strategy on the backbone
        save_state(r, ...)                               # resume after a crash
    calibrate round                                      # select, Algorithm 2, evaluate, per institution
    cross-site rounds (train.cross_site)                 # models to their modality's peers, accuracies back

``fed.min_nodes=0`` (default): every institution takes part in every round.  An institution whose
node is lost (killed, unreachable, no reply) is waited for up to ``fed.rejoin_timeout`` seconds and
its round is redone from its saved private state -- the run ends with the same numbers as an
uninterrupted one; a client that raises ends the run at once.  ``fed.min_nodes=N``: a round goes on
with at least N replies; who missed which round is recorded.  A failed run still writes
``results.json`` (``status: failed``, the institution, the reason) and raises :class:`RunFailed`.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import OrderedDict
from logging import INFO, WARNING
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.common.logger import log
from flwr.serverapp import Grid
from omegaconf import OmegaConf

from ..config import Config, num_rounds
from ..model import Backbone, backbone_state
from ..results import RunDir, cross_site_table, gain_table, summary_table
from ..train import full_batches, seed_everything
from . import records
from .federation import Federation, RunFailed, exchange, handshake, one_line
from .progress import RoundLog, tensorboard_writer
from .server_state import ServerState
from .strategy import Aggregator, strategy_options, trims_nothing

LOST = (ErrorCode.NODE_UNAVAILABLE, ErrorCode.REPLY_MESSAGE_UNAVAILABLE, ErrorCode.CLIENT_APP_CRASHED)


def run_key(cfg: Config) -> str:
    """The run's identity for the institutions' private state: output directory + config (resume aside)."""
    text = OmegaConf.to_yaml(OmegaConf.structured(cfg)).replace("resume: true", "resume: false")
    return hashlib.sha1(f"{cfg.output_dir}\n{text}".encode()).hexdigest()[:12]


def initial_backbone(cfg: Config, num_classes: int) -> ArrayRecord:
    """The seeded initial shared backbone theta^0 (no projection: those stay with the institutions)."""
    seed_everything(cfg.seed)
    return records.to_record(
        OrderedDict((k, v.clone()) for k, v in backbone_state(Backbone(num_classes, cfg.model)).items())
    )


def choose(cfg: Config, institutions: list[str], server_round: int) -> list[str]:
    """The institutions of a round: all, or a seeded sample of ``fed.fraction_train`` of them."""
    k = max(1, round(cfg.fed.fraction_train * len(institutions)))
    if k >= len(institutions):
        return list(institutions)
    return sorted(random.Random(f"{cfg.seed}/{server_round}").sample(sorted(institutions), k))


def train_round(
    grid: Grid,
    cfg: Config,
    federation: Federation,
    aggregator: Aggregator,
    server_round: int,
    backbone: ArrayRecord,
    config: ConfigRecord,
    asked: list[str],
) -> dict[str, Message]:
    """Each asked institution's final reply to round ``server_round`` (see the module docstring)."""
    final: dict[str, Message] = {}
    deadline = time.monotonic() + cfg.fed.rejoin_timeout
    while True:
        todo = [i for i in asked if i not in final or final[i].has_error()]
        targets = federation.nodes_of(todo)
        if targets:
            messages = aggregator.messages(grid, server_round, backbone, config, targets)
            for msg in exchange(grid, messages, cfg.fed.round_timeout, federation.sent_to, cfg.fed.poll_interval):
                final[federation.who(msg)] = msg
        failed = {i: m for i, m in final.items() if m.has_error() and i in asked}
        lost = [i for i in asked if i not in final or (i in failed and failed[i].error.code in LOST)]
        broken = {i: m.error.reason for i, m in failed.items() if m.error.code not in LOST}
        if cfg.fed.min_nodes:
            if len(asked) - len(lost) - len(broken) < cfg.fed.min_nodes:
                raise RunFailed(
                    sorted(set(lost) | set(broken))[0],
                    f"round {server_round}: fewer than fed.min_nodes={cfg.fed.min_nodes} replies",
                )
            return final
        if broken:
            who = sorted(broken)[0]
            raise RunFailed(who, f"round {server_round}: {one_line(broken[who])}")
        if not lost:
            return final
        if time.monotonic() > deadline:
            raise RunFailed(
                lost[0],
                f"round {server_round}: lost and not back within fed.rejoin_timeout={cfg.fed.rejoin_timeout:.0f} s",
            )
        log(INFO, "round %d: waiting for %s to come back", server_round, ", ".join(lost))
        time.sleep(cfg.fed.poll_interval * 10)
        federation.refresh(cfg.fed.handshake_timeout)


def run_federated(grid: Grid, cfg: Config, expected: list[str]) -> dict[str, Any]:
    """Algorithm 3 + the final calibration round; writes the run directory; returns the results."""
    run = RunDir(cfg.output_dir)
    try:
        return _run(grid, cfg, expected, run)
    except RunFailed as e:
        results = {
            "mode": "federated",
            "status": "failed",
            "institution": e.institution,
            "reason": e.reason,
            "run_dir": str(run.path),
        }
        run.write_results(results)
        print(f"run failed: institution {e.institution}: {e.reason}", flush=True)
        raise


def _run(grid: Grid, cfg: Config, expected: list[str], run: RunDir) -> dict[str, Any]:
    start = time.perf_counter()
    state_store = ServerState(run)
    rounds = num_rounds(cfg)
    federation, classes = handshake(grid, cfg, expected)
    log(INFO, "institutions: %s", federation.describe_all())
    aggregator = Aggregator(cfg, federation.modality_of)
    progress = RoundLog(rounds, run, tensorboard_writer(cfg.fed.tensorboard, run))
    backbone = initial_backbone(cfg, len(classes))
    first = 1
    if cfg.fed.resume:
        saved = state_store.load(cfg)
        backbone = records.to_record(saved["backbone"])
        progress.rounds = list(saved["rounds"])
        aggregator.load_state_dict(saved["aggregator"])
        first = int(saved["round"]) + 1
        log(INFO, "resuming after round %d of %d from %s", first - 1, rounds, state_store.path)
    else:
        run.write_config(cfg)
    key = run_key(cfg)
    payload = sum(a.numpy().nbytes for a in backbone.values())
    log(INFO, "R=%d rounds x L=%d local epochs; backbone payload %.2f MB", rounds, cfg.fed.local_epochs, payload / 1e6)
    aggregator.summary()
    if note := trims_nothing(cfg, len(choose(cfg, expected, first))):
        log(WARNING, "%s", note)

    largest = max(full_batches(int(i["num-train"]), cfg.train.batch_size) for i in federation.info.values())
    tic = time.perf_counter()
    for server_round in range(first, rounds + 1):
        config = ConfigRecord(
            {"server-round": server_round, "run-key": key, "output-dir": cfg.output_dir, "largest-batches": largest}
        )
        asked = choose(cfg, expected, server_round)
        t0 = time.perf_counter()
        replies = train_round(grid, cfg, federation, aggregator, server_round, backbone, config, asked)
        progress.record(server_round, asked, replies, time.perf_counter() - t0)
        aggregated = aggregator.aggregate(server_round, list(replies.values()), federation.who)
        if aggregated is not None:
            backbone = aggregated
        state_store.save(server_round, backbone, progress.rounds, aggregator.state_dict(), cfg)
    train_s = time.perf_counter() - tic

    tic = time.perf_counter()
    federation.refresh(cfg.fed.handshake_timeout)
    config = ConfigRecord(
        {"server-round": rounds, "run-key": key, "output-dir": cfg.output_dir, "largest-batches": largest}
    )
    content = RecordDict({records.BACKBONE: backbone, records.CONFIG: config})
    # the own baselines train R x L epochs inside this round: as long as the R training rounds
    timeout = cfg.fed.round_timeout * (rounds + 1 if cfg.fed.local_baseline else 1)
    replies = federation.query(records.CALIBRATE, content, expected, timeout)
    results: dict[str, Any] = {
        "mode": "federated",
        "status": "finished",
        "seed": cfg.seed,
        "classes": classes,
        "strategy": cfg.fed.strategy,
        "strategy_options": strategy_options(cfg),
        "steps_per_epoch": cfg.train.steps_per_epoch,
        "weighting": cfg.fed.weighting,
        "projection_sharing": cfg.fed.projection_sharing,
        "rounds": rounds,
        "local_epochs": cfg.fed.local_epochs,
        "resumed_after_round": first - 1 if cfg.fed.resume else None,
        "backbone_bytes_per_round": payload,
        "modalities": {},
        "failures": [
            {"round": r["round"], "failed": r["failed"], "missing": r["missing"]}
            for r in progress.rounds
            if r["failed"] or r["missing"]
        ],
    }
    for who in expected:
        msg = answered(replies, who, "calibrate", results)
        if msg is None:
            continue
        steps = next(
            (r["clients"][who].get("steps-per-epoch") for r in reversed(progress.rounds) if who in r["clients"]), None
        )
        if not msg.content[records.METRICS]["model-saved"]:
            results.setdefault("unsaved", {})[who] = "model.pt could not be written on its own disk (see its log)"
        metrics = dict(msg.content[records.METRICS])
        results["modalities"][who] = {"fed": {**calibrate_entry(metrics), "steps_per_epoch": steps}}
        if "own-test-acc" in metrics:
            results["modalities"][who]["own"] = own_entry(metrics, steps)
    results["train_s"] = train_s
    results["calibrate_round_s"] = time.perf_counter() - tic
    if cfg.train.cross_site:
        tic = time.perf_counter()
        results["cross_site"] = {"fed": cross_site_round(federation, cfg, config, list(results["modalities"]), results)}
        results["cross_site_round_s"] = time.perf_counter() - tic
    results["wall_time_s"] = time.perf_counter() - start
    results["round_overhead_s"] = [r["overhead_s"] for r in progress.rounds]
    results["run_dir"] = str(run.path)
    run.write_results(results)
    print(summary_table(results), flush=True)
    if cfg.fed.local_baseline:
        print(gain_table(results), flush=True)
    if "cross_site" in results:
        print(cross_site_table(results), flush=True)
    if results["failures"]:
        print(f"failures: {results['failures']}", flush=True)
    print(f"run directory: {run.path}", flush=True)
    return results


def cross_site_round(
    federation: Federation, cfg: Config, config: ConfigRecord, institutions: list[str], results: dict[str, Any]
) -> dict[str, dict[str, float]]:
    """``train.cross_site``: every calibrated institution shares its reported model; each modality's
    models go to each institution of that modality, which replies with their test accuracies on its
    own split.  Returns ``{model's institution: {test site: accuracy}}``; failures go to ``results``."""
    timeout = cfg.fed.round_timeout
    shared = federation.query(records.SHARE, RecordDict({records.CONFIG: config}), institutions, timeout)
    models: dict[str, dict[str, RecordDict]] = {}
    modality = federation.modality_of
    for who in institutions:
        if (msg := answered(shared, who, "share", results)) is not None:
            models.setdefault(modality[who], {})[who] = msg.content
    matrix: dict[str, dict[str, float]] = {owner: {} for group in models.values() for owner in group}
    for sensor, group in models.items():
        content = RecordDict({records.CONFIG: config})
        for owner, reply in group.items():
            content[f"{records.MODEL}:{owner}"] = reply[records.MODEL]
            content[f"{records.INFO}:{owner}"] = reply[records.INFO]
        sites = [i for i in institutions if modality[i] == sensor]
        evaluated = federation.query(records.CROSS_SITE, content, sites, timeout)
        for site in sites:
            if (msg := answered(evaluated, site, "cross-site", results)) is not None:
                accs = dict(msg.content[records.METRICS])
                for owner in group:
                    matrix[owner][site] = float(accs[f"acc:{owner}"])
    return matrix


def answered(replies: dict[str, Message], who: str, stage: str, results: dict[str, Any]) -> Message | None:
    """``who``'s reply, or None with its failure (an error, or no reply) recorded in ``results``."""
    msg = replies.get(who)
    if msg is None or msg.has_error():
        reason = str(msg.error.reason) if msg is not None else "no reply"
        results["failures"].append({"round": stage, "failed": {who: reason}, "missing": []})
        return None
    return msg


def own_entry(m: dict[str, Any], steps: int | None) -> dict[str, Any]:
    """The institution's own unimodal baseline (``fed.local_baseline``), evaluated as the unimodal arm is."""
    reported = "running_stats" if m["own-tracked-bn"] else "calibrated"
    return {
        "bn": "tracked" if reported == "running_stats" else "static",
        "reported": reported,
        reported: {"val_acc": m["own-val-acc"], "test_acc": m["own-test-acc"]},
        "train_s": m["own-time-s"],
        "steps_per_epoch": steps,
    }


def calibrate_entry(m: dict[str, Any]) -> dict[str, Any]:
    """A calibrate reply's metrics in the results schema (see :mod:`uml_fed.evaluation`)."""
    trained, reported = ("running_stats", "running_stats") if m["tracked-bn"] else ("test_batch_stats", "calibrated")
    entry = {
        "bn": "tracked" if m["tracked-bn"] else "static",
        "reported": reported,
        "calibrated": {"val_acc": m["cal-val-acc"], "test_acc": m["cal-test-acc"]},
        trained: {"val_acc": m["as-trained-val-acc"], "test_acc": m["as-trained-test-acc"]},
        "selected_round": int(m["selected-round"]),
        "calibration_s": m["calibration-time-s"],
        "personalise_s": m["personalise-time-s"],
        "compute": {
            "precision": "bf16" if m["bf16"] else "fp32",
            "channels_last": bool(m["channels-last"]),
            "threads": int(m["threads"]),
        },
        "calibrate_and_evaluate_s": m["calibrate-and-evaluate-time-s"],
    }
    entry.update(val_acc=entry[reported]["val_acc"], test_acc=entry[reported]["test_acc"])
    return entry
