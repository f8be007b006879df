"""One institution's side of Algorithm 3 (everything client_app.py does, minus Flower's plumbing).

Private state -- the projection f_k, the AdamW moments, the per-institution model selection -- lives
in the node's ``context.state`` (a RecordDict) and in the node's output directory; the only arrays
that leave are the backbone's parameters (:func:`uml_fed.model.backbone_state`).

Model selection (Table 7, "best val acc after R x L > 190"): the aggregated backbone of round r
arrives at the start of round r + 1 (or with the final calibration message); the institution
evaluates it with its own projection on its own validation split and keeps the best pair among rounds
with r x L > ``train.select_after``.  If no round qualifies, the final model is used.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from logging import WARNING
from pathlib import Path
from typing import Any, Mapping

import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.common.logger import log

from ..config import Config, from_run_config
from ..data import Institution, load_institutions
from ..data import institution_names as config_institution_names
from ..evaluation import calibrate_and_evaluate, split_tensors
from ..model import UMLModel, backbone_state, load_backbone_state, load_private_state, private_state, projection_state
from ..train import (
    BatchStream,
    Proximal,
    derived_seed,
    evaluate,
    make_optimizer,
    resolve_device,
    seeded_generator,
    set_lr,
    step_lr,
    train_one_epoch,
)

STATE_PRIVATE = "uml.private"  # projection + (ordinary BN) backbone running statistics
STATE_OPTIMIZER = "uml.optimizer"
STATE_SELECTED = "uml.selected"
STATE_META = "uml.meta"


class IdentityError(ValueError):
    """A node cannot tell which institution it is (node/run config)."""


@dataclass
class Identity:
    modality: str
    output_dir: Path
    data_path: str | None = None


@lru_cache(maxsize=8)
def _config_cached(items: tuple) -> Config:
    return from_run_config(dict(items))


def config_from_run_config(run_config: Mapping[str, Any]) -> Config:
    """The typed config of this run (cached per process: Ray actors serve many rounds)."""
    return _config_cached(tuple(sorted(run_config.items())))


def resolve_identity(
    cfg: Config, node_config: Mapping[str, Any], run_config: Mapping[str, Any], server_output_dir: str = ""
) -> Identity:
    """Which institution this node is: node config in a deployment, partition id in simulation.

    Its output directory: the node config's ``output-dir`` (a deployed node's own disk), else the
    server's run directory + ``clients/`` (simulation: one machine), else the run config's.
    """
    names = config_institution_names(cfg)
    if "modality" in node_config:
        modality = str(node_config["modality"])
        if modality not in names:
            raise IdentityError(f"node config modality={modality!r} is not an institution of this run: {names}")
    elif "partition-id" in node_config:
        pid, num = int(node_config["partition-id"]), int(node_config.get("num-partitions", len(names)))
        if num != len(names):
            raise IdentityError(
                f"the simulation has {num} SuperNodes but the run has {len(names)} institutions {names}; "
                f"start it with --federation-config \"num-supernodes={len(names)}\""
            )
        modality = names[pid]
    else:
        raise IdentityError(
            "node config has neither 'modality' (deployment) nor 'partition-id' (simulation); start the "
            "SuperNode with --node-config 'modality=\"s1\" data-path=\"/data/s1\" output-dir=\"/out/s1\"'"
        )
    if node_config.get("output-dir"):
        base = Path(str(node_config["output-dir"]))
    elif server_output_dir:
        base = Path(server_output_dir) / "clients"
    elif run_config.get("output-dir"):
        base = Path(str(run_config["output-dir"])) / "clients"
    else:
        base = Path.home() / "uml-fed-runs" / "nodes"
    data_path = node_config.get("data-path")
    return Identity(modality=modality, output_dir=base.expanduser().resolve() / modality, data_path=data_path)


@lru_cache(maxsize=4)
def _institution_cached(cfg_json: str, modality: str, data_path: str | None) -> Institution:
    from ..config import DataConfig

    cfg = Config()
    d = json.loads(cfg_json)
    cfg.seed = d.pop("__seed")
    cfg.data = DataConfig(**d)
    if data_path:
        cfg.data.root = data_path
    return load_institutions(cfg, only=modality)[0]


def load_own_institution(cfg: Config, ident: Identity) -> Institution:
    import dataclasses

    d = dataclasses.asdict(cfg.data)
    d["__seed"] = cfg.seed
    return _institution_cached(json.dumps(d, sort_keys=True), ident.modality, ident.data_path)


def _tensor_dict(record: ArrayRecord) -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict((k, torch.from_numpy(v.numpy().copy())) for k, v in record.items())


def _arrays(state: Mapping[str, torch.Tensor]) -> ArrayRecord:
    return ArrayRecord(OrderedDict((k, v.detach().cpu()) for k, v in state.items()))


def optimizer_to_record(opt: torch.optim.Optimizer) -> ArrayRecord:
    flat = OrderedDict()
    for idx, s in opt.state_dict()["state"].items():
        for name, value in s.items():
            flat[f"{idx}.{name}"] = torch.as_tensor(value).detach().cpu().clone()
    return ArrayRecord(flat)


def optimizer_from_record(opt: torch.optim.Optimizer, record: ArrayRecord) -> None:
    sd = opt.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in _tensor_dict(record).items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    sd["state"] = state
    opt.load_state_dict(sd)


class InstitutionClient:
    """Local training, evaluation and calibration of one institution's model h_k = g o f_k."""

    def __init__(self, cfg: Config, ident: Identity, state: RecordDict, device: torch.device | None = None) -> None:
        self.cfg, self.ident, self.state = cfg, ident, state
        self.device = device or resolve_device(cfg.train.device)
        self.inst = load_own_institution(cfg, ident)
        torch.manual_seed(derived_seed(cfg.seed, "init", ident.modality))
        self.model = UMLModel({self.inst.name: self.inst.in_channels}, len(self.inst.classes), cfg.model)
        self.model.to(self.device)
        self._optimizer_state: dict[str, torch.Tensor] | None = None
        self.meta: dict[str, Any] = {"best-val-acc": -1.0, "best-round": -1, "round": 0}

    # -- private state: context.state first, else the node's disk (after a SuperNode restart) --------
    def _restore(self, upto_round: int) -> None:
        """Load the most recent private state saved after a round <= ``upto_round``.

        context.state holds it while the SuperNode lives; after a restart (or a resumed run, which
        gets a fresh context) it comes from ``<output-dir>/private_state/round_<r>.pt``.  States of
        later rounds (trained but never aggregated before a crash) are ignored.
        """
        in_context = int(self.state[STATE_META]["round"]) if STATE_META in self.state else 0
        on_disk = [r for r in self._disk_rounds() if r <= upto_round]
        best_disk = max(on_disk, default=0)
        if in_context and in_context <= upto_round and in_context >= best_disk:
            self._load_private(
                _tensor_dict(self.state[STATE_PRIVATE]),
                _tensor_dict(self.state[STATE_OPTIMIZER]) if STATE_OPTIMIZER in self.state else None,
                _tensor_dict(self.state[STATE_SELECTED]) if STATE_SELECTED in self.state else None,
                dict(self.state[STATE_META]),
            )
        elif best_disk:
            saved = torch.load(self._state_file(best_disk), weights_only=False)
            self._load_private(saved["private"], saved["optimizer"], saved["selected"], saved["meta"])
            for key in (STATE_OPTIMIZER, STATE_SELECTED):  # whatever the context held is of a later round
                if key in self.state:
                    del self.state[key]
            self.state[STATE_PRIVATE] = _arrays(saved["private"])
            self.state[STATE_META] = ConfigRecord(dict(self.meta))
            if saved["optimizer"] is not None:
                self.state[STATE_OPTIMIZER] = ArrayRecord(OrderedDict(saved["optimizer"]))
            if saved["selected"] is not None:
                self.state[STATE_SELECTED] = _arrays(saved["selected"])
        elif upto_round > 0:
            # joins the run after round 1 with no private state: starts from the seeded projection
            log(WARNING, "institution %s has no private state up to round %d in %s; starting from the "
                "seeded initial projection", self.modality, upto_round, self.ident.output_dir)

    def _load_private(self, private, optimizer, selected, meta) -> None:  # type: ignore[no-untyped-def]
        try:
            load_private_state(self.model, self.modality, private)
        except (RuntimeError, ValueError) as e:
            raise IdentityError(
                f"institution {self.modality!r}: the stored private state does not fit its data "
                f"({self.inst.in_channels} bands {self.inst.bands}): {e}"
            ) from e
        self._optimizer_state = optimizer
        self.meta = {k: meta[k] for k in ("best-val-acc", "best-round", "round")}

    def _state_file(self, server_round: int) -> Path:
        return self.ident.output_dir / "private_state" / f"round_{server_round}.pt"

    def _disk_rounds(self) -> list[int]:
        folder = self.ident.output_dir / "private_state"
        if not folder.is_dir():
            return []
        return sorted(int(p.stem.split("_")[1]) for p in folder.glob("round_*.pt"))

    @property
    def modality(self) -> str:
        return self.inst.name

    def describe(self) -> ConfigRecord:
        return ConfigRecord(
            {
                "modality": self.inst.name,
                "classes": list(self.inst.classes),
                "bands": list(self.inst.bands),
                "num-train": len(self.inst.split("train")),
            }
        )

    # -- the global model that just arrived: evaluate + select ------------------------------------
    def _consider(self, arrived_round: int, epochs_done: int) -> float:
        """Validate the arrived backbone with the private projection; keep it if best so far."""
        x, y = split_tensors(self.inst, "val")
        acc = evaluate(self.model, x, y, self.device, self.cfg.train.eval_batch_size, modality=self.modality)["acc"]
        if arrived_round > 0 and epochs_done > self.cfg.train.select_after and acc > float(self.meta["best-val-acc"]):
            mm = self.model.modality_model(self.modality)
            self.state[STATE_SELECTED] = _arrays(mm.state_dict())
            self.meta["best-val-acc"], self.meta["best-round"] = float(acc), int(arrived_round)
        return acc

    def _save_private(self, server_round: int, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Keep the private state in context.state and on the node's disk (never in a reply)."""
        self.meta["round"] = int(server_round)
        private = private_state(self.model, self.modality)
        self.state[STATE_PRIVATE] = _arrays(private)
        if optimizer is not None and self.cfg.fed.keep_optimizer_state:
            self.state[STATE_OPTIMIZER] = optimizer_to_record(optimizer)
        self.state[STATE_META] = ConfigRecord(dict(self.meta))
        folder = self.ident.output_dir / "private_state"
        folder.mkdir(parents=True, exist_ok=True)
        selected = _tensor_dict(self.state[STATE_SELECTED]) if STATE_SELECTED in self.state else None
        opt = _tensor_dict(self.state[STATE_OPTIMIZER]) if STATE_OPTIMIZER in self.state else None
        tmp = folder / f"round_{server_round}.tmp"
        torch.save({"private": private, "optimizer": opt, "selected": selected, "meta": dict(self.meta)}, tmp)
        tmp.replace(self._state_file(server_round))
        for old in self._disk_rounds():
            if old < server_round - 1:  # keep two rounds: a crash may come before the server aggregates
                self._state_file(old).unlink(missing_ok=True)
        torch.save({"round": server_round, "modality": self.modality,
                    "projection": projection_state(self.model, self.modality),
                    "meta": dict(self.meta)}, self.ident.output_dir / "projection.pt")

    def train(self, backbone: ArrayRecord, config: Mapping[str, Any]) -> tuple[ArrayRecord, MetricRecord]:
        """Algorithm 3 lines 5-12 for this institution; returns ONLY backbone arrays + scalar metrics."""
        t = self.cfg.train
        rnd = int(config["server-round"])
        local_epochs = int(config.get("local-epochs", self.cfg.fed.local_epochs))
        mu = float(config.get("proximal-mu", 0.0))
        base_lr = float(config.get("lr", t.lr))
        self._restore(rnd - 1)
        load_backbone_state(self.model, _tensor_dict(backbone))
        arrived_val = self._consider(rnd - 1, (rnd - 1) * local_epochs)

        optimizer = make_optimizer(self.model, base_lr, t.weight_decay)
        if self.cfg.fed.keep_optimizer_state and self._optimizer_state is not None:
            optimizer_from_record(optimizer, ArrayRecord(OrderedDict(self._optimizer_state)))
        x, y = split_tensors(self.inst, "train")
        g = seeded_generator(self.cfg.seed, "batches", self.modality, rnd)
        streams = {self.modality: BatchStream(x, y, t.batch_size, g, self.device)}
        proximal = None
        if mu > 0:
            proximal = Proximal(mu, {k: v.clone() for k, v in backbone_state(self.model).items()})
        tic = time.perf_counter()
        metrics: dict[str, float] = {}
        for local in range(local_epochs):
            epoch = (rnd - 1) * local_epochs + local
            set_lr(optimizer, step_lr(base_lr, epoch, int(config.get("lr-step", t.lr_step)),
                                      float(config.get("lr-gamma", t.lr_gamma))))
            metrics = train_one_epoch(
                self.model, streams, optimizer, proximal=proximal,
                where=f"(round {rnd}, client {self.modality!r}, local epoch {local})",
            )
        train_time = time.perf_counter() - tic
        self._save_private(rnd, optimizer)
        n = len(self.inst.split("train"))
        reply = MetricRecord(
            {
                "num-examples": n,
                "uniform-weight": 1,
                "train-loss": float(metrics[f"loss/{self.modality}"]),
                "train-acc": float(metrics[f"acc/{self.modality}"]),
                "arrived-val-acc": float(arrived_val),
                "train-time-s": float(train_time),
            }
        )
        return _arrays(backbone_state(self.model)), reply

    def calibrate(self, backbone: ArrayRecord, config: Mapping[str, Any]) -> MetricRecord:
        """Final round: pick the selected model, Algorithm 2 on own train data, evaluate val/test."""
        rnd = int(config.get("server-round", 0))
        local_epochs = int(config.get("local-epochs", self.cfg.fed.local_epochs))
        self._restore(rnd)
        load_backbone_state(self.model, _tensor_dict(backbone))
        final_val = self._consider(rnd, rnd * local_epochs)
        mm = self.model.modality_model(self.modality)
        if STATE_SELECTED in self.state:
            mm.load_state_dict(_tensor_dict(self.state[STATE_SELECTED]))
        g = seeded_generator(self.cfg.seed, "calibrate", self.modality)
        tic = time.perf_counter()
        r = calibrate_and_evaluate(
            mm, self.inst, self.cfg, self.device, g,
            checkpoint=self.ident.output_dir / "calibrated.pt",
            extra={"selected-round": self.meta["best-round"], "final-round": rnd},
        )
        cal_time = time.perf_counter() - tic
        trained = "running_stats" if r["bn"] == "tracked" else "test_batch_stats"
        return MetricRecord(
            {
                "num-examples": len(self.inst.split("test")),
                "uniform-weight": 1,
                "tracked-bn": int(r["bn"] == "tracked"),
                "cal-val-acc": r["calibrated"]["val_acc"],
                "cal-test-acc": r["calibrated"]["test_acc"],
                "as-trained-val-acc": r[trained]["val_acc"],
                "as-trained-test-acc": r[trained]["test_acc"],
                "final-val-acc": float(final_val),
                "selected-round": int(self.meta["best-round"] if self.meta["best-round"] >= 0 else rnd),
                "calibration-time-s": float(r["calibration_s"]),
                "calibrate-and-evaluate-time-s": float(cal_time),
            }
        )


def train_reply(arrays: ArrayRecord, metrics: MetricRecord) -> RecordDict:
    """What a train reply holds: one ArrayRecord (backbone only) and one MetricRecord (scalars)."""
    return RecordDict({"arrays": arrays, "metrics": metrics})


def metrics_reply(metrics: MetricRecord) -> RecordDict:
    return RecordDict({"metrics": metrics})


def describe_reply(info: ConfigRecord) -> RecordDict:
    return RecordDict({"info": info})
