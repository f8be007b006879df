"""A real deployment on 127.0.0.1: SuperLink and SuperNodes as separate processes, TLS + SuperNode
authentication on, the run submitted with the real ``flwr run`` CLI (marked slow; run in CI).

One deployment (module fixture) serves the end-to-end, wire-content and authentication tests; the
crash test has its own.  Every process is stopped by session at the end, also on failure.
"""

from __future__ import annotations

import json

import pytest
from conftest import check_client_replies, tiny_overrides
from harness.deployment import LocalDeployment, Outsider

from uml_fed.config import from_run_config
from uml_fed.experiments.launch import write_run_config
from uml_fed.federated.runtime import processes_with

pytestmark = pytest.mark.slow


def tiny_run(out, **extra):
    return {
        "overrides": " ".join(tiny_overrides("train.num_threads=1")),
        "local-epochs": 1,
        "total-epochs": 2,
        "output-dir": str(out),
        **extra,
    }


def read_rounds(out):
    return [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]


K4 = ("s1_0", "s1_1", "s2_0", "s2_1")  # 2 sensors x 2 institutions (IID parts of each sensor's pool)
K4_OVERRIDES = " ".join(
    tiny_overrides("train.num_threads=1", "data.partition.institutions=2", "fed.weighting=modality")
)


NO_OUTSIDER = Outsider.unavailable()
REMOTE = "s2_1"  # with network namespaces: this institution's SuperNode runs on the other host


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """Four registered institutions (two per sensor; one on another host when namespaces work) plus an
    intruder on that host, holding only ca.crt and a key of its own that nobody registered; one 2-round
    run, each institution its own SuperNode process, every SuperNode through the Fleet proxy."""
    work = tmp_path_factory.mktemp("deploy")
    outsider = NO_OUTSIDER is None
    dep = LocalDeployment(
        work, institutions=K4, capture_replies=True, outsider=outsider, remote=(REMOTE,) if outsider else ()
    )
    try:
        dep.start()
        registered = {n["node-id"] for n in dep.nodes()}
        dep.make_credentials(["intruder"])  # a valid key pair, never passed to `flwr supernode register`
        attempts = {}
        if outsider:
            pub = str(dep.certs / "supernode-intruder.pub")
            proxy, link = f"{dep.host.host_ip}:{dep.fleet_port}", f"{dep.host.host_ip}:{dep.port}"
            attempts["register via proxy"] = dep.outsider_flwr(
                proxy, "supernode", "register", pub, "target", "--name", "evil"
            )
            attempts["register direct"] = dep.outsider_flwr(
                link, "supernode", "register", pub, "target", "--name", "evil"
            )
            attempts["list via proxy"] = dep.outsider_flwr(proxy, "supernode", "list", "target")
            rc_file = write_run_config(work / "rogue_run.toml", tiny_run(work / "rogue-run"))
            attempts["run via proxy"] = dep.outsider_flwr(
                proxy, "run", str(dep.app_dir), "target", "--run-config", str(rc_file), timeout=120
            )
        dep.start_supernode("intruder", institution="s1_0", remote=outsider)
        run = dep.run(tiny_run(work / "run", overrides=K4_OVERRIDES), timeout=900)
        nodes = dep.nodes()
        replies = dep.captured_replies()
        logs = {name: c.log_text() for name, c in dep.components.items()}
        commands = {name: list(c.proc.args) for name, c in dep.components.items()}
        listening = superlink_addresses(dep)
    finally:
        dep.stop()
    return {
        "dep": dep,
        "work": work,
        "run": run,
        "registered": registered,
        "nodes": nodes,
        "replies": replies,
        "logs": logs,
        "commands": commands,
        "attempts": attempts,
        "listening": listening,
    }


def superlink_addresses(dep) -> set[str]:
    """The addresses the SuperLink process listens on."""
    import psutil

    proc = psutil.Process(dep.components["superlink"].proc.pid)
    return {c.laddr.ip for c in proc.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}


def test_tls_authenticated_deployment_runs_to_completion_and_leaves_no_process(deployed):
    run, out, dep = deployed["run"], deployed["work"] / "run", deployed["dep"]
    assert run.returncode == 0, run.output[-3000:]
    assert "--ssl-certfile" in dep.superlink_command() and "--enable-supernode-auth" in dep.superlink_command()
    assert f"run directory: {out}" in run.output
    results = json.loads((out / "results.json").read_text())
    assert set(results["modalities"]) == set(K4) and results["rounds"] == 2 and not results["failures"]
    assert results["weighting"] == "modality"
    assert [r["round"] for r in read_rounds(out)] == [1, 2]
    assert all(sorted(r["replied"]) == list(K4) for r in read_rounds(out))
    # modality weighting: each sensor weighs 1/2, split between its two institutions
    assert all(c["modality-weight"] == 0.5 for r in read_rounds(out) for c in r["clients"].values())
    # each institution's private artefacts are on its own node's disk (node config output-dir)
    for m in K4:
        assert len(list((deployed["work"] / "nodes" / m / m).glob("*/model.pt"))) == 1
    assert not dep.alive() and not processes_with(str(deployed["work"]))


def test_the_superlink_is_on_loopback_and_every_supernode_goes_through_the_fleet_proxy(deployed):
    dep = deployed["dep"]
    assert deployed["listening"] == {"127.0.0.1"}
    for name in (*K4, "intruder"):
        cmd = deployed["commands"][name]
        assert cmd[cmd.index("--superlink") + 1].endswith(f":{dep.fleet_port}")
    assert "nginx" in deployed["logs"]["proxy"] or "fleet proxy on" in deployed["logs"]["proxy"]


@pytest.mark.skipif(NO_OUTSIDER is not None, reason=f"no second host: {NO_OUTSIDER}")
def test_a_host_with_only_ca_crt_cannot_register_submit_or_reach_the_superlink(deployed):
    """From another host (a network namespace), holding the public ca.crt and a key of its own: the
    Fleet proxy refuses the Control API (403), the SuperLink's own port is not reachable at all, and the
    intruder's SuperNode, whose key was never registered, is refused (next test)."""
    a = deployed["attempts"]
    for what in ("register via proxy", "list via proxy", "run via proxy"):
        assert a[what].returncode != 0 and "403" in a[what].stdout + a[what].stderr, (what, a[what].stdout)
    refused = a["register direct"]
    assert refused.returncode != 0 and "registered" not in refused.stdout
    assert "evil" not in json.dumps(deployed["nodes"]) and len(deployed["nodes"]) == len(K4)
    assert not (deployed["work"] / "rogue-run").exists()


@pytest.mark.skipif(NO_OUTSIDER is not None, reason=f"no second host: {NO_OUTSIDER}")
def test_a_registered_institution_on_another_host_joins_through_the_proxy(deployed):
    results = json.loads((deployed["work"] / "run" / "results.json").read_text())
    assert results["status"] == "finished" and REMOTE in results["modalities"]
    assert deployed["commands"][REMOTE][:3] == ["ip", "netns", "exec"]
    assert all(REMOTE in r["replied"] for r in read_rounds(deployed["work"] / "run"))


def test_what_leaves_an_institution_is_only_backbone_arrays_and_scalars(deployed):
    """Read what the SuperNodes actually sent, from the SuperLink's own state.

    The SuperLink runs with ``--database``; before the run, SQLite triggers copy every reply row of
    ``message_res`` and every object the SuperNodes push (content-addressed Flower objects: Message,
    RecordDict, ArrayRecord, Array, MetricRecord, ConfigRecord) into side tables, because Flower deletes
    both once the ServerApp has pulled them.  The replies are then inflated with Flower's own
    ``inflate_object_from_contents``: these are the bytes that crossed the TLS connection, decoded.
    """
    replies = deployed["replies"]
    kinds = check_client_replies(replies, from_run_config(tiny_run("/unused")).model)
    assert kinds == {"query.describe": 4, "train": 8, "query.calibrate": 4}


def test_a_supernode_with_an_unregistered_key_is_refused(deployed):
    nodes, logs = deployed["nodes"], deployed["logs"]
    assert {n["node-id"] for n in nodes} == deployed["registered"]  # the intruder never became a node
    assert "SuperNode ID:" not in logs["intruder"]
    assert "Failed to activate SuperNode" in logs["intruder"]
    assert "No SuperNode found with the given public key" in logs["superlink"]
    assert deployed["dep"].components["intruder"].proc.returncode not in (0, None)  # it gave up and exited
    assert deployed["run"].returncode == 0  # and the registered institutions ran undisturbed


def test_an_institution_killed_mid_run_does_not_stop_the_others(tmp_path):
    """SIGKILL s2 (SuperNode and its ClientApp) after round 1 of 3; s1 goes on and is calibrated.

    A killed SuperNode stays "online" for the SuperLink until 2 missed heartbeats (Flower's fixed 30 s
    interval), so round 2 ends at ``round-timeout`` with s2 missing; later messages to s2 fail with
    "Node Unavailable" or time out.  ``min-nodes=1`` lets the rounds go on with one institution.
    """
    out = tmp_path / "run"
    killed = []
    with LocalDeployment(tmp_path / "deploy") as dep:

        def kill_after_round_1(line: str) -> None:
            if "round 1/3 |" in line and not killed:
                dep.kill("s2")
                killed.append(line)

        run = dep.run(
            tiny_run(
                out,
                **{
                    "total-epochs": 3,
                    "min-nodes": 1,
                    "overrides": " ".join(tiny_overrides("train.num_threads=1", "fed.round_timeout=30")),
                },
            ),
            timeout=420,
            on_line=kill_after_round_1,
        )
    assert not dep.alive()
    assert killed and run.returncode == 0, run.output[-3000:]
    rounds = read_rounds(out)
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert sorted(rounds[0]["replied"]) == ["s1", "s2"]
    assert all(r["replied"] == ["s1"] for r in rounds[1:])  # s1's progress went on every round
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "finished" and list(results["modalities"]) == ["s1"]  # s2 could not be calibrated
    by_round = {f["round"]: f for f in results["failures"] if "s2" in f["missing"] or "s2" in f["failed"]}
    assert {2, 3, "calibrate"} <= set(by_round)
    assert all("s1" not in f["missing"] and "s1" not in f["failed"] for f in results["failures"])
    named = [k for f in results["failures"] for k in [*f["failed"], *f["missing"]]]
    assert set(named) == {"s2"}  # SuperLink-made "Node Unavailable" errors are attributed to s2, not node 1
    assert len(list((tmp_path / "deploy" / "nodes" / "s1" / "s1").glob("*/model.pt"))) == 1


def test_a_killed_institution_and_a_killed_superlink_change_nothing(tmp_path):
    """min-nodes=0, one kill of each kind in one run, against the uninterrupted run of the same seed:

    * SIGKILL s2's SuperNode (and ClientApp) right after round 1 of 3 and restart it: the server waits
      for s2, which redoes round 2 from its saved private state;
    * SIGKILL the SuperLink (and its ServerApp) right after round 2, start it again and resubmit the
      run with ``resume``: it goes on from the last saved server state, each institution from its own
      private state.

    The run ends with exactly the numbers of the run without the faults."""
    import threading

    overrides = " ".join(tiny_overrides("train.num_threads=1", "fed.rejoin_timeout=400"))
    restarted: list[threading.Thread] = []
    link_killed: list[bool] = []

    def chaos(line: str) -> None:
        if "round 1/3 |" in line and not restarted:
            dep.kill("s2")
            restarted.append(threading.Thread(target=dep.restart, args=("s2",), daemon=True))
            restarted[0].start()
        if "round 2/3 |" in line and not link_killed:
            link_killed.append(True)
            dep.restart_superlink()

    with LocalDeployment(tmp_path / "deploy", database=True) as dep:
        whole = dep.run(tiny_run(tmp_path / "whole", **{"total-epochs": 3, "overrides": overrides}), timeout=400)
        assert whole.returncode == 0, whole.output[-3000:]
        faulted = tiny_run(tmp_path / "chaos", **{"total-epochs": 3, "overrides": overrides})
        cut = dep.run(faulted, timeout=900, on_line=chaos)
        restarted[0].join(timeout=60)
        assert link_killed and not (tmp_path / "chaos" / "results.json").exists(), cut.output[-3000:]
        resumed = dep.run({**faulted, "resume": True}, timeout=600)
    assert not dep.alive()
    assert resumed.returncode == 0, resumed.output[-3000:]
    a = json.loads((tmp_path / "whole" / "results.json").read_text())
    b = json.loads((tmp_path / "chaos" / "results.json").read_text())
    assert b["status"] == "finished"
    assert b["resumed_after_round"] >= 1  # saved just after the line that triggered the kill, or before
    assert all(sorted(r["replied"]) == ["s1", "s2"] for r in read_rounds(tmp_path / "chaos"))
    for inst in ("s1", "s2"):
        for key in ("calibrated", "test_batch_stats", "selected_round"):
            assert b["modalities"][inst]["fed"][key] == a["modalities"][inst]["fed"][key], (inst, key)
