"""End to end: an in-process Flower simulation and the real `flwr run` CLI (marked slow; run in CI)."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import check_client_replies, tiny_overrides
from flwr.app import Context
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

import client_app as real_client
from uml_fed.config import from_run_config
from uml_fed.federated.runtime import server_run
from uml_fed.federated.server import run_federated


class RecordingGrid:
    """The real grid, with every reply (and, when asked, every message sent) kept for inspection.  Replies
    are kept as copies: Flower's FedMedian and FedTrimmedAvg pop the arrays out of the replies they
    aggregate."""

    def __init__(self, grid, store, sent=None):
        self._grid, self._store, self._sent = grid, store, sent

    def __getattr__(self, name):
        return getattr(self._grid, name)

    def push_messages(self, messages):
        messages = list(messages)
        if self._sent is not None:
            self._sent.extend(messages)
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids):
        replies = list(self._grid.pull_messages(message_ids))
        self._store.extend(copy.deepcopy(r) for r in replies)
        return replies


def _simulate(run_config, replies, fail=None, nodes=2, sent=None):
    """run_simulation with the real handlers; ``fail(msg, context)`` may raise to play a crashing client."""
    from flwr.simulation import run_simulation

    server = ServerApp()

    @server.main()
    def _main(grid, context):
        with server_run(run_config) as (cfg, names):  # as server_app.py (run_simulation passes no run config)
            run_federated(RecordingGrid(grid, replies, sent), cfg, names)

    client = ClientApp()

    def with_config(handler):
        def wrapped(msg, context):
            view = Context(
                run_id=context.run_id,
                node_id=context.node_id,
                node_config=context.node_config,
                state=context.state,
                run_config=run_config,
            )  # same state object: updates persist
            if fail is not None:
                fail(msg, view)
            return handler(msg, view)

        return wrapped

    client.train()(with_config(real_client.train))
    client.query("describe")(with_config(real_client.describe))
    client.query("calibrate")(with_config(real_client.calibrate))
    client.query("share")(with_config(real_client.share))
    client.query("cross_site")(with_config(real_client.cross_site))

    run_simulation(server, client, num_supernodes=nodes, backend_config={"client_resources": {"num_cpus": 1}})


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("sim")
    run_config = {"overrides": " ".join(tiny_overrides()), "local-epochs": 2, "output-dir": str(tmp_path / "run")}
    replies = []
    _simulate(run_config, replies)
    return tmp_path, run_config, replies


def _strip(x):
    """Results without timings (keys ending in _s), at any depth."""
    if isinstance(x, dict):
        return {k: _strip(v) for k, v in x.items() if not k.endswith("_s")}
    return x


@pytest.mark.slow
def test_same_seed_gives_identical_federated_results(simulated, tmp_path):
    first_dir, run_config, _ = simulated
    _simulate({**run_config, "output-dir": str(tmp_path / "again")}, [])
    first = json.loads((first_dir / "run" / "results.json").read_text())
    again = json.loads((tmp_path / "again" / "results.json").read_text())
    assert _strip(again["modalities"]) == _strip(first["modalities"])


@pytest.mark.slow
def test_in_process_simulation_runs_and_clients_send_only_backbone_and_scalars(simulated):
    tmp_path, run_config, replies = simulated

    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(results["modalities"]) == {"s1", "s2"} and results["rounds"] == 2 and not results["failures"]
    assert results["status"] == "finished" and results["modalities"]["s1"]["fed"]["reported"] == "calibrated"
    rounds = [json.loads(line) for line in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2] and all(sorted(r["replied"]) == ["s1", "s2"] for r in rounds)

    kinds = check_client_replies(replies, from_run_config(run_config).model)  # calibrate: metrics only
    assert kinds == {"query.describe": 2, "train": 4, "query.calibrate": 2}


@pytest.mark.slow
def test_each_institution_gets_its_own_baseline_and_gain_without_sending_it(simulated):
    """fed.local_baseline (on by default): every institution reports the accuracy of its own unimodal
    model trained alone with the same budget; no message carries that model, and the summary prints
    UML, own baseline and their difference."""
    from uml_fed.results import gain_table

    tmp_path, run_config, replies = simulated
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    for who in ("s1", "s2"):
        own = results["modalities"][who]["own"]
        assert own["reported"] == "running_stats" and 0 <= own["running_stats"]["test_acc"] <= 1
        assert own["train_s"] > 0 and own["steps_per_epoch"] == results["modalities"][who]["fed"]["steps_per_epoch"]
    for msg in replies:  # nothing but scalars for the baseline, in the calibrate reply only
        assert not msg.metadata.message_type == "query.calibrate" or not msg.content.array_records
        if msg.metadata.message_type != "query.calibrate":
            assert not any("own" in k for r in msg.content.metric_records.values() for k in r)
    table = gain_table(results)
    assert "Federated UML" in table and "own baseline" in table and "gain" in table
    fed, own = results["modalities"]["s1"]["fed"], results["modalities"]["s1"]["own"]
    gain = 100 * (fed[fed["reported"]]["test_acc"] - own["running_stats"]["test_acc"])
    assert f"{gain:+.2f} pp" in table.splitlines()[2]


@pytest.mark.slow
def test_uml_fed_federated_runs_flwr_and_exits_0_on_a_finished_run(tmp_path):
    from uml_fed.federated.runtime import processes_with

    out = tmp_path / "run"
    home = Path(tempfile.mkdtemp(prefix="umlf-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    run_config = f"overrides='{' '.join(tiny_overrides())}' local-epochs=1 total-epochs=2 output-dir='{out}'"
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "uml-fed"), "federated", "--run-config", run_config],
        capture_output=True,
        text=True,
        timeout=400,
        cwd=tmp_path,
        env={**os.environ, "TMPDIR": str(home)},  # its private Flower home (and Ray's) is made there
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert f"run directory: {out}" in proc.stdout and "uml-fed federated: finished" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert set(results["modalities"]) == {"s1", "s2"} and results["rounds"] == 2
    assert len(list((out / "clients" / "s1").glob("*/model.pt"))) == 1  # one private folder for this run
    assert not processes_with(str(home))  # every Flower process it started is gone
    shutil.rmtree(home, ignore_errors=True)


@pytest.mark.slow
def test_uml_fed_federated_exits_1_with_the_failed_runs_one_line_reason(tmp_path):
    out = tmp_path / "run"
    bad = " ".join(tiny_overrides("data=eurosat_s1_rgb", f"data.root={tmp_path / 'nowhere'}"))
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "uml-fed"),
            "federated",
            "--run-config",
            f"overrides='{bad}' local-epochs=2 output-dir='{out}'",
        ],
        capture_output=True,
        text=True,
        timeout=400,
        cwd=tmp_path,
    )
    assert proc.returncode == 1, (proc.stdout + proc.stderr)[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        r"uml-fed federated: run failed: institution (s1|rgb): MissingDataError: .*nowhere' does not exist.*", last
    )
    assert json.loads((out / "results.json").read_text())["status"] == "failed"


@pytest.mark.slow
def test_a_server_side_config_error_is_one_line_and_a_failed_results_file(tmp_path):
    """Plain ``flwr run`` (exit 0 whatever happened: Flower 1.42): the ServerApp still records the failure
    in results.json and prints the reason as one line, not inside a traceback."""
    from uml_fed.experiments.launch import flwr_run

    out = tmp_path / "run"
    run = flwr_run({"strategy": "bogus", "output-dir": str(out)}, timeout=300)
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "failed" and results["reason"].startswith("ConfigError: fed.strategy='bogus'")
    assert "run failed: server: ConfigError: fed.strategy='bogus' must be one of" in run.output
    assert "Traceback" not in run.output


def _s2_crashes_in_round_2(msg, context):
    if (
        msg.metadata.message_type == "train"
        and context.node_config["partition-id"] == 1
        and msg.content["config"]["server-round"] == 2
    ):
        raise RuntimeError("disk full at institution s2")


@pytest.mark.slow
def test_a_client_that_raises_ends_the_run_naming_it(tmp_path):
    """min-nodes=0 (every institution in every round): a raising client fails the run at once, with a
    results.json that says which institution and why."""
    from uml_fed.federated.federation import RunFailed

    run_config = {
        "overrides": " ".join(tiny_overrides()),
        "local-epochs": 1,
        "total-epochs": 3,
        "output-dir": str(tmp_path / "run"),
    }
    with pytest.raises(RunFailed, match="institution s2: round 2: .*disk full at institution s2"):
        _simulate(run_config, [], fail=_s2_crashes_in_round_2)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "failed" and results["institution"] == "s2"
    assert results["reason"].startswith("round 2: ") and "disk full at institution s2" in results["reason"]
    assert "\n" not in results["reason"]  # one line, not Ray's traceback


def _s2_hangs_loading_its_data(msg, context):
    if msg.metadata.message_type == "query.describe" and context.node_config["partition-id"] == 1:
        threading.Event().wait(3600)


@pytest.mark.slow
def test_a_hung_institution_ends_the_run_at_the_handshake_and_leaves_nothing_running(tmp_path):
    """s2 blocks while loading its data: with min-nodes=0 the run ends after fed.handshake_timeout (not
    a round timeout), naming s2 among the missing, and no Ray process of the simulation outlives it
    (Flower's runtime waits for busy actors: the ServerApp stops the abandoned one)."""
    import psutil

    from uml_fed.federated.federation import RunFailed

    run_config = {
        "overrides": " ".join(tiny_overrides("fed.handshake_timeout=30")),
        "local-epochs": 1,
        "total-epochs": 2,
        "output-dir": str(tmp_path / "run"),
    }
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    ended: list[BaseException] = []

    def simulate() -> None:
        try:
            _simulate(run_config, [], fail=_s2_hangs_loading_its_data)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            ended.append(e)

    runner = threading.Thread(target=simulate, daemon=True)
    tic = time.monotonic()
    runner.start()
    runner.join(timeout=180)
    assert not runner.is_alive(), "the simulation did not end after the handshake timeout"
    assert time.monotonic() - tic < 180
    assert ended and isinstance(ended[0], RunFailed), ended
    assert "handshake_timeout=30" in str(ended[0]) and "'s2'" in str(ended[0])  # s2 among the missing
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "failed" and "'s2'" in results["reason"]
    deadline = time.monotonic() + 30  # Ray's shutdown reaps its workers asynchronously
    while (left := [p for p in psutil.Process().children(recursive=True) if p.pid not in before]) and (
        time.monotonic() < deadline
    ):
        time.sleep(1)
    assert not left, [p.name() for p in left]


@pytest.mark.slow
def test_with_min_nodes_1_a_raising_client_is_recorded_and_the_run_goes_on(tmp_path):
    run_config = {
        "overrides": " ".join(tiny_overrides("fed.min_nodes=1")),
        "local-epochs": 1,
        "total-epochs": 3,
        "output-dir": str(tmp_path / "run"),
    }
    _simulate(run_config, [], fail=_s2_crashes_in_round_2)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "finished" and set(results["modalities"]) == {"s1", "s2"}
    assert [f["round"] for f in results["failures"]] == [2]
    assert "disk full at institution s2" in results["failures"][0]["failed"]["s2"]
    rounds = [json.loads(line) for line in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()]
    assert [sorted(r["replied"]) for r in rounds] == [["s1", "s2"], ["s1"], ["s1", "s2"]]


@pytest.mark.slow
def test_run_killed_after_a_round_resumes_to_the_same_results(tmp_path):
    from uml_fed.experiments.launch import flwr_run

    base = {"overrides": " ".join(tiny_overrides()), "local-epochs": 1, "total-epochs": 4, "seed": 3}
    fed = {"num-supernodes": 2, "client-resources-num-cpus": 1}
    whole = flwr_run({**base, "output-dir": str(tmp_path / "whole")}, federation_config=fed, timeout=400)
    assert whole.returncode == 0, whole.output[-3000:]

    out = tmp_path / "crashed"
    rounds_file = out / "rounds.jsonl"

    def after_round_2() -> bool:
        return rounds_file.is_file() and len(rounds_file.read_text().splitlines()) >= 2

    killed = flwr_run({**base, "output-dir": str(out)}, federation_config=fed, timeout=400, stop_when=after_round_2)
    assert "stopped by stop_when" in killed.output and not (out / "results.json").exists()
    import torch

    assert torch.load(out / "server_state.pt", weights_only=False)["round"] >= 2

    resumed = flwr_run({**base, "output-dir": str(out), "resume": True}, federation_config=fed, timeout=400)
    assert resumed.returncode == 0, resumed.output[-3000:]
    a = json.loads((tmp_path / "whole" / "results.json").read_text())
    b = json.loads((out / "results.json").read_text())
    assert b["resumed_after_round"] >= 2
    assert _strip(b["modalities"]) == _strip(a["modalities"])


@pytest.mark.slow
def test_four_institutions_two_per_sensor_share_projections_within_their_sensor_only(tmp_path):
    """K = 4 (2 sensors x 2 institutions, Dirichlet partitions): the backbone is averaged over all four
    with each sensor weighing the same, each sensor's projections are averaged among its institutions,
    and no message to an institution ever carries another sensor's projection."""
    overrides = tiny_overrides(
        "data.partition.institutions=2",
        "data.partition.method=dirichlet",
        "data.partition.alpha=1.0",
        "fed.weighting=modality",
        "fed.projection_sharing=modality",
    )
    run_config = {
        "overrides": " ".join(overrides),
        "local-epochs": 1,
        "total-epochs": 2,
        "output-dir": str(tmp_path / "run"),
    }
    replies, sent = [], []
    _simulate(run_config, replies, nodes=4, sent=sent)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "finished" and set(results["modalities"]) == {"s1_0", "s1_1", "s2_0", "s2_1"}
    describe = {
        r.metadata.src_node_id: dict(r.content["info"]) for r in replies if r.metadata.message_type == "query.describe"
    }
    modality = {node: info["modality"] for node, info in describe.items()}
    assert sorted(modality.values()) == ["s1", "s1", "s2", "s2"]
    trains = [m for m in sent if m.metadata.message_type == "train"]
    assert len(trains) == 8
    first_stem = {"s1": (8, 2, 3, 3), "s2": (8, 12, 3, 3)}
    received: dict[str, list] = {"s1": [], "s2": []}
    for m in trains:
        mod = modality[m.metadata.dst_node_id]
        if m.content["config"]["server-round"] == 1:
            assert "projection" not in m.content  # nothing averaged yet
            continue
        stem = m.content["projection"]["stem.0.weight"].numpy()
        assert stem.shape == first_stem[mod]  # its own sensor's projection, never the other's
        received[mod].append(stem)
    for stems in received.values():  # both institutions of a sensor receive the same average
        assert len(stems) == 2 and (stems[0] == stems[1]).all()
    for m in (r for r in replies if r.metadata.message_type == "train"):
        assert dict(m.content["metrics"])["modality-weight"] == 0.5
    for inst in ("s1_0", "s1_1", "s2_0", "s2_1"):
        assert len(list((tmp_path / "run" / "clients" / inst).glob("*/model.pt"))) == 1


@pytest.mark.slow
def test_private_heads_stay_home_and_cross_site_evaluation_sends_each_model_to_its_sensor_only(tmp_path):
    """2 sensors x 2 institutions with private heads, the local prior and head fine-tuning: no train
    message or reply carries a head or a prior; with train.cross_site each institution's reported model
    reaches only its own sensor's institutions, and the matrix's diagonal is each one's own accuracy."""
    overrides = tiny_overrides(
        "data.partition.institutions=2",
        "data.partition.method=dirichlet",
        "data.partition.alpha=1.0",
        "model.private_head=true",
        "model.logit_adjust=1.0",
        "train.finetune=head",
        "train.cross_site=true",
        "fed.local_baseline=false",
    )
    run_config = {"overrides": " ".join(overrides), "local-epochs": 1, "total-epochs": 2, "output-dir": str(tmp_path)}
    replies, sent = [], []
    _simulate(run_config, replies, nodes=4, sent=sent)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "finished" and not results["failures"]
    kinds = check_client_replies(replies, from_run_config(run_config).model)
    assert kinds["query.share"] == 4 and kinds["query.cross_site"] == 4
    for m in sent:
        if m.metadata.message_type == "train":
            assert not any("head" in k or "prior" in k or "fc" in k for k in m.content["arrays"].keys())
    sensor = {"s1_0": "s1", "s1_1": "s1", "s2_0": "s2", "s2_1": "s2"}
    node_of = {r.metadata.src_node_id: dict(r.content["info"])["institution"] for r in replies
               if r.metadata.message_type == "query.describe"}  # fmt: skip
    for m in (m for m in sent if m.metadata.message_type == "query.cross_site"):
        owners = {k.split(":", 1)[1] for k in m.content.array_records}
        assert owners == {s for s in sensor if sensor[s] == sensor[node_of[m.metadata.dst_node_id]]}
    matrix = results["cross_site"]["fed"]
    assert set(matrix) == set(sensor)
    for owner, row in matrix.items():
        assert set(row) == {s for s in sensor if sensor[s] == sensor[owner]}
        assert row[owner] == results["modalities"][owner]["fed"]["test_acc"]


# one strategy per kind of server state: plain average (FedProx's difference is client-side), momentum,
# FedOpt moments, the robust aggregators that pop the arrays they use; every strategy's formula is
# checked through the same Aggregator in test_federated
SIMULATED_STRATEGIES = ("fedprox", "fedavgm", "fedadam", "fedmedian")


@pytest.mark.slow
@pytest.mark.parametrize("strategy", SIMULATED_STRATEGIES)
def test_each_kind_of_strategy_runs_two_rounds_and_moves_the_backbone_as_its_formula_says(strategy, tmp_path):
    """In a real simulation: the backbone the server sends in round 2, and with the calibration message,
    is the strategy's formula applied to what it sent before and what the institutions replied."""
    from test_federated import expected_rounds

    run_config = {
        "overrides": " ".join(tiny_overrides()),
        "strategy": strategy,
        "local-epochs": 1,
        "total-epochs": 2,
        "output-dir": str(tmp_path / "run"),
    }
    replies, sent = [], []
    _simulate(run_config, replies, sent=sent)
    cfg = from_run_config(run_config)
    options = {
        k: getattr(cfg.fed, k) for k in ("server_lr", "server_momentum", "eta", "tau", "beta_1", "beta_2", "trim_beta")
    }

    def arrays(msg):
        return {k: v.numpy() for k, v in msg.content["arrays"].to_torch_state_dict().items()}

    by_round = {}
    for m in sent:
        if m.metadata.message_type in ("train", "query.calibrate"):
            kind = "final" if m.metadata.message_type == "query.calibrate" else m.content["config"]["server-round"]
            by_round.setdefault(kind, arrays(m))
    train_ids = {
        m.metadata.message_id: m.content["config"]["server-round"] for m in sent if m.metadata.message_type == "train"
    }
    answers = {1: [], 2: []}
    for r in sorted(replies, key=lambda r: r.metadata.src_node_id):
        if r.metadata.reply_to_message_id in train_ids:
            answers[train_ids[r.metadata.reply_to_message_id]].append(arrays(r))
    want = expected_rounds(strategy, by_round[1], [answers[1], answers[2]], [1.0, 1.0], options)
    for got, expected in ((by_round[2], want[0]), (by_round["final"], want[1])):
        for k in got:
            np.testing.assert_allclose(got[k], expected[k], rtol=1e-4, atol=1e-6)
    assert (
        json.loads((tmp_path / "run" / "results.json").read_text())["strategy_options"]
        == {
            "fedavg": {},
            "fedprox": {"proximal_mu": cfg.fed.proximal_mu},
            "fedavgm": {"server_learning_rate": 0.1, "server_momentum": 0.9},
            "fedadam": {"eta": 0.01, "eta_l": cfg.train.lr, "tau": 1e-3, "beta_1": 0.9, "beta_2": 0.99},
            "fedyogi": {"eta": 0.01, "eta_l": cfg.train.lr, "tau": 1e-3, "beta_1": 0.9, "beta_2": 0.99},
            "fedadagrad": {"eta": 0.01, "eta_l": cfg.train.lr, "tau": 1e-3},
            "fedmedian": {},
            "fedtrimmedavg": {"beta": 0.2},
        }[strategy]
    )
