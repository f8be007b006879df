"""Centralized runs on the one training loop: UML (Algorithm 1), the unimodal baseline and the
paired-data reference (early fusion).

Model selection: after every epoch each modality is evaluated on its validation split; among epochs
with index >= ``train.select_after`` (0-based, so 190 = "after 190 epochs" as in Table 7) each
modality keeps the weights (its projection + the backbone) of its best validation accuracy.  When the
run is shorter than ``select_after`` the final weights are used.  Then each modality's selected model
is BN-calibrated on its own training data (Algorithm 2) and evaluated (:mod:`uml_fed.evaluation`).

Every run writes its directory (``cfg.output_dir``): ``config.yaml``, ``metrics.jsonl``,
``results.json`` and the reported per-institution checkpoints.  In ``results.json`` each institution
has one entry per arm (``uml`` or a baseline method's name, ``unimodal``, ``paired``) holding every
evaluation, which one is reported, and the reported ``val_acc``/``test_acc``.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np
import torch

from .config import Config
from .data import Institution, Split, canonical_order, load_institutions, modality_of
from .evaluation import calibrate_and_evaluate, cross_site
from .methods import Method, build_method
from .methods.isca import Embedded, embed, fit_maps, isca_model
from .model import UMLModel
from .results import ArtifactError, RunDir, cross_site_table, summary_table
from .train import (
    baseline_model_cfg,
    build_baseline,
    compute_for,
    compute_record,
    fit,
    largest_institution_batches,
    personalise,
    resolve_device,
    seed_everything,
    seeded_generator,
    set_label_priors,
    split_tensors,
)


def _prepare(cfg: Config, institutions: list[Institution] | None) -> tuple[torch.device, RunDir, list[Institution]]:
    """Threads, device, run directory (with the resolved config) and the institutions' data."""
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    device = resolve_device(cfg.train.device)
    run = RunDir(cfg.output_dir)
    run.write_config(cfg)
    if institutions is None:
        institutions = load_institutions(cfg)
    return device, run, [canonical_order(inst, cfg.seed) for inst in institutions]


def _train_and_evaluate(
    arm: str,
    model: UMLModel,
    institutions: list[Institution],
    cfg: Config,
    device: torch.device,
    run: RunDir,
    results: dict[str, Any],
    method: Method | None = None,
    members: dict[str, list[Institution]] | None = None,
    largest: int = 0,
    personal: bool = False,
) -> dict[str, dict[str, Any]]:
    """Fit ``model``, then calibrate + evaluate every selected model into ``results``: on the institution
    it was trained on, or (``members``: pooled training) on each institution of the pool, calibrated on
    that institution's own data.  ``personal`` (UML models): each institution's copy first takes its own
    label prior and fine-tuning (:func:`uml_fed.train.personalise`).  Returns each evaluated
    institution's reported model (checkpoint payload)."""
    phase = arm if len(model.modalities) > 1 else f"{arm}/{model.modalities[0]}"
    selected, epochs, steps = fit(model, institutions, cfg, device, run.log, phase, method, largest)
    reported = {}
    for trained in institutions:
        for inst in (members or {}).get(trained.name, [trained]):
            chosen = selected[trained.name]
            if personal:
                tic = time.perf_counter()
                chosen = personalise(chosen, inst, cfg, device, seeded_generator(cfg.seed, "finetune", arm, inst.name))
                results.setdefault("personalise_s", {})[f"{arm}/{inst.name}"] = time.perf_counter() - tic
            r = calibrate_and_evaluate(
                chosen,
                inst,
                cfg,
                device,
                seeded_generator(cfg.seed, "calibrate", arm, inst.name),
                model_cfg=model.cfg,
            )
            reported[inst.name] = r.pop("checkpoint")
            run.defer_checkpoint(f"{arm}_{inst.name}", reported[inst.name])
            results.setdefault("calibration_s", {})[f"{arm}/{inst.name}"] = r.pop("calibration_s")
            results["modalities"].setdefault(inst.name, {})[arm] = {
                **r,
                "selected_epoch": epochs[trained.name],
                "steps_per_epoch": steps,
            }
    return reported


def record_cross_site(
    cfg: Config,
    arm: str,
    reported: dict[str, dict[str, Any]],
    institutions: list[Institution],
    device: torch.device,
    results: dict[str, Any],
) -> None:
    """``train.cross_site``: ``results["cross_site"][arm]`` = every reported model's test accuracy at every
    institution of its modality (:func:`uml_fed.evaluation.cross_site`)."""
    if cfg.train.cross_site:
        compute = compute_for(cfg.train, device)
        matrix = cross_site(reported, institutions, modality_of(cfg), device, cfg.train.eval_batch_size, compute)
        results.setdefault("cross_site", {})[arm] = matrix


def pool(institutions: list[Institution], name: str) -> Institution:
    """One institution holding the samples of ``institutions`` (same sensor and bands), split by split."""
    first = institutions[0]
    splits = {
        s: Split(
            np.concatenate([i.split(s).images for i in institutions]),
            np.concatenate([i.split(s).labels for i in institutions]),
            [sid for i in institutions for sid in i.split(s).ids],
        )
        for s in first.splits
    }
    return Institution(
        name=name, bands=first.bands, classes=first.classes, splits=splits, source=first.source,
        pixel_size_m=first.pixel_size_m,
    )  # fmt: skip


def _new_results(cfg: Config, mode: str, institutions: list[Institution], device: torch.device) -> dict[str, Any]:
    return {
        "mode": mode,
        "seed": cfg.seed,
        "classes": institutions[0].classes,
        "steps_per_epoch": cfg.train.steps_per_epoch,
        "compute": compute_record(compute_for(cfg.train, device), device),
        "modalities": {},
    }


def _finish(results: dict[str, Any], run: RunDir, start: float) -> dict[str, Any]:
    """``results.json`` first, then the checkpoints: a failed checkpoint write leaves the results (with the
    files that could not be written under ``unsaved``) and raises one line naming the file."""
    results["wall_time_s"] = time.perf_counter() - start
    path = run.write_results(results)
    unsaved = run.write_deferred()
    if unsaved:
        results["unsaved"] = unsaved
        run.write_results(results)
        more = f" (and {len(unsaved) - 1} more)" if len(unsaved) > 1 else ""
        raise ArtifactError(f"{unsaved[0]['reason']}{more}; the run's results are in {path}")
    return results


def uml_arm(cfg: Config, institutions: list[Institution], device: torch.device, run: RunDir, results: dict) -> None:
    """Algorithm 1 (or ``cfg.method``'s objective) over all institutions, then Algorithm 2 per institution.

    The results arm is the method's name (``uml``, ``dann``, ...).  ``train.pool_institutions``: the
    institutions of one sensor are pooled (one projection per sensor, Algorithm 1 over sensors) and the
    pooled model is calibrated and evaluated at each of them -- the reference for a federated run with
    several institutions per sensor.  A baseline only changes the training
    loss: model selection, static-BN calibration and evaluation per modality are UML's."""
    tic = time.perf_counter()
    members: dict[str, list[Institution]] = {}
    if cfg.train.pool_institutions:  # one projection per sensor, trained on all its institutions' data
        modality = modality_of(cfg)
        for inst in institutions:
            members.setdefault(modality[inst.name], []).append(inst)
    trained = [pool(m, name) if len(m) > 1 else m[0] for name, m in members.items()] or institutions
    seed_everything(cfg.seed)
    model = UMLModel({i.name: i.in_channels for i in trained}, len(institutions[0].classes), cfg.model)
    set_label_priors(model, trained)
    method = build_method(cfg.method, model)
    model.to(device).set_compute(compute_for(cfg.train, device), cfg.train.compile)
    reported = _train_and_evaluate(
        method.name,
        model,
        trained,
        cfg,
        device,
        run,
        results,
        method,
        {t.name: members[t.name] for t in trained} if members else None,
        largest_institution_batches(institutions, cfg.train.batch_size),
        personal=True,
    )
    record_cross_site(cfg, method.name, reported, institutions, device, results)
    results["method"] = method.name
    results[f"{method.name}_s"] = time.perf_counter() - tic


def isca_arm(cfg: Config, institutions: list[Institution], device: torch.device, run: RunDir, results: dict) -> None:
    """ISCA as its authors run it (:mod:`uml_fed.methods.isca`): each institution's unimodal encoder
    trained exactly as the ``unimodal`` arm trains its baseline (same phase name, so the same seeded
    batches), frozen; linear maps and a classifier fitted on the fixed embeddings; then evaluated and
    saved like every other modality model."""
    tic = time.perf_counter()
    encoder_cfg = baseline_model_cfg(cfg)
    largest = largest_institution_batches(institutions, cfg.train.batch_size)
    encoders, epochs, steps, data, reported = {}, {}, {}, {}, {}
    for inst in institutions:
        seed_everything(cfg.seed)
        model = build_baseline(inst, cfg, device)
        selected, epoch, steps[inst.name] = fit(
            model, [inst], cfg, device, run.log, f"unimodal/{inst.name}", None, largest
        )
        encoders[inst.name], epochs[inst.name] = selected[inst.name], epoch[inst.name]
        data[inst.name] = Embedded(
            *(
                (embed(encoders[inst.name], x, device, cfg.train.eval_batch_size), y.to(device))
                for x, y in (split_tensors(inst, "train"), split_tensors(inst, "val"))
            )
        )
    maps = fit_maps(
        data, len(institutions[0].classes), cfg.model.shared_components, cfg.method, seeded_generator(cfg.seed, "isca")
    )
    isca = UMLModel({i.name: i.in_channels for i in institutions}, len(institutions[0].classes), encoder_cfg)
    isca.to(device)
    for inst in institutions:
        mm = isca_model(encoders[inst.name], maps[inst.name], isca, inst.name)
        r = calibrate_and_evaluate(
            mm, inst, cfg, device, seeded_generator(cfg.seed, "calibrate", "isca", inst.name), model_cfg=encoder_cfg
        )
        reported[inst.name] = r.pop("checkpoint")
        run.defer_checkpoint(f"isca_{inst.name}", reported[inst.name])
        results.setdefault("calibration_s", {})[f"isca/{inst.name}"] = r.pop("calibration_s")
        results["modalities"].setdefault(inst.name, {})["isca"] = {
            **r,
            "selected_epoch": epochs[inst.name],
            "selected_iteration": maps[inst.name].iteration,
            "steps_per_epoch": steps[inst.name],
        }
    record_cross_site(cfg, "isca", reported, institutions, device, results)
    results["method"] = "isca"
    results["isca_s"] = time.perf_counter() - tic


def unimodal_arm(
    cfg: Config,
    institutions: list[Institution],
    device: torch.device,
    run: RunDir,
    results: dict,
    arm: str = "unimodal",
) -> None:
    """One ResNet-18 per institution, all blocks private, same schedule and selection.

    ``train.unimodal_bn``: ``ordinary`` (Table 7: running statistics, no calibration) or ``calibrated``
    (static BN + Algorithm 2, like UML).  The paired reference (``arm="paired"``, one fused
    institution) has no other site to be evaluated at.
    """
    tic = time.perf_counter()
    largest = largest_institution_batches(institutions, cfg.train.batch_size)
    reported = {}
    for inst in institutions:
        seed_everything(cfg.seed)
        model = build_baseline(inst, cfg, device)
        reported.update(_train_and_evaluate(arm, model, [inst], cfg, device, run, results, largest=largest))
    if arm != "paired":
        record_cross_site(cfg, arm, reported, institutions, device, results)
    results[f"{arm}_s"] = time.perf_counter() - tic


def run_centralized(cfg: Config, institutions: list[Institution] | None = None, unimodal: bool | None = None) -> dict:
    """UML (Algorithm 1 + 2) over all institutions, plus (optionally) the unimodal baselines."""
    start = time.perf_counter()
    device, run, institutions = _prepare(cfg, institutions)
    results = _new_results(cfg, "centralized", institutions, device)
    (isca_arm if cfg.method.name == "isca" else uml_arm)(cfg, institutions, device, run, results)
    if unimodal if unimodal is not None else cfg.train.run_unimodal:
        unimodal_arm(cfg, institutions, device, run, results)
    return _finish(results, run, start)


def run_unimodal(cfg: Config, institutions: list[Institution] | None = None) -> dict:
    """The unimodal baselines alone (``uml-fed unimodal``)."""
    start = time.perf_counter()
    device, run, institutions = _prepare(cfg, institutions)
    results = _new_results(cfg, "unimodal", institutions, device)
    unimodal_arm(cfg, institutions, device, run, results)
    return _finish(results, run, start)


def fuse(institutions: list[Institution]) -> Institution:
    """Early fusion of paired institutions: one input with every band of every institution.

    The institutions must hold the same scenes in the same order (``data.paired=true``).
    """
    first = institutions[0]
    splits = {}
    for name, s in first.splits.items():
        for inst in institutions[1:]:
            if inst.split(name).ids != s.ids:
                raise ValueError(
                    f"fusion needs paired institutions: {first.name!r} and {inst.name!r} hold different "
                    f"{name} scenes; load them with data.paired=true"
                )
        images = np.concatenate([inst.split(name).images for inst in institutions], axis=1)
        splits[name] = Split(images, s.labels, list(s.ids))
    mean = std = None
    if all(i.mean is not None and i.std is not None for i in institutions):
        mean = np.concatenate([i.mean for i in institutions])
        std = np.concatenate([i.std for i in institutions])
    return Institution(
        name="+".join(i.name for i in institutions),
        bands=[f"{i.name}:{b}" for i in institutions for b in i.bands],
        classes=first.classes,
        splits=splits,
        mean=mean,
        std=std,
        source=first.source,
    )


def run_paired(cfg: Config) -> dict:
    """The paired-data reference (Table 3, gray row): paired scenes, all bands of every sensor in one
    ResNet-18 (early fusion, multimodal inference), unimodal schedule, selection and BN choice."""
    start = time.perf_counter()
    paired = copy.deepcopy(cfg)
    paired.data.paired = True
    device, run, institutions = _prepare(paired, None)
    fused = fuse(institutions)
    results = _new_results(paired, "paired", [fused], device)
    unimodal_arm(paired, [fused], device, run, results, arm="paired")
    return _finish(results, run, start)


def print_summary(results: dict, run_dir: str) -> None:
    print(summary_table(results))
    if "cross_site" in results:
        print(cross_site_table(results))
    print(f"run directory: {run_dir}")
