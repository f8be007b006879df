"""Several institutions per sensor: private heads, head fine-tuning, the local label prior, and
cross-site evaluation."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_overrides

import client_app
from uml_fed.config import ConfigError, from_run_config, load_config
from uml_fed.data import load_institutions
from uml_fed.federated import records
from uml_fed.federated.server import initial_backbone
from uml_fed.model import LabelPrior, UMLModel, backbone_state
from uml_fed.train import personalise, seeded_generator, split_tensors

SITES = ("data.partition.institutions=2", "data.partition.method=dirichlet", "data.partition.alpha=1.0")


def test_a_private_head_and_prior_never_leave_the_institution(tmp_path):
    """model.private_head + model.logit_adjust: the backbone ends at its features; a train reply holds
    the backbone's blocks only, and the head and the label prior are in the institution's private state
    on its disk."""
    from flwr.app import ConfigRecord, Context, Message, RecordDict

    run = {
        "overrides": " ".join(tiny_overrides("model.private_head=true", "model.logit_adjust=1.0")),
        "local-epochs": 1,
        "output-dir": str(tmp_path),
    }
    cfg = from_run_config(run)
    keys = set(backbone_state(UMLModel({"x": 1}, 6, cfg.model)))
    assert keys and not any("fc" in k or "head" in k for k in keys)
    content = records.train_content(
        initial_backbone(cfg, 6), ConfigRecord({"server-round": 1, "run-key": "k", "output-dir": str(tmp_path)})
    )
    ctx = Context(run_id=1, node_id=100, node_config={"partition-id": 0, "num-partitions": 2}, state=RecordDict(),
                  run_config=run)  # fmt: skip
    reply = client_app.train(Message(content=content, dst_node_id=100, message_type="train"), ctx)
    assert set(reply.content["arrays"].keys()) == keys
    saved = torch.load(tmp_path / "clients" / "s1" / "k" / "round_1.pt", weights_only=False)["private"]
    assert {"head.weight", "head.bias", "prior.log_prior"} <= set(saved)
    torch.testing.assert_close(saved["prior.log_prior"], torch.full((6,), math.log(1 / 6)))  # 24 per class


def test_private_head_needs_uml_and_a_shared_block():
    with pytest.raises(ConfigError, match="model.private_head"):
        load_config(["model.private_head=true", "model.projection_blocks=8"])
    with pytest.raises(ConfigError, match="model.private_head"):
        load_config(["model.private_head=true", "method=dann"])


@pytest.mark.parametrize("part", ["head", "last_block"])
@pytest.mark.parametrize("private_head", [False, True])
def test_fine_tuning_changes_only_what_it_names(part, private_head, tiny_cfg):
    cfg = tiny_cfg(f"train.finetune={part}", f"model.private_head={str(private_head).lower()}",
                   "model.track_running_stats=true")  # fmt: skip
    inst = load_institutions(cfg)[0]
    torch.manual_seed(0)
    model = UMLModel({inst.name: inst.in_channels}, len(inst.classes), cfg.model).modality_model(inst.name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tuned = personalise(model, inst, cfg, torch.device("cpu"), seeded_generator(0, "t"))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the input is untouched
    head = "head." if private_head else "backbone.fc."
    last = f"backbone.blocks.{len(model.backbone.blocks) - 1}."
    allowed = (head,) if part == "head" else (head, last)
    after = tuned.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(allowed) for k in changed), sorted(changed)
    assert any(k.startswith(head) for k in changed)
    if part == "last_block":
        assert any(k.startswith(last) for k in changed)


def test_finetune_needs_a_uml_model_and_last_block_a_shared_block():
    with pytest.raises(ConfigError, match="train.finetune=last_block"):
        load_config(["train.finetune=last_block", "model.projection_blocks=8"])
    with pytest.raises(ConfigError, match="train.finetune=head"):
        load_config(["train.finetune=head", "method=isca"])


def test_a_uniform_label_prior_is_the_identity():
    torch.manual_seed(0)
    logits, y = torch.randn(50, 6), torch.randint(0, 6, (50,))
    prior = LabelPrior(6, tau=1.0)
    prior.set_counts(torch.full((6,), 7))
    shifted = prior(logits)
    assert torch.equal(shifted.argmax(1), logits.argmax(1))
    torch.testing.assert_close(F.softmax(shifted, 1), F.softmax(logits, 1))
    torch.testing.assert_close(F.cross_entropy(shifted, y), F.cross_entropy(logits, y))
    prior.set_counts(torch.tensor([100, 0, 0, 0, 0, 0]))  # a skewed one moves predictions towards class 0
    assert (prior(logits).argmax(1) == 0).sum() > (logits.argmax(1) == 0).sum()


def test_logit_adjustment_takes_each_institutions_own_prior(tiny_cfg):
    """Pooled per sensor, the model trains with the pool's prior; each member's reported copy carries
    the member's own."""
    cfg = tiny_cfg(*SITES, "model.logit_adjust=1.0", "train.pool_institutions=true", "train.epochs=1",
                   "train.select_after=0")  # fmt: skip
    from uml_fed.centralized import run_centralized

    results = run_centralized(cfg, unimodal=False)
    for inst in load_institutions(cfg):
        from uml_fed.results import load_checkpoint

        _, meta = load_checkpoint(f"{cfg.output_dir}/checkpoints/uml_{inst.name}.pt")
        counts = torch.bincount(split_tensors(inst, "train")[1], minlength=6).double()
        expected = ((counts + 1) / (counts.sum() + 6)).log().float()
        torch.testing.assert_close(meta["state_dict"]["prior.log_prior"], expected)
        assert 0 <= results["modalities"][inst.name]["uml"]["test_acc"] <= 1


def test_cross_site_matrix_has_every_pair_of_a_sensor_and_its_diagonal_is_the_own_accuracy(tiny_cfg):
    """train.cross_site, centralized: each reported model at each test split of its sensor, for UML
    (institutions pooled per sensor, each member's calibrated copy) and the unimodal baselines."""
    from uml_fed.centralized import run_centralized
    from uml_fed.results import cross_site_table

    cfg = tiny_cfg(*SITES, "train.cross_site=true", "train.pool_institutions=true", "train.epochs=2",
                   "train.select_after=0")  # fmt: skip
    results = run_centralized(cfg, unimodal=True)
    sensor = {"s1_0": "s1", "s1_1": "s1", "s2_0": "s2", "s2_1": "s2"}
    for arm in ("uml", "unimodal"):
        matrix = results["cross_site"][arm]
        assert set(matrix) == set(sensor)
        for owner, row in matrix.items():
            assert set(row) == {s for s in sensor if sensor[s] == sensor[owner]}
            assert row[owner] == results["modalities"][owner][arm]["test_acc"]
            assert all(0 <= a <= 1 for a in row.values())
    assert json.loads(json.dumps(results["cross_site"])) == results["cross_site"]
    table = cross_site_table(results)
    assert "whose model" in table and "s1_1" in table


def test_the_cross_site_report_averages_matrices_over_seeds_and_draws_them(tiny_cfg, tmp_path):
    from uml_fed.centralized import run_centralized
    from uml_fed.experiments import report as rep
    from uml_fed.experiments.runner import Arm, Run

    arm = Arm("uml", "uml", group="2 per sensor")
    runs = []
    for seed in (0, 1):
        cfg = tiny_cfg(*SITES, "train.cross_site=true", "train.epochs=1", "train.select_after=0", f"seed={seed}")
        cfg.output_dir = str(tmp_path / f"seed{seed}")
        runs.append(Run(arm, seed, tmp_path / f"seed{seed}", run_centralized(cfg, unimodal=False), reused=False))
    section = rep.cross_site_section(runs, [arm.key], {arm.key: "UML"}, tmp_path / "cross_site.png")
    assert (tmp_path / "cross_site.png").stat().st_size > 0
    m0, m1 = (r.results["cross_site"]["uml"] for r in runs)
    mean = 100 * (m0["s1_0"]["s1_1"] + m1["s1_0"]["s1_1"]) / 2
    row = next(line for line in section.splitlines() if line.startswith("| s1_0 |"))
    assert row.split(" | ")[2] == f"{mean:.1f}" and row.rstrip(" |").endswith("-")  # s2 sites: another sensor
    gaps = [rep._site_gap(m) for m in (m0, m1)]
    assert rep.paired(gaps) in section and "seeds [0, 1]" in section


def test_class_balanced_calibration_sample_evens_out_the_present_classes():
    from uml_fed.evaluation import class_balanced

    labels = torch.tensor([0] * 90 + [3] * 10)
    idx = class_balanced(labels, torch.Generator().manual_seed(0))
    assert len(idx) == 100 and torch.bincount(labels[idx], minlength=6).tolist() == [50, 0, 0, 50, 0, 0]
    with pytest.raises(ConfigError, match="train.bn_cal_sample"):
        load_config(["train.bn_cal_sample=uniform"])


def test_the_institutions_report_compares_every_option_with_plain_federated_uml():
    """Each option is measured against the local unimodal model and against plain federated UML of the
    same setting and seed; the unimodal row is left out of the second table (its sign-turned twin)."""
    from uml_fed.experiments import report as rep
    from uml_fed.experiments.definitions import EXPERIMENTS

    assert EXPERIMENTS["institutions"].against == "fed"
    group = "3 per sensor, dirichlet"
    table = rep.Table(["a", "b"])
    accs = {"unimodal": (0.80, 0.70), "fed": (0.60, 0.70), "fed_private_head": (0.75, 0.72)}
    for series, (a, b) in accs.items():
        key = f"{series} [{group}]"
        table.values[key] = {s: {"a": a + s / 100, "b": b} for s in (0, 1, 2)}
        table.series[key], table.x[key], table.group[key] = series, None, group
    keys = list(table.values)
    labels = {k: k for k in keys}
    against = rep.difference_tables(table, keys, labels, "fed")
    rows = [line for line in against.splitlines() if line.startswith("| fed_private_head")]
    assert len(rows) == 1 and "| unimodal [" not in against and f"Δ vs fed [{group}]" in against
    assert rows[0].split(" | ")[1] == "+15.00 [+15.00, +15.00], 3/3 > 0"
    diffs = rep.differences(table, keys, "fed")
    assert set(diffs) == {f"fed_private_head [{group}]"}
    assert diffs[f"fed_private_head [{group}]"]["mean"]["mean"] == pytest.approx((0.15 + 0.02) / 2)
    assert set(rep.differences(table, keys)) == {f"fed [{group}]", f"fed_private_head [{group}]"}
