"""The paper's tables and figures as named experiments (``uml-fed experiment NAME``).

Each experiment lists its arms (a method + config overrides, optionally a position on a figure axis)
for a base configuration, and writes its report from the stored runs.  Two scales:

* ``runner.scale=cpu`` (default): the embedded synthetic data and CPU-sized model and schedule
  (``configs/experiment/default.yaml``); every experiment finishes on a 2-core machine;
* ``runner.scale=paper``: a real archive with the paper's model and schedule (Table 7), chosen by
  ``runner.dataset`` (bigearthnet | sen12ms | eurosat_s1_rgb) and the presets in
  ``configs/experiment/<dataset>_{bimodal,finegrained}_{full,lowdata}.yaml``; GPU work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..config import Config, ConfigError
from .runner import Arm

LABELS = {  # also the row order of reports: the paper's, baselines between unimodal and UML
    "unimodal": "Unimodal",
    "isca": "ISCA (Timilsina et al. 2024; frozen unimodal encoders, linear maps)",
    "isca_e2e": "ISCA end to end (ours)",
    "dann": "DANN (separate encoders, shared classifier)",
    "cdan": "CDAN (separate encoders, shared classifier)",
    "mcc": "MCC (separate encoders, shared classifier)",
    "mdd": "MDD: maximum density divergence (Li et al. 2020; separate encoders, shared classifier)",
    "margin_disparity": "Margin disparity discrepancy (Zhang et al. 2019; separate encoders, shared classifier)",
    "uml": "UML (centralized, BN cal.)",
    "uml_ordinary_bn": "UML, ordinary BN (no cal.)",
    "fed": "UML (federated, BN cal.)",
    "fed_shared": "UML (federated, projections shared within a sensor)",
    "fed_private_head": "UML (federated, a private head per institution)",
    "fed_finetune": "UML (federated, head fine-tuned locally)",
    "fed_logit_adjust": "UML (federated, local label prior)",
    "fed_balanced_cal": "UML (federated, BN cal. on a class-balanced resample)",
    "uml_pooled": "UML (centralized, institutions pooled per sensor)",
    "paired": "Paired fusion (multimodal input)",
}
DA_BASELINES = ("dann", "cdan", "mcc", "mdd")  # Table 4's domain-adaptation rows, in the paper's order
NO_OWN_BASELINE = "fed.local_baseline=false"  # a federated arm's reference is the experiment's unimodal arm


@dataclass(frozen=True)
class Experiment:
    name: str
    paper: str  # the table or figure it reproduces
    question: str  # what it measures, one sentence
    arms: Callable[[Config, str], list[Arm]]  # arms for the base config of a scale (cpu | paper)
    preset: str  # paper scale: configs/experiment/<preset>.yaml, "{dataset}" = runner.dataset
    cpu: tuple[str, ...] = ()  # CPU scale: overrides of the embedded default
    figure: str | None = None  # bars | lines | None (table only)
    matrix: bool = False  # report the pairwise "evaluated x supplementary" difference matrix (Tables 1, 2)
    regime: bool = False  # report the weaker modality's difference per group and x, with a verdict
    cross_site: bool = False  # report the runs' cross-site matrices (train.cross_site) and their heat-map
    against: str | None = None  # a second reference series: every arm's same-seed difference to its run
    x_label: str = ""
    log_x: bool = False


def _refs(cfg: Config, scale: str) -> list[Arm]:
    return [Arm("unimodal", "unimodal"), Arm("uml", "uml")]


def _table3(cfg: Config, scale: str) -> list[Arm]:
    return [
        *_refs(cfg, scale),
        Arm("isca", "uml", ("method=isca",)),
        Arm("fed", "federated", ("fed.local_epochs=5", NO_OWN_BASELINE)),
        Arm("paired", "paired"),
    ]


def _table4(cfg: Config, scale: str) -> list[Arm]:
    return [Arm("unimodal", "unimodal"), *(Arm(m, "uml", (f"method={m}",)) for m in DA_BASELINES), Arm("uml", "uml")]


def _fig2(cfg: Config, scale: str) -> list[Arm]:
    return _refs(cfg, scale)


def _fig2b(cfg: Config, scale: str) -> list[Arm]:
    return [*_refs(cfg, scale), Arm("paired", "paired")]


def _fig3(cfg: Config, scale: str) -> list[Arm]:
    sizes = [25, 50, 100, 200] if scale == "cpu" else [100, 300, 900, 1800]
    arms = []
    for n in sizes:
        size = (f"data.train_per_class={n}", "data.sizes={}")
        arms += [
            Arm("unimodal", "unimodal", size, x=n),
            Arm("uml", "uml", size, x=n),
            Arm("uml_ordinary_bn", "uml", (*size, "model.track_running_stats=true"), x=n),
        ]
    return arms


def check_schedules(total: int, local_epochs: list[int]) -> list[tuple[int, int]]:
    """(L, R) pairs with R x L = total; every L must divide the total."""
    bad = [L for L in local_epochs if L < 1 or total % L]
    if bad:
        raise ConfigError(
            f"fed.sweep_local_epochs={list(local_epochs)}: {bad} do not divide train.epochs={total}; "
            "choose local epochs that divide the total so that R x L stays the budget"
        )
    return [(L, total // L) for L in local_epochs]


def _fig4(cfg: Config, scale: str) -> list[Arm]:
    schedules = check_schedules(cfg.train.epochs, list(cfg.fed.sweep_local_epochs))
    return [
        *_refs(cfg, scale),
        *(Arm("fed", "federated", (f"fed.local_epochs={L}", NO_OWN_BASELINE), x=L) for L, _ in schedules),
    ]


def _table2(cfg: Config, scale: str) -> list[Arm]:
    mods = list(cfg.data.modalities)
    pairs = [(a, b) for i, a in enumerate(mods) for b in mods[i + 1 :]]
    return [Arm("unimodal", "unimodal")] + [
        Arm(f"uml [{a}+{b}]", "uml", (f"data.modalities=[{a},{b}]",)) for a, b in pairs
    ]


def _table1(cfg: Config, scale: str) -> list[Arm]:
    """Every pair of modalities at equal sizes, and each modality at 10 per class beside each other one
    (at the configured size): the evaluated modality's change against its unimodal baseline of the
    same run setting (equal steps: the baseline shares the pair's largest institution)."""
    mods = list(cfg.data.modalities)
    equal = f"{cfg.data.train_per_class} per class each"
    arms = [Arm("unimodal", "unimodal", group=equal)]
    arms += [
        Arm(f"uml [{a}+{b}]", "uml", (f"data.modalities=[{a},{b}]",), group=equal)
        for i, a in enumerate(mods)
        for b in mods[i + 1 :]
    ]
    for e in mods:
        group, low = f"{e} at 10 per class", f"+data.sizes.{e}.train_per_class=10"
        other = next(m for m in mods if m != e)
        arms.append(Arm("unimodal", "unimodal", (f"data.modalities=[{e},{other}]", low), group=group))
        arms += [Arm(f"uml [{e}+{s}]", "uml", (f"data.modalities=[{e},{s}]", low), group=group) for s in mods if s != e]
    return arms


def _regime(cfg: Config, scale: str) -> list[Arm]:
    """UML and unimodal over training size per class, at two widths."""
    sizes = [10, 25, 50, 100] if cfg.data.source == "digits" else [25, 50, 100, 200]
    arms = []
    for width in (16, 32):
        for n in sizes:
            setting = (f"data.train_per_class={n}", "data.sizes={}", f"model.width={width}")
            group = f"width {width}"
            arms += [
                Arm("unimodal", "unimodal", setting, x=n, group=group),
                Arm("uml", "uml", setting, x=n, group=group),
            ]
    return arms


def _institutions(cfg: Config, scale: str) -> list[Arm]:
    fed = ("fed.local_epochs=5", NO_OWN_BASELINE)
    arms = [
        Arm("unimodal", "unimodal", group="one institution per sensor"),
        Arm("fed", "federated", fed, group="one institution per sensor"),
    ]
    remedies = {
        "fed_shared": "fed.projection_sharing=modality",
        "fed_private_head": "model.private_head=true",
        "fed_finetune": "train.finetune=head",
        "fed_logit_adjust": "model.logit_adjust=1.0",
        "fed_balanced_cal": "train.bn_cal_sample=balanced",
    }
    for method in ("dirichlet", "natural"):
        sites = ("data.partition.institutions=3", f"data.partition.method={method}", "train.cross_site=true")
        group = f"3 per sensor, {method}"
        arms += [
            Arm("unimodal", "unimodal", sites, group=group),
            Arm("fed", "federated", (*sites, *fed), group=group),
            *(Arm(series, "federated", (*sites, *fed, option), group=group) for series, option in remedies.items()),
            Arm("uml_pooled", "uml", (*sites, "train.pool_institutions=true"), group=group),
        ]
    return arms


def _depth(cfg: Config, scale: str) -> list[Arm]:
    arms = [Arm("unimodal", "unimodal")]
    for p in range(9):
        arms += [
            Arm("uml", "uml", (f"model.projection_blocks={p}",), x=p),
            Arm("uml_ordinary_bn", "uml", (f"model.projection_blocks={p}", "model.track_running_stats=true"), x=p),
        ]
    return arms


EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment(
            "table3",
            "Table 3",
            "UML against the unimodal baseline, ISCA and the paired-data reference "
            "(and federated UML at L = 5), per modality and mean",
            _table3,
            "{dataset}_bimodal_lowdata",
        ),
        Experiment(
            "table4",
            "Table 4",
            "UML against domain-adaptation baselines (DANN, CDAN, MCC, MDD with "
            "separate encoders, a shared classifier and labels for both modalities)",
            _table4,
            "{dataset}_bimodal_lowdata",
        ),
        Experiment(
            "fig2a",
            "Figure 2a",
            "fine-grained collaboration: every band its own institution",
            _fig2,
            "{dataset}_finegrained_lowdata",
            cpu=("experiment=synthetic_per_band",),
            figure="bars",
        ),
        Experiment(
            "fig2b",
            "Figure 2b",
            "bi-modal collaboration: S1 and the optical sensor",
            _fig2b,
            "{dataset}_bimodal_lowdata",
            figure="bars",
        ),
        Experiment(
            "fig3",
            "Figure 3",
            "training size x {UML, UML with ordinary BN, unimodal}",
            _fig3,
            "{dataset}_bimodal_full",
            figure="lines",
            x_label="training samples per class",
        ),
        Experiment(
            "fig4",
            "Figure 4",
            "federated UML over R x L = budget schedules, with the centralized and unimodal references",
            _fig4,
            "{dataset}_bimodal_lowdata",
            figure="lines",
            x_label="local epochs L",
            log_x=True,
        ),
        Experiment(
            "table2",
            "Table 2",
            "related vs unrelated auxiliary modality: accuracy change of each "
            "modality when trained with each other one",
            _table2,
            "unrelated_auxiliary",
            cpu=("data.modalities=[s1,s2,objects]",),
            matrix=True,
        ),
        Experiment(
            "table1",
            "Table 1",
            "real digits: the change of each evaluated modality's accuracy with each supplementary one, related "
            "(digits8, MNIST) and unrelated (objects), at equal sizes and with the evaluated one at 10 per class",
            _table1,
            "digits_paper",
            cpu=("data=digits", "data.modalities=[digits8,mnist,objects]"),
            matrix=True,
        ),
        Experiment(
            "regime",
            "Regime",
            "where the effect lives on the embedded data: the weaker modality's change over training size "
            "per class, at widths 16 and 32",
            _regime,
            "{dataset}_bimodal_full",
            figure="lines",
            x_label="training samples per class",
            regime=True,
        ),
        Experiment(
            "regime-digits",
            "Regime (digits)",
            "where the effect lives on real digits (digits8 with MNIST): the weaker modality's change over "
            "training size per class, at widths 16 and 32",
            _regime,
            "digits_paper",
            cpu=("data=digits",),
            figure="lines",
            x_label="training samples per class",
            regime=True,
        ),
        Experiment(
            "institutions",
            "Institutions",
            "2 sensors x 3 institutions (Dirichlet label skew, natural regions) against one institution per "
            "sensor: does federated UML, with shared projections, a private head, local head fine-tuning, the "
            "local label prior or class-balanced calibration, reach each institution's own unimodal model, "
            "and how do the models do at the neighbouring sites?",
            _institutions,
            "{dataset}_bimodal_lowdata",
            cross_site=True,
            against="fed",
        ),
        Experiment(
            "projection-depth",
            "Figure 7",
            "projection depth P = 0..8 blocks, with and without BN "
            "calibration (paper scale: fine-grained, as Figure 7; CPU scale: bi-modal)",
            _depth,
            "{dataset}_finegrained_lowdata",
            figure="lines",
            x_label="projection blocks P",
        ),
    )
}
