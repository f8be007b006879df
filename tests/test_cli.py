"""The `uml-fed` console command, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import tiny_overrides

UML_FED = [sys.executable, "-m", "uml_fed.cli"]


def _run(args, cwd, timeout=600):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([*UML_FED, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_centralized_command_writes_run_directory_and_predict_uses_its_checkpoint(tmp_path):
    out = _run(["centralized", *tiny_overrides(), f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert "UML (BN cal.)" in out and "Unimodal" in out and f"run directory: {tmp_path / 'run'}" in out
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(results["modalities"]["s1"]) == {"uml", "unimodal"}
    assert set(results["modalities"]["s1"]["uml"]) >= {"calibrated", "test_batch_stats", "test_acc"}

    from uml_fed.config import load_config
    from uml_fed.data import load_institutions

    inst = load_institutions(load_config(tiny_overrides()), only="s1")[0]
    raw = inst.split("test").images[:3] * inst.std[None, :, None, None] + inst.mean[None, :, None, None]
    np.save(tmp_path / "patches.npy", raw)
    pred = _run(
        ["predict", str(tmp_path / "run" / "checkpoints" / "uml_s1.pt"), str(tmp_path / "patches.npy")], cwd=tmp_path
    )
    rows = [json.loads(line) for line in pred.splitlines() if line.startswith("{")]
    assert len(rows) == 3 and all(r["class"] in inst.classes for r in rows)

    np.save(tmp_path / "wrong.npy", np.zeros((1, 5, 16, 16), np.float32))
    proc = subprocess.run(
        [*UML_FED, "predict", str(tmp_path / "run" / "checkpoints" / "uml_s1.pt"), str(tmp_path / "wrong.npy")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "modality 's1' with 2 bands" in proc.stderr


def test_unimodal_command_and_hydra_multirun(tmp_path):
    _run(
        [
            "unimodal",
            "--multirun",
            "seed=0,1",
            *tiny_overrides("train.epochs=1", "train.select_after=0"),
            f"hydra.sweep.dir={tmp_path / 'multi'}",
        ],
        cwd=tmp_path,
    )
    a = json.loads((tmp_path / "multi" / "0" / "results.json").read_text())
    b = json.loads((tmp_path / "multi" / "1" / "results.json").read_text())
    assert a["seed"] == 0 and b["seed"] == 1 and "unimodal" in a["modalities"]["s2"]
    assert "uml" not in a["modalities"]["s2"]


def test_bad_override_fails_loudly(tmp_path):
    proc = subprocess.run(
        [*UML_FED, "centralized", "model.projection_blocks=9"], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "model.projection_blocks=9 must be in [0, 8]" in proc.stderr
    proc = subprocess.run([*UML_FED, "frobnicate"], capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown command 'frobnicate'" in proc.stderr


@pytest.mark.parametrize(
    "args, line",
    [
        (["+model.widht=64"], "unknown config key 'model.widht'; did you mean model.width?"),
        (["+lr=5"], "unknown config key 'lr'; did you mean train.lr?"),
        (["train.foo=1"], "unknown config key 'train.foo'; did you mean train.lr?"),
        (["data=nope"], "data=nope: there is no configs/data/nope.yaml; choose one of"),
        (["hydra.run.dir=/proc/uml-fed-run"], "hydra.run.dir=/proc/uml-fed-run: cannot write to /proc/uml-fed-run"),
        (["--multirun", "seed=0,1", "+model.widht=64"], "unknown config key 'model.widht'"),
    ],
)
def test_config_mistakes_are_one_line_naming_the_key_with_exit_2(tmp_path, args, line):
    proc = subprocess.run([*UML_FED, "centralized", *args], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"uml-fed centralized: error: {line}"), proc.stderr
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("results.json"))


def test_unknown_keys_inside_a_run_configs_overrides_are_refused_naming_the_key():
    from uml_fed.config import ConfigError, from_run_config

    with pytest.raises(ConfigError, match=r"unknown config key 'model\.widht'; did you mean model\.width\?"):
        from_run_config({"overrides": "+model.widht=64"})
    with pytest.raises(ConfigError, match=r"unknown run-config key\(s\) \['num-threads'\].*overrides="):
        from_run_config({"num-threads": 1})
    assert from_run_config({"overrides": "+data.sizes.s1.train_per_class=20"}).data.split_sizes("s1")[0] == 20


@pytest.mark.slow
def test_sweep_command_is_the_fig4_experiment_and_writes_table_and_plot(tmp_path):
    out = _run(
        [
            "sweep",
            *tiny_overrides("train.epochs=2", "train.select_after=0", "fed.sweep_local_epochs=[1,2]"),
            f"runner.root={tmp_path / 'sweep'}",
            "runner.seeds=[0]",
        ],
        cwd=tmp_path,
    )
    report = json.loads((tmp_path / "sweep" / "fig4" / "cpu" / "report.json").read_text())
    assert report["seeds"] == [0] and {a["x"] for a in report["arms"].values() if a["series"] == "fed"} == {1, 2}
    assert set(report["arms"]["fed@1"]["test_acc"]["0"]) == {"s1", "s2", "mean"}
    assert (tmp_path / "sweep" / "fig4" / "cpu" / "figure.png").stat().st_size > 10_000
    md = (tmp_path / "sweep" / "fig4" / "cpu" / "report.md").read_text()
    assert "| UML (centralized, BN cal.) |" in md and "| Unimodal |" in md and "report:" in out


def test_sweep_refuses_local_epochs_that_do_not_divide_the_budget():
    from uml_fed.config import ConfigError
    from uml_fed.experiments.definitions import check_schedules

    assert check_schedules(200, [2, 5, 10, 25, 50]) == [(2, 100), (5, 40), (10, 20), (25, 8), (50, 4)]
    with pytest.raises(ConfigError, match=r"\[7\] do not divide train.epochs=30"):
        check_schedules(30, [2, 7])


def test_prepare_data_command_on_a_fixture_in_the_real_layout(tmp_path):
    from uml_fed.data.sources.fixtures import write_fixture

    root = write_fixture("eurosat", tmp_path / "eurosat", per_class=20)["root"]
    args = [
        "prepare-data",
        "data=eurosat_s1_rgb",
        f"data.root={root}",
        "data.train_per_class=4",
        "data.val_per_class=2",
        "data.test_per_class=2",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    out = _run(args, cwd=tmp_path)
    assert "s1: cache built" in out and "rgb: cache built" in out and "AnnualCrop: 4" in out
    again = _run(args, cwd=tmp_path)
    assert "cache built" not in again  # the second call reuses the cache
