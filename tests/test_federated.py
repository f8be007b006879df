"""Federated UML on Flower: handlers called directly, aggregation, what leaves a client."""

from __future__ import annotations

import shutil
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_overrides
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

import client_app
from uml_fed.config import STRATEGY_NAMES, from_run_config
from uml_fed.federated import records
from uml_fed.federated.federation import Federation, RunFailed
from uml_fed.federated.server import initial_backbone
from uml_fed.federated.strategy import STRATEGIES, Aggregator
from uml_fed.model import UMLModel, backbone_state

TINY_RUN = {"overrides": " ".join(tiny_overrides()), "local-epochs": 2}
RUN_KEY = "run-a"


def _context(pid: int, tmp_path: Path, **run) -> Context:
    run_config = {**TINY_RUN, "output-dir": str(tmp_path), **run}
    return Context(
        run_id=1,
        node_id=100 + pid,
        node_config={"partition-id": pid, "num-partitions": 2},
        state=RecordDict(),
        run_config=run_config,
    )


def _msg(kind: str, content: RecordDict, dst: int) -> Message:
    return Message(content=content, dst_node_id=dst, message_type=kind)


def _backbone_keys(cfg) -> set[str]:
    return set(backbone_state(UMLModel({"x": 1}, 6, cfg.model)))


def _config(tmp_path: Path, server_round: int, run_key: str = RUN_KEY) -> ConfigRecord:
    return ConfigRecord({"server-round": server_round, "run-key": run_key, "output-dir": str(tmp_path)})


def _train_content(cfg, tmp_path: Path, server_round: int, arrays: ArrayRecord | None = None, **kw) -> RecordDict:
    arrays = arrays if arrays is not None else initial_backbone(cfg, 6)
    return records.train_content(arrays, _config(tmp_path, server_round, **kw))


def _store(tmp_path: Path, institution: str, run_key: str = RUN_KEY) -> Path:
    return tmp_path / "clients" / institution / run_key


def test_train_handler_replies_with_backbone_only_and_keeps_projection_private(tmp_path):
    cfg = from_run_config({**TINY_RUN, "output-dir": str(tmp_path)})
    reply = client_app.train(_msg("train", _train_content(cfg, tmp_path, 1), 100), _context(0, tmp_path))
    content = reply.content
    assert list(content.array_records) == ["arrays"] and list(content.metric_records) == ["metrics"]
    assert not content.config_records
    assert set(content["arrays"].keys()) == _backbone_keys(cfg)
    metrics = dict(content["metrics"])
    assert metrics["num-examples"] == 6 * 24 and metrics["uniform-weight"] == 1 and metrics["modality-weight"] == 1
    assert all(isinstance(v, (int, float)) for v in metrics.values())
    # private state: on the node's disk, in a folder of this run, never in the reply
    saved = torch.load(_store(tmp_path, "s1") / "round_1.pt", weights_only=False)
    private = set(saved["private"])
    assert private and not any(k.startswith("backbone.") for k in private)  # static BN: no backbone buffers
    assert saved["optimizer"]["state"] and saved["selection"]["after"] == cfg.train.select_after
    projection = torch.load(_store(tmp_path, "s1") / "projection.pt", weights_only=False)
    assert {f"projection.{k}" for k in projection["projection"]} == private
    # the second round starts from the saved projection and keeps training it
    client_app.train(_msg("train", _train_content(cfg, tmp_path, 2, content["arrays"]), 100), _context(0, tmp_path))
    after = torch.load(_store(tmp_path, "s1") / "round_2.pt", weights_only=False)["private"]
    assert any(not torch.equal(saved["private"][k], after[k]) for k in private)


def test_a_run_never_reads_another_runs_private_state(tmp_path):
    cfg = from_run_config({**TINY_RUN, "output-dir": str(tmp_path)})
    first = client_app.train(
        _msg("train", _train_content(cfg, tmp_path, 1, run_key="run-a"), 100), _context(0, tmp_path)
    )
    # another run (other key) at round 2 finds nothing of run-a: it starts from the seeded projection,
    # exactly like a fresh node of its own run would
    other = client_app.train(
        _msg("train", _train_content(cfg, tmp_path, 2, first.content["arrays"], run_key="run-b"), 100),
        _context(0, tmp_path),
    )
    fresh = client_app.train(
        _msg("train", _train_content(cfg, tmp_path / "f", 2, first.content["arrays"], run_key="run-b"), 100),
        _context(0, tmp_path / "f"),
    )
    for k in other.content["arrays"].keys():
        np.testing.assert_array_equal(other.content["arrays"][k].numpy(), fresh.content["arrays"][k].numpy())
    assert sorted(p.name for p in (tmp_path / "clients" / "s1").iterdir()) == ["run-a", "run-b"]


def test_fedprox_term_changes_the_local_update(tmp_path):
    cfg = from_run_config({**TINY_RUN, "output-dir": str(tmp_path)})
    start = initial_backbone(cfg, 6)

    def local(mu: float) -> dict[str, np.ndarray]:
        run = {"strategy": "fedprox", "overrides": f"{TINY_RUN['overrides']} fed.proximal_mu={mu}"} if mu else {}
        reply = client_app.train(
            _msg("train", _train_content(cfg, tmp_path / f"mu{mu}", 1, start), 100),
            _context(0, tmp_path / f"mu{mu}", **run),
        )
        return {k: v.numpy() for k, v in reply.content["arrays"].items()}

    free, prox = local(0.0), local(10.0)
    ref = {k: v.numpy() for k, v in start.items()}
    dist = lambda s: sum(float(((s[k] - ref[k]) ** 2).sum()) for k in ref)  # noqa: E731
    assert dist(prox) < dist(free)


def test_calibrate_handler_evaluates_saves_and_replies_metrics_only(tmp_path):
    cfg = from_run_config({**TINY_RUN, "output-dir": str(tmp_path)})
    ctx = _context(1, tmp_path)
    trained = client_app.train(_msg("train", _train_content(cfg, tmp_path, 1), 101), ctx).content["arrays"]
    content = RecordDict({"arrays": trained, "config": _config(tmp_path, 1)})
    reply = client_app.calibrate(_msg("query.calibrate", content, 101), ctx)
    assert not reply.content.array_records and list(reply.content.metric_records) == ["metrics"]
    m = dict(reply.content["metrics"])
    for key in ("cal-test-acc", "as-trained-test-acc", "cal-val-acc", "as-trained-val-acc"):
        assert 0.0 <= m[key] <= 1.0
    assert m["tracked-bn"] == 0
    from uml_fed.results import load_checkpoint

    model, meta = load_checkpoint(_store(tmp_path, "s2") / "model.pt")
    assert meta["modality"] == "s2" and meta["calibrated"] and len(meta["bands"]) == 12


def test_describe_handler_and_unknown_institution_in_node_config(tmp_path):
    ctx = _context(0, tmp_path)
    info = client_app.describe(_msg("query.describe", RecordDict({"config": ConfigRecord({})}), 100), ctx)
    assert info.content["info"]["institution"] == "s1" and info.content["info"]["modality"] == "s1"
    assert len(info.content["info"]["classes"]) == 6 and "error" not in info.content["info"]
    bad = Context(
        run_id=1,
        node_id=5,
        node_config={"institution": "s7"},
        state=RecordDict(),
        run_config={**TINY_RUN, "output-dir": str(tmp_path)},
    )
    with pytest.raises(ValueError, match="institution='s7' is not an institution of this run"):
        client_app.describe(_msg("query.describe", RecordDict({"config": ConfigRecord({})}), 5), bad)


def test_a_deployed_node_reports_errors_without_their_local_details(tmp_path):
    """error_detail=auto: a deployed node (node config `institution`) sends the error type and a code only."""
    secret = tmp_path / "secret_tile_T33UUP_2017"
    overrides = f"{TINY_RUN['overrides']} data=eurosat_s1_rgb data.root={secret}"
    ctx = Context(
        run_id=1,
        node_id=5,
        node_config={"institution": "s1"},
        state=RecordDict(),
        run_config={**TINY_RUN, "overrides": overrides},
    )
    info = client_app.describe(_msg("query.describe", RecordDict({"config": ConfigRecord({})}), 5), ctx)
    error = info.content["info"]["error"]
    assert error.startswith(("MissingDataError (code", "DataError (code")) and str(tmp_path) not in error
    full = Context(
        run_id=1,
        node_id=5,
        node_config={"institution": "s1"},
        state=RecordDict(),
        run_config={**ctx.run_config, "overrides": overrides + " fed.error_detail=full"},
    )
    info = client_app.describe(_msg("query.describe", RecordDict({"config": ConfigRecord({})}), 5), full)
    assert str(secret) in info.content["info"]["error"]


def _reply(arrays: dict[str, np.ndarray], n: int, src: int, modality_weight: float = 1.0, projection=None) -> Message:
    request = Message(content=RecordDict(), dst_node_id=src, message_type="train")
    metrics = MetricRecord(
        {"num-examples": n, "uniform-weight": 1, "modality-weight": modality_weight, "train-time-s": 0.1}
    )
    proj = ArrayRecord(OrderedDict((k, torch.from_numpy(v)) for k, v in projection.items())) if projection else None
    content = records.train_reply(
        ArrayRecord(OrderedDict((k, torch.from_numpy(v)) for k, v in arrays.items())), metrics, proj
    )
    return Message(content, reply_to=request)


def _shapes(cfg):
    return {k: tuple(v.shape) for k, v in initial_backbone(cfg, 6).to_torch_state_dict().items()}


def test_every_configured_strategy_exists():
    assert set(STRATEGIES) == set(STRATEGY_NAMES)


class Nodes:
    """The nodes a strategy's configure_train may pick from."""

    def __init__(self, ids):
        self.ids = list(ids)

    def get_node_ids(self):
        return list(self.ids)


def expected_rounds(strategy: str, theta: dict, rounds: list[list[dict]], weights: list[float], o: dict) -> list[dict]:
    """Each round's new backbone by the strategy's formula, written out in numpy."""
    out, m, v, mom = [], None, None, None
    w = np.asarray(weights) / np.sum(weights)
    for r, replies in enumerate(rounds, start=1):
        stack = {k: np.stack([rep[k] for rep in replies]) for k in theta}
        avg = {k: np.tensordot(w, stack[k], axes=1) for k in theta}
        if strategy in ("fedavg", "fedprox"):
            new = avg
        elif strategy == "fedavgm":
            pg = {k: theta[k] - avg[k] for k in theta}
            mom = pg if mom is None else {k: o["server_momentum"] * mom[k] + pg[k] for k in theta}
            new = {k: theta[k] - o["server_lr"] * mom[k] for k in theta}
        elif strategy == "fedmedian":
            new = {k: np.median(stack[k], axis=0) for k in theta}
        elif strategy == "fedtrimmedavg":
            cut = int(o["trim_beta"] * len(replies))
            new = {k: np.sort(stack[k], axis=0)[cut : len(replies) - cut].mean(axis=0) for k in theta}
        else:  # FedOpt: delta, first moment, second moment, step
            b1, b2 = (0.0, 0.0) if strategy == "fedadagrad" else (o["beta_1"], o["beta_2"])
            d = {k: avg[k] - theta[k] for k in theta}
            m = {k: (1 - b1) * d[k] + (b1 * m[k] if m else 0) for k in theta}
            if strategy == "fedadam":
                v = {k: b2 * (v[k] if v else 0) + (1 - b2) * d[k] ** 2 for k in theta}
                eta = o["eta"] * np.sqrt(1 - b2 ** (r + 1)) / (1 - b1 ** (r + 1))
            elif strategy == "fedyogi":
                v0 = v or {k: np.zeros_like(d[k]) for k in theta}
                v = {k: v0[k] - (1 - b2) * d[k] ** 2 * np.sign(v0[k] - d[k] ** 2) for k in theta}
                eta = o["eta"]
            else:
                v = {k: (v[k] if v else 0) + d[k] ** 2 for k in theta}
                eta = o["eta"]
            new = {k: theta[k] + eta * m[k] / (np.sqrt(v[k]) + o["tau"]) for k in theta}
        out.append(new)
        theta = new
    return out


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_each_strategy_aggregates_two_rounds_as_its_formula_says(strategy, tmp_path):
    """Five institutions, num_examples weights, two rounds through configure_train + aggregate_train:
    the backbone after each round equals the strategy's formula computed by hand."""
    weighting = "uniform" if strategy in ("fedmedian", "fedtrimmedavg") else "num_examples"
    extra = "fed.proximal_mu=0.1" if strategy == "fedprox" else ""
    cfg = from_run_config(
        {**TINY_RUN, "strategy": strategy, "weighting": weighting, "overrides": f"{TINY_RUN['overrides']} {extra}"}
    )
    options = {
        k: getattr(cfg.fed, k) for k in ("server_lr", "server_momentum", "eta", "tau", "beta_1", "beta_2", "trim_beta")
    }
    rng = np.random.default_rng(0)
    shapes = {k: s for k, s in _shapes(cfg).items() if k.endswith(("fc.weight", "fc.bias"))}
    theta0 = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    sizes = [10, 20, 30, 40, 50]
    names = {i: f"inst{i}" for i in range(1, 6)}
    agg = Aggregator(cfg, {n: "x" for n in names.values()})
    rounds, theta = [], ArrayRecord(OrderedDict((k, torch.from_numpy(v)) for k, v in theta0.items()))
    got = []
    for r in (1, 2):
        sent = agg.messages(Nodes(names), r, theta, _config(tmp_path, r), names)
        assert sorted(m.metadata.dst_node_id for m in sent) == list(names)
        current = {k: v.numpy() for k, v in theta.to_torch_state_dict().items()}
        for m in sent:  # every institution receives the current backbone
            assert all(np.array_equal(m.content["arrays"][k].numpy(), current[k]) for k in shapes)
        replies = [
            {k: (current[k] + 0.1 * rng.standard_normal(s)).astype(np.float32) for k, s in shapes.items()}
            for _ in names
        ]
        rounds.append(replies)
        theta = agg.aggregate(
            r, [_reply(rep, n, i) for rep, n, i in zip(replies, sizes, names)], lambda m: names[m.metadata.src_node_id]
        )
        got.append({k: v.numpy() for k, v in theta.to_torch_state_dict().items()})
    weights = [1.0] * 5 if weighting == "uniform" else sizes
    for mine, want in zip(got, expected_rounds(strategy, theta0, rounds, weights, options)):
        for k in shapes:
            np.testing.assert_allclose(mine[k], want[k], rtol=1e-4, atol=1e-5)
    if strategy not in ("fedavg", "fedprox"):  # FedProx's term is the clients'; every other server differs
        fedavg = expected_rounds("fedavg", theta0, rounds, weights, options)
        assert not all(np.allclose(got[1][k], fedavg[1][k], atol=1e-5) for k in shapes)


@pytest.mark.parametrize("strategy", ["fedmedian", "fedtrimmedavg"])
def test_robust_aggregators_refuse_weights_they_cannot_honour(strategy):
    from uml_fed.config import ConfigError

    with pytest.raises(ConfigError, match=r"fed\.weighting='num_examples' is not honoured; set fed\.weighting=uniform"):
        from_run_config({**TINY_RUN, "strategy": strategy, "weighting": "num_examples"})


def test_a_robust_aggregator_says_when_it_is_the_plain_mean():
    from uml_fed.federated.strategy import trims_nothing

    assert "plain mean" in trims_nothing(from_run_config({**TINY_RUN, "strategy": "fedmedian"}), 2)
    assert trims_nothing(from_run_config({**TINY_RUN, "strategy": "fedmedian"}), 3) is None
    assert "plain mean" in trims_nothing(from_run_config({**TINY_RUN, "strategy": "fedtrimmedavg"}), 4)
    assert trims_nothing(from_run_config({**TINY_RUN, "strategy": "fedtrimmedavg"}), 5) is None


@pytest.mark.parametrize("weighting", ["uniform", "num_examples", "modality"])
def test_aggregation_uses_the_configured_weights(weighting):
    """Three institutions, two of them of modality s2: modality weighting gives s1 half of the weight."""
    cfg = from_run_config({**TINY_RUN, "weighting": weighting})
    rng = np.random.default_rng(0)
    shapes = _shapes(cfg)
    a, b, c = ({k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()} for _ in range(3))
    replies = [_reply(a, 100, 1, 1.0), _reply(b, 300, 2, 0.5), _reply(c, 100, 3, 0.5)]
    names = {1: "s1", 2: "s2_0", 3: "s2_1"}
    agg = Aggregator(cfg, {"s1": "s1", "s2_0": "s2", "s2_1": "s2"})
    got = agg.aggregate(1, replies, lambda m: names[m.metadata.src_node_id]).to_torch_state_dict()
    w = {"uniform": (1 / 3, 1 / 3, 1 / 3), "num_examples": (0.2, 0.6, 0.2), "modality": (0.5, 0.25, 0.25)}[weighting]
    for k in shapes:
        np.testing.assert_allclose(got[k].numpy(), w[0] * a[k] + w[1] * b[k] + w[2] * c[k], rtol=1e-5, atol=1e-6)


def test_projections_are_shared_within_a_modality_only(tmp_path):
    """projection_sharing=modality: institutions of one modality average their projections; each
    institution receives its own modality's average and never another modality's."""
    cfg = from_run_config({**TINY_RUN, "overrides": TINY_RUN["overrides"] + " fed.projection_sharing=modality"})
    shapes = _shapes(cfg)
    zero = {k: np.zeros(s, np.float32) for k, s in shapes.items()}
    p_s1 = {"stem.0.weight": np.full((8, 2, 3, 3), 1.0, np.float32)}
    p_s2a = {"stem.0.weight": np.full((8, 12, 3, 3), 2.0, np.float32)}
    p_s2b = {"stem.0.weight": np.full((8, 12, 3, 3), 4.0, np.float32)}
    names = {1: "s1", 2: "s2_0", 3: "s2_1"}
    agg = Aggregator(cfg, {"s1": "s1", "s2_0": "s2", "s2_1": "s2"})
    replies = [
        _reply(zero, 10, 1, projection=p_s1),
        _reply(zero, 10, 2, projection=p_s2a),
        _reply(zero, 10, 3, projection=p_s2b),
    ]
    agg.aggregate(1, replies, lambda m: names[m.metadata.src_node_id])
    sent = {
        m.metadata.dst_node_id: m
        for m in agg.messages(Nodes(names), 2, initial_backbone(cfg, 6), _config(tmp_path, 2), names)
    }
    assert set(sent) == {1, 2, 3}
    np.testing.assert_allclose(sent[1].content["projection"]["stem.0.weight"].numpy(), 1.0)
    for node in (2, 3):
        got = sent[node].content["projection"]["stem.0.weight"].numpy()
        assert got.shape == (8, 12, 3, 3) and np.allclose(got, 3.0)  # the mean of the two s2 institutions only
    assert sent[1].content is not sent[2].content  # no shared record between institutions
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(sent[2].content["projection"]["stem.0.weight"].numpy()[:, :2], 1.0)


def test_aggregation_ignores_failed_replies():
    from flwr.app import Error

    cfg = from_run_config({**TINY_RUN})
    a = {k: np.ones(s, np.float32) for k, s in _shapes(cfg).items()}
    request = Message(content=RecordDict(), dst_node_id=2, message_type="train")
    failed = Message(Error(code=2, reason="CUDA out of memory"), reply_to=request)
    names = {1: "s1", 2: "s2"}
    agg = Aggregator(cfg, {"s1": "s1", "s2": "s2"})
    got = agg.aggregate(4, [_reply(a, 10, 1), failed], lambda m: names.get(m.metadata.src_node_id, "s2"))
    np.testing.assert_allclose(got.to_torch_state_dict()["backbone.fc.bias"].numpy(), 1.0)


class FakeGrid:
    """Nodes that answer describe at once with the given class lists."""

    def __init__(self, classes: dict[int, list[str]]):
        self.classes = classes

    def get_node_ids(self):
        return list(self.classes)

    def push_messages(self, messages):
        self.replies = []
        for m in messages:
            node = m.metadata.dst_node_id
            info = ConfigRecord({"institution": f"inst{node}", "modality": "x", "classes": self.classes[node]})
            self.replies.append(Message(RecordDict({"info": info}), reply_to=m))
        return [r.metadata.reply_to_message_id for r in self.replies]

    def pull_messages(self, message_ids):
        return [r for r in self.replies if r.metadata.reply_to_message_id in set(message_ids)]


def test_mismatched_class_lists_are_refused_naming_both():
    cfg = from_run_config({**TINY_RUN})
    federation = Federation(FakeGrid({1: ["a", "b"], 2: ["a", "c"]}), cfg)
    with pytest.raises(RunFailed, match=r"institution inst2: its class list \['a', 'c'\] differs from 'inst1'"):
        federation.refresh(10)


def test_restarted_node_restores_its_private_state_from_disk(tmp_path):
    """Every message may reach a fresh process: round r+1 continues from the disk copy of round r."""
    cfg = from_run_config({**TINY_RUN})
    first = client_app.train(_msg("train", _train_content(cfg, tmp_path / "x", 1), 100), _context(0, tmp_path / "x"))
    shutil.copytree(tmp_path / "x", tmp_path / "y")
    kept = client_app.train(
        _msg("train", _train_content(cfg, tmp_path / "x", 2, first.content["arrays"]), 100), _context(0, tmp_path / "x")
    )
    restarted = client_app.train(
        _msg("train", _train_content(cfg, tmp_path / "y", 2, first.content["arrays"]), 100), _context(0, tmp_path / "y")
    )
    for k in kept.content["arrays"].keys():
        np.testing.assert_array_equal(kept.content["arrays"][k].numpy(), restarted.content["arrays"][k].numpy())
    assert sorted(p.name for p in _store(tmp_path / "y", "s1").glob("round_*.pt")) == ["round_1.pt", "round_2.pt"]


def test_tracked_bn_backbone_statistics_stay_local_and_are_used(tmp_path):
    """Ordinary BN (the ablation): each institution keeps the backbone's running statistics in its
    private state across rounds (a fresh client per message must not fall back to 0/1), they never
    go on the wire, and the final model is evaluated with them."""
    from uml_fed.results import load_checkpoint
    from uml_fed.train import evaluate, split_tensors

    run = {
        "overrides": TINY_RUN["overrides"] + " model.track_running_stats=true train.precision=fp32"
    }  # compared in fp32
    cfg = from_run_config({**TINY_RUN, **run, "output-dir": str(tmp_path)})
    ctx = _context(0, tmp_path, **run)
    r1 = client_app.train(_msg("train", _train_content(cfg, tmp_path, 1), 100), ctx)
    assert set(r1.content["arrays"].keys()) == _backbone_keys(cfg)  # parameters only on the wire
    private = torch.load(_store(tmp_path, "s1") / "round_1.pt", weights_only=False)["private"]
    means = {k: v for k, v in private.items() if k.startswith("backbone.") and k.endswith("running_mean")}
    assert means and all(v.abs().sum() > 0 for v in means.values())  # trained statistics, not the initial zeros
    r2 = client_app.train(_msg("train", _train_content(cfg, tmp_path, 2, r1.content["arrays"]), 100), ctx)
    assert set(r2.content["arrays"].keys()) == _backbone_keys(cfg)
    round2 = torch.load(_store(tmp_path, "s1") / "round_2.pt", weights_only=False)["private"]
    assert any(not torch.equal(round2[k], means[k]) for k in means)  # restored, then updated, not reset
    content = RecordDict({"arrays": r2.content["arrays"], "config": _config(tmp_path, 2)})
    m = dict(client_app.calibrate(_msg("query.calibrate", content, 100), ctx).content["metrics"])
    assert m["tracked-bn"] == 1
    model, meta = load_checkpoint(_store(tmp_path, "s1") / "model.pt")  # the reported model
    assert not meta["calibrated"]
    running = [b for n, b in model.backbone.named_buffers() if n.endswith("running_var")]
    assert running and all(not torch.allclose(v, torch.ones_like(v)) for v in running)
    from uml_fed.config import load_config
    from uml_fed.data import load_institutions

    inst = load_institutions(load_config(tiny_overrides()), only="s1")[0]
    x, y = split_tensors(inst, "test")
    assert evaluate(model, x, y, torch.device("cpu"))["acc"] == pytest.approx(m["as-trained-test-acc"])
