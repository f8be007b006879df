"""What the measurements measure: split order, per-institution sizes, the paired reference, and the
experiment runner (report with mean ± std, resume without redoing finished seeds)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import build, tiny_overrides

from uml_fed.centralized import fuse, run_centralized, run_paired
from uml_fed.config import ConfigError, load_config
from uml_fed.data import DataError, Split, load_institutions
from uml_fed.data.sources.allocate import allocate


def _permuted(institutions, seed):
    rng = np.random.default_rng(seed)
    for inst in institutions:
        for s in inst.splits.values():
            p = rng.permutation(len(s))
            s.images, s.labels, s.ids = s.images[p], s.labels[p], [s.ids[i] for i in p]
    return institutions


def test_permuting_a_split_changes_no_reported_accuracy(tmp_path):
    """Sources store splits class by class; every reported number must not depend on it."""
    cfg = load_config(tiny_overrides(), output_dir=str(tmp_path / "a"))
    first = run_centralized(cfg, unimodal=True)
    permuted = _permuted(load_institutions(cfg), seed=1)
    by_class = [np.argsort(i.split("test").labels, kind="stable") for i in permuted]
    for inst, order in zip(permuted, by_class):  # test split sorted class by class, as the archives
        s = inst.split("test")
        s.images, s.labels, s.ids = s.images[order], s.labels[order], [s.ids[i] for i in order]
    again = load_config(tiny_overrides(), output_dir=str(tmp_path / "b"))
    second = run_centralized(again, institutions=permuted, unimodal=True)
    assert second["modalities"] == first["modalities"]
    for arm in ("uml", "unimodal"):
        assert {"calibrated", "val_acc", "test_acc", "reported"} <= set(first["modalities"]["s1"][arm])


def test_real_cache_stores_splits_in_their_seeded_shuffled_order(tmp_path):
    from uml_fed.data.sources import fixtures

    root = fixtures.write_eurosat(tmp_path / "eurosat", per_class=12, seed=5)["root"]
    cfg = load_config(
        [
            "data=eurosat_s1_rgb",
            f"data.root={root}",
            f"data.cache_dir={tmp_path / 'c'}",
            "data.train_per_class=3",
            "data.val_per_class=1",
            "data.test_per_class=1",
        ]
    )
    insts, _ = build(cfg.data, seed=0)
    labels = insts[0].split("train").labels
    assert not np.all(np.diff(labels) >= 0)  # not class by class
    assert np.bincount(labels, minlength=10).tolist() == [3] * 10


def test_per_institution_sizes(tmp_path):
    cfg = load_config(tiny_overrides("+data.sizes.s1.train_per_class=5", "+data.sizes.s2.test_per_class=3"))
    s1, s2 = load_institutions(cfg)
    assert np.bincount(s1.split("train").labels).tolist() == [5] * 6
    assert np.bincount(s2.split("train").labels).tolist() == [24] * 6
    assert len(s1.split("test")) == 6 * 16 and len(s2.split("test")) == 6 * 3
    with pytest.raises(ConfigError, match=r"data.sizes.s1.train is not a size"):
        load_config(tiny_overrides("+data.sizes.s1.train=5"))
    with pytest.raises(DataError, match=r"data.sizes names \['s3'\], not institutions of this run"):
        load_institutions(load_config(tiny_overrides("+data.sizes.s3.train_per_class=5")))
    with pytest.raises(DataError, match="data.paired=true needs the same split sizes"):
        load_institutions(load_config(tiny_overrides("+data.sizes.s1.train_per_class=5", "data.paired=true")))


def test_allocation_follows_per_institution_sizes():
    from uml_fed.data.sources.archive import Scene

    scenes = [Scene(f"{c}{i}", c, {"x": "f", "y": "f"}) for c in "AB" for i in range(30)]
    plan = allocate(scenes, ["A", "B"], [("x", "x"), ("y", "y")], {"x": (2, 1, 1), "y": (10, 5, 5)}, coregistered=True)
    assert plan.need["x"]["A"] == (2, 1, 1) and plan.need["y"]["A"] == (10, 5, 5)
    assert set(plan.pools["x"]["A"]).isdisjoint(plan.pools["y"]["A"])
    assert len(plan.pools["y"]["A"]) >= 20 and len(plan.pools["x"]["A"]) >= 4


def test_paired_reference_fuses_the_same_scenes_of_every_sensor(tmp_path):
    cfg = load_config(tiny_overrides("data.paired=true"))
    s1, s2 = load_institutions(cfg)
    assert s1.split("train").ids == s2.split("train").ids  # the same scenes, in the same order
    fused = fuse([s1, s2])
    assert fused.name == "s1+s2" and fused.in_channels == 2 + 12
    assert fused.split("test").images.shape == (6 * 16, 14, 16, 16)
    np.testing.assert_array_equal(fused.split("val").images[:, 2:], s2.split("val").images)
    unpaired = load_institutions(load_config(tiny_overrides()))
    with pytest.raises(ValueError, match="load them with data.paired=true"):
        fuse(unpaired)
    results = run_paired(load_config(tiny_overrides(), output_dir=str(tmp_path)))
    entry = results["modalities"]["s1+s2"]["paired"]
    assert entry["reported"] == "running_stats" and 0 <= entry["test_acc"] <= 1


def test_experiment_report_mean_std_and_resume(tmp_path, monkeypatch):
    from uml_fed.experiments import run_experiment, runner

    args = [
        *tiny_overrides("train.epochs=2", "train.lr_step=2", "train.select_after=0"),
        f"runner.root={tmp_path}",
        "runner.seeds=[0,1]",
    ]
    first = run_experiment("fig2b", args, log=lambda _: None)
    report = (tmp_path / "fig2b" / "cpu" / "report.md").read_text()
    assert "mean ± std over seeds" in report and "±" in report and (tmp_path / "fig2b" / "cpu" / "figure.png").is_file()
    assert {r["arm"] for r in first["runs"]} == {"unimodal", "uml", "paired"} and len(first["runs"]) == 6
    uml = first["arms"]["uml"]["test_acc"]
    assert set(uml) == {"0", "1"} and set(uml["0"]) == {"s1", "s2", "mean"}
    assert json.loads((tmp_path / "fig2b" / "cpu" / "report.json").read_text())["seeds"] == [0, 1]

    # interrupted: seed 1's UML run never finished; nothing else is trained again
    unfinished = next(r["dir"] for r in first["runs"] if r["arm"] == "uml" and r["seed"] == 1)
    (tmp_path / "runs" / unfinished.split("/")[-1] / "results.json").unlink()
    trained = []
    real = dict(runner.METHODS)

    def counted(name, method):
        def run(cfg, overrides):
            trained.append(name)
            return method(cfg, overrides)

        return run

    monkeypatch.setattr(runner, "METHODS", {k: counted(k, f) for k, f in real.items()})
    second = run_experiment("fig2b", [*args, "runner.seeds=[0,1,2]"], log=lambda _: None)
    assert sorted(trained) == ["paired", "uml", "uml", "unimodal"]  # seed 1's UML + all of the new seed 2
    assert second["arms"]["uml"]["test_acc"]["1"] == uml["1"]  # same seed, same numbers
    assert sum(not r["reused"] for r in second["runs"]) == 4


def test_unknown_experiment_is_refused():
    from uml_fed.experiments import run_experiment

    with pytest.raises(ConfigError, match="unknown experiment 'table9'"):
        run_experiment("table9", [])


def test_split_needs_ids_for_its_canonical_order():
    from uml_fed.data import canonical_order
    from uml_fed.data.core import Institution

    inst = Institution(
        "x",
        ["b"],
        ["a", "b"],
        {"train": Split(np.zeros((2, 1, 2, 2), np.float32), np.zeros(2, np.int64), ["only-one"])},
    )
    with pytest.raises(DataError, match="1 sample ids for 2 samples"):
        canonical_order(inst, 0)
