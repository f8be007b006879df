"""Aggregation: a Flower strategy for the shared backbone, and what UML adds around it.

:class:`Aggregator` drives one of Flower's strategies (:data:`STRATEGIES`) through its own contract:
every round its ``configure_train`` builds the train messages (FedOpt and FedAvgM remember the
arrays they sent there) and its ``aggregate_train`` computes the new backbone -- FedAvg, FedProx,
FedAvgM's server momentum, FedAdam/FedYogi/FedAdagrad's server optimizer, the coordinate-wise
median or trimmed mean, unchanged, because every institution sends the same backbone keys.  Around it:

* ``configure_train`` sees only the institutions the round loop chose (a view of the grid), so the
  round loop decides who takes part and who is waited for;
* weights: ``fed.weighting`` = ``uniform`` (1/K per institution, the paper), ``num_examples``
  (Flower's default) or ``modality`` (each modality weighs the same however many institutions hold
  it; within a modality, uniform); the robust aggregators (median, trimmed mean) weigh nobody and
  accept only ``uniform``;
* ``fed.projection_sharing=modality``: the institutions of one modality also average their
  projections (weighted like the backbone), and each institution receives its own modality's
  average only -- a projection never reaches an institution of another modality;
* ``fed.wire_dtype=float16``: the arrays travel as float16; the strategy configures and aggregates
  float32;
* replies are aggregated in a fixed order (by institution), so a seed gives the same sums;
* :meth:`state_dict` / :meth:`load_state_dict` carry everything that lives across rounds
  (FedAvgM momentum and current arrays, FedOpt moments, the modality projections) for a resumed run.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Strategy,
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
UNWEIGHTED = ("fedmedian", "fedtrimmedavg")  # coordinate-wise statistics: no institution weights
WEIGHT_KEYS = {"uniform": "uniform-weight", "num_examples": "num-examples", "modality": "modality-weight"}


def strategy_options(cfg: Config) -> dict[str, Any]:
    """The server-side hyperparameters each strategy takes from ``fed.*``."""
    f = cfg.fed
    fedopt = {"eta": f.eta, "eta_l": cfg.train.lr, "tau": f.tau}  # eta_l: the clients' own AdamW lr (logged only)
    return {
        "fedavg": {},
        "fedprox": {"proximal_mu": f.proximal_mu},  # the client adds the term (Flower's FedProx design)
        "fedavgm": {"server_learning_rate": f.server_lr, "server_momentum": f.server_momentum},
        "fedadam": {**fedopt, "beta_1": f.beta_1, "beta_2": f.beta_2},
        "fedyogi": {**fedopt, "beta_1": f.beta_1, "beta_2": f.beta_2},
        "fedadagrad": fedopt,
        "fedmedian": {},
        "fedtrimmedavg": {"beta": f.trim_beta},
    }[f.strategy]


def build_strategy(cfg: Config) -> Strategy:
    """Flower's strategy for ``fed.strategy`` with the configured server-side hyperparameters."""
    return STRATEGIES[cfg.fed.strategy](
        fraction_train=1.0,  # of the institutions the round loop chose (see ChosenNodes)
        fraction_evaluate=0.0,
        min_train_nodes=1,
        min_evaluate_nodes=0,
        min_available_nodes=1,
        weighted_by_key=WEIGHT_KEYS[cfg.fed.weighting],
        **strategy_options(cfg),
    )


def trims_nothing(cfg: Config, institutions: int) -> str | None:
    """Why a robust aggregator equals the plain mean with this many institutions per round (None: it does not)."""
    s = cfg.fed.strategy
    if s == "fedmedian" and institutions <= 2:
        return f"fed.strategy=fedmedian with {institutions} institutions per round is the plain mean"
    if s == "fedtrimmedavg" and int(cfg.fed.trim_beta * institutions) == 0:
        return (
            f"fed.strategy=fedtrimmedavg cuts int(fed.trim_beta={cfg.fed.trim_beta} x {institutions}) = 0 "
            "institutions at each end: it is the plain mean"
        )
    return None


class ChosenNodes:
    """The grid as a strategy's ``configure_train`` should see it: only the nodes of this round."""

    def __init__(self, grid: Grid, node_ids: list[int]) -> None:
        self._grid, self._nodes = grid, sorted(node_ids)

    def get_node_ids(self) -> list[int]:
        return list(self._nodes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


class Aggregator:
    def __init__(self, cfg: Config, modality_of: dict[str, str]) -> None:
        self.key = WEIGHT_KEYS[cfg.fed.weighting]
        self.base = build_strategy(cfg)
        self.sharing = cfg.fed.projection_sharing == "modality"
        self.wire_dtype = cfg.fed.wire_dtype
        self.modality_of = modality_of
        self.projections: dict[str, ArrayRecord] = {}  # modality -> its institutions' average projection

    def messages(
        self, grid: Grid, server_round: int, backbone: ArrayRecord, config: ConfigRecord, nodes: dict[int, str]
    ) -> list[Message]:
        """One train message per node (institution) chosen for the round, as the strategy configures them."""
        configured = self.base.configure_train(server_round, backbone, config, ChosenNodes(grid, list(nodes)))
        wire = None if self.wire_dtype == "float32" else records.to_record(records.to_state(backbone), self.wire_dtype)
        out = []
        for msg in sorted(configured, key=lambda m: nodes[m.metadata.dst_node_id]):
            content = msg.content
            arrays = content[records.BACKBONE] if wire is None else wire
            projection = (
                self.projections.get(self.modality_of[nodes[msg.metadata.dst_node_id]]) if self.sharing else None
            )
            body = records.train_content(arrays, content[records.CONFIG], projection)
            out.append(Message(content=body, message_type=records.TRAIN, dst_node_id=msg.metadata.dst_node_id))
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
