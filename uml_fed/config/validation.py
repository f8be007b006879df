"""Validation of a composed config: unknown keys, choices, ranges and combinations, each refused with one
line naming the key, the value and the remedy.  Every allowed value is stated once, in :data:`CHOICES`.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any

from omegaconf import DictConfig, ListConfig

from .schema import SPLIT_SIZE_KEYS, Config


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key, the value and the remedy."""


STRATEGY_NAMES = ("fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "fedmedian", "fedtrimmedavg")
PARTITION_METHODS = ("iid", "dirichlet", "natural")
CHOICES: dict[str, tuple[str, ...]] = {
    "model.stem": ("small", "large"),
    "train.steps_per_epoch": ("largest", "own"),
    "train.precision": ("auto", "fp32", "bf16"),
    "train.channels_last": ("auto", "on", "off"),
    "train.compile": ("off", "default", "reduce-overhead", "max-autotune"),
    "train.unimodal_bn": ("ordinary", "calibrated"),
    "train.finetune": ("none", "head", "last_block"),
    "train.bn_cal_sample": ("own", "balanced"),
    "fed.strategy": STRATEGY_NAMES,
    "fed.weighting": ("uniform", "num_examples", "modality"),
    "fed.projection_sharing": ("none", "modality"),
    "fed.error_detail": ("auto", "full", "type"),
    "fed.wire_dtype": ("float32", "float16"),
    "data.normalization": ("train", "published"),
    "data.short_class": ("raise", "shrink", "drop"),
    "data.constant_bands": ("error", "warn"),
    "data.partition.method": PARTITION_METHODS,
    "runner.scale": ("cpu", "paper"),
    "runner.dataset": ("bigearthnet", "sen12ms", "eurosat_s1_rgb"),
}
# (key, low, high, closed on the high end): numeric ranges, checked for every config
RANGES: list[tuple[str, float, float, bool]] = [
    ("model.width", 1, float("inf"), True),
    ("model.projection_blocks", 0, 8, True),
    ("model.shared_components", 0, float("inf"), True),
    *(
        (f"train.{k}", 1, float("inf"), True)
        for k in ("epochs", "batch_size", "eval_batch_size", "bn_cal_batch_size", "lr_step")
    ),
    ("train.bn_cal_epochs", 0, float("inf"), True),
    ("train.finetune_epochs", 1, float("inf"), True),
    ("model.logit_adjust", 0, float("inf"), True),
    ("train.weight_decay", 0, float("inf"), True),
    ("train.lr_gamma", 0, 1, True),
    ("fed.local_epochs", 1, float("inf"), True),
    ("fed.min_nodes", 0, float("inf"), True),
    ("fed.proximal_mu", 0, float("inf"), True),
    *((f"fed.{k}", 0, 1, False) for k in ("server_momentum", "beta_1", "beta_2")),
    ("fed.trim_beta", 0, 0.5, False),
    ("fed.fraction_train", 0, 1, True),
    ("runner.threads", 1, float("inf"), True),
    ("runner.parallel", 1, float("inf"), True),
    *((f"data.{k}", 1, float("inf"), True) for k in SPLIT_SIZE_KEYS),
    ("data.resize", 0, float("inf"), True),
    ("data.partition.institutions", 1, float("inf"), True),
    ("data.partition.min_size", 0, float("inf"), True),
    *(
        (f"method.{k}", 0, float("inf"), True)
        for k in ("align_weight", "grl_max", "grl_gamma", "density_weight", "isca_whiten_weight")
    ),
    *((f"method.{k}", 0, float("inf"), True) for k in ("isca_cls_weight", "isca_mcc_weight")),
    *(
        (f"method.{k}", 1, float("inf"), True)
        for k in ("disc_hidden", "cdan_randomized_dim", "isca_iterations", "isca_epochs", "isca_eval_every")
    ),
    ("method.isca_batch_size", 2, float("inf"), True),
    ("method.isca_label_noise", 0, 0.5, False),
]
# strictly positive
POSITIVE = [
    "train.lr",
    "fed.server_lr",
    "fed.eta",
    "fed.tau",
    "fed.fraction_train",
    *(f"fed.{k}" for k in ("handshake_timeout", "round_timeout", "rejoin_timeout", "poll_interval")),
    "data.partition.alpha",
    *(f"method.{k}" for k in ("mcc_temperature", "disparity_margin", "isca_mcc_temperature")),
    *(f"method.{k}" for k in ("isca_map_lr", "isca_disc_lr", "isca_cls_lr")),
]


def value_at(cfg: Config, key: str) -> Any:
    obj: Any = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def validate(cfg: Config) -> None:
    """Every check on a typed config; the first failure is raised as :class:`ConfigError`."""
    for key, allowed in CHOICES.items():
        if value_at(cfg, key) not in allowed:
            raise ConfigError(f"{key}={value_at(cfg, key)!r} must be one of {list(allowed)}")
    for key, low, high, closed in RANGES:
        v = value_at(cfg, key)
        if not (low <= v <= high if closed else low <= v < high):
            bound = f">= {low:g}" if high == float("inf") else f"in [{low:g}, {high:g}{']' if closed else ')'}"
            raise ConfigError(f"{key}={v} must be {bound}")
    for key in POSITIVE:
        if not value_at(cfg, key) > 0:
            raise ConfigError(f"{key}={value_at(cfg, key)} must be > 0")
    _combinations(cfg)
    validate_data(cfg.data)


def _combinations(cfg: Config) -> None:
    m, f = cfg.model, cfg.fed
    if m.shared_components and m.projection_blocks != 8:
        raise ConfigError(
            f"model.shared_components={m.shared_components} maps the pooled per-modality embedding: "
            f"set model.projection_blocks=8 (got {m.projection_blocks}) or model.shared_components=0"
        )
    if m.shared_components > 8 * m.width:
        raise ConfigError(
            f"model.shared_components={m.shared_components} exceeds the embedding size 8 * model.width = "
            f"{8 * m.width}; whitened components need at most that many"
        )
    if m.private_head and (m.projection_blocks == 8 or cfg.method.name != "uml"):
        raise ConfigError(
            f"model.private_head=true keeps the classifier private, so the backbone's blocks are all that is "
            f"shared: needs method=uml (got {cfg.method.name}) and model.projection_blocks < 8 "
            f"(got {m.projection_blocks}); set model.private_head=false"
        )
    if m.logit_adjust > 0 and cfg.method.name != "uml":
        raise ConfigError(
            f"model.logit_adjust={m.logit_adjust} adds the label prior to the logits of UML's classifier; "
            f"method={cfg.method.name} classifies through its own terms: set model.logit_adjust=0 or method=uml"
        )
    if cfg.train.finetune != "none" and cfg.method.name == "isca":
        raise ConfigError(
            f"train.finetune={cfg.train.finetune} tunes a trained UML model; ISCA's frozen encoders and fitted maps "
            "are not one: set train.finetune=none or use method=isca_e2e"
        )
    if cfg.train.finetune == "last_block" and m.projection_blocks == 8:
        raise ConfigError(
            "train.finetune=last_block tunes the last shared block, and model.projection_blocks=8 leaves none; "
            "use train.finetune=head"
        )
    if f.strategy in ("fedmedian", "fedtrimmedavg") and f.weighting != "uniform":
        raise ConfigError(
            f"fed.strategy={f.strategy} takes a coordinate-wise statistic of the institutions' backbones and "
            f"cannot weight them: fed.weighting={f.weighting!r} is not honoured; set fed.weighting=uniform"
        )
    if f.proximal_mu > 0 and f.strategy != "fedprox":
        raise ConfigError(f"fed.proximal_mu={f.proximal_mu} is only used by fed.strategy=fedprox")
    if not cfg.runner.seeds:
        raise ConfigError("runner.seeds is empty: give at least one seed, e.g. runner.seeds=[0,1,2,3,4]")


def validate_data(d: Any) -> None:
    """The data part of :func:`validate` (no I/O; the data package checks names against the source)."""
    if not d.modalities and not d.institutions:
        raise ConfigError("data.modalities is empty: list at least one institution's sensor")
    if len(set(d.modalities)) != len(d.modalities):
        raise ConfigError(f"data.modalities={list(d.modalities)} lists a modality twice")
    for name, own in d.sizes.items():
        for key, value in own.items():
            if key not in SPLIT_SIZE_KEYS:
                raise ConfigError(f"data.sizes.{name}.{key} is not a size; use {', '.join(SPLIT_SIZE_KEYS)}")
            if value < 1:
                raise ConfigError(f"data.sizes.{name}.{key}={value} must be >= 1")
    if d.region_effect is not None and d.region_effect < 0:
        raise ConfigError(f"data.region_effect={d.region_effect} must be >= 0 (0 = regions leave the pixels alone)")
    names = [i.name for i in d.institutions]
    for k, inst in enumerate(d.institutions):
        if not inst.name or not inst.modality:
            raise ConfigError(
                f"data.institutions[{k}] needs a name and a modality, got name={inst.name!r} modality={inst.modality!r}"
            )
        if names.count(inst.name) > 1:
            raise ConfigError(f"data.institutions names {inst.name!r} twice; institution names must be unique")
        if len(set(inst.bands)) != len(inst.bands):
            raise ConfigError(f"data.institutions[{k}].bands={list(inst.bands)} lists a band twice")
    p = d.partition
    if p.institutions > 1 and d.institutions:
        raise ConfigError(
            "data.partition.institutions > 1 splits the derived institutions' pools; with an explicit "
            "data.institutions list, list every institution there instead (or drop data.institutions)"
        )
    if d.per_band and d.institutions:
        raise ConfigError(
            "data.per_band derives one institution per band from data.modalities; with an explicit "
            "data.institutions list, give each band its own entry (bands=[B04]) instead"
        )
    if p.institutions > 1 and d.paired:
        raise ConfigError(
            "data.paired=true (the paired-data reference) cannot be partitioned; set data.partition.institutions=1"
        )


def schema_keys(schema: type = Config, path: str = "") -> list[str]:
    """Every dotted key of the schema (``model.width``, ``fed.eta``, ...)."""
    out = []
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            out += schema_keys(kind, f"{path}{f.name}.")
        else:
            out.append(f"{path}{f.name}")
    return out


def check_known_keys(node: Any, schema: type = Config, path: str = "") -> None:
    """Refuse a key the schema does not have (a ``+model.widht=64`` typo, an unknown ``+lr=5``), naming
    it and the closest valid key; maps (``data.sizes``, ``data.bands``) take any key."""
    hints = typing.get_type_hints(schema)
    fields = {f.name for f in dataclasses.fields(schema)}
    for key in node.keys():
        full = f"{path}{key}"
        if key not in fields:
            close = [f"{path}{c}" for c in difflib.get_close_matches(str(key), sorted(fields), n=1)]
            close = close or [k for k in schema_keys() if k.rsplit(".", 1)[-1] == key]  # +lr=5 -> train.lr
            hint = f"; did you mean {close[0]}?" if close else f"; {path or 'the top level'} has {sorted(fields)}"
            raise ConfigError(f"unknown config key {full!r}{hint}")
        kind = hints[key]
        if dataclasses.is_dataclass(kind) and isinstance(node[key], DictConfig):
            check_known_keys(node[key], kind, f"{full}.")
        elif typing.get_origin(kind) is list and dataclasses.is_dataclass(typing.get_args(kind)[0]):
            value = node[key]
            for i, entry in enumerate(value if isinstance(value, ListConfig) else []):
                if isinstance(entry, DictConfig):
                    check_known_keys(entry, typing.get_args(kind)[0], f"{full}[{i}].")


def num_rounds(cfg: Config) -> int:
    """R: given, or total epochs / L (which must divide evenly so R x L stays the budget)."""
    if cfg.fed.rounds > 0:
        return cfg.fed.rounds
    if cfg.train.epochs % cfg.fed.local_epochs:
        raise ConfigError(
            f"train.epochs={cfg.train.epochs} is not a multiple of fed.local_epochs={cfg.fed.local_epochs}; "
            "choose L dividing the total or set fed.rounds explicitly"
        )
    return cfg.train.epochs // cfg.fed.local_epochs
