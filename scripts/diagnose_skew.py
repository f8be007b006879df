"""Why a model trained on a label-skewed institution's data, or on its pooled sensor, fails there.

For one arm of ``uml-fed experiment institutions`` (trained through the runner, so the run is the
experiment's own and is reused), at every institution of the run: the label histogram of its
train/val/test splits, and the test accuracy and per-class recall of its model under
- ``own``: Algorithm 2 on the institution's train split (what the run reports);
- ``balanced``: Algorithm 2 on a class-balanced resample of that split (same size, every present
  class equally often: ``train.bn_cal_sample=balanced``);
- ``sensor``: Algorithm 2 on the train splits of every institution of the sensor (the mixture a
  pooled model was trained on);
- ``test_batch``: no calibration, each test batch normalised with its own statistics;
- ``own + prior``: ``own`` with the logits shifted by log(local train prior) - log(training prior)
  (logit adjustment; the training prior is the pooled sensor's for a pooled run, else the local one,
  which makes it the identity).
Printed as JSON lines and as a table; ``--out FILE`` also writes the JSON.

    python scripts/diagnose_skew.py [--arm uml_pooled|unimodal] [--partition dirichlet] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from uml_fed.bn_calibration import calibrate_bn
from uml_fed.config import load_config
from uml_fed.data import load_institutions, modality_of
from uml_fed.evaluation import class_balanced
from uml_fed.experiments.definitions import EXPERIMENTS
from uml_fed.experiments.experiment import base_overrides
from uml_fed.experiments.runner import run_arm
from uml_fed.results import load_checkpoint
from uml_fed.train import seeded_generator, split_tensors


@torch.no_grad()
def logits_of(model: torch.nn.Module, x: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat([model(x[i : i + batch]) for i in range(0, len(x), batch)])


@torch.no_grad()
def batch_stat_logits(model: torch.nn.Module, x: torch.Tensor, batch: int) -> torch.Tensor:
    """Every BN layer normalising with the statistics of the batch in front of it."""
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)):
        bn.track_running_stats, bn.running_mean, bn.running_var = False, None, None
    return logits_of(model.train(), x, batch)


def histogram(labels: np.ndarray, classes: int) -> list[int]:
    return np.bincount(labels, minlength=classes).tolist()


def report(pred: torch.Tensor, y: torch.Tensor, classes: int) -> dict:
    recall = [
        round(float((pred[y == c] == c).float().mean()) * 100, 1) if bool((y == c).any()) else None
        for c in range(classes)
    ]
    return {
        "acc": round(float((pred == y).float().mean()) * 100, 2),
        "recall": recall,
        "predicted": histogram(pred.numpy(), classes),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arm", default="uml_pooled", choices=["uml_pooled", "unimodal"])
    ap.add_argument("--partition", default="dirichlet", choices=["dirichlet", "natural"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("overrides", nargs="*", help="the experiment's overrides (runner.root=..., ...)")
    args = ap.parse_args()

    exp = EXPERIMENTS["institutions"]
    base, _ = base_overrides(exp, list(args.overrides))
    cfg = load_config(base)
    base = [*base, f"train.num_threads={cfg.runner.threads}"]
    torch.set_num_threads(cfg.runner.threads)
    group = f"3 per sensor, {args.partition}"
    arm = next(a for a in exp.arms(cfg, "cpu") if a.series == args.arm and a.group == group)
    run = run_arm(arm, args.seed, base, Path(cfg.runner.root).expanduser().resolve())
    rcfg = load_config([*base, *arm.overrides, f"seed={args.seed}"])
    institutions = {i.name: i for i in load_institutions(rcfg)}
    modality = modality_of(rcfg)
    k = len(next(iter(institutions.values())).classes)
    batch, t = rcfg.train.eval_batch_size, rcfg.train
    arm_name = {"uml_pooled": "uml", "unimodal": "unimodal"}[args.arm]
    rows = []
    for name, inst in institutions.items():
        ckpt = run.path / "checkpoints" / f"{arm_name}_{name}.pt"
        model, meta = load_checkpoint(ckpt)
        train_x, train_y = split_tensors(inst, "train")
        test_x, test_y = split_tensors(inst, "test")
        sensor = [i for i in institutions.values() if modality[i.name] == modality[name]]
        sensor_x = torch.cat([split_tensors(i, "train")[0] for i in sensor])
        sensor_y = torch.cat([split_tensors(i, "train")[1] for i in sensor])
        gen = seeded_generator(rcfg.seed, "calibrate", "diagnose", name)
        cal = {
            "own": train_x,
            "balanced": train_x[class_balanced(train_y, seeded_generator(rcfg.seed, "balanced", name))],
            "sensor": sensor_x,
        }
        row = {
            "institution": name,
            "arm": args.arm,
            "partition": args.partition,
            "seed": args.seed,
            "reported_test_acc": round(run.results["modalities"][name][arm_name]["test_acc"] * 100, 2),
            "train": histogram(train_y.numpy(), k),
            "test": histogram(test_y.numpy(), k),
        }
        for key, x in cal.items():
            calibrated = calibrate_bn(model, x, t.bn_cal_epochs, t.bn_cal_batch_size, gen)
            logits = logits_of(calibrated, test_x, batch)
            row[key] = report(logits.argmax(1), test_y, k)
            if key == "own":
                local = torch.tensor(row["train"], dtype=torch.float64) + 1.0
                trained_on = torch.bincount(sensor_y, minlength=k).double() + 1.0 if args.arm == "uml_pooled" else local
                shift = (local / local.sum()).log() - (trained_on / trained_on.sum()).log()
                row["own + prior"] = report((logits.double() + shift).argmax(1), test_y, k)
        row["test_batch"] = report(batch_stat_logits(model, test_x, batch).argmax(1), test_y, k)
        rows.append(row)
        print(json.dumps(row))
    print(f"\n{args.arm}, {args.partition}, seed {args.seed}: test accuracy (%) per calibration")
    print("| institution | train labels | reported | own | balanced | sensor | test batch | own + prior |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        cells = [r[c]["acc"] for c in ("own", "balanced", "sensor", "test_batch", "own + prior")]
        print(f"| {r['institution']} | {r['train']} | {r['reported_test_acc']} | " + " | ".join(map(str, cells)) + " |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
