"""What an operator relies on: fail fast with a name and a reason, one line per round, the CLI's
one-line errors, the deploy scripts' settings, and the compute options (CPU-checkable parts)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_overrides
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from uml_fed.config import ConfigError, from_run_config, load_config
from uml_fed.federated import records
from uml_fed.federated.federation import RunFailed, handshake, one_line
from uml_fed.federated.progress import RoundLog

TINY_RUN = {"overrides": " ".join(tiny_overrides())}


class OneNodeGrid:
    """Only institution s1 ever connects (s2's node hangs before connecting)."""

    def get_node_ids(self):
        return [7]

    def push_messages(self, messages):
        self.replies = [
            Message(
                RecordDict({"info": ConfigRecord({"institution": "s1", "modality": "s1", "classes": ["a", "b"]})}),
                reply_to=m,
            )
            for m in messages
        ]
        return [r.metadata.reply_to_message_id for r in self.replies]

    def pull_messages(self, ids):
        return [r for r in self.replies if r.metadata.reply_to_message_id in set(ids)]


def test_a_missing_institution_ends_the_handshake_at_once_naming_it():
    cfg = from_run_config({"overrides": TINY_RUN["overrides"] + " fed.handshake_timeout=1"})
    import time

    tic = time.monotonic()
    with pytest.raises(
        RunFailed,
        match=r"institution s2: did not answer the handshake within "
        r"fed.handshake_timeout=1 s .*missing: \['s2'\]",
    ):
        handshake(OneNodeGrid(), cfg, ["s1", "s2"])
    assert time.monotonic() - tic < 10
    lenient = from_run_config({"overrides": TINY_RUN["overrides"] + " fed.handshake_timeout=1 fed.min_nodes=1"})
    federation, classes = handshake(OneNodeGrid(), lenient, ["s1", "s2"])
    assert federation.names == {7: "s1"} and classes == ["a", "b"]


def test_config_errors_name_their_key_before_any_data_is_loaded():
    from uml_fed.federated.runtime import server_config

    for overrides, key in (
        ("fed.strategy=fedsgd", "fed.strategy"),
        ("train.lr=0", "train.lr"),
        ("fed.weighting=size", "fed.weighting"),
        ("fed.proximal_mu=0.1", "fed.proximal_mu"),
        ("fed.round_timeout=0", "fed.round_timeout"),
        ("train.precision=fp8", "train.precision"),
    ):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            server_config({"overrides": f"{TINY_RUN['overrides']} {overrides} data=eurosat_s1_rgb data.root=/nowhere"})


def test_error_reasons_are_one_line():
    assert one_line("Traceback (most recent call last):\n  File x\nValueError: bad band\n") == "ValueError: bad band"
    ray = "ClientAppException:\nTraceback (most recent call last):\n  File y\nOSError: disk full"
    assert str(RunFailed("s2", ray)) == "institution s2: OSError: disk full"
    helpful = "MissingDataError: no folder /data/eurosat/EuroSAT\nexpected layout:\n  one sub-folder per class"
    assert one_line(helpful) == "MissingDataError: no folder /data/eurosat/EuroSAT"  # what failed, not the help


def _reply(institution_time: float, node: int) -> Message:
    request = Message(content=RecordDict(), dst_node_id=node, message_type="train")
    metrics = MetricRecord(
        {"train-loss": 0.5, "train-acc": 0.8, "arrived-val-acc": 0.7, "train-time-s": institution_time}
    )
    return Message(RecordDict({"metrics": metrics}), reply_to=request)


def test_one_line_per_round_and_a_warning_when_institutions_train_one_after_another(caplog, tmp_path):
    from uml_fed.results import RunDir

    log = RoundLog(rounds_total=3, run=RunDir(tmp_path))
    with caplog.at_level(logging.INFO, logger="flwr"):
        log.record(1, ["s1", "s2"], {"s1": _reply(2.0, 1), "s2": _reply(2.1, 2)}, 2.4)
        log.record(2, ["s1", "s2"], {"s1": _reply(2.0, 1), "s2": _reply(2.0, 2)}, 4.2)  # 2 + 2 s in a row
        log.record(3, ["s1", "s2"], {"s1": _reply(2.0, 1)}, 2.2)
    lines = [r.getMessage() for r in caplog.records]
    per_round = [line for line in lines if line.startswith("round ") and " | " in line]
    assert len(per_round) == 3
    assert per_round[0].startswith("round 1/3 | s1: loss 0.500 acc 0.800 val 0.700 (2.0 s) | s2: ")
    assert "ETA" in per_round[0] and "overhead 0.3 s" in per_round[0]
    assert "s2: no reply" in per_round[2]
    serial = [line for line in lines if "trained one after another" in line]
    assert len(serial) == 1 and "client-resources-num-cpus=1" in serial[0]
    assert (tmp_path / "rounds.jsonl").read_text().count("\n") == 3


def test_tensorboard_gets_the_per_round_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    from uml_fed.federated.progress import tensorboard_writer
    from uml_fed.results import RunDir

    run = RunDir(tmp_path)
    log = RoundLog(rounds_total=1, run=run, tensorboard=tensorboard_writer(True, run))
    log.record(1, ["s1"], {"s1": _reply(1.0, 1)}, 1.2)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_cli_user_errors_are_one_line_with_exit_code_2(tmp_path):
    cli = [sys.executable, "-m", "uml_fed.cli"]
    for args, expected in (
        (["centralized", "train.lr=-1"], "uml-fed centralized: error: train.lr=-1.0"),
        (["prepare-data", "data=eurosat_s1_rgb", f"data.root={tmp_path / 'none'}"], "does not exist"),
        (["experiment", "table9"], "unknown experiment 'table9'"),
    ):
        proc = subprocess.run([*cli, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert expected in proc.stderr and "Traceback" not in proc.stderr
        assert len([line for line in proc.stderr.splitlines() if "error:" in line]) == 1


def test_make_certs_writes_where_uml_fed_certs_says(tmp_path):
    from uml_fed.experiments.launch import APP_DIR

    env = {**os.environ, "UML_FED_CERTS": str(tmp_path / "certs")}
    proc = subprocess.run(
        ["bash", str(APP_DIR / "deploy" / "make-certs.sh"), "s1"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert {"ca.crt", "server.pem", "supernode-s1", "supernode-s1.pub"} <= {
        p.name for p in (tmp_path / "certs").iterdir()
    }


def test_float16_on_the_wire_halves_the_bytes_and_aggregates_in_float32():
    from uml_fed.federated.strategy import Aggregator, ChosenNodes

    cfg = from_run_config({"overrides": TINY_RUN["overrides"] + " fed.wire_dtype=float16"})
    state = OrderedDict(w=torch.tensor([1.0, 2.0 + 1e-3]), n=torch.tensor([3]))
    wire = records.to_record(state, "float16")
    assert wire["w"].numpy().dtype == np.float16 and wire["n"].numpy().dtype == np.int64
    back = records.to_state(wire)
    assert back["w"].dtype == torch.float32 and torch.allclose(back["w"], state["w"], atol=1e-3)

    def reply(value: float, node: int) -> Message:
        request = Message(content=RecordDict(), dst_node_id=node, message_type="train")
        arrays = records.to_record(OrderedDict(w=torch.full((3,), value)), "float16")
        return Message(
            records.train_reply(arrays, MetricRecord({"uniform-weight": 1, "num-examples": 1})), reply_to=request
        )

    agg = Aggregator(cfg, {"a": "a", "b": "b"})
    names = {1: "a", 2: "b"}
    out = agg.aggregate(1, [reply(1.0, 1), reply(2.0, 2)], lambda m: names[m.metadata.src_node_id])
    assert out["w"].numpy().dtype == np.float32 and np.allclose(out["w"].numpy(), 1.5)
    sent = agg.messages(ChosenNodes(None, [1]), 2, out, ConfigRecord({"server-round": 2}), {1: "a"})[0]
    assert sent.content["arrays"]["w"].numpy().dtype == np.float16


def test_compute_options_train_and_evaluate_on_the_cpu():
    """bf16 autocast and channels-last: same parameters and names, float32 outputs, a loss that goes
    down; ``auto`` takes bf16 on a CPU only where it is native (elsewhere it is ~10x slower), and NHWC."""
    from uml_fed.data import load_institutions
    from uml_fed.model import Compute, UMLModel
    from uml_fed.train import (
        BatchStream,
        compute_for,
        cpu_has_native_bf16,
        evaluate,
        make_optimizer,
        split_tensors,
        train_one_epoch,
    )

    cfg = load_config(tiny_overrides())
    auto = Compute(torch.bfloat16 if cpu_has_native_bf16() else None, True)
    assert compute_for(cfg.train, torch.device("cpu")) == auto
    inst = load_institutions(cfg, only="s2")[0]
    x, y = split_tensors(inst, "train")
    torch.manual_seed(0)
    model = UMLModel({"s2": inst.in_channels}, 6, cfg.model)
    names = list(model.state_dict())
    model.set_compute(Compute(torch.bfloat16, channels_last=True))
    assert list(model.state_dict()) == names
    assert model(x[:4], "s2").dtype == torch.float32
    opt = make_optimizer(model, 1e-3, 0.0)
    streams = {"s2": BatchStream(x, y, 16, torch.Generator().manual_seed(0))}
    first = train_one_epoch(model, streams, opt)["loss"]
    for _ in range(3):
        last = train_one_epoch(model, streams, opt)["loss"]
    assert np.isfinite(last) and last < first
    assert 0.0 <= evaluate(model.modality_model("s2"), x, y, torch.device("cpu"))["acc"] <= 1.0


def test_auto_precision_takes_bf16_on_a_cpu_only_where_it_is_native(tmp_path):
    from uml_fed.model import Compute
    from uml_fed.train import compute_for, cpu_has_native_bf16

    avx2, avx512 = tmp_path / "avx2", tmp_path / "avx512"
    avx2.write_text("flags\t\t: fpu sse sse2 avx avx2 fma\n")
    avx512.write_text("flags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert not cpu_has_native_bf16(str(avx2)) and cpu_has_native_bf16(str(avx512))
    assert not cpu_has_native_bf16(str(tmp_path / "no-such-file"))
    cfg = load_config(tiny_overrides("train.precision=fp32", "train.channels_last=off"))
    assert compute_for(cfg.train, torch.device("cpu")) == Compute(None, False)


def test_experiment_runs_federated_schedules_side_by_side_when_asked():
    with pytest.raises(ConfigError, match="runner.parallel=0 must be >= 1"):
        load_config(["runner.parallel=0"])


LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))  # results.json fits, a checkpoint does not
"""


def test_a_full_disk_at_the_end_keeps_the_results_and_names_the_file_it_could_not_write(tmp_path):
    run_dir = tmp_path / "run"
    script = LIMITED + (
        "from uml_fed.cli import main\n"
        f"main(['centralized', *{tiny_overrides('train.epochs=1', 'train.select_after=0')!r}, 'hydra.run.dir={run_dir}'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith(f"uml-fed centralized: error: could not write {run_dir / 'checkpoints'}/")
    assert f"the run's results are in {run_dir / 'results.json'}" in lines[0]
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["modalities"]) == {"s1", "s2"} and len(results["unsaved"]) == 4  # 2 arms x 2
    assert not list((run_dir / "checkpoints").glob("*.pt")) and not list(run_dir.rglob(".*.tmp"))


def test_an_institution_whose_disk_is_full_still_reports_its_numbers(tmp_path):
    """Calibrate on a node whose model.pt cannot be written: the reply carries the metrics and says so."""
    script = (
        LIMITED.replace("resource.setrlimit", "LIMIT = lambda: resource.setrlimit")
        + f"""
sys.path.insert(0, {str(Path(__file__).parent)!r})
from conftest import tiny_overrides
from flwr.app import ConfigRecord
from flwr.supercore.task_identity import TaskIdentity
TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
from uml_fed.config import from_run_config
from uml_fed.data import load_institutions
from uml_fed.federated import records
from uml_fed.federated.client import InstitutionClient
from uml_fed.federated.server import initial_backbone
cfg = from_run_config({{"overrides": " ".join(tiny_overrides()), "local-epochs": 1}})
client = InstitutionClient(cfg, load_institutions(cfg, only="s1")[0], {str(tmp_path)!r})
config = ConfigRecord({{"server-round": 1, "run-key": "full", "output-dir": {str(tmp_path)!r}}})
backbone = initial_backbone(cfg, 6)
client.train(records.train_content(backbone, config))
LIMIT()
reply = client.calibrate(records.train_content(backbone, config))
m = reply["metrics"]
print("RESULT", m["model-saved"], m["cal-test-acc"])
"""
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    saved, acc = proc.stdout.split("RESULT ")[1].split()
    assert saved == "0" and 0 <= float(acc) <= 1
    assert "could not write" in proc.stderr and "model.pt" in proc.stderr
    assert not (tmp_path / "s1" / "full" / "model.pt").exists()
