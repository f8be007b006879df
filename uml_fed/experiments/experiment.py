"""``uml-fed experiment NAME [overrides]``: every arm of a paper table or figure at every seed, then its
report from the stored runs.

    uml-fed experiment table3                          # CPU scale, embedded data, seeds 0 1 2
    uml-fed experiment fig3 runner.seeds=[0,1,2,3,4]
    uml-fed experiment table3 runner.scale=paper runner.dataset=eurosat_s1_rgb data.root=/data/eurosat

Runs land in ``<runner.root>/runs/`` (content-addressed, reused across experiments and invocations);
the report in ``<runner.root>/<name>/<variant>/``: ``report.md``, ``report.json`` and ``figure.png``
where the paper has a figure.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any

from ..config import ConfigError, load_config
from . import report as rep
from .definitions import EXPERIMENTS, LABELS, Experiment
from .runner import code_fingerprint, machine, run_arm


def base_overrides(exp: Experiment, overrides: list[str]) -> tuple[list[str], str]:
    """Overrides every arm starts from, and the report variant (``cpu`` or the dataset)."""
    runner = load_config(overrides).runner
    if runner.scale == "cpu":
        return [*exp.cpu, *overrides], "cpu"
    return [f"experiment={exp.preset.format(dataset=runner.dataset)}", *overrides], runner.dataset


def run_experiment(name: str, overrides: list[str], log=print) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Every arm of ``name`` at every seed (finished runs reused), then the report; returns its JSON."""
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; choose one of {sorted(EXPERIMENTS)}")
    exp = EXPERIMENTS[name]
    start = time.perf_counter()
    base, variant = base_overrides(exp, list(overrides))
    cfg = load_config(base)
    base = [*base, f"train.num_threads={cfg.runner.threads}"]  # pinned: part of every run's identity
    arms = exp.arms(cfg, cfg.runner.scale)
    root = Path(cfg.runner.root).expanduser().resolve()
    jobs = [(arm, seed) for seed in cfg.runner.seeds for arm in arms]
    runs = run_all(jobs, base, root, cfg.runner.parallel, log)
    reports = Path(cfg.runner.report_root).expanduser().resolve() if cfg.runner.report_root else root
    out = reports / name / variant
    out.mkdir(parents=True, exist_ok=True)
    payload = write_report(
        exp,
        runs,
        out,
        {
            "command": shlex.join(["uml-fed", "experiment", name, *overrides]),
            "variant": variant,
            "seeds": list(cfg.runner.seeds),
            "code": code_fingerprint(),
            "machine": machine(),
            "threads": cfg.runner.threads,
            "parallel": cfg.runner.parallel,
            "this_invocation_s": time.perf_counter() - start,
        },
    )
    write_index(reports)
    log(f"[experiment] report: {out / 'report.md'}")
    return payload


def _compute_line(r: dict[str, Any]) -> str:
    if "threads" not in r:  # a report that recorded only the torch threads of the process that wrote it
        return f"{r['machine']['cpus']} threads"
    return f"{r['machine']['cpus']} CPUs, {r['threads']} torch threads per run, {r['parallel']} side by side"


def write_index(reports: Path) -> Path:
    """``<reports>/README.md``: every report found there, with its command and headline numbers."""
    lines = [
        "# Experiment reports",
        "",
        "Written by `uml-fed experiment` from stored runs; each report says the command that made it.",
        "",
    ]
    for path in sorted(reports.glob("*/*/report.json")):
        r = json.loads(path.read_text())
        rel = path.parent.relative_to(reports).as_posix()
        lines += [
            f"## [{r['paper']} ({r['variant']})]({rel}/report.md)",
            "",
            f"`{r['command']}`",
            "",
            f"Seeds {r['seeds']}, code `{r['code']}`, {r['compute_s'] / 60:.0f} min of training on "
            f"{r['machine']['platform']} ({_compute_line(r)}, GPU: {r['machine']['cuda'] or 'none'}).",
            "",
        ]
    index = reports / "README.md"
    index.write_text("\n".join(lines))
    return index


def run_all(jobs: list, base: list[str], root: Path, parallel: int, log) -> list[rep.Run]:  # type: ignore[no-untyped-def]
    """Every (arm, seed): one after another in this process, or (``parallel`` > 1) each in its own
    process, ``parallel`` at a time (a run seeds torch's global generator and sets its threads)."""
    if parallel == 1:
        return [run_arm(arm, seed, base, root, log) for arm, seed in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=parallel, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_arm, arm, seed, base, root, print) for arm, seed in jobs]
        return [f.result() for f in futures]


def write_report(exp: Experiment, runs: list[rep.Run], out: Path, meta: dict[str, Any]) -> dict[str, Any]:
    table = rep.Table.from_runs(runs)
    keys = rep.ordered_keys(table, list(LABELS))
    labels = rep.key_labels(table, LABELS, exp.x_label)
    compute_s = sum(r.results.get("run_s", 0.0) for r in runs)
    evaluations = sorted({f"{LABELS.get(table.series[k], k)}: {table.evaluations[k]}" for k in keys})
    lines = [
        f"# {exp.paper}: {exp.question}",
        "",
        f"Written by `{meta['command']}` from {len(runs)} stored runs (seeds {meta['seeds']}; package source "
        f"of the runs: {', '.join(f'`{c}`' for c in sorted({r.results.get('code', '?') for r in runs}))}); "
        "do not edit by hand.",
        "",
        f"Machine: {meta['machine']['platform']}, {meta['machine']['cpus']} CPUs; every run on {meta['threads']} "
        f"torch threads (runner.threads), {meta['parallel']} side by side (runner.parallel); "
        f"torch {meta['machine']['torch']}, GPU: {meta['machine']['cuda'] or 'none'}. "
        f"Training time of all runs: {compute_s / 60:.1f} min; this invocation: {meta['this_invocation_s'] / 60:.1f} min.",
        "",
        "Reported evaluation per method: " + "; ".join(evaluations) + ".",
        "",
        "Optimiser steps per epoch: "
        + "; ".join(f"{labels[k]}: {steps}" for k, steps in rep.steps_per_epoch(runs, table, keys).items())
        + ". How each run computed: "
        + "; ".join(rep.computes(runs))
        + ".",
        "",
        "## Test accuracy (%), mean ± std over seeds",
        "",
        rep.accuracy_table(table, keys, labels),
        "",
    ]
    diffs = rep.difference_tables(table, keys, labels)
    if diffs:
        lines += ["## Difference to the unimodal baseline (percentage points), same seed", "", diffs, ""]
    if exp.against:
        lines += [
            f"## Difference to {LABELS[exp.against]} (percentage points), same setting and seed",
            "",
            rep.difference_tables(table, keys, labels, exp.against),
            "",
        ]
    if exp.matrix:
        lines += [
            "## Change of the evaluated modality's accuracy with each supplementary modality "
            "(pp: mean [95 % CI], seeds > 0)",
            "",
            rep.pair_matrices(table),
            "",
        ]
    if exp.regime:
        lines += ["## Where the effect lives: the weaker modality, per setting", "", rep.regime_table(table), ""]
    if exp.cross_site:
        section = rep.cross_site_section(runs, keys, labels, out / "cross_site.png")
        if section:
            lines += [
                "## Cross-site test accuracy (%): each institution's model at every site of its sensor",
                "",
                section,
                "",
            ]
    if exp.figure:
        rep.plot(
            table, exp.figure, out / "figure.png", LABELS, f"{exp.paper} ({meta['variant']})", exp.x_label, exp.log_x
        )
        lines += ["![figure](figure.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    payload = {
        "experiment": exp.name,
        "paper": exp.paper,
        **meta,
        "compute_s": compute_s,
        "institutions": table.institutions,
        "arms": {
            k: {
                "series": table.series[k],
                "x": table.x[k],
                "label": labels[k],
                "evaluation": table.evaluations[k],
                "test_acc": {
                    str(s): {**v, rep.MEAN: m}
                    for (s, v), m in zip(sorted(table.values[k].items()), table.samples(k, rep.MEAN))
                },
            }
            for k in keys
        },
        "differences": rep.differences(table, keys),
        **({f"differences_to_{exp.against}": rep.differences(table, keys, exp.against)} if exp.against else {}),
        "cross_site": rep.cross_site_runs(runs),
        "runs": [
            {"arm": r.arm.key, "seed": r.seed, "dir": str(r.path), "reused": r.reused, "run_s": r.results.get("run_s")}
            for r in runs
        ],
    }
    rep.write_json(out / "report.json", payload)
    return payload
