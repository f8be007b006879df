"""R x L sweeps (the paper's Figure 4): federated runs for every L with R = total / L, plus the
centralized UML and unimodal references on the same data and seed; one table and one plot.

Each federated run is a real ``flwr run`` (Ray simulation, one SuperNode per institution) launched by
:func:`uml_fed.federated.launch.flwr_run`.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

from ..centralized import run_centralized
from ..config import Config, ConfigError
from ..data import institution_names
from ..results import RunDir
from .launch import flwr_run


def check_schedules(total: int, local_epochs: list[int]) -> list[tuple[int, int]]:
    """(L, R) pairs with R x L = total; every L must divide the total."""
    bad = [L for L in local_epochs if L < 1 or total % L]
    if bad:
        raise ConfigError(
            f"fed.sweep_local_epochs={list(local_epochs)}: {bad} do not divide train.epochs={total}; "
            "choose local epochs that divide the total so that R x L stays the budget"
        )
    return [(L, total // L) for L in local_epochs]


def run_sweep(cfg: Config, overrides: list[str] | None = None) -> dict[str, Any]:
    """Federated runs over ``fed.sweep_local_epochs`` + references; writes sweep.{json,md,png}."""
    run = RunDir(cfg.output_dir)
    run.write_config(cfg)
    schedules = check_schedules(cfg.train.epochs, list(cfg.fed.sweep_local_epochs))
    names = institution_names(cfg)
    passthrough = [o for o in (overrides or []) if not o.startswith(("fed.local_epochs=", "fed.rounds="))]

    ref_cfg = copy.deepcopy(cfg)
    ref_cfg.output_dir = str(run.path / "centralized")
    print(f"[sweep] centralized UML + unimodal references -> {ref_cfg.output_dir}", flush=True)
    refs = run_centralized(ref_cfg, unimodal=True)

    fed: dict[int, dict[str, Any]] = {}
    for L, R in schedules:
        out = run.path / f"federated_L{L}"
        print(f"[sweep] federated L={L} R={R} -> {out}", flush=True)
        result = flwr_run(
            {
                "overrides": " ".join(passthrough),
                "local-epochs": L,
                "num-server-rounds": R,
                "seed": cfg.seed,
                "output-dir": str(out),
            },
            federation_config={
                "num-supernodes": len(names),
                "client-resources-num-cpus": cfg.fed.client_cpus,
                "client-resources-num-gpus": cfg.fed.client_gpus,
            },
            stream_to=sys.stdout if cfg.train.progress else None,
        )
        res_file = out / "results.json"
        if result.returncode != 0 or not res_file.is_file():
            raise RuntimeError(f"federated run L={L} failed (exit {result.returncode}):\n{result.output[-4000:]}")
        fed[L] = json.loads(res_file.read_text())
        fed[L]["flwr_run_s"] = result.seconds

    summary = sweep_summary(refs, fed, names, cfg.train.epochs)
    run.write_results(summary, file="sweep.json")
    (run.path / "sweep.md").write_text(sweep_table(summary))
    plot_sweep(summary, run.path / "sweep.png")
    print(sweep_table(summary), flush=True)
    print(f"sweep directory: {run.path}", flush=True)
    return summary


def sweep_summary(refs: dict, fed: dict[int, dict], names: list[str], total: int) -> dict[str, Any]:
    rows = []
    for L in sorted(fed):
        r = fed[L]
        row = {"L": L, "R": r["rounds"], "total_epochs": total, "wall_s": r.get("flwr_run_s")}
        for m in names:
            mm = r["modalities"].get(m, {})
            row[m] = mm.get("fed_calibrated", {}).get("test_acc")
            row[f"{m}_uncalibrated"] = mm.get("fed_uncalibrated", {}).get("test_acc")
        row["failures"] = r.get("failures", [])
        rows.append(row)
    references = {
        m: {
            "centralized_uml": refs["modalities"][m]["uml_calibrated"]["test_acc"],
            "unimodal": refs["modalities"][m]["unimodal"]["test_acc"],
        }
        for m in names
    }
    return {"modalities": names, "federated": rows, "references": references}


def sweep_table(summary: dict[str, Any]) -> str:
    names = summary["modalities"]
    head = "| L | R | " + " | ".join(f"{m} fed (cal.)" for m in names) + " | mean |"
    lines = [head, "|" + "---|" * (3 + len(names))]
    for row in summary["federated"]:
        accs = [row[m] for m in names if row[m] is not None]
        cells = " | ".join(f"{100 * row[m]:.2f}" if row[m] is not None else "-" for m in names)
        mean = f"{100 * sum(accs) / len(accs):.2f}" if accs else "-"
        lines.append(f"| {row['L']} | {row['R']} | {cells} | {mean} |")
    for key, label in (("centralized_uml", "centralized UML"), ("unimodal", "unimodal")):
        vals = [summary["references"][m][key] for m in names]
        cells = " | ".join(f"{100 * v:.2f}" for v in vals)
        lines.append(f"| {label} | - | {cells} | {100 * sum(vals) / len(vals):.2f} |")
    return "\n".join(lines) + "\n"


def plot_sweep(summary: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = summary["modalities"]
    rows = summary["federated"]
    Ls = [r["L"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, m in enumerate(names):
        color = f"C{i}"
        ax.plot(Ls, [100 * r[m] if r[m] is not None else float("nan") for r in rows], "o-", color=color,
                label=f"{m}: federated UML (BN cal.)")
        ax.axhline(100 * summary["references"][m]["unimodal"], color=color, ls=":", label=f"{m}: unimodal")
        ax.axhline(100 * summary["references"][m]["centralized_uml"], color=color, ls="--",
                   label=f"{m}: centralized UML")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(Ls)
    ax.set_xticklabels([str(L) for L in Ls])
    ax.set_xlabel(f"local epochs L (R x L = {rows[0]['total_epochs'] if rows else '?'})")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Federated UML vs local epochs")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
