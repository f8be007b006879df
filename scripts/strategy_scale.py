"""How far each server strategy moves the backbone in round 1, next to FedAvg, on the embedded default.

Every institution trains one real round (L local epochs from the seeded initial backbone, in this
process); then each strategy, with each candidate server hyperparameter, aggregates the same replies
through uml-fed's Aggregator (Flower's own configure_train / aggregate_train).  Printed per candidate:
the RMS of the server step theta_1 - theta_0 over the conv and linear weights, its ratio to FedAvg's
step (the mean of the clients' updates) and to the RMS of the weights themselves; for FedAvgM also the
steady-state ratio server_lr / (1 - momentum) of a constant update.  The defaults in
``uml_fed/config.py`` (``fed.eta``, ``fed.server_lr`` ...) are the candidates whose step matches FedAvg's.

    python scripts/strategy_scale.py [--local-epochs 5] [hydra overrides ...]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import torch
from flwr.app import ConfigRecord, Message, RecordDict

from uml_fed.config import load_config
from uml_fed.data import load_institutions
from uml_fed.federated import records
from uml_fed.federated.client import InstitutionClient
from uml_fed.federated.server import initial_backbone
from uml_fed.federated.strategy import Aggregator

CANDIDATES = {
    "fedadam": [("eta", v) for v in (0.1, 0.03, 0.01, 0.003, 0.001)],
    "fedyogi": [("eta", v) for v in (0.1, 0.03, 0.01, 0.003, 0.001)],
    "fedadagrad": [("eta", v) for v in (0.1, 0.03, 0.01, 0.003, 0.001)],
    "fedavgm": [("server_lr", 1.0, 0.0), ("server_lr", 0.1, 0.9), ("server_lr", 1.0, 0.9)],
    "fedmedian": [()],
    "fedtrimmedavg": [()],
}


class Nodes:
    """configure_train asks the grid which nodes exist; the replies here are made in this process."""

    def __init__(self, n: int) -> None:
        self.n = n

    def get_node_ids(self) -> list[int]:
        return list(range(1, self.n + 1))


def rms(state: dict[str, torch.Tensor]) -> float:
    weights = [v for k, v in state.items() if k.endswith("weight") and v.ndim > 1]
    return math.sqrt(sum(float(v.pow(2).sum()) for v in weights) / sum(v.numel() for v in weights))


def main() -> None:
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1  # messages made outside Flower
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--local-epochs", type=int, default=5)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(
            [*args.overrides, f"fed.local_epochs={args.local_epochs}", "train.progress=false"], output_dir=tmp
        )
        institutions = load_institutions(cfg)
        theta0 = initial_backbone(cfg, len(institutions[0].classes))
        config = ConfigRecord({"server-round": 1, "run-key": "scale", "output-dir": tmp})
        replies = []
        for node, inst in enumerate(institutions, start=1):
            client = InstitutionClient(cfg, inst, Path(tmp) / inst.name)
            content = client.train(records.train_content(theta0, config))
            request = Message(content=RecordDict(), dst_node_id=node, message_type=records.TRAIN)
            replies.append((inst.name, Message(content, reply_to=request)))
        names = {m.metadata.src_node_id: n for n, m in replies}
        modality = {i.name: i.name for i in institutions}
        start = records.to_state(theta0)

        def step(strategy: str, **fed) -> dict[str, torch.Tensor]:
            c = load_config([*args.overrides, f"fed.strategy={strategy}", *(f"fed.{k}={v}" for k, v in fed.items())])
            agg = Aggregator(c, modality)
            agg.base.configure_train(1, theta0, ConfigRecord({}), Nodes(len(replies)))
            copies = [
                Message(
                    RecordDict(
                        {
                            records.BACKBONE: records.to_record(records.to_state(m.content[records.BACKBONE])),
                            records.METRICS: m.content[records.METRICS],
                        }
                    ),
                    reply_to=_request(m),
                )
                for _, m in replies
            ]
            new = records.to_state(agg.aggregate(1, copies, lambda m: names[m.metadata.src_node_id]))
            return {k: new[k] - start[k] for k in start}

        fedavg = rms(step("fedavg"))
        rows = [
            {
                "strategy": "fedavg",
                "options": {},
                "step_rms": fedavg,
                "vs_fedavg": 1.0,
                "vs_weights": fedavg / rms(start),
            }
        ]
        for strategy, candidates in CANDIDATES.items():
            for cand in candidates:
                fed = {}
                if strategy == "fedavgm":
                    fed = {"server_lr": cand[1], "server_momentum": cand[2]}
                elif cand:
                    fed = {cand[0]: cand[1]}
                s = rms(step(strategy, **fed))
                row = {
                    "strategy": strategy,
                    "options": fed,
                    "step_rms": s,
                    "vs_fedavg": s / fedavg,
                    "vs_weights": s / rms(start),
                }
                if strategy == "fedavgm":
                    row["steady_vs_fedavg"] = fed["server_lr"] / (1 - fed["server_momentum"])
                rows.append(row)
    print(f"weights RMS {rms(start):.4g}; FedAvg round-1 step RMS {fedavg:.4g} (L = {args.local_epochs})")
    print(f"{'strategy':<14} {'options':<40} {'step RMS':>10} {'/ FedAvg':>9} {'/ weights':>10} {'steady':>7}")
    for r in rows:
        steady = f"{r['steady_vs_fedavg']:.2f}" if "steady_vs_fedavg" in r else ""
        print(
            f"{r['strategy']:<14} {json.dumps(r['options']):<40} {r['step_rms']:>10.4g} {r['vs_fedavg']:>9.2f} "
            f"{r['vs_weights']:>10.3f} {steady:>7}"
        )


def _request(reply: Message) -> Message:
    return Message(content=RecordDict(), dst_node_id=reply.metadata.src_node_id, message_type=records.TRAIN)


if __name__ == "__main__":
    main()
