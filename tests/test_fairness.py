"""Fair comparisons: equal optimiser steps for every arm, pinned threads, the same numbers on a loaded
machine, paired differences with confidence intervals."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import pytest
from conftest import tiny_overrides

from uml_fed.config import ConfigError, load_config

UNEQUAL = ("+data.sizes.s1.train_per_class=8",)  # s1: 48 training samples = 3 batches; s2: 144 = 9


def _steps(results: dict) -> dict[tuple[str, str], int]:
    return {
        (inst, arm): e["steps_per_epoch"] for inst, arms in results["modalities"].items() for arm, e in arms.items()
    }


def test_with_unequal_sizes_uml_and_its_baselines_take_the_same_steps_per_epoch(tmp_path):
    from uml_fed.centralized import run_centralized

    cfg = load_config(
        tiny_overrides(*UNEQUAL, "train.epochs=1", "train.select_after=0"), output_dir=str(tmp_path / "a")
    )
    results = run_centralized(cfg, unimodal=True)
    assert results["steps_per_epoch"] == "largest"
    assert set(_steps(results).values()) == {9}  # UML and both unimodal baselines: the largest institution's
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    seen = {r["phase"]: r["samples/s1"] for r in rows if "samples/s1" in r}
    assert seen == {"uml": 9 * 16, "unimodal/s1": 9 * 16}  # the small institution's data cycled three times

    own = load_config(
        [*tiny_overrides(*UNEQUAL, "train.epochs=1", "train.select_after=0"), "train.steps_per_epoch=own"]
    )
    own.output_dir = str(tmp_path / "b")
    steps = _steps(run_centralized(own, unimodal=True))
    assert steps[("s1", "unimodal")] == 3 and steps[("s2", "unimodal")] == 9 and steps[("s1", "uml")] == 9


def test_a_federated_client_takes_the_federations_largest_batches_per_local_epoch(tmp_path):
    from flwr.app import ConfigRecord

    from uml_fed.config import from_run_config
    from uml_fed.data import load_institutions
    from uml_fed.federated import records
    from uml_fed.federated.client import InstitutionClient
    from uml_fed.federated.server import initial_backbone

    run = {"overrides": " ".join(tiny_overrides(*UNEQUAL)), "local-epochs": 1}
    for rule, want in (("largest", 9), ("own", 3)):
        cfg = from_run_config({**run, "overrides": run["overrides"] + f" train.steps_per_epoch={rule}"})
        inst = load_institutions(cfg, only="s1")[0]
        client = InstitutionClient(cfg, inst, tmp_path / rule)
        config = {"server-round": 1, "run-key": rule, "output-dir": str(tmp_path), "largest-batches": 9}
        reply = client.train(records.train_content(initial_backbone(cfg, 6), ConfigRecord(config)))
        assert reply["metrics"]["steps-per-epoch"] == want


def test_paired_differences_carry_a_t_interval_and_the_seeds_they_are_positive_on():
    from uml_fed.experiments.report import interval, paired

    xs = [0.01, 0.03, -0.02, 0.04, 0.02]
    m, lo, hi = interval(xs)
    half = 2.7764451 * statistics.stdev(xs) / 5**0.5  # t(0.975, 4)
    assert m == pytest.approx(0.016) and (lo, hi) == pytest.approx((0.016 - half, 0.016 + half))
    assert paired(xs) == f"+1.60 [{100 * (0.016 - half):+.2f}, {100 * (0.016 + half):+.2f}], 4/5 > 0"
    assert interval([0.5])[1:] == (float("-inf"), float("inf"))


def test_the_runner_pins_threads_and_they_are_part_of_a_runs_identity():
    from uml_fed.experiments.runner import run_key

    one, two = load_config(["train.num_threads=1"]), load_config(["train.num_threads=2"])
    assert run_key("uml", one) != run_key("uml", two)
    assert run_key("uml", one) == run_key("uml", load_config(["train.num_threads=1", "train.device=cpu"]))
    assert load_config([]).runner.seeds == [0, 1, 2, 3, 4] and load_config([]).runner.threads == 1
    with pytest.raises(ConfigError, match="runner.threads=0 must be >= 1"):
        load_config(["runner.threads=0"])


BUSY = "import time\nend = time.time() + 600\nwhile time.time() < end: pass\n"


def _without_timings(x):
    if isinstance(x, dict):
        return {k: _without_timings(v) for k, v in x.items() if not k.endswith("_s") and k != "compute"}
    return x


def test_same_seed_and_threads_give_the_same_numbers_on_a_loaded_machine(tmp_path):
    """Two parallel single-thread runs with two busy processes beside them equal a run on its own."""
    from uml_fed.experiments import run_experiment

    args = [*tiny_overrides("train.epochs=2", "train.lr_step=2", "train.select_after=0"), "runner.seeds=[0]"]
    idle = run_experiment("fig2b", [*args, f"runner.root={tmp_path / 'idle'}"], log=lambda _: None)
    hogs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(2)]
    try:
        loaded = run_experiment(
            "fig2b", [*args, f"runner.root={tmp_path / 'loaded'}", "runner.parallel=2"], log=lambda _: None
        )
    finally:
        for p in hogs:
            p.kill()
            p.wait()
    for a, b in zip(idle["runs"], loaded["runs"]):
        first = json.loads((tmp_path / "idle" / "runs" / a["dir"].split("/")[-1] / "results.json").read_text())
        second = json.loads((tmp_path / "loaded" / "runs" / b["dir"].split("/")[-1] / "results.json").read_text())
        assert _without_timings(first["modalities"]) == _without_timings(second["modalities"])
    assert idle["arms"] == loaded["arms"]
