"""Aggregation: a Flower strategy for the shared backbone, and what UML adds around it.

:class:`Aggregator` wraps one of Flower's strategies (:data:`STRATEGIES`) by composition: Flower's
own ``aggregate_train`` averages the backbone (FedAvg, FedProx, FedAdam, ...), unchanged, because
every institution sends the same backbone keys.  Around it:

* messages go to the institutions the round loop chose (no waiting for nodes inside a strategy);
* weights: ``fed.weighting`` = ``uniform`` (1/K per institution, the paper), ``num_examples``
  (Flower's default) or ``modality`` (each modality weighs the same however many institutions hold
  it; within a modality, uniform);
* ``fed.projection_sharing=modality``: the institutions of one modality also average their
  projections (weighted like the backbone), and each institution receives its own modality's
  average only -- a projection never reaches an institution of another modality;
* replies are aggregated in a fixed order (by institution), so a seed gives the same sums;
* :meth:`state_dict` / :meth:`load_state_dict` carry everything that lives across rounds
  (FedAvgM momentum, FedAdam moments, the modality projections) for a resumed run.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import (
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
)
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from ..config import Config
from . import records

STRATEGIES = {
    "fedavg": FedAvg,
    "fedprox": FedProx,
    "fedavgm": FedAvgM,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
    "fedadagrad": FedAdagrad,
    "fedmedian": FedMedian,
    "fedtrimmedavg": FedTrimmedAvg,
}
WEIGHT_KEYS = {"uniform": "uniform-weight", "num_examples": "num-examples", "modality": "modality-weight"}


class Aggregator:
    def __init__(self, cfg: Config, modality_of: dict[str, str]) -> None:
        self.key = WEIGHT_KEYS[cfg.fed.weighting]
        kwargs: dict[str, Any] = dict(
            fraction_train=1.0,
            fraction_evaluate=0.0,
            min_train_nodes=1,
            min_evaluate_nodes=0,
            min_available_nodes=1,
            weighted_by_key=self.key,
        )
        if cfg.fed.strategy == "fedprox":
            kwargs["proximal_mu"] = cfg.fed.proximal_mu  # the client adds the term (Flower's FedProx design)
        self.base = STRATEGIES[cfg.fed.strategy](**kwargs)
        self.sharing = cfg.fed.projection_sharing == "modality"
        self.wire_dtype = cfg.fed.wire_dtype
        self.modality_of = modality_of
        self.projections: dict[str, ArrayRecord] = {}  # modality -> its institutions' average projection

    def messages(self, backbone: ArrayRecord, config: ConfigRecord, nodes: dict[int, str]) -> list[Message]:
        """One train message per node (institution) chosen for the round."""
        out = []
        wire = (
            backbone if self.wire_dtype == "float32" else records.to_record(records.to_state(backbone), self.wire_dtype)
        )
        for node, institution in sorted(nodes.items(), key=lambda kv: kv[1]):
            projection = self.projections.get(self.modality_of[institution]) if self.sharing else None
            content = records.train_content(wire, config, projection)
            out.append(Message(content=content, message_type=records.TRAIN, dst_node_id=node))
        return out

    def aggregate(self, server_round: int, replies: list[Message], who: Callable[[Message], str]) -> ArrayRecord | None:
        """The new backbone from the successful replies (None: nothing to aggregate)."""
        ok = sorted((r for r in replies if not r.has_error()), key=who)
        if not ok:
            return None
        shared = {who(r): records.take_projection(r.content) for r in ok}
        if self.wire_dtype != "float32":  # aggregate in float32 whatever the wire carried
            for r in ok:
                r.content[records.BACKBONE] = records.to_record(records.to_state(r.content[records.BACKBONE]))
        backbone, _ = self.base.aggregate_train(server_round, ok)
        if self.sharing:
            by_modality: dict[str, list[RecordDict]] = {}
            for r in ok:
                inst = who(r)
                if shared[inst] is not None:
                    weight = MetricRecord({self.key: r.content[records.METRICS][self.key]})
                    by_modality.setdefault(self.modality_of[inst], []).append(
                        RecordDict({records.PROJECTION: shared[inst], records.METRICS: weight})
                    )
            for modality, contents in by_modality.items():
                self.projections[modality] = aggregate_arrayrecords(contents, self.key)
        return backbone

    def state_dict(self) -> dict[str, Any]:
        """What lives across rounds: the base strategy's picklable state and the modality projections."""
        base = {}
        for k, v in vars(self.base).items():
            if callable(v):
                continue
            try:
                pickle.dumps(v)
            except Exception:  # noqa: BLE001 - anything unpicklable is configuration, rebuilt from cfg
                continue
            base[k] = v
        return {"base": base, "projections": {m: records.to_state(a) for m, a in self.projections.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        vars(self.base).update(state["base"])
        self.projections = {m: records.to_record(s) for m, s in state["projections"].items()}

    def summary(self) -> None:
        self.base.summary()
