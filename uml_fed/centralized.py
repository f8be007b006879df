"""Centralized UML (Algorithm 1) and the unimodal baseline, on the one training loop.

Model selection: after every epoch each modality is evaluated on its validation split; among epochs
with index >= ``train.select_after`` (0-based, so 190 = "after 190 epochs" as in Table 7) each
modality keeps the weights (its projection + the backbone) of its best validation accuracy.  When the
run is shorter than ``select_after`` the final weights are used.  Then each modality's selected model
is BN-calibrated on its own training data (Algorithm 2) and tested.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
from tqdm.auto import tqdm

from .config import Config
from .data import Institution, load_institutions
from .evaluation import calibrate_and_evaluate, split_tensors
from .model import ModalityModel, UMLModel, build_unimodal
from .results import RunDir, summary_table
from .train import (
    BatchStream,
    evaluate,
    make_optimizer,
    resolve_device,
    seed_everything,
    seeded_generator,
    set_lr,
    step_lr,
    train_one_epoch,
)


def fit(
    model: UMLModel,
    institutions: list[Institution],
    cfg: Config,
    device: torch.device,
    run: RunDir | None,
    phase: str,
) -> dict[str, ModalityModel]:
    """Train ``model`` on all its modalities with Algorithm 1; return each modality's selected model."""
    t = cfg.train
    by_name = {inst.name: inst for inst in institutions}
    streams = {}
    for m in model.modalities:
        x, y = split_tensors(by_name[m], "train")
        streams[m] = BatchStream(x, y, t.batch_size, seeded_generator(cfg.seed, phase, m, "batches"))
    val = {m: split_tensors(by_name[m], "val") for m in model.modalities}
    optimizer = make_optimizer(model, t.lr, t.weight_decay)
    best: dict[str, tuple[float, int, dict[str, torch.Tensor]]] = {}
    bar = tqdm(range(t.epochs), desc=phase, disable=not t.progress, leave=False, dynamic_ncols=True)
    for epoch in bar:
        lr = step_lr(t.lr, epoch, t.lr_step, t.lr_gamma)
        set_lr(optimizer, lr)
        tic = time.perf_counter()
        metrics = train_one_epoch(model, streams, optimizer, device, where=f"({phase}, epoch {epoch})")
        train_s = time.perf_counter() - tic
        row: dict[str, Any] = {"phase": phase, "epoch": epoch, "lr": lr, "train_s": train_s, **metrics}
        for m in model.modalities:
            row[f"val_acc/{m}"] = evaluate(model, *val[m], device, t.eval_batch_size, modality=m)["acc"]
            if epoch >= t.select_after and row[f"val_acc/{m}"] > best.get(m, (-1.0,))[0]:
                state = {k: v.detach().clone() for k, v in model.modality_model(m).state_dict().items()}
                best[m] = (row[f"val_acc/{m}"], epoch, state)
        if run is not None:
            run.log(row)
        bar.set_postfix(loss=f"{metrics['loss']:.3f}", **{m: f"{row[f'val_acc/{m}']:.2f}" for m in model.modalities})
    selected = {}
    for m in model.modalities:
        mm = copy.deepcopy(model.modality_model(m))
        if m in best:
            mm.load_state_dict(best[m][2])
        selected[m] = mm
        if run is not None:
            run.log({"phase": phase, "selected": m, "epoch": best[m][1] if m in best else t.epochs - 1,
                     "val_acc": best[m][0] if m in best else None})
    return selected


def _prepare(
    cfg: Config, institutions: list[Institution] | None
) -> tuple[torch.device, RunDir, list[Institution]]:
    """Threads, device, run directory (with the resolved config) and the institutions' data."""
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    device = resolve_device(cfg.train.device)
    run = RunDir(cfg.output_dir)
    run.write_config(cfg)
    return device, run, institutions if institutions is not None else load_institutions(cfg)


def run_centralized(cfg: Config, institutions: list[Institution] | None = None, unimodal: bool | None = None) -> dict:
    """Algorithm 1 + Algorithm 2 over all institutions, plus (optionally) the unimodal baselines.

    Writes the run directory ``cfg.output_dir`` and returns the results dictionary.
    """
    start = time.perf_counter()
    device, run, institutions = _prepare(cfg, institutions)
    classes = institutions[0].classes
    results: dict[str, Any] = {"mode": "centralized", "seed": cfg.seed, "classes": classes, "modalities": {}}

    seed_everything(cfg.seed)
    model = UMLModel({i.name: i.in_channels for i in institutions}, len(classes), cfg.model).to(device)
    selected = fit(model, institutions, cfg, device, run, phase="uml")
    results["uml_train_s"] = time.perf_counter() - start
    for inst in institutions:
        r = calibrate_and_evaluate(
            selected[inst.name], inst, cfg, device, seeded_generator(cfg.seed, "calibrate", inst.name),
            checkpoint=run.checkpoint_path(f"uml_{inst.name}"),
        )
        results["modalities"][inst.name] = {
            "uml_calibrated": {"val_acc": r["cal_val_acc"], "test_acc": r["cal_test_acc"]},
            "uml_uncalibrated": {"val_acc": r["uncal_val_acc"], "test_acc": r["uncal_test_acc"]},
        }
    if unimodal if unimodal is not None else cfg.train.run_unimodal:
        results.update(run_unimodal_baselines(cfg, institutions, device, run, results))
    results["wall_time_s"] = time.perf_counter() - start
    run.write_results(results)
    return results


def run_unimodal_baselines(
    cfg: Config, institutions: list[Institution], device: torch.device, run: RunDir, results: dict | None = None
) -> dict:
    """One ResNet-18 per modality, all blocks private, same schedule, calibration and selection."""
    results = results if results is not None else {"mode": "unimodal", "seed": cfg.seed, "modalities": {}}
    tic = time.perf_counter()
    for inst in institutions:
        seed_everything(cfg.seed)
        model = build_unimodal(inst.in_channels, inst.name, len(inst.classes), cfg.model).to(device)
        selected = fit(model, [inst], cfg, device, run, phase=f"unimodal/{inst.name}")[inst.name]
        r = calibrate_and_evaluate(
            selected, inst, cfg, device, seeded_generator(cfg.seed, "calibrate-unimodal", inst.name),
            checkpoint=run.checkpoint_path(f"unimodal_{inst.name}"), model_cfg=model.cfg,
        )
        entry = results["modalities"].setdefault(inst.name, {})
        entry["unimodal"] = {"val_acc": r["cal_val_acc"], "test_acc": r["cal_test_acc"]}
        entry["unimodal_uncalibrated"] = {"val_acc": r["uncal_val_acc"], "test_acc": r["uncal_test_acc"]}
    results["unimodal_s"] = time.perf_counter() - tic
    return results


def print_summary(results: dict, run_dir: str) -> None:
    print(summary_table(results))
    print(f"run directory: {run_dir}")


def run_unimodal(cfg: Config, institutions: list[Institution] | None = None) -> dict:
    """The unimodal baselines alone (``uml-fed unimodal``)."""
    start = time.perf_counter()
    device, run, institutions = _prepare(cfg, institutions)
    results = run_unimodal_baselines(cfg, institutions, device, run)
    results["classes"] = institutions[0].classes
    results["wall_time_s"] = time.perf_counter() - start
    run.write_results(results)
    return results
