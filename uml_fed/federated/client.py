"""One institution's side of Algorithm 3: describe itself, train L local epochs, calibrate and evaluate.

The client composes its own typed config once per process from the run config (+ its node config's
``data-path``); a message carries only what changes per round (``server-round``) and the run's
identity (``run-key``, ``output-dir``).  Its private state -- projection, optimizer moments, model
selection -- lives in its :class:`~uml_fed.federated.private_state.PrivateStore`; what leaves it is
the backbone's parameters, scalar metrics and, with ``fed.projection_sharing=modality``, its
projection (averaged by the server with the institutions of the same modality only).

Model selection (Table 7, "best val acc after R x L > 190"): the aggregated backbone of round r
arrives at the start of round r + 1 (or with the final calibration message); the institution
evaluates it with its own projection on its own validation split and keeps the best pair among rounds
with r x L > ``train.select_after``.  If no round qualifies, the final model is used.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from logging import ERROR, WARNING
from pathlib import Path
from typing import Any

import torch
from flwr.app import ConfigRecord, MetricRecord, RecordDict
from flwr.common.logger import log

from ..config import Config
from ..data import Institution, modality_of
from ..evaluation import calibrate_and_evaluate, deployed_model, test_accuracy_at
from ..model import (
    UMLModel,
    backbone_state,
    load_backbone_state,
    load_private_state,
    private_state,
    projection_state,
)
from ..results import ArtifactError, read_checkpoint, save_checkpoint
from ..train import (
    BatchStream,
    Proximal,
    Selection,
    build_baseline,
    compute_for,
    derived_seed,
    epoch_steps,
    evaluate,
    fit,
    lr_at,
    make_optimizer,
    personalise,
    resolve_device,
    seeded_generator,
    set_label_priors,
    set_lr,
    split_tensors,
    train_one_epoch,
)
from . import records
from .private_state import PrivateStateError, PrivateStore


class InstitutionClient:
    """Local training, evaluation and calibration of one institution's model h_k = g o f_k."""

    def __init__(self, cfg: Config, inst: Institution, output_dir: Path | None = None) -> None:
        """``output_dir``: the node's own folder for private state (a deployed node's disk); None = the
        server's run directory + ``clients/`` (simulation: one machine)."""
        self.cfg, self.inst, self.output_dir = cfg, inst, output_dir
        self.device = resolve_device(cfg.train.device)
        self.name = self.inst.name
        self.modality = modality_of(cfg)[self.name]
        torch.manual_seed(derived_seed(cfg.seed, "init", self.name))
        self.model = UMLModel({self.name: self.inst.in_channels}, len(self.inst.classes), cfg.model).to(self.device)
        set_label_priors(self.model, [self.inst])
        self.model.set_compute(compute_for(cfg.train, self.device), cfg.train.compile)
        self.optimizer = make_optimizer(self.model, cfg.train.lr, cfg.train.weight_decay)
        self.selection = Selection(cfg.train.select_after)
        self.restored_best_at = -1  # the selection's round when the state was restored
        self.round = 0  # the round whose private state this object holds in memory
        self.store: PrivateStore | None = None

    def bind(self, config: Mapping[str, Any]) -> int:
        """Attach the run's private-state store (the message names the run); returns the server round."""
        base = self.output_dir or Path(str(config["output-dir"])) / "clients"
        self.store = PrivateStore(base, self.name, str(config.get("run-key", "")))
        return int(config["server-round"])

    # -- private state ------------------------------------------------------------------------------
    def restore(self, upto_round: int) -> int:
        """Load the private state of the newest round <= ``upto_round``; returns that round (0 = none)."""
        assert self.store is not None, "bind() the run first"
        saved = self.store.load(upto_round)
        if saved is None:
            if upto_round > 0:  # joins after round 1 without private state: starts from the seeded model
                log(
                    WARNING,
                    "institution %s has no private state up to round %d in %s; starting from the "
                    "seeded initial projection",
                    self.name,
                    upto_round,
                    self.store.path,
                )
            return 0
        try:
            load_private_state(self.model, self.name, saved["private"])
        except ValueError as e:
            raise PrivateStateError(
                f"institution {self.name!r}: the stored private state in {self.store.path} does not fit its "
                f"data ({self.inst.in_channels} bands {self.inst.bands}): {e}"
            ) from e
        if saved["optimizer"] is not None:
            self.optimizer.load_state_dict(saved["optimizer"])
        best = saved["selection"]
        state = self.store.load_file(f"selected_{best['best_at']}.pt") if best["best_at"] >= 0 else None
        self.selection = Selection(**best, state=state)
        self.restored_best_at = self.selection.best_at
        self.round = int(saved["round"])
        return self.round

    def save(self, server_round: int) -> None:
        """The private state after ``server_round``; the selected weights only when the selection changed
        (their own file, named by the round they come from, kept while a round file refers to it)."""
        assert self.store is not None, "bind() the run first"
        keep = self.cfg.fed.keep_optimizer_state
        best = {"after": self.selection.after, "best_acc": self.selection.best_acc, "best_at": self.selection.best_at}
        if self.selection.state is not None and not self.store.has_file(f"selected_{best['best_at']}.pt"):
            self.store.save_file(f"selected_{best['best_at']}.pt", self.selection.state)
        self.store.save(
            server_round,
            {
                "private": private_state(self.model, self.name),
                "optimizer": self.optimizer.state_dict() if keep else None,
                "selection": best,
            },
            selected_from=self.restored_best_at,
        )
        self.round, self.restored_best_at = server_round, self.selection.best_at
        self.store.save_file(
            "projection.pt",
            {"round": server_round, "institution": self.name, "projection": projection_state(self.model, self.name)},
        )

    # -- the global model that just arrived: evaluate + select ---------------------------------------
    def consider(self, arrived_round: int) -> float:
        """Validate the arrived backbone with the private projection; keep it if best so far."""
        x, y = split_tensors(self.inst, "val")
        acc = evaluate(self.model, x, y, self.device, self.cfg.train.eval_batch_size, modality=self.name)["acc"]
        if arrived_round > 0:
            self.selection.offer(
                arrived_round * self.cfg.fed.local_epochs,
                acc,
                arrived_round,
                self.model.modality_model(self.name).state_dict,
            )
        return acc

    def describe(self) -> ConfigRecord:
        return ConfigRecord(
            {
                "institution": self.name,
                "modality": self.modality,
                "classes": list(self.inst.classes),
                "bands": list(self.inst.bands),
                "num-train": len(self.inst.split("train")),
            }
        )

    def train(self, content: RecordDict) -> RecordDict:
        """Algorithm 3 lines 5-12: L local epochs from the received backbone (and, when shared, the
        modality's average projection); the reply holds ONLY backbone arrays (+ projection) + metrics."""
        t, fed = self.cfg.train, self.cfg.fed
        rnd = self.bind(content[records.CONFIG])
        if self.round != rnd - 1:  # not what this process holds from the round before: the disk's
            self.restore(rnd - 1)
        load_backbone_state(self.model, records.to_state(content[records.BACKBONE]))
        if records.PROJECTION in content.array_records:
            self.model.projection(self.name).load_state_dict(
                records.to_state(content[records.PROJECTION]), strict=False
            )
        arrived_val = self.consider(rnd - 1)
        x, y = split_tensors(self.inst, "train")
        g = seeded_generator(self.cfg.seed, "batches", self.name, rnd)
        streams = {self.name: BatchStream(x, y, t.batch_size, g, self.device)}
        proximal = None
        if fed.proximal_mu > 0:
            proximal = Proximal(fed.proximal_mu, {k: v.clone() for k, v in backbone_state(self.model).items()})
        steps = epoch_steps(t.steps_per_epoch, streams, int(content[records.CONFIG].get("largest-batches", 0)))
        tic = time.perf_counter()
        metrics: dict[str, float] = {}
        for local in range(fed.local_epochs):
            set_lr(self.optimizer, lr_at(t, (rnd - 1) * fed.local_epochs + local))
            metrics = train_one_epoch(
                self.model,
                streams,
                self.optimizer,
                proximal=proximal,
                where=f"(round {rnd}, institution {self.name!r}, local epoch {local})",
                steps=steps,
            )
        train_time = time.perf_counter() - tic
        self.save(rnd)
        same_modality = sum(m == self.modality for m in modality_of(self.cfg).values())
        reply = MetricRecord(
            {
                "num-examples": len(self.inst.split("train")),
                "uniform-weight": 1,
                "modality-weight": 1.0 / same_modality,
                "train-loss": float(metrics[f"loss/{self.name}"]),
                "train-acc": float(metrics[f"acc/{self.name}"]),
                "arrived-val-acc": float(arrived_val),
                "train-time-s": float(train_time),
                "steps-per-epoch": steps,
            }
        )
        shared = (
            records.to_record(projection_params(self.model, self.name))
            if fed.projection_sharing == "modality"
            else None
        )
        backbone = records.to_record(backbone_state(self.model), fed.wire_dtype)
        return records.train_reply(backbone, reply, shared)

    def calibrate(self, content: RecordDict) -> RecordDict:
        """Final round: pick the selected model, Algorithm 2 on own train data, evaluate val/test."""
        rnd = self.bind(content[records.CONFIG])
        if self.round != rnd:
            self.restore(rnd)
        load_backbone_state(self.model, records.to_state(content[records.BACKBONE]))
        final_val = self.consider(rnd)
        mm = self.model.modality_model(self.name)
        if self.selection.state is not None:
            mm.load_state_dict(self.selection.state)
        tic = time.perf_counter()
        generator = seeded_generator(self.cfg.seed, "finetune", self.name)
        mm = personalise(mm, self.inst, self.cfg, self.device, generator, rnd * self.cfg.fed.local_epochs)
        personalise_s = time.perf_counter() - tic
        tic = time.perf_counter()
        r = calibrate_and_evaluate(
            mm,
            self.inst,
            self.cfg,
            self.device,
            seeded_generator(self.cfg.seed, "calibrate", self.name),
            extra={"selected-round": self.selection.best_at, "final-round": rnd},
        )
        own = self.own_baseline(int(content[records.CONFIG].get("largest-batches", 0)), rnd)
        saved = 1
        try:  # the numbers go back to the server even when the institution's disk cannot take the model
            save_checkpoint(self.store.path / "model.pt", r.pop("checkpoint"))  # type: ignore[union-attr]
        except ArtifactError as e:
            log(ERROR, "institution %s: %s", self.name, e)
            saved = 0
        trained = "running_stats" if r["bn"] == "tracked" else "test_batch_stats"
        return records.metrics_reply(
            MetricRecord(
                {
                    "num-examples": len(self.inst.split("test")),
                    "uniform-weight": 1,
                    "tracked-bn": int(r["bn"] == "tracked"),
                    "cal-val-acc": r["calibrated"]["val_acc"],
                    "cal-test-acc": r["calibrated"]["test_acc"],
                    "as-trained-val-acc": r[trained]["val_acc"],
                    "as-trained-test-acc": r[trained]["test_acc"],
                    "final-val-acc": float(final_val),
                    "model-saved": saved,
                    "bf16": int(self.model.compute.dtype == torch.bfloat16),
                    "channels-last": int(self.model.compute.channels_last),
                    "threads": torch.get_num_threads(),
                    "selected-round": int(self.selection.best_at if self.selection.state is not None else rnd),
                    **own,
                    "calibration-time-s": float(r["calibration_s"]),
                    "personalise-time-s": float(personalise_s),
                    "calibrate-and-evaluate-time-s": float(time.perf_counter() - tic),
                }
            )
        )

    def share(self, content: RecordDict) -> RecordDict:
        """``train.cross_site``: the institution's reported model (saved by the calibrate round), whole, for
        its modality's other institutions to evaluate."""
        self.bind(content[records.CONFIG])
        path = self.store.path / "model.pt"  # type: ignore[union-attr]
        if not path.is_file():
            raise FileNotFoundError(
                f"institution {self.name!r}: no reported model at {path} to share for cross-site evaluation; "
                "the calibrate round did not save it (see the node's log)"
            )
        return records.model_record(read_checkpoint(path))

    def cross_site(self, content: RecordDict) -> RecordDict:
        """The test accuracy of every model in the message on this institution's test split (the models
        are evaluated as they are and dropped; only accuracies go back)."""
        self.bind(content[records.CONFIG])
        accs = {}
        for key in content.array_records:
            owner = key.removeprefix(f"{records.MODEL}:")
            payload = records.model_payload(content[key], content[f"{records.INFO}:{owner}"])
            model = deployed_model(payload, self.device, self.model.compute)
            accs[f"acc:{owner}"] = test_accuracy_at(
                payload, model, self.inst, self.device, self.cfg.train.eval_batch_size
            )
        return records.metrics_reply(MetricRecord(accs))

    def own_baseline(self, largest: int, rounds: int) -> dict[str, float]:
        """What the institution could reach alone (``fed.local_baseline``): its unimodal ResNet-18 trained
        on its own training split with the federated model's budget and selection rule -- R x L epochs,
        the same steps per epoch and learning-rate schedule, a validation check after every round's L
        epochs, the best after ``train.select_after`` -- and evaluated as the unimodal baseline is.  Its
        weights never leave the institution; only its accuracies go in the reply."""
        if not self.cfg.fed.local_baseline:
            return {}
        torch.manual_seed(derived_seed(self.cfg.seed, "own baseline", self.name))
        model = build_baseline(self.inst, self.cfg, self.device)
        tic = time.perf_counter()
        selected, _, _ = fit(
            model,
            [self.inst],
            self.cfg,
            self.device,
            None,
            f"own baseline/{self.name}",
            largest=largest,
            epochs=rounds * self.cfg.fed.local_epochs,
            select_every=self.cfg.fed.local_epochs,
        )
        r = calibrate_and_evaluate(
            selected[self.name], self.inst, self.cfg, self.device, seeded_generator(self.cfg.seed, "own", self.name)
        )
        return {
            "own-tracked-bn": int(r["bn"] == "tracked"),
            "own-val-acc": r["val_acc"],
            "own-test-acc": r["test_acc"],
            "own-time-s": float(time.perf_counter() - tic),
        }


def projection_params(model: UMLModel, name: str) -> dict[str, torch.Tensor]:
    """The projection's parameters (what ``projection_sharing=modality`` averages; BN buffers stay)."""
    return {k: p.detach() for k, p in model.projection(name).named_parameters()}
