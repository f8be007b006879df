"""Federated UML on Flower: handlers called directly, aggregation, what leaves a client, simulation."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_overrides
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

import client_app
from uml_fed.config import from_run_config
from uml_fed.federated.client import STATE_PRIVATE
from uml_fed.federated.server import RoundTracker, build_strategy, initial_backbone
from uml_fed.model import UMLModel, backbone_state

TINY_RUN = {"overrides": " ".join(tiny_overrides()), "local-epochs": 2}


def _context(pid: int, tmp_path: Path, **run) -> Context:
    run_config = {**TINY_RUN, "output-dir": str(tmp_path), **run}
    return Context(run_id=1, node_id=100 + pid, node_config={"partition-id": pid, "num-partitions": 2},
                   state=RecordDict(), run_config=run_config)


def _msg(kind: str, content: RecordDict, dst: int) -> Message:
    return Message(content=content, dst_node_id=dst, message_type=kind)


def _backbone_keys(cfg) -> set[str]:
    return set(backbone_state(UMLModel({"x": 1}, 6, cfg.model)))


def _train_content(cfg, server_round: int, arrays: ArrayRecord | None = None) -> RecordDict:
    arrays = arrays if arrays is not None else initial_backbone(cfg, 6)
    config = ConfigRecord({"server-round": server_round, "local-epochs": 2, "lr": 1e-3, "lr-step": 3, "lr-gamma": 0.1})
    return RecordDict({"arrays": arrays, "config": config})


def test_train_handler_replies_with_backbone_only_and_keeps_projection_private(tmp_path):
    cfg = from_run_config({**TINY_RUN, "output-dir": str(tmp_path)})
    ctx = _context(0, tmp_path)
    reply = client_app.train(_msg("train", _train_content(cfg, 1), 100), ctx)
    content = reply.content
    assert list(content.array_records) == ["arrays"] and list(content.metric_records) == ["metrics"]
    assert not content.config_records
    assert set(content["arrays"].keys()) == _backbone_keys(cfg)
    metrics = dict(content["metrics"])
    assert metrics["num-examples"] == 6 * 24 and metrics["uniform-weight"] == 1
    assert all(isinstance(v, (int, float)) for v in metrics.values())
    # private state: in context.state and on the node's disk, never in the reply
    assert STATE_PRIVATE in ctx.state
    proj_keys = set(ctx.state[STATE_PRIVATE].keys())
    assert proj_keys and not any(k.startswith("backbone.") for k in proj_keys)
    saved = torch.load(tmp_path / "clients" / "s1" / "projection.pt", weights_only=False)
    assert saved["round"] == 1 and {f"projection.{k}" for k in saved["projection"]} == proj_keys
    # the second round restores the same projection from context.state
    before = {k: v.numpy().copy() for k, v in ctx.state[STATE_PRIVATE].items()}
    client_app.train(_msg("train", _train_content(cfg, 2, content["arrays"]), 100), ctx)
    after = {k: v.numpy() for k, v in ctx.state[STATE_PRIVATE].items()}
    assert any(not np.array_equal(before[k], after[k]) for k in before)  # it kept training the same f_k


def test_fedprox_term_changes_the_local_update(tmp_path):
    cfg = from_run_config({**TINY_RUN, "output-dir": str(tmp_path)})
    start = initial_backbone(cfg, 6)

    def local(mu: float) -> dict[str, np.ndarray]:
        content = _train_content(cfg, 1, start)
        content["config"]["proximal-mu"] = mu
        reply = client_app.train(_msg("train", content, 100), _context(0, tmp_path / f"mu{mu}"))
        return {k: v.numpy() for k, v in reply.content["arrays"].items()}

    free, prox = local(0.0), local(10.0)
    ref = {k: v.numpy() for k, v in start.items()}
    dist = lambda s: sum(float(((s[k] - ref[k]) ** 2).sum()) for k in ref)  # noqa: E731
    assert dist(prox) < dist(free)


def test_calibrate_handler_evaluates_saves_and_replies_metrics_only(tmp_path):
    cfg = from_run_config({**TINY_RUN, "output-dir": str(tmp_path)})
    ctx = _context(1, tmp_path)
    trained = client_app.train(_msg("train", _train_content(cfg, 1), 101), ctx).content["arrays"]
    content = RecordDict({"arrays": trained, "config": ConfigRecord({"server-round": 1, "local-epochs": 2})})
    reply = client_app.calibrate(_msg("query.calibrate", content, 101), ctx)
    assert not reply.content.array_records and list(reply.content.metric_records) == ["metrics"]
    m = dict(reply.content["metrics"])
    for key in ("cal-test-acc", "as-trained-test-acc", "cal-val-acc", "as-trained-val-acc"):
        assert 0.0 <= m[key] <= 1.0
    assert m["tracked-bn"] == 0
    from uml_fed.results import load_checkpoint

    model, meta = load_checkpoint(tmp_path / "clients" / "s2" / "calibrated.pt")
    assert meta["modality"] == "s2" and meta["calibrated"] and len(meta["bands"]) == 12


def test_describe_handler_and_unknown_modality_in_node_config(tmp_path):
    ctx = _context(0, tmp_path)
    info = client_app.describe(_msg("query.describe", RecordDict({"config": ConfigRecord({})}), 100), ctx)
    assert info.content["info"]["modality"] == "s1" and len(info.content["info"]["classes"]) == 6
    bad = Context(run_id=1, node_id=5, node_config={"modality": "s7"}, state=RecordDict(),
                  run_config={**TINY_RUN, "output-dir": str(tmp_path)})
    with pytest.raises(ValueError, match="modality='s7' is not an institution of this run"):
        client_app.describe(_msg("query.describe", RecordDict({"config": ConfigRecord({})}), 5), bad)


def _reply(arrays: dict[str, np.ndarray], n: int, src: int) -> Message:
    request = Message(content=RecordDict(), dst_node_id=src, message_type="train")
    content = RecordDict({
        "arrays": ArrayRecord(OrderedDict((k, torch.from_numpy(v)) for k, v in arrays.items())),
        "metrics": MetricRecord({"num-examples": n, "uniform-weight": 1, "train-time-s": 0.1}),
    })
    return Message(content, reply_to=request)


@pytest.mark.parametrize("weighting", ["uniform", "num_examples"])
def test_strategy_aggregates_backbones_with_the_configured_weights(weighting, tmp_path):
    cfg = from_run_config({**TINY_RUN, "weighting": weighting})
    rng = np.random.default_rng(0)
    shapes = {k: tuple(v.shape) for k, v in initial_backbone(cfg, 6).to_torch_state_dict().items()}
    a = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    b = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    replies = [_reply(a, 100, 1), _reply(b, 300, 2)]
    tracker = RoundTracker({1: "s1", 2: "s2"})
    strategy = build_strategy(cfg, 2, tracker)
    agg, _ = strategy.aggregate_train(1, replies)
    wa, wb = (0.5, 0.5) if weighting == "uniform" else (0.25, 0.75)
    got = agg.to_torch_state_dict()
    for k in shapes:
        np.testing.assert_allclose(got[k].numpy(), wa * a[k] + wb * b[k], rtol=1e-5, atol=1e-6)
    assert tracker.rounds[0]["replied"] == ["s1", "s2"]


def test_strategy_tolerates_a_failed_client_and_records_it(tmp_path):
    from flwr.app import Error

    cfg = from_run_config({**TINY_RUN})
    shapes = {k: tuple(v.shape) for k, v in initial_backbone(cfg, 6).to_torch_state_dict().items()}
    a = {k: np.ones(s, np.float32) for k, s in shapes.items()}
    request = Message(content=RecordDict(), dst_node_id=2, message_type="train")
    failed = Message(Error(code=0, reason="CUDA out of memory"), reply_to=request)
    tracker = RoundTracker({1: "s1", 2: "s2"})
    strategy = build_strategy(cfg, 2, tracker)
    tracker.sent(4, [1, 2])
    agg, _ = strategy.aggregate_train(4, [_reply(a, 10, 1), failed])
    np.testing.assert_allclose(agg.to_torch_state_dict()["backbone.fc.bias"].numpy(), 1.0)
    assert tracker.rounds[0]["failed"] == {"s2": "CUDA out of memory"}
    tracker.sent(5, [1, 2])
    strategy.aggregate_train(5, [_reply(a, 10, 1)])  # s2 never answered (timed out)
    assert tracker.rounds[1]["missing"] == ["s2"] and tracker.rounds[1]["replied"] == ["s1"]


def test_mismatched_class_lists_are_refused_naming_both(tmp_path):
    from uml_fed.federated.server import InstitutionMismatchError, handshake

    class FakeGrid:
        """Two nodes that answer the handshake at once, with different class lists."""

        def push_messages(self, messages):
            self.replies = []
            for m, classes in zip(messages, (["a", "b"], ["a", "c"])):
                info = ConfigRecord({"modality": f"inst{m.metadata.dst_node_id}", "classes": classes})
                self.replies.append(Message(RecordDict({"info": info}), reply_to=m))
            return [r.metadata.reply_to_message_id for r in self.replies]

        def pull_messages(self, message_ids):
            return [r for r in self.replies if r.metadata.reply_to_message_id in set(message_ids)]

    with pytest.raises(InstitutionMismatchError, match=r"'inst1' and 'inst2' have different class lists"):
        handshake(FakeGrid(), [1, 2], ["inst1", "inst2"], 10)


def test_restarted_node_restores_its_private_state_from_disk(tmp_path):
    """A SuperNode restart empties context.state; round r+1 must continue from the disk copy of round r."""
    import shutil

    cfg = from_run_config({**TINY_RUN})
    first = client_app.train(_msg("train", _train_content(cfg, 1), 100), _context(0, tmp_path / "x"))
    shutil.copytree(tmp_path / "x", tmp_path / "y")
    round2 = _train_content(cfg, 2, first.content["arrays"])
    # node that kept its memory: same context object for rounds 1 and 2 (round 1 is seeded: same as "x")
    ctx = _context(0, tmp_path / "m")
    client_app.train(_msg("train", _train_content(cfg, 1), 100), ctx)
    kept = client_app.train(_msg("train", round2, 100), ctx)
    # node that restarted: empty context, private state only on disk (copied from round 1)
    restarted = client_app.train(_msg("train", round2, 100), _context(0, tmp_path / "y"))
    for k in kept.content["arrays"].keys():
        np.testing.assert_array_equal(kept.content["arrays"][k].numpy(), restarted.content["arrays"][k].numpy())
    files = sorted(p.name for p in (tmp_path / "y" / "clients" / "s1" / "private_state").iterdir())
    assert files == ["round_1.pt", "round_2.pt"]


def test_tracked_bn_backbone_statistics_stay_local_and_are_used(tmp_path):
    """Ordinary BN (the ablation): each institution keeps the backbone's running statistics in its
    private state across rounds (a fresh client per message must not fall back to 0/1), they never
    go on the wire, and the final model is evaluated with them."""
    from uml_fed.evaluation import split_tensors
    from uml_fed.federated.client import InstitutionClient, config_from_run_config, resolve_identity
    from uml_fed.train import evaluate

    run = {**TINY_RUN, "overrides": TINY_RUN["overrides"] + " model.track_running_stats=true"}
    cfg = from_run_config({**run, "output-dir": str(tmp_path)})
    ctx = _context(0, tmp_path, **run)
    r1 = client_app.train(_msg("train", _train_content(cfg, 1), 100), ctx)
    assert set(r1.content["arrays"].keys()) == _backbone_keys(cfg)  # parameters only on the wire
    private = ctx.state[STATE_PRIVATE]
    stats = {k: v.numpy().copy() for k, v in private.items() if k.startswith("backbone.") and "running_mean" in k}
    assert stats and all(np.abs(v).sum() > 0 for v in stats.values())  # trained statistics, not the initial zeros
    r2 = client_app.train(_msg("train", _train_content(cfg, 2, r1.content["arrays"]), 100), ctx)
    assert set(r2.content["arrays"].keys()) == _backbone_keys(cfg)
    # a client rebuilt from the node's state holds exactly those statistics, and they make the model work
    client = InstitutionClient(config_from_run_config(ctx.run_config),
                               resolve_identity(cfg, ctx.node_config, ctx.run_config), ctx.state)
    client._restore(2)
    bn = dict(client.model.backbone.named_buffers())
    for k, v in ctx.state[STATE_PRIVATE].items():
        if k.startswith("backbone."):
            np.testing.assert_array_equal(bn[k[len("backbone."):]].numpy(), v.numpy())
    content = RecordDict({"arrays": r2.content["arrays"], "config": ConfigRecord({"server-round": 2, "local-epochs": 2})})
    m = dict(client_app.calibrate(_msg("query.calibrate", content, 100), ctx).content["metrics"])
    assert m["tracked-bn"] == 1
    from uml_fed.results import load_checkpoint

    model, meta = load_checkpoint(tmp_path / "clients" / "s1" / "calibrated.pt")  # the reported model
    assert not meta["calibrated"]
    running = [b for n, b in model.backbone.named_buffers() if n.endswith("running_var")]
    assert running and all(not torch.allclose(v, torch.ones_like(v)) for v in running)
    x, y = split_tensors(client.inst, "test")
    assert evaluate(model, x, y, torch.device("cpu"))["acc"] == pytest.approx(m["as-trained-test-acc"])
