"""Reports written from stored runs, never by hand: markdown tables (mean ± std over seeds and the
per-seed paired difference to the unimodal baseline), a PNG figure where the paper has one, and a
JSON file with every number.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .runner import Run

# the arm name each method writes into results.json (``modalities.<institution>.<arm>``)
RESULT_ARM = {"uml": "uml", "unimodal": "unimodal", "paired": "paired", "federated": "fed"}
MEAN = "mean"


@dataclass
class Table:
    """Per (arm key, seed): each institution's reported test accuracy, and their mean."""

    institutions: list[str]
    values: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)
    series: dict[str, str] = field(default_factory=dict)  # arm key -> series
    x: dict[str, float | None] = field(default_factory=dict)  # arm key -> x
    group: dict[str, str] = field(default_factory=dict)  # arm key -> group
    evaluations: dict[str, str] = field(default_factory=dict)  # arm key -> reported evaluation

    @classmethod
    def from_runs(cls, runs: list[Run]) -> Table:
        institutions: list[str] = []
        table = cls(institutions)
        for run in runs:
            arm = run.results.get("method", "uml") if run.arm.method == "uml" else RESULT_ARM[run.arm.method]
            per_inst = {}
            for inst, entry in run.results["modalities"].items():
                if arm in entry:
                    per_inst[inst] = entry[arm]["test_acc"]
                    table.evaluations[run.arm.key] = entry[arm]["reported"]
                    if run.arm.method != "paired" and inst not in institutions:
                        institutions.append(inst)
            table.values.setdefault(run.arm.key, {})[run.seed] = per_inst
            table.series[run.arm.key] = run.arm.series
            table.x[run.arm.key] = run.arm.x
            table.group[run.arm.key] = run.arm.group
        return table

    def seeds(self, key: str) -> list[int]:
        return sorted(self.values[key])

    def samples(self, key: str, inst: str) -> list[float]:
        """Per seed: the institution's accuracy, or (``mean``) the mean over the run's institutions."""
        runs = [self.values[key][s] for s in self.seeds(key)]
        if inst == MEAN:
            return [statistics.fmean(r.values()) for r in runs]
        return [r[inst] for r in runs if inst in r]

    def diff(self, key: str, ref: str, inst: str) -> list[float]:
        """Per-seed paired difference ``key - ref`` (same seed = same data and initialisation); for
        ``mean``, the mean difference over the institutions both runs have."""
        out = []
        for s in sorted(set(self.values[key]) & set(self.values[ref])):
            a, b = self.values[key][s], self.values[ref][s]
            both = [i for i in a if i in b] if inst == MEAN else [inst] if inst in a and inst in b else []
            if both:
                out.append(statistics.fmean(a[i] - b[i] for i in both))
        return out


def mean_std(xs: list[float]) -> tuple[float, float]:
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def interval(xs: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and the two-sided ``level`` Student-t confidence interval of the mean (n - 1 degrees of
    freedom; with one value the interval is unbounded)."""
    from scipy.stats import t

    m = statistics.fmean(xs)
    if len(xs) < 2:
        return m, float("-inf"), float("inf")
    half = float(t.ppf(0.5 + level / 2, len(xs) - 1)) * statistics.stdev(xs) / len(xs) ** 0.5
    return m, m - half, m + half


def paired(xs: list[float]) -> str:
    """A paired difference in points: mean [95 % CI] and on how many seeds it is positive."""
    if not xs:
        return "-"
    m, lo, hi = interval(xs)
    return f"{100 * m:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}], {sum(x > 0 for x in xs)}/{len(xs)} > 0"


def pct(xs: list[float], signed: bool = False) -> str:
    """``mean ± std`` in percent (points), sample std over seeds."""
    if not xs:
        return "-"
    m, s = mean_std(xs)
    return f"{100 * m:+.2f} ± {100 * s:.2f}" if signed else f"{100 * m:.2f} ± {100 * s:.2f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def accuracy_table(table: Table, keys: list[str], labels: dict[str, str]) -> str:
    """Rows = arms, columns = institutions + mean: test accuracy (%) mean ± std over seeds."""
    cols = [*table.institutions, MEAN]
    rows = [[labels[k], *(pct(table.samples(k, c)) for c in cols)] for k in keys if k in table.values]
    return markdown_table(["method", *cols], rows)


def difference_table(table: Table, keys: list[str], ref: str, labels: dict[str, str]) -> str:
    """Rows = arms, columns = institutions + mean: the same-seed paired difference to ``ref`` (points),
    mean [95 % t interval] and the seeds on which it is positive."""
    cols = [*table.institutions, MEAN]
    rows = []
    for k in keys:
        if k == ref or k not in table.values or ref not in table.values:
            continue
        rows.append([labels[k], *(paired(table.diff(k, ref, c)) for c in cols)])
    return markdown_table([f"Δ vs {labels[ref]} (pp: mean [95 % CI], seeds > 0)", *cols], rows)


def _compared(table: Table, key: str, series: str) -> str | None:
    """The run of ``series`` that ``key`` is compared with, or None where the comparison says nothing: the
    paired reference, the run itself, and (against another series) the unimodal baseline, whose
    difference is the other table's with its sign turned."""
    ref = reference_of(table, key, series)
    skip = {"paired"} if series == "unimodal" else {"paired", "unimodal"}
    return None if ref is None or ref == key or table.series[key] in skip else ref


def differences(table: Table, keys: list[str], series: str = "unimodal") -> dict[str, Any]:
    """Every arm's same-seed paired difference to its run of ``series`` (the unimodal baseline by
    default), per institution and mean."""
    out: dict[str, Any] = {}
    for k in keys:
        ref = _compared(table, k, series)
        if ref is None:
            continue
        out[k] = {"reference": ref}
        for inst in [*table.institutions, MEAN]:
            d = table.diff(k, ref, inst)
            if d:
                m, lo, hi = interval(d)
                out[k][inst] = {"per_seed": d, "mean": m, "ci95": [lo, hi], "positive": sum(x > 0 for x in d)}
    return out


def steps_per_epoch(runs: list[Run], table: Table, keys: list[str]) -> dict[str, str]:
    """Per arm key, the optimiser steps per epoch its runs took (one value, or the values by institution)."""
    seen: dict[str, dict[str, set[int]]] = {}
    for run in runs:
        arm = run.results.get("method", "uml") if run.arm.method == "uml" else RESULT_ARM[run.arm.method]
        for inst, entry in run.results["modalities"].items():
            if arm in entry and entry[arm].get("steps_per_epoch") is not None:
                seen.setdefault(run.arm.key, {}).setdefault(inst, set()).add(int(entry[arm]["steps_per_epoch"]))
    out = {}
    for k in keys:
        per_inst = seen.get(k, {})
        values = sorted(set().union(*per_inst.values())) if per_inst else []
        if len(values) == 1:
            out[k] = str(values[0])
        elif values:
            out[k] = ", ".join(f"{i} {'/'.join(map(str, sorted(v)))}" for i, v in per_inst.items())
    return out


def computes(runs: list[Run]) -> list[str]:
    """The distinct (precision, layout, threads) the runs computed with, and how many runs each."""
    counts: dict[str, int] = {}
    for run in runs:
        found = [run.results["compute"]] if "compute" in run.results else []
        found += [e["fed"]["compute"] for e in run.results["modalities"].values() if "compute" in e.get("fed", {})]
        texts = {
            f"{c['precision']}, {'channels-last' if c['channels_last'] else 'NCHW'}, {c['threads']} thread(s)"
            for c in found
        } or {"not recorded"}
        for text in texts:
            counts[text] = counts.get(text, 0) + 1
    return [f"{text} ({n} runs)" for text, n in sorted(counts.items())]


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def reference_of(table: Table, key: str, series: str = "unimodal") -> str | None:
    """The run of ``series`` (the unimodal baseline by default) a key is compared with: of the same group
    and x where there is one."""
    x, group = table.x.get(key), table.group.get(key, "")
    base = f"{series} [{group}]" if group else series
    for ref in (f"{base}@{x:g}" if x is not None else None, base, series):
        if ref is not None and ref in table.values:
            return ref
    return None


def ordered_keys(table: Table, series_order: list[str]) -> list[str]:
    rank = {s: i for i, s in enumerate(series_order)}
    groups = list(dict.fromkeys(table.group[k] for k in table.values))
    return sorted(
        table.values,
        key=lambda k: (
            groups.index(table.group[k]),
            table.x[k] is not None,
            table.x[k] or 0,
            rank.get(table.series[k], 99),
        ),
    )


def key_labels(table: Table, names: dict[str, str], x_label: str) -> dict[str, str]:
    out = {}
    for k in table.values:
        name = names.get(table.series[k], table.series[k])
        if table.group[k]:
            name = f"{name} [{table.group[k]}]"
        out[k] = name if table.x[k] is None else f"{name}, {x_label or 'x'} = {table.x[k]:g}"
    return out


def difference_tables(table: Table, keys: list[str], labels: dict[str, str], series: str = "unimodal") -> str:
    """Per-seed paired differences to the matching run of ``series`` (the unimodal baseline by default),
    one table per reference."""
    by_ref: dict[str, list[str]] = {}
    for k in keys:
        ref = _compared(table, k, series)
        if ref is not None:
            by_ref.setdefault(ref, []).append(k)
    return "\n\n".join(difference_table(table, [ref, *ks], ref, labels) for ref, ks in by_ref.items())


def plot(table: Table, kind: str, path: Path, names: dict[str, str], title: str, x_label: str, log_x: bool) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    insts = table.institutions
    if kind == "bars":
        series = [s for s in names if any(table.series[k] == s and table.x[k] is None for k in table.values)]
        bar_series = [s for s in series if s != "paired"]
        fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(insts) + 2), 3.8))
        width = 0.8 / max(1, len(bar_series))
        for j, s in enumerate(bar_series):
            ms = [mean_std(table.samples(s, i)) for i in insts]
            xs = [i + (j - (len(bar_series) - 1) / 2) * width for i in range(len(insts))]
            ax.bar(xs, [100 * m for m, _ in ms], width, yerr=[100 * sd for _, sd in ms], capsize=3, label=names[s])
        if "paired" in series:
            m, _ = mean_std(table.samples("paired", MEAN))
            ax.axhline(100 * m, color="gray", ls="--", label=f"{names['paired']} (mean)")
        ax.set_xticks(range(len(insts)))
        ax.set_xticklabels(insts, rotation=30 if len(insts) > 4 else 0)
    else:
        fig, axes = plt.subplots(1, len(insts), figsize=(4.2 * len(insts), 3.6), squeeze=False)
        groups = list(dict.fromkeys(table.group[k] for k in table.values))
        curves = [
            (s, g)
            for s in names
            for g in groups
            if any(table.series[k] == s and table.group[k] == g for k in table.values)
        ]
        for ax, inst in zip(axes[0], insts):
            for c, (s, g) in enumerate(curves):
                label = f"{names[s]} [{g}]" if g else names[s]
                keys = sorted(
                    (k for k in table.values if table.series[k] == s and table.group[k] == g),
                    key=lambda k: table.x[k] or 0,
                )
                if table.x[keys[0]] is None:
                    m, _ = mean_std(table.samples(keys[0], inst))
                    ax.axhline(100 * m, color=f"C{c}", ls=":", label=label)
                    continue
                xs = [table.x[k] for k in keys]
                ms = [mean_std(table.samples(k, inst)) for k in keys]
                ax.errorbar(
                    xs,
                    [100 * m for m, _ in ms],
                    yerr=[100 * sd for _, sd in ms],
                    color=f"C{c}",
                    marker="o",
                    capsize=3,
                    label=label,
                )
            if log_x:
                ax.set_xscale("log")
                ax.minorticks_off()
            xs_all = sorted({table.x[k] for k in table.values if table.x[k] is not None})
            ax.set_xticks(xs_all)
            ax.set_xticklabels([f"{x:g}" for x in xs_all])
            ax.set_xlabel(x_label)
            ax.set_title(inst)
        ax = axes[0][0]
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def pair_matrices(table: Table) -> str:
    """Tables 1 and 2: per setting (group), rows = evaluated institution, columns = supplementary one;
    cells = UML(pair) - the setting's unimodal baseline, for the evaluated institution."""
    insts = table.institutions
    out = []
    for group in dict.fromkeys(table.group[k] for k in table.values):
        rows = []
        for ev in insts:
            cells = []
            for sup in insts:
                pair = (f"uml [{ev}+{sup}]", f"uml [{sup}+{ev}]")
                key = next((k for k in table.values if table.series[k] in pair and table.group[k] == group), None)
                ref = reference_of(table, key) if key else None
                cells.append("-" if ev == sup or key is None or ref is None else paired(table.diff(key, ref, ev)))
            rows.append([ev, *cells])
        if any(c != "-" for r in rows for c in r[1:]):
            title = f"**{group}**\n\n" if group else ""
            out.append(title + markdown_table(["evaluated \\ supplementary", *insts], rows))
    return "\n\n".join(out)


def regime_table(table: Table) -> str:
    """The weaker modality (lower mean unimodal accuracy) per setting and x: UML's paired difference, its
    interval, and what the interval says (its sign, or no effect detected)."""
    refs = [k for k in table.values if table.series[k] == "unimodal"]
    mean_acc = {i: statistics.fmean(v for k in refs for v in table.samples(k, i)) for i in table.institutions}
    weak = min(mean_acc, key=mean_acc.get)
    rows = []
    umls = sorted(
        (k for k in table.values if table.series[k] == "uml"), key=lambda k: (table.group[k], table.x[k] or 0)
    )
    for k in umls:
        ref = reference_of(table, k)
        d = table.diff(k, ref, weak) if ref else []
        if not d:
            continue
        _, lo, hi = interval(d)
        verdict = "helps (interval > 0)" if lo > 0 else "hurts (interval < 0)" if hi < 0 else "no effect detected"
        base = statistics.fmean(table.samples(ref, weak))
        rows.append([table.group[k], f"{table.x[k]:g}", f"{100 * base:.2f}", paired(d), verdict])
    head = ["setting", "x", f"unimodal {weak} (%)", f"Δ {weak} (pp: mean [95 % CI], seeds > 0)", "verdict"]
    lead = f"The weaker modality here: {weak} (mean unimodal accuracy over all settings {100 * mean_acc[weak]:.2f} %)."
    return lead + "\n\n" + markdown_table(head, rows)


def cross_site_runs(runs: list[Run]) -> dict[str, dict[int, dict[str, dict[str, float]]]]:
    """Per arm key and seed, the run's cross-site matrix of that arm (``train.cross_site``)."""
    out: dict[str, dict[int, dict[str, dict[str, float]]]] = {}
    for run in runs:
        arm = run.results.get("method", "uml") if run.arm.method == "uml" else RESULT_ARM[run.arm.method]
        matrix = run.results.get("cross_site", {}).get(arm)
        if matrix:
            out.setdefault(run.arm.key, {})[run.seed] = matrix
    return out


def _site_gap(matrix: dict[str, dict[str, float]]) -> float | None:
    """Mean accuracy at the other sites minus mean accuracy at its own, over a matrix's models (None
    when either side has no cell: a site that did not reply)."""
    own = [row[o] for o, row in matrix.items() if o in row]
    other = [a for o, row in matrix.items() for s, a in row.items() if s != o]
    return statistics.fmean(other) - statistics.fmean(own) if own and other else None


def cross_site_section(runs: list[Run], keys: list[str], labels: dict[str, str], png: Path) -> str:
    """Markdown: per arm, the seed-mean matrix (row: whose model, column: whose test split), and a table
    of what a model loses at the neighbours (mean off-diagonal - mean diagonal, per seed, with its 95 %
    interval); the matrices also as one heat-map PNG."""
    found = cross_site_runs(runs)
    ordered = [k for k in keys if k in found]
    if not ordered:
        return ""
    means: dict[str, dict[str, dict[str, float]]] = {}
    lines = []
    gaps = []
    for k in ordered:
        seeds = found[k]
        owners = list(dict.fromkeys(o for m in seeds.values() for o in m))
        means[k] = {
            o: {
                s: statistics.fmean(m[o][s] for m in seeds.values() if s in m.get(o, {}))
                for s in dict.fromkeys(s for m in seeds.values() for s in m.get(o, {}))
            }
            for o in owners
        }
        sites = list(dict.fromkeys(s for row in means[k].values() for s in row))
        rows = [[o, *(f"{100 * means[k][o][s]:.1f}" if s in means[k][o] else "-" for s in sites)] for o in owners]
        lines += [
            f"**{labels[k]}** (seeds {sorted(seeds)})",
            "",
            markdown_table(["model of \\ test at", *sites], rows),
            "",
        ]
        gaps.append([labels[k], paired([g for _, m in sorted(seeds.items()) if (g := _site_gap(m)) is not None])])
    head = markdown_table(
        ["method", "at the other sites of its sensor − at its own (pp: mean [95 % CI], seeds > 0)"], gaps
    )
    plot_cross_site(means, ordered, labels, png)
    return "\n".join([head, "", f"![cross-site]({png.name})", "", *lines])


def plot_cross_site(
    means: dict[str, dict[str, dict[str, float]]], keys: list[str], labels: dict[str, str], path: Path
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cols = min(4, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(keys) :]:
        ax.axis("off")
    for ax, k in zip(axes.flat, keys):
        owners = list(means[k])
        sites = list(dict.fromkeys(s for row in means[k].values() for s in row))
        grid = np.array([[100 * means[k][o].get(s, np.nan) for s in sites] for o in owners])
        ax.imshow(grid, vmin=0, vmax=100, cmap="viridis")
        for (i, j), v in np.ndenumerate(grid):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7, color="white" if v < 60 else "black")
        ax.set_xticks(range(len(sites)), sites, rotation=45, fontsize=7)
        ax.set_yticks(range(len(owners)), owners, fontsize=7)
        ax.set_title(labels[k], fontsize=7, wrap=True)
    fig.supxlabel("test split of", fontsize=8)
    fig.supylabel("model of", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
