"""Benchmark: federated simulation vs centralized run on the same data and total epochs.

    python scripts/bench_federated.py [--local-epochs 5] [--cpus-per-client 1] [--gpus-per-client 0]
                                      [--out bench.json] [hydra overrides]

Measures, on the embedded default (or the given overrides), side by side in one run:
  * wall time of the centralized UML run (Algorithm 1 + calibration, no unimodal baselines) and of the
    federated simulation (`flwr run`, one SuperNode per institution) for the same total epochs and data,
    end to end and for the training phase alone;
  * orchestration overhead per round = round time (server: send -> aggregate) - the slowest client's
    local-training time, absolute and as a fraction of the round;
  * bytes a client sends per round (backbone parameters, float32) against the whole model;
  * BN-calibration time against training time (per institution).
Targets: federated <= 1.15x centralized; overhead <= 5 % of a round at L = 5; calibration
<= 5 % of training.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from uml_fed.centralized import run_centralized
from uml_fed.config import load_config
from uml_fed.data import institution_names, load_institutions
from uml_fed.experiments.launch import flwr_run
from uml_fed.model import UMLModel, backbone_state, count_parameters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--local-epochs", type=int, default=5)
    ap.add_argument("--cpus-per-client", type=int, default=1)
    ap.add_argument(
        "--gpus-per-client", type=float, default=0.0, help="Ray: GPU fraction per client (0.5 = two share one)"
    )
    ap.add_argument("--out", default="bench_federated.json")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="uml-fed-bench-"))
    overrides = [*args.overrides, "train.progress=false"]

    cfg = load_config(overrides, output_dir=str(work / "centralized"))
    names = institution_names(cfg)
    tic = time.perf_counter()
    central = run_centralized(cfg, unimodal=False)
    central_wall = time.perf_counter() - tic
    central_train = central["uml_s"]

    fed_out = work / "federated"
    run = flwr_run(
        {
            "overrides": " ".join(overrides),
            "local-epochs": args.local_epochs,
            "output-dir": str(fed_out),
            "seed": cfg.seed,
        },
        federation_config={
            "num-supernodes": len(names),
            "client-resources-num-cpus": args.cpus_per_client,
            "client-resources-num-gpus": args.gpus_per_client,
        },
        timeout=3600,
    )
    if run.returncode != 0:
        sys.exit(f"federated run failed:\n{run.output[-4000:]}")
    fed = json.loads((fed_out / "results.json").read_text())
    rounds = [json.loads(line) for line in (fed_out / "rounds.jsonl").read_text().splitlines()]

    insts = load_institutions(cfg)
    model = UMLModel({i.name: i.in_channels for i in insts}, len(insts[0].classes), cfg.model)
    backbone_bytes = sum(v.numel() * 4 for v in backbone_state(model).values())
    whole = {m: count_parameters(model.modality_model(m)) * 4 for m in names}

    client_train = {m: sum(r["clients"][m]["train-time-s"] for r in rounds if m in r["clients"]) for m in names}
    overhead = [r["overhead_s"] for r in rounds]
    round_s = [r["round_s"] for r in rounds]
    steady = rounds[1:] if len(rounds) > 1 else rounds  # round 1 also pays Ray actor start-up
    report = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch_threads_centralized": torch.get_num_threads(),
        "cpus_per_client": args.cpus_per_client,
        "total_epochs": cfg.train.epochs,
        "local_epochs": args.local_epochs,
        "rounds": fed["rounds"],
        "centralized_wall_s": central_wall,
        "centralized_train_s": central_train,
        "federated_flwr_run_wall_s": run.seconds,
        "federated_train_s": fed["train_s"],
        "federated_server_wall_s": fed["wall_time_s"],
        "ratio_wall": run.seconds / central_wall,
        "ratio_train": fed["train_s"] / central_train,
        "round_s": round_s,
        "overhead_s": overhead,
        "overhead_fraction_steady": sum(r["overhead_s"] for r in steady) / sum(r["round_s"] for r in steady),
        "overhead_fraction_all": sum(overhead) / sum(round_s),
        "backbone_bytes_per_round": backbone_bytes,
        "whole_model_bytes": whole,
        "calibration_s": {m: fed["modalities"][m]["fed"]["calibration_s"] for m in names},
        "client_train_s": client_train,
        "calibration_fraction": {m: fed["modalities"][m]["fed"]["calibration_s"] / client_train[m] for m in names},
        "calibrate_and_evaluate_s": {m: fed["modalities"][m]["fed"]["calibrate_and_evaluate_s"] for m in names},
        "accuracy": {
            m: {
                "centralized_cal": central["modalities"][m]["uml"]["test_acc"],
                "federated_cal": fed["modalities"][m]["fed"]["test_acc"],
            }
            for m in names
        },
    }
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"centralized: {central_wall:.1f} s wall, {central_train:.1f} s training ({cfg.train.epochs} epochs)")
    print(
        f"federated:   {run.seconds:.1f} s wall (flwr run), {fed['train_s']:.1f} s training "
        f"(R={fed['rounds']} x L={args.local_epochs}, {args.cpus_per_client} CPU/client)"
    )
    print(f"ratio federated/centralized: wall {report['ratio_wall']:.2f}x, training {report['ratio_train']:.2f}x")
    print(
        f"per-round overhead: {', '.join(f'{o:.2f}' for o in overhead)} s; "
        f"{100 * report['overhead_fraction_steady']:.1f} % of a round (rounds >= 2), "
        f"{100 * report['overhead_fraction_all']:.1f} % over all rounds"
    )
    print(
        f"bytes sent per client per round: {backbone_bytes / 1e6:.2f} MB backbone vs "
        + ", ".join(f"{m} {b / 1e6:.2f} MB whole model" for m, b in whole.items())
    )
    print(
        "calibration vs training: "
        + ", ".join(
            f"{m} {report['calibration_s'][m]:.2f} s / {client_train[m]:.1f} s = {100 * report['calibration_fraction'][m]:.1f} %"
            for m in names
        )
    )
    print(
        "calibration + val/test evaluation (both ways) + checkpoint: "
        + ", ".join(f"{m} {report['calibrate_and_evaluate_s'][m]:.2f} s" for m in names)
    )
    print(f"report: {Path(args.out).resolve()}")


if __name__ == "__main__":
    main()
